"""The compiled (generated-code) HL7 mapping path gives what the reference path gives.

* the ORU^R01 of benchmarks/mapping.py maps to the Bundle stored in fixtures/ (made before the
  mapping path was compiled to Python: ids, warnings and trace byte for byte);
* for the shipped mappings and a mapping using every path shape (SEG[n]-, SEG[*]-, -F[n], -F[*],
  components, subcomponents, MSH-1/MSH-2, fallbacks, defaults, required, map, refs, when), the
  generated code (_Mapping._run_hl7) and the fields' compute closures (_Mapping._run) agree on
  documents, warnings, traces and errors, over sample messages, mutated messages and the shared
  corpus when it is there.
"""
from __future__ import annotations

import csv
import functools
import glob
import importlib.util
import random
import textwrap
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.maplang.compiler import NAMESPACE, MappingOptions, compile_mapping, uuid5

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "oru-r01-benchmark.json"
CORPUS = ROOT.parent / "shared" / "corpus"


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


SHAPES = """\
unmapped: warn
resources:
  - key: patient
    resource: Patient
    id: ["PID-3[1].1", "PID-3[1].4.1"]
    fields:
      identifier: {from: "PID-3[*]", fn: identifier}
      identifier[3].value: "PID-3[2].1"
      name[0].family: PID-5.1.1
      name[0].given: "PID-5[*].2"
      name[1].text: "PID-5[2]"
      gender: {from: PID-8, map: {M: male, F: female}}
      birthDate: {from: PID-7, fn: date, default: "1900-01-01"}
      active: {const: true}
      telecom: {from: ["PID-14[*]", "PID-13[*]"], fn: contact_point}
      maritalStatus.text: PID-16.2
      address: {from: "PID-11[*]", fn: address, when: {not: {field: PID-11.1, equals: x}}}
      contact: {from: "PID-21[*]", fn: human_name, default: [{name: {text: a}}, {name: {text: b}}]}
      photo: {from: PID-22, fn: string, default: [{title: c}]}
      link: {refs: obs}
      managingOrganization.display: MSH-4
      generalPractitioner: {ref: order}
      communication[0].language.text: MSH-2
      communication[1].language.text: MSH-1
      communication[2].language.text: MSH-2.1
      communication[3].language.text: MSH-2.2
      communication[4].language.text: MSH-9.2
      communication[5].language.text: {from: ["MSH-2[2]", "MSH-1.1"]}
      communication[6].language.text: "MSH-2[*]"
      communication[7].language.text: "MSH[*]-2[2].1"
  - key: order
    resource: ServiceRequest
    for_each: ORC
    with: {ORC: [OBR, NTE, OBX, TQ1]}
    fields:
      identifier: {from: [ORC-2, OBR-2], fn: placer_identifier}
      status: {const: active}
      intent: {const: order}
      code: {from: OBR-4, fn: codeable_concept}
      note: {from: "NTE[*]-3", fn: annotation, args: {time: NTE-6}}
      subject: {ref: patient}
      requisition.value: ORC-4.1
      occurrenceDateTime: {from: "OBR[*]-7", fn: datetime}
      reasonCode: {from: "OBR[2]-4", fn: codeable_concept}
      supportingInfo: {refs: obs}
  - key: obs
    resource: Observation
    for_each: OBR/OBX
    id: [OBX-3.1.1, "OBX-4", "NTE[*]-3"]
    fields:
      status: {from: "OBX-11[2]", fn: observation_status, default: final}
      code: {from: ["OBX-3[*]", OBX-4], fn: codeable_concept}
      subject: {ref: patient}
      basedOn: {ref: order}
      note: {from: "NTE[*]-3", fn: annotation}
      value[x]: {from: OBX-5, fn: obx_value, args: {type: OBX-2, units: {path: OBX-6}}}
      interpretation: {from: "OBX[*]-8[*]", fn: interpretation}
      referenceRange: {from: OBX-7, fn: reference_range, args: {units: OBX-6}}
      effectiveDateTime: {from: [OBX-14, OBR-7, MSH-7], fn: datetime}
      derivedFrom: {refs: obs}
      hasMember: {refs: spm}
      specimen: {ref: spm}
      method.text: "OBX[*]-17"
      device.display: "OBX-18[2].2.1"
      bodySite.text: {from: ["PID-3[*].4.2", "NTE[*]-3[2]"], required: true}
      issued: {from: OBR-22, fn: instant, required: true}
      valueString: {from: ["OBX-5[2]", "OBX-5.1.1"], when: {field: OBX-2, in: [ST, TX]}}
      component[0].code.text: {from: OBX-3.2, when: {all: [{field: OBX-3.1, matches: "^[0-9]+-"},
                                                          {field: OBX-1, not_equals: 2}]}}
      component[1].code.text: {from: OBX-3.2, when: [{field: NTE-3, not_in: [a, b]},
                                                     {not: {field: ORC-1, exists: false}}]}
  - key: spm
    resource: Specimen
    for_each: SPM
    when: [{field: SPM-4, exists: true}]
    fields:
      type: {from: [SPM-4, OBR-15], fn: codeable_concept}
      subject: {ref: patient}
      note: {from: "NTE[*]-3", fn: annotation}
      collection.collectedDateTime: {from: [SPM-17.1, OBR-7], fn: datetime}
      parent: {refs: spm}
      request: {ref: order}
  - key: pid2
    resource: Patient
    for_each: PID
    id: [PID-99, PID-98.1]
    fields:
      name[0].text: "PID[*]-5"
      name[1].text: "PID[2]-5"
      name[2].text: "PID[*]-5[*].1"
      gender: {from: "NTE[*]-3", map: {"Fasting sample": male}}
      deceasedBoolean: {from: PID-30, fn: boolean}
      multipleBirthInteger: {from: PID-25, fn: integer}
      photo[0].title: {from: "OBX[9]-5", default: none}
      photo[0].url: ORC-2
      contact[0].name.text: NK1-2
      contact[0].relationship: {from: NK1-3, fn: codeable_concept}
"""

