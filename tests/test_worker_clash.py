"""A unique-key clash at commit (another worker wrote the same resource at the same moment) is
retried in a fresh transaction, not dead-lettered; a clash that persists is a failure."""
from __future__ import annotations

from types import SimpleNamespace

import sqlalchemy as sa

from router.envelope import Envelope
from router.transport.base import Delivery
from router.worker import BatchProcessor, Stats


class Recorder:
    """The consumer side of a batch: records what the worker settled."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.dead: list[str] = []

    def ack(self, deliveries: list[Delivery]) -> None:
        self.acked += [d.envelope.id for d in deliveries]

    def dead_letter(self, d: Delivery, env: Envelope) -> None:
        self.dead.append(env.id)


def clashing(times: int):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def transaction(items):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] <= times:
            raise sa.exc.IntegrityError("INSERT INTO store_history", {}, Exception("duplicate key"))
    return transaction, calls


def processor(consumer: Recorder) -> BatchProcessor:
    p = BatchProcessor.__new__(BatchProcessor)
    p.consumer, p.stats = consumer, Stats()
    p.route = SimpleNamespace(on_settled=[])  # type: ignore[assignment] # a route without outcome hooks
    return p


def item() -> tuple[Delivery, object]:
    env = Envelope(route="r", raw=b"x")
    return Delivery(env, "q", tag=1), object()


def test_a_passing_clash_is_retried_and_acknowledged() -> None:
    rec = Recorder()
    p = processor(rec)
    p._transaction, calls = clashing(times=2)  # type: ignore[method-assign]
    d, o = item()
    p.commit([(d, o)])  # type: ignore[list-item]
    assert calls["n"] == 3 and rec.acked == [d.envelope.id] and rec.dead == []


def test_a_persistent_clash_is_not_retried_forever() -> None:
    rec = Recorder()
    p = processor(rec)
    p._transaction, calls = clashing(times=99)  # type: ignore[method-assign]
    p._settle_as_duplicate = lambda d, o: False  # type: ignore[method-assign]
    failed: list[str] = []
    p.fail = lambda d, exc: failed.append(type(exc).__name__)  # type: ignore[method-assign]
    d, o = item()
    p.commit([(d, o)])  # type: ignore[list-item]
    assert calls["n"] == 3 and rec.acked == [] and failed == ["MappingError"]
