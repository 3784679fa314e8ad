"""Compile a YAML mapping (mappings/<name>.yaml) into a callable(envelope) -> transaction Bundle.

    input: hl7v2                      # hl7v2 (default) | xml | json
    description: ORU^R01 -> lab result resources
    namespaces: {s: urn:...}          # xml: prefixes for XPath
    concept_maps: {lab: conceptmaps/lab.csv}
    resources:
      - key: patient                  # name other rules refer to (ref: patient)
        resource: Patient
        id: [PID-3[1].1]              # values a deterministic id (UUIDv5) is made of
        when: {field: PID-3, exists: true}
        fields:
          identifier: {from: "PID-3[*]", fn: identifier}
          gender: {from: PID-8, fn: gender, default: unknown}
      - key: obs
        resource: Observation
        for_each: OBR/OBX             # one per OBX of each OBR group (see paths.Scope)
        fields:
          status: {from: OBX-11, fn: observation_status}
          value[x]: {from: OBX-5, fn: obx_value, args: {type: OBX-2, units: OBX-6}}
          subject: {ref: patient}
          note: {from: "NTE[*]-3", fn: annotation}
          category: {const: [{coding: [{system: "http://terminology.hl7.org/CodeSystem/observation-category", code: laboratory}]}]}

Everything is resolved at load: paths parsed, functions looked up, target paths checked against
the FHIR R4 definitions, concept maps read. Every problem is reported at once with file:line.
Per message the work is plain closures over the split message.
"""
from __future__ import annotations

import hashlib
import keyword
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from ..envelope import Envelope
from ..errors import ConfigError, MappingError, Problem
from ..filters import AllOf, AnyOf, Node, NotOf, compile_condition
from ..registry import did_you_mean
from . import fhirdefs
from .conceptmap import ConceptMap, load_concept_map
from .hl7 import V, unescape
from .inputs import Hl7Input, getter, make_input
from .paths import Hl7Path, Scope as Hl7Scope, _resolve

NAMESPACE = uuid.UUID("6f0d3a52-1c3b-5e7a-9d0e-2b8f3c4a5d6e")  # of the ids this engine derives
_NS = NAMESPACE.bytes


try:  # the namespace hashed once; each id copies that state (OpenSSL's SHA-1, the fastest here)
    _NS_SHA1 = hashlib.sha1(_NS, usedforsecurity=False)  # uuid5 is not a security use
except ValueError:  # pragma: no cover - a build whose OpenSSL refuses SHA-1
    from _sha1 import sha1 as _sha1

    _NS_SHA1 = _sha1(_NS)
# the first hex digit of the clock_seq byte with the RFC 4122 variant (binary 10xx) set
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def uuid5(name: str) -> str:
    """str(uuid.uuid5(NAMESPACE, name)), without building UUID objects: the SHA-1 hex digest with
    the version digit (5) and the variant bits set in place."""
    h = _NS_SHA1.copy()
    h.update(name.encode())
    x = h.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: str | list[str] | None = Field(None, alias="from",
                                          description="source path, or a list of them: the first one not empty")
    fn: str | None = Field(None, description="conversion function applied to each value")
    args: dict[str, Any] = Field(default_factory=dict, description="function arguments: paths or constants")
    const: Any = Field(None, description="a constant value (JSON)")
    map: dict[str, Any] | None = Field(None, description="inline code map: source text -> value")
    default: Any = Field(None, description="value when the source is empty")
    required: bool = False
    when: Node | list[Node] | None = None
    ref: str | None = Field(None, description="reference to the nearest resource of this key")
    refs: str | None = Field(None, description="references to every resource of this key in scope")


class ResourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    resource: str
    for_each: str | None = Field(None, description="SEG or SEG/SEG...: one resource per segment group")
    with_: dict[str, list[str]] | None = Field(None, alias="with", description="segments joining a group")
    when: Node | list[Node] | None = None
    id: list[str] | None = None
    fields: dict[str, FieldSpec | str] = Field(default_factory=dict)


class MappingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    input: str = Field("hl7v2", pattern="^(hl7v2|xml|json)$")
    description: str = ""
    namespaces: dict[str, str] = Field(default_factory=dict, description="xml: prefix -> namespace URI for XPath")
    concept_maps: dict[str, str] = Field(default_factory=dict)
    unmapped: str | None = Field(None, pattern="^(error|pass|warn)$", description="default policy for unmapped codes")
    resources: list[ResourceSpec] = Field(min_length=1)


@dataclass(frozen=True)
class MappingOptions:
    """What the route adds to a mapping: time zone and the unmapped-code policy."""

    timezone: str = "Europe/Moscow"
    unmapped: str | None = None  # the route's policy; None: the mapping's `unmapped`, else error


@dataclass
class MappingResult:
    """What a compiled mapping returns: the Bundle and any warnings (e.g. unmapped codes)."""

    document: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)


Scope = Any  # the input's scope type (paths.Scope for HL7, a node for XML/JSON)


@dataclass
class _Conv:
    """How a source value becomes a FHIR value (kept for generating the HL7 code)."""

    kind: str  # "fn" | "map" | "str"
    fn: Callable[..., Any] | None = None
    const_args: dict[str, Any] = field(default_factory=dict)
    path_args: dict[str, Any] = field(default_factory=dict)
    table: dict[str, Any] | None = None
    raw: Callable[..., Any] | None = None  # FunctionSpec.raw: what the generated code calls
    order: tuple[str, ...] = ()  # the function's arguments, in raw's positional order


@dataclass
class _Source:
    """Where a field's values come from (kept for generating the HL7 code)."""

    kind: str  # "from" | "const" | "ref" | "refs"
    paths: list[Any] = field(default_factory=list)
    conv: _Conv | None = None
    const: Any = None
    key: str = ""
    default: Any = None
    required: bool = False
    message: str = ""  # the MappingError of an empty required value


