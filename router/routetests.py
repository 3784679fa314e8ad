"""Route tests: YAML files of cases run by `router test` (and by `make test`).

    # route-tests/lab-results.yaml
    route: lab-results
    cases:
      - name: a glucose result
        input: ../samples/oru-r01-glucose.hl7      # a file, relative to this test file
        expect:
          Patient[0].gender: male
          Observation[0].valueQuantity.value: 5.4
          count(Observation): 2
        contains: {resourceType: Observation, status: final}   # some resource contains this fragment
      - name: an unknown message type is refused
        inline: "MSH|^~\\&|LIS|LAB|EHR|HOSP|20240101||XYZ^A01|1|P|2.5"
        reject: rejected                          # an error code, or `filtered`
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .config.loader import Config
from .dryrun import DryRun, dry_run, route_runtime
from .errors import ConfigError, Problem
from .maplang.yaml_source import load_yaml

_STEP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?$")
_COUNT = re.compile(r"^count\(([A-Za-z]+)\)$")


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    route: str | None = None
    input: str | None = Field(None, description="message file, relative to the test file")
    inline: str | None = Field(None, description="the message itself")
    expect: dict[str, Any] = Field(default_factory=dict)
    contains: dict[str, Any] | list[dict[str, Any]] | None = None
    reject: str | None = Field(None, description="expected rejection: an error code, or `filtered`")
    warnings: list[str] | None = Field(None, description="substrings expected among the warnings")

    @model_validator(mode="after")
    def _one_input(self) -> Case:
        if (self.input is None) == (self.inline is None):
            raise ValueError("a case needs exactly one of input, inline")
        if self.reject is not None and (self.expect or self.contains):
            raise ValueError("a rejected message has no output to expect")
        return self


class TestFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    route: str | None = None
    cases: list[Case] = Field(min_length=1)


@dataclass
class CaseResult:
    file: str
    name: str
    ok: bool
    detail: str = ""


def select(bundle: dict[str, Any], path: str) -> Any:
    """`Type[i].a.b[0].c` over the resources of a Bundle (or a resource); `count(Type)`."""
    resources = [e.get("resource") for e in bundle.get("entry", [])] if bundle.get("resourceType") == "Bundle" \
        else [bundle]
    m = _COUNT.match(path)
    if m:
        return sum(1 for r in resources if isinstance(r, dict) and r.get("resourceType") == m.group(1))
    steps = path.split(".")
    first = _STEP.match(steps[0])
    if not first:
        raise KeyError(f"bad path {path!r}")
    of_type = [r for r in resources if isinstance(r, dict) and r.get("resourceType") == first.group(1)]
    i = int(first.group(2) or 0)
    if i >= len(of_type):
        raise KeyError(f"there are {len(of_type)} {first.group(1)} resources, no [{i}]")
    cur: Any = of_type[i]
    for step in steps[1:]:
        m2 = _STEP.match(step)
        if not m2 or not isinstance(cur, dict) or m2.group(1) not in cur:
            raise KeyError(f"{path}: no {step!r}")
        cur = cur[m2.group(1)]
        if m2.group(2) is not None:
            k = int(m2.group(2))
            if not isinstance(cur, list) or k >= len(cur):
                raise KeyError(f"{path}: no [{k}] in {step!r}")
            cur = cur[k]
    return cur


def same(want: Any, got: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-12)
    return bool(want == got)


def subset(want: Any, got: Any) -> bool:
    """`want` is a fragment of `got` (dict keys recursively; each listed element found)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and subset(v, got[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and all(any(subset(w, g) for g in got) for w in want)
    return same(want, got)


def check_case(case: Case, result: DryRun) -> list[str]:
    """What is wrong with a dry run's result, given the case; [] when it passes."""
    failures = []
    if case.reject is not None:
        got = "filtered" if result.filtered else result.error.code if result.error else None
        if got is None:
            return [f"expected rejection {case.reject!r}, but the message was accepted"]
        if got != case.reject and not (result.error and isinstance(result.error, _code_class(case.reject))):
            detail = f": {result.error}" if result.error else ""
            return [f"expected rejection {case.reject!r}, got {got!r}{detail}"]
        return []
    if result.error is not None:
        return [f"rejected ({result.error.code}): {result.error}"]
    if result.filtered:
        return ["filtered out"]
    doc = result.document or {}
    for path, want in case.expect.items():
        try:
            got = select(doc, path)
        except KeyError as exc:
            failures.append(str(exc.args[0]))
            continue
        if not same(want, got):
            failures.append(f"{path}: expected {want!r}, got {got!r}")
    if case.contains is not None:
        frags = case.contains if isinstance(case.contains, list) else [case.contains]
        resources = [e.get("resource") for e in doc.get("entry", [])] if doc.get("resourceType") == "Bundle" else [doc]
        for frag in frags:
            if not any(subset(frag, r) for r in resources):
                failures.append(f"no resource contains {frag!r}")
    for w in case.warnings or []:
        if not any(w in x for x in result.warnings):
            failures.append(f"no warning containing {w!r} (warnings: {result.warnings})")
    return failures


def _code_class(code: str) -> type:
    from . import errors

    for obj in vars(errors).values():
        if isinstance(obj, type) and issubclass(obj, errors.RouterError) and obj.code == code:
            return obj
    return type("NoSuchError", (Exception,), {})


def load_test_file(path: Path) -> TestFile:
    data, marks = load_yaml(path)
    try:
        return TestFile.model_validate(data)
    except pydantic.ValidationError as exc:
        from .config.yaml_marks import mark_for

        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line, col = mark_for(marks, loc, value=True)
            problems.append(Problem(str(path), line, col, f"{'.'.join(map(str, loc))}: {err['msg']}"))
        raise ConfigError(problems) from None


def run_file(config: Config, path: Path) -> list[CaseResult]:
    tf = load_test_file(path)
    runtimes: dict[str, Any] = {}
    out = []
    for case in tf.cases:
        route = case.route or tf.route
        if route is None:
            out.append(CaseResult(str(path), case.name, False, "no route: set `route` on the file or the case"))
            continue
        try:
            rt = runtimes.get(route) or route_runtime(config, route)
        except ConfigError as exc:
            out.append(CaseResult(str(path), case.name, False, str(exc)))
            continue
        runtimes[route] = rt
        if case.input is not None:
            try:
                raw = (path.parent / case.input).read_bytes()
            except OSError as exc:
                out.append(CaseResult(str(path), case.name, False, f"cannot read {case.input}: {exc.strerror}"))
                continue
        else:
            raw = (case.inline or "").encode()
        failures = check_case(case, dry_run(rt, raw))
        out.append(CaseResult(str(path), case.name, not failures, "; ".join(failures)))
    return out


def find_test_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*.yaml") if not any(part.startswith(".") for part in p.parts))
