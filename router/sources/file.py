"""File source: picks up files from a folder; a file is moved to done/ only after durable enqueue."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..config.durations import Duration
from ..registry import ComponentSpec


class FileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(description="folder to watch (relative to routes.yaml)")
    pattern: str = "*"
    poll_interval: Duration = 1.0
    done_dir: str = Field("done", description="subfolder for files enqueued")
    error_dir: str = Field("error", description="subfolder for files refused")

    def claims(self, settings: Any) -> list[tuple[str, str | None]]:
        return [(f"folder {self.path}", f"file:{self.pattern}:{self.poll_interval}:{self.done_dir}:{self.error_dir}")]


def _factory(options: FileOptions, context: Any) -> Any:
    from .file_poller import FilePoller

    return FilePoller(options, context)


SPEC = ComponentSpec("source", "file", "files dropped into a folder", FileOptions, _factory)