@dataclass
class _Field:
    target: str
    parts: list[tuple[str, int | None]]
    is_list: bool
    choice: bool
    compute: Callable[[Scope, Any, "_Run"], list[Any]]
    when: Callable[[Callable[[str], Any]], bool] | None
    source: _Source | None = None
    when_node: Any = None  # the condition, for the generated code


@dataclass
class _Rule:
    key: str
    rtype: str
    for_each: str | None
    with_: dict[str, list[str]] | None
    when: Callable[[Callable[[str], Any]], bool] | None
    id_paths: list[Any]
    fields: list[_Field]
    # HL7 input: the rule compiled to Python (see _Hl7Codegen)
    make: Callable[..., list[_Instance]] | None = None
    build: Callable[..., None] | None = None
    source: str = ""
    steps: tuple[tuple[str, tuple[str, ...] | None], ...] = ()  # for_each as Scope.descend steps
    when_node: Any = None  # the condition, for the generated code


class _Instance:
    __slots__ = ("rule", "scope", "id", "ref", "rows")

    def __init__(self, rule: _Rule, scope: Scope, id: str, rows: tuple[Any, ...] = ()) -> None:  # noqa: A002
        self.rule, self.scope, self.id, self.rows = rule, scope, id, rows
        self.ref = f"{rule.rtype}/{id}"  # what references to it say


class _Run:
    """Per-message state: the instances made so far, for references."""

    def __init__(self, instances: dict[str, list[_Instance]], inp: Any) -> None:
        self.instances, self.inp = instances, inp

    def ref(self, key: str, scope: Scope) -> dict[str, str] | None:
        """The innermost instance whose scope encloses ours, else the first one made inside ours,
        else None: never one of another group."""
        insts = self.instances.get(key, [])
        best = None
        within, depth = self.inp.within, self.inp.depth
        for inst in insts:
            if within(scope, inst.scope) and (best is None or depth(inst.scope) > depth(best.scope)):
                best = inst
        if best is None:
            best = next((inst for inst in insts if within(inst.scope, scope)), None)
        return {"reference": f"{best.rule.rtype}/{best.id}"} if best else None

    def refs(self, key: str, scope: Scope) -> list[dict[str, str]]:
        return [{"reference": f"{i.rule.rtype}/{i.id}"} for i in self.instances.get(key, [])
                if self.inp.within(i.scope, scope)]


