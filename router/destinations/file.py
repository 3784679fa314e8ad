"""File destination: one file per message in a folder, written atomically (temp file + rename)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import DestinationUnavailable
from ..registry import ComponentSpec
from .base import DestinationContext, Output


class FileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(description="folder (relative to routes.yaml); created if missing")
    suffix: str = Field("", description="file name suffix; default from the content type (.json, .hl7, .bin)")
    fsync: bool = True


_SUFFIX = {"application/fhir+json": ".json", "application/json": ".json", "x-application/hl7-v2+er7": ".hl7"}


class FileDestination:
    transactional = False

    def __init__(self, options: FileOptions, context: DestinationContext) -> None:
        folder = Path(options.path)
        self.folder = folder if folder.is_absolute() else Path(context.base_dir) / folder
        self.options = options

    def write(self, outputs: list[Output], tx: Any) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for out in outputs:
                suffix = self.options.suffix or _SUFFIX.get(out.content_type, ".bin")
                final = self.folder / f"{out.envelope.id}{suffix}"
                tmp = final.with_suffix(final.suffix + ".tmp")
                with open(tmp, "wb") as fh:
                    fh.write(out.body)
                    if self.options.fsync:
                        fh.flush()
                        os.fsync(fh.fileno())
                os.replace(tmp, final)
        except OSError as exc:
            raise DestinationUnavailable(f"cannot write to {self.folder}: {exc.strerror or exc}") from None

    def close(self) -> None:
        return None


SPEC = ComponentSpec("destination", "file", "write each message to a file in a folder", FileOptions,
                     lambda o, c: FileDestination(o, c))
