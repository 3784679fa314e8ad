"""Asyncio MLLP listener. Frames: 0x0B message 0x1C 0x0D, over TCP or TLS.

Connections are served concurrently; the messages of one connection are handled one at a time
and answered in order, and an ACK goes out only after intake reports the message durable.

Framing: bytes outside a frame are skipped (logged once per run of them). A frame that is cut
short - a new start block before the end block, or end of stream inside it - is refused with
AR; so is a frame over ``max_message_bytes`` (read to its end and dropped, keeping only its
head to answer from). A connection that sends nothing for ``idle_timeout`` is closed. Nothing
a sender puts in a frame closes the connection: every frame gets its answer.

Acknowledgments (router/formats/ack.py builds them: sender and receiver swapped, the sender's
version and encoding characters, MSA-2 = MSH-10, an ERR segment on errors):

* original mode (MSH-15 empty): AA once the message is durably enqueued; AE when it cannot be
  accepted now (not confirmed durable: resend later); AR when it is refused (not HL7, no route
  for the message type - ERR 200, addressed to another receiver - ERR 103, too large, frame
  cut short - ERR 207).
* enhanced mode (MSH-15 = AL, ER, NE or SU): the same outcomes as the commit ACK CA / CE / CR,
  sent per MSH-15: AL always, ER only on CE/CR, SU only on CA, NE never (the connection stays
  open for the next message). An unknown MSH-15 value is answered as AL. The application
  acknowledgment that MSH-16 asks for is the worker's, after processing, sent to the route's
  return address (router/app_ack.py); MSH-15 and MSH-16 are kept in the envelope headers
  (accept_ack_type, application_ack_type).

A resent message (same sender and MSH-10) is acknowledged again like the first; the worker
recognises it and does not process it twice.

Backpressure (``max_backlog``): while a work queue of the listener's routes holds that many
messages not yet taken by a worker, a connection holds the message it has just read unanswered
and reads nothing more (intake.BacklogGate reads the depth every half second), so senders wait
for their ACKs and the workers catch up.
"""
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, RejectedError, TransportError
from ..formats import hl7v2
from ..formats.ack import build_ack
from ..formats.mllp import END, START
from ..formats.ack import wanted as _wanted
from ..intake import BacklogGate
from ..logging import get
from ..tls import server_context
from .base import SourceContext
from .mllp import MllpOptions

log = get("router.mllp")
HEAD = 65536  # of a message too large to take: what is kept to answer it (its MSH)
READ = 65536


class IdleTimeout(Exception):
    def __init__(self, in_frame: bool) -> None:
        super().__init__("idle")
        self.in_frame = in_frame


@dataclass(frozen=True)
class Frame:
    data: bytes  # the message (for a refused frame: its head, enough for the MSH)
    size: int  # bytes between the start block and the end block (or where the frame was cut)
    kind: str = "ok"  # ok | too-large | unterminated (new start block first) | eof (stream ended inside)


