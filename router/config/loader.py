"""Load and check routes.yaml: every problem at once, each with file:line:column and a hint."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel

from ..errors import ConfigError, Problem
from ..registry import ComponentSpec, Kind, Registry, did_you_mean
from .schema import ComponentRef, Route, RoutesFile, Settings
from .yaml_marks import Marks, YamlProblem, load_with_marks, mark_for


@dataclass(frozen=True)
class Component:
    """A configured component: its spec and its validated options."""

    spec: ComponentSpec
    options: BaseModel

    def build(self, context: Any) -> Any:
        return self.spec.factory(self.options, context)


@dataclass(frozen=True)
class RouteConfig:
    route: Route
    source: Component
    filter: Component | None
    destinations: tuple[Component, ...]

    @property
    def name(self) -> str:
        return self.route.name

    @property
    def dead_letter_queue(self) -> str:
        return self.route.dead_letter_queue or f"{self.route.name}.dlq"


@dataclass(frozen=True)
class Config:
    path: str
    settings: Settings
    routes: tuple[RouteConfig, ...]
    registry: Registry = field(repr=False)

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent

    def route(self, name: str) -> RouteConfig:
        for r in self.routes:
            if r.name == name:
                return r
        hint = did_you_mean(name, [r.name for r in self.routes])
        raise ConfigError(f"no route named {name!r}" + (f"; {hint}" if hint else ""))


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _clean_loc(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union/validator labels from a loc so it follows the YAML data."""
    out: list[Any] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif isinstance(part, str) and (part[:1].isupper() or "[" in part or part in ("str", "dict", "list", "none")):
            continue  # a union member or validator label
        else:
            out.append(part)
            cur = None
    return tuple(out)


def _model_fields(model: type[BaseModel], data: Any, path: tuple[Any, ...]) -> list[str]:
    """Field names of the model found at path (for did-you-mean on unknown keys)."""
    from .schema import ListenerSettings, RetryPolicy, RoutesFile as _RF, Settings as _S  # noqa: F401

    by_path: dict[tuple[str, ...], type[BaseModel]] = {
        (): RoutesFile, ("settings",): Settings, ("routes",): Route, ("routes", "retry"): RetryPolicy,
        ("settings", "mllp"): ListenerSettings, ("settings", "http"): ListenerSettings,
    }
    key = tuple(p for p in path if not isinstance(p, int))
    m = by_path.get(key, model)
    return list(m.model_fields)


class _Collector:
    def __init__(self, filename: str, data: Any, marks: Marks) -> None:
        self.filename, self.data, self.marks = filename, data, marks
        self.problems: list[Problem] = []

    def add(self, path: tuple[Any, ...], message: str, hint: str = "", value: bool = False) -> None:
        line, col = mark_for(self.marks, path, value=value)
        where = _dotted(path)
        self.problems.append(Problem(self.filename, line, col, f"{where}: {message}" if where else message, hint))

    def pydantic_errors(self, exc: pydantic.ValidationError, prefix: tuple[Any, ...],
                        fields_of: list[str] | None = None, root_model: type[BaseModel] | None = None) -> None:
        sub = self.data
        for p in prefix:
            sub = sub[p] if isinstance(sub, (dict, list)) else None
        for err in exc.errors():
            loc = prefix + _clean_loc(sub, tuple(err["loc"]))
            etype = err["type"]
            if etype == "extra_forbidden":
                key = loc[-1]
                names = fields_of if fields_of is not None else _model_fields(root_model or RoutesFile, self.data, loc[:-1])
                self.add(loc, f"unknown key {key!r}", did_you_mean(str(key), names) or f"allowed: {', '.join(sorted(names))}")
            elif etype == "missing":
                self.add(loc[:-1], f"missing required key {loc[-1]!r}")
            else:
                msg = err["msg"].removeprefix("Value error, ")
                got = err.get("input")
                if etype not in ("value_error", "assertion_error") and not isinstance(got, (dict, list)):
                    msg += f" (got {got!r})"
                self.add(loc, msg, value=True)


def load_config(path: str | os.PathLike[str], registry: Registry | None = None) -> Config:
    """Load, validate and cross-check a routes file. Raises ConfigError listing every problem."""
    filename = str(path)
    try:
        text = Path(filename).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(filename, 0, 0, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(filename, 0, 0, f"cannot read file: {exc}")]) from None
    try:
        data, marks, dup_problems = load_with_marks(text, filename)
    except YamlProblem as exc:
        raise ConfigError([exc.problem]) from None
    col = _Collector(filename, data, marks)
    col.problems.extend(dup_problems)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(filename, 1, 1, "the file must be a mapping with a 'routes' list")])
    col.data = data
    parsed = _validate_parts(col, data)
    if registry is None:
        try:
            registry = Registry(plugins=parsed.settings.plugins)
        except ConfigError as exc:
            col.add(("settings", "plugins"), str(exc.problems[0].message), value=True)
            raise ConfigError(col.problems) from None
    base_dir = Path(filename).resolve().parent
    routes = _check_components(col, parsed, registry, base_dir)
    _check_cross(col, parsed, routes)
    col.problems.sort(key=lambda p: (p.line, p.column))
    if col.problems:
        raise ConfigError(col.problems)
    return Config(path=filename, settings=parsed.settings, routes=tuple(routes), registry=registry)


