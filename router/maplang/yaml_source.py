"""Read a mapping file with line marks (the same YAML loader routes.yaml uses)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config.yaml_marks import Marks, YamlProblem, load_with_marks
from ..errors import ConfigError, Problem


def load_yaml(path: Path) -> tuple[Any, Marks]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), 0, 0, f"cannot read mapping: {exc.strerror}")]) from None
    try:
        data, marks, problems = load_with_marks(text, str(path))
    except YamlProblem as exc:
        raise ConfigError([exc.problem]) from None
    if problems:
        raise ConfigError(problems)
    return data, marks
