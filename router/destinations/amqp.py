"""AMQP destination: hand each output to another route of this engine (``route:``) or publish it to
a queue someone else consumes (``queue:``), confirmed durable before the message counts as done.

The copy is a new message (its own id; correlation id kept), so the receiving route journals,
dedupes and dead-letters it on its own.
"""
from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..envelope import Envelope
from ..errors import DestinationUnavailable
from ..registry import ComponentSpec
from .base import DestinationContext, Output


class AmqpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    route: str | None = Field(None, description="another route of this engine: its work queue gets the output")
    queue: str | None = Field(None, description="a queue outside the engine's routes (must already exist)")
    timeout: float = Field(30.0, gt=0, description="seconds to wait for the broker's confirmation")

    @model_validator(mode="after")
    def _one_target(self) -> AmqpOptions:
        if (self.route is None) == (self.queue is None):
            raise ValueError("give exactly one of 'route' (a route of this engine) or 'queue'")
        return self


class AmqpDestination:
    transactional = False

    def __init__(self, options: AmqpOptions, context: DestinationContext) -> None:
        self.options, self.transport = options, context.transport
        self.target_route = options.route or context.route
        self.queue = f"{context.transport.namespace}.{options.route}" if options.route else str(options.queue)

    def write(self, outputs: list[Output], tx: Any) -> None:
        envs = [Envelope(route=self.target_route, raw=o.body, source=f"route:{o.envelope.route}",
                         content_type=o.content_type, headers=dict(o.envelope.headers, upstream_id=o.envelope.id),
                         id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{o.envelope.id}/{self.queue}")),
                         correlation_id=o.envelope.correlation_id, sender=o.envelope.sender,
                         control_id=o.envelope.control_id)
                for o in outputs]
        try:
            self.transport.publish_many(self.queue, envs, timeout=self.options.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to confirm is worth a retry
            raise DestinationUnavailable(f"publish to queue {self.queue!r} failed: {exc}") from None

    def close(self) -> None:
        return None


SPEC = ComponentSpec("destination", "amqp", "hand over to another route, or publish to a queue", AmqpOptions,
                     lambda o, c: AmqpDestination(o, c))
