"""HTTP source: POST a message to a path on the engine's HTTP server; 202 after durable enqueue."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..registry import ComponentSpec


class HttpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(pattern=r"^/[A-Za-z0-9._~/-]*$", description="URL path, e.g. /hl7/lab")
    max_message_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    content_types: list[str] = Field(default_factory=list,
                                     description="accepted Content-Type values (empty: any); others get 415")

    def claims(self, settings: Any) -> list[tuple[str, str | None]]:
        # the HTTP server's port is shared by every http source; each path belongs to one listener
        return [(f"tcp port {settings.http.port}", "http"), (f"HTTP path {self.path}",
                                                                  f"http:{self.path}:{sorted(self.content_types)}:{self.max_message_bytes}")]


def _factory(options: HttpOptions, context: Any) -> Any:
    from .http_intake import HttpIntake

    return HttpIntake(options, context)


SPEC = ComponentSpec("source", "http", "POST messages to a path of the HTTP server", HttpOptions, _factory)
