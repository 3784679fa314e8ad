"""The routes file every engine child of a benchmark run uses: the shipped ORU^R01 and ADT
mappings into the record store (settings otherwise the defaults)."""
from __future__ import annotations

from pathlib import Path

from . import sources

ROUTE_NAMES = ["bench-lab", "bench-adt"]
ROUTES = """\
settings:
  mappings_dir: "{mappings}"
routes:
  - name: bench-lab
    source: mllp
    accept: [ORU^R01]
    mapping: oru-r01
    unmapped_codes: pass
    destinations: [store]
  - name: bench-adt
    source: mllp
    accept: [ADT^A01]
    mapping: adt
    unmapped_codes: pass
    destinations: [store]
"""


def write(folder: Path) -> Path:
    path = folder / "routes.yaml"
    path.write_text(ROUTES.format(mappings=sources.MAPPINGS))
    return path
