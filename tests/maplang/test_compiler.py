"""The YAML mapping language: compile-time checks with file:line, scoping, ids, references,
concept maps and the unmapped-code policy."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from router.errors import ConfigError, MappingError
from router.maplang.compiler import MappingOptions, compile_mapping
from router.validation import validate_fhir

ORU = ("MSH|^~\\&|LIS|CITYLAB|EHR|HOSP|20240501103000+0300||ORU^R01^ORU_R01|MSG0001|P|2.5.1\r"
       "PID|1||11223344595^^^&1.2.643.100.3&ISO^SNILS~MRN123^^^HOSP^MR||Иванов^Иван^Иванович||19800501|M\r"
       "ORC|RE|PL123^EHR|FL456^LIS\r"
       "OBR|1|PL123^EHR|FL456^LIS|2345-7^Glucose^LN|||20240501090000|||||||||||||||20240501100000|||F\r"
       "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^mmol/L^UCUM|3.9-6.1|H|||F|||20240501093000\r"
       "NTE|1||Fasting sample\r"
       "OBX|2|ST|8251-1^Comment^LN||slightly hemolysed||||||C\r"
       "OBR|2|PL124^EHR|FL457^LIS|718-7^Hemoglobin^LN|||20240501090000\r"
       "OBX|1|NM|718-7^Hemoglobin^LN||140|g/L^g/L^UCUM|||||X\r")


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def resources(bundle: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_shipped_oru_mapping_produces_a_valid_bundle() -> None:
    m = compile_mapping(Path(__file__).resolve().parents[2] / "mappings" / "oru-r01.yaml")
    r = m.run(ORU)
    validate_fhir(r.document)
    assert [len(resources(r.document, t)) for t in ("Patient", "ServiceRequest", "DiagnosticReport", "Observation")] \
        == [1, 2, 2, 3]
    [p] = resources(r.document, "Patient")
    assert p["identifier"][0] == {"type": {"text": "SNILS"}, "system": "urn:oid:1.2.643.100.3", "value": "11223344595"}
    obs = resources(r.document, "Observation")
    assert obs[0]["valueQuantity"] == {"value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                                       "code": "mmol/L"}
    assert obs[0]["note"] == [{"text": "Fasting sample"}]
    assert obs[0]["interpretation"][0]["coding"][0]["code"] == "H"
    assert obs[0]["effectiveDateTime"] == "2024-05-01T09:30:00+03:00"
    assert [o["status"] for o in obs] == ["final", "corrected", "cancelled"]
    assert "note" not in obs[1] and "note" not in obs[2]  # the NTE belongs to the first OBX only
    reports = resources(r.document, "DiagnosticReport")
    assert [len(d["result"]) for d in reports] == [2, 1]  # each report lists its own group's OBX
    assert reports[1]["result"][0]["reference"] == f"Observation/{obs[2]['id']}"
    assert obs[2]["basedOn"][0]["reference"].startswith("ServiceRequest/")
    assert obs[2]["basedOn"] != obs[0]["basedOn"]  # the nearest order, not the first
    assert r.warnings  # the empty shipped concept map: warned, not failed (mapping default)


def test_ids_are_deterministic_and_derived_from_identifiers() -> None:
    m = compile_mapping(Path(__file__).resolve().parents[2] / "mappings" / "oru-r01.yaml")
    a, b = m.run(ORU).document, m.run(ORU.replace("MSG0001", "MSG0002")).document
    assert [e["resource"]["id"] for e in a["entry"]] == [e["resource"]["id"] for e in b["entry"]]
    c = m.run(ORU.replace("FL456", "FL999")).document
    assert resources(c, "Patient")[0]["id"] == resources(a, "Patient")[0]["id"]
    assert resources(c, "DiagnosticReport")[0]["id"] != resources(a, "DiagnosticReport")[0]["id"]


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        resources:
          - key: patient
            resource: Patient
            fields:
              gendr: {from: PID-8, fn: gender}
              birthDate: {from: PID-77x, fn: date}
              name: {from: PID-5, fn: human_nam}
          - key: obs
            resource: Observaton
          - key: rep
            resource: DiagnosticReport
            fields:
              subject: {ref: patinet}
              code: {from: OBR-4, fn: codeable_concept, args: {concept_map: nope}}
        """)
    with pytest.raises(ConfigError) as err:
        compile_mapping(p)
    got = [str(x) for x in err.value.problems]
    f = str(p)
    assert f"{f}:5:7: resources.0.fields.gendr: Patient has no element 'gendr'; did you mean 'gender'?" in got
    assert any(g.startswith(f"{f}:6:") and "not an HL7 path: 'PID-77x'" in g for g in got)
    assert f"{f}:7:31: resources.0.fields.name.fn: unknown function 'human_nam' (did you mean 'human_name'?)" in got
    assert f"{f}:9:15: resources.1.resource: unknown FHIR resource type 'Observaton'" in got
    assert f"{f}:13:22: resources.2.fields.subject.ref: no resource with key 'patinet' (did you mean 'patient'?)" in got
    assert any("no concept map named 'nope'" in g for g in got)
    assert len(got) == 6


def test_concept_map_translation_and_unmapped_policy(tmp_path: Path) -> None:
    (tmp_path / "codes.csv").write_text(
        "source_system,source_code,target_system,target_code,target_display\n"
        "http://loinc.org,2345-7,urn:oid:1.2.643.5.1.13.13.11.1080,TEST-1,Test display\n")
    p = write(tmp_path, """\
        concept_maps: {codes: codes.csv}
        resources:
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            fields:
              status: {const: final}
              code: {from: OBX-3, fn: codeable_concept, args: {concept_map: codes}}
        """)
    with pytest.raises(MappingError, match="8251-1"):
        compile_mapping(p).run(ORU)  # default policy: error
    warn = compile_mapping(p, MappingOptions(unmapped="warn")).run(ORU)
    codings = resources(warn.document, "Observation")[0]["code"]["coding"]
    assert {"system": "urn:oid:1.2.643.5.1.13.13.11.1080", "code": "TEST-1", "display": "Test display"} in codings
    assert any("8251-1" in w for w in warn.warnings) and any("718-7" in w for w in warn.warnings)
    passed = compile_mapping(p, MappingOptions(unmapped="pass")).run(ORU)
    assert passed.warnings == [] and len(resources(passed.document, "Observation")) == 3


