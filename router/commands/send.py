"""`router send`: an MLLP client. Sends HL7 v2 messages from files, folders or stdin and prints
each acknowledgment.

Input: each FILE may hold several messages: a message starts at an MSH segment or after a blank
line; FHS/BHS/BTS/FTS batch envelope segments are dropped; LF and CRLF line ends become CR, and
MLLP framing bytes left in a capture are removed. A FOLDER sends its files (not hidden ones, not
subfolders) in name order; `-` (or no argument) reads stdin.

Output: one line per message on stdout, `<file>:<n> <MSH-10> <ACK code> <MSA-3 text>` followed by
`[ERR <location> <code> <name>: <text>]` for each ERR segment; errors (timeouts, lost
connections) one line each on stderr, and a summary there at the end. The exit status is 0 when
every message was accepted (AA/CA), 1 otherwise (AE/AR/CE/CR, no ACK within --timeout, a
connection or TLS failure), 2 for wrong usage.

The wait follows the message's MSH-15 (enhanced mode): NE - no ACK is coming, none is awaited;
ER - an ACK comes only on error, so silence for --er-wait seconds means accepted; SU, AL or empty
- the ACK is awaited up to --timeout. A timeout ends the run: the connection can no longer tell
which ACK answers which message, and the messages not yet sent are counted as not sent.
With --connections N the messages are shared among N connections (each keeps its own order;
the lines may interleave).
"""
from __future__ import annotations

import asyncio
import os
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from ..errors import InputError
from ..formats import hl7v2
from ..formats.ack import AckInfo, read_ack
from ..formats.mllp import START, frame, take_frame

BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")
MAX_ACK_BYTES = 16 * 1024 * 1024
OK_CODES = ("AA", "CA")


@dataclass
class Item:
    label: str  # file name (or <stdin>)
    n: int  # position in the file, from 1
    raw: bytes
    control_id: str
    accept_ack_type: str

    @property
    def where(self) -> str:
        return f"{self.label}:{self.n}"


@dataclass
class Totals:
    accepted: int = 0
    failed: int = 0
    not_sent: int = 0
    codes: dict[str, int] = field(default_factory=dict)


