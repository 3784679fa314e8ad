"""Every ORU, ADT, OML and ORM message of the shared corpus goes through the real dry-run path.

The corpus (../shared/corpus/MANIFEST.tsv, kind `message`) holds messages from the test suites of
HL7 V2-to-FHIR, LinuxForHealth hl7v2-fhir-converter, IZ Gateway v2tofhir, hl7apy and python-hl7.
Each message of type ORU/ADT/OML/ORM (rows marked negative are the parser tests' business) is run
through the route for its type in the project's routes.yaml - lab-results, adt, lab-orders - by
router.dryrun.dry_run, exactly as `router try` does: accept check, mapping, FHIR validation.

A message passes when it becomes a transaction Bundle that fhir.resources validates, or when it
is rejected with a reason: a RouterError with a message. Anything else (another exception, a
rejection without a message, a Bundle that is not a transaction) fails its test.
`test_corpus_summary` prints, per message type, how many passed and how many were rejected and
why (reasons grouped, with values that vary between messages masked).
"""
from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from router.config.loader import load_config
from router.dryrun import DryRun, dry_run_all, route_runtime
from router.errors import RouterError

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
MANIFEST = CORPUS / "MANIFEST.tsv"
ROUTE_FOR = {"ORU": "lab-results", "ADT": "adt", "OML": "lab-orders", "ORM": "lab-orders"}


@dataclass(frozen=True)
class Row:
    path: str  # relative to the corpus
    msh9: str
    note: str

    @property
    def kind(self) -> str:  # ADT^A01, ORU^R01, ... (the structure, MSH-9.3, left out)
        return "^".join(self.msh9.split("^")[:2])

    @property
    def route(self) -> str:
        return ROUTE_FOR[self.msh9[:3]]


def _rows() -> list[Row]:
    if not MANIFEST.is_file():
        return []
    with MANIFEST.open(encoding="utf-8", newline="") as f:
        rows = [Row(r["local_path"], r["msh9"], r.get("note") or "")
                for r in csv.DictReader(f, delimiter="\t")
                if r["kind"] == "message" and r["msh9"][:3] in ROUTE_FOR]
    return [r for r in rows if not r.note.startswith("negative")]


ROWS = _rows()
_RUNTIMES: dict[str, object] = {}
_RESULTS: dict[str, list[DryRun]] = {}


def _run(row: Row) -> list[DryRun]:
    """The dry runs of one corpus file, a run per message of a batch file (memoised: the summary
    reuses the parametrized runs)."""
    got = _RESULTS.get(row.path)
    if got is None:
        rt = _RUNTIMES.get(row.route)
        if rt is None:
            rt = _RUNTIMES[row.route] = route_runtime(load_config(ROOT / "routes.yaml"), row.route)
        got = _RESULTS[row.path] = dry_run_all(rt, (CORPUS / row.path).read_bytes())  # type: ignore[arg-type]
    return got


def _ids(rows: list[Row]) -> list[str]:
    return [f"{r.kind}:{Path(r.path).stem[-60:]}" for r in rows]


@pytest.mark.skipif(not ROWS, reason="the shared corpus is not available")
@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_corpus_message_maps_or_is_rejected_with_a_reason(row: Row) -> None:
    results = _run(row)  # any exception other than a RouterError propagates and fails the test
    assert results
    for result in results:
        if result.error is not None:
            assert isinstance(result.error, RouterError)
            assert str(result.error).strip(), f"{type(result.error).__name__} without a message"
            continue
        assert not result.filtered, "no route here has a filter"
        doc = result.document
        assert doc is not None and doc.get("resourceType") == "Bundle" and doc.get("type") == "transaction"
        assert doc["entry"], "an accepted message made an empty Bundle"
        for entry in doc["entry"]:
            res = entry["resource"]
            assert entry["request"] == {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}


# a reason, with what differs between messages masked, so like rejections group together
_MASKS = [
    (re.compile(r"(?<=/)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
    (re.compile(r"'[^']*'"), "'…'"),
    (re.compile(r"message type \S+"), "message type <type>"),
]


def reason(error: RouterError) -> str:
    text = f"{error.code}: {str(error).splitlines()[0]}"
    for rx, sub in _MASKS:
        text = rx.sub(sub, text)
    return text


@pytest.mark.skipif(not ROWS, reason="the shared corpus is not available")
def test_corpus_summary(capsys: pytest.CaptureFixture[str]) -> None:
    passed: Counter[str] = Counter()
    rejected: dict[str, Counter[str]] = defaultdict(Counter)
    messages = 0
    for row in ROWS:
        for result in _run(row):
            messages += 1
            if result.error is None:
                passed[row.kind] += 1
            else:
                rejected[row.kind][reason(result.error)] += 1
    lines = [f"corpus: {len(ROWS)} ORU/ADT/OML/ORM files, {messages} messages (batch files split) through routes.yaml "
             f"({sum(passed.values())} mapped and valid, {sum(sum(c.values()) for c in rejected.values())} rejected)"]
    for kind in sorted(set(passed) | set(rejected)):
        n_rej = sum(rejected[kind].values())
        lines.append(f"  {kind:10} {passed[kind]:3} passed, {n_rej:3} rejected")
        for why, n in rejected[kind].most_common():
            lines.append(f"      {n:3} x {why}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert sum(passed.values()) > 0