class FrameReader:
    """Splits one connection's byte stream into frames.

    The idle timeout is one timer per connection, re-armed only when it fires (not a
    ``wait_for`` - a task and a timer - around every read): when it fires while a read has been
    waiting for ``idle_timeout``, the read ends and raises IdleTimeout."""

    def __init__(self, reader: asyncio.StreamReader, max_bytes: int, idle_timeout: float, peer: str) -> None:
        self.reader, self.max, self.idle, self.peer = reader, max_bytes, idle_timeout, peer
        self.buf = bytearray()
        self.loop = asyncio.get_running_loop()
        self.waiting_since: float | None = None  # loop time the pending read started, None when not reading
        self.timed_out = False
        self.timer = self.loop.call_later(idle_timeout, self._check_idle) if idle_timeout else None

    def _check_idle(self) -> None:
        since = self.waiting_since
        now = self.loop.time()
        if since is not None and now - since >= self.idle:
            self.timer = None
            self.timed_out = True
            self.reader.feed_eof()  # ends the pending read; _fill turns it into IdleTimeout
            return
        self.timer = self.loop.call_at((since if since is not None else now) + self.idle, self._check_idle)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def _fill(self, in_frame: bool) -> bool:
        """More bytes into buf; False at end of stream. Raises IdleTimeout after idle_timeout of silence."""
        self.waiting_since = self.loop.time()
        try:
            data = await self.reader.read(READ)
        finally:
            self.waiting_since = None
        if self.timed_out:
            raise IdleTimeout(in_frame)
        if not data:
            return False
        self.buf += data
        return True

    async def next(self) -> Frame | None:
        """The next frame, or None at end of stream between frames."""
        skipped = 0
        while True:
            i = self.buf.find(START)
            if i != -1:
                skipped += i
                del self.buf[:i + 1]
                break
            skipped += len(self.buf)
            self.buf.clear()
            if not await self._fill(False):
                self._skipped(skipped)
                return None
        self._skipped(skipped)
        dropped, head, scan = 0, b"", 0
        while True:
            j = self.buf.find(END, scan)
            k = self.buf.find(START, scan)
            if k != -1 and (j == -1 or k < j):  # a new frame starts before this one ended
                body = bytes(self.buf[:k])
                del self.buf[:k]
                return Frame(head or body, dropped + k, "unterminated")
            if j != -1:
                body = bytes(self.buf[:j])
                del self.buf[:j + 2]
                size = dropped + j
                if size > self.max:
                    return Frame(head or body[:HEAD], size, "too-large")
                return Frame(body, size)
            if dropped or len(self.buf) > self.max:
                # too large: keep the head, drop the rest up to the end block (a trailing 0x1C may be half of it)
                head = head or bytes(self.buf[:HEAD])
                n = len(self.buf) - (1 if self.buf.endswith(b"\x1c") else 0)
                dropped += n
                del self.buf[:n]
            scan = max(0, len(self.buf) - 1)
            if not await self._fill(True):
                return Frame(head or bytes(self.buf), dropped + len(self.buf), "eof")

    def _skipped(self, n: int) -> None:
        if n:
            log.warning("mllp: bytes outside a frame skipped", peer=self.peer, bytes=n)


def server_ssl_context(options: MllpOptions, base_dir: str) -> ssl.SSLContext | None:
    """The listener's TLS context (None without `tls`). Raises RouterError naming the file at fault."""
    return server_context(options.tls, base_dir, "mllp source tls")


