"""MLLP source: HL7 v2 over TCP with 0x0B ... 0x1C 0x0D framing; ACK after durable enqueue.

Options beyond the address: ``tls`` (TLS, or mutual TLS when ``ca_file`` is set) and a
receiver check (``receiving_application`` / ``receiving_facility``): a message addressed to
another receiver in MSH-5 / MSH-6 is refused with AR and ERR code 103 "Table value not found"
(table 0357 has no code for a wrong receiver; MSH-5/MSH-6 take their values from the user
tables 0361 Application / 0362 Facility, and the value is not one this listener serves).
Everything the listener does with a message is in its share key (see router.sources.base), so
routes on one port must agree on all of it. The acknowledgment rules are in mllp_server.py.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..config.durations import Duration
from ..registry import ComponentSpec
from ..tls import TlsOptions


class MllpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str | None = Field(None, description="default: settings.mllp.host (127.0.0.1)")
    port: int | None = Field(None, ge=0, le=65535, description="default: settings.mllp.port (2575)")
    max_message_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="larger messages are refused (AR)")
    idle_timeout: Duration = Field(300.0, description="close a connection that sends nothing this long")
    ack_timeout: Duration = Field(30.0, description="longest wait for durable enqueue before answering AE")
    max_backlog: int | None = Field(None, ge=1, description="backpressure: while a work queue of this listener's "
                                                            "routes holds this many messages not yet taken by a "
                                                            "worker, stop reading from senders (their ACKs wait); "
                                                            "none: no bound")
    tls: TlsOptions | None = Field(None, description="TLS on this listener: {cert_file, key_file, ca_file, "
                                                  "min_version}; ca_file makes it mutual TLS")
    receiving_application: str | None = Field(None, description="refuse messages whose MSH-5 names another "
                                                                "application (AR, ERR code 103)")
    receiving_facility: str | None = Field(None, description="refuse messages whose MSH-6 names another "
                                                             "facility (AR, ERR code 103)")

    def address(self, settings: Any) -> tuple[str, int]:
        return (self.host or settings.mllp.host, settings.mllp.port if self.port is None else self.port)

    def claims(self, settings: Any) -> list[tuple[str, str | None]]:
        host, port = self.address(settings)
        tls_key = self.tls.key() if self.tls else "plain"
        return [(f"tcp port {port}",
                 f"mllp:{host}:{self.max_message_bytes}:{self.idle_timeout}:{self.ack_timeout}:{self.max_backlog}:{tls_key}"
                 f":to({self.receiving_application},{self.receiving_facility})")]


def _factory(options: MllpOptions, context: Any) -> Any:
    from .mllp_server import MllpServer

    return MllpServer(options, context)


SPEC = ComponentSpec("source", "mllp", "HL7 v2 over MLLP (TCP, optionally TLS)", MllpOptions, _factory)
