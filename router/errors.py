"""The one exception tree of the engine.

    RouterError
    ├── ConfigError                 routes.yaml / mapping files are wrong (carries a list of Problems)
    ├── PermanentError              retrying cannot help: dead-letter at once
    │   ├── InputError              bad input (unparseable, wrong type, too large)
    │   │   └── RejectedError       refused by policy (unknown type, wrong receiver): HL7 AR
    │   ├── MappingError            the mapping could not produce output
    │   ├── ValidationError         output failed validation (FHIR rules, identifier check digits): 422
    │   ├── DestinationRejected     a destination refused the data for good (4xx, constraint)
    │   ├── NotFoundError           no such resource (or version): 404
    │   ├── GoneError               the resource was deleted: 410
    │   └── ConflictError           a conditional write matched several resources, version clash: 409
    ├── TransientError              may succeed later: retry with backoff, then dead-letter
    │   ├── DestinationUnavailable  database, broker, HTTP endpoint down or timing out
    │   └── TransportError          the message transport (queue) failed
    └── AccessError                 the caller may not do this (API only)
        ├── UnauthorizedError       no valid credentials (missing, expired, wrongly signed): 401
        └── ForbiddenError          valid credentials without the right: 403

Anything else raised while processing a message is treated as permanent (a bug
or unforeseen input must not loop forever) and dead-lettered with its class name.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem found in a configuration file."""

    file: str
    line: int
    column: int
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class RouterError(Exception):
    """Base of every error the engine raises on purpose."""

    #: short machine-readable code used in ACK ERR segments, OperationOutcome and the journal
    code: str = "error"


class ConfigError(RouterError):
    code = "config"

    def __init__(self, problems: list[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("<config>", 0, 0, problems)]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PermanentError(RouterError):
    code = "permanent"


class InputError(PermanentError):
    code = "input"


class RejectedError(InputError):
    code = "rejected"


class MappingError(PermanentError):
    code = "mapping"


class ValidationError(PermanentError):
    code = "validation"


class DestinationRejected(PermanentError):
    code = "destination-rejected"


class NotFoundError(PermanentError):
    code = "not-found"


class GoneError(PermanentError):
    code = "deleted"


class ConflictError(PermanentError):
    code = "conflict"


class TransientError(RouterError):
    code = "transient"


class DestinationUnavailable(TransientError):
    code = "destination-unavailable"


class TransportError(TransientError):
    code = "transport"


class AccessError(RouterError):
    code = "security"


class UnauthorizedError(AccessError):
    code = "login"


class ForbiddenError(AccessError):
    code = "forbidden"


def is_transient(exc: BaseException) -> bool:
    """True when a retry may help. Unknown exceptions are permanent."""
    return isinstance(exc, TransientError)


def error_name(exc: BaseException) -> str:
    return type(exc).__name__
