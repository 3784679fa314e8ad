"""MLLP destination: send each output as one frame (0x0B message 0x1C 0x0D) to an MLLP listener,
over TCP or TLS, and read the receiver's ACK.

The receiver's answer decides: AA / CA delivered; AE / CE, no answer within ``timeout``, a refused
or lost connection are transient (``DestinationUnavailable``: retried, then dead-lettered with the
reason); AR / CR, or an answer that is not an ACK, are permanent (``DestinationRejected``). With
``wait_for_ack: false`` a message counts as delivered once written to the connection (for
receivers that do not acknowledge, e.g. the return address of application ACKs, since HL7 does not
acknowledge an ACK). One connection per batch, messages in order; a lost connection is opened
again for the rest (short retries, router.retry.short_retry). Delivery is at least once: the
receiver dedupes on MSH-10.
"""
from __future__ import annotations

import socket
import ssl
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..config.durations import Duration
from ..errors import DestinationRejected, DestinationUnavailable, InputError
from ..formats.ack import read_ack
from ..formats.mllp import frame, take_frame
from ..registry import ComponentSpec
from ..retry import short_retry
from ..tls import ClientTlsOptions, client_context
from .base import DestinationContext, Output

MAX_ANSWER = 16 * 1024 * 1024


class MllpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = Field(description="receiver's host name or address")
    port: int = Field(ge=1, le=65535, description="receiver's MLLP port")
    tls: ClientTlsOptions | None = Field(None, description="TLS to the receiver: {ca_file, cert_file, key_file, "
                                                        "server_hostname}")
    timeout: Duration = Field(10.0, description="longest wait to connect, and for each ACK")
    wait_for_ack: bool = Field(True, description="wait for the receiver's ACK of each message (AA/CA delivered, "
                                                 "AE/CE retried, AR/CR dead-lettered); false: written is delivered")


class Connection:
    """One connection to the receiver, opened on first use and again after a loss (one per batch)."""

    def __init__(self, options: MllpOptions, ctx: ssl.SSLContext | None) -> None:
        self.options, self.ssl = options, ctx
        self.where = f"{options.host}:{options.port}"
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def _connect(self) -> socket.socket:
        o = self.options
        try:
            sock = socket.create_connection((o.host, o.port), timeout=o.timeout)
            if self.ssl is not None:
                sock = self.ssl.wrap_socket(sock, server_hostname=(o.tls.server_hostname if o.tls else None) or o.host)
        except ssl.SSLError as exc:
            raise DestinationUnavailable(f"MLLP {self.where}: TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise DestinationUnavailable(f"MLLP {self.where}: cannot connect: "
                                         f"{exc.strerror or type(exc).__name__}") from None
        self.buf.clear()
        return sock

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def _answer(self, sock: socket.socket) -> bytes:
        while True:
            try:
                answer = take_frame(self.buf, MAX_ANSWER)
            except ValueError:
                raise DestinationRejected(f"MLLP {self.where}: answer larger than {MAX_ANSWER} bytes") from None
            if answer is not None:
                return answer
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the ACK")
            self.buf += chunk

    def send(self, out: Output) -> None:
        if self.sock is None:
            self.sock = self._connect()
        try:
            self.sock.sendall(frame(out.body))
            if not self.options.wait_for_ack:
                return
            answer = self._answer(self.sock)
        except (TimeoutError, socket.timeout):
            self.close()
            raise DestinationUnavailable(f"MLLP {self.where}: no ACK within {self.options.timeout:g}s") from None
        except (OSError, ConnectionError) as exc:
            self.close()
            raise DestinationUnavailable(f"MLLP {self.where}: connection lost: "
                                         f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            ack = read_ack(answer)
        except InputError as exc:
            raise DestinationRejected(f"MLLP {self.where}: the answer is not an ACK: {exc}") from None
        if ack.code in ("AA", "CA"):
            return
        why = f"MLLP {self.where} answered {ack.code}" + (f": {ack.text}" if ack.text else "") + \
            "".join(f" [ERR {e}]" for e in ack.errors)
        if ack.code in ("AR", "CR"):
            raise DestinationRejected(why[:500])
        raise DestinationUnavailable(why[:500])


class MllpDestination:
    transactional = False

    def __init__(self, options: MllpOptions, context: DestinationContext) -> None:
        self.options = options
        self.ssl = client_context(options.tls, context.base_dir, "mllp destination tls") if options.tls else None

    def write(self, outputs: list[Output], tx: Any) -> None:
        conn = Connection(self.options, self.ssl)  # per call: the worker threads of a route share this object
        try:
            for out in outputs:
                short_retry(conn.send, out)
        finally:
            conn.close()

    def close(self) -> None:
        return None


SPEC = ComponentSpec("destination", "mllp", "send each message over MLLP (TCP or TLS) and read its ACK", MllpOptions,
                     lambda o, c: MllpDestination(o, c))
