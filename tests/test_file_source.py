"""The file source: single messages and HL7 batch files, refused files with their reason."""
from __future__ import annotations

import time
from pathlib import Path

from tests.support.hl7 import free_port, oru
from tests.support.proc import RouterProcess, router_env, run_cli

ROUTES = """
routes:
  - name: drop
    source: {type: file, path: in, poll_interval: 0.1}
    accept: [ORU^R01]
    destinations: [{type: file, path: out}]
"""


def wait(pred, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_files_and_batches_are_enqueued_and_refused_ones_explained(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    (tmp_path / "in").mkdir()
    http = free_port()
    proc = RouterProcess(["run", "--mllp-port", str(free_port()), "--http-port", str(http)], tmp_path, router_env(),
                         http_port=http)
    try:
        proc.wait_healthy()
        (tmp_path / "in" / "one.hl7").write_bytes(oru("F1"))
        batch = (b"FHS|^~\\&|LIS\rBHS|^~\\&|LIS\r" + oru("F2") + oru("F3") + b"BTS|2\rFTS|1\r")
        (tmp_path / "in" / "batch.hl7").write_bytes(batch)
        (tmp_path / "in" / "bad.hl7").write_bytes(b"hello")
        wait(lambda: len(list((tmp_path / "out").glob("*.hl7"))) == 3 if (tmp_path / "out").exists() else False)
        assert sorted(p.name for p in (tmp_path / "in" / "done").iterdir()) == ["batch.hl7", "one.hl7"]
        reason = (tmp_path / "in" / "error" / "bad.hl7.reason").read_text()
        assert "InputError" in reason and "not HL7 v2" in reason
        out = run_cli(["messages", "--route", "drop", "--status", "processed", "--json"], tmp_path, router_env())
        assert out.stdout.count('"processed"') == 3
        assert proc.terminate() == 0
    finally:
        proc.kill()
