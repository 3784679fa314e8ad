"""Load and check routes.yaml: every problem at once, each with file:line:column and a hint.

The file is checked in layers, and a problem in one layer does not stop the others:

1. YAML (syntax, duplicate keys) and the top level;
2. ``settings`` and each route against the schema (router.config.schema), one route at a time;
3. each route's components (source, filter, destinations: type and options through the
   registry) and mapping reference - read from the route's raw dict, so a route that failed
   the schema (a misspelt key, say) still gets its components checked;
4. across routes: duplicate names, listener conflicts and overlapping ``accept`` lists.
"""
from __future__ import annotations

import os
import sys
import re
import types
import typing
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel

from ..errors import ConfigError, Problem
from ..registry import ComponentSpec, Kind, Registry, did_you_mean
from .schema import (ComponentRef, Route, RoutesFile, Settings, as_destination, as_destinations, as_filter,
                     as_source)
from .yaml_marks import Marks, YamlProblem, dotted, load_with_marks, mark_for


@dataclass(frozen=True)
class Component:
    """A configured component: its spec and its validated options."""

    spec: ComponentSpec
    options: BaseModel

    def build(self, context: Any) -> Any:
        return self.spec.factory(self.options, context)


def source_claims(source: Component, settings: Settings) -> list[tuple[str, str | None]]:
    """What a source listens on: [(resource, share key)], sorted (see router.sources.base)."""
    claim_fn = getattr(source.options, "claims", None)
    return sorted(claim_fn(settings), key=str) if claim_fn else []


def listener_key(source: Component, settings: Settings) -> tuple[str, str]:
    """Routes with the same key share one listener: the check and the engine both use this."""
    claims = source_claims(source, settings)
    if not claims:  # a source that claims nothing listens on its own
        return (source.spec.name, repr(source.options))
    return (source.spec.name, repr(claims))


@dataclass(frozen=True)
class RouteConfig:
    route: Route
    source: Component | None  # None: an internal route the engine feeds (application ACKs)
    filter: Component | None
    destinations: tuple[Component, ...]
    application_ack: Component | None = None  # the validated application_ack.destination
    acknowledges: str | None = None  # an application-ACK route: the name of the route it answers for

    @property
    def name(self) -> str:
        return self.route.name


ACK_SUFFIX = ".ack"


def ack_route(rc: RouteConfig) -> RouteConfig:
    """The internal route that delivers `rc`'s application ACKs: `<name>.ack`, its own queues, the
    application_ack destination and retry policy; no source, no filter, no mapping."""
    a = rc.route.application_ack
    assert a is not None and rc.application_ack is not None
    route = Route(name=rc.name + ACK_SUFFIX, description=f"application acknowledgments of route {rc.name}",
                  source={"type": "engine"}, destinations=[a.destination], retry=a.retry,
                  queue_type=rc.route.queue_type)
    return RouteConfig(route, None, None, (rc.application_ack,), acknowledges=rc.name)


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


# --------------------------------------------------------------------------- pydantic errors


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _is_type_error(etype: str) -> bool:
    return (etype.endswith("_type") or etype.endswith("_parsing") or etype in ("none_required", "is_instance_of")) \
        and etype != "union_tag_invalid"


def _split_loc(data: Any, loc: tuple[Any, ...], etype: str) -> list[tuple[Any, bool]]:
    """Each part of a pydantic loc with True when it is a union-member or validator label
    (like 'Condition' or 'function-after[...]') rather than a key or index of the data."""
    out: list[tuple[Any, bool]] = []
    cur = data
    for n, part in enumerate(loc):
        if isinstance(cur, dict) and part in cur:
            out.append((part, False))
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append((part, False))
            cur = cur[part]
        elif isinstance(part, int) or (n == len(loc) - 1 and etype == "missing"):
            out.append((part, False))
            cur = None
        else:  # not in the data: a label
            out.append((part, True))
    return out


def _unwrap(tp: Any) -> Any:
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif _is_union(tp):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _label_matches(label: str, member: Any) -> bool:
    member = _unwrap(member)
    if isinstance(member, type) and issubclass(member, BaseModel):
        name = member.__name__
        return label == name or label.endswith(f" {name}]") or label.endswith(f"[{name}]")
    origin = typing.get_origin(member) or member
    name = "none" if member is type(None) else getattr(origin, "__name__", "")
    return label == name or label.startswith(f"{name}[")


