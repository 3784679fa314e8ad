"""The reference of the mapping language, generated from the code (one source of truth).

Everything here is read from the code the compiler itself uses:

* the keys of a mapping file: the pydantic models of router.maplang.compiler (``MappingSpec``,
  ``ResourceSpec``, ``FieldSpec``), their types, defaults and ``Field(description=...)``;
* the conversion functions: the ``FUNCTIONS`` registry of router.maplang.functions (name, what
  it returns, its doc string with an example, its arguments with type, choices and whether they
  are required);
* the HL7 v2 segment groups: ``ATTACHED`` and ``UNTIL`` of router.maplang.paths;
* the coding-system names: ``DEFAULT_SYSTEMS`` of router.maplang.codesystems.

The generated part of docs/mappings.md lies between ``<!-- BEGIN GENERATED -->`` and
``<!-- END GENERATED -->``; tests/test_mapping_docs.py fails when it differs from what this
module produces. Regenerate it with::

    .venv/bin/python -m router.maplang.reference --write

(``--check`` only compares and exits 1 when the file is out of date; with no option the
reference is printed.)

A model field without a description gets the text in ``FALLBACK_DESCRIPTIONS`` below (the
model's own description always wins; once the model has one, the fallback can go).
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..config.reference import _cell, _code, constraints, default_text, docs_main, generated_part, type_name

__all__ = ["generated_part", "main", "markdown"]
from ..filters import AllOf, AnyOf, Condition, NotOf
from .codesystems import DEFAULT_SYSTEMS
from .compiler import FieldSpec, MappingSpec, ResourceSpec
from .functions import FUNCTIONS, Arg, FunctionSpec
from .paths import ATTACHED, UNTIL

BEGIN = "<!-- BEGIN GENERATED -->"
END = "<!-- END GENERATED -->"
REGENERATE = ".venv/bin/python -m router.maplang.reference --write"
DOCS_FILE = Path(__file__).resolve().parents[2] / "docs" / "mappings.md"

#: the models of a mapping file, with the heading of their section
MODELS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("Top level", MappingSpec),
    ("Each item of `resources`", ResourceSpec),
    ("Each value of `fields`", FieldSpec),
)

#: descriptions of model fields that have none in router.maplang.compiler (model -> key -> text)
FALLBACK_DESCRIPTIONS: dict[type[BaseModel], dict[str, str]] = {
    MappingSpec: {
        "input": "what the mapping reads: hl7v2 (ER7 text), xml or json",
        "description": "for people: the engine does not use it",
        "concept_maps": "name -> CSV file (relative to the mapping file), used by `args: {concept_map: name}`",
        "resources": "the resource rules, in order: each makes zero or more resources of one type",
    },
    ResourceSpec: {
        "key": "the rule's name: `ref`/`refs` name it; unique in the file",
        "resource": "FHIR R4 resource type (checked at load)",
        "when": "condition (route filter syntax, paths of this input) an instance must meet, else it is skipped",
        "id": "paths whose first values make the deterministic id (UUIDv5); "
              "empty or all blank: a fallback id from the message",
        "fields": "target element path (checked against FHIR R4 at load) -> field rule, "
                  "or a source path as a string",
    },
    FieldSpec: {
        "required": "a `from` field that is still empty (no default) raises MappingError",
        "when": "condition (route filter syntax, paths of this input) for setting this field at all",
    },
}

_NODE_TYPES = {Condition, AnyOf, AllOf, NotOf}
_ARG_TYPES = {"value": "path or constant", "str": "constant string", "bool": "`true` or `false`"}


# --------------------------------------------------------------------------- mapping file keys


def _members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _members(a)]
    return [tp]


def _type(field: FieldInfo) -> str:
    """A readable type of a mapping-file key ('condition, or a list of them', 'list of resource rules')."""
    members = [m for m in _members(field.annotation) if m is not type(None)]
    nodes = [m for m in members if m in _NODE_TYPES]
    lists = [m for m in members if typing.get_origin(m) is list
             and set(_members(typing.get_args(m)[0])) <= _NODE_TYPES]
    if nodes and set(members) == set(nodes) | set(lists):
        return "condition, or a list of them" if lists else "condition"
    text = type_name(field.annotation, field.metadata)
    text = text.replace("list of ResourceSpec", "list of resource rules")
    text = text.replace("FieldSpec or string", "field rule or string")
    limits = constraints(field)
    return f"{text}; {limits}" if limits else text


def key_of(name: str, field: FieldInfo) -> str:
    return field.alias or name


def description(model: type[BaseModel], key: str, field: FieldInfo) -> str:
    return field.description or FALLBACK_DESCRIPTIONS.get(model, {}).get(key, "")


def keys_table(model: type[BaseModel]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, f in model.model_fields.items():
        key = key_of(name, f)
        if f.is_required():
            default = "**required**"
        else:
            d = default_text(f)
            default = d if d == "none" else _code(d)
        lines.append(f"| `{key}` | {_cell(_type(f))} | {_cell(default)} | {_cell(description(model, key, f))} |")
    return lines


def keys_markdown() -> str:
    out = [
        "## Mapping file keys",
        "",
        "Every mapping in a mapping file is closed: a key not listed here is an error (`router check` "
        "reports it with file:line). *Condition* is the condition of route filters (`field` with one of "
        "`equals`, `not_equals`, `in`, `not_in`, `matches`, `exists`; `any`, `all`, `not`), its `field` a "
        "path of the mapping's input.",
    ]
    for title, model in MODELS:
        out += ["", f"### {title}", ""]
        if model is FieldSpec:
            out += ["A field rule takes exactly one of `from`, `const`, `ref`, `refs`. A plain string is short "
                    "for `{from: ...}`.", ""]
        out += keys_table(model)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- functions


def function_heading(name: str) -> str:
    return f"### `{name}`"


def _markdown_doc(doc: str) -> str:
    """A function's doc string as markdown: ``code`` -> `code`, indentation removed."""
    text = inspect.cleandoc(doc)
    return re.sub(r"``(.+?)``", r"`\1`", text, flags=re.S)


