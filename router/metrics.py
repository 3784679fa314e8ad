"""Prometheus metrics of one engine process, served at GET /metrics.

Counted as they happen (an outcome hook per route, so the hot path pays one call per batch):
  router_messages_settled_total{route, outcome}   processed (duplicates included) | filtered | dead-lettered
Read when scraped (nothing on the hot path):
  router_queue_messages{route, queue}             work | dlq: messages waiting in the transport
  router_worker_events_total{event}               this process's worker: processed, filtered, duplicates,
                                                  retried, dead_lettered, batches
  router_info{version, transport, database}       1
One registry per process (not prometheus_client's global one), no patient data in any label.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .logging import get
from .runtime import RouteRuntime, Settled

log = get("router.metrics")

WORKER_EVENTS = ("processed", "filtered", "duplicates", "retried", "dead_lettered", "batches")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Scraped:
    """The collector of what is read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        info = InfoMetricFamily("router", "the engine process")
        info.add_metric([], m.info)
        yield info
        if m.depth is not None and m.routes:
            depth = GaugeMetricFamily("router_queue_messages", "messages waiting in the transport",
                                      labels=["route", "queue"])
            for r in m.routes:
                for queue, name in (("work", r.queues.work), ("dlq", r.queues.dlq)):
                    try:
                        depth.add_metric([r.name, queue], m.depth(name))
                    except Exception as exc:  # noqa: BLE001 - a scrape must not fail for one queue
                        log.warning("metrics: queue depth unavailable", route=r.name, queue=queue,
                                    error=type(exc).__name__)
            yield depth
        stats = m.worker_stats() if m.worker_stats is not None else None
        if stats is not None:
            events = CounterMetricFamily("router_worker_events", "what this process's worker did",
                                         labels=["event"])
            for k in WORKER_EVENTS:
                events.add_metric([k], getattr(stats, k))
            yield events


class Metrics:
    def __init__(self, info: dict[str, str]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.info = info
        self.routes: Sequence[RouteRuntime] = ()
        self.depth: Callable[[str], int] | None = None
        self.worker_stats: Callable[[], Any] | None = None
        self.settled = Counter("router_messages_settled", "messages whose fate a worker settled",
                               ["route", "outcome"], registry=self.registry)
        self.registry.register(_Scraped(self))  # type: ignore[arg-type]

    def watch(self, routes: Sequence[RouteRuntime], depth: Callable[[str], int] | None,
              worker_stats: Callable[[], Any] | None, *, outcomes: bool = True) -> None:
        """Read these routes' queue depths and the worker's stats when scraped; with `outcomes`
        (a process that runs workers), count the routes' outcomes as they happen."""
        self.routes, self.depth, self.worker_stats = list(routes), depth, worker_stats
        for r in routes if outcomes else ():
            children = {o: self.settled.labels(r.name, o) for o in ("processed", "filtered", "dead-lettered")}

            def hook(settled: list[Settled], children: dict[str, Any] = children) -> None:
                counts: dict[str, int] = {}
                for s in settled:
                    counts[s.status] = counts.get(s.status, 0) + 1
                for status, n in counts.items():
                    children[status].inc(n)

            r.on_settled.append(hook)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
