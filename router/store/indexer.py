"""The search-index rows of one resource: [(kind, row)], kind in token|string|date|reference|quantity.

Runs on every write (Store.put / the batch writer replace a resource's rows with these), so it is a
hand-written walker over the parameter paths of router/store/search_params.py, compiled once per
resource type into small closures: no FHIRPath, no model classes. Measured (benchmarks/search.py
prints it): a typical lab Observation (code, category, status, subject, effectiveDateTime,
valueQuantity, identifier, basedOn, specimen, performer) in 15-30 µs, 35,000-68,000 a second on
one core of a shared 2-core VM.

Rows (besides ``param``, the parameter's name; ``resource_type`` and ``id`` are added by the store):

* token      ``system``, ``code``. Coding and each CodeableConcept.coding (system|code),
             Identifier (system|value), code and string elements (no system), booleans
             ("true"/"false"). The system is None when the element has none.
* string     ``value`` (lower-cased and accent-folded, ``fold``: "Ёлкин" and "ёлкин" are "елкин",
             "José" is "jose"; Cyrillic й is kept), ``exact`` (the string as written, for :exact).
             Both cut to 256 characters.
* date       ``start``, ``end``: the half-open range [start, end) in epoch seconds that the value
             covers at its precision: "2024" is the whole year, "2024-03-05" the whole day,
             "2024-03-05T10:15:00Z" one second, "...:00.120Z" one millisecond. A Period is
             [start of its start, end of its end); a missing start or end is open (OPEN_START,
             OPEN_END). Timezones: a value with an offset is converted to UTC; a value without
             one (dates, and dateTimes that omit the zone) is taken as UTC. ``is_min`` marks the
             one row of this parameter of this resource with the lowest start, ``is_max`` the one
             with the highest end: the sort keys of ``_sort=date`` (earliest start) and
             ``_sort=-date`` (latest end).
* reference  ``target_type``, ``target_id`` from "Type/id", "Type/id/_history/n" or an absolute
             URL (the last two segments: a reference to another server with the same type and
             id matches too). Contained (#id), urn: and conditional references are not indexed.
* quantity   ``value`` (float), ``system``, ``code`` (Quantity.code, or Quantity.unit when there
             is no code, cut to 64).

Values that cannot be read (a malformed date, a non-numeric quantity) are skipped, never an error:
validation is not the indexer's job and a write must not fail on it.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any

from .search_params import SearchParam, indexed

Row = dict[str, Any]
Entry = tuple[str, Row]

#: the ends of an open Period (no start / no end), in epoch seconds: far outside years 0001-9999
OPEN_START = -1e12
OPEN_END = 1e12

_UTC = timezone.utc
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_DAY = (date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86400.0

# the types a choice element name[x] may take, per kind of parameter
_CHOICES: dict[str, tuple[str, ...]] = {
    "date": ("DateTime", "Period", "Instant", "Date", "Timing"),
    "token": ("CodeableConcept", "Coding", "Code", "String", "Boolean", "Identifier"),
    "string": ("String",),
    "reference": ("Reference",),
    "quantity": ("Quantity",),
}


# ---------------------------------------------------------------------------------------- values
def fold(text: str) -> str:
    """A string as the index keeps it: lower case, accents removed (Cyrillic й kept, ё is е)."""
    s = text.lower()
    if s.isascii():
        return s
    s = unicodedata.normalize("NFC", s).replace("й", "\x00")
    s = "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c))
    return s.replace("\x00", "й")


def _day(y: int, m: int, d: int) -> float:
    return (date(y, m, d).toordinal() - _EPOCH_ORDINAL) * 86400.0


def _next_month(y: int, m: int) -> float:
    if m == 12:
        return _day(y + 1, 1, 1) if y < 9999 else _MAX_DAY
    return _day(y, m + 1, 1)


def date_range(value: str) -> tuple[float, float] | None:
    """[start, end) in epoch seconds covered by a FHIR date, dateTime or instant at its precision;
    None when it is not one. No zone means UTC."""
    n = len(value)
    try:
        if n == 10:
            if value[4] != "-" or value[7] != "-":
                return None
            start = _day(int(value[:4]), int(value[5:7]), int(value[8:]))
            return start, start + 86400.0
        if n == 4:
            y = int(value)
            return _day(y, 1, 1), (_day(y + 1, 1, 1) if y < 9999 else _MAX_DAY)
        if n == 7:
            if value[4] != "-":
                return None
            y, m = int(value[:4]), int(value[5:])
            return _day(y, m, 1), _next_month(y, m)
        if n < 13 or value[10] != "T":
            return None
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_UTC)
    start = dt.timestamp()
    # the precision: the time part up to its zone designator
    t = value[11:]
    cut = len(t)
    for i in range(2, len(t)):
        ch = t[i]
        if ch == "Z" or ch == "+" or ch == "-":
            cut = i
            break
    if cut <= 2:
        width = 3600.0
    elif cut <= 5:
        width = 60.0
    elif cut <= 9:
        width = 1.0
    else:  # fractions of a second: rounded to the microsecond, so .999 + .001 is the next second exactly
        return start, round(start + 10.0 ** -min(cut - 9, 6), 6)
    return start, start + width


def _period(p: dict[str, Any]) -> tuple[float, float] | None:
    s, e = p.get("start"), p.get("end")
    lo = date_range(s) if isinstance(s, str) else None
    hi = date_range(e) if isinstance(e, str) else None
    if lo is None and hi is None:
        return None
    start = lo[0] if lo else OPEN_START
    end = hi[1] if hi else OPEN_END
    return start, max(start, end)


def parse_reference(ref: str) -> tuple[str, str] | None:
    """(type, id) of a literal reference; None for contained, urn: and conditional references."""
    if not ref or ref[0] == "#" or ref.startswith("urn:") or "?" in ref:
        return None
    rtype, _, rid = ref.partition("/")
    if rid and "/" not in rid:  # the common "Type/id"
        if rtype[:1].isupper() and len(rtype) <= 64 and len(rid) <= 64:
            return rtype, rid
        return None
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    rtype, rid = parts[-2], parts[-1]
    if not rid or not rtype or not rtype[0].isupper() or len(rtype) > 64 or len(rid) > 64:
        return None
    return rtype, rid


# ---------------------------------------------------------------------------------------- paths
Getter = Callable[[dict[str, Any]], list[Any]]


def _compile_path(path: str, kind: str) -> Getter:
    steps: list[tuple[str, ...]] = []
    for part in path.split("."):
        if part.endswith("[x]"):
            stem = part[:-3]
            steps.append(tuple(stem + suffix for suffix in _CHOICES[kind]))
        else:
            steps.append((part,))
    if len(steps) == 1 and len(steps[0]) == 1:
        key = steps[0][0]

        def one(resource: dict[str, Any]) -> list[Any]:
            x = resource.get(key)
            if x is None:
                return []
            return x if type(x) is list else [x]
        return one

    frozen = tuple(steps)

    def walk(resource: dict[str, Any]) -> list[Any]:
        cur: list[Any] = [resource]
        for keys in frozen:
            nxt: list[Any] = []
            for v in cur:
                if type(v) is not dict:
                    continue
                for k in keys:
                    x = v.get(k)
                    if x is None:
                        continue
                    if type(x) is list:
                        nxt.extend(x)
                    else:
                        nxt.append(x)
            if not nxt:
                return nxt
            cur = nxt
        return cur
    return walk


def getter(param: SearchParam) -> Getter:
    """The raw element values a parameter indexes (lists flattened)."""
    gets = [_compile_path(p, param.type) for p in param.paths]
    if len(gets) == 1:
        return gets[0]

    def many(resource: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for g in gets:
            out.extend(g(resource))
        return out
    return many


# ---------------------------------------------------------------------------------------- per kind
def token_values(values: list[Any]) -> list[tuple[str | None, str]]:
    """(system, code) pairs of token elements."""
    out: list[tuple[str | None, str]] = []
    for v in values:
        tv = type(v)
        if tv is str:
            if v:
                out.append((None, v[:256]))
        elif tv is dict:
            coding = v.get("coding")
            if coding is not None:  # CodeableConcept
                for c in coding if type(coding) is list else ():
                    if type(c) is dict:
                        code = c.get("code")
                        if type(code) is str and code:
                            s = c.get("system")
                            out.append((s[:256] if type(s) is str and s else None, code[:256]))
                continue
            code = v.get("value")  # Identifier
            if type(code) is not str:
                code = v.get("code")  # Coding
            if type(code) is str and code:
                s = v.get("system")
                out.append((s[:256] if type(s) is str and s else None, code[:256]))
        elif tv is bool:
            out.append((None, "true" if v else "false"))
    return out


def date_values(values: list[Any]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for v in values:
        if type(v) is str:
            r = date_range(v)
            if r is not None:
                out.append(r)
        elif type(v) is dict:
            if "start" in v or "end" in v:  # Period
                r = _period(v)
                if r is not None:
                    out.append(r)
            elif "event" in v or "repeat" in v:  # Timing: its events, else its bounds
                events = [date_range(e) for e in v.get("event") or () if type(e) is str]
                got = [e for e in events if e is not None]
                if not got:
                    bounds = (v.get("repeat") or {}).get("boundsPeriod")
                    r = _period(bounds) if type(bounds) is dict else None
                    got = [r] if r is not None else []
                out.extend(got)
    return out


def _token_rows(name: str, values: list[Any]) -> list[Entry]:
    pairs = token_values(values)
    if len(pairs) > 1:
        pairs = list(dict.fromkeys(pairs))
    return [("token", {"param": name, "system": s, "code": c}) for s, c in pairs]


def _string_rows(name: str, values: list[Any]) -> list[Entry]:
    seen: set[str] = set()
    out: list[Entry] = []
    for v in values:
        if type(v) is str and v and v not in seen:
            seen.add(v)
            out.append(("string", {"param": name, "value": fold(v)[:256], "exact": v[:256]}))
    return out


def _date_rows(name: str, values: list[Any]) -> list[Entry]:
    ranges = date_values(values)
    if not ranges:
        return []
    if len(ranges) == 1:
        s, e = ranges[0]
        return [("date", {"param": name, "start": s, "end": e, "is_min": True, "is_max": True})]
    ranges = list(dict.fromkeys(ranges))
    lo = min(range(len(ranges)), key=lambda i: ranges[i][0])
    hi = max(range(len(ranges)), key=lambda i: ranges[i][1])
    return [("date", {"param": name, "start": s, "end": e, "is_min": i == lo, "is_max": i == hi})
            for i, (s, e) in enumerate(ranges)]


def _reference_rows(name: str, values: list[Any]) -> list[Entry]:
    out: list[Entry] = []
    seen: set[tuple[str, str]] = set()
    for v in values:
        if type(v) is dict:
            ref = v.get("reference")
            if type(ref) is str:
                tr = parse_reference(ref)
                if tr is not None and tr not in seen:
                    seen.add(tr)
                    out.append(("reference", {"param": name, "target_type": tr[0], "target_id": tr[1]}))
    return out


def _quantity_rows(name: str, values: list[Any]) -> list[Entry]:
    out: list[Entry] = []
    for v in values:
        if type(v) is dict:
            x = v.get("value")
            if (type(x) is float or type(x) is int) and x == x:
                s, c = v.get("system"), v.get("code")
                if type(c) is not str or not c:
                    c = v.get("unit")
                out.append(("quantity", {"param": name, "value": float(x),
                                         "system": s[:256] if type(s) is str and s else None,
                                         "code": c[:64] if type(c) is str and c else None}))
    return out


_ROWS: dict[str, Callable[[str, list[Any]], list[Entry]]] = {
    "token": _token_rows, "string": _string_rows, "date": _date_rows, "reference": _reference_rows,
    "quantity": _quantity_rows,
}

Plan = list[tuple[str, Getter, Callable[[str, list[Any]], list[Entry]]]]
_PLANS: dict[str, Plan] = {}


def plan(resource_type: str) -> Plan:
    """(index name, value getter, row maker) per indexed parameter of a type, compiled once."""
    found = _PLANS.get(resource_type)
    if found is None:
        found = _PLANS[resource_type] = [(p.column, getter(p), _ROWS[p.type]) for p in indexed(resource_type)]
    return found


def index_entries(resource: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rtype = resource.get("resourceType")
    if type(rtype) is not str:
        return []
    out: list[Entry] = []
    for name, get, rows in plan(rtype):
        values = get(resource)
        if values:
            out.extend(rows(name, values))
    return out
