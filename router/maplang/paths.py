"""Source paths, parsed once at load.

HL7 v2:  SEG[-occ]-FIELD[rep][.COMP[.SUB]]
  PID-3          first repetition of PID-3 (first PID in scope)
  PID-3[*]       every repetition;  PID-3[2] the second
  PID-3[*].1     component 1 of every repetition; PID-5.1.1 subcomponent
  NTE[*]-3       field 3 of every NTE segment in scope; OBX[2]-5 the second OBX in scope
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError
from .hl7 import Message, Segment, V

HL7_PATH = re.compile(r"^([A-Z][A-Z0-9]{2})(?:\[(\*|\d+)\])?-(\d+)(?:\[(\*|\d+)\])?(?:\.(\d+))?(?:\.(\d+))?$")


def looks_like_hl7_path(text: str) -> bool:
    return bool(HL7_PATH.match(text))


@dataclass(frozen=True)
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
    """For each segment, the index of the segment it is ATTACHED to, or None."""
    out: list[int | None] = []
    owner: int | None = None
    for i, seg in enumerate(msg.segments):
        if owner is not None and seg.name in ATTACHED.get(msg.segments[owner].name, ()):
            out.append(owner)
            continue
        out.append(None)
        owner = i if seg.name in ATTACHED else None
    return out


@dataclass(frozen=True)
class Level:
    start: int  # the anchor segment
    end: int  # exclusive
    siblings: tuple[tuple[int, int], ...]  # ranges of every group made by the same iteration


class Scope:
    """Where lookups happen: the message, narrowed by `for_each` iterations (innermost last).

    Looking up segment S: the innermost group first (its anchor if that is an S, else its S
    segments); then each enclosing group, skipping what lies in the groups of the iteration below
    it (a sibling's NTE is never ours) and segments attached to another segment; a segment kind
    that belongs to a group (NTE in an OBX group) is never looked for outside it; finally the
    message outside the top iteration's groups."""

    __slots__ = ("msg", "levels", "owner", "_found", "resolved")

    def __init__(self, msg: Message, levels: tuple[Level, ...] = (), owner: list[int | None] | None = None) -> None:
        self.msg, self.levels = msg, levels
        self.owner = owner if owner is not None else owners(msg)
        self._found: dict[str, list[Segment]] = {}
        self.resolved: dict[Hl7Path, list[V]] = {}  # memo of resolve() in this scope

    def segments(self, name: str) -> list[Segment]:
        found = self._found.get(name)
        if found is None:
            found = self._found[name] = self._segments(name)
        return found

    def _segments(self, name: str) -> list[Segment]:
        segs = self.msg.segments
        candidates = self.msg.by_name.get(name, ())
        if not candidates:
            return []
        levels, owner = self.levels, self.owner
        for k in range(len(levels) - 1, -1, -1):
            lv = levels[k]
            anchor = segs[lv.start].name
            if anchor == name:
                return [segs[lv.start]]
            inner = levels[k + 1].siblings if k + 1 < len(levels) else ()
            found = [segs[i] for i in candidates if lv.start < i < lv.end and owner[i] in (None, lv.start)
                     and not any(a <= i < b for a, b in inner)]
            if found or name in ATTACHED.get(anchor, ()):
                return found
        top = levels[0].siblings if levels else ()
        return [segs[i] for i in candidates if owner[i] is None and not any(a <= i < b for a, b in top)]

    def iterate(self, name: str, with_: tuple[str, ...] | None = None) -> list[Scope]:
        """A child scope per `name` segment in the innermost group (see ATTACHED and UNTIL;
        `with_` overrides which following segments join a group)."""
        segs = self.msg.segments
        start, end = (self.levels[-1].start, self.levels[-1].end) if self.levels else (-1, len(segs))
        idx = [i for i in self.msg.by_name.get(name, ()) if start < i < end]
        until = UNTIL.get(name) if with_ is None else None
        members = with_ if with_ is not None else ATTACHED.get(name, ())
        ranges = []
        for i in idx:
            j = i + 1
            while j < end and (segs[j].name not in until if until is not None else segs[j].name in members):
                j += 1
            ranges.append((i, j))
        sib = tuple(ranges)
        return [Scope(self.msg, (*self.levels, Level(a, b, sib)), self.owner) for a, b in ranges]

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
    got = scope.resolved.get(path)
    if got is None:
        got = scope.resolved[path] = _resolve(path, scope)
    return got


def _resolve(path: Hl7Path, scope: Scope) -> list[V]:
    segs = scope.segments(path.segment)
    if not segs:
        return []
    if path.seg_occ is None:
        segs = segs[:1]
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
