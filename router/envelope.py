"""The envelope every message travels in, from intake to delivery or dead-letter queue.

Wire format (compact, one allocation to decode): a JSON header line (orjson), a
newline, then the raw bytes exactly as received. JSON never contains a raw
newline, so the first newline ends the header.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import InputError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ErrorRecord:
    """One failed attempt."""

    at: float
    error: str  # exception class name
    text: str
    transient: bool

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "error": self.error, "text": self.text, "transient": self.transient}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ErrorRecord:
        return cls(at=d["at"], error=d["error"], text=d["text"], transient=d["transient"])


@dataclass
class Envelope:
    route: str
    raw: bytes
    source: str = ""
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    correlation_id: str = ""
    received_at: float = field(default_factory=time.time)
    attempts: int = 0
    errors: list[ErrorRecord] = field(default_factory=list)
    sender: str = ""  # e.g. MSH-3^MSH-4 for HL7
    control_id: str = ""  # e.g. MSH-10: with sender, identifies a resend

    def __post_init__(self) -> None:
        if not self.correlation_id:
            self.correlation_id = self.id

    # ---- serialisation -------------------------------------------------
    def to_bytes(self) -> bytes:
        meta = {
            "v": FORMAT_VERSION,
            "id": self.id,
            "route": self.route,
            "source": self.source,
            "ct": self.content_type,
            "h": self.headers,
            "cid": self.correlation_id,
            "rt": self.received_at,
            "n": self.attempts,
            "e": [e.to_dict() for e in self.errors],
            "s": self.sender,
            "c": self.control_id,
        }
        return orjson.dumps(meta) + b"\n" + self.raw

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        head, sep, raw = data.partition(b"\n")
        if not sep:
            raise InputError("envelope has no header line")
        try:
            m = orjson.loads(head)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"envelope header is not JSON: {exc}") from None
        if m.get("v") != FORMAT_VERSION:
            raise InputError(f"unsupported envelope format version {m.get('v')!r}")
        return cls(
            route=m["route"],
            raw=raw,
            source=m["source"],
            content_type=m["ct"],
            headers=m["h"],
            id=m["id"],
            correlation_id=m["cid"],
            received_at=m["rt"],
            attempts=m["n"],
            errors=[ErrorRecord.from_dict(e) for e in m["e"]],
            sender=m["s"],
            control_id=m["c"],
        )

    # ---- failures ------------------------------------------------------
    def record_failure(self, exc: BaseException, transient: bool) -> None:
        self.attempts += 1
        self.errors.append(
            ErrorRecord(at=time.time(), error=type(exc).__name__, text=str(exc)[:2000], transient=transient)
        )

    @property
    def first_failure_at(self) -> float | None:
        return self.errors[0].at if self.errors else None

    @property
    def last_failure_at(self) -> float | None:
        return self.errors[-1].at if self.errors else None

    def for_replay(self) -> Envelope:
        """A copy that starts its route afresh (attempts reset, history kept)."""
        return Envelope(
            route=self.route, raw=self.raw, source=self.source, content_type=self.content_type,
            headers=dict(self.headers, replayed="true"), id=self.id, correlation_id=self.correlation_id,
            received_at=self.received_at, attempts=0, errors=list(self.errors),
            sender=self.sender, control_id=self.control_id,
        )
