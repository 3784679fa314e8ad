"""Run one message through a route's accept check, filter and mapping without delivering it:
what `router try` prints and `router test` checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config.loader import Config
from .envelope import Envelope
from .errors import InputError, RejectedError, RouterError
from .formats import hl7v2
from .processing import prepare
from .runtime import RouteRuntime, build_routes


@dataclass
class DryRun:
    route: str
    document: dict[str, Any] | None = None  # the Bundle (or resource) the mapping produced
    body: bytes | None = None  # the output when it is not FHIR
    filtered: bool = False
    error: RouterError | None = None  # why the message was rejected
    warnings: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return self.error is not None or self.filtered


def normalise_input(raw: bytes) -> bytes:
    """Files written by people use LF or CRLF between segments; HL7 wants CR."""
    if hl7v2.is_hl7(raw):
        return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r") + b"\r"
    return raw


def route_runtime(config: Config, name: str) -> RouteRuntime:
    config.route(name)  # ConfigError with a did-you-mean when unknown
    [rt] = [r for r in build_routes(config, None, "dryrun", with_destinations=False) if r.name == name]
    return rt


def dry_run_all(rt: RouteRuntime, raw: bytes, *, validate: bool = True) -> list[DryRun]:
    """`dry_run` of each message of the input: an HL7 batch (FHS/BHS, or several MSH in a row) is
    split as the file source splits it; a broken batch envelope is one rejected run."""
    try:
        messages = hl7v2.split_messages(raw)  # dry_run normalises each message
    except InputError as exc:
        return [DryRun(rt.name, error=exc, trace=[f"rejected: {type(exc).__name__}: {exc}"])]
    return [dry_run(rt, m, validate=validate) for m in messages]


def dry_run(rt: RouteRuntime, raw: bytes, *, validate: bool = True) -> DryRun:
    out = DryRun(rt.name)
    raw = normalise_input(raw)
    try:
        env = _envelope(rt, raw)
        out.trace.append(f"accept: {env.headers.get('message_type') or env.content_type} accepted by {rt.name}")
        outcome = prepare(rt, env)  # the same path the worker takes: filter, mapping, output
        if outcome.output is None:
            out.filtered = True
            out.trace.append("filter: the route's filter rejected the message")
            return out
        if rt.filter is not None:
            out.trace.append("filter: passed")
        out.trace.extend(f"mapping: {t}" for t in outcome.trace or [])
        out.warnings = list(outcome.warnings or [])
        out.document = outcome.output.document
        out.body = outcome.output.body if out.document is None else None
        if validate and out.document is not None:
            from .validation import validate_fhir

            validate_fhir(out.document)
            out.trace.append("validation: the output is valid FHIR R4 (fhir.resources R4B)")
    except RouterError as exc:
        out.error = exc
        out.trace.append(f"rejected: {type(exc).__name__}: {exc}")
    return out


def _envelope(rt: RouteRuntime, raw: bytes) -> Envelope:
    if hl7v2.is_hl7(raw):
        header = hl7v2.parse_header(hl7v2.decode(raw))
        if not rt.accepts(header.message_type):
            raise RejectedError(f"route {rt.name} does not accept message type {header.message_type}")
        return Envelope(route=rt.name, raw=raw, source="dry-run", content_type="x-application/hl7-v2+er7",
                        headers={"message_type": header.message_type}, sender=header.sender,
                        control_id=header.control_id)
    if rt.accept is not None:
        raise InputError(f"route {rt.name} takes HL7 v2 messages of types it accepts; this is not HL7 v2")
    ctype = "application/json" if raw.lstrip()[:1] in (b"{", b"[") else "application/octet-stream"
    return Envelope(route=rt.name, raw=raw, source="dry-run", content_type=ctype)
