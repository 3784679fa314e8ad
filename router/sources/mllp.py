"""MLLP source: HL7 v2 over TCP with 0x0B ... 0x1C 0x0D framing; ACK after durable enqueue."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..config.durations import Duration
from ..registry import ComponentSpec


class MllpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str | None = Field(None, description="default: settings.mllp.host (127.0.0.1)")
    port: int | None = Field(None, ge=0, le=65535, description="default: settings.mllp.port (2575)")
    max_message_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    idle_timeout: Duration = Field(300.0, description="close a connection silent this long")
    ack_timeout: Duration = Field(30.0, description="longest wait for durable enqueue before answering AE")

    def address(self, settings: Any) -> tuple[str, int]:
        return (self.host or settings.mllp.host, settings.mllp.port if self.port is None else self.port)

    def claims(self, settings: Any) -> list[tuple[str, str | None]]:
        host, port = self.address(settings)
        return [(f"tcp port {port}", f"mllp:{host}:{self.max_message_bytes}:{self.idle_timeout}:{self.ack_timeout}")]


def _factory(options: MllpOptions, context: Any) -> Any:
    from .mllp_server import MllpServer

    return MllpServer(options, context)


SPEC = ComponentSpec("source", "mllp", "HL7 v2 over MLLP (TCP)", MllpOptions, _factory)
