"""What a mapping reads: HL7 v2, XML or JSON. Each input parses source paths at load, parses a
message into a root scope, iterates scopes for `for_each`, and resolves paths to values (V).

* hl7v2: paths `PID-3[*].1` (router.maplang.paths), for_each `OBR/OBX`.
* xml:   XPath 1.0 relative to the scope node, with the mapping's `namespaces`; for_each an XPath
         selecting elements (e.g. `//ZAP`, `s:Response`); values are text of elements/attributes.
* json:  dotted paths with [n] or [*] (`entry[*].resource.id`); for_each a path to a list.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ConfigError, InputError
from ..formats import hl7v2
from .hl7 import Encoding, Message, V
from .paths import Hl7Path, Scope, looks_like_hl7_path, parse_hl7_path, resolve

# values from XML/JSON carry no HL7 delimiters: an encoding of control characters keeps them whole
TEXT = Encoding("\x01", "\x02", "\x03", "\x04", "\x05")


class Hl7Input:
    name = "hl7v2"

    def parse_path(self, text: str) -> Hl7Path:
        return parse_hl7_path(text)

    def is_path(self, text: str) -> bool:
        return looks_like_hl7_path(text)

    def check_for_each(self, text: str) -> list[str]:
        return [f"{seg!r} is not a segment name" for seg in text.split("/") if not (len(seg) == 3 and seg.isupper())]

    def root(self, raw: bytes) -> tuple[Scope, str]:
        if not hl7v2.is_hl7(raw):
            raise InputError("this mapping takes HL7 v2 (ER7) messages")
        return self.root_text(hl7v2.decode(raw))

    def root_text(self, text: str) -> tuple[Scope, str]:
        msg = Message(text)  # MSH-3, MSH-4, MSH-10: what the header's sender and control id hold
        return Scope(msg), f"{msg.msh_field(3)}|{msg.msh_field(4)}|{msg.msh_field(10)}"

    def iterate(self, scope: Scope, for_each: str, with_: dict[str, list[str]] | None) -> list[Scope]:
        scopes = [scope]
        for seg in for_each.split("/"):
            w = (with_ or {}).get(seg)
            scopes = [c for s in scopes for c in s.iterate(seg, tuple(w) if w is not None else None)]
        return scopes

    def resolve(self, path: Any, scope: Scope) -> list[V]:
        return resolve(path, scope)

    def within(self, inner: Scope, outer: Scope) -> bool:
        return inner.within(outer)

    def depth(self, scope: Scope) -> int:
        return len(scope.levels)


@dataclass(frozen=True)
class _Node:
    """An XML or JSON scope: the node, and its ancestors (for refs to the nearest)."""

    node: Any
    chain: tuple[int, ...]  # ids of the ancestors and itself


class XmlInput:
    name = "xml"

    def __init__(self, namespaces: dict[str, str]) -> None:
        self.namespaces = namespaces

    def _compile(self, text: str) -> Any:
        from lxml import etree

        try:
            return etree.XPath(text, namespaces=self.namespaces)
        except etree.XPathSyntaxError as exc:
            raise ConfigError(f"bad XPath {text!r}: {exc}") from None

    def parse_path(self, text: str) -> Any:
        return self._compile(text)

    def is_path(self, text: str) -> bool:
        return text.startswith(("/", "./", "@", "..")) or ":" in text.split("/")[0]

    def check_for_each(self, text: str) -> list[str]:
        try:
            self._compile(text)
        except ConfigError as exc:
            return [str(exc.problems[0].message)]
        return []

    def root(self, raw: bytes) -> tuple[_Node, str]:
        from lxml import etree

        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        try:
            doc = etree.fromstring(raw, parser)
        except etree.XMLSyntaxError as exc:
            raise InputError(f"not well-formed XML: {exc}") from None
        return _Node(doc, (id(doc),)), ""

    def iterate(self, scope: _Node, for_each: str, with_: Any) -> list[_Node]:
        nodes = self._compile(for_each)(scope.node)
        return [_Node(n, (*scope.chain, id(n))) for n in (nodes if isinstance(nodes, list) else [])
                if hasattr(n, "tag")]

    def resolve(self, path: Any, scope: _Node) -> list[V]:
        got = path(scope.node)
        items = got if isinstance(got, list) else [got]
        out = []
        for x in items:
            text = "".join(x.itertext()) if hasattr(x, "itertext") else str(x)
            text = text.strip()
            if text:
                out.append(V(text, TEXT))
        return out

    def within(self, inner: _Node, outer: _Node) -> bool:
        return outer.chain[-1] in inner.chain

    def depth(self, scope: _Node) -> int:
        return len(scope.chain)


_JSON_STEP = re.compile(r"^([A-Za-z_$][\w$-]*)?((?:\[(?:\d+|\*)\])*)$")


class JsonInput:
    name = "json"

    def parse_path(self, text: str) -> list[tuple[str | None, list[int | None]]]:
        steps = []
        for part in text.split("."):
            m = _JSON_STEP.match(part)
            if not m or (not m.group(1) and not m.group(2)):
                raise ConfigError(f"bad JSON path {text!r} (expected e.g. a.b[0].c or entry[*].resource)")
            idx = [None if i == "*" else int(i) for i in re.findall(r"\[(\d+|\*)\]", m.group(2) or "")]
            steps.append((m.group(1), idx))
        return steps

    def is_path(self, text: str) -> bool:
        try:
            self.parse_path(text)
        except ConfigError:
            return False
        return "." in text or "[" in text

    def check_for_each(self, text: str) -> list[str]:
        try:
            self.parse_path(text)
        except ConfigError as exc:
            return [str(exc.problems[0].message)]
        return []

    def root(self, raw: bytes) -> tuple[_Node, str]:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc}") from None
        return _Node(doc, (0,)), ""

    def _walk(self, steps: Any, value: Any) -> list[Any]:
        cur = [value]
        for name, idxs in steps:
            nxt = []
            for v in cur:
                x = v.get(name) if (name is not None and isinstance(v, dict)) else (v if name is None else None)
                if x is None:
                    continue
                xs = [x]
                for i in idxs:
                    ys = []
                    for y in xs:
                        if isinstance(y, list):
                            ys.extend(y if i is None else y[i:i + 1])
                    xs = ys
                nxt.extend(xs)
            cur = nxt
        return cur

    def iterate(self, scope: _Node, for_each: str, with_: Any) -> list[_Node]:
        items = self._walk(self.parse_path(for_each), scope.node)
        flat = [y for x in items for y in (x if isinstance(x, list) else [x])]
        return [_Node(x, (*scope.chain, id(x) if isinstance(x, (dict, list)) else hash((scope.chain[-1], k))))
                for k, x in enumerate(flat)]

    def resolve(self, path: Any, scope: _Node) -> list[V]:
        out = []
        for x in self._walk(path, scope.node):
            if isinstance(x, (dict, list)):
                x = orjson.dumps(x).decode()
            elif isinstance(x, bool):
                x = "true" if x else "false"
            text = str(x)
            if text:
                out.append(V(text, TEXT))
        return out

    def within(self, inner: _Node, outer: _Node) -> bool:
        return inner.chain[:len(outer.chain)] == outer.chain

    def depth(self, scope: _Node) -> int:
        return len(scope.chain)


def make_input(kind: str, namespaces: dict[str, str]) -> Hl7Input | XmlInput | JsonInput:
    if kind == "xml":
        return XmlInput(namespaces)
    if kind == "json":
        return JsonInput()
    return Hl7Input()


def getter(inp: Any, scope: Any, cache: dict[str, Any]) -> Callable[[str], Any]:
    """A get(path) -> first value's text, for conditions (paths parsed once, cached)."""
    def get(text: str) -> Any:
        p = cache.get(text)
        if p is None:
            p = cache[text] = inp.parse_path(text)
        vals = inp.resolve(p, scope)
        return str(vals[0]) if vals else None
    return get