ESCAPES = ["\\F\\", "\\S\\", "\\T\\", "\\R\\", "\\E\\", "\\X41\\", "\\.br\\", "\\H\\", "\\", '""']
EXTRA = ["SPM|2|SPX^LIS||BLD^Blood^HL70487", "OBX|9|ST|X^Y^LN||t~u||||||F", "OBR|9|P9|F9|1-1^T^LN",
         "ORC|NW|O9", "PID|2||P2^^^H^MR||Doe^J", "NK1|1|Kin^A", "ZXX|1|2", "PD1|1", "NTE|1||a note||||20240501"]


def _mutate(rnd: random.Random, text: str) -> str:
    segs = [s for s in text.replace("\n", "\r").split("\r") if s]
    for _ in range(rnd.randint(0, 6)):
        if len(segs) < 2:
            break
        i, op = rnd.randrange(1, len(segs)), rnd.randrange(9)
        if op == 0:
            del segs[i]
        elif op == 1:
            segs.insert(i, segs[i])
        elif op == 2 and i + 1 < len(segs):
            segs[i], segs[i + 1] = segs[i + 1], segs[i]
        elif op == 3:
            segs.insert(i, rnd.choice(EXTRA))
        else:
            f = segs[i].split("|")
            k = rnd.randrange(1, len(f)) if len(f) > 1 else 0
            if not k:
                continue
            if op == 4:
                f[k] = rnd.choice(["", '""'])
            elif op == 5:
                f[k] += "~" + rnd.choice(["", "X^Y^Z", f[k], "a&b^c", '""'])
            elif op == 6:
                p = rnd.randrange(len(f[k]) + 1)
                f[k] = f[k][:p] + rnd.choice(ESCAPES) + f[k][p:]
            elif op == 7:
                f[k] += rnd.choice(["^", "^^x", "&y", "^a&b&c", "~"])
            else:
                f += [""] * rnd.randint(0, 3) + [rnd.choice(["z", "q^r"])]
            segs[i] = "|".join(f)
    out = "\r".join(segs)
    if rnd.random() < 0.1:  # other encoding characters
        out = out.translate(str.maketrans({"|": "!", "^": "$", "~": "#", "\\": "/", "&": "*"}))
    return out + rnd.choice(["\r", "", "\r\n"])