def _raw_name(data: Any, i: int) -> str | None:
    try:
        name = data["routes"][i]["name"]
    except (KeyError, IndexError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _validate_parts(col: _Collector, data: dict[str, Any]) -> RoutesFile:
    """Validate top level, settings and each route on its own, so one bad route does not hide
    the problems of the others. Returns what is valid (bad routes left out)."""
    for key in data:
        if key not in RoutesFile.model_fields:
            col.add((key,), f"unknown key {key!r}", did_you_mean(str(key), RoutesFile.model_fields)
                    or "allowed: routes, settings")
    settings = Settings()
    try:
        settings = Settings.model_validate(data.get("settings") or {})
    except pydantic.ValidationError as exc:
        col.pydantic_errors(exc, ("settings",))
    raw_routes = data.get("routes", [])
    routes: list[Route] = []
    if not isinstance(raw_routes, list):
        col.add(("routes",), "must be a list of routes", value=True)
        raw_routes = []
    for i, raw in enumerate(raw_routes):
        try:
            routes.append(Route.model_validate(raw))
        except pydantic.ValidationError as exc:
            col.pydantic_errors(exc, ("routes", i))
            routes.append(None)  # type: ignore[arg-type]  # keeps indexes aligned; dropped below
    return RoutesFile.model_construct(settings=settings, routes=routes)


def _component(col: _Collector, registry: Registry, kind: Kind, ref: ComponentRef,
               path: tuple[Any, ...]) -> Component | None:
    try:
        spec = registry.get(kind, ref.type)
    except KeyError:
        hint = did_you_mean(ref.type, registry.names(kind)) or f"known: {', '.join(registry.names(kind))}"
        col.add((*path, "type") if isinstance(col_get(col.data, path), dict) else path,
                f"unknown {kind} type {ref.type!r}", hint, value=True)
        return None
    try:
        options = spec.options.model_validate(ref.options)
    except pydantic.ValidationError as exc:
        col.pydantic_errors(exc, path, fields_of=["type", *spec.options.model_fields])
        return None
    return Component(spec, options)


def col_get(data: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _check_components(col: _Collector, parsed: RoutesFile, registry: Registry, base_dir: Path) -> list[RouteConfig]:
    from ..mapping import check_mapping_ref

    out: list[RouteConfig] = []
    for i, route in enumerate(parsed.routes):
        if route is None:
            continue
        p = ("routes", i)
        source = _component(col, registry, "source", route.source, (*p, "source"))
        flt = _component(col, registry, "filter", route.filter, (*p, "filter")) if route.filter else None
        dests = [_component(col, registry, "destination", d, (*p, "destinations", j))
                 for j, d in enumerate(route.destinations)]
        if route.mapping is not None:
            err = check_mapping_ref(route.mapping, registry, base_dir / parsed.settings.mappings_dir)
            if err:
                col.add((*p, "mapping"), err[0], err[1], value=True)
        if source and all(dests) and (route.filter is None or flt):
            out.append(RouteConfig(route, source, flt, tuple(d for d in dests if d)))
    return out


def _overlap(a: list[str], b: list[str]) -> str | None:
    if not a or not b:
        return "*"
    for x in a:
        for y in b:
            if fnmatch.fnmatchcase(x, y) or fnmatch.fnmatchcase(y, x):
                return x if "*" not in x else y
    return None


def _check_cross(col: _Collector, parsed: RoutesFile, routes: list[RouteConfig]) -> None:
    seen: dict[str, int] = {}
    for i in range(len(parsed.routes)):
        name = _raw_name(col.data, i)
        if name is None:
            continue
        if name in seen:
            col.add(("routes", i, "name"), f"duplicate route name {name!r}", f"first defined at routes[{seen[name]}]", value=True)
        else:
            seen[name] = i
    index = {r.name: i for i, r in enumerate(parsed.routes) if r is not None}
    # resources claimed by sources: same resource + same share key -> one shared listener; else conflict
    claims: dict[str, list[tuple[str | None, RouteConfig]]] = {}
    for rc in routes:
        claim_fn = getattr(rc.source.options, "claims", None)
        if claim_fn is None:
            continue
        for resource, share in claim_fn(parsed.settings):
            claims.setdefault(resource, []).append((share, rc))
    for resource, owners in claims.items():
        for k in range(1, len(owners)):
            share, rc = owners[k]
            for share0, rc0 in owners[:k]:
                i = index[rc.name]
                if share is None or share != share0:
                    col.add(("routes", i, "source"), f"{resource} is already used by route {rc0.name!r}",
                            "give each listener its own port/path, or use the same source type to share it")
                    break
                both = _overlap(list(rc.route.accept), list(rc0.route.accept))
                if both:
                    col.add(("routes", i, "accept"),
                            f"message type {both} is also accepted by route {rc0.name!r} on the shared listener {resource}",
                            "routes sharing a listener need disjoint 'accept' lists")
                    break
