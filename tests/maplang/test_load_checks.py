"""Load-time checks (function arguments, fields that take no conversion, paths in `when`) and
the scoping of `ref` and of paths outside the group (ORC of an OBR group)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from router.errors import ConfigError, MappingError
from router.maplang.compiler import MappingOptions, compile_mapping

MSH = "MSH|^~\\&|LIS|CITYLAB|EHR|HOSP|20240501103000+0300||ORU^R01^ORU_R01|MSG0001|P|2.5.1\r"
PID = "PID|1||MRN123^^^HOSP^MR||Иванов^Иван\r"
# two orders, each with its own ORC before its OBR; the second OBR group has no SPM
TWO_ORDERS = (MSH + PID
              + "ORC|RE|PL1^EHR|FL1^LIS||||||20240501080000\r"
              "OBR|1|PL1^EHR|FL1^LIS|2345-7^Glucose^LN|||20240501090000\r"
              "SPM|1|SP1^LIS||SER^Serum^HL70487\r"
              "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^^UCUM|||||F\r"
              "ORC|RE|PL2^EHR|FL2^LIS||||||20240502090000\r"
              "OBR|2|PL2^EHR|FL2^LIS|718-7^Hemoglobin^LN|||20240502100000\r"
              "OBX|1|NM|718-7^Hemoglobin^LN||140|g/L^^UCUM|||||F\r")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def problems(p: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        compile_mapping(p)
    return [str(x) for x in err.value.problems]


def resources(bundle: dict, rtype: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_function_arguments_are_checked_at_load(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        resources:
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            fields:
              status: {from: OBX-11, fn: observation_status, args: {default: finale}}
              value[x]: {from: OBX-5, fn: obx_value, args: {units: OBX-6}}
              effectiveDateTime: {from: OBX-14, fn: datetime, args: {zone: UTC}}
              code: {from: OBX-3, fn: codeable_concept, args: {concept_mp: x}}
              identifier: {from: OBX-21, fn: identifier_ei, args: {use: {path: OBX-2}}}
        """)
    got = problems(p)
    f = str(p)
    assert (f"{f}:6:70: resources.0.fields.status.args.default: observation_status: argument 'default' must be "
            f"one of registered, preliminary, final, amended, corrected, cancelled, entered-in-error, unknown "
            f"(did you mean 'final'?)") in got
    assert any(g.startswith(f"{f}:7:") and "value[x].fn: function 'obx_value' needs argument 'type'" in g
               for g in got)
    assert any(g.startswith(f"{f}:8:") and "args.zone: function 'datetime' has no argument 'zone'" in g for g in got)
    assert any(g.startswith(f"{f}:9:") and "function 'codeable_concept' has no argument 'concept_mp'" in g
               and "did you mean 'concept_map'" in g for g in got)
    assert any(g.startswith(f"{f}:10:") and "identifier_ei: argument 'use' must be a string" in g for g in got)
    assert len(got) == 5


def test_a_str_argument_shaped_like_a_path_is_a_constant(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        resources:
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            fields:
              status: {const: final}
              code: {from: OBX-3, fn: codeable_concept}
              identifier: {from: OBR-2, fn: identifier_ei, args: {system: ABC-1}}
        """)
    [obs] = resources(compile_mapping(p).run(TWO_ORDERS.split("ORC|RE|PL2")[0]).document, "Observation")
    assert obs["identifier"][0]["system"] == "ABC-1"  # the text, not the value of a field ABC-1


@pytest.mark.parametrize(("field", "line_col", "message"), [
    ("{const: final, fn: observation_status}", "6:30", "status.fn: 'fn' applies to `from` fields only, not to a 'const' field"),
    ("{const: final, map: {F: final}}", "6:30", "status.map: 'map' applies to `from` fields only, not to a 'const' field"),
    ("{const: final, default: final}", "6:30", "status.default: 'default' applies to `from` fields only"),
    ("{const: final, required: true}", "6:30", "status.required: 'required' applies to `from` fields only"),
])
def test_conversions_on_a_const_field_are_load_errors(tmp_path: Path, field: str, line_col: str, message: str) -> None:
    p = write(tmp_path, f"""\
        resources:
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            fields:
              status: {field}
              code: {{from: OBX-3, fn: codeable_concept}}
        """)
    got = problems(p)
    assert len(got) == 1
    assert got[0].startswith(f"{p}:{line_col}: resources.0.fields.{message}")


def test_conversions_on_ref_fields_are_load_errors(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        resources:
          - key: patient
            resource: Patient
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            fields:
              status: {const: final}
              code: {from: OBX-3, fn: codeable_concept}
              subject: {ref: patient, fn: string, args: {strip: true}}
              hasMember: {refs: obs, map: {a: b}, default: []}
        """)
    got = problems(p)
    f = str(p)
    assert f"{f}:10:31: resources.1.fields.subject.fn: 'fn' applies to `from` fields only, not to a 'ref' field" in got
    assert f"{f}:10:43: resources.1.fields.subject.args: 'args' applies to `from` fields only, not to a 'ref' field" \
        in got
    assert f"{f}:11:30: resources.1.fields.hasMember.map: 'map' applies to `from` fields only, not to a 'refs' field" \
        in got
    assert any(g.startswith(f"{f}:11:") and "hasMember.default: 'default' applies" in g for g in got)
    assert len(got) == 4


