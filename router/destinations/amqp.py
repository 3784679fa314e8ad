"""AMQP destination: publish each output to another queue of the engine's transport (e.g. a
downstream route's work queue or a partner's queue), confirmed before the message counts as done."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..envelope import Envelope
from ..errors import DestinationUnavailable
from ..registry import ComponentSpec
from .base import DestinationContext, Output


class AmqpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    queue: str = Field(description="queue name (declared by the transport's owner)")
    timeout: float = 30.0


class AmqpDestination:
    transactional = False

    def __init__(self, options: AmqpOptions, context: DestinationContext) -> None:
        self.options, self.transport = options, context.transport

    def write(self, outputs: list[Output], tx: Any) -> None:
        envs = [Envelope(route=o.envelope.route, raw=o.body, source=o.envelope.source, content_type=o.content_type,
                         headers=dict(o.envelope.headers), correlation_id=o.envelope.correlation_id,
                         id=o.envelope.id, sender=o.envelope.sender, control_id=o.envelope.control_id)
                for o in outputs]
        try:
            self.transport.publish_many(self.options.queue, envs, timeout=self.options.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to confirm is worth a retry
            raise DestinationUnavailable(f"publish to queue {self.options.queue!r} failed: {exc}") from None

    def close(self) -> None:
        return None


SPEC = ComponentSpec("destination", "amqp", "publish to a queue of the transport", AmqpOptions,
                     lambda o, c: AmqpDestination(o, c))
