"""The reference of routes.yaml, generated from the code (one source of truth).

Everything here is read from the pydantic models of router.config.schema (top level,
``settings``, Route, RetryPolicy, ApplicationAck) and from the component registry (each source,
filter, mapping and destination: its summary and its options model). Descriptions are the models'
``Field(description=...)``; an option without one gets an empty cell.

The generated part of docs/routes.md lies between ``<!-- BEGIN GENERATED -->`` and
``<!-- END GENERATED -->``; tests/test_docs.py fails when it differs from what this module
produces. Regenerate it with::

    .venv/bin/python -m router.config.reference --write

(``--check`` only compares and exits 1 when the file is out of date; with no option the
reference is printed.) The documentation lists the built-in components only
(``docs_registry()``): components that installed plugins add through entry points vary
from one environment to another and are listed by ``router components``.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..registry import KINDS, ComponentSpec, Kind, Registry
from .durations import parse_duration
from .schema import ApplicationAck, ComponentRef, RetryPolicy, Route, RoutesFile, Settings

BEGIN = "<!-- BEGIN GENERATED -->"
END = "<!-- END GENERATED -->"
REGENERATE = ".venv/bin/python -m router.config.reference --write"
DOCS_FILE = Path(__file__).resolve().parents[2] / "docs" / "routes.md"

KIND_TITLES: dict[Kind, str] = {"source": "Sources", "filter": "Filters", "mapping": "Mappings",
                                "destination": "Destinations"}


def docs_registry() -> Registry:
    """The registry the documentation is generated from: built-in components only."""
    return Registry(use_entry_points=False)


# --------------------------------------------------------------------------- introspection


@dataclass(frozen=True)
class OptionDoc:
    """One key of a model, as documented."""

    key: str
    type: str
    required: bool
    default: str  # "" when required
    description: str


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_duration(metadata: Iterable[Any]) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in metadata)


def _union_members(tp: Any) -> list[Any]:
    out: list[Any] = []
    for a in typing.get_args(tp):
        out.extend(_union_members(a) if _is_union(a) else [a])
    return out


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def type_name(tp: Any, metadata: Iterable[Any] = ()) -> str:
    """A readable name of a field type: 'string', 'list of string', 'duration', 'RetryPolicy', ..."""
    metadata = list(metadata)
    if typing.get_origin(tp) is typing.Annotated:
        base, *extra = typing.get_args(tp)
        return type_name(base, [*metadata, *extra])
    if _is_duration(metadata):
        return "duration"
    if tp is type(None):
        return "null"
    if _is_union(tp):
        members = _union_members(tp)
        lists = [m for m in members if typing.get_origin(m) is list]
        rest = [m for m in members if typing.get_origin(m) is not list]
        if len(lists) == 1 and rest:
            inner = typing.get_args(lists[0])[0]
            inner_members = _union_members(inner) if _is_union(inner) else [inner]
            if inner_members == rest:  # `X | list[X]`: one item or a list of them
                return f"{_join([type_name(m) for m in rest])}, or a list of them"
        return _join([type_name(m) for m in members])
    if typing.get_origin(tp) is typing.Literal:
        return _join([f"`{v}`" for v in typing.get_args(tp)])
    if typing.get_origin(tp) in (list, tuple, set, frozenset):
        args = typing.get_args(tp)
        inner = type_name(args[0]) if args else "any"
        return f"list of ({inner})" if " or " in inner else f"list of {inner}"
    if typing.get_origin(tp) is dict:
        k, v = typing.get_args(tp) or (str, Any)
        return f"mapping of {type_name(k)} to {type_name(v)}"
    if tp is ComponentRef:
        return "component"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.__name__
    return {str: "string", int: "integer", float: "number", bool: "boolean", bytes: "bytes"}.get(tp, "any") \
        if tp is not Any else "any"


def _num(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def constraints(field: FieldInfo) -> str:
    """The field's limits in words: '1 to 100', 'at least 1 item', 'matches ^...$'."""
    lo = hi = None
    out: list[str] = []
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            lo = f"{_num(m.ge)}"
        elif isinstance(m, annotated_types.Gt):
            lo = f"more than {_num(m.gt)}"
        elif isinstance(m, annotated_types.Le):
            hi = f"{_num(m.le)}"
        elif isinstance(m, annotated_types.Lt):
            hi = f"less than {_num(m.lt)}"
        elif isinstance(m, annotated_types.MinLen):
            out.append(f"at least {m.min_length} item{'s' if m.min_length != 1 else ''}")
        elif isinstance(m, annotated_types.MaxLen):
            out.append(f"at most {m.max_length} items")
        elif getattr(m, "pattern", None):
            out.append(f"matches `{m.pattern}`")
    if lo is not None and hi is not None:
        out.insert(0, f"{lo} to {hi}")
    elif lo is not None:
        out.insert(0, f"at least {lo}" if not lo.startswith("more") else lo)
    elif hi is not None:
        out.insert(0, f"at most {hi}" if not hi.startswith("less") else hi)
    return ", ".join(out)


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{_num(round(ms, 3))}ms"
    return f"{_num(seconds)}s"


