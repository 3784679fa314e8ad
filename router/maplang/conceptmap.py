"""Concept maps: CSV files `source_system,source_code,target_system,target_code,target_display`,
loaded once when a mapping is compiled."""
from __future__ import annotations

import csv
from pathlib import Path

from ..errors import ConfigError, Problem

COLUMNS = ("source_system", "source_code", "target_system", "target_code", "target_display")


class ConceptMap:
    def __init__(self, name: str, entries: dict[tuple[str, str], tuple[str, str, str]]) -> None:
        self.name, self.entries = name, entries

    def lookup(self, system: str | None, code: str) -> tuple[str, str, str] | None:
        """(target system, code, display) for a source code; a row with an empty source_system
        matches any system."""
        return self.entries.get((system or "", code)) or self.entries.get(("", code))

    def __len__(self) -> int:
        return len(self.entries)


def load_concept_map(name: str, path: Path) -> ConceptMap:
    try:
        fh = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ConfigError([Problem(str(path), 0, 0, f"concept map {name!r} cannot be read: {exc.strerror}")]) from None
    entries: dict[tuple[str, str], tuple[str, str, str]] = {}
    problems: list[Problem] = []
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:5]) != COLUMNS:
            raise ConfigError([Problem(str(path), 1, 1, f"concept map header must be {','.join(COLUMNS)}")])
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < 4:
                problems.append(Problem(str(path), line_no, 1, f"expected 5 columns, got {len(row)}"))
                continue
            src_sys, src_code, tgt_sys, tgt_code = (c.strip() for c in row[:4])
            display = row[4].strip() if len(row) > 4 else ""
            if not src_code or not tgt_code or not tgt_sys:
                problems.append(Problem(str(path), line_no, 1, "source_code, target_system and target_code are required"))
                continue
            key = (src_sys, src_code)
            if key in entries and entries[key] != (tgt_sys, tgt_code, display):
                problems.append(Problem(str(path), line_no, 1, f"{src_sys}|{src_code} is mapped twice, differently"))
                continue
            entries[key] = (tgt_sys, tgt_code, display)
    if problems:
        raise ConfigError(problems)
    return ConceptMap(name, entries)
