"""Route filters: declarative conditions on message fields, or a Python predicate.

    filter:
      - {field: MSH-4, equals: CITYLAB}
      - {field: PID-3.1, matches: '^\\d{11}$'}
      - any: [{field: OBR-4.1, in: [GLU, HBA1C]}, {field: OBX-3.3, equals: LN}]

A list means all conditions must hold. HL7 v2 messages are addressed by
SEG-field[.component[.subcomponent]]; JSON bodies by dotted paths (a.b.0.c).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .envelope import Envelope
from .errors import InputError
from .formats import hl7v2
from .registry import ComponentSpec

Predicate = Callable[[Envelope], bool]


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    field: str
    equals: str | int | float | None = None
    not_equals: str | int | float | None = None
    in_: list[str | int | float] | None = Field(None, alias="in")
    not_in: list[str | int | float] | None = None
    matches: str | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        tests = [k for k in ("equals", "not_equals", "in_", "not_in", "matches", "exists") if getattr(self, k) is not None]
        if len(tests) != 1:
            raise ValueError("a condition needs exactly one of equals, not_equals, in, not_in, matches, exists")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"bad regular expression {self.matches!r}: {exc}") from None
        if self.field[:1].isupper() and "-" in self.field and not hl7v2.is_field_path(self.field):
            raise ValueError(f"not an HL7 field path: {self.field!r} (expected e.g. PID-3, PID-3.1, OBX[2]-5[1].1)")
        return self


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    any: list[Node]


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    all: list[Node]


class NotOf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    not_: Node = Field(alias="not")


Node = Union[Condition, AnyOf, AllOf, NotOf]
AnyOf.model_rebuild()
AllOf.model_rebuild()
NotOf.model_rebuild()


class FieldsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    where: list[Node] | Node


def _json_get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(doc, list) and part.isdigit():
            i = int(part)
            doc = doc[i] if i < len(doc) else None
        elif isinstance(doc, dict):
            doc = doc.get(part)
        else:
            return None
    return doc


def accessor(envelope: Envelope) -> Callable[[str], Any]:
    raw = envelope.raw
    if hl7v2.is_hl7(raw):
        msg = hl7v2.Message(hl7v2.decode(raw))
        return msg.get
    if raw.lstrip()[:1] in (b"{", b"["):
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"body is not valid JSON: {exc}") from None
        return lambda p: _json_get(doc, p)
    raise InputError("cannot filter on fields: message is neither HL7 v2 nor JSON")


def _compile(node: Node) -> Callable[[Callable[[str], Any]], bool]:
    if isinstance(node, AnyOf):
        parts = [_compile(n) for n in node.any]
        return lambda get: any(p(get) for p in parts)
    if isinstance(node, AllOf):
        parts = [_compile(n) for n in node.all]
        return lambda get: all(p(get) for p in parts)
    if isinstance(node, NotOf):
        inner = _compile(node.not_)
        return lambda get: not inner(get)
    c = node
    f = c.field
    if c.exists is not None:
        want = c.exists
        return lambda get: (get(f) not in (None, "")) == want
    if c.equals is not None:
        v = str(c.equals)
        return lambda get: str(get(f) or "") == v
    if c.not_equals is not None:
        v = str(c.not_equals)
        return lambda get: str(get(f) or "") != v
    if c.in_ is not None:
        vs = {str(x) for x in c.in_}
        return lambda get: str(get(f) or "") in vs
    if c.not_in is not None:
        vs = {str(x) for x in c.not_in}
        return lambda get: str(get(f) or "") not in vs
    rx = re.compile(c.matches or "")
    return lambda get: rx.search(str(get(f) or "")) is not None


def compile_condition(node: Node | list[Node]) -> Callable[[Callable[[str], Any]], bool]:
    """A predicate over a field getter, from parsed conditions (a list means all of them)."""
    return _compile(AllOf(all=node) if isinstance(node, list) else node)


def build_fields_filter(options: FieldsOptions, context: Any = None) -> Predicate:
    where = options.where if isinstance(options.where, list) else [options.where]
    test = _compile(AllOf(all=where))
    return lambda envelope: test(accessor(envelope))


class PythonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="package.module:function(envelope) -> bool")

    @model_validator(mode="after")
    def _loads(self) -> PythonOptions:
        from .mapping import check_function_ref

        problem = check_function_ref(self.function, "filter function")
        if problem:
            raise ValueError(problem[0] + (f" ({problem[1]})" if problem[1] else ""))
        return self


def build_python_filter(options: PythonOptions, context: Any = None) -> Predicate:
    from .mapping import _import_function

    return _import_function(options.function)


FIELDS_SPEC = ComponentSpec("filter", "fields", "declarative conditions on message fields", FieldsOptions, build_fields_filter)
PYTHON_SPEC = ComponentSpec("filter", "python", "a Python predicate package.module:function", PythonOptions, build_python_filter)
