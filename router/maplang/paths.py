"""Source paths, parsed once at load.

HL7 v2:  SEG[-occ]-FIELD[rep][.COMP[.SUB]]
  PID-3          first repetition of PID-3 (first PID in scope)
  PID-3[*]       every repetition;  PID-3[2] the second
  PID-3[*].1     component 1 of every repetition; PID-5.1.1 subcomponent
  NTE[*]-3       field 3 of every NTE segment in scope; OBX[2]-5 the second OBX in scope
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import ConfigError
from .hl7 import Encoding, Message, Segment, V

HL7_PATH = re.compile(r"^([A-Z][A-Z0-9]{2})(?:\[(\*|\d+)\])?-(\d+)(?:\[(\*|\d+)\])?(?:\.(\d+))?(?:\.(\d+))?$")


def looks_like_hl7_path(text: str) -> bool:
    return bool(HL7_PATH.match(text))


@dataclass(frozen=True, eq=False)  # identity hash: paths are memo keys on the hot path
class Hl7Path:
    text: str
    segment: str
    seg_occ: int | None  # None: first; 0: every segment ([*]); n: the n-th (1-based)
    field: int
    rep: int | None  # None: first; 0: every ([*]); n: n-th
    comp: int | None
    sub: int | None

    @property
    def many(self) -> bool:
        return self.seg_occ == 0 or self.rep == 0


def parse_hl7_path(text: str) -> Hl7Path:
    m = HL7_PATH.match(text.strip())
    if not m:
        raise ConfigError(f"not an HL7 path: {text!r} (expected e.g. PID-3, PID-3[*].1, OBX-5, NTE[*]-3)")
    seg, occ, fld, rep, comp, sub = m.groups()

    def idx(x: str | None) -> int | None:
        return None if x is None else 0 if x == "*" else int(x)

    return Hl7Path(text, seg, idx(occ), int(fld), idx(rep), int(comp) if comp else None, int(sub) if sub else None)


# Segments that directly follow and belong to another (NTE after OBX is that OBX's note).
ATTACHED: dict[str, tuple[str, ...]] = {
    "PID": ("PD1", "NTE"), "OBR": ("NTE",), "OBX": ("NTE",), "ORC": ("NTE",), "SPM": ("NTE",),
    "IN1": ("IN2", "IN3"), "PR1": ("ROL",), "RXA": ("RXR",), "RXO": ("NTE",), "RXE": ("NTE",),
}
# Iterating these makes a group that runs to the next segment of the same name (or an UNTIL one);
# iterating any other segment makes a group of it and its ATTACHED run.
UNTIL: dict[str, tuple[str, ...]] = {"OBR": ("ORC", "OBR"), "ORC": ("ORC",), "PID": ("PID", "MSH"),
                                     "SPM": ("SPM", "OBR", "ORC")}


def owners(msg: Message) -> list[int | None]:
    """For each segment, the index of the segment it is ATTACHED to, or None (computed once per
    message, when a lookup of an attachable segment needs it)."""
    out = msg.owner
    if out is not None:
        return out
    segs = msg.segments
    out: list[int | None] = [None] * len(segs)
    owner = 0
    members: tuple[str, ...] = ()  # what attaches to the current owner (segment `owner`)
    attached = ATTACHED.get
    for i, seg in enumerate(segs):
        name = seg.name
        if name in members:
            out[i] = owner
            continue
        got = attached(name)
        if got is None:
            members = ()
        else:
            owner, members = i, got
    msg.owner = out
    return out


# segment kinds that can be attached to another: only their lookups need owners()
ATTACHABLE = frozenset(name for names in ATTACHED.values() for name in names)
_NOWHERE: frozenset[int] = frozenset()
_UNSEEN: list[str] = []  # first(): not looked up yet (None is "no such segment")


class Level(NamedTuple):
    start: int  # the anchor segment
    end: int  # exclusive
    siblings: tuple[tuple[int, int], ...]  # ranges of every group made by the same iteration
    covered: frozenset[int] = _NOWHERE  # the segment indexes within those ranges
    name: str = ""  # the anchor's segment name
    attached: tuple[str, ...] = ()  # ATTACHED to it: never looked for outside the group
    run: bool = False  # the group is its anchor and the run of ATTACHED segments after it, no more


class Scope:
    """Where lookups happen: the message, narrowed by `for_each` iterations (innermost last).

    Looking up segment S: the innermost group first (its anchor if that is an S, else its S
    segments); then each enclosing group, skipping what lies in the groups of the iteration below
    it (a sibling's NTE is never ours) and segments attached to another segment; a segment kind
    that belongs to a group (NTE in an OBX group) is never looked for outside it; finally the
    message outside the top iteration's groups.

    Lookups, resolved paths and child scopes are memoised on the scope (they are pure functions of
    the message and the levels), so rules iterating the same groups share that work. What a lookup
    finds outside a group is the same for every group of that iteration: it is memoised in the
    enclosing scope's `_outside`, which the children reach through `_above` (the `_outside` of
    every enclosing scope, outermost first) - dicts, not the scopes, so no reference cycle keeps a
    message's scopes from being freed as soon as the mapping is done with them."""

    __slots__ = ("msg", "levels", "fields", "_above", "_found", "_first", "_anchors", "_outside", "_resolved",
                 "_children")

    def __init__(self, msg: Message, levels: tuple[Level, ...] = (), owner: list[int | None] | None = None,
                 above: tuple[dict[tuple[str, frozenset[int]], list[Segment]], ...] | None = None,
                 anchors: dict[str, list[Segment]] | None = None) -> None:
        self.msg, self.levels = msg, levels
        # the fields of the innermost anchor (what first() of its name gives), None at the top
        self.fields: list[str] | None = msg.segments[levels[-1].start].fields if levels else None
        if owner is not None and msg.owner is None:
            msg.owner = owner
        if above is None:  # a scope made by hand: enclosing groups without memos of their own
            above = tuple({} for _ in levels)
        self._above = above
        # anchors of the enclosing groups that a lookup of their name finds (what _segments would
        # give, known when the scope is made: see iterate)
        if anchors is None:  # the top: the message's only MSH is what every lookup of MSH finds
            anchors = {"MSH": msg.segments[:1]} if not levels and msg.by_name.get("MSH") == [0] else {}
        self._anchors: dict[str, list[Segment]] = anchors
        self._found: dict[str, list[Segment]] = dict(self._anchors)
        self._first: dict[str, list[str] | None] = {}
        self._outside: dict[tuple[str, frozenset[int]], list[Segment]] | None = None
        self._resolved: dict[Hl7Path, list[V]] | None = None
        self._children: dict[tuple[str, tuple[str, ...] | None], list[Scope]] | None = None

    @classmethod
    def _child(cls, msg: Message, levels: tuple[Level, ...], fields: list[str],
               above: tuple[dict[tuple[str, frozenset[int]], list[Segment]], ...],
               anchors: dict[str, list[Segment]]) -> Scope:
        """What __init__ makes of a group iterate() found, without its checks (hot path)."""
        sc = object.__new__(cls)
        sc.msg, sc.levels, sc.fields, sc._above, sc._anchors = msg, levels, fields, above, anchors
        sc._found, sc._first = dict(anchors), {}
        sc._outside = sc._resolved = sc._children = None
        return sc

    @property
    def owner(self) -> list[int | None]:
        return owners(self.msg)

    @property
    def resolved(self) -> dict[Hl7Path, list[V]]:
        """Memo of resolve() in this scope."""
        got = self._resolved
        if got is None:
            got = self._resolved = {}
        return got

    def segments(self, name: str) -> list[Segment]:
        found = self._found.get(name)
        if found is None:
            found = self._found[name] = self._segments(name)
        return found

    def first(self, name: str) -> list[str] | None:
        """The fields of the `name` segment a path without [n] reads (PID-3), or None: see nearest."""
        got = self._first.get(name, _UNSEEN)
        if got is _UNSEEN:
            known = self._anchors.get(name)
            if known is not None:
                got = known[0].fields
            else:
                seg = self.nearest(name)
                got = seg.fields if seg is not None else None
            self._first[name] = got
        return got  # type: ignore[return-value]

    def nearest(self, name: str) -> Segment | None:
        """The `name` segment a path without [n] reads: the first in scope, except that of those
        found outside the innermost group, the nearest one before its anchor is taken (the ORC
        of an OBR group is the ORC just before that OBR, not the message's first ORC)."""
        found = self._found.get(name)
        if found is None:
            found = self._found[name] = self._segments(name)
        if not found:
            return None
        seg = found[0]
        if len(found) == 1 or not self.levels:
            return seg
        a = self.levels[-1].start
        if seg.index > a:  # none before the anchor (what lies in the group follows it)
            return seg
        for s in found:
            if s.index >= a:
                break
            seg = s
        return seg

    def _segments(self, name: str) -> list[Segment]:
        msg = self.msg
        candidates = msg.by_name.get(name)  # ascending segment indexes
        if not candidates:
            return []
        segs = msg.segments
        attachable = name in ATTACHABLE  # then owners() says which of them are free (when needed)
        owner: list[int | None] | None = None
        levels = self.levels
        inner: frozenset[int] = _NOWHERE
        found: list[Segment]
        pending = None  # memos of the outside lookups this one has been through
        k = len(levels)
        while k:
            k -= 1
            lv = levels[k]
            start = lv.start
            if segs[start].name == name:
                found = [segs[start]]
                break
            end = lv.end
            found = []
            if lv.run:  # what follows the anchor in the group is attached to it: no owners needed
                if name in lv.attached:
                    for i in range(start + 1, end):
                        if segs[i].name == name and i not in inner:
                            found.append(segs[i])
                    break
            else:
                if attachable and owner is None:
                    owner = owners(msg)
                if len(candidates) <= 8:
                    for i in candidates:
                        if i <= start or i in inner:
                            continue
                        if i >= end:
                            break
                        if owner is None or owner[i] is None or owner[i] == start:
                            found.append(segs[i])
                else:  # a large group (thousands of OBX/NTE): start at the group, not at the first
                    j, n = bisect_right(candidates, start), len(candidates)
                    while j < n:
                        i = candidates[j]
                        j += 1
                        if i >= end:
                            break
                        if i not in inner and (owner is None or owner[i] is None or owner[i] == start):
                            found.append(segs[i])
            if found or name in lv.attached:
                break
            inner = lv.covered  # what lies outside this group: the same for all its siblings
            key, memo = (name, inner), self._above[k]
            got = memo.get(key)
            if got is not None:
                found = got
                break
            if pending is None:
                pending = [(memo, key)]
            else:
                pending.append((memo, key))
        else:
            if attachable and owner is None:
                owner = owners(msg)
            if owner is None and not inner:
                found = [segs[i] for i in candidates]
            else:
                found = []
                for i in candidates:
                    if i not in inner and (owner is None or owner[i] is None):
                        found.append(segs[i])
        if pending is not None:
            for memo, key in pending:
                memo[key] = found
        return found

    def iterate(self, name: str, with_: tuple[str, ...] | None = None) -> list[Scope]:
        """A child scope per `name` segment in the innermost group (see ATTACHED and UNTIL;
        `with_` overrides which following segments join a group)."""
        key = (name, with_)
        children = self._children
        if children is None:
            children = self._children = {}
        else:
            got = children.get(key)
            if got is not None:
                return got
        segs = self.msg.segments
        start, end = (self.levels[-1].start, self.levels[-1].end) if self.levels else (-1, len(segs))
        until = UNTIL.get(name) if with_ is None else None
        members = with_ if with_ is not None else ATTACHED.get(name, ())
        ranges = []
        for i in self.msg.by_name.get(name, ()):
            if not start < i < end:
                continue
            j = i + 1
            if until is not None:
                while j < end and segs[j].name not in until:
                    j += 1
            else:
                while j < end and segs[j].name in members:
                    j += 1
            ranges.append((i, j))
        sib = tuple(ranges)
        cov = frozenset(range(*ranges[0])) if len(ranges) == 1 else frozenset(
            [k for a, b in ranges for k in range(a, b)])
        msg, levels = self.msg, self.levels
        if self._outside is None:
            self._outside = {}
        above = (*self._above, self._outside)
        attached = ATTACHED.get(name, ())
        # enclosing anchors the new groups cannot hold stay what a lookup of their name finds
        by_name = msg.by_name
        inherited = {k: v for k, v in self._anchors.items()
                     if k not in attached and (len(by_name[k]) == 1 or (
                         k in until if until is not None else k not in members and k != name))}
        run = until is None and with_ is None
        child = Scope._child
        got = children[key] = [child(msg, (*levels, Level(a, b, sib, cov, name, attached, run)), segs[a].fields,
                                     above, {**inherited, name: [segs[a]]})
                               for a, b in ranges]
        return got

    def descend(self, steps: tuple[tuple[str, tuple[str, ...] | None], ...]) -> list[Scope]:
        """The scopes of a for_each, as (segment, with) steps: OBR/OBX is (("OBR", None), ("OBX",
        None)); memoised, so rules with the same for_each share them."""
        children = self._children
        if children is None:
            children = self._children = {}
        else:
            got = children.get(steps)  # (never a key of iterate(): those are (name, with))
            if got is not None:
                return got
        scopes = [self]
        for name, with_ in steps:
            scopes = [c for s in scopes for c in s.iterate(name, with_)]
        children[steps] = scopes
        return scopes

    @property
    def anchor(self) -> int | None:
        return self.levels[-1].start if self.levels else None

    def within(self, other: Scope) -> bool:
        """True when this scope's innermost anchor lies within other's innermost group."""
        if not other.levels:
            return True
        a = self.anchor
        lv = other.levels[-1]
        return a is not None and lv.start <= a < lv.end


