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
from collections.abc import Callable

# the ORU^R01 of benchmarks/mapping.py, copied (not imported: that module compiles mappings)
MESSAGE = (
    "MSH|^~\\&|LIS|CITYLAB|EHR|HOSP|20240501103000+0300||ORU^R01^ORU_R01|BENCH0001|P|2.5.1\r"
    "PID|1||11223344595^^^&1.2.643.100.3&ISO^SNILS~MRN123^^^HOSP^MR||Иванов^Иван^Иванович||19800501|M|||"
    "ул. Ленина 1^^Москва^^101000^RU||^PRN^PH^^^495^1234567\r"
    "PV1|1|O|LAB^^^CITYLAB\r"
    "ORC|RE|PL123^EHR|FL456^LIS\r"
    "OBR|1|PL123^EHR|FL456^LIS|24323-8^Comprehensive metabolic panel^LN|||20240501090000|||||||||||||||"
    "20240501100000|||F\r"
    "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^mmol/L^UCUM|3.9-6.1|N|||F|||20240501093000\r"
    "OBX|2|NM|2160-0^Creatinine^LN||88|umol/L^umol/L^UCUM|62-106|N|||F|||20240501093000\r"
    "OBX|3|NM|3094-0^Urea nitrogen^LN||6.1|mmol/L^mmol/L^UCUM|2.5-8.3|N|||F|||20240501093000\r"
    "OBX|4|NM|2951-2^Sodium^LN||149|mmol/L^mmol/L^UCUM|136-145|H|||F|||20240501093000\r"
    "NTE|1||Repeat sodium advised\r"
    "SPM|1|SP789^LIS||SER^Serum^HL70487|||||||||||||20240501085000\r")


def rate(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


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
