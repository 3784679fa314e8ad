"""Durations in configuration: a number of seconds or a string like 250ms, 5s, 2m, 1h, 30d."""
from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> float:
    """Seconds as a float. Raises ValueError for anything else (negative, NaN, infinite, junk)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 500ms, 5s, 2m, 1h, 30d")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            raise ValueError("a duration must be a finite number")
        return seconds
    if isinstance(value, str):
        m = _RE.match(value)
        if m:
            seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
            if not math.isfinite(seconds):
                raise ValueError("a duration must be a finite number")
            return seconds
        if _RE.match(value.strip().removeprefix("-")):
            raise ValueError("a duration cannot be negative")
    raise ValueError(f"{value!r} is not a duration (use seconds or a string like 500ms, 5s, 2m, 1h, 30d)")


Duration = Annotated[float, BeforeValidator(parse_duration)]