def _big_oru(n: int) -> str:
    """Two OBR groups of n OBX each, most with an NTE, NTEs after the OBRs and an SPM each."""
    segs = ["MSH|^~\\&|LIS|CITYLAB|EHR|HOSP|20240501103000+0300||ORU^R01^ORU_R01|BIG|P|2.5.1",
            "PID|1||11223344595^^^&1.2.643.100.3&ISO^SNILS~MRN123^^^HOSP^MR||Иванов^Иван||19800501|M", "NTE|1||pid note"]
    for g in (1, 2):
        segs += [f"ORC|RE|PL{g}^EHR|FL{g}^LIS", f"OBR|{g}|PL{g}^EHR|FL{g}^LIS|2345-7^Glucose^LN|||20240501090000",
                 f"NTE|1||obr note {g}"]
        for i in range(n):
            segs.append(f"OBX|{i + 1}|NM|2345-7^Glucose^LN|{i}|{i}.5|mmol/L^mmol/L^UCUM|3.9-6.1|{'HN'[i % 2]}|||F")
            if i % 3:
                segs.append(f"NTE|1||note {g}.{i}")
        segs.append(f"SPM|{g}|SP{g}^LIS||SER^Serum^HL70487")
    return "\r".join(segs)


@functools.lru_cache(maxsize=1)
def _messages() -> tuple[str, ...]:
    from tests.maplang.test_compiler import ORU

    base = [_benchmark_message(), ORU]
    for p in sorted(glob.glob(str(ROOT / "samples" / "*.hl7"))):
        text = Path(p).read_text(encoding="utf-8").replace("\r\n", "\r").replace("\n", "\r")
        base += ["MSH|" + m if not m.startswith("MSH|") else m for m in text.split("\rMSH|")]
    corpus = []
    manifest = CORPUS / "MANIFEST.tsv"
    if manifest.is_file():
        with manifest.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row["kind"] == "message":
                    try:
                        corpus.append((CORPUS / row["local_path"]).read_text(encoding="utf-8"))
                    except (OSError, UnicodeDecodeError):
                        continue
    big = [_big_oru(k) for k in (3, 12, 40)]  # more than 8 OBX/NTE: the bisected lookups
    rnd = random.Random(20261126)
    base += big
    out = base + corpus + [_mutate(rnd, rnd.choice(base + corpus)) for _ in range(400)]
    return (*out, "PID|1||x", "MSH|^~\\&|A", "MSH|^~\\&|A|B|C|D|E||ORU^R01|1|P|2.5\rPID|1")


def _outcome(fn: Any, top: Any, seed: str) -> Any:
    try:
        r = fn(top, seed)
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return ("error", type(exc).__name__, str(exc))
    return ("ok", orjson.dumps(r.document), r.warnings, r.trace)


@pytest.mark.parametrize("mapping", ["oru-r01.yaml", "adt.yaml", "orm-oml.yaml", "shapes"])
def test_generated_code_equals_the_closures(mapping: str, tmp_path: Path) -> None:
    if mapping == "shapes":
        path = tmp_path / "shapes.yaml"
        path.write_text(textwrap.dedent(SHAPES))
    else:
        path = ROOT / "mappings" / mapping
    for policy in ("pass", "warn", "error"):
        m = compile_mapping(path, MappingOptions(unmapped=policy))
        assert all(rule.build is not None for rule in m.rules)
        for text in _messages():
            try:
                top, seed = m.inp.root_text(text)
            except Exception as exc:  # noqa: BLE001 - not a message: nothing to compare
                assert type(exc).__name__ == "InputError"
                continue
            fast = _outcome(m._run_hl7, top, seed)
            top, seed = m.inp.root_text(text)  # fresh scopes: nothing memoised by the other path
            assert _outcome(m._run, top, seed) == fast, (mapping, policy, text)


