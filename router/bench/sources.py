"""Where the benchmark finds the source tree's pieces it reuses (benchmarks/*.py, samples/, the
Node.js peer) and the mappings."""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

import mappings

ROOT = Path(__file__).resolve().parent.parent.parent
BENCHMARKS = ROOT / "benchmarks"
NODE_PEER = BENCHMARKS / "node-peer"
MAPPINGS = Path(mappings.__file__).resolve().parent


@functools.cache
def bench_module(name: str) -> ModuleType:
    """benchmarks/<name>.py of the source tree, imported (they are scripts, not a package)."""
    path = BENCHMARKS / f"{name}.py"
    if not path.is_file():
        raise RuntimeError(f"{path} not found: `router bench` runs from a source checkout of the router")
    spec = importlib.util.spec_from_file_location(f"_router_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
