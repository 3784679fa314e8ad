"""The messages every measurement sends: the 11-segment ORU^R01 of benchmarks/mapping.py, a large
ORU^R01 (the same with 120 OBX) and the ADT^A01 of samples/adt-a01.hl7. ``make(kind, i)`` gives
message i with its own MSH-10, placer/filler numbers and one of 1,000 patients (a valid СНИЛС), so
that a store sees distinct reports and the journal no resends."""
from __future__ import annotations

import functools
from pathlib import Path

from ..store.identity import snils_check
from . import sources

KINDS = ("oru", "oru_large", "adt")
LABELS = {"oru": "ORU^R01 (11 segments)", "oru_large": "ORU^R01 (127 segments, 120 OBX)", "adt": "ADT^A01 (7 segments)"}
LARGE_OBX = 120
PATIENTS = 1000


@functools.cache
def templates() -> dict[str, str]:
    oru = sources.bench_module("mapping").MESSAGE
    segs = oru.strip("\r").split("\r")
    obx = [s for s in segs if s.startswith("OBX")]
    head = [s for s in segs if s.startswith(("MSH", "PID", "PV1", "ORC", "OBR"))]
    tail = [s for s in segs if s.startswith(("NTE", "SPM"))]
    big = []
    for k in range(LARGE_OBX):
        f = obx[k % len(obx)].split("|")
        f[1] = str(k + 1)
        big.append("|".join(f))
    large = "\r".join(head + big + tail) + "\r"
    adt = (Path(sources.ROOT) / "samples" / "adt-a01.hl7").read_bytes().decode("utf-8")
    adt = adt.replace("\r\n", "\r").replace("\n", "\r")
    adt = adt if adt.endswith("\r") else adt + "\r"
    return {"oru": oru, "oru_large": large, "adt": adt}


def snils(n: int) -> str:
    d9 = f"{100000000 + n:09d}"
    return d9 + snils_check(d9)


def make(kind: str, i: int, tag: str = "B") -> str:
    """Message i of a kind (text, CR-separated)."""
    t = templates()[kind]
    p = i % PATIENTS
    if kind == "adt":
        return (t.replace("|ADT0001|", f"|{tag}{i}|", 1).replace("MRN2001", f"MRN{p}")
                .replace("11223344595", snils(p)).replace("V2024-0601", f"V{tag}{i}"))
    return (t.replace("|BENCH0001|", f"|{tag}{i}|", 1).replace("11223344595", snils(p))
            .replace("MRN123", f"MRN{p}").replace("PL123", f"PL{tag}{i}").replace("FL456", f"FL{tag}{i}")
            .replace("SP789", f"SP{tag}{i}"))


def segments(kind: str) -> int:
    return len(templates()[kind].strip("\r").split("\r"))