def test_required_on_a_ref_applies(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        resources:
          - key: spm
            resource: Specimen
            for_each: SPM
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            fields:
              status: {const: final}
              code: {from: OBX-3, fn: codeable_concept}
              specimen: {ref: spm, required: true}
        """)
    m = compile_mapping(p)
    [obs] = resources(m.run(TWO_ORDERS.split("ORC|RE|PL2")[0]).document, "Observation")
    assert obs["specimen"]["reference"].startswith("Specimen/")
    with pytest.raises(MappingError, match="specimen: required reference to 'spm'"):
        m.run(TWO_ORDERS)  # the second order's OBX has no specimen of its own


def test_paths_in_when_conditions_are_parsed_at_load(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        resources:
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            when: {any: [{field: OBX-2, equals: NM}, {not: {field: obx-3, exists: true}}]}
            fields:
              status: {const: final, when: {field: OBX11, equals: F}}
              code: {from: OBX-3, fn: codeable_concept}
        """)
    got = problems(p)
    f = str(p)
    assert any(g.startswith(f"{f}:5:") and "resources.0.when.any.1.not.field: not an HL7 path: 'obx-3'" in g
               for g in got)
    assert any(g.startswith(f"{f}:7:") and "resources.0.fields.status.when.field: not an HL7 path: 'OBX11'" in g
               for g in got)
    assert len(got) == 2


def test_a_bad_field_path_in_a_condition_is_one_problem(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        resources:
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            fields:
              status: {const: final, when: {all: [{field: OBX-11x, equals: F}]}}
        """)
    assert problems(p) == [f"{p}:6:43: resources.0.fields.status.when.all.0: not an HL7 field path: 'OBX-11x' "
                           f"(expected e.g. PID-3, PID-3.1, OBX[2]-5[1].1)"]


def test_ref_stays_within_its_own_group(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        resources:
          - key: patient
            resource: Patient
            id: [PID-3.1]
          - key: spm
            resource: Specimen
            for_each: OBR
            when: {field: SPM-2, exists: true}
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            fields:
              status: {const: final}
              code: {from: OBX-3, fn: codeable_concept}
              subject: {ref: patient}
              specimen: {ref: spm}
          - key: report
            resource: DiagnosticReport
            for_each: OBR
            fields:
              status: {const: final}
              code: {from: OBR-4, fn: codeable_concept}
              specimen: {ref: spm}
              result: {refs: obs}
          - key: list
            resource: List
            fields:
              status: {const: current}
              mode: {const: snapshot}
              subject: {ref: spm}
        """)
    for run in ("_run", "_run_hl7"):  # the reference closures and the generated code agree
        m = compile_mapping(p)
        top, seed = m.inp.root_text(TWO_ORDERS)
        doc = getattr(m, run)(top, seed).document
        [spm] = resources(doc, "Specimen")
        obs, reports = resources(doc, "Observation"), resources(doc, "DiagnosticReport")
        assert obs[0]["specimen"] == {"reference": f"Specimen/{spm['id']}"}
        assert "specimen" not in obs[1]  # not the first order's specimen
        assert reports[0]["specimen"] == [{"reference": f"Specimen/{spm['id']}"}]
        assert "specimen" not in reports[1]
        assert all(o["subject"]["reference"].startswith("Patient/") for o in obs)  # made once: everywhere
        assert resources(doc, "List")[0]["subject"] == {"reference": f"Specimen/{spm['id']}"}  # the message's


def test_a_path_outside_the_group_reads_the_nearest_segment_before_it(tmp_path: Path) -> None:
    p = write(tmp_path, """\
        resources:
          - key: order
            resource: ServiceRequest
            for_each: OBR
            fields:
              status: {const: active}
              intent: {const: order}
              identifier: {from: ORC-2, fn: placer_identifier}
              authoredOn: {from: ORC-9, fn: datetime}
          - key: obs
            resource: Observation
            for_each: OBR/OBX
            fields:
              status: {const: final}
              code: {from: OBX-3, fn: codeable_concept}
              note: {from: "ORC[1]-2.1", fn: annotation}
              method.text: "ORC-2[1].1"
        """)
    for run in ("_run", "_run_hl7"):
        m = compile_mapping(p)
        top, seed = m.inp.root_text(TWO_ORDERS)
        doc = getattr(m, run)(top, seed).document
        orders, obs = resources(doc, "ServiceRequest"), resources(doc, "Observation")
        assert [o["identifier"][0]["value"] for o in orders] == ["PL1", "PL2"]
        assert [o["authoredOn"] for o in orders] == ["2024-05-01T08:00:00+03:00", "2024-05-02T09:00:00+03:00"]
        assert [o["method"]["text"] for o in obs] == ["PL1", "PL2"]  # from the OBX group too
        assert [o["note"] for o in obs] == [[{"text": "PL1"}]] * 2  # ORC[1]: the first in scope, as written
    # a message whose second order has no ORC: its OBR reads the ORC before it (the first one)
    no_orc = TWO_ORDERS.replace("ORC|RE|PL2^EHR|FL2^LIS||||||20240502090000\r", "")
    orders = resources(compile_mapping(p, MappingOptions()).run(no_orc).document, "ServiceRequest")
    assert [o["identifier"][0]["value"] for o in orders] == ["PL1", "PL1"]
