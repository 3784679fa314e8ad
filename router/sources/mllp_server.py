"""Asyncio MLLP listener. Frames: 0x0B message 0x1C 0x0D. Messages are answered in order per
connection; the ACK goes out only after intake reports the message durable.

ACK codes (original mode): AA enqueued durably; AR refused (not HL7, unknown message
type, too large); AE could not be accepted now (not confirmed durable: resend later).
"""
from __future__ import annotations

import asyncio
from typing import Any

from ..errors import InputError, RejectedError, TransportError
from ..formats import hl7v2
from ..formats.ack import build_ack
from ..logging import get
from .base import SourceContext
from .mllp import MllpOptions

log = get("router.mllp")
START, END = b"\x0b", b"\x1c\x0d"


class MllpServer:
    def __init__(self, options: MllpOptions, context: SourceContext) -> None:
        self.options, self.context = options, context
        self.host, self.port = options.address(context.settings)
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[asyncio.Task[Any]] = set()
        self.busy: set[asyncio.Task[Any]] = set()  # answering a message right now
        self.stopping = False

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, self.port,
                                                 limit=self.options.max_message_bytes + 16)
        sock = self.server.sockets[0].getsockname()
        self.port = sock[1]
        log.info("mllp listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self.stopping = True
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
            while True:
                try:
                    frame = await asyncio.wait_for(self._read_frame(reader), timeout=self.options.idle_timeout)
                except (TimeoutError, asyncio.TimeoutError):
                    log.info("mllp idle timeout", peer=source)
                    return
                if frame is None:
                    return
                self.busy.add(task)
                try:
                    answer = await self._handle(frame, source)
                    writer.write(START + answer + END)
                    await writer.drain()
                finally:
                    self.busy.discard(task)
                if self.stopping:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self.connections.discard(task)
            writer.close()

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next message, or None at end of stream. Bytes outside frames are skipped and logged."""
        while True:
            b = await reader.read(1)
            if not b:
                return None
            if b == START:
                break
            log.warning("mllp: bytes outside a frame skipped")
        try:
            data = await reader.readuntil(END)
        except asyncio.LimitOverrunError:
            # too large: swallow up to the end of this frame, then refuse it
            while True:
                chunk = await reader.read(65536)
                if not chunk or END in chunk:
                    break
            return b""
        return data[:-2]

    async def _handle(self, raw: bytes, source: str) -> bytes:
        intake = self.context.intake
        header = None
        if not raw:
            exc = InputError(f"message larger than {self.options.max_message_bytes} bytes")
            intake.refused(raw, source, exc)
            return build_ack(None, "AR", str(exc), error="application-error")
        if START in raw:
            exc = InputError("malformed frame: start block inside a message")
            intake.refused(raw, source, exc)
            return build_ack(None, "AR", str(exc), error="application-error")
        try:
            header = hl7v2.parse_header(hl7v2.decode(raw))
            accepted = intake.prepare(raw, source=source)
        except RejectedError as exc:
            return build_ack(header, "AR", str(exc), error="unsupported-message-type", location="MSH^1^9")
        except InputError as exc:
            return build_ack(header, "AR", str(exc), error="application-error", location="MSH^1")
        try:
            await intake.enqueue(accepted)
        except TransportError as exc:
            log.error("not enqueued", message_id=accepted.envelope.id, route=accepted.route.name, error=str(exc)[:200])
            return build_ack(header, "AE", "message not stored, please resend", error="application-error")
        return build_ack(header, "AA", "")
