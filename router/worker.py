"""Workers: consume a route's work queue in batches, process, commit, acknowledge.

One batch = up to ``batch_size`` deliveries:
1. filter + map each message (CPU only); failures are set aside;
2. one database transaction: skip resends already processed (journal keys), write the
   transactional destinations (the store), call the others, record the journal rows and
   the processed keys, commit;
3. acknowledge the batch. Failures: transient ones are scheduled for a later attempt on
   the route's delay queue, permanent ones (or transient ones out of attempts) go to the
   dead-letter queue with their reason; both are durable before the original is acked.
A batch whose transaction fails permanently is split in halves until the poison message
is alone, so one bad message never blocks the others. A crash anywhere before the ack
redelivers the batch; the journal's processed keys make the replay an exact no-op.
"""
from __future__ import annotations

import gc
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from . import journal
from .errors import DestinationUnavailable, MappingError, RouterError, TransportError, is_transient
from .logging import get
from .processing import Outcome, prepare
from .retry import next_delay, should_retry
from .runtime import RouteRuntime, Settled
from .transport.base import Consumer, Delivery, Transport

log = get("router.worker")


def classify_db_error(exc: BaseException) -> BaseException:
    """SQLAlchemy errors into the engine's tree: connection trouble is transient, the rest permanent."""
    if isinstance(exc, RouterError):
        return exc
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return DestinationUnavailable(f"database unavailable: {type(getattr(exc, 'orig', exc)).__name__}")
    if isinstance(exc, sa_exc.SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        return MappingError(f"database refused the write: {type(orig or exc).__name__}: {str(orig or exc)[:300]}")
    return exc


@dataclass
class Stats:
    processed: int = 0
    filtered: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    batches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


class BatchProcessor:
    """Processes batches of one route (used by one consumer thread)."""

    def __init__(self, route: RouteRuntime, engine: sa.Engine, consumer: Consumer, stats: Stats) -> None:
        self.route, self.engine, self.consumer, self.stats = route, engine, consumer, stats

    # ---- the batch -----------------------------------------------------
    def handle(self, deliveries: list[Delivery]) -> None:
        ok: list[tuple[Delivery, Outcome]] = []
        for d in deliveries:
            try:
                ok.append((d, prepare(self.route, d.envelope)))
            except Exception as exc:  # noqa: BLE001 - every failure is settled, never dropped
                self.fail(d, exc)
        if ok:
            self.commit(ok)
        self.stats.add(batches=1)

    def commit(self, items: list[tuple[Delivery, Outcome]]) -> None:
        try:
            self._transaction_retrying_clashes(items)
        except Exception as raw_exc:  # noqa: BLE001
            exc = classify_db_error(raw_exc)
            if is_transient(exc) or len(items) == 1:
                if len(items) == 1 and isinstance(raw_exc, sa_exc.IntegrityError) and self._settle_as_duplicate(*items[0]):
                    return  # a concurrent worker processed the same resend first: settled as duplicate
                for d, _ in items:
                    self.fail(d, exc)
                return
            mid = len(items) // 2  # a permanent failure somewhere in the batch: find it
            self.commit(items[:mid])
            self.commit(items[mid:])
            return
        if self.route.on_settled:
            self._settled([Settled(o.envelope, "filtered" if o.output is None else "processed") for _, o in items])
        self.consumer.ack([d for d, _ in items])

    def _transaction_retrying_clashes(self, items: list[tuple[Delivery, Outcome]], tries: int = 3) -> None:
        """A unique-key clash usually means another worker wrote the same resource (or processed the
        same resend) at the same moment: a fresh transaction plans against its writes and succeeds.
        Only a clash that persists is treated as a failure."""
        for attempt in range(tries):
            try:
                self._transaction(items)
                return
            except sa_exc.IntegrityError:
                if attempt == tries - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))

    def _transaction(self, items: list[tuple[Delivery, Outcome]]) -> None:
        r = self.route
        with self.engine.begin() as conn:
            done = journal.already_processed(conn, [journal.dedupe_key(o.envelope) for _, o in items
                                                    if o.output is not None])
            entries: list[journal.Entry] = []
            to_write, first_of_key = [], {}
            for _, o in items:
                env = o.envelope
                key = journal.dedupe_key(env)
                if o.output is None:
                    entries.append(journal.entry(env, "filtered", message_type=o.message_type))
                elif env.id in (done.get(key), first_of_key.get(key)):
                    continue  # the same message again (redelivered after a crash, or republished): done already
                elif key in done or key in first_of_key:
                    original = done.get(key) or first_of_key[key]
                    entries.append(journal.entry(env, "duplicate", message_type=o.message_type, duplicate_of=original))
                else:
                    first_of_key[key] = env.id
                    to_write.append(o.output)
                    entries.append(journal.entry(env, "processed", message_type=o.message_type,
                                                 error="warnings: " + "; ".join(o.warnings)[:1900]
                                                 if o.warnings else None))
            if to_write:
                for dest in r.destinations:
                    dest.write(to_write, conn if dest.transactional else None)
                journal.mark_processed(conn, [o.envelope for o in to_write])
            journal.record(conn, entries)
        self.stats.add(processed=len(to_write), duplicates=sum(e.status == "duplicate" for e in entries),
                       filtered=sum(e.status == "filtered" for e in entries))

    def _settle_as_duplicate(self, d: Delivery, o: Outcome) -> bool:
        """After a unique-key clash: if another worker processed this resend meanwhile, ack it as a duplicate."""
        env = o.envelope
        try:
            with self.engine.begin() as conn:
                done = journal.already_processed(conn, [journal.dedupe_key(env)])
                if not done:
                    return False
                journal.record(conn, [journal.entry(env, "duplicate", message_type=o.message_type,
                                                    duplicate_of=next(iter(done.values())))])
        except sa_exc.SQLAlchemyError:
            return False
        if self.route.on_settled:
            self._settled([Settled(env, "processed")])
        self.consumer.ack([d])
        self.stats.add(duplicates=1)
        return True

    # ---- failures ------------------------------------------------------
    def fail(self, d: Delivery, exc: BaseException) -> None:
        env = d.envelope
        transient = is_transient(exc)
        env.record_failure(exc, transient)
        policy = self.route.config.route.retry
        fields = {"message_id": env.id, "route": env.route, "error": type(exc).__name__, "attempts": env.attempts}
        if transient and should_retry(policy, env.attempts):
            delay = next_delay(policy, env.attempts)
            self.consumer.retry_later(d, env, delay, self.route.queues.tier_for(env.attempts))
            status = "retrying"
            self.stats.add(retried=1)
            log.warning("retry scheduled", delay=round(delay, 3), **fields)
        else:
            self.consumer.dead_letter(d, env)
            status = "dead-lettered"
            self.stats.add(dead_lettered=1)
            log.error("dead-lettered", reason=str(exc)[:200], **fields)
        try:
            with self.engine.begin() as conn:
                journal.record(conn, [journal.entry(env, status, error=f"{type(exc).__name__}: {exc}"[:2000])])
        except sa_exc.SQLAlchemyError as jexc:
            log.warning("journal write failed", message_id=env.id, route=env.route, error=type(jexc).__name__)
        if status == "dead-lettered" and self.route.on_settled:
            try:
                self._settled([Settled(env, "dead-lettered", exc)])
            except Exception as hexc:  # noqa: BLE001 - the delivery is gone: nothing to redeliver
                log.error("outcome hook failed after dead-letter", message_id=env.id, route=env.route,
                          error=f"{type(hexc).__name__}: {hexc}"[:300])

    # ---- outcome hooks (router.runtime.OutcomeHook, e.g. application ACKs) ----
    def _settled(self, settled: list[Settled]) -> None:
        for hook in self.route.on_settled:
            hook(settled)