def _flow(value: Any) -> str:
    """A value as YAML flow text (what one would write in routes.yaml)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _num(value) if math.isfinite(value) else str(value)
    if isinstance(value, (int,)):
        return str(value)
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z0-9_./-][A-Za-z0-9_./ -]*", value) and value not in ("null", "true", "false")
        return value if plain and not value.endswith(" ") else f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None:
        return "none"
    if _is_duration(field.metadata) and isinstance(value, (int, float)):
        return format_duration(float(value))
    if isinstance(value, BaseModel):
        if all(not f.is_required() for f in type(value).model_fields.values()) and value == type(value)():
            return "see below"  # the model's own defaults, documented in its section
        value = value.model_dump(mode="json", by_alias=True)
    return _flow(value)


def options_of(model: type[BaseModel]) -> list[OptionDoc]:
    out = []
    for name, f in model.model_fields.items():
        t = type_name(f.annotation, f.metadata)
        limits = constraints(f)
        required = f.is_required()
        out.append(OptionDoc(key=f.alias or name, type=f"{t}; {limits}" if limits else t, required=required,
                             default="" if required else default_text(f), description=f.description or ""))
    return out


def nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """Models used inside `model`'s fields, depth first, each once (ComponentRef excluded)."""
    seen: list[type[BaseModel]] = []

    def walk_type(tp: Any) -> None:
        if typing.get_origin(tp) is typing.Annotated:
            walk_type(typing.get_args(tp)[0])
            return
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp is not ComponentRef and tp not in seen and tp is not model:
                seen.append(tp)
                walk_model(tp)
            return
        for a in typing.get_args(tp):
            walk_type(a)

    def walk_model(m: type[BaseModel]) -> None:
        for f in m.model_fields.values():
            walk_type(f.annotation)

    walk_model(model)
    return seen


def missing_descriptions(registry: Registry | None = None) -> list[str]:
    """'kind name.option' for every component option without a description (for maintainers)."""
    registry = registry or docs_registry()
    out = []
    for kind in KINDS:
        for name in registry.names(kind):
            spec = registry.get(kind, name)
            for m in (spec.options, *nested_models(spec.options)):
                for o in options_of(m):
                    if not o.description:
                        where = name if m is spec.options else f"{name} {m.__name__}"
                        out.append(f"{kind} {where}.{o.key}")
    return out


# --------------------------------------------------------------------------- markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def markdown_table(model: type[BaseModel]) -> list[str]:
    rows = options_of(model)
    if not rows:
        return ["No options."]
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for o in rows:
        default = "**required**" if o.required else o.default if o.default in ("none", "see below") \
            else _code(o.default)
        lines.append(f"| `{o.key}` | {_cell(o.type)} | {_cell(default)} | {_cell(o.description)} |")
    return lines


