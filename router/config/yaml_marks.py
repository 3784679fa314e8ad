"""YAML loading that remembers where every key and value came from (line, column)."""
from __future__ import annotations

from typing import Any

import yaml

from ..errors import Problem

Path = tuple[Any, ...]
Marks = dict[Path, tuple[int, int]]


class YamlProblem(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def load_with_marks(text: str, filename: str) -> tuple[Any, Marks, list[Problem]]:
    """Parse YAML; return the data, a map path -> (line, column) (1-based), and duplicate-key problems."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise YamlProblem(Problem(filename, line, col, f"YAML syntax error: {exc.problem or exc}")) from None
    marks: Marks = {}
    problems: list[Problem] = []
    if node is None:
        return None, marks, problems
    constructor = yaml.SafeLoader(text)  # only for scalar resolution

    def build(n: yaml.Node, path: Path) -> Any:
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                key = constructor.construct_object(key_node, deep=True)
                if key == "<<":
                    problems.append(Problem(filename, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                            "YAML merge keys are not supported"))
                    continue
                kpath = (*path, key)
                if key in out:
                    problems.append(Problem(filename, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                            f"duplicate key {key!r}", "the later value would silently win"))
                marks[kpath] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                marks[(*kpath, "<value>")] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
                out[key] = build(value_node, kpath)
            return out
        if isinstance(n, yaml.SequenceNode):
            items = []
            for i, item in enumerate(n.value):
                marks[(*path, i)] = (item.start_mark.line + 1, item.start_mark.column + 1)
                items.append(build(item, (*path, i)))
            return items
        return constructor.construct_object(n, deep=True)

    marks[()] = (node.start_mark.line + 1, node.start_mark.column + 1)
    data = build(node, ())
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
