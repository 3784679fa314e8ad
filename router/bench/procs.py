"""Child processes of a benchmark run: `router run` / `router worker` (the real CLI), the MLLP
peers, the raw pipeline's consumers; free ports, fresh queue namespaces and PostgreSQL schemas,
peak RSS sampling (psutil)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROUTER = str(Path(sys.executable).parent / "router")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60,
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}: {tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s: {tail(log)}")


def tail(log: Path | None, n: int = 1500) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-n:]


class Child:
    """A subprocess with its output in a log file; stop() sends SIGTERM, then SIGKILL."""

    def __init__(self, args: list[str], cwd: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = cwd / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                         env=env if env is not None else dict(os.environ))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def router_child(cmd: str, args: list[str], cwd: Path, name: str) -> Child:
    """The real CLI (`router run`, `router worker`), logging warnings only, ROUTER_* unset."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    return Child([ROUTER, cmd, "--log-level", "warning", *args], cwd, name, env)


@contextlib.contextmanager
def pg_schema(url: str, prefix: str = "bench") -> Iterator[str]:
    """A fresh PostgreSQL schema; yields the URL whose search_path is it; dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def namespace() -> str:
    return f"bench{uuid.uuid4().hex[:8]}"


def delete_queues(broker_url: str, ns: str, routes: list[str]) -> None:
    """Delete the queues a run declared under its namespace (work, dead-letter, retry tiers)."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        ch = conn.channel()
        for r in routes:
            for q in [f"{ns}.{r}", f"{ns}.{r}.dlq", *(f"{ns}.{r}.retry.{k}" for k in range(10))]:
                ch.queue_delete(q)
    finally:
        conn.close()


@contextlib.contextmanager
def workdir(prefix: str = "router-bench-") -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


class RssSampler:
    """Peak resident set size (bytes) of some processes, sampled every `interval` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, p in self.procs.items():
                with contextlib.suppress(Exception):
                    self.peak[name] = max(self.peak[name], p.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def peaks_mb(self) -> dict[str, float]:
        return {k: v / 2**20 for k, v in self.peak.items()}
