"""The one retry policy engine.

* Route level (between attempts, through the transport's delay queues): ``next_delay``
  computes the delay after the n-th failed attempt from the route's RetryPolicy.
* In process (short retries around one destination I/O call): ``short_retry``, tenacity,
  3 tries within about a second, only for TransientError.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import retry_if_exception_type, stop_after_attempt, wait_exponential, Retrying

from .config.schema import RetryPolicy
from .errors import TransientError

T = TypeVar("T")


def base_delay(policy: RetryPolicy, failed_attempts: int) -> float:
    """Delay before the next attempt after `failed_attempts` failures, without jitter."""
    n = max(1, failed_attempts)
    return float(min(policy.max_delay, policy.initial_delay * policy.multiplier ** (n - 1)))


def next_delay(policy: RetryPolicy, failed_attempts: int, rng: random.Random | None = None) -> float:
    d = base_delay(policy, failed_attempts)
    if policy.jitter:
        r = (rng or random).uniform(-policy.jitter, policy.jitter)
        d *= 1.0 + r
    return max(0.0, min(d, policy.max_delay))


def tier_delays(policy: RetryPolicy) -> tuple[float, ...]:
    """Base delay of each retry tier: one per possible retry (attempts - 1), deduplicated at the cap."""
    out: list[float] = []
    for n in range(1, policy.attempts):
        d = base_delay(policy, n)
        out.append(d)
        if d >= policy.max_delay:
            break
    return tuple(out) or (policy.initial_delay,)


def should_retry(policy: RetryPolicy, failed_attempts: int) -> bool:
    return failed_attempts < policy.attempts


def short_retry(fn: Callable[..., T], *args: Any, attempts: int = 3, **kwargs: Any) -> T:
    for attempt in Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.1, max=1.0),
                            retry=retry_if_exception_type(TransientError), reraise=True):
        with attempt:
            return fn(*args, **kwargs)
    raise AssertionError("unreachable")
