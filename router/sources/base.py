"""What every source gets and gives.

A source type's module exposes ``SPEC`` (router.registry.ComponentSpec, kind "source").
Its options model may define ``claims(settings) -> [(resource, share_key)]``: the
listening resources it needs. Routes whose sources claim the same resource with the
same share key share one listener (``router check`` rejects overlapping ``accept``);
a different or None share key is a conflict.

The factory is called once per listener: ``factory(options, SourceContext)`` and
returns a ``Source`` that the engine starts and stops.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..config.schema import Settings
    from ..intake import Intake


@dataclass(frozen=True)
class SourceContext:
    intake: Intake  # submits messages to the routes behind this listener
    settings: Settings
    base_dir: str
    extra: dict[str, Any]


class Source(Protocol):
    async def start(self) -> None:
        """Begin accepting messages (bind sockets, start polling)."""

    async def stop(self) -> None:
        """Stop accepting new messages; finish answering those in flight."""
