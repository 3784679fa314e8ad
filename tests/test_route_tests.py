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


def _batch(*messages: str, bts: int | None = None) -> str:
    count = len(messages) if bts is None else bts
    return ("FHS|^~\\&|LIS|CITYLAB|EHR|HOSP|20240501\rBHS|^~\\&|LIS|CITYLAB|EHR|HOSP|20240501\r"
            + "".join(messages) + f"BTS|{count}\rFTS|1\r")


def test_router_try_runs_each_message_of_a_batch(tmp_path: Path) -> None:
    good = (ROOT / "samples/oru-r01-glucose.hl7").read_text().replace("\r\n", "\r").replace("\n", "\r")
    adt = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||1\r"
    f = tmp_path / "batch.hl7"
    f.write_text(_batch(good, good.replace("|P|", "|P|", 1)))
    res = run_cli(["try", "lab-results", str(f)], ROOT, router_env())
    assert res.returncode == 0, res.stderr
    bundles = json.loads(res.stdout)
    assert [b["type"] for b in bundles] == ["transaction", "transaction"]
    assert "message 2: validation: the output is valid FHIR R4" in res.stderr
    assert "2 messages in the batch, 2 mapped, 0 rejected" in res.stderr

    f.write_text(_batch(good, adt))
    res = run_cli(["try", "lab-results", str(f)], ROOT, router_env())
    assert res.returncode == 1
    assert len(json.loads(res.stdout)) == 1  # the Bundle of the message that mapped
    assert "router try: message 2: rejected (rejected): route lab-results does not accept message type ADT^A01" \
        in res.stderr

    f.write_text(_batch(good, bts=5))  # BTS-1 counts 5 messages, the batch holds 1
    res = run_cli(["try", "lab-results", str(f)], ROOT, router_env())
    assert res.returncode == 1 and res.stdout == ""
    assert "BTS" in res.stderr and "rejected (input)" in res.stderr


def test_is_batch_counts_msh_segments_not_text() -> None:
    from router.formats.hl7v2 import is_batch, split_messages

    one = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rOBX|1|TX|X||see MSH note\r"
    assert not is_batch(one) and split_messages(one) == [one]
    two = one + b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|2|P|2.5\r"
    assert is_batch(two) and [m.split(b"|")[9] for m in split_messages(two)] == [b"1", b"2"]
