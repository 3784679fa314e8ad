"""The MLLP peers beside ours: python-hl7's asyncio server and a Node.js @medplum/hl7 server, both
answering AA without storing anything. Each is installed by the benchmark on first use (python-hl7
is a Python dependency of the bench extra; the Node.js peer by `npm install` into
benchmarks/node-peer/node_modules) and skipped with a reason when its runtime is absent."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from . import procs, sources


def python_hl7() -> tuple[list[str] | None, str]:
    """(command line without the port, '') or (None, why it is skipped)."""
    try:
        import hl7.mllp  # noqa: F401
    except ImportError as exc:
        return None, f"python-hl7 is not installed ({exc}): pip install 'hl7-router[bench]'"
    return [sys.executable, "-m", "router.bench.hl7_peer"], ""


def node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        return subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def node_medplum(log=print) -> tuple[list[str] | None, str]:  # type: ignore[no-untyped-def]
    """Install the Node.js peer if needed; (command line without the port, '') or (None, reason)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None, f"Node.js runtime absent ({'node' if node is None else 'npm'} not on PATH)"
    peer: Path = sources.NODE_PEER
    if not (peer / "server.js").is_file():
        return None, f"{peer}/server.js not found (not a source checkout)"
    if not (peer / "node_modules" / "@medplum" / "hl7" / "package.json").is_file():
        log(f"installing the Node.js peer: npm install in {peer}")
        try:
            r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=peer,
                               capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"npm install failed: {exc}"
        if r.returncode != 0:
            return None, f"npm install failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}"
    return [node, str(peer / "server.js")], ""


def medplum_version() -> str | None:
    import json

    p = sources.NODE_PEER / "node_modules" / "@medplum" / "hl7" / "package.json"
    try:
        return str(json.loads(p.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def start(cmd: list[str], cwd: Path, name: str) -> tuple[procs.Child, int]:
    port = procs.free_port()
    child = procs.Child([*cmd, str(port)], cwd, name)
    procs.wait_port(port, child.proc, timeout=30, log=child.log)
    return child, port