def test_conditions_defaults_required_and_constants(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        resources:
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            when: {field: OBX-2, equals: NM}
            fields:
              status: {from: OBX-11, map: {F: final, C: corrected}, default: unknown}
              code: {from: OBX-3, fn: codeable_concept, required: true}
              valueString: {from: OBX-5, when: {field: OBX-2, equals: ST}}
              issued: {from: [OBX-19, OBR-22], fn: instant}
              category: {const: [{text: lab}]}
        """)
    r = compile_mapping(p, MappingOptions(unmapped="pass")).run(ORU)
    obs = resources(r.document, "Observation")
    assert len(obs) == 2  # the ST observation is skipped by `when`
    assert [o["status"] for o in obs] == ["final", "unknown"]
    assert obs[0]["issued"] == "2024-05-01T10:00:00+03:00" and "issued" not in obs[1]
    assert all(o["category"] == [{"text": "lab"}] for o in obs)
    with pytest.raises(MappingError, match="required value OBX-3"):
        compile_mapping(p).run(ORU.replace("718-7^Hemoglobin^LN", ""))


def test_bad_message_is_an_input_error(tmp_path: Path) -> None:
    from router.errors import InputError

    m = compile_mapping(Path(__file__).resolve().parents[2] / "mappings" / "oru-r01.yaml")
    with pytest.raises(InputError):
        m.run("PID|1||x")


REGISTER = """<?xml version="1.0" encoding="utf-8"?>
<ZL_LIST xmlns:x="urn:example:ext">
  <ZGLV><VERSION>3.2</VERSION><DATA>2024-05-31</DATA><FILENAME>HM770001T77_240501</FILENAME></ZGLV>
  <ZAP><N_ZAP>1</N_ZAP>
    <PACIENT><ID_PAC>P1</ID_PAC><VPOLIS>3</VPOLIS><NPOLIS>7700000000000001</NPOLIS><SMO>77001</SMO></PACIENT>
    <Z_SL><IDCASE>C-1</IDCASE><DATE_Z_1>2024-05-01</DATE_Z_1><DATE_Z_2>2024-05-03</DATE_Z_2><SUMV>1500.50</SUMV></Z_SL>
  </ZAP>
  <ZAP><N_ZAP>2</N_ZAP>
    <PACIENT><ID_PAC>P2</ID_PAC><VPOLIS>3</VPOLIS><NPOLIS>7700000000000002</NPOLIS><SMO>77002</SMO></PACIENT>
    <Z_SL><IDCASE>C-2</IDCASE><DATE_Z_1>2024-05-10</DATE_Z_1><DATE_Z_2>2024-05-10</DATE_Z_2><SUMV>300</SUMV></Z_SL>
  </ZAP>
</ZL_LIST>"""


def test_xml_input_with_xpath(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        input: xml
        resources:
          - key: patient
            resource: Patient
            for_each: /ZL_LIST/ZAP
            id: [PACIENT/ID_PAC]
            fields:
              identifier: {from: PACIENT/NPOLIS, fn: identifier, args: {system: "urn:oid:1.2.643.5.1.13.2.1.1.735"}}
          - key: claim
            resource: Claim
            for_each: /ZL_LIST/ZAP
            id: [Z_SL/IDCASE]
            fields:
              identifier: {from: Z_SL/IDCASE, fn: identifier, args: {system: "urn:example:case"}}
              status: {const: active}
              use: {const: claim}
              patient: {ref: patient}
              billablePeriod.start: {from: Z_SL/DATE_Z_1}   # already ISO 8601
              billablePeriod.end: {from: Z_SL/DATE_Z_2}
              total.value: {from: Z_SL/SUMV, fn: decimal}
        """)
    m = compile_mapping(p)
    r = m.run(REGISTER)
    pats, claims = resources(r.document, "Patient"), resources(r.document, "Claim")
    assert [c["identifier"][0]["value"] for c in claims] == ["C-1", "C-2"]
    assert [c["total"]["value"] for c in claims] == [1500.5, 300]
    assert claims[1]["billablePeriod"] == {"start": "2024-05-10", "end": "2024-05-10"}
    # each claim refers to the patient of its own ZAP
    assert [c["patient"]["reference"] for c in claims] == [f"Patient/{p['id']}" for p in pats]
    assert pats[0]["identifier"][0]["value"] == "7700000000000001"


def test_json_input_with_dotted_paths(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        input: json
        resources:
          - key: person
            resource: Patient
            for_each: "people[*]"
            id: [snils]
            fields:
              name[0].family: {from: name.last}
              birthDate: {from: born, fn: date}
              gender: {from: sex, map: {m: male, f: female}}
        """)
    m = compile_mapping(p)
    r = m.run('{"people": [{"snils": "1", "name": {"last": "Петров"}, "born": "19700101", "sex": "m"},'
              ' {"snils": "2", "name": {"last": "Сидорова"}, "born": "19800202", "sex": "f"}]}')
    pats = resources(r.document, "Patient")
    assert [(x["name"][0]["family"], x["birthDate"], x["gender"]) for x in pats] == [
        ("Петров", "1970-01-01", "male"), ("Сидорова", "1980-02-02", "female")]
