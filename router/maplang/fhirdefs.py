"""FHIR R4 element definitions for load-time checks of mapping targets (from fhir.resources.R4B,
which matches R4 for the resources we use). Used at load only, never per message."""
from __future__ import annotations

import functools
import re
import typing
from dataclasses import dataclass

from ..registry import did_you_mean

_SEG = re.compile(r"^([A-Za-z][A-Za-z0-9]*(?:\[x\])?)(?:\[(\d+)\])?$")


@dataclass(frozen=True)
class Element:
    name: str
    is_list: bool
    type_name: str | None  # complex type's model name (e.g. "CodeableConcept"), None for primitives


@functools.lru_cache(maxsize=None)
def _model(name: str) -> typing.Any:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(name)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


@functools.lru_cache(maxsize=None)
def elements(type_name: str) -> dict[str, Element]:
    model = _model(type_name)
    if model is None:
        return {}
    out: dict[str, Element] = {}
    for fname, field in model.model_fields.items():
        if fname.endswith("__ext") or fname == "fhir_comments":
            continue
        name = field.alias or fname
        ann = field.annotation
        is_list = False
        inner = ann
        for _ in range(4):  # unwrap Optional[List[X]]
            args = [a for a in typing.get_args(inner) if a is not type(None)]
            origin = typing.get_origin(inner)
            if origin in (list, typing.List):  # noqa: UP006
                is_list = True
            if not args:
                break
            inner = args[0]
        tname = getattr(inner, "__name__", str(inner))
        tname = tname[:-4] if tname.endswith("Type") else tname
        complex_ = _model(tname) is not None and tname[:1].isupper()
        out[name] = Element(name, is_list, tname if complex_ else None)
    return out


def check_target(resource_type: str, path: str) -> tuple[list[tuple[str, int | None]], bool, bool] | str:
    """Parse and check a target path against the resource's definitions.

    Returns (parts, is_list, is_choice) - parts as (name, index) - or an error message."""
    if _model(resource_type) is None:
        return f"unknown FHIR resource type {resource_type!r}"
    parts: list[tuple[str, int | None]] = []
    current = resource_type
    is_list = False
    choice = False
    segs = path.split(".")
    for k, seg in enumerate(segs):
        m = _SEG.match(seg)
        if not m:
            return f"bad target path segment {seg!r} in {path!r}"
        name, idx = m.group(1), m.group(2)
        els = elements(current)
        if name.endswith("[x]"):
            base = name[:-3]
            if k != len(segs) - 1 or not any(e.startswith(base) and e[len(base):][:1].isupper() for e in els):
                return f"{current} has no choice element {name!r}"
            parts.append((name, None))
            choice = True
            break
        el = els.get(name)
        if el is None:
            hint = did_you_mean(name, els)
            return f"{current} has no element {name!r}" + (f"; {hint}" if hint else "")
        if idx is not None and not el.is_list:
            return f"{current}.{name} is not a list: it takes no [index]"
        parts.append((name, int(idx) if idx is not None else None))
        if k < len(segs) - 1:
            if el.is_list and idx is None:
                return f"{current}.{name} is a list: write {name}[0].{segs[k + 1]} (or [1], ...)"
            if el.type_name is None:
                return f"{current}.{name} is a primitive: it has no {segs[k + 1]!r}"
            current = el.type_name
        else:
            is_list = el.is_list and idx is None
    return parts, is_list, choice