def split_messages(data: bytes) -> list[bytes]:
    """The messages of one file (see the module doc), each ending with CR."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    data = data.replace(START, b"").replace(b"\x1c", b"")
    data = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    out: list[bytes] = []
    cur: list[bytes] = []

    def flush() -> None:
        if cur:
            out.append(b"\r".join(cur) + b"\r")
            cur.clear()

    for line in data.split(b"\r"):
        if not line.strip():
            flush()
            continue
        tag, rest = line[:3], line[3:4]
        if tag in BATCH_SEGMENTS and (not rest or not rest.isalnum()):
            flush()
            continue
        if tag == b"MSH":
            flush()
        cur.append(line)
    flush()
    return out


def read_inputs(paths: tuple[str, ...]) -> list[Item]:
    files: list[tuple[str, bytes]] = []
    for p in paths or ("-",):
        if p == "-":
            files.append(("<stdin>", sys.stdin.buffer.read()))
            continue
        path = Path(p)
        try:
            if path.is_dir():
                for f in sorted(path.iterdir()):
                    if f.is_file() and not f.name.startswith("."):
                        files.append((str(f), f.read_bytes()))
            else:
                files.append((str(path), path.read_bytes()))
        except OSError as exc:
            raise click.ClickException(f"cannot read {p}: {exc.strerror or exc}") from None
    items: list[Item] = []
    for label, data in files:
        messages = split_messages(data)
        if not messages:
            click.echo(f"router send: {label}: no HL7 messages in it", err=True)
        for n, raw in enumerate(messages, 1):
            try:
                h = hl7v2.parse_header(hl7v2.decode(raw))
                cid, mode = h.control_id, h.accept_ack_type
            except InputError:
                cid, mode = "", ""  # sent anyway: the receiver answers it
            items.append(Item(label, n, raw, cid, mode))
    return items


def client_ssl_context(ca_file: str | None, cert_file: str | None, key_file: str | None,
                       insecure: bool) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise click.ClickException(f"TLS setup: {getattr(exc, 'strerror', None) or exc}") from None
    return ctx


class Stop(Exception):
    """Ends the run (a timeout, or no connection): the message is named in the text."""


class Connection:
    def __init__(self, host: str, port: int, ctx: ssl.SSLContext | None, timeout: float) -> None:
        self.host, self.port, self.ctx, self.timeout = host, port, ctx, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buf = bytearray()

    async def open(self) -> None:
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ctx,
                                        server_hostname=self.host if self.ctx is not None else None,
                                        ssl_handshake_timeout=self.timeout if self.ctx is not None else None),
                timeout=self.timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise Stop(f"cannot connect to {self.host}:{self.port}: no answer within {self.timeout:g}s") from None
        except ssl.SSLError as exc:
            raise Stop(f"TLS handshake with {self.host}:{self.port} failed: {_reason(exc)}") from None
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise Stop(f"cannot connect to {self.host}:{self.port}: {why}") from None
        self.buf.clear()

    @property
    def open_(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, raw: bytes) -> None:
        assert self.writer is not None
        self.writer.write(frame(raw))
        await asyncio.wait_for(self.writer.drain(), timeout=self.timeout)

    async def frame(self, timeout: float) -> bytes:
        """The next frame; TimeoutError after `timeout`, ConnectionError when the stream ends."""
        assert self.reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                data = take_frame(self.buf, MAX_ACK_BYTES)
            except ValueError:
                raise ConnectionError("answer larger than 16 MiB") from None
            if data is not None:
                return data
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout=remaining)
            if not chunk:
                raise ConnectionError("connection closed by the receiver")
            self.buf += chunk


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc or type(exc).__name__)


def ack_line(item: Item, ack: AckInfo) -> str:
    parts = [item.where, item.control_id or "-", ack.code or "?"]
    if ack.text:
        parts.append(ack.text)
    for e in ack.errors:
        detail = str(e)
        if e.text and e.text != ack.text:
            detail += f": {e.text}"
        parts.append(f"[ERR {detail}]")
    return " ".join(parts)


class Sender:
    def __init__(self, items: list[Item], host: str, port: int, ctx: ssl.SSLContext | None, timeout: float,
                 er_wait: float, connections: int, client_cert: bool = False) -> None:
        self.items, self.host, self.port, self.ctx, self.client_cert = items, host, port, ctx, client_cert
        self.timeout, self.er_wait, self.connections = timeout, er_wait, connections
        self.totals = Totals()
        self.stopped = False

    def _result(self, item: Item, ack: AckInfo, late: bool = False) -> None:
        line = ack_line(item, ack)
        click.echo(line + (" (late answer)" if late else ""))
        self.totals.codes[ack.code] = self.totals.codes.get(ack.code, 0) + 1
        if ack.code in OK_CODES:
            if not late:
                self.totals.accepted += 1
        else:
            if late:  # it had been counted as accepted (silence after ER, or NE)
                self.totals.accepted -= 1
            self.totals.failed += 1

    def _fail(self, item: Item, what: str) -> None:
        click.echo(f"router send: {item.where} {item.control_id or '-'}: {what}", err=True)
        self.totals.failed += 1

    async def run(self) -> None:
        queue: asyncio.Queue[Item] = asyncio.Queue()
        for it in self.items:
            queue.put_nowait(it)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(min(self.connections, len(self.items)))]
        await asyncio.gather(*workers)
        self.totals.not_sent = queue.qsize()

    async def _worker(self, queue: asyncio.Queue[Item]) -> None:
        conn = Connection(self.host, self.port, self.ctx, self.timeout)
        unanswered: dict[str, Item] = {}  # ER/NE messages sent on this connection, by MSH-10
        try:
            while not self.stopped and not queue.empty():
                item = queue.get_nowait()
                try:
                    if not conn.open_:
                        unanswered.clear()
                        await conn.open()
                    await self._exchange(conn, item, unanswered)
                except Stop as exc:
                    self.stopped = True
                    self._fail(item, str(exc))
                except (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError) as exc:
                    hint = ""
                    if self.ctx is not None and not self.client_cert and isinstance(exc, ConnectionError):
                        hint = " (the receiver may require a client certificate: --cert-file, --key-file)"
                    self._fail(item, f"connection lost before the ACK: {_reason(exc)}{hint}")
                    conn.close()
        finally:
            conn.close()

    async def _exchange(self, conn: Connection, item: Item, unanswered: dict[str, Item]) -> None:
        try:
            await conn.send(item.raw)
        except (TimeoutError, asyncio.TimeoutError):
            raise Stop(f"could not send within {self.timeout:g}s") from None
        mode = item.accept_ack_type
        if mode == "NE":
            click.echo(f"{item.where} {item.control_id or '-'} - no ACK requested (MSH-15 NE)")
            self.totals.accepted += 1
            unanswered[item.control_id] = item
            return
        wait = self.er_wait if mode == "ER" else self.timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                raw = await conn.frame(max(0.0, deadline - loop.time()))
            except (TimeoutError, asyncio.TimeoutError):
                if mode == "ER":
                    click.echo(f"{item.where} {item.control_id or '-'} - no ACK within {wait:g}s "
                               f"(MSH-15 ER: accepted)")
                    self.totals.accepted += 1
                    unanswered[item.control_id] = item
                    return
                conn.close()
                raise Stop(f"no ACK within {wait:g}s from {self.host}:{self.port}") from None
            try:
                ack = read_ack(raw)
            except InputError as exc:
                self._fail(item, f"answer is not an ACK: {exc}")
                return
            earlier = unanswered.pop(ack.control_id, None) if ack.control_id != item.control_id else None
            if earlier is not None:
                self._result(earlier, ack, late=True)
                continue
            self._result(item, ack)
            return


@click.command("send")
@click.argument("paths", nargs=-1, type=click.Path(allow_dash=True))
@click.option("--host", default="127.0.0.1", show_default=True, help="MLLP receiver address")
@click.option("--port", type=click.IntRange(1, 65535), default=2575, show_default=True, help="MLLP receiver port")
@click.option("--tls", is_flag=True, help="connect with TLS (implied by --ca-file, --cert-file, --insecure)")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False),
              help="CA certificates (PEM) to check the receiver's certificate (default: the system's)")
@click.option("--cert-file", type=click.Path(exists=True, dir_okay=False),
              help="client certificate (PEM) for mutual TLS")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False), help="its private key (PEM)")
@click.option("--insecure", is_flag=True, help="TLS without checking the receiver's certificate")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="seconds to wait for a connection and for each ACK")
@click.option("--er-wait", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="seconds of silence that mean 'accepted' for a message with MSH-15 ER")
@click.option("--connections", type=click.IntRange(1, 256), default=1, show_default=True,
              help="send over this many connections at once")
def command(paths: tuple[str, ...], host: str, port: int, tls: bool, ca_file: str | None, cert_file: str | None,
            key_file: str | None, insecure: bool, timeout: float, er_wait: float, connections: int) -> None:
    """Send HL7 v2 messages over MLLP and print each ACK.

    PATHS are files, folders or - for stdin (the default). A file may hold several messages
    (starting with MSH or separated by blank lines) and FHS/BHS batches. Exit status 1 when any
    message is not accepted (AE/AR/CE/CR), gets no ACK in time, or cannot be sent.
    """
    if key_file and not cert_file:
        raise click.UsageError("--key-file needs --cert-file")
    if not paths and sys.stdin.isatty():
        raise click.UsageError("give a FILE or FOLDER to send, or - to read messages from stdin")
    items = read_inputs(paths)
    if not items:
        raise click.ClickException("nothing to send")
    ctx = client_ssl_context(ca_file, cert_file, key_file, insecure) \
        if tls or ca_file or cert_file or insecure else None
    sender = Sender(items, host, port, ctx, timeout, er_wait, connections, client_cert=bool(cert_file))
    try:
        asyncio.run(sender.run())
    except KeyboardInterrupt:
        click.echo("router send: interrupted", err=True)
        raise SystemExit(130) from None
    t = sender.totals
    codes = ", ".join(f"{c} {k}" for c, k in sorted(t.codes.items()))
    summary = f"router send: {len(items)} message(s): {t.accepted} accepted, {t.failed} not"
    if codes:
        summary += f" (ACK codes: {codes})"
    if t.not_sent:
        summary += f", {t.not_sent} not sent"
    click.echo(summary, err=True)
    if t.failed or t.not_sent:
        raise SystemExit(1)
