"""Application acknowledgments (HL7 enhanced mode, MSH-16), sent after processing.

The source answers the commit ACK (CA/CE/CR) once a message is durably queued. The application
ACK comes later, from the worker, once the message's fate is known:

* committed (written to the store, delivered, recorded as a duplicate of one that was, or
  filtered out): ``AA``;
* dead-lettered (a permanent failure, or a transient one out of attempts): ``AE`` with an ERR
  segment (code 207 and the error), or ``AR`` when it was refused (``RejectedError``).

It is sent when the message's MSH-16 asks for it (AL always, ER only for AE/AR, SU only for AA,
NE or empty never; another value counts as AL) and the route has ``application_ack``. It answers
in the sender's version and encoding characters, sender and receiver swapped, MSA-2 = MSH-10
(router.formats.ack.build_ack).

Delivery: the ACK is not sent from the worker's thread. It is published, durably, to the work
queue of the internal route ``<route>.ack`` (router.config.loader.ack_route), whose workers deliver
it to ``application_ack.destination`` like any message: retried with ``application_ack.retry``
while the return address is down, then dead-lettered with the reason (``router dlq list``), and
journaled under that route. The hook runs after the batch's commit and before its deliveries are
acked, or after the dead-letter copy is durable, so no ACK precedes the fact it reports.

The ACK's envelope id is derived from the message's id, the code and the number of failed attempts,
so a redelivery of the same batch (after a crash between commit and ack) publishes the same ACK id,
which the ACK route recognises and does not send twice; a resend of the message by its sender is
another message and gets its own ACK.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import Future

from .envelope import Envelope
from .errors import InputError, RejectedError, TransportError
from .formats import hl7v2
from .formats.ack import build_ack, wanted
from .intake import HL7_CONTENT_TYPE
from .logging import get
from .retry import short_retry
from .runtime import RouteRuntime, Settled
from .transport.base import Transport

log = get("router.app_ack")

_NS = uuid.UUID("4f1d7a2e-5b9c-4c3e-9a61-0d6a1c7e2b58")  # names the ids of application ACKs
PUBLISH_TIMEOUT = 30.0


def code_for(s: Settled) -> str:
    """MSA-1 of the application ACK for one outcome."""
    if s.status != "dead-lettered":
        return "AA"
    return "AR" if isinstance(s.error, RejectedError) else "AE"


def ack_envelope(s: Settled, ack_route: str) -> Envelope | None:
    """The application ACK of one outcome, wrapped for the ACK route; None when MSH-16 asks for none
    (or the message is not HL7 v2)."""
    env = s.envelope
    if not hl7v2.is_hl7(env.raw):
        return None
    try:
        header = hl7v2.parse_header(hl7v2.decode(env.raw))
    except InputError:
        return None
    code = code_for(s)
    if not header.application_ack_type or not wanted(header.application_ack_type, code[1]):
        return None
    ack_id = str(uuid.uuid5(_NS, f"{env.id}:{code}:{len(env.errors)}"))
    control_id = ack_id.replace("-", "")[:20]
    if code == "AA":
        raw = build_ack(header, code, control_id=control_id)
    else:
        exc = s.error
        text = f"{type(exc).__name__}: {exc}" if exc is not None else "not processed"
        raw = build_ack(header, code, text, error="application-error", control_id=control_id)
    ack = hl7v2.parse_header(hl7v2.decode(raw))
    return Envelope(route=ack_route, raw=raw, source=f"app-ack:{env.id}", content_type=HL7_CONTENT_TYPE,
                    headers={"message_type": ack.message_type, "acknowledges": env.id, "ack_code": code},
                    id=ack_id, correlation_id=env.correlation_id or env.id, sender=ack.sender,
                    control_id=ack.control_id)


class ApplicationAcks:
    """The outcome hook of a route with ``application_ack``: publish each wanted ACK, durably, to the
    ACK route's work queue. Raises TransportError when that cannot be promised."""

    def __init__(self, ack_route: RouteRuntime, transport: Transport) -> None:
        self.route, self.transport = ack_route, transport

    def __call__(self, settled: list[Settled]) -> None:
        acks = [a for a in (ack_envelope(s, self.route.name) for s in settled) if a is not None]
        if acks:
            short_retry(self._publish, acks)

    def _publish(self, acks: list[Envelope]) -> None:
        futures: list[Future[None]] = [self.transport.publish(self.route.queues.work, a) for a in acks]
        try:
            for f in futures:
                f.result(timeout=PUBLISH_TIMEOUT)
        except TransportError:
            raise
        except Exception as exc:  # noqa: BLE001 - a timeout or a broken connection: not durable
            raise TransportError(f"application ACK not queued: {type(exc).__name__}: {exc}") from None
        for a in acks:
            log.debug("application ACK queued", message_id=a.headers["acknowledges"], route=self.route.name,
                      code=a.headers["ack_code"])


def wire_application_acks(routes: Sequence[RouteRuntime], transport: Transport) -> None:
    """Give every route with ``application_ack`` its outcome hook, publishing to its ACK route."""
    by_name = {r.name: r for r in routes}
    for r in routes:
        parent = by_name.get(r.config.acknowledges or "")
        if parent is not None:
            parent.on_settled.append(ApplicationAcks(r, transport))
