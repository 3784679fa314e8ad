"""The shipped mappings' route tests pass (`router test`), and `router try` behaves as documented."""
from __future__ import annotations

import json
from pathlib import Path

from tests.support.proc import router_env, run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_route_tests_pass() -> None:
    res = run_cli(["test"], ROOT, router_env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 failed" in res.stdout and "FAIL" not in res.stdout


def test_router_test_reports_a_failing_case(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "route: lab-results\ncases:\n  - name: wrong value\n    input: " + str(ROOT / "samples/oru-r01-glucose.hl7")
        + "\n    expect:\n      Observation[0].valueQuantity.value: 9.9\n      Patient[0].nope: 1\n")
    res = run_cli(["test", str(tmp_path / "t.yaml")], ROOT, router_env())
    assert res.returncode == 1
    assert "FAIL" in res.stdout and "expected 9.9, got 5.4" in res.stdout and "no 'nope'" in res.stdout
    assert "0 passed, 1 failed" in res.stdout


def test_router_try_prints_the_bundle_and_explains(tmp_path: Path) -> None:
    res = run_cli(["try", "lab-results", str(ROOT / "samples/oru-r01-glucose.hl7")], ROOT, router_env())
    assert res.returncode == 0, res.stderr
    bundle = json.loads(res.stdout)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    assert "obs: 2 Observation" in res.stderr and "validation: the output is valid FHIR R4" in res.stderr
    assert "warning: concept map 'lab-codes' has no target" in res.stderr


def test_router_try_rejects_with_a_reason_and_exit_code(tmp_path: Path) -> None:
    f = tmp_path / "adt.hl7"
    f.write_text("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\nPID|1||1\n")
    res = run_cli(["try", "lab-results", str(f)], ROOT, router_env())
    assert res.returncode == 1 and res.stdout == ""
    assert "rejected (rejected): route lab-results does not accept message type ADT^A01" in res.stderr
    unknown = run_cli(["try", "lab-resuls", str(f)], ROOT, router_env())
    assert unknown.returncode == 2 and "did you mean 'lab-results'" in unknown.stderr
