"""`router bench --quick` through the real CLI, as a smoke test: it runs every section against the
real RabbitMQ and PostgreSQL and writes the JSON, the markdown report and the plot. No timing is
asserted: the figures of a quick run on a shared machine mean nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, RABBITMQ_URL, require_service
from tests.support.proc import router_env, run_cli

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.mark.timeout(240)
def test_quick_bench_writes_every_section(tmp_path: Path) -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    out = tmp_path / "bench"
    res = run_cli(["bench", "--quick", "--out", str(out), "--broker-url", RABBITMQ_URL, "--database-url", POSTGRES_URL],
                  tmp_path, router_env(), timeout=200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["plan"]["quick"] is True
    assert set(r["sections"]) == {"parse", "mllp", "e2e", "store", "memory"}
    for kind in ("oru", "oru_large", "adt"):
        assert r["sections"]["parse"]["payloads"][kind]["msg_s"]["ours"] > 0
    mllp = r["sections"]["mllp"]
    for name in ("ours (embedded)", "ours (RabbitMQ)"):
        assert set(mllp["targets"][name]["closed"]) == {"1", "8", "32"}
        assert mllp["targets"][name]["closed"]["8"]["messages"] > 0
        assert mllp["targets"][name]["closed"]["8"]["not_accepted"] == 0
    for peer in ("python-hl7", "node @medplum/hl7"):  # measured, or skipped with a reason
        assert peer in mllp["targets"] or mllp["skipped"].get(peer)
    e2e = r["sections"]["e2e"]
    assert e2e["ours"]["1"]["statuses"].get("processed", 0) > 0
    assert e2e["raw"]["1"]["msg_s"] > 0
    assert not e2e["ours"]["1"]["children_died"]
    assert r["sections"]["memory"]["worker_peak_rss_mb"] > 0
    assert r["sections"]["store"]["search"] and r["sections"]["store"]["writes"]["batched_s"] > 0
    assert r["targets"] and all({"target", "value", "met"} <= set(t) for t in r["targets"])
    report = (tmp_path / "bench.md").read_text()
    assert "## Machine" in report and "router bench" in report and "| target |" in report
    assert (out / "throughput.png").read_bytes()[:4] == b"\x89PNG"
    assert "targets:" in res.stdout
