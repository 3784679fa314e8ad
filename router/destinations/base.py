"""What every destination gets and does.

A destination type's module exposes ``SPEC`` (kind "destination"); ``factory(options,
DestinationContext)`` returns a ``Destination``. The worker hands it a batch of
``Output``s. A *transactional* destination writes through the batch's database
connection, so its writes commit together with the journal (exactly once in effect);
the others do their own I/O (at least once, with the message id for idempotence).
Raise ``DestinationUnavailable`` for a failure worth retrying and ``DestinationRejected``
for one that is not; the worker splits a failed batch to find the message at fault.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..envelope import Envelope

if TYPE_CHECKING:
    import sqlalchemy as sa


@dataclass
class Output:
    envelope: Envelope
    body: bytes  # what non-store destinations deliver
    content_type: str
    document: dict[str, Any] | None = None  # a FHIR resource or Bundle, when the mapping produced one


@dataclass(frozen=True)
class DestinationContext:
    base_dir: str
    route: str
    transport: Any  # router.transport.Transport, for the amqp destination
    extra: dict[str, Any]


class Destination(Protocol):
    transactional: bool

    def write(self, outputs: list[Output], tx: sa.Connection | None) -> None: ...

    def close(self) -> None: ...
