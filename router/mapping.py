"""Mapping references: what a route's ``mapping:`` names and how it becomes a callable.

A mapping turns an envelope into output for the destinations:
``fn(envelope) -> dict | bytes | None`` (a FHIR Bundle/resource as a dict, bytes
to deliver as they are, or None to deliver the raw message). A reference is

* ``package.module:function`` - the Python escape hatch;
* a registered mapping name (``passthrough``, or one an adapter plugin adds);
* a file in the mappings folder (``<name>.yaml``), compiled by the mapping language.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .envelope import Envelope
from .errors import ConfigError
from .registry import ComponentSpec, NoOptions, Registry, did_you_mean

MappingFn = Callable[[Envelope], Any]  # -> dict | bytes | None | router.maplang.compiler.MappingResult

#: file suffix -> compiler(path, options) -> MappingFn (the YAML mapping language, router.maplang)
FILE_COMPILERS: dict[str, str] = {".yaml": "router.maplang.compiler:compile_mapping",
                                  ".yml": "router.maplang.compiler:compile_mapping"}


def _passthrough(envelope: Envelope) -> None:
    return None


PASSTHROUGH_SPEC = ComponentSpec(
    kind="mapping", name="passthrough", summary="deliver the raw message unchanged",
    options=NoOptions, factory=lambda options, context: _passthrough,
)


def _import_function(ref: str) -> Callable[..., Any]:
    module_name, _, func = ref.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, func)
    if not callable(fn):
        raise TypeError(f"{ref} is not callable")
    return fn  # type: ignore[no-any-return]


def _file_for(name: str, mappings_dir: Path) -> Path | None:
    for suffix in FILE_COMPILERS:
        candidate = mappings_dir / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def check_function_ref(ref: str, what: str) -> tuple[str, str] | None:
    """None when package.module:function imports and is callable; else (message, hint)."""
    module_name, _, func = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return (f"{what} {ref!r} cannot be loaded: {exc}", "write it as package.module:function")
    except Exception as exc:  # noqa: BLE001 - the module itself crashed on import
        return (f"{what} {ref!r} cannot be loaded: importing {module_name} raised {type(exc).__name__}: {exc}", "")
    fn = getattr(module, func, None)
    if fn is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and inspect.isfunction(v)
                 and v.__module__ == module_name]
        return (f"{what} {ref!r} cannot be loaded: {module_name} has no {func!r}",
                did_you_mean(func, names) or "write it as package.module:function")
    if not callable(fn):
        return (f"{what} {ref!r} is not callable", "")
    return None


def check_mapping_ref(ref: str, registry: Registry, mappings_dir: Path) -> tuple[str, str] | None:
    """None when the reference resolves; else (message, hint)."""
    if ":" in ref:
        return check_function_ref(ref, "mapping function")
    if registry.has("mapping", ref) or _file_for(ref, mappings_dir):
        return None
    known = registry.names("mapping")
    if mappings_dir.is_dir():
        known += sorted({p.stem for p in mappings_dir.iterdir() if p.suffix in FILE_COMPILERS})
    hint = did_you_mean(ref, known) or (f"known: {', '.join(known)}" if known else "")
    return (f"unknown mapping {ref!r}", hint)


def resolve_mapping(ref: str | None, registry: Registry, mappings_dir: Path, context: Any = None) -> MappingFn:
    """The callable behind a reference. `context` is passed to file compilers as their options
    (router.maplang.compiler.MappingOptions: time zone, unmapped-code policy)."""
    if ref is None:
        return _passthrough
    if ":" in ref:
        return _import_function(ref)
    if registry.has("mapping", ref):
        spec = registry.get("mapping", ref)
        return spec.factory(spec.options(), context)  # type: ignore[no-any-return]
    path = _file_for(ref, mappings_dir)
    if path is None:
        raise ConfigError(f"unknown mapping {ref!r}")
    compiler = _import_function(FILE_COMPILERS[path.suffix])
    return compiler(path, context)  # type: ignore[no-any-return]


def file_problems(ref: str, registry: Registry, mappings_dir: Path) -> list[Any]:
    """Problems (file:line) of the mapping file a reference names; [] when it compiles or is no file."""
    if ":" in ref or registry.has("mapping", ref):
        return []
    path = _file_for(ref, mappings_dir)
    if path is None:
        return []
    try:
        _import_function(FILE_COMPILERS[path.suffix])(path, None)
    except ConfigError as exc:
        return list(exc.problems)
    return []