class _Compiler:
    def __init__(self, path: Path, options: MappingOptions) -> None:
        from .yaml_source import load_yaml

        self.path = path
        self.options = options
        self.problems: list[Problem] = []
        self.cond_paths: dict[str, Any] = {}  # the paths of `when` conditions, parsed at load
        self.data, self.marks = load_yaml(path)

    def add(self, where: tuple[Any, ...], message: str, hint: str = "", value: bool = True) -> None:
        from ..config.yaml_marks import mark_for

        line, col = mark_for(self.marks, where, value=value)
        loc = ".".join(str(p) for p in where)
        self.problems.append(Problem(str(self.path), line, col, f"{loc}: {message}" if loc else message, hint))

    def compile(self) -> Callable[[Envelope], MappingResult]:
        from .functions import FUNCTIONS

        self.functions = FUNCTIONS
        try:
            spec = MappingSpec.model_validate(self.data)
        except pydantic.ValidationError as exc:
            for err in _relevant(exc.errors()):
                loc = tuple(p for p in err["loc"] if not _union_branch(p))
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    msg = f"unknown key {loc[-1]!r}"
                self.add(loc, msg)
            raise ConfigError(self.problems) from None
        maps: dict[str, ConceptMap] = {}
        for name, rel in spec.concept_maps.items():
            try:
                maps[name] = load_concept_map(name, (self.path.parent / rel).resolve())
            except ConfigError as exc:
                self.problems.extend(exc.problems)
        self.concept_maps = maps
        self.inp = make_input(spec.input, spec.namespaces)
        rules = []
        keys = [r.key for r in spec.resources]
        for i, r in enumerate(spec.resources):
            rule = self._rule(("resources", i), r, keys)
            if rule:
                rules.append(rule)
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            self.add(("resources",), f"duplicate key {dup!r}")
        if self.problems:
            raise ConfigError(self.problems)
        if isinstance(self.inp, Hl7Input):
            steps = {rule.key: _steps(rule) for rule in rules}
            for rule in rules:
                _Hl7Codegen(rule, self.inp, self.cond_paths, steps).compile()
        unmapped = self.options.unmapped or spec.unmapped or "error"
        return _Mapping(self.path.stem, rules, maps, self.options.timezone, unmapped, self.inp, self.cond_paths)

    def _paths(self, where: tuple[Any, ...], text: str) -> Any:
        try:
            return self.inp.parse_path(text)
        except ConfigError as exc:
            self.add(where, str(exc.problems[0].message))
            return None

    def _condition(self, where: tuple[Any, ...], node: Any) -> Callable[[Callable[[str], Any]], bool] | None:
        if node is None:
            return None
        try:
            pred = compile_condition(node)
        except ValueError as exc:
            self.add(where, str(exc))
            return None
        for loc, text in _condition_fields(node):  # parsed now: a bad path is a load error
            if text not in self.cond_paths:
                p = self._paths((*where, *loc), text)
                if p is None:
                    return None
                self.cond_paths[text] = p
        return pred

    def _rule(self, where: tuple[Any, ...], r: ResourceSpec, keys: list[str]) -> _Rule | None:
        if fhirdefs.elements(r.resource) == {}:
            self.add((*where, "resource"), f"unknown FHIR resource type {r.resource!r}")
            return None
        if r.for_each:
            for problem in self.inp.check_for_each(r.for_each):
                self.add((*where, "for_each"), problem)
        id_paths = [p for k, t in enumerate(r.id or []) if (p := self._paths((*where, "id", k), t))]
        fields = []
        for tgt, fs in r.fields.items():
            fw = (*where, "fields", tgt)
            if isinstance(fs, str):
                fs = FieldSpec(**{"from": fs})
            checked = fhirdefs.check_target(r.resource, tgt)
            if isinstance(checked, str):
                self.add(fw, checked, value=False)  # at the target (the key)
                continue
            parts, is_list, choice = checked
            made = self._compute(fw, fs, keys)
            if made is None:
                continue
            compute, source = made
            fields.append(_Field(tgt, parts, is_list, choice, compute, self._condition((*fw, "when"), fs.when),
                                 source, fs.when))
        return _Rule(r.key, r.resource, r.for_each, r.with_, self._condition((*where, "when"), r.when), id_paths,
                     fields, when_node=r.when)

    def _compute(self, fw: tuple[Any, ...], fs: FieldSpec,
                 keys: list[str]) -> tuple[Callable[..., list[Any]], _Source] | None:
        sources = [x for x in ("from_", "const", "ref", "refs") if getattr(fs, x) is not None]
        if len(sources) != 1:
            self.add(fw, "a field needs exactly one of from, const, ref, refs")
            return None
        if fs.from_ is None:  # what converts or replaces a value read by `from` means nothing here
            kind = sources[0]
            given = {"fn": fs.fn is not None, "args": bool(fs.args), "map": fs.map is not None,
                     "default": fs.default is not None, "required": fs.required and kind == "const"}
            for key in (k for k, v in given.items() if v):
                self.add((*fw, key), f"{key!r} applies to `from` fields only, not to a {kind!r} field",
                         value=False)
            if any(given.values()):
                return None
        if fs.ref or fs.refs:
            key = fs.ref or fs.refs
            assert key is not None
            if key not in keys:
                self.add((*fw, "ref" if fs.ref else "refs"), f"no resource with key {key!r}",
                         did_you_mean(key, keys))
                return None
            message = f"{fw[-1]}: required reference to {key!r} has no {key!r} resource in its scope"
            required = fs.required

            def ref(scope: Scope, ctx: Any, run: _Run) -> list[Any]:
                got = [x] if (x := run.ref(key, scope)) else []
                if required and not got:
                    raise MappingError(message)
                return got

            def refs(scope: Scope, ctx: Any, run: _Run) -> list[Any]:
                got = run.refs(key, scope)
                if required and not got:
                    raise MappingError(message)
                return got
            source = _Source("ref" if fs.ref else "refs", key=key, required=required, message=message)
            return (ref if fs.ref else refs), source
        if fs.const is not None:
            const = fs.const
            return (lambda scope, ctx, run: [const]), _Source("const", const=const)
        texts = fs.from_ if isinstance(fs.from_, list) else [fs.from_ or ""]
        paths = [self._paths((*fw, "from", k) if isinstance(fs.from_, list) else (*fw, "from"), t)
                 for k, t in enumerate(texts)]
        converter = self._converter(fw, fs)
        if converter is None or not all(paths) or not paths:
            return None
        convert, conv = converter
        default, required, target = fs.default, fs.required, fw[-1]
        shown = " or ".join(texts)
        resolve = self.inp.resolve

        def compute(scope: Scope, ctx: Any, run: _Run) -> list[Any]:
            out = []
            for path in paths:
                for v in resolve(path, scope):
                    x = convert(v, scope, ctx)
                    if x is not None:
                        out.append(x)
                if out:
                    break
            if not out:
                if default is not None:
                    return [default]
                if required:
                    raise MappingError(f"{target}: required value {shown} is empty")
            return out
        return compute, _Source("from", paths, conv, default=default, required=required,
                                message=f"{target}: required value {shown} is empty")

    def _converter(self, fw: tuple[Any, ...], fs: FieldSpec) -> tuple[Callable[[V, Scope, Any], Any], _Conv] | None:
        if fs.map is not None and fs.fn is not None:
            self.add(fw, "use either map or fn, not both")
            return None
        if fs.map is not None:
            table = {str(k): v for k, v in fs.map.items()}
            return (lambda v, scope, ctx: table.get(str(v))), _Conv("map", table=table)
        if fs.fn is None:
            return (lambda v, scope, ctx: str(v)), _Conv("str")
        spec = self.functions.get(fs.fn)
        if spec is None:
            self.add((*fw, "fn"), f"unknown function {fs.fn!r}", did_you_mean(fs.fn, self.functions))
            return None
        fn = spec.fn
        path_args: dict[str, Any] = {}
        const_args: dict[str, Any] = {}
        problems = spec.check_args(fs.args)  # names, required ones, constants' types and choices
        for message, hint in problems:
            named = [n for n in fs.args if repr(n) in message]
            self.add((*fw, "args", named[0]) if named else (*fw, "fn"), message, hint)
        if problems:
            return None
        for name, val in fs.args.items():
            # a path: {path: ...} in any input; in HL7 also a bare string shaped like SEG-n given
            # to an argument taking a value (str and bool arguments take constants only)
            explicit = isinstance(val, dict) and set(val) == {"path"}
            if explicit or (isinstance(val, str) and spec.args[name].type == "value"
                            and isinstance(self.inp, Hl7Input) and self.inp.is_path(val)):
                p = self._paths((*fw, "args", name), val["path"] if explicit else val)
                if p is not None:
                    path_args[name] = p
            else:
                const_args[name] = val
            if name == "concept_map" and val not in self.concept_maps:
                self.add((*fw, "args", name), f"no concept map named {val!r}",
                         did_you_mean(str(val), self.concept_maps) or "declare it under concept_maps")
        conv = _Conv("fn", fn, const_args, path_args, raw=spec.raw, order=tuple(spec.args))
        if not path_args:
            if const_args:
                return (lambda v, scope, ctx: fn(v, ctx, **const_args)), conv
            return (lambda v, scope, ctx: fn(v, ctx)), conv

        resolve = self.inp.resolve

        def call(v: V, scope: Scope, ctx: Any) -> Any:
            kw = dict(const_args)
            for name, p in path_args.items():
                vals = resolve(p, scope)
                kw[name] = vals[0] if vals else None
            return fn(v, ctx, **kw)
        return call, conv