def resolve(path: Hl7Path, scope: Scope) -> list[V]:
    """The values at `path` in `scope` (memoised per scope: fields share paths)."""
    memo = scope._resolved
    if memo is None:
        memo = scope._resolved = {}
    else:
        got = memo.get(path)
        if got is not None:
            return got
    got = memo[path] = _resolve(path, scope)
    return got


def _resolve(path: Hl7Path, scope: Scope) -> list[V]:
    if path.seg_occ is None:
        fields = scope.first(path.segment)
        if fields is None:
            return []
        if path.rep is None:  # the common case: one value, no V per repetition
            v = first_value(path, fields, scope.msg.enc)
            return [] if v is None else [v]
        segs = [scope.nearest(path.segment)]
    else:
        segs = scope.segments(path.segment)
        if not segs:
            return []
    if path.seg_occ is None:
        pass
    elif path.seg_occ > 0:
        segs = segs[path.seg_occ - 1:path.seg_occ]
    out: list[V] = []
    msg = scope.msg
    for seg in segs:
        reps = msg.values(seg, path.field)
        if path.rep is None:
            reps = reps[:1]
        elif path.rep > 0:
            reps = reps[path.rep - 1:path.rep]
        for v in reps:
            if path.comp is not None:
                v = v.c(path.comp)
                if path.sub is not None:
                    v = v.s(path.sub)
            if v:
                out.append(v)
    return out


def first_value(path: Hl7Path, fields: list[str], enc: Encoding) -> V | None:
    """The value of a path without [*] or [n] in one segment's fields: its first repetition
    (component, subcomponent), or None when empty or HL7 null - what _resolve gives, without
    a V per repetition."""
    f = path.field
    raw = fields[f] if f < len(fields) else ""
    if not raw:
        return None
    if not ((f == 1 or f == 2) and path.segment == "MSH"):  # MSH-1, MSH-2 hold the separators: not split
        rs = enc.repetition
        if rs in raw:
            raw = raw[:raw.index(rs)]
    level = 0
    comp = path.comp
    if comp is not None:
        level = 1
        cs = enc.component
        if cs in raw:
            parts = raw.split(cs)
            raw = parts[comp - 1] if comp <= len(parts) else ""
        elif comp != 1:
            raw = ""
        sub = path.sub
        if sub is not None:
            level = 2
            ss = enc.subcomponent
            if ss in raw:
                parts = raw.split(ss)
                raw = parts[sub - 1] if sub <= len(parts) else ""
            elif sub != 1:
                raw = ""
    if not raw or raw == '""':
        return None
    return V(raw, enc, level)