def _subject(writer: asyncio.StreamWriter) -> str:
    """The client certificate's subject CN (mutual TLS), or ''."""
    obj = writer.get_extra_info("ssl_object")
    cert = obj.getpeercert() if obj is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class MllpServer:
    def __init__(self, options: MllpOptions, context: SourceContext) -> None:
        self.options, self.context = options, context
        self.host, self.port = options.address(context.settings)
        self.ssl = server_ssl_context(options, context.base_dir)
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[asyncio.Task[Any]] = set()
        self.busy: set[asyncio.Task[Any]] = set()  # answering a message right now
        self.stopping = False
        self.gate: BacklogGate | None = None
        if options.max_backlog is not None:
            intake = context.intake
            self.gate = BacklogGate(intake.transport, [r.queues.work for r in intake.routes], options.max_backlog)

    async def start(self) -> None:
        if self.gate is not None:
            self.gate.start()
        # TLS is started per connection (not by start_server) so that a failed handshake is logged
        self.server = await asyncio.start_server(self._serve, self.host, self.port, backlog=1024)
        sock = self.server.sockets[0].getsockname()
        self.port = sock[1]
        log.info("mllp listening", host=self.host, port=self.port,
                 tls=("mutual" if self.options.tls and self.options.tls.ca_file else "on") if self.ssl else "off")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self.stopping = True
        if self.gate is not None:
            await self.gate.stop()
        # connections waiting for a message close now; those answering one finish it first
        for task in list(self.connections - self.busy):
            task.cancel()
        if self.connections:
            await asyncio.wait(self.connections, timeout=self.options.ack_timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        peer = writer.get_extra_info("peername")
        source = f"mllp:{peer[0]}:{peer[1]}" if peer else "mllp"
        try:
            headers: dict[str, str] = {}
            if self.ssl is not None:
                try:
                    await writer.start_tls(self.ssl, ssl_handshake_timeout=min(self.options.idle_timeout, 60.0) or None)
                except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
                    log.warning("mllp tls handshake failed", peer=source,
                                error=getattr(exc, "reason", None) or str(exc) or type(exc).__name__)
                    return
                if subject := _subject(writer):
                    headers["tls_client"] = subject
            frames = FrameReader(reader, self.options.max_message_bytes, self.options.idle_timeout, source)
            transport = writer.transport
            gate = self.gate
            try:
                while True:
                    try:
                        frame = await frames.next()
                    except IdleTimeout as exc:
                        log.info("mllp idle timeout", peer=source, inside_a_frame=exc.in_frame)
                        return
                    if frame is None:
                        return
                    if gate is not None and gate.paused:
                        # backpressure: this message waits unanswered, and nothing more is read
                        await gate.wait()
                        if self.stopping:
                            return
                    self.busy.add(task)
                    try:
                        answer = await self._answer(frame, source, headers)
                        if answer is not None:
                            writer.write(START + answer + END)
                            if transport.get_write_buffer_size() > READ:  # a sender not reading its ACKs
                                await writer.drain()
                    finally:
                        self.busy.discard(task)
                    if frame.kind == "eof" or self.stopping:
                        return
            finally:
                frames.close()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self.connections.discard(task)
            writer.close()

    async def _answer(self, frame: Frame, source: str, headers: dict[str, str]) -> bytes | None:
        """The ACK for one frame, or None when the sender asked for none (MSH-15)."""
        header = None
        if hl7v2.is_hl7(frame.data):
            try:
                header = hl7v2.parse_header(hl7v2.decode(frame.data))
            except InputError:
                header = None
        try:
            cls, text, error, location = await self._handle(frame, header, source, headers)
        except Exception as exc:  # noqa: BLE001 - a bug must not cost the sender its connection
            log.error("mllp: message not handled", peer=source, error=f"{type(exc).__name__}: {exc}"[:300])
            cls, text, error, location = "E", "internal error, please resend", "application-error", ""
        enhanced = header is not None and header.enhanced
        if enhanced and not _wanted(header.accept_ack_type, cls):  # type: ignore[union-attr]
            log.debug("mllp: no commit ACK (MSH-15)", peer=source, outcome=cls,
                      accept_ack_type=header.accept_ack_type)  # type: ignore[union-attr]
            return None
        code = ("C" if enhanced else "A") + cls
        return build_ack(header, code, text, error=error, location=location)

    async def _handle(self, frame: Frame, header: hl7v2.Header | None, source: str,
                      headers: dict[str, str]) -> tuple[str, str, str | None, str]:
        """(outcome A/E/R, text, ERR code key or None, ERR location) for one frame."""
        intake = self.context.intake
        if frame.kind != "ok":
            what = {
                "too-large": f"message of {frame.size} bytes is larger than the limit of "
                             f"{self.options.max_message_bytes} bytes",
                "unterminated": "frame not terminated: a start block (0x0B) came before the end block (0x1C 0x0D)",
                "eof": "frame not terminated: the connection ended before the end block (0x1C 0x0D)",
            }[frame.kind]
            log.warning("mllp: frame refused", peer=source, reason=frame.kind, bytes=frame.size)
            exc = InputError(what)
            intake.refused(frame.data, source, exc)
            return "R", what, "application-error", ""
        if header is not None:
            refused = self._wrong_receiver(header)
            if refused is not None:
                text, location = refused
                intake.refused(frame.data, source, RejectedError(text))
                return "R", text, "table-value", location
        extra = dict(headers) if header is None else {**headers, **header.ack_headers()}
        try:
            accepted = intake.prepare(frame.data, source=source, headers=extra, header=header)
        except RejectedError as exc:
            return "R", str(exc), "unsupported-message-type", "MSH^1^9"
        except InputError as exc:
            return "R", str(exc), "application-error", "MSH^1"
        try:
            await intake.enqueue(accepted)
        except TransportError as exc:
            log.error("not enqueued", message_id=accepted.envelope.id, route=accepted.route.name, error=str(exc)[:200])
            return "E", "message not stored, please resend", "application-error", ""
        return "A", "", None, ""

    def _wrong_receiver(self, h: hl7v2.Header) -> tuple[str, str] | None:
        """(text, ERR location) when MSH-5 / MSH-6 name a receiver other than the configured one."""
        for want, got, field, what in ((self.options.receiving_application, h.receiving_application, 5, "application"),
                                       (self.options.receiving_facility, h.receiving_facility, 6, "facility")):
            if want is not None and not _same_hd(want, got, h.component_sep):
                return (f"message addressed to receiving {what} {got or '(empty)'!r}, this listener is {want!r}",
                        f"MSH^1^{field}")
        return None


def _same_hd(want: str, got: str, cs: str) -> bool:
    """MSH-5/6 (HD) names the configured receiver: the whole field or its namespace id (HD-1).
    The configured value is written with ^ between components, whatever the sender's separator."""
    got = got.replace(cs, "^")
    return got == want or got.split("^")[0] == want