class _Mapping:
    """The compiled mapping: call it with an Envelope."""

    def __init__(self, name: str, rules: list[_Rule], maps: dict[str, ConceptMap], timezone: str,
                 unmapped: str, inp: Any, cond_paths: dict[str, Any] | None = None) -> None:
        self.name, self.rules, self.maps, self.timezone, self.unmapped = name, rules, maps, timezone, unmapped
        self.inp = inp
        self.cond_paths = cond_paths if cond_paths is not None else {}  # `when` paths, parsed at load
        from .codesystems import CodeSystems
        from .functions import FnContext

        self.codesystems = CodeSystems()
        self.fn_context = FnContext
        self.memo: dict[Any, Any] = {}  # FnContext.memo: concept-map translations of this mapping

    def _lookup(self, name: str, system: str | None, code: str) -> tuple[str, str, str] | None:
        cm = self.maps.get(name)
        return cm.lookup(system, code) if cm else None

    def __call__(self, envelope: Envelope) -> MappingResult:
        top, seed = self.inp.root(envelope.raw)
        return self._map(top, seed or envelope.id)

    def run(self, text: str) -> MappingResult:
        """Map a message given as text (tests, dry runs)."""
        if isinstance(self.inp, Hl7Input):
            return self._map(*self.inp.root_text(text))
        top, seed = self.inp.root(text.encode())
        return self._map(top, seed)

    def _map(self, top: Any, seed: str) -> MappingResult:
        """HL7 v2 through the rules' generated code (_run_hl7); XML and JSON through the closures."""
        if self.rules and self.rules[0].build is not None:
            return self._run_hl7(top, seed)
        return self._run(top, seed)

    def _run(self, top: Any, seed: str) -> MappingResult:
        """The mapping through the fields' compute closures (any input; the reference _run_hl7
        is tested against)."""
        from .functions import FnContext

        inp = self.inp
        ctx = FnContext(timezone=self.timezone, codesystems=self.codesystems, concept_map=self._lookup,
                        unmapped=self.unmapped, warnings=[], memo=self.memo)
        instances: dict[str, list[_Instance]] = {}
        trace: list[str] = []
        paths = self.cond_paths
        # pass 1: which resources exist, and their ids
        for rule in self.rules:
            scopes = inp.iterate(top, rule.for_each, rule.with_) if rule.for_each else [top]
            made = []
            for n, scope in enumerate(scopes):
                if rule.when is not None and not rule.when(getter(inp, scope, paths)):
                    trace.append(f"{rule.key}[{n}]: skipped (when)")
                    continue
                made.append(_Instance(rule, scope, self._id(rule, scope, seed, n)))
            instances[rule.key] = made
            trace.append(f"{rule.key}: {len(made)} {rule.rtype}")
        run = _Run(instances, inp)
        # pass 2: fields
        entries = []
        for rule in self.rules:
            for inst in instances[rule.key]:
                res: dict[str, Any] = {"resourceType": rule.rtype, "id": inst.id}
                for f in rule.fields:
                    if f.when is not None and not f.when(getter(inp, inst.scope, paths)):
                        continue
                    values = f.compute(inst.scope, ctx, run)
                    if values:
                        _assign(res, f, values)
                entries.append({"fullUrl": f"urn:uuid:{inst.id}", "resource": res,
                                "request": {"method": "PUT", "url": f"{rule.rtype}/{inst.id}"}})
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        return MappingResult(bundle, ctx.warnings, trace)

    def _run_hl7(self, top: Any, seed: str) -> MappingResult:
        """_run for HL7 input, through each rule's generated make() and build() (the same work in
        the same order, so the same warnings and the same first error)."""
        ctx = self.fn_context(timezone=self.timezone, codesystems=self.codesystems, concept_map=self._lookup,
                              unmapped=self.unmapped, warnings=[], memo=self.memo)
        enc = top.msg.enc
        instances: dict[str, list[_Instance]] = {}
        trace: list[str] = []
        paths = self.cond_paths
        for rule in self.rules:  # pass 1: which resources exist, and their ids
            made = instances[rule.key] = rule.make(top.descend(rule.steps) if rule.steps else [top], seed, enc,
                                                   paths, trace)
            trace.append(f"{rule.key}: {len(made)} {rule.rtype}")
        entries: list[dict[str, Any]] = []
        for rule in self.rules:  # pass 2: fields
            rule.build(instances[rule.key], ctx, instances, paths, entries, enc)
        return MappingResult({"resourceType": "Bundle", "type": "transaction", "entry": entries}, ctx.warnings, trace)

    def _id(self, rule: _Rule, scope: Scope, seed: str, n: int) -> str:
        if rule.id_paths:
            parts = []
            for p in rule.id_paths:
                vals = self.inp.resolve(p, scope)
                parts.append(str(vals[0]) if vals else "")
            if any(parts):
                return uuid5(f"{rule.rtype}|{'|'.join(parts)}")
        return uuid5(f"{rule.rtype}|{seed}|{rule.key}|{n}")


_BRANCHES = frozenset({"str", "int", "float", "bool", "list", "dict"})


def _union_branch(p: Any) -> bool:
    """A loc element naming which member of a union pydantic tried (not a key of the YAML)."""
    return isinstance(p, str) and (p[:1].isupper() or p in _BRANCHES or p.startswith(("function-", "list[")))


def _relevant(errors: list[Any]) -> list[Any]:
    """Of the errors under a union (a `when` condition is a Condition, any, all, not, or a list),
    the ones our validators raised when there are some (`not an HL7 field path: ...`), not what
    every other member of the union would have wanted."""
    def prefix(err: Any) -> tuple[Any, ...] | None:
        loc = err["loc"]
        for i, p in enumerate(loc):
            if _union_branch(p):
                return tuple(loc[:i])
        return None

    meant = {prefix(e) for e in errors if e["type"] == "value_error"} - {None}
    return [e for e in errors if e["type"] == "value_error" or prefix(e) not in meant]


