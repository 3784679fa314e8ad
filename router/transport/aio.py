"""Awaiting transport futures from asyncio with one loop wake-up per burst of completions.

``Transport.publish`` returns a ``concurrent.futures.Future`` resolved on the transport's own
thread (the SQLite group-commit writer, the RabbitMQ publisher's I/O thread). The stock bridge,
``asyncio.wait_for(asyncio.wrap_future(f), timeout)``, costs per message a wrapper future, a
timeout handle, a task and one ``call_soon_threadsafe`` (a write to the loop's self-pipe) when
the future completes. A group commit or a ``multiple=True`` confirm completes hundreds of
futures at once; here their completions are queued and the loop is woken once to deliver them
all. Timeouts are checked by one timer per bridge (not one per message), so a future that never
completes fails within about a second of its deadline; deadlines are checked in the order of the
``wait`` calls, so give one bridge one timeout.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from ..errors import TransportError

_SWEEP = 1.0  # seconds between timeout checks while anything is pending


class FutureBridge:
    """Used on one event loop; completions may arrive on any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread_id = threading.get_ident()  # made on the loop's thread (bridge_for)
        self._done: deque[tuple[asyncio.Future[None], Future[None]]] = deque()  # appended on any thread
        self._wake_scheduled = False
        self._pending: dict[asyncio.Future[None], tuple[float, float]] = {}  # -> (deadline, timeout), in order
        self._sweeper: asyncio.TimerHandle | None = None

    def wait(self, fut: Future[None], timeout: float) -> asyncio.Future[None]:
        """An asyncio future resolved like `fut`, or failed with TransportError after `timeout` seconds."""
        afut: asyncio.Future[None] = self.loop.create_future()
        self._pending[afut] = (time.monotonic() + timeout, timeout)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(_SWEEP, self._sweep)
        fut.add_done_callback(lambda f: self._completed(afut, f))
        return afut

    def _completed(self, afut: asyncio.Future[None], fut: Future[None]) -> None:
        if threading.get_ident() == self._thread_id:  # completed on the loop itself: deliver now
            self._pending.pop(afut, None)
            if not afut.done():
                exc = fut.exception()
                if exc is None:
                    afut.set_result(None)
                else:
                    afut.set_exception(exc)
            return
        # any thread; deque.append is atomic. A wake-up is scheduled unless one is already due: the
        # flag is cleared before draining, so nothing appended after a drain is left behind.
        self._done.append((afut, fut))
        if not self._wake_scheduled:
            self._wake_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _deliver(self) -> None:
        self._wake_scheduled = False
        done, pending = self._done, self._pending
        while done:
            afut, fut = done.popleft()
            pending.pop(afut, None)
            if afut.done():  # cancelled (the connection went away) or timed out
                continue
            exc = fut.exception()
            if exc is None:
                afut.set_result(None)
            else:
                afut.set_exception(exc)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        expired: list[tuple[asyncio.Future[None], float]] = []
        for afut, (deadline, timeout) in self._pending.items():  # insertion order: deadline order
            if deadline > now and not afut.done():
                break
            expired.append((afut, timeout))
        for afut, timeout in expired:
            del self._pending[afut]
            if not afut.done():
                afut.set_exception(TransportError(f"message not confirmed durable within {timeout:.0f}s"))
        if self._pending:
            self._sweeper = self.loop.call_later(_SWEEP, self._sweep)


def bridge_for(owner: Any) -> FutureBridge:
    """The FutureBridge of the running loop, kept on `owner` (attribute `_future_bridge`); a new
    one also attaches the loop to `owner.transport` (Transport.attach_loop), if it has one."""
    loop = asyncio.get_running_loop()
    bridge: FutureBridge | None = getattr(owner, "_future_bridge", None)
    if bridge is None or bridge.loop is not loop:
        bridge = FutureBridge(loop)
        owner._future_bridge = bridge
        transport = getattr(owner, "transport", None)
        if transport is not None:
            transport.attach_loop(loop)  # e.g. RabbitMQ publishes on this loop, no thread hand-off
    return bridge
