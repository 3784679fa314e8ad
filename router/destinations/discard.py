"""Discard destination: accepts and discards (for empty-route benchmarks and tests)."""
from __future__ import annotations

from typing import Any

from ..registry import ComponentSpec, NoOptions


class DiscardDestination:
    transactional = False

    def write(self, outputs: list[Any], tx: Any) -> None:
        return None

    def close(self) -> None:
        return None


SPEC = ComponentSpec("destination", "discard", "discard (benchmarks, tests)", NoOptions, lambda o, c: DiscardDestination())
