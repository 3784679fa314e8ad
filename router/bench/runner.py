"""Runs the measurements asked for, in this process (servers, workers and consumers as child
processes), and returns one dict: machine, how it was run, and a section per measurement."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import peers, sources

SECTIONS = ("parse", "mllp", "e2e", "store")


@dataclass
class Plan:
    quick: bool
    parse_seconds: float
    mllp_connections: list[int]
    mllp_seconds: float
    open_rate: float
    open_seconds: float
    e2e_workers: list[int]
    e2e_seconds: float
    e2e_warmup: float
    search_sizes: list[int]
    search_queries: int
    write_bundles: int
    only: list[str] = field(default_factory=lambda: list(SECTIONS))


def plan(quick: bool, only: list[str]) -> Plan:
    if quick:
        return Plan(True, 0.2, [1, 8, 32], 0.5, 500, 1.0, [1], 4, 1.0, [2000], 20, 150, only)
    return Plan(False, 3.0, [1, 8, 32], 10, 500, 20, [1, 2, 4], 60, 10, [100_000, 1_000_000], 200, 2000, only)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cmd(args: list[str]) -> str | None:
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=sources.ROOT)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine(broker_url: str, database_url: str) -> dict[str, Any]:
    import psutil

    cpu = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pg = rabbit = None
    try:
        import sqlalchemy as sa

        e = sa.create_engine(database_url)
        with e.connect() as c:
            pg = str(c.execute(sa.text("SHOW server_version")).scalar_one())
        e.dispose()
    except Exception as exc:  # noqa: BLE001
        pg = f"unreachable ({type(exc).__name__})"
    try:
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(broker_url))
        rabbit = conn._impl.server_properties.get("version", b"?")  # noqa: SLF001
        rabbit = rabbit.decode() if isinstance(rabbit, bytes) else str(rabbit)
        conn.close()
    except Exception as exc:  # noqa: BLE001
        rabbit = f"unreachable ({type(exc).__name__})"
    dirty = _cmd(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu": cpu, "cores_logical": os.cpu_count(), "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "postgresql": pg, "rabbitmq": rabbit, "node": peers.node_version(),
        "packages": {d: _version(d) for d in ("hl7-router", "hl7", "hl7apy", "fhir.resources", "pika", "psycopg",
                                               "sqlalchemy", "orjson", "matplotlib", "psutil")}
                    | {"@medplum/hl7": peers.medplum_version()},
        "git_commit": _cmd(["git", "rev-parse", "--short", "HEAD"]),
        "git_tree_modified": bool(dirty),
    }


def run(p: Plan, broker_url: str, database_url: str, log: Callable[[str], None] = print,
        checkpoint: Path | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """The measurements of the plan. After each section the results so far are written to
    `checkpoint`; `resume` (such a file's contents, same plan) supplies the sections it holds."""
    from . import end_to_end, mllp_ingest, parse_map, store

    t0 = time.monotonic()
    out: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "router bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "router bench",
        "plan": asdict(p), "load_average_before": list(os.getloadavg()), "sections": {}, "durations_s": {},
        "section_runs": {},
    }
    if resume:
        if resume.get("plan") != out["plan"]:
            raise RuntimeError("--resume: the checkpoint was written by another plan (--quick/--only differ)")
        for k in ("started", "load_average_before"):
            out[k] = resume[k]
        for k in ("sections", "durations_s", "section_runs"):
            out[k].update(resume.get(k, {}))

    def section(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name not in p.only:
            return
        if name in out["sections"]:
            log(f"{name}: taken from the checkpoint (run {out['section_runs'][name]['started']})")
            return
        t, started, la = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S%z"), list(os.getloadavg())
        out["sections"][name] = fn()
        out["durations_s"][name] = time.monotonic() - t
        out["section_runs"][name] = {"started": started, "load_average_before": la,
                                     "git_commit": _cmd(["git", "rev-parse", "--short", "HEAD"]),
                                     "load_average_after": list(os.getloadavg())}
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_text(json.dumps(out, default=str))

    def parse() -> dict[str, Any]:
        log("parse + map in process (one core)")
        r = parse_map.run(p.parse_seconds)
        for v in r["payloads"].values():
            log(f"  {v['label']:34} " + "  ".join(f"{k} {x:,.0f}/s" for k, x in v["msg_s"].items()))
        return r

    section("parse", parse)
    section("mllp", lambda: mllp_ingest.run(broker_url, database_url, connections=p.mllp_connections,
                                            seconds=p.mllp_seconds, open_rate=p.open_rate,
                                            open_seconds=p.open_seconds, log=log))
    section("e2e", lambda: end_to_end.run(broker_url, database_url, workers=p.e2e_workers, seconds=p.e2e_seconds,
                                          warmup=p.e2e_warmup, log=log))
    section("store", lambda: store.run(database_url, sizes=p.search_sizes, queries=p.search_queries,
                                       bundles=p.write_bundles, log=log))
    out["load_average_after"] = list(os.getloadavg())
    out["total_s"] = sum(out["durations_s"].values())
    out["wall_s"] = time.monotonic() - t0
    out["machine"] = machine(broker_url, database_url)
    if "e2e" in out["sections"]:
        e = out["sections"]["e2e"]["ours"]
        out["sections"]["memory"] = {
            "listener_peak_rss_mb": max(v["rss_peak_mb"]["listener"] for v in e.values()),
            "worker_peak_rss_mb": max(v["rss_peak_mb"]["worker_max"] for v in e.values()),
            "per_run": {k: v["rss_peak_mb"] for k, v in e.items()},
        }
    from . import report

    out["targets"] = report.targets(out)
    return out