def _model_at(model: type[BaseModel], raw_loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that a pydantic loc (labels included) points into, if any."""
    tp: Any = model
    for part in raw_loc:
        tp = _unwrap(tp)
        if _is_union(tp):
            tp = next((m for m in typing.get_args(tp) if isinstance(part, str) and _label_matches(part, m)), None)
        elif typing.get_origin(tp) in (list, tuple, set, frozenset) and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            tp = next((f.annotation for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
        else:
            return None
        if tp is None:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


@dataclass
class _Err:
    parts: list[tuple[Any, Any]]  # (loc part, False for a key/index | True for a union label | RESOLVED)
    etype: str
    msg: str
    input: Any
    raw_loc: tuple[Any, ...]

    @property
    def path(self) -> tuple[Any, ...]:
        """The loc as a path in the data (labels left out)."""
        return tuple(p for p, label in self.parts if label is False)


RESOLVED = "resolved"  # a union label whose member has been chosen


def _collapse_unions(errs: list[_Err]) -> list[_Err]:
    """A value that matches no member of a union gets errors from every member. Keep the member
    that fits the value best (right type, then fewest missing/unknown keys, then fewest errors);
    when no member even has the right type, merge their errors into one
    ('Input should be a valid list or a valid dictionary')."""
    while True:
        point: tuple[tuple[Any, Any], ...] | None = None  # the outermost union not yet resolved
        for e in errs:
            n = next((n for n, (_, label) in enumerate(e.parts) if label is True), None)
            if n is not None and (point is None or n < len(point)):
                point = tuple(e.parts[:n])
        if point is None:
            return errs
        depth = len(point)
        inside = [e for e in errs if len(e.parts) > depth and e.parts[depth][1] is True and tuple(e.parts[:depth]) == point]
        branches: dict[Any, list[_Err]] = {}
        for e in inside:
            branches.setdefault(e.parts[depth][0], []).append(e)

        def score(b: list[_Err]) -> tuple[int, int, int]:
            wrong_type = all(len(e.parts) == depth + 1 and _is_type_error(e.etype) for e in b)
            shape = sum(1 for e in b if e.etype in ("missing", "extra_forbidden")
                        and len(e.parts) == depth + 2 and e.parts[depth + 1][1] is False)
            return (int(wrong_type), shape, len(b))

        ranked = sorted(branches.values(), key=score)  # stable: pydantic's member order breaks ties
        best = ranked[0]
        rest = [e for e in errs if not any(e is x for x in inside)]
        if score(best)[0]:
            wants: list[str] = []
            for b in ranked:
                for e in b:
                    w = re.sub(r" or instance of \w+$", "", e.msg).removeprefix("Input should be ")
                    if w not in wants:
                        wants.append(w)
            first = best[0]
            errs = rest + [_Err(list(point), first.etype, "Input should be " + " or ".join(wants), first.input,
                                first.raw_loc)]
        else:
            for e in best:
                e.parts[depth] = (e.parts[depth][0], RESOLVED)
            errs = rest + best


class _Collector:
    def __init__(self, filename: str, data: Any, marks: Marks) -> None:
        self.filename, self.data, self.marks = filename, data, marks
        self.problems: list[Problem] = []

    def add(self, path: tuple[Any, ...], message: str, hint: str = "", value: bool = False) -> None:
        line, col = mark_for(self.marks, path, value=value)
        where = dotted(path)
        self.problems.append(Problem(self.filename, line, col, f"{where}: {message}" if where else message, hint))

    def pydantic_errors(self, exc: pydantic.ValidationError, prefix: tuple[Any, ...], data: Any,
                        model: type[BaseModel], extra_fields: tuple[str, ...] = (), expanded: frozenset[Any] = frozenset()) -> None:
        """Report a model's validation errors. data is what was validated, found at prefix in the
        file; expanded are keys a shorthand added to it (left out of the reported paths)."""
        errs = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            errs.append(_Err(_split_loc(data, loc, err["type"]), err["type"], err["msg"], err.get("input"), loc))
        for e in _collapse_unions(errs):
            path = e.path
            if path and path[0] in expanded:
                path = path[1:]
            loc = prefix + path
            if e.etype == "extra_forbidden":
                key = path[-1]
                m = _model_at(model, e.raw_loc[:-1])
                names = _field_names(m) if m else []
                if m is model:
                    names = [*extra_fields, *names]
                hint = did_you_mean(str(key), names) or (f"allowed: {', '.join(sorted(names))}" if names else "")
                self.add(loc, f"unknown key {key!r}", hint)
            elif e.etype == "missing":
                self.add(loc[:-1], f"missing required key {loc[-1]!r}", value=True)
            else:
                msg = re.sub(r" or instance of \w+$", "", e.msg.removeprefix("Value error, "))
                got = e.input
                if isinstance(got, (dict, list)) or got is None:
                    if _is_type_error(e.etype):
                        msg += f" (got {_kind_of(got)})"
                elif e.etype not in ("value_error", "assertion_error"):
                    msg += f" (got {got!r})"
                hint = ""
                if e.etype == "string_pattern_mismatch":  # the regex alone says little: show the field's description
                    m = _model_at(model, e.raw_loc[:-1])
                    f = next((f for n, f in (m.model_fields.items() if m else ()) if e.raw_loc[-1] in (n, f.alias)), None)
                    hint = (f.description or "") if f else ""
                self.add(loc, msg, hint, value=True)


# --------------------------------------------------------------------------- loading


def _add_import_roots(base_dir: Path) -> None:
    """`package.module:function` references (mappings, filters, plugins) resolve against the folder
    of the routes file and the current directory, as `python -m` would, before installed packages."""
    for root in (str(Path.cwd()), str(base_dir)):
        if root not in sys.path:
            sys.path.insert(0, root)


def load_config(path: str | os.PathLike[str], registry: Registry | None = None) -> Config:
    """Load, validate and cross-check a routes file. Raises ConfigError listing every problem."""
    filename = str(path)
    try:
        text = Path(filename).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(filename, 0, 0, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(filename, 0, 0, f"cannot read file: {exc}")]) from None
    _add_import_roots(Path(filename).resolve().parent)
    try:
        data, marks, yaml_problems = load_with_marks(text, filename)
    except YamlProblem as exc:
        raise ConfigError([exc.problem]) from None
    col = _Collector(filename, data, marks)
    col.problems.extend(yaml_problems)
    if data is None:
        col.add((), "the file is empty", "a routes file is a mapping with a 'routes' list")
        raise ConfigError(col.problems)
    if not isinstance(data, dict):
        col.add((), f"the file must be a mapping with a 'routes' list (got {_kind_of(data)})",
                "put the routes under a top-level 'routes:' key")
        raise ConfigError(_sorted(col.problems))
    settings, routes = _validate_schema(col, data)
    if registry is None:
        registry = _registry(col, settings)
    mappings_dir = Path(filename).resolve().parent / settings.mappings_dir
    checked = [_check_route(col, registry, i, raw, route, mappings_dir) for i, (raw, route) in enumerate(routes)]
    _check_cross(col, settings, checked)
    if col.problems:
        raise ConfigError(_sorted(col.problems))
    configs: tuple[RouteConfig, ...] = ()
    for c in checked:
        rc = c.config()
        configs += (rc, ack_route(rc)) if rc.application_ack is not None else (rc,)
    return Config(path=filename, settings=settings, routes=configs, registry=registry)  # type: ignore[arg-type]


def _sorted(problems: list[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.line, p.column))


def _validate_schema(col: _Collector, data: dict[str, Any]) -> tuple[Settings, list[tuple[Any, Route | None]]]:
    """Validate the top level, settings and each route on its own, so that one bad route does
    not hide the problems of the others. Returns the settings (defaults for what is invalid)
    and every route as (raw value, Route or None when it failed the schema)."""
    for key in data:
        if key not in RoutesFile.model_fields:
            col.add((key,), f"unknown key {key!r}", did_you_mean(str(key), RoutesFile.model_fields)
                    or "allowed: routes, settings")
    settings = _validate_settings(col, data.get("settings"))
    if "routes" not in data:
        col.add((), "missing required key 'routes'", "list the routes under a top-level 'routes:' key")
        return settings, []
    raw_routes = data["routes"]
    if not isinstance(raw_routes, list):
        col.add(("routes",), f"must be a list of routes (got {_kind_of(raw_routes)})",
                "start each route with '- name: ...'", value=True)
        return settings, []
    routes: list[tuple[Any, Route | None]] = []
    for i, raw in enumerate(raw_routes):
        try:
            routes.append((raw, Route.model_validate(raw)))
        except pydantic.ValidationError as exc:
            col.pydantic_errors(exc, ("routes", i), raw, Route)
            routes.append((raw, None))
    return settings, routes


def _validate_settings(col: _Collector, raw: Any) -> Settings:
    if raw is None:
        return Settings()
    try:
        return Settings.model_validate(raw)
    except pydantic.ValidationError as exc:
        col.pydantic_errors(exc, ("settings",), raw, Settings)
        if not isinstance(raw, dict):
            return Settings()
        # go on with the valid keys (e.g. the listener ports the conflict check needs)
        bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
        try:
            return Settings.model_validate({k: v for k, v in raw.items() if k not in bad})
        except pydantic.ValidationError:
            return Settings()


def _registry(col: _Collector, settings: Settings) -> Registry:
    """The registry with every plugin that loads; each one that does not is a problem."""
    try:
        registry = Registry()
    except ConfigError as exc:  # an installed entry-point plugin is broken: not this file's fault, but fatal
        col.add((), f"installed component plugins cannot be loaded: {exc}")
        registry = Registry(use_entry_points=False)
    for j, module in enumerate(settings.plugins):
        try:
            registry.add_module(module)
        except ConfigError as exc:
            col.add(("settings", "plugins", j), exc.problems[0].message,
                    "is its package installed in this environment?")
        except Exception as exc:  # noqa: BLE001 - the plugin's own import failed
            col.add(("settings", "plugins", j), f"plugin module {module!r} failed to import: {type(exc).__name__}: {exc}")
    return registry


# --------------------------------------------------------------------------- one route


@dataclass
class _Checked:
    """What the checks learnt about one route, valid or not."""

    index: int
    raw: Any
    route: Route | None  # None: failed the schema
    name: str | None
    accept: list[str] | None  # None: not a valid list
    source: Component | None = None
    filter: Component | None = None
    destinations: list[Component | None] = field(default_factory=list)
    application_ack: Component | None = None

    @property
    def label(self) -> str:
        return repr(self.name) if self.name is not None else f"routes[{self.index}]"

    def config(self) -> RouteConfig:
        assert self.route is not None and self.source is not None
        return RouteConfig(self.route, self.source, self.filter, tuple(d for d in self.destinations if d),
                           self.application_ack)


def _check_route(col: _Collector, registry: Registry, i: int, raw: Any, route: Route | None,
                 mappings_dir: Path) -> _Checked:
    """Check a route's components and mapping from its raw dict (the same way whether or not it
    passed the schema; what the schema already rejected is skipped, not reported twice)."""
    p = ("routes", i)
    if not isinstance(raw, dict):
        return _Checked(i, raw, route, None, None)
    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    accept = raw.get("accept", [])
    if not (isinstance(accept, list) and all(isinstance(a, str) for a in accept)):
        accept = None
    out = _Checked(i, raw, route, name, accept)
    if "source" in raw:
        out.source = _component(col, registry, "source", (*p, "source"), raw["source"], as_source(raw["source"]))
    if raw.get("filter") is not None:
        out.filter = _component(col, registry, "filter", (*p, "filter"), raw["filter"], as_filter(raw["filter"]))
    dests = raw.get("destinations")
    normalized = as_destinations(dests)
    if isinstance(normalized, list):
        paths = [(*p, "destinations", j) for j in range(len(dests))] if isinstance(dests, list) else [(*p, "destinations")]
        nodes = dests if isinstance(dests, list) else [dests]
        out.destinations = [_component(col, registry, "destination", path, node, ref)
                            for path, node, ref in zip(paths, nodes, normalized)]
    ack = raw.get("application_ack")
    if isinstance(ack, dict) and "destination" in ack:
        path, node = (*p, "application_ack", "destination"), ack["destination"]
        out.application_ack = _component(col, registry, "destination", path, node, as_destination(node))
        if out.application_ack is not None and out.application_ack.spec.needs_document:
            col.add(path, f"the {out.application_ack.spec.name} destination cannot take application ACKs "
                          "(they are HL7 messages, not FHIR resources)",
                    "send them to the sender's MLLP return address: {type: mllp, host: ..., port: ...}", value=True)
            out.application_ack = None
    mapping = raw.get("mapping")
    if isinstance(mapping, str):
        _check_mapping(col, (*p, "mapping"), mapping, registry, mappings_dir)
    if mapping in (None, "passthrough"):
        for j, d in enumerate(out.destinations):
            if d is not None and d.spec.needs_document:
                col.add((*p, "destinations", j) if isinstance(dests, list) else (*p, "destinations"),
                        f"the {d.spec.name} destination takes FHIR resources, and this route has no mapping",
                        "add a 'mapping' that produces a FHIR resource or Bundle", value=True)
    return out


def _component(col: _Collector, registry: Registry, kind: Kind, path: tuple[Any, ...], node: Any,
               normalized: Any) -> Component | None:
    """Type and options of one component. node is the raw value at path, normalized the same
    value with the shorthands expanded (`source: mllp` -> {type: mllp})."""
    try:
        ref = ComponentRef.model_validate(normalized)
    except pydantic.ValidationError:
        return None  # not a component at all; the route schema reports it
    try:
        spec = registry.get(kind, ref.type)
    except KeyError:
        names = registry.names(kind)
        hint = did_you_mean(ref.type, names) or f"known: {', '.join(names)}"
        col.add((*path, "type") if isinstance(node, dict) else path, f"unknown {kind} type {ref.type!r}", hint, value=True)
        return None
    try:
        options = spec.options.model_validate(ref.options)
    except pydantic.ValidationError as exc:
        # a shorthand puts the whole raw value under an option key (`filter: [...]` -> where: [...])
        expanded = frozenset(k for k, v in ref.options.items() if v is node)
        col.pydantic_errors(exc, path, normalized, spec.options, extra_fields=("type",), expanded=expanded)
        return None
    return Component(spec, options)


def _check_mapping(col: _Collector, path: tuple[Any, ...], ref: str, registry: Registry, mappings_dir: Path) -> None:
    from ..mapping import check_mapping_ref

    try:
        err = check_mapping_ref(ref, registry, mappings_dir)
    except Exception as exc:  # noqa: BLE001 - importing the module ran its code, which failed
        err = (f"mapping {ref!r} cannot be loaded: {type(exc).__name__}: {exc}", "")
    if err:
        col.add(path, err[0], err[1], value=True)
        return
    from ..mapping import file_problems

    col.problems.extend(file_problems(ref, registry, mappings_dir))


# --------------------------------------------------------------------------- across routes


def _glob_overlap(a: str, b: str) -> str | None:
    """A message type that matches both glob patterns (*, ? and literal characters), or None."""
    if "[" in a or "[" in b:  # character classes: approximate
        import fnmatch

        return a if fnmatch.fnmatchcase(a, b) else b if fnmatch.fnmatchcase(b, a) else None
    start = (0, 0)
    came: dict[tuple[int, int], tuple[tuple[int, int], str]] = {start: (start, "")}
    todo = deque([start])
    while todo:
        i, j = state = todo.popleft()
        if i == len(a) and j == len(b):
            out = ""
            while state != start:
                state, ch = came[state]
                out = ch + out
            return out
        moves = []
        if i < len(a) and a[i] == "*":
            moves.append(((i + 1, j), ""))
        if j < len(b) and b[j] == "*":
            moves.append(((i, j + 1), ""))
        if i < len(a) and j < len(b):  # both consume one character
            x, y = a[i], b[j]
            if x in "*?" or y in "*?" or x == y:
                ch = x if x not in "*?" else y if y not in "*?" else "X"
                moves.append(((i if x == "*" else i + 1, j if y == "*" else j + 1), ch))
        for nxt, ch in moves:
            if nxt not in came:
                came[nxt] = (state, ch)
                todo.append(nxt)
    return None


def _accept_overlap(a: list[str], b: list[str]) -> str | None:
    """What two accept lists both take, in words, or None when they are disjoint."""
    if not a and not b:
        return "every message type"
    if not a or not b:
        return ", ".join(a or b)
    wild = re.compile(r"[*?\[]")
    for x in a:
        for y in b:
            example = _glob_overlap(x, y)
            if example is None:
                continue
            if x == y or not wild.search(x):
                return x
            if not wild.search(y):
                return y
            return f"{x} and {y} (e.g. {example})"
    return None


def _check_cross(col: _Collector, settings: Settings, checked: list[_Checked]) -> None:
    seen: dict[str, int] = {}
    for c in checked:
        if c.name is None:
            continue
        if c.name in seen:
            col.add(("routes", c.index, "name"), f"duplicate route name {c.name!r}",
                    f"first defined at routes[{seen[c.name]}]", value=True)
        else:
            seen[c.name] = c.index
    # a route's application ACKs travel on the internal route <name>.ack (its own queues and journal rows)
    for c in checked:
        if c.name is None or not isinstance(c.raw.get("application_ack"), dict):
            continue
        ack_name = c.name + ACK_SUFFIX
        if ack_name in seen:
            col.add(("routes", c.index, "application_ack"), f"the application ACKs of route {c.label} travel on the "
                    f"internal route {ack_name!r}, and a route has that name", f"rename route {ack_name!r}")
        elif len(ack_name) > 63:
            col.add(("routes", c.index, "name"), f"route name {c.name!r} is too long for application ACKs: "
                    f"the internal route {ack_name!r} is longer than 63 characters", "shorten it to 59 at most",
                    value=True)
    # destinations that hand over to another route (amqp `route:`) must name one that exists
    for c in checked:
        for j, d in enumerate(c.destinations):
            target = getattr(d.options, "route", None) if d is not None else None
            if isinstance(target, str) and (target not in seen or target == c.name):
                why = "a route cannot hand over to itself" if target == c.name else \
                    (did_you_mean(target, seen) or f"routes: {', '.join(seen)}")
                col.add(("routes", c.index, "destinations", j, "route"), f"no route {target!r} to hand over to"
                        if target != c.name else f"route {target!r} hands over to itself", why, value=True)
    # a dead-letter queue belongs to one route: replay puts its messages back on that route
    dlqs: dict[str, str] = {}
    for c in checked:
        if c.route is None:
            continue
        dlq = c.route.dead_letter_queue or f"{c.route.name}.dlq"
        if c.route.dead_letter_queue and dlq in seen:
            col.add(("routes", c.index, "dead_letter_queue"), f"dead-letter queue {dlq!r} is the work queue of "
                    f"route {dlq!r}", "name it something no route is called", value=True)
        elif dlq in dlqs and dlqs[dlq] != c.route.name:
            col.add(("routes", c.index, "dead_letter_queue"), f"dead-letter queue {dlq!r} is also used by route "
                    f"{dlqs[dlq]!r}", "each route needs its own dead-letter queue (replay returns messages to it)",
                    value=True)
        else:
            dlqs.setdefault(dlq, c.route.name)

    # the FHIR API owns its base path on the HTTP server: an http source below it would never be reached
    if settings.api.enabled:
        base = settings.api.base_path.rstrip("/") or "/"
        for c in checked:
            path = getattr(c.source.options, "path", None) if c.source and c.source.spec.name == "http" else None
            if isinstance(path, str) and (path == base or path.startswith(base + "/")):
                col.add(("routes", c.index, "source", "path"), f"HTTP path {path} is inside the FHIR API's "
                        f"base path {base}", "choose another path, or move the API (settings.api.base_path)",
                        value=True)

    # What each source listens on: [(resource, share key)]. The same resource with the same share
    # key is one shared server (e.g. the HTTP port); a different or None share key is a conflict.
    # Routes whose sources claim exactly the same set are on one listener and split its messages
    # by their 'accept' lists, which must then be disjoint.
    claims: list[tuple[_Checked, list[tuple[str, str | None]]]] = []
    for c in checked:
        if c.source is not None and hasattr(c.source.options, "claims"):
            claims.append((c, source_claims(c.source, settings)))
    for k, (c, mine) in enumerate(claims):
        clash_reported = overlap_reported = False  # at most one of each per route
        for c0, theirs in claims[:k]:
            clash = next((res for res, share in mine for res0, share0 in theirs
                          if res == res0 and (share is None or share != share0)), None)
            if clash is not None:
                if not clash_reported:
                    clash_reported = True
                    assert c.source and c0.source
                    t, t0 = c.source.spec.name, c0.source.spec.name
                    hint = ("sources of the same type share a listener only when their options match; "
                            "otherwise give each its own" if t == t0 else "give each listener its own") + " port/path"
                    col.add(("routes", c.index, "source"),
                            f"{clash} is used by both route {c0.label} ({t0} source) and route {c.label} ({t} source)",
                            hint, value=True)
                continue
            if overlap_reported or sorted(mine, key=str) != sorted(theirs, key=str) \
                    or c.accept is None or c0.accept is None:
                continue
            both = _accept_overlap(c0.accept, c.accept)
            if both is not None:
                overlap_reported = True
                listener = ", ".join(res for res, _ in mine)
                hint = "routes sharing a listener need disjoint 'accept' lists"
                empty = [x.label for x in (c0, c) if not x.accept]
                if len(empty) == 1:
                    hint = f"route {empty[0]} has no 'accept' list, so it takes every message type; " + hint
                where = "accept" if "accept" in c.raw else "source"
                col.add(("routes", c.index, where),
                        f"routes {c0.label} and {c.label} both accept {both} on the shared listener {listener}", hint,
                        value=True)