# -- scope lookups against the plain definition (the lookup code before it was memoised) --------

def _plain_owners(msg: Any) -> list[int | None]:
    from router.maplang.paths import ATTACHED

    out: list[int | None] = []
    owner: int | None = None
    for i, seg in enumerate(msg.segments):
        if owner is not None and seg.name in ATTACHED.get(msg.segments[owner].name, ()):
            out.append(owner)
            continue
        out.append(None)
        owner = i if seg.name in ATTACHED else None
    return out


def _plain_segments(msg: Any, levels: Any, name: str) -> list[int]:
    from router.maplang.paths import ATTACHED

    segs, owner = msg.segments, _plain_owners(msg)
    candidates = msg.by_name.get(name, ())
    for k in range(len(levels) - 1, -1, -1):
        lv = levels[k]
        anchor = segs[lv.start].name
        if anchor == name:
            return [lv.start]
        inner = levels[k + 1].siblings if k + 1 < len(levels) else ()
        found = [i for i in candidates if lv.start < i < lv.end and owner[i] in (None, lv.start)
                 and not any(a <= i < b for a, b in inner)]
        if found or name in ATTACHED.get(anchor, ()):
            return found
    top = levels[0].siblings if levels else ()
    return [i for i in candidates if owner[i] is None and not any(a <= i < b for a, b in top)]


def _plain_groups(msg: Any, start: int, end: int, name: str, with_: tuple[str, ...] | None) -> list[tuple[int, int]]:
    from router.maplang.paths import ATTACHED, UNTIL

    segs = msg.segments
    until = UNTIL.get(name) if with_ is None else None
    members = with_ if with_ is not None else ATTACHED.get(name, ())
    out = []
    for i in msg.by_name.get(name, ()):
        if start < i < end:
            j = i + 1
            while j < end and (segs[j].name not in until if until is not None else segs[j].name in members):
                j += 1
            out.append((i, j))
    return out


CHAINS = [(("OBR", None),), (("OBR", None), ("OBX", None)), (("ORC", None),), (("ORC", None), ("OBR", None)),
          (("ORC", None), ("OBR", None), ("OBX", None)), (("SPM", None),), (("PID", None),), (("OBX", None),),
          (("OBR", None), ("NTE", None)), (("ORC", ("OBR", "NTE", "OBX")), ("OBX", None)),
          (("OBR", ("OBX",)), ("OBX", ("NTE", "SPM")))]


def test_scope_lookups_follow_the_plain_definition() -> None:
    from router.maplang.inputs import Hl7Input

    inp = Hl7Input()
    checked = 0
    for text in _messages():
        try:
            top, _ = inp.root_text(text)
        except Exception:  # noqa: BLE001 - not a message
            continue
        msg = top.msg
        names = sorted(msg.by_name)
        for chain in CHAINS:
            for scope in top.descend(chain):
                for k, lv in enumerate(scope.levels):  # the groups, as the plain iteration makes them
                    outer = scope.levels[k - 1] if k else None
                    groups = _plain_groups(msg, outer.start if outer else -1, outer.end if outer else len(msg.segments),
                                           *chain[k])
                    assert (lv.start, lv.end) in groups and lv.siblings == tuple(groups)
                for name in names:  # in this order and again (memoised) in reverse
                    assert [s.index for s in scope.segments(name)] == _plain_segments(msg, scope.levels, name)
                    checked += 1
                for name in reversed(names):
                    assert [s.index for s in scope.segments(name)] == _plain_segments(msg, scope.levels, name)
    assert checked > 1000
