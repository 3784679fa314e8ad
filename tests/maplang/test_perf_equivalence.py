"""Mapping output that speed work must not change: the ORU^R01 of benchmarks/mapping.py maps to the
Bundle stored in fixtures/ (ids, warnings and trace byte for byte), and the fast uuid5 is uuid.uuid5.
"""
from __future__ import annotations

import importlib.util
import random
import uuid
from pathlib import Path

import orjson
import pytest

from router.maplang.compiler import NAMESPACE, MappingOptions, compile_mapping, uuid5

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "oru-r01-benchmark.json"


def _benchmark_message() -> str:
    spec = importlib.util.spec_from_file_location("_bench_mapping", ROOT / "benchmarks" / "mapping.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MESSAGE


@pytest.mark.parametrize("policy", ["pass", "warn"])
def test_benchmark_oru_maps_to_the_stored_bundle(policy: str) -> None:
    expected = orjson.loads(FIXTURE.read_bytes())[policy]
    m = compile_mapping(ROOT / "mappings" / "oru-r01.yaml", MappingOptions(unmapped=policy))
    r = m.run(_benchmark_message())
    assert orjson.dumps(r.document) == orjson.dumps(expected["document"])  # key order too
    assert r.warnings == expected["warnings"]
    assert r.trace == expected["trace"]


def test_uuid5_is_uuid_uuid5() -> None:
    rnd = random.Random(5)
    names = ["", "Patient|11223344595|1.2.643.100.3", "Observation|Иванов|\\F\\|~"]
    names += ["".join(rnd.choice("abcЖ|^~&\\ 0123") for _ in range(rnd.randint(0, 90))) for _ in range(500)]
    for name in names:
        assert uuid5(name) == str(uuid.uuid5(NAMESPACE, name))
