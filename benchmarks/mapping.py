"""Parse + map speed of an 11-segment ORU^R01 into its FHIR Bundle, on one core, in one run:

* str.split       split into segments and fields (the floor: no mapping at all)
* ours            router.maplang: parse, map with mappings/oru-r01.yaml, orjson-serialise the Bundle
* hl7apy+fhir     hl7apy.parse_message of the same message, then fhir.resources (R4B) validating and
                  serialising the same Bundle (what a models-everywhere pipeline pays)

    .venv/bin/python benchmarks/mapping.py [--seconds 3]
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
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
    from router.maplang.compiler import MappingOptions, compile_mapping

    mapping = compile_mapping(ROOT / "mappings" / "oru-r01.yaml", MappingOptions(unmapped="pass"))
    bundle = mapping.run(MESSAGE).document
    assert len(MESSAGE.strip("\r").split("\r")) == 11

    def split() -> object:
        return [s.split("|") for s in MESSAGE.split("\r")]

    def ours() -> object:
        return orjson.dumps(mapping.run(MESSAGE).document)

    results = {"str.split": rate(split, a.seconds), "ours (parse+map+serialise)": rate(ours, a.seconds)}
    try:
        from fhir.resources.R4B.bundle import Bundle
        from hl7apy.parser import parse_message

        def models() -> object:
            parse_message(MESSAGE, find_groups=True)
            return Bundle.model_validate(bundle).model_dump_json()

        results["hl7apy + fhir.resources"] = rate(models, a.seconds)
    except ImportError as exc:
        print(f"hl7apy/fhir.resources pipeline skipped: {exc}")
    ours_rate = results["ours (parse+map+serialise)"]
    print(f"{'pipeline':32} {'msg/s':>10}  ratio to ours")
    for name, r in results.items():
        print(f"{name:32} {r:>10,.0f}  {r / ours_rate:>8.2f}")
    print(f"bundle: {len(bundle['entry'])} resources, {len(orjson.dumps(bundle))} bytes")


if __name__ == "__main__":
    main()