class Worker:
    """Consumer threads for a set of routes: `concurrency` threads per route."""

    def __init__(self, routes: Sequence[RouteRuntime], transport: Transport, engine: sa.Engine) -> None:
        self.routes, self.transport, self.engine = list(routes), transport, engine
        self.stop_event = threading.Event()
        self.stats = Stats()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        # what the process built before its first batch (routes, compiled mappings, SQLAlchemy, pydantic)
        # lives until exit: keep the cyclic collector from walking it again and again (a batch allocates
        # tens of thousands of short-lived dicts, so collections are frequent): worker CPU per message
        # 1.20 / 1.43 -> 0.96 / 1.20 ms draining ORU^R01 (benchmarks/worker_drain.py)
        gc.collect()
        gc.freeze()
        for r in self.routes:
            for i in range(r.config.route.concurrency):
                t = threading.Thread(target=self._loop, args=(r,), name=f"worker-{r.name}-{i}", daemon=True)
                t.start()
                self.threads.append(t)

    def _loop(self, route: RouteRuntime) -> None:
        cfg = route.config.route
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                consumer = self.transport.consumer([route.queues], prefetch=max(cfg.prefetch, cfg.batch_size))
            except Exception as exc:  # noqa: BLE001
                log.warning("consumer start failed", route=route.name, error=type(exc).__name__)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            proc = BatchProcessor(route, self.engine, consumer, self.stats)
            try:
                while not self.stop_event.is_set():
                    batch = consumer.fetch(cfg.batch_size, timeout=max(cfg.batch_wait, 0.2))
                    if batch:
                        proc.handle(batch)
            except TransportError as exc:
                log.warning("transport error; reconnecting", route=route.name, error=str(exc)[:200])
            except Exception as exc:  # noqa: BLE001 - keep the worker alive; unacked messages come back
                log.error("worker loop error", route=route.name, error=f"{type(exc).__name__}: {exc}"[:300])
                self.stop_event.wait(1.0)
            finally:
                try:
                    consumer.close()
                except Exception:  # noqa: BLE001
                    pass

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batches in flight, then stop."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