def _condition_fields(node: Any, loc: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """(location, path) of every `field` in a condition (a list means all of them)."""
    if isinstance(node, list):
        return [x for i, n in enumerate(node) for x in _condition_fields(n, (*loc, i))]
    if isinstance(node, AnyOf):
        return _condition_fields(node.any, (*loc, "any"))
    if isinstance(node, AllOf):
        return _condition_fields(node.all, (*loc, "all"))
    if isinstance(node, NotOf):
        return _condition_fields(node.not_, (*loc, "not"))
    return [((*loc, "field"), node.field)]


def _assign(res: dict[str, Any], f: _Field, values: list[Any]) -> None:
    cur: Any = res
    parts = f.parts
    for k, (name, idx) in enumerate(parts[:-1]):
        nxt = cur.get(name)
        if idx is not None:
            lst = nxt if isinstance(nxt, list) else []
            while len(lst) <= idx:
                lst.append({})
            cur[name] = lst
            cur = lst[idx]
        else:
            if not isinstance(nxt, dict):
                nxt = {}
                cur[name] = nxt
            cur = nxt
    name, idx = parts[-1]
    if f.choice:  # value[x]: the function returns {"valueQuantity": {...}}
        for v in values[:1]:
            if isinstance(v, dict):
                cur.update(v)
        return
    if idx is not None:
        lst = cur.setdefault(name, [])
        while len(lst) <= idx:
            lst.append(None)
        lst[idx] = values[0]
    elif f.is_list:
        flat: list[Any] = []
        for v in values:
            flat.extend(v if isinstance(v, list) else [v])
        cur.setdefault(name, []).extend(flat)
    else:
        cur[name] = values[0]


# --------------------------------------------------------------------------------------------
# HL7 input: each rule compiled to Python source at load (make: pass 1, build: pass 2) and exec'd
# --------------------------------------------------------------------------------------------

def _ref_hl7(insts: list[_Instance], scope: Hl7Scope) -> dict[str, str] | None:
    """_Run.ref for HL7 scopes: the innermost instance whose group holds our anchor (one made
    without for_each holds every scope), else the first one anchored inside our group, else None."""
    levels = scope.levels
    if not levels:  # the whole message: every instance is inside it
        return {"reference": insts[0].ref} if insts else None
    a, end = levels[-1].start, levels[-1].end
    best, depth, inside = None, -1, None
    for inst in insts:
        lv = inst.scope.levels
        if lv:
            last = lv[-1]
            if not last.start <= a < last.end:
                if inside is None and a <= last.start < end:
                    inside = inst
                continue
        if len(lv) > depth:
            best, depth = inst, len(lv)
    best = best or inside
    return {"reference": best.ref} if best is not None else None


def _refs_hl7(insts: list[_Instance], scope: Hl7Scope) -> list[dict[str, str]]:
    """_Run.refs for HL7 scopes: every instance anchored within our innermost group."""
    levels = scope.levels
    if not levels:
        return [{"reference": i.ref} for i in insts]
    lv = levels[-1]
    start, end = lv.start, lv.end
    out = []
    for i in insts:
        il = i.scope.levels
        if il and start <= il[-1].start < end:
            out.append({"reference": i.ref})
    return out


def _steps(rule: _Rule) -> tuple[tuple[str, tuple[str, ...] | None], ...]:
    """A rule's for_each as Scope.descend steps: OBR/OBX is (("OBR", None), ("OBX", None))."""
    if not rule.for_each:
        return ()
    with_ = rule.with_ or {}
    return tuple((seg, tuple(with_[seg]) if seg in with_ else None) for seg in rule.for_each.split("/"))


def _single(p: Hl7Path) -> bool:
    """At most one value: no [*] (PID-3, PID-3[2].1, OBX[2]-5)."""
    return p.seg_occ != 0 and p.rep != 0


def _separators(p: Hl7Path) -> bool:
    """MSH-1 and MSH-2 hold the separators: never split into repetitions."""
    return p.segment == "MSH" and p.field in (1, 2)


class _Hl7Codegen:
    """Writes a rule as Python source (kept in rule.source, for reading and debugging):

    * make(scopes, seed, enc, pcache, trace) -> [_Instance]: pass 1 of _Mapping._run for the rule
      (its `when`, the ids of _Mapping._id)
    * build(made, ctx, insts, pcache, entries, enc): pass 2, the fields of each instance in order
      (what the fields' compute closures and _assign do), appending the Bundle entries

    A path without [n] is read inline: make fetches, once per instance, the fields of the first
    segment of each kind the rule reads (Scope.first, padded with "" so an absent field is ""),
    and the code cuts the repetition, component and subcomponent out of the field text, making a
    V only for a function that takes one; NTE[*]-3 loops over Scope.segments; other paths go
    through paths._resolve. Constants, functions and paths are globals of the code's namespace."""

    def __init__(self, rule: _Rule, inp: Hl7Input, cond_paths: dict[str, Any],
                 steps: dict[str, tuple[tuple[str, tuple[str, ...] | None], ...]]) -> None:
        self.rule = rule
        self.cond_paths = cond_paths  # the parsed paths of `when` conditions
        self.steps = steps  # every rule's for_each as Scope.descend steps, by key
        self.by_anchor: dict[int, None] = {}  # refs read through M{j}: anchor -> reference
        self.ns: dict[str, Any] = {
            "V": V, "unescape": unescape, "uuid5": uuid5, "MappingError": MappingError, "getter": getter,
            "_assign": _assign, "_resolve": _resolve, "_ref": _ref_hl7, "_refs": _refs_hl7, "INP": inp,
            "Instance": _Instance, "RULE": rule}
        self.rows: dict[str, int] = {}  # segment name -> row variable number
        self.width: dict[str, int] = {}  # segment name -> highest field read
        self.refs: dict[str, int] = {}  # key -> variable number of its instances
        self.out: list[str] = []

    def k(self, obj: Any) -> str:
        """A global name holding obj."""
        name = f"K{len(self.ns)}"
        self.ns[name] = obj
        return name

    def emit(self, ind: int, line: str) -> None:
        self.out.append("    " * ind + line)

    def row(self, name: str, fld: int) -> str:
        """The variable holding the (padded) fields of the first `name` segment in scope."""
        i = self.rows.setdefault(name, len(self.rows))
        self.width[name] = max(self.width.get(name, 0), fld)
        return f"F{i}"

    @staticmethod
    def present(var: str) -> str:
        return f"{var} and {var} != '\"\"'"

    @staticmethod
    def text(var: str) -> str:
        return f"({var} if ES not in {var} else unescape({var}, enc))"

    def cut(self, ind: int, var: str, sep: str, n: int) -> None:
        """var = part n (1-based) of var split on sep ("" when absent), as V.c does."""
        e = self.emit
        if n == 1:
            e(ind, f"if {sep} in {var}:")
            e(ind + 1, f"{var} = {var}[:{var}.index({sep})]")
        else:
            e(ind, f"if {sep} in {var}:")
            e(ind + 1, f"_p = {var}.split({sep})")
            e(ind + 1, f'{var} = _p[{n - 1}] if len(_p) >= {n} else ""')
            e(ind, "else:")
            e(ind + 1, f'{var} = ""')

    def parts(self, ind: int, p: Hl7Path, var: str) -> int:
        """Cut component and subcomponent out of one repetition in var; returns the V level."""
        if p.comp is None:
            return 0
        self.cut(ind, var, "CS", p.comp)
        if p.sub is None:
            return 1
        self.cut(ind, var, "SS", p.sub)
        return 2

    def field_text(self, ind: int, p: Hl7Path, var: str) -> None:
        """Code setting var to the whole field (all repetitions) of p's segment ("" when absent);
        the first segment of its kind in scope, or the n-th for SEG[n]-."""
        if p.seg_occ is None:
            self.emit(ind, f"{var} = {self.row(p.segment, p.field)}[{p.field}]")
            return
        n = p.seg_occ
        self.emit(ind, f"_ss = sc.segments({p.segment!r})")
        self.emit(ind, f"_f = _ss[{n - 1}].fields if len(_ss) >= {n} else ()")
        self.emit(ind, f'{var} = _f[{p.field}] if len(_f) > {p.field} else ""')

    def raw(self, ind: int, p: Hl7Path, var: str) -> int:
        """Code setting var to the encoded text of single-valued path p ("" when absent); returns
        its V level (0 field, 1 component, 2 subcomponent)."""
        self.field_text(ind, p, var)
        rep = p.rep or 1
        if _separators(p):  # one repetition, not split
            if rep != 1:
                self.emit(ind, f'{var} = ""')
                return 0
            if p.comp is None:
                return 0
            self.emit(ind, f"if {var}:")
            return self.parts(ind + 1, p, var)
        if p.comp is None:  # `RS in ""` is False: no guard needed
            self.cut(ind, var, "RS", rep)
            return 0
        self.emit(ind, f"if {var}:")
        self.cut(ind + 1, var, "RS", rep)
        return self.parts(ind + 1, p, var)

    def each(self, ind: int, p: Hl7Path, body: Callable[[int, str | None, int], None]) -> None:
        """Code running body(ind, raw variable, level) for each present value at p (body(ind,
        None, 0) with the V in `v` for paths read through _resolve)."""
        e = self.emit
        if _single(p):
            level = self.raw(ind, p, "r")
            e(ind, f"if {self.present('r')}:")
            body(ind + 1, "r", level)
            return
        if p.seg_occ != 0:  # PID-3[*]: every repetition of one segment's field
            self.field_text(ind, p, "r")
            e(ind, "for r in (r,):" if _separators(p) else "for r in r.split(RS):")
        else:  # NTE[*]-3: every segment in scope
            e(ind, f"for _s in sc.segments({p.segment!r}):")
            e(ind + 1, "_f = _s.fields")
            e(ind + 1, f'r = _f[{p.field}] if len(_f) > {p.field} else ""')
            if p.rep != 0:
                if _separators(p):
                    if (p.rep or 1) != 1:
                        e(ind + 1, 'r = ""')
                else:
                    e(ind + 1, "if r:")
                    self.cut(ind + 2, "r", "RS", p.rep or 1)
            else:
                ind += 1
                e(ind, "for r in (r,):" if _separators(p) else "for r in r.split(RS):")
        level = self.parts(ind + 1, p, "r")
        e(ind + 1, f"if {self.present('r')}:")
        body(ind + 2, "r", level)

    def value_arg(self, ind: int, p: Hl7Path, var: str) -> None:
        """Code setting var to the first V at p, or None."""
        if _single(p):
            level = self.raw(ind, p, "q")
            self.emit(ind, f"{var} = V(q, enc, {level}) if {self.present('q')} else None")
        else:
            self.emit(ind, f"_vs = _resolve({self.k(p)}, sc)")
            self.emit(ind, f"{var} = _vs[0] if _vs else None")

    def convert(self, ind: int, conv: _Conv, raw: str | None, level: int) -> None:
        """Code setting x to the converted value of the text in `raw`, or (raw None) of the V in v."""
        e = self.emit
        if conv.kind == "str":
            e(ind, f"x = {self.text(raw)}" if raw else "x = str(v)")
            return
        if conv.kind == "map":
            e(ind, f"x = {self.k(conv.table)}.get({self.text(raw) if raw else 'str(v)'})")
            return
        kws = [(name, self.k(val)) for name, val in conv.const_args.items()]
        for j, (name, p) in enumerate(conv.path_args.items()):
            self.value_arg(ind, p, f"a{j}")
            kws.append((name, f"a{j}"))
        if raw and conv.raw is not None:  # the encoded text as it is, the arguments positional
            given = dict(kws)
            last = max((conv.order.index(name) + 1 for name in given), default=0)
            args = "".join(f", {given.get(name, 'None')}" for name in conv.order[:last])
            e(ind, f"x = {self.k(conv.raw)}({raw}, enc, {level}, ctx{args})")
            return
        if raw:
            e(ind, f"v = V({raw}, enc, {level})")
        if all(name.isidentifier() and not keyword.iskeyword(name) for name, _ in kws):
            args = "".join(f", {name}={val}" for name, val in kws)
        else:
            args = ", **{" + ", ".join(f"{name!r}: {val}" for name, val in kws) + "}"
        e(ind, f"x = {self.k(conv.fn)}(v, ctx{args})")

    def condition(self, ind: int, node: Any) -> str:
        """Code computing the values a condition reads (c0, c1, ...: the decoded text of the
        path's first value, or None, as inputs.getter gives) and the condition as an expression
        over them (what filters.compile_condition's predicate decides)."""
        names: dict[str, str] = {}

        def value(text: str) -> str:
            var = names.get(text)
            if var is None:
                var = names[text] = f"c{len(names)}"
                p = self.cond_paths[text]
                if _single(p):
                    self.raw(ind, p, "r")
                    self.emit(ind, f"{var} = {self.text('r')} if {self.present('r')} else None")
                else:
                    self.emit(ind, f"_vs = _resolve({self.k(p)}, sc)")
                    self.emit(ind, f"{var} = str(_vs[0]) if _vs else None")
            return var

        def expr(n: Any) -> str:
            if isinstance(n, list):
                return "(" + " and ".join(expr(x) for x in n) + ")" if n else "True"
            if isinstance(n, AnyOf):
                return "(" + " or ".join(expr(x) for x in n.any) + ")" if n.any else "False"
            if isinstance(n, AllOf):
                return expr(n.all)
            if isinstance(n, NotOf):
                return f"(not {expr(n.not_)})"
            c = value(n.field)
            if n.exists is not None:
                return f"(({c} not in (None, '')) == {n.exists!r})"
            if n.equals is not None:
                return f"(str({c} or '') == {self.k(str(n.equals))})"
            if n.not_equals is not None:
                return f"(str({c} or '') != {self.k(str(n.not_equals))})"
            if n.in_ is not None:
                return f"(str({c} or '') in {self.k({str(x) for x in n.in_})})"
            if n.not_in is not None:
                return f"(str({c} or '') not in {self.k({str(x) for x in n.not_in})})"
            return f"({self.k(re.compile(n.matches or ''))}.search(str({c} or '')) is not None)"

        for text in {t: None for _, t in _condition_fields(node)}:  # every value first, in order
            value(text)
        return expr(node)

    def assign(self, ind: int, f: _Field, x: str, many: bool, flat: bool = False) -> None:
        """_assign(res, f, values): values is [x] (many False) or the non-empty list x; flat: no
        value is a list (references, and functions with a raw variant), so none is spread."""
        e = self.emit
        if len(f.parts) != 1 or f.parts[0][1] is not None:  # nested or indexed target
            e(ind, f"_assign(res, {self.k(f)}, {x if many else f'[{x}]'})")
            return
        name = repr(f.parts[0][0])
        if f.choice:  # value[x]: the function returns {"valueQuantity": {...}}
            first = f"{x}[0]" if many else x
            e(ind, f"if isinstance({first}, dict):")
            e(ind + 1, f"res.update({first})")
        elif f.is_list and flat:
            e(ind, f"res.setdefault({name}, []).{'extend' if many else 'append'}({x})")
        elif f.is_list:
            if many:
                e(ind, f"_l = res.setdefault({name}, [])")
                e(ind, f"for y in {x}:")
                e(ind + 1, "if isinstance(y, list):")
                e(ind + 2, "_l.extend(y)")
                e(ind + 1, "else:")
                e(ind + 2, "_l.append(y)")
            else:
                e(ind, f"if isinstance({x}, list):")
                e(ind + 1, f"res.setdefault({name}, []).extend({x})")
                e(ind, "else:")
                e(ind + 1, f"res.setdefault({name}, []).append({x})")
        else:
            e(ind, f"res[{name}] = {x}[0]" if many else f"res[{name}] = {x}")

    def field(self, ind: int, f: _Field) -> None:
        src = f.source
        assert src is not None
        e = self.emit
        e(ind, f"# {f.target}")
        if f.when is not None:
            e(ind, f"if {self.condition(ind, f.when_node)}:")
            ind += 1
        if src.kind == "const":
            const = src.const
            if len(f.parts) == 1 and f.parts[0][1] is None and not f.choice:  # decided now, not per message
                name = repr(f.parts[0][0])
                if not f.is_list:
                    e(ind, f"res[{name}] = {self.k(const)}")
                elif isinstance(const, list):
                    e(ind, f"res.setdefault({name}, []).extend({self.k(const)})")
                else:
                    e(ind, f"res.setdefault({name}, []).append({self.k(const)})")
            else:
                self.assign(ind, f, self.k(const), False)
            return
        if src.kind in ("ref", "refs"):
            j = self.refs.setdefault(src.key, len(self.refs))
            target, ours = self.steps[src.key], _steps(self.rule)
            if src.kind == "ref" and target and ours[:len(target)] == target:
                # its resources are made per group of an enclosing level of ours (the OBR of our
                # OBX): the one of our group there, or none (siblings are never ours)
                self.by_anchor[j] = None
                e(ind, f"x = M{j}.get(sc.levels[{len(target) - 1}].start)")
                e(ind, "if x is not None:")
                e(ind + 1, 'x = {"reference": x}')
                self.assign(ind + 1, f, "x", False, flat=True)
            elif src.kind == "ref":
                e(ind, f'x = {{"reference": R{j}}} if R{j} is not None else _ref(I{j}, sc)')
                e(ind, "if x:")
                self.assign(ind + 1, f, "x", False, flat=True)
            else:
                e(ind, f"xs = _refs(I{j}, sc)")
                e(ind, "if xs:")
                self.assign(ind + 1, f, "xs", True, flat=True)
            if src.required:
                e(ind, "else:")
                e(ind + 1, f"raise MappingError({self.k(src.message)})")
            return
        conv = src.conv
        assert conv is not None
        # no value to spread: the function never returns a list (FunctionSpec.raw) and the default is none
        flat = conv.raw is not None and not isinstance(src.default, list)

        if all(_single(p) for p in src.paths):  # at most one value: no list
            def one(j: int, raw: str | None, level: int) -> None:
                self.convert(j, conv, raw, level)

            e(ind, "x = None")
            for i, p in enumerate(src.paths):
                if i:
                    e(ind, "if x is None:")
                self.each(ind + (1 if i else 0), p, one)
            if src.default is not None or src.required:
                e(ind, "if x is None:")
                if src.default is not None:
                    e(ind + 1, f"x = {self.k(src.default)}")
                else:
                    e(ind + 1, f"raise MappingError({self.k(src.message)})")
                self.assign(ind, f, "x", False, flat)
                return
            e(ind, "if x is not None:")
            self.assign(ind + 1, f, "x", False, flat)
            return

        def add(j: int, raw: str | None, level: int) -> None:
            self.convert(j, conv, raw, level)
            e(j, "if x is not None:")
            e(j + 1, "xs.append(x)")

        e(ind, "xs = []")
        for i, p in enumerate(src.paths):
            if i:
                e(ind, "if not xs:")
            self.each(ind + (1 if i else 0), p, add)
        if src.default is not None:
            e(ind, "if not xs:")
            e(ind + 1, f"xs = [{self.k(src.default)}]")
        elif src.required:
            e(ind, "if not xs:")
            e(ind + 1, f"raise MappingError({self.k(src.message)})")
        e(ind, "if xs:")
        self.assign(ind + 1, f, "xs", True, flat)

    def compile(self) -> None:
        rule = self.rule
        e = self.emit
        rule.steps = _steps(rule)
        head = ["    RS, CS, SS, ES = enc.repetition, enc.component, enc.subcomponent, enc.escape"]
        # pass 2 first: it says which rows and refs the rule reads
        self.out = []
        for f in rule.fields:
            self.field(2, f)
        fields = self.out
        # pass 1: `when`, the rows, the id
        self.out = []
        for i, p in enumerate(rule.id_paths):
            if _single(p):
                self.raw(2, p, "r")
                e(2, f't{i} = {self.text("r")} if {self.present("r")} else ""')
            else:
                e(2, f"_vs = _resolve({self.k(p)}, sc)")
                e(2, f't{i} = str(_vs[0]) if _vs else ""')
        if rule.id_paths:
            parts = [f"t{i}" for i in range(len(rule.id_paths))]
            e(2, f"if {' or '.join(parts)}:")
            e(3, f"rid = uuid5('|'.join(({self.k(rule.rtype)}, {', '.join(parts)})))")
            e(2, "else:")
            e(3, f'rid = uuid5(f"{{{self.k(rule.rtype)}}}|{{seed}}|{{{self.k(rule.key)}}}|{{n}}")')
        else:
            e(2, f'rid = uuid5(f"{{{self.k(rule.rtype)}}}|{{seed}}|{{{self.k(rule.key)}}}|{{n}}")')
        ident = self.out
        rows = [f"F{i}" for i in range(len(self.rows))]  # what build reads
        when: list[str] = []
        if rule.when is not None:  # after the rows it reads (pure lookups: the order is free)
            self.out = []
            test = self.condition(2, rule.when_node)
            when = [*self.out, f"        if not {test}:",
                    f'            trace.append(f"{{{self.k(rule.key)}}}[{{n}}]: skipped (when)")',
                    "            continue"]
        make = ["def make(scopes, seed, enc, pcache, trace):", *head, "    made = []",
                "    for n, sc in enumerate(scopes):"]
        anchor = rule.steps[-1][0] if rule.steps else None
        if any(name != anchor for name in self.rows):
            make.append("        first = sc.first")
        for name, i in self.rows.items():
            pad = self.k([""] * (self.width[name] + 1))
            if name == anchor:  # what first(anchor) gives
                make += [f"        F{i} = sc.fields",
                         f"        F{i} = F{i} if len(F{i}) > {self.width[name]} else F{i} + {pad}"]
                continue
            make += [f"        F{i} = first({name!r})",
                     f"        F{i} = {pad} if F{i} is None else F{i} if len(F{i}) > {self.width[name]} "
                     f"else F{i} + {pad}"]
        make += [*when, *ident, f"        made.append(Instance(RULE, sc, rid, ({''.join(r + ', ' for r in rows)})))",
                 "    return made"]
        build = ["def build(made, ctx, insts, pcache, entries, enc):", *head]
        for key, j in self.refs.items():
            if j in self.by_anchor:
                build.append(f"    M{j} = {{i.scope.levels[-1].start: i.ref for i in insts.get({key!r}, ())}}")
            build += [f"    I{j} = insts.get({key!r}, ())",
                      f"    R{j} = I{j}[0].ref if len(I{j}) == 1 and not I{j}[0].scope.levels else None"
                      "  # one made without for_each: in every scope"]
        build += ["    for inst in made:", "        sc = inst.scope", "        rid = inst.id"]
        if rows:
            build.append(f"        {', '.join(rows)}, = inst.rows")
        build += [f"        res = {{'resourceType': {self.k(rule.rtype)}, 'id': rid}}", *fields,
                  "        entries.append({'fullUrl': 'urn:uuid:' + rid, 'resource': res,",
                  "                        'request': {'method': 'PUT', 'url': inst.ref}})"]
        source = "\n".join([f"# {rule.key}: {rule.rtype}", *make, "", *build, ""])
        exec(compile(source, f"<mapping rule {rule.key}>", "exec"), self.ns)  # noqa: S102 - our own source
        rule.make, rule.build, rule.source = self.ns["make"], self.ns["build"], source


def compile_mapping(path: str | Path, options: MappingOptions | None = None) -> Callable[[Envelope], MappingResult]:
    """Load and compile a mapping file; ConfigError lists every problem with file:line."""
    return _Compiler(Path(path), options or MappingOptions()).compile()
