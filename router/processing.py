"""What happens to one message in a worker, without I/O: filter, then mapping, into an Output.

Returns an Outcome; raises the engine's errors (PermanentError for bad input or mapping
failures). Unknown exceptions are wrapped as MappingError: a bug must not loop forever.
"""
from __future__ import annotations

from dataclasses import dataclass

import orjson

from .destinations.base import Output
from .envelope import Envelope
from .errors import MappingError, RouterError
from .maplang.compiler import MappingResult
from .runtime import RouteRuntime


@dataclass
class Outcome:
    envelope: Envelope
    output: Output | None  # None: filtered out
    message_type: str = ""
    warnings: list[str] | None = None  # from the mapping (e.g. unmapped codes), journaled
    trace: list[str] | None = None  # what the mapping decided (router try shows it)


def prepare(route: RouteRuntime, env: Envelope) -> Outcome:
    mtype = env.headers.get("message_type", "")
    if route.filter is not None:
        try:
            keep = route.filter(env)
        except RouterError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise MappingError(f"filter failed: {type(exc).__name__}: {exc}") from None
        if not keep:
            return Outcome(env, None, mtype)
    try:
        result = route.mapping(env)
    except RouterError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise MappingError(f"mapping failed: {type(exc).__name__}: {exc}") from None
    warnings = trace = None
    if isinstance(result, MappingResult):
        result, warnings, trace = result.document, result.warnings or None, result.trace
    if result is None:
        out = Output(env, env.raw, env.content_type)
    elif isinstance(result, (bytes, bytearray)):
        out = Output(env, bytes(result), env.content_type)
    elif isinstance(result, dict):
        out = Output(env, orjson.dumps(result), "application/fhir+json", document=result)
    else:
        raise MappingError(f"mapping returned {type(result).__name__}; expected dict, bytes or None")
    return Outcome(env, out, mtype, warnings, trace)