def _doc_first_paragraph(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__") or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _nested_sections(model: type[BaseModel], level: str) -> list[str]:
    out: list[str] = []
    for m in nested_models(model):
        out += ["", f"{level} `{m.__name__}`", ""]
        doc = _doc_first_paragraph(m)
        if doc:
            out += [doc, ""]
        out += markdown_table(m)
    return out


def component_heading(kind: str, name: str) -> str:
    return f"### {kind} `{name}`"


def components_markdown(registry: Registry) -> str:
    out: list[str] = []
    for kind in KINDS:
        names = registry.names(kind)
        out += [f"## {KIND_TITLES[kind]}", "",
                f"`{kind}` types: " + ", ".join(f"`{n}`" for n in names) + "."]
        for name in names:
            spec: ComponentSpec = registry.get(kind, name)
            out += ["", component_heading(kind, name), "", f"{spec.summary[:1].upper()}{spec.summary[1:]}.", ""]
            out += markdown_table(spec.options)
            out += _nested_sections(spec.options, "####")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def schema_markdown() -> str:
    out = [
        "## Top level",
        "",
        "Every mapping in routes.yaml is closed: a key not listed here is an error (`router check` names it and "
        "suggests the closest known key). Durations are a number of seconds or a string such as `250ms`, `5s`, "
        "`2m`, `1h`.",
        "",
        *markdown_table(RoutesFile),
        "",
        "## `settings`",
        "",
        *markdown_table(Settings),
        *_nested_sections(Settings, "###"),
        "",
        "## Route",
        "",
        "Each item of `routes`. A *component* is a mapping with a `type` (a registered name, see the "
        "components below) and that component's own options, or just the type name as a string "
        "(`source: mllp`). `destinations` also takes one component instead of a list; `filter` also takes a "
        "condition or a list of conditions, which means the `fields` filter with them as `where`.",
        "",
        *markdown_table(Route),
        "",
        "## `retry`",
        "",
        _doc_first_paragraph(RetryPolicy),
        "",
        *markdown_table(RetryPolicy),
        "",
        "## `application_ack`",
        "",
        _doc_first_paragraph(ApplicationAck),
        "",
        *markdown_table(ApplicationAck),
    ]
    return "\n".join(out) + "\n"


def markdown(registry: Registry | None = None) -> str:
    """The whole generated reference (what goes between the markers of docs/routes.md)."""
    registry = registry or docs_registry()
    return (f"<!-- Generated from the code by router/config/reference.py: do not edit by hand. "
            f"Regenerate with: {REGENERATE} -->\n\n"
            + schema_markdown() + "\n" + components_markdown(registry))


# --------------------------------------------------------------------------- plain text


def components_text(registry: Registry) -> str:
    out: list[str] = []

    def options(model: type[BaseModel], indent: str) -> None:
        rows = options_of(model)
        if not rows:
            out.append(f"{indent}(no options)")
            return
        width = max(len(o.key) for o in rows)
        for o in rows:
            default = "required" if o.required else f"default {o.default}"
            line = f"{indent}{o.key:<{width}}  {o.type.replace('`', '')}; {default}"
            out.append(line + (f"\n{indent}{'':<{width}}    {o.description}" if o.description else ""))

    for kind in KINDS:
        out.append(f"{KIND_TITLES[kind].lower()}:")
        for name in registry.names(kind):
            spec = registry.get(kind, name)
            out.append(f"  {name}  - {spec.summary}")
            options(spec.options, "      ")
            for m in nested_models(spec.options):
                out.append(f"    {m.__name__}:")
                options(m, "      ")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- the docs file


def generated_part(text: str) -> str | None:
    """What lies between the markers of a docs file (None when a marker is missing)."""
    start, end = text.find(BEGIN), text.find(END)
    if start == -1 or end == -1 or end < start:
        return None
    return text[start + len(BEGIN):end].strip("\n") + "\n"


def replace_generated(text: str, generated: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start == -1 or end == -1 or end < start:
        raise ValueError(f"the markers {BEGIN} / {END} are missing")
    return text[:start + len(BEGIN)] + "\n" + generated.rstrip("\n") + "\n" + text[end:]


def docs_main(argv: list[str] | None, *, prog: str, description: str, markdown_fn: Any, docs_file: Path,
              regenerate: str) -> int:
    """The `--write` / `--check` command line shared by the generated references."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--write", action="store_true", help="update the generated part of the docs file")
    parser.add_argument("--check", action="store_true", help="exit 1 when the docs file is out of date")
    parser.add_argument("--file", type=Path, default=docs_file, help=f"docs file (default {docs_file})")
    args = parser.parse_args(argv)
    generated = markdown_fn()
    if not (args.write or args.check):
        sys.stdout.write(generated)
        return 0
    text = args.file.read_text(encoding="utf-8")
    if args.check:
        if generated_part(text) != generated:
            print(f"{args.file}: the generated reference is out of date; run: {regenerate}", file=sys.stderr)
            return 1
        print(f"{args.file}: up to date")
        return 0
    new = replace_generated(text, generated)
    if new != text:
        args.file.write_text(new, encoding="utf-8")
        print(f"{args.file}: updated")
    else:
        print(f"{args.file}: already up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    return docs_main(argv, prog="python -m router.config.reference", description="Generate the routes.yaml "
                     "reference from the code.", markdown_fn=markdown, docs_file=DOCS_FILE, regenerate=REGENERATE)


if __name__ == "__main__":
    raise SystemExit(main())
