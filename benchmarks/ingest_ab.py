"""MLLP ingest of one listener (`router run --no-workers`), with its CPU per message: for A/B runs.

    .venv/bin/python benchmarks/ingest_ab.py embedded|rabbitmq [--src DIR] [--label A] [--seconds 4]
        [--open-seconds 8] [--conns 1,8,32] [--py-spy FILE]

The same measurements as `router bench --only mllp` (router/bench/load.py: an open loop at 500
msg/s over 8 connections, then closed loops), plus the listener process's CPU time per message
(psutil), which is much steadier than msg/s on a shared machine, and the load average. `--src`
runs the listener from another source tree (e.g. `git archive <commit> router | tar -x -C DIR`),
bypassing the editable install, so that before and after can be interleaved in the same
conditions: A, B, A, B. `--py-spy FILE` records the listener (raw collapsed stacks; set
SPY_GIL=1 for GIL-holding samples only).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from router.bench import load, payloads, procs, routes

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
PG = "postgresql+psycopg://root@127.0.0.1:5432/test"
# the router CLI from the tree named by INGEST_AB_SRC, ahead of the editable install's finder
LAUNCH = ("import os, sys\n"
          "src = os.environ.get('INGEST_AB_SRC')\n"
          "if src:\n"
          "    sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
          "    sys.path.insert(0, src)\n"
          "from router.cli import main\n"
          "sys.argv[0] = 'router'\n"
          "sys.exit(main())\n")


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def measure(port: int, tag: str, proc: psutil.Process, a: argparse.Namespace) -> None:
    def cpu() -> float:
        t = proc.cpu_times()
        return float(t.user + t.system)

    def line(what: str, r: dict[str, Any], cpu_ms: float) -> None:
        print(f"[{a.label} {a.kind}] {what}: cpu {cpu_ms:.2f} ms/msg {r['msg_s']:6.0f} msg/s p50 {r['p50_ms']:.2f} "
              f"p99 {r['p99_ms']:.2f} max {r['max_ms']:.1f} not-AA {r['not_accepted']} errors {r['errors']}  "
              f"load {loadavg()}", flush=True)

    load.closed_loop(port, 8, 1.0, lambda i: payloads.make("oru", i, tag + "w").encode(), warmup=0)
    if a.open_seconds > 0:
        c0 = cpu()
        r = load.open_loop(port, 500, 8, a.open_seconds, lambda i: payloads.make("oru", i, tag + "o").encode())
        line("open 500", r, 1000 * (cpu() - c0) / max(1, r["messages"]))
    for n in [int(x) for x in a.conns.split(",")]:
        c0 = cpu()
        warmup = 0.5
        r = load.closed_loop(port, n, a.seconds, lambda i, t=f"{tag}c{n}-": payloads.make("oru", i, t).encode(),
                             warmup=warmup)
        sent = r["messages"] * (a.seconds + warmup) / a.seconds  # CPU of the warm-up too
        line(f"{n:>2} conns", r, 1000 * (cpu() - c0) / max(1, sent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["embedded", "rabbitmq"])
    ap.add_argument("--src", default="", help="source tree to run the listener from (default: this checkout)")
    ap.add_argument("--label", default="")
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--open-seconds", type=float, default=8)
    ap.add_argument("--conns", default="1,8,32")
    ap.add_argument("--py-spy", default="")
    a = ap.parse_args()
    with procs.workdir() as folder:
        mllp, http = procs.free_port(), procs.free_port()
        args = ["--no-workers", "--routes", str(routes.write(folder)), "--data-dir", str(folder / "var"),
                "--mllp-port", str(mllp), "--http-port", str(http)]
        with procs.pg_schema(PG, "ingest_ab") if a.kind == "rabbitmq" else contextlib.nullcontext() as pg:
            if a.kind == "rabbitmq":
                args += ["--broker-url", BROKER, "--database-url", str(pg), "--namespace", folder.name]
            env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
            if a.src:
                env["INGEST_AB_SRC"] = str(Path(a.src).resolve())
            child = procs.Child([sys.executable, "-c", LAUNCH, "run", "--log-level", "warning", *args], folder,
                                "listener", env)
            spy = None
            try:
                procs.wait_port(mllp, child.proc, timeout=60, log=child.log)
                if a.py_spy:
                    spy = subprocess.Popen(
                        [str(Path(sys.executable).parent / "py-spy"), "record", "-o", a.py_spy, "-f", "raw",
                         "-p", str(child.pid), "--threads", *(["--gil"] if os.environ.get("SPY_GIL") else [])],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1)
                measure(mllp, folder.name[-8:], psutil.Process(child.pid), a)
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
                child.stop()
                if a.kind == "rabbitmq":
                    procs.delete_queues(BROKER, folder.name, routes.ROUTE_NAMES)
                problems = [ln for ln in procs.tail(child.log, 4000).splitlines() if "warning" in ln or "error" in ln]
                if problems:
                    print("\n".join(problems[-5:]))


if __name__ == "__main__":
    main()
