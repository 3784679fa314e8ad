"""YAML loading that remembers where every key and value came from (line, column)."""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

from ..errors import Problem

Path = tuple[Any, ...]
Marks = dict[Path, tuple[int, int]]


class YamlProblem(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def dotted(path: Path) -> str:
    """routes[0].source.port"""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _at(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def load_with_marks(text: str, filename: str) -> tuple[Any, Marks, list[Problem]]:
    """Parse YAML; return the data, a map path -> (line, column) (1-based), and problems the
    parser lets through (duplicate keys, merge keys, unhashable keys, recursive aliases)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _at(mark) if mark else (0, 0)
        if exc.context == "expected a single document in the stream":
            raise YamlProblem(Problem(filename, line, col, "the file holds more than one YAML document",
                                      "remove the '---' separator; routes.yaml is one document")) from None
        hint = ""
        if exc.context and exc.context_mark and exc.problem_mark:
            cl, cc = _at(exc.context_mark)
            hint = f"{exc.context} at line {cl}, column {cc}"
        raise YamlProblem(Problem(filename, line, col, f"YAML syntax error: {exc.problem or exc}", hint)) from None
    except yaml.YAMLError as exc:  # no position (e.g. a bad character in the stream)
        raise YamlProblem(Problem(filename, 0, 0, f"YAML syntax error: {exc}")) from None
    marks: Marks = {}
    problems: list[Problem] = []
    if node is None:
        return None, marks, problems
    constructor = yaml.SafeLoader(text)  # only for scalar resolution

    def problem(n: yaml.Node, path: Path, message: str, hint: str = "") -> None:
        line, col = _at(n.start_mark)
        where = dotted(path)
        problems.append(Problem(filename, line, col, f"{where}: {message}" if where else message, hint))

    def build(n: yaml.Node, path: Path, active: frozenset[int]) -> Any:
        if id(n) in active:  # an alias to one of its own ancestors
            problem(n, path, "recursive YAML alias")
            return None
        active = active | {id(n)}
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    problem(key_node, path, "a key must be a plain value, not a list or mapping")
                    continue
                key = constructor.construct_object(key_node, deep=True)
                if not isinstance(key, Hashable):
                    problem(key_node, path, f"unusable key {key!r}")
                    continue
                if key == "<<":
                    problem(key_node, path, "YAML merge keys are not supported", "repeat the keys instead")
                    continue
                kpath = (*path, key)
                if key in out:
                    first = marks[kpath]
                    problem(key_node, kpath, f"duplicate key {key!r}",
                            f"first defined at line {first[0]}, column {first[1]}; the later value would silently win")
                marks[kpath] = _at(key_node.start_mark)
                marks[(*kpath, "<value>")] = _at(value_node.start_mark)
                out[key] = build(value_node, kpath, active)
            return out
        if isinstance(n, yaml.SequenceNode):
            items = []
            for i, item in enumerate(n.value):
                marks[(*path, i)] = _at(item.start_mark)
                items.append(build(item, (*path, i), active))
            return items
        try:
            return constructor.construct_object(n, deep=True)
        except yaml.YAMLError as exc:  # e.g. a bad !!timestamp or an unknown !tag
            problem(n, path, f"bad YAML value: {getattr(exc, 'problem', None) or exc}")
            return None

    marks[()] = _at(node.start_mark)
    data = build(node, (), frozenset())
    constructor.dispose()
    return data, marks, problems


def mark_for(marks: Marks, path: Path, value: bool = False) -> tuple[int, int]:
    """The mark of path (its value's position if value=True), else of its nearest ancestor."""
    p = tuple(path)
    if value and (*p, "<value>") in marks:
        return marks[(*p, "<value>")]
    while p:
        if p in marks:
            return marks[p]
        p = p[:-1]
    return marks.get((), (1, 1))
