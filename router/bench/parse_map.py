"""Parse + map in process, on one core, per payload (payloads.py), in messages per second:

* ours                router.maplang: parse, map with mappings/<oru-r01|adt>.yaml, orjson-serialise the Bundle
* str.split           split into segments and fields (the floor: no mapping at all)
* python-hl7          hl7.parse (a parse only: python-hl7 has no mapping)
* hl7apy+fhir         hl7apy.parser.parse_message (groups found), then fhir.resources (R4B) building,
                      validating and serialising the same Bundle ours produced (the field picking itself
                      is not re-implemented, so this baseline pays less than a full pipeline would)

As benchmarks/mapping.py, for the three payloads; ratios are ours / baseline.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from . import payloads, sources

MAPPINGS = {"oru": "oru-r01.yaml", "oru_large": "oru-r01.yaml", "adt": "adt.yaml"}


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of fn, over at least `seconds` (and at least 2 calls), after one warm-up call."""
    fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    batch = 1
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline and n >= 2:
            return n / (now - start)
        if now - start < seconds / 20:
            batch = min(batch * 2, 256)


def run(seconds: float = 2.0) -> dict[str, Any]:
    from router.maplang.compiler import MappingOptions, compile_mapping

    out: dict[str, Any] = {"seconds_each": seconds, "payloads": {}, "skipped": {}}
    hl7 = apy = Bundle = None
    try:
        import hl7
    except ImportError as exc:
        out["skipped"]["python-hl7"] = f"not installed ({exc}); pip install hl7"
    try:
        from fhir.resources.R4B.bundle import Bundle
        from hl7apy.parser import parse_message as apy
    except ImportError as exc:
        out["skipped"]["hl7apy+fhir.resources"] = f"not installed ({exc})"
    for kind in payloads.KINDS:
        msg = payloads.make(kind, 1)
        mapping = compile_mapping(sources.MAPPINGS / MAPPINGS[kind], MappingOptions(unmapped="pass"))
        bundle = mapping.run(msg).document
        res: dict[str, float] = {}
        res["ours"] = rate(lambda: orjson.dumps(mapping.run(msg).document), seconds)
        res["str.split"] = rate(lambda: [s.split("|") for s in msg.split("\r")], seconds)
        if hl7 is not None:
            res["python-hl7"] = rate(lambda: hl7.parse(msg), seconds)
        if apy is not None and Bundle is not None:
            def models() -> object:
                apy(msg, find_groups=True)
                return Bundle.model_validate(bundle).model_dump_json()

            res["hl7apy+fhir.resources"] = rate(models, seconds)
        out["payloads"][kind] = {
            "label": payloads.LABELS[kind], "segments": payloads.segments(kind), "bytes": len(msg.encode()),
            "bundle_resources": len(bundle["entry"]), "msg_s": res,
            "ours_ratio": {k: res["ours"] / v for k, v in res.items() if k != "ours"},
        }
    return out