def _arg_row(name: str, arg: Arg) -> str:
    kind = _ARG_TYPES.get(arg.type, arg.type)
    doc = arg.doc
    if arg.choices:
        doc += "; one of " + ", ".join(f"`{c}`" for c in arg.choices)
    return f"| `{name}` | {_cell(kind)} | {'yes' if arg.required else 'no'} | {_cell(doc)} |"


def function_markdown(spec: FunctionSpec) -> list[str]:
    out = [function_heading(spec.name), "", f"Returns: {spec.returns}.", "", _markdown_doc(spec.doc), ""]
    if spec.args:
        out += ["| argument | type | required | description |", "|---|---|---|---|"]
        out += [_arg_row(n, a) for n, a in spec.args.items()]
    else:
        out.append("No arguments.")
    return out


def functions_markdown(functions: Mapping[str, FunctionSpec] | None = None) -> str:
    functions = FUNCTIONS if functions is None else functions
    out = [
        "## Conversion functions",
        "",
        "`fn: NAME` in a field applies the function to each value the `from` path gives (one field "
        "repetition, component or subcomponent); a function that gives nothing (an empty value, the HL7 "
        "null `\"\"`) leaves the element out. Arguments go under `args:`. An argument of type *path or "
        "constant* is a source path (in HL7 v2 mappings a bare `SEG-n...` string; in any input "
        "`{path: ...}`) whose first value in the same scope is passed, or else a constant; the other "
        "arguments are constants.",
        "",
        "Functions: " + ", ".join(f"`{n}`" for n in functions) + ".",
    ]
    for spec in functions.values():
        out += ["", *function_markdown(spec)]
    return "\n".join(out).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- groups, code systems


def groups_markdown() -> str:
    out = [
        "## Segment groups (HL7 v2)",
        "",
        "How `for_each` cuts a message into groups (`router/maplang/paths.py`). A segment listed under "
        "*attached* that directly follows its owner belongs to it: it joins the owner's group and is "
        "never seen from a scope outside it.",
        "",
        "| segment | attached segments |",
        "|---|---|",
        *[f"| `{seg}` | {', '.join(f'`{s}`' for s in att)} |" for seg, att in ATTACHED.items()],
        "",
        "Iterating one of these makes a group that runs up to (not including) the next segment listed; "
        "iterating any other segment makes a group of it and its attached run. `with:` replaces both "
        "for the segment it names.",
        "",
        "| `for_each` segment | its group ends before |",
        "|---|---|",
        *[f"| `{seg}` | {', '.join(f'`{s}`' for s in until)} |" for seg, until in UNTIL.items()],
    ]
    return "\n".join(out) + "\n"


def codesystems_markdown() -> str:
    by_uri: dict[str, list[str]] = {}
    for name, uri in DEFAULT_SYSTEMS.items():
        by_uri.setdefault(uri, []).append(name)
    out = [
        "## Coding-system names",
        "",
        "The coding-system names of CWE/CE/CNE values (`CWE.3`, `.6`, `.12`) and units that resolve to a "
        "FHIR `Coding.system` (`router/maplang/codesystems.py`). Matching is exact, then upper-cased. "
        "Besides these: `HL7nnnn` and `v2-nnnn` give `http://terminology.hl7.org/CodeSystem/v2-nnnn`, "
        "an OID gives `urn:oid:...`, an absolute URI stays as it is; local systems (`L`, `99zzz`) and "
        "unknown names give no system (the function adds a warning for an unknown name).",
        "",
        "| system | names |",
        "|---|---|",
        *[f"| `{uri}` | {', '.join(f'`{n}`' for n in names)} |" for uri, names in by_uri.items()],
    ]
    return "\n".join(out) + "\n"


def markdown() -> str:
    """The whole generated reference (what goes between the markers of docs/mappings.md)."""
    return (f"<!-- Generated from the code by router/maplang/reference.py: do not edit by hand. "
            f"Regenerate with: {REGENERATE} -->\n\n"
            + keys_markdown() + "\n" + functions_markdown() + "\n" + groups_markdown() + "\n"
            + codesystems_markdown())


# --------------------------------------------------------------------------- the docs file


def main(argv: list[str] | None = None) -> int:
    return docs_main(argv, prog="python -m router.maplang.reference", description="Generate the mapping-language "
                     "reference from the code.", markdown_fn=markdown, docs_file=DOCS_FILE, regenerate=REGENERATE)


if __name__ == "__main__":
    raise SystemExit(main())
