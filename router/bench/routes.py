"""The routes file every engine child of a benchmark run uses: the shipped ORU^R01 and ADT
mappings into the record store (settings otherwise the defaults). The end-to-end run adds what
a deployment with workers would set: `concurrency: 2` (two consumer threads per worker process:
one maps while the other waits on PostgreSQL) and the listener's `max_backlog: 2000`
(backpressure: the listener stops reading while 2,000 messages wait for a worker, instead of
taking the workers' CPU to queue more)."""
from __future__ import annotations

from pathlib import Path

from . import sources

ROUTE_NAMES = ["bench-lab", "bench-adt"]
ROUTES = """\
settings:
  mappings_dir: "{mappings}"
routes:
  - name: bench-lab
    source: {source}
    accept: [ORU^R01]
    mapping: oru-r01
    unmapped_codes: pass
    destinations: [store]{extra}
  - name: bench-adt
    source: {source}
    accept: [ADT^A01]
    mapping: adt
    unmapped_codes: pass
    destinations: [store]{extra}
"""
END_TO_END = {"source": "{type: mllp, max_backlog: 2000}", "extra": "\n    concurrency: 2"}


def write(folder: Path, *, end_to_end: bool = False) -> Path:
    path = folder / "routes.yaml"
    fill = END_TO_END if end_to_end else {"source": "mllp", "extra": ""}
    path.write_text(ROUTES.format(mappings=sources.MAPPINGS, **fill))
    return path
