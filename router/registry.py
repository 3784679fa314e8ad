"""One registry for every pluggable component: sources, filters, mappings, destinations.

A component is a module-level ``SPEC = ComponentSpec(...)``: its kind, its name,
its options model (pydantic, extra keys forbidden) and a factory that builds the
runtime object from validated options. Built-in components are listed below as
``name -> "module:attribute"`` aliases and imported only when used. Adapters and
third-party packages add theirs through ``settings.plugins`` in routes.yaml (a
module whose import calls nothing: it exposes ``COMPONENTS = [SPEC, ...]``) or the
``router.components`` entry-point group. The core never imports an adapter.
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError

Kind = Literal["source", "filter", "mapping", "destination"]
KINDS: tuple[Kind, ...] = ("source", "filter", "mapping", "destination")


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ComponentSpec:
    kind: Kind
    name: str
    summary: str
    options: type[BaseModel]
    factory: Callable[..., Any]  # factory(options, context) -> runtime object
    needs_document: bool = False  # destinations: takes a FHIR resource/Bundle, so the route needs a mapping


BUILTINS: dict[Kind, dict[str, str]] = {
    "source": {
        "mllp": "router.sources.mllp:SPEC",
        "http": "router.sources.http:SPEC",
        "file": "router.sources.file:SPEC",
    },
    "filter": {
        "fields": "router.filters:FIELDS_SPEC",
        "python": "router.filters:PYTHON_SPEC",
    },
    "mapping": {
        "passthrough": "router.mapping:PASSTHROUGH_SPEC",
    },
    "destination": {
        "store": "router.destinations.store:SPEC",
        "file": "router.destinations.file:SPEC",
        "amqp": "router.destinations.amqp:SPEC",
        "http": "router.destinations.http:SPEC",
        "discard": "router.destinations.discard:SPEC",
        "mllp": "router.destinations.mllp:SPEC",
    },
}


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def _load_attr(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry:
    """Name -> component, per kind. Built once per loaded configuration."""

    def __init__(self, plugins: Iterable[str] = (), use_entry_points: bool = True) -> None:
        self._refs: dict[Kind, dict[str, str | ComponentSpec]] = {k: dict(BUILTINS[k]) for k in KINDS}
        self._cache: dict[tuple[Kind, str], ComponentSpec] = {}
        if use_entry_points:
            for ep in entry_points(group="router.components"):
                self.add_module(ep.value)
        for plugin in plugins:
            self.add_module(plugin)

    def add_module(self, module_name: str) -> None:
        """Register every ComponentSpec listed in ``module.COMPONENTS``."""
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"plugin module {module_name!r} cannot be imported: {exc}") from None
        for spec in getattr(module, "COMPONENTS", []):
            self.add(spec)

    def add(self, spec: ComponentSpec) -> None:
        self._refs[spec.kind][spec.name] = spec
        self._cache[(spec.kind, spec.name)] = spec

    def names(self, kind: Kind) -> list[str]:
        return sorted(self._refs[kind])

    def has(self, kind: Kind, name: str) -> bool:
        return name in self._refs[kind]

    def get(self, kind: Kind, name: str) -> ComponentSpec:
        key = (kind, name)
        if key in self._cache:
            return self._cache[key]
        ref = self._refs[kind].get(name)
        if ref is None:
            hint = did_you_mean(name, self._refs[kind])
            raise KeyError(f"unknown {kind} type {name!r}" + (f"; {hint}" if hint else ""))
        spec = ref if isinstance(ref, ComponentSpec) else _load_attr(ref)
        self._cache[key] = spec
        return spec
