"""ER7 parse speed of an 11-segment ORU^R01 (the message of benchmarks/mapping.py), on one core, in
one run:

* str.split       split into segments and fields (the floor: no components, no escapes, no checks)
* ours            router.formats.er7.parse: the full tree (repetitions, components, subcomponents,
                  escapes decoded, header and segment names checked)
* ours (get)      router.formats.er7.get of one field from the text, without the tree
* python-hl7      hl7.parse (only when the package is installed: pip install hl7)
* hl7apy          hl7apy.parser.parse_message (default validation, groups found)

    .venv/bin/python benchmarks/parse.py [--seconds 3]
"""
from __future__ import annotations

import argparse
import time

from mapping import MESSAGE, rate  # the same 11-segment ORU^R01 and timing loop (benchmarks/mapping.py)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    from router.formats import er7

    assert len(MESSAGE.strip("\r").split("\r")) == 11
    parsed = er7.parse(MESSAGE)
    assert len(parsed.segments) == 11 and er7.parse(er7.serialise(parsed)) == parsed
    assert er7.get(MESSAGE, "OBX[4]-5") == er7.get(parsed, "OBX[4]-5") == "149"
    raw = MESSAGE.encode("utf-8")

    def split() -> object:
        return [s.split("|") for s in MESSAGE.split("\r")]

    results: dict[str, float] = {
        "str.split": rate(split, a.seconds),
        "ours (er7.parse, str)": rate(lambda: er7.parse(MESSAGE), a.seconds),
        "ours (er7.parse, bytes)": rate(lambda: er7.parse(raw), a.seconds),
        "ours (er7.get OBX[4]-5)": rate(lambda: er7.get(MESSAGE, "OBX[4]-5"), a.seconds),
        "ours (er7.serialise)": rate(lambda: er7.serialise(parsed), a.seconds),
    }
    try:
        import hl7

        assert str(hl7.parse(MESSAGE).segments("OBX")[3][5]) == "149"
        results["python-hl7 (hl7.parse)"] = rate(lambda: hl7.parse(MESSAGE), a.seconds)
    except ImportError:
        print("python-hl7 skipped: not installed (pip install hl7)")
    try:
        from hl7apy.parser import parse_message

        results["hl7apy (parse_message)"] = rate(lambda: parse_message(MESSAGE, find_groups=True),
                                                 a.seconds)
    except ImportError as exc:
        print(f"hl7apy skipped: {exc}")
    ours = results["ours (er7.parse, str)"]
    print(f"{'parser':28} {'msg/s':>10}  ratio to ours (er7.parse, str)")
    for name, r in results.items():
        print(f"{name:28} {r:>10,.0f}  {r / ours:>8.2f}")


if __name__ == "__main__":
    main()
