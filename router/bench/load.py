"""MLLP load generator (asyncio, one process).

* closed loop: N connections, each sends a message and waits for its ACK before the next one;
  every message's latency (send to ACK) is recorded.
* open loop: a fixed offered rate spread over N connections, message k on connection k mod N at
  its scheduled time t0 + k/rate; a connection still waiting for an ACK sends its next message as
  soon as the ACK comes (one message in flight per connection, as original-mode senders do), and
  every latency is measured from the scheduled time, so a server that falls behind is not hidden
  (no coordinated omission). Pipelining several frames on one connection is not used: the
  Node.js peer (@medplum/hl7 4.x) parses everything one TCP read holds as one message.

Only AA/CA counts as accepted; any other answer is counted in `not_accepted`.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

START, END = b"\x0b", b"\x1c\x0d"


def percentile(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return float("nan")
    k = min(len(sorted_ms) - 1, max(0, int(round(p / 100 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def summary(latencies: list[float], seconds: float, not_accepted: int, errors: int) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in latencies)
    return {"messages": len(ms), "seconds": seconds, "msg_s": len(ms) / seconds if seconds else 0.0,
            "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": ms[-1] if ms else float("nan"),
            "not_accepted": not_accepted, "errors": errors}


def _accepted(ack: bytes) -> bool:
    i = ack.find(b"MSA|")
    return i != -1 and ack[i + 4:i + 6] in (b"AA", b"CA")


class _Conn(asyncio.Protocol):
    """One MLLP connection; answers complete ACK frames to waiters, in order."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiters: deque[asyncio.Future[bytes]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            j = self.buf.find(END)
            if j == -1:
                return
            i = self.buf.find(START)
            frame = bytes(self.buf[i + 1 if i != -1 and i < j else 0:j])
            del self.buf[:j + 2]
            if self.waiters:
                fut = self.waiters.popleft()
                if not fut.done():
                    fut.set_result(frame)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionError("connection closed")
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(self.lost)

    def send(self, data: bytes) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self.lost is not None:
            fut.set_exception(self.lost)
            return fut
        self.waiters.append(fut)
        assert self.transport is not None
        self.transport.write(START + data + END)
        return fut


async def _open(host: str, port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(_Conn, host, port)
    return proto


async def _closed(host: str, port: int, connections: int, seconds: float, make: Callable[[int], bytes],
                  warmup: float) -> dict[str, Any]:
    conns = [await _open(host, port) for _ in range(connections)]
    counter = iter(range(10**12))
    lat: list[float] = []
    stats = {"na": 0, "err": 0}
    t_warm = time.perf_counter() + warmup
    t_end = t_warm + seconds

    async def one(c: _Conn) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            try:
                ack = await asyncio.wait_for(c.send(make(next(counter))), 60)
            except (ConnectionError, asyncio.TimeoutError, TimeoutError):
                stats["err"] += 1
                return
            t1 = time.perf_counter()
            if t0 >= t_warm:
                if _accepted(ack):
                    lat.append(t1 - t0)
                else:
                    stats["na"] += 1

    await asyncio.gather(*(one(c) for c in conns))
    elapsed = max(time.perf_counter(), t_end) - t_warm
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return summary(lat, elapsed, stats["na"], stats["err"])


async def _open_loop(host: str, port: int, rate: float, connections: int, seconds: float,
                     make: Callable[[int], bytes]) -> dict[str, Any]:
    conns = [await _open(host, port) for _ in range(connections)]
    total = int(rate * seconds)
    lat: list[float] = []
    stats = {"na": 0, "err": 0}
    t0 = time.perf_counter() + 0.05

    async def one(c: _Conn, first: int) -> None:
        for k in range(first, total, connections):
            scheduled = t0 + k / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:  # one message in flight per connection, as an original-mode sender
                ack = await asyncio.wait_for(c.send(make(k)), 60)
            except (ConnectionError, asyncio.TimeoutError, TimeoutError):
                stats["err"] += 1
                return
            if _accepted(ack):
                lat.append(time.perf_counter() - scheduled)
            else:
                stats["na"] += 1

    await asyncio.gather(*(one(c, i) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - t0
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    out = summary(lat, elapsed, stats["na"], stats["err"])
    out["offered_msg_s"] = rate
    return out


def closed_loop(port: int, connections: int, seconds: float, make: Callable[[int], bytes],
                warmup: float = 0.5, host: str = "127.0.0.1") -> dict[str, Any]:
    """Closed loop for `seconds` after `warmup`; messages per second and ACK latency (ms)."""
    return asyncio.run(_closed(host, port, connections, seconds, make, warmup))


def open_loop(port: int, rate: float, connections: int, seconds: float, make: Callable[[int], bytes],
              host: str = "127.0.0.1") -> dict[str, Any]:
    """`rate` messages per second offered for `seconds` over `connections`; latency from schedule."""
    return asyncio.run(_open_loop(host, port, rate, connections, seconds, make))
