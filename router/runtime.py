"""Turn a loaded Config into runnable routes: queues, compiled accept/filter, mapping, destinations."""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .config.loader import Config, RouteConfig
from .destinations.base import Destination, DestinationContext
from .envelope import Envelope
from .filters import Predicate
from .mapping import MappingFn, resolve_mapping
from .maplang.compiler import MappingOptions
from .retry import tier_delays
from .transport.base import RouteQueues, Transport, route_queues


def compile_accept(patterns: list[str]) -> re.Pattern[str] | None:
    """None accepts everything; else a regex matching any of the glob patterns (ORU^R01, ADT^*)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def queues_for(route: RouteConfig, namespace: str) -> RouteQueues:
    r = route.route
    return route_queues(namespace, r.name, delays=tier_delays(r.retry), jitter=r.retry.jitter,
                        quorum=r.queue_type == "quorum", dlq=r.dead_letter_queue)


@dataclass(frozen=True)
class Settled:
    """What became of one message in a worker, for the route's outcome hooks."""

    envelope: Envelope
    status: Literal["processed", "filtered", "dead-lettered"]  # processed: committed (duplicates included)
    error: BaseException | None = None  # why it was dead-lettered


#: Called by the worker after the batch's commit (before its deliveries are acked: a hook that raises
#: leaves them to be redelivered, and the dedupe turns the redelivery into a no-op but for the hooks),
#: and after a dead-letter copy is durable.
OutcomeHook = Callable[[list[Settled]], None]


@dataclass
class RouteRuntime:
    config: RouteConfig
    queues: RouteQueues
    accept: re.Pattern[str] | None
    filter: Predicate | None
    mapping: MappingFn
    destinations: list[Destination]
    on_settled: list[OutcomeHook] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    def accepts(self, message_type: str) -> bool:
        return self.accept is None or self.accept.fullmatch(message_type) is not None

    def close(self) -> None:
        for d in self.destinations:
            d.close()


def build_routes(config: Config, transport: Transport | None, namespace: str,
                 with_destinations: bool = True, extra: dict[str, Any] | None = None) -> list[RouteRuntime]:
    out = []
    mappings_dir = config.base_dir / config.settings.mappings_dir
    for rc in config.routes:
        flt = rc.filter.build(None) if rc.filter else None
        options = MappingOptions(timezone=config.settings.timezone, unmapped=rc.route.unmapped_codes)
        mapping = resolve_mapping(rc.route.mapping, config.registry, mappings_dir, options)
        dests: list[Destination] = []
        if with_destinations:
            ctx = DestinationContext(base_dir=str(config.base_dir), route=rc.name, transport=transport,
                                     extra=dict(extra or {}))
            dests = [d.build(ctx) for d in rc.destinations]
        out.append(RouteRuntime(rc, queues_for(rc, namespace), compile_accept(list(rc.route.accept)), flt,
                                mapping, dests))
    if transport is not None:
        from .app_ack import wire_application_acks

        wire_application_acks(out, transport)
    return out
