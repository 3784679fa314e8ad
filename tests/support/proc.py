"""Start the real `router` CLI as a subprocess in tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROUTER = str(Path(sys.executable).parent / "router")


def router_env(**extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ROUTER, *args], cwd=cwd, env=env or router_env(), capture_output=True, text=True,
                          timeout=timeout)


class RouterProcess:
    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], http_port: int | None = None) -> None:
        self.log = open(cwd / f"router-{time.monotonic_ns()}.log", "w+")
        self.proc = subprocess.Popen([ROUTER, *args], cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.http_port = http_port

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"router exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"router not healthy after {timeout}s:\n{self.output()}")

    def wait_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not logged:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close() if self.log.closed is False and self.proc.poll() is not None and False else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
