"""FHIR search over the record store: the criteria become SQL over the index tables, the result a
searchset Bundle paged by opaque cursors.

    search(conn, "Observation", [("patient", "Patient/123"), ("code", "http://loinc.org|2345-7"),
                                 ("_sort", "-date"), ("_count", "20")],
           principal=p, base_url="https://host/fhir", read_condition=cond)

Parameters (router/store/search_params.py lists them per type):

* token      ``[system]|[code]``, ``code``, ``|code`` (no system), ``system|``; ``:not``.
             ``identifier`` values with a system are canonicalised like stored ones (СНИЛС).
* string     starts with (default), ``:contains``, ``:exact`` (case and accent sensitive); the
             others compare case- and accent-insensitively (indexer.fold).
* date       prefixes eq ne lt gt le ge sa eb ap with partial dates ("2024", "2024-03",
             "2024-03-05", "2024-03-05T10:15", seconds, fractions; no zone means UTC). The
             parameter value and each indexed value are ranges [start, end) at their precision:
             eq: the value lies within the parameter's range; ne: it does not; gt: some of the
             value is after the range; ge: some of it is at or after the range's start; lt: some
             of it is before the range; le: some of it is before the range's end; sa: it starts
             after the range; eb: it ends before the range; ap: it overlaps the range widened by
             10% of the time between now and the parameter value.
* reference  ``Type/id``, ``id``, an absolute URL (last two segments); ``:Type``.
* quantity   ``[prefix]value|system|code``, ``value||code`` (code, or unit when the stored
             quantity has no code), ``value``; eq uses the precision of the value ("5.4" is
             [5.35, 5.45)), ap is within 10%.
* any        ``:missing=true|false``.
* ``_id``, ``_lastUpdated`` (date prefixes; the instant of the current version).

A comma separates alternatives (OR), a repeated parameter adds a condition (AND); ``\\,`` ``\\|``
``\\$`` ``\\\\`` escape. Control parameters:

* ``_count``   default `page_size`, at most `max_page_size`; 0 returns the total only (so does
               ``_summary=count``).
* ``_sort``    comma-separated or repeated, ``-`` for descending: ``_id``, ``_lastUpdated`` and
               date, string, token and quantity parameters. Ascending uses a resource's lowest
               value (a date's earliest start), descending its highest (a date's latest end: a
               Period still open sorts first); a resource without a value sorts last both ways;
               the id breaks ties. Default order: ``_id``.
* ``_include`` ``Type:param[:Target]`` and ``Type:*`` for the reference parameters of the searched
               type (no :iterate).
* ``_total``   ``accurate`` counts every match on the first page (its cost grows with the number
               of matches); ``estimate`` (the default) gives the total only when it is free, i.e.
               when the first page holds every match; ``none`` never. Later pages repeat the
               first page's total.

An unknown or unsupported parameter is an InputError naming it (with a did-you-mean suggestion).
Deleted resources never match and are never included.

Access: `read_condition` is a SQLAlchemy condition over ``router.store.tables.resources`` (as
router.store.access.read_condition returns for the searched type), applied to matches and to
included resources, or a callable ``(principal, resource_type) -> condition | None`` (such as
``access.read_condition`` itself) applied per type; an included type the callable forbids is left
out.

Paging and concurrent writes: the first page fixes a snapshot time S (the time the search starts,
minus `snapshot_grace`); the next link carries S, the sort key and id of the last entry returned,
the total, and a hash of the parameters (a cursor used with other parameters is an InputError).
Guarantee: following next links returns the resources that matched the search as of S (by the
versions current at S), each exactly once, in the sort order of their values as of S, whatever is
written meanwhile:

* a resource not changed since S is found through the index as it is;
* a resource changed since S (lastUpdated > S) is evaluated on its version as of S (re-indexed
  from store_history), so an update never moves it into or out of the pages already returned.
  Its entry is that version (the snapshot), not the newer one;
* resources created after S do not appear (repeat the search, or use ``_lastUpdated=gt<S>``);
* exceptions: a resource deleted after S is no longer returned (deleted resources never match),
  access is checked on the current row, and _include'd resources are their current versions.

"As of S" is by the store's timestamps (resources.last_updated). A write is stamped when its
transaction (or the router's batch) starts, so the guarantee holds for writes that commit before
the first page is read or are stamped after S. A transaction stamped before S that commits after
the first page was read is taken as if it had been there at S: its resources are found by their
new versions, so one of them returned on the first page may come again if the write moved it past
the cursor, and one it moved before the cursor is not returned. `snapshot_grace` (seconds, default
0) moves S back to cover such transactions, at the price of serving the writes of the last
`snapshot_grace` seconds by their previous versions (an API client would not find what it just
wrote). When more than MAX_CHANGED resources of the type changed since S, the cursor is refused
(GoneError, 410): repeat the search.

Efficiency (benchmarks/search.py, PostgreSQL): each criterion is ``id IN (SELECT id FROM
idx_<kind> WHERE resource_type, param, ...)`` on the index tables' (resource_type, param, value)
indexes; the page is a keyset query (LIMIT count+1 after the cursor's key), never an OFFSET, and
the total is counted only when free or asked for. A primary sort on a date parameter joins the one
idx_date row per resource that holds its sort value (is_max: latest end, is_min: earliest start),
so PostgreSQL can walk ix_idx_date_end / ix_idx_date_q in order and stop after a page; a date
criterion on the same parameter becomes a bound of that walk ("some of it at or after X" is "its
latest end is after X"). Each search plans its statements with their values (no generic plans of
prepared statements) and without parallel workers.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import orjson
import sqlalchemy as sa

from ..errors import AccessError, GoneError, InputError, ValidationError
from ..registry import did_you_mean
from . import identity
from .indexer import date_range, fold, getter, index_entries, parse_reference
from .principal import Principal
from .search_params import SPECIAL, SearchParam, params_for
from .tables import history, idx_date, idx_quantity, idx_reference, idx_string, idx_token, resources

#: changed-since-snapshot resources a later page re-evaluates at most before refusing the cursor
MAX_CHANGED = 2000

ReadCondition = sa.ColumnElement[bool] | Callable[[Principal, str], "sa.ColumnElement[bool] | None"] | None
Row = dict[str, Any]

_TABLES = {"token": idx_token, "string": idx_string, "date": idx_date, "reference": idx_reference,
           "quantity": idx_quantity}
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_CONTROL = ("_count", "_sort", "_include", "_total", "_cursor", "_summary")
_IGNORED = ("_format", "_pretty")
_UNSUPPORTED = ("_revinclude", "_elements", "_has", "_tag", "_profile", "_security", "_text", "_content", "_list",
                "_type", "_query", "_filter", "_contained", "_containedType", "_source")
_MODIFIERS = {"token": ("not", "missing"), "string": ("exact", "contains", "missing"), "date": ("missing",),
              "quantity": ("missing",), "reference": ("missing",)}
_SORTABLE = ("date", "string", "token", "quantity")


# ---------------------------------------------------------------------------------------- values
def _split(value: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash; escapes are kept (see _unescape)."""
    out, cur, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i:i + 2])
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _prefixed(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in _PREFIXES and not value[0].isdigit():
        return value[:2], value[2:]
    return "eq", value


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _date_param(name: str, raw: str) -> tuple[str, float, float]:
    prefix, text = _prefixed(raw)
    rng = date_range(text)
    if rng is None:
        raise InputError(f"search parameter {name!r}: {raw!r} is not a date (YYYY, YYYY-MM, YYYY-MM-DD or a "
                         "dateTime, after an optional prefix eq ne lt gt le ge sa eb ap)")
    return prefix, rng[0], rng[1]


def _and(a: Any, b: Any) -> Any:
    return a and b


def _not(a: Any) -> Any:
    return not a


def _range_test(prefix: str, qs: float, qe: float, delta: float, s: Any, e: Any, AND: Any, NOT: Any) -> Any:
    """A stored range [s, e) against the parameter's [qs, qe), as SQL (columns) or Python (floats)."""
    if prefix == "eq":
        return AND(AND(s >= qs, s < qe), e <= qe)
    if prefix == "ne":
        return NOT(AND(AND(s >= qs, s < qe), e <= qe))
    if prefix == "gt":
        return e > qe
    if prefix == "ge":
        return e > qs
    if prefix == "lt":
        return s < qs
    if prefix == "le":
        return s < qe
    if prefix == "sa":
        return s >= qe
    if prefix == "eb":
        return e <= qs
    return AND(s < qe + delta, e > qs - delta)  # ap


def _point_test(prefix: str, qs: float, qe: float, delta: float, t: Any, AND: Any, NOT: Any) -> Any:
    """An instant t against [qs, qe) (for _lastUpdated)."""
    if prefix == "eq":
        return AND(t >= qs, t < qe)
    if prefix == "ne":
        return NOT(AND(t >= qs, t < qe))
    if prefix in ("gt", "sa"):
        return t >= qe
    if prefix == "ge":
        return t >= qs
    if prefix in ("lt", "eb"):
        return t < qs
    if prefix == "le":
        return t < qe
    return AND(t >= qs - delta, t < qe + delta)  # ap


def _number_test(prefix: str, x: float, lo: float, hi: float, v: Any, AND: Any, NOT: Any) -> Any:
    if prefix == "eq":
        return AND(v >= lo, v < hi)
    if prefix == "ne":
        return NOT(AND(v >= lo, v < hi))
    if prefix in ("gt", "sa"):
        return v > x
    if prefix == "ge":
        return v >= x
    if prefix in ("lt", "eb"):
        return v < x
    if prefix == "le":
        return v <= x
    d = abs(x) * 0.1
    return AND(v >= x - d, v <= x + d)  # ap


# ---------------------------------------------------------------------------------------- criteria
class _Ctx:
    """One resource version for Python evaluation: its index rows, lastUpdated and id."""

    __slots__ = ("rows", "lu", "id")

    def __init__(self, entries: Iterable[tuple[str, Row]], lu: float, rid: str) -> None:
        self.rows: dict[tuple[str, str], list[Row]] = {}
        for kind, row in entries:
            self.rows.setdefault((kind, row["param"]), []).append(row)
        self.lu, self.id = lu, rid


Alt = tuple[Callable[[Any], Any], Callable[[Row], bool]]  # (SQL condition on an index table, Python test of a row)


@dataclass
class _IndexCriterion:
    """OR of alternatives over the index rows of one parameter; `negate` for :not / :missing=true."""

    kind: str
    column: str
    targets: tuple[str, ...]  # restricted reference parameter: only these target types
    alts: list[Alt]  # empty: any row of the parameter (:missing)
    negate: bool = False
    ranges: tuple[tuple[str, float, float, float], ...] = ()  # date: (prefix, start, end, ap delta) per alt

    def _restrict(self, t: Any) -> list[Any]:
        return [t.c.target_type.in_(self.targets)] if self.targets else []

    def sql(self, rtype: str) -> sa.ColumnElement[bool]:
        t = _TABLES[self.kind].alias()
        conds = [t.c.resource_type == rtype, t.c.param == self.column, *self._restrict(t)]
        if self.alts:
            conds.append(sa.or_(*[a[0](t) for a in self.alts]) if len(self.alts) > 1 else self.alts[0][0](t))
        if self.negate:  # an anti-join
            r = resources.c
            return ~sa.exists().where(t.c.resource_type == r.resource_type, t.c.id == r.id, *conds[1:])
        return resources.c.id.in_(sa.select(t.c.id).where(*conds))

    def py(self, ctx: _Ctx) -> bool:
        rows = ctx.rows.get((self.kind, self.column), [])
        if self.targets:
            rows = [r for r in rows if r["target_type"] in self.targets]
        hit = any(any(a[1](r) for a in self.alts) for r in rows) if self.alts else bool(rows)
        return hit != self.negate


@dataclass
class _RowCriterion:
    """A condition on the resource row itself (_id, _lastUpdated)."""

    sql_cond: sa.ColumnElement[bool]
    test: Callable[[_Ctx], bool]

    def sql(self, rtype: str) -> sa.ColumnElement[bool]:
        return self.sql_cond

    def py(self, ctx: _Ctx) -> bool:
        return self.test(ctx)


Criterion = _IndexCriterion | _RowCriterion


def _token_alts(p: SearchParam, values: list[str]) -> list[Alt]:
    alts: list[Alt] = []
    for v in values:
        parts = _split(v, "|")
        if len(parts) > 2:
            raise InputError(f"search parameter {p.name!r}: {v!r} has more than one '|' (system|code)")
        if len(parts) == 1:
            code = _unescape(parts[0])
            alts.append((lambda t, c=code: t.c.code == c, lambda r, c=code: r["code"] == c))
            continue
        system, code = _unescape(parts[0]), _unescape(parts[1])
        if p.name == "identifier" and system and code:
            try:
                system, code = identity.canonical(system, code)
            except ValidationError:
                pass  # not a valid СНИЛС/ЕНП: nothing stored has it; search for it as written
        if not system and not code:
            raise InputError(f"search parameter {p.name!r}: '|' alone is not a token")
        if not system:
            alts.append((lambda t, c=code: sa.and_(t.c.system.is_(None), t.c.code == c),
                         lambda r, c=code: r["system"] is None and r["code"] == c))
        elif not code:
            alts.append((lambda t, s=system: t.c.system == s, lambda r, s=system: r["system"] == s))
        else:
            alts.append((lambda t, s=system, c=code: sa.and_(t.c.code == c, t.c.system == s),
                         lambda r, s=system, c=code: r["system"] == s and r["code"] == c))
    return alts


def _string_alts(p: SearchParam, modifier: str, values: list[str]) -> list[Alt]:
    alts: list[Alt] = []
    for v in values:
        text = _unescape(v)
        if modifier == "exact":
            x = text[:256]
            alts.append((lambda t, x=x: t.c.exact == x, lambda r, x=x: r["exact"] == x))
            continue
        f = fold(text)[:256]
        if modifier == "contains":
            pat = "%" + _like_escape(f) + "%"
            alts.append((lambda t, pat=pat: t.c.value.like(pat, escape="\\"), lambda r, f=f: f in r["value"]))
        else:
            pat = _like_escape(f) + "%"
            alts.append((lambda t, pat=pat: t.c.value.like(pat, escape="\\"),
                         lambda r, f=f: r["value"].startswith(f)))
    return alts


def _date_ranges(p: SearchParam, values: list[str], now: float) -> tuple[tuple[str, float, float, float], ...]:
    """(prefix, start, end, ap widening) of each date value."""
    out = []
    for v in values:
        prefix, qs, qe = _date_param(p.name, _unescape(v))
        out.append((prefix, qs, qe, abs(now - qs) * 0.1))
    return tuple(out)


def _date_alts(ranges: tuple[tuple[str, float, float, float], ...]) -> list[Alt]:
    return [(lambda t, a=a: _range_test(*a, t.c.start, t.c.end, sa.and_, sa.not_),
             lambda r, a=a: bool(_range_test(*a, r["start"], r["end"], _and, _not))) for a in ranges]


def _number(name: str, text: str) -> tuple[float, float, float]:
    try:
        d = Decimal(text)
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite():
        raise InputError(f"search parameter {name!r}: {text!r} is not a number")
    exp = d.as_tuple().exponent
    half = Decimal(5).scaleb(int(exp) - 1) if isinstance(exp, int) else Decimal(0)
    return float(d), float(d - half), float(d + half)


def _quantity_alts(p: SearchParam, values: list[str]) -> list[Alt]:
    alts: list[Alt] = []
    for v in values:
        parts = [_unescape(x) for x in _split(v, "|")]
        if len(parts) not in (1, 3):
            raise InputError(f"search parameter {p.name!r}: {v!r} is not [prefix]number[|system|code]")
        prefix, num = _prefixed(parts[0])
        x, lo, hi = _number(p.name, num)
        system, code = (parts[1] or None, parts[2] or None) if len(parts) == 3 else (None, None)
        a = (prefix, x, lo, hi)

        def sql(t: Any, a: Any = a, system: Any = system, code: Any = code) -> Any:
            conds = [_number_test(*a, t.c.value, sa.and_, sa.not_)]
            if system:
                conds.append(t.c.system == system)
            if code:
                conds.append(t.c.code == code)
            return sa.and_(*conds)

        def py(r: Row, a: Any = a, system: Any = system, code: Any = code) -> bool:
            return bool(_number_test(*a, r["value"], _and, _not)) and (not system or r["system"] == system) and (
                not code or r["code"] == code)
        alts.append((sql, py))
    return alts


def _reference_alts(p: SearchParam, modifier: str, values: list[str]) -> list[Alt]:
    alts: list[Alt] = []
    for v in values:
        text = _unescape(v).strip()
        if modifier:  # subject:Patient=123
            rtype: str | None = modifier
            rid: str | None = text
        elif "/" in text:
            tr = parse_reference(text)
            if tr is None:
                raise InputError(f"search parameter {p.name!r}: {text!r} is not a reference (Type/id or id)")
            rtype, rid = tr
        else:
            rtype, rid = (p.targets[0] if len(p.targets) == 1 else None), text
        if not rid:
            raise InputError(f"search parameter {p.name!r}: empty reference")
        if p.restricted and rtype is not None and rtype not in p.targets:
            raise InputError(f"search parameter {p.name!r} refers to {', '.join(p.targets)}, not {rtype}")
        if rtype is None:
            alts.append((lambda t, i=rid: t.c.target_id == i, lambda r, i=rid: r["target_id"] == i))
        else:
            alts.append((lambda t, ty=rtype, i=rid: sa.and_(t.c.target_id == i, t.c.target_type == ty),
                         lambda r, ty=rtype, i=rid: r["target_id"] == i and r["target_type"] == ty))
    return alts


def _criterion(rtype: str, p: SearchParam, modifier: str, value: str, now: float) -> Criterion:
    restrict = p.targets if p.restricted else ()
    if modifier == "missing":
        if value not in ("true", "false"):
            raise InputError(f"search parameter {p.name}:missing takes true or false, not {value!r}")
        return _IndexCriterion(p.type, p.column, restrict, [], negate=value == "true")
    values = [v for v in _split(value, ",") if v != ""]
    if not values:
        raise InputError(f"search parameter {p.name!r} has no value")
    if p.type == "token":
        return _IndexCriterion("token", p.column, (), _token_alts(p, values), negate=modifier == "not")
    if p.type == "string":
        return _IndexCriterion("string", p.column, (), _string_alts(p, modifier, values))
    if p.type == "date":
        ranges = _date_ranges(p, values, now)
        return _IndexCriterion("date", p.column, (), _date_alts(ranges), ranges=ranges)
    if p.type == "quantity":
        return _IndexCriterion("quantity", p.column, (), _quantity_alts(p, values))
    return _IndexCriterion("reference", p.column, restrict, _reference_alts(p, modifier, values))


def _special(name: str, modifier: str, value: str, now: float) -> Criterion:
    if modifier:
        raise InputError(f"search parameter {name} takes no modifier (:{modifier})")
    values = [_unescape(v) for v in _split(value, ",") if v != ""]
    if not values:
        raise InputError(f"search parameter {name!r} has no value")
    r = resources.c
    if name == "_id":
        ids = set(values)
        return _RowCriterion(r.id.in_(sorted(ids)), lambda ctx: ctx.id in ids)
    tests = []
    for v in values:
        prefix, qs, qe = _date_param(name, v)
        tests.append((prefix, qs, qe, abs(now - qs) * 0.1))
    cond = sa.or_(*[_point_test(*a, r.last_updated, sa.and_, sa.not_) for a in tests])
    return _RowCriterion(cond, lambda ctx: any(_point_test(*a, ctx.lu, _and, _not) for a in tests))


def _sort_row_test(prefix: str, qs: float, qe: float, delta: float, desc: bool, v: Any) -> tuple[Any, bool] | None:
    """A date criterion as a condition on the resource's sort row of the same parameter: its value
    `v` is the highest end (desc) or the lowest start (asc) of the resource's ranges. Returns
    (condition, exact): exact when the resource matches if and only if the condition holds
    ("some range ends after x" is "the latest end is after x"), else a condition every match
    meets, which bounds the walk along the sort index. None when there is none."""
    if desc:
        return {"ge": (v > qs, True), "gt": (v > qe, True), "eq": (v >= qs, False), "sa": (v >= qe, False),
                "ap": (v > qs - delta, False)}.get(prefix)
    return {"lt": (v < qs, True), "le": (v < qe, True), "eq": (v < qe, False), "eb": (v <= qs, False),
            "ap": (v < qe + delta, False)}.get(prefix)


# ---------------------------------------------------------------------------------------- sorting
@dataclass(frozen=True)
class _SortKey:
    name: str
    desc: bool
    kind: str  # id | lu | date | string | token | quantity
    column: str = ""  # the index parameter

    @property
    def nullable(self) -> bool:
        return self.kind not in ("id", "lu")

    @property
    def value_col(self) -> str:
        if self.kind == "date":  # ascending by the earliest start, descending by the latest end
            return "end" if self.desc else "start"
        return {"string": "value", "token": "code", "quantity": "value"}[self.kind]

    def sql(self) -> Any:
        """The key as a scalar expression of the resources row (correlated subquery for params)."""
        r = resources.c
        if self.kind == "id":
            return r.id
        if self.kind == "lu":
            return r.last_updated
        t = _TABLES[self.kind].alias()
        agg = sa.func.max if self.desc else sa.func.min
        return (sa.select(agg(t.c[self.value_col]))
                .where(t.c.resource_type == r.resource_type, t.c.id == r.id, t.c.param == self.column)
                .correlate(resources).scalar_subquery())

    def py(self, ctx: _Ctx) -> Any:
        if self.kind == "id":
            return ctx.id
        if self.kind == "lu":
            return ctx.lu
        rows = ctx.rows.get((self.kind, self.column))
        if not rows:
            return None
        if self.kind == "date":  # the marked row, as the primary sort joins it
            flag = "is_max" if self.desc else "is_min"
            marked = [row[self.value_col] for row in rows if row.get(flag)]
            return marked[0] if marked else None
        vals = [row[self.value_col] for row in rows]
        return max(vals) if self.desc else min(vals)

    @property
    def sql_type(self) -> Any:
        return sa.Float() if self.kind in ("lu", "date", "quantity") else sa.String()


def _after(cols: list[tuple[Any, bool, bool]], cursor: list[Any]) -> Any:
    """Rows strictly after `cursor` in the order of `cols` [(expr, desc, nullable)]; nulls last."""
    (e, desc, nullable), c = cols[0], cursor[0]
    if len(cols) == 1:
        return e < c if desc else e > c
    rest = _after(cols[1:], cursor[1:])
    if nullable:
        if c is None:
            return sa.and_(e.is_(None), rest)
        return sa.or_(e.is_(None), e < c if desc else e > c, sa.and_(e == c, rest))
    return sa.and_(e <= c if desc else e >= c, sa.or_(e < c if desc else e > c, rest))


def _order(cols: list[tuple[Any, bool, bool]]) -> list[Any]:
    out = []
    for e, desc, nullable in cols:
        if nullable:
            out.append(e.is_(None))
        out.append(e.desc() if desc else e.asc())
    return out


# ---------------------------------------------------------------------------------------- cursors
def _params_hash(params: list[tuple[str, str]]) -> str:
    return hashlib.sha256(orjson.dumps([[k, v] for k, v in params if k != "_cursor"])).hexdigest()[:16]


def _encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def _decode_cursor(text: str, expect_hash: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        ok = isinstance(data, dict) and data.get("v") == 1 and isinstance(data.get("s"), float | int) \
            and isinstance(data.get("k"), list) and isinstance(data.get("p"), int)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        ok = False
    if not ok:
        raise InputError("_cursor is not a cursor of this server (follow the next link as given)")
    if data.get("h") != expect_hash:
        raise InputError("_cursor belongs to a search with other parameters (follow the next link as given)")
    return data  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------- the search
@dataclass
class _Query:
    rtype: str
    criteria: list[Criterion]
    sort: list[_SortKey]
    includes: list[tuple[SearchParam, tuple[str, ...]]]
    count: int
    total_mode: str  # accurate | estimate (the default: only when free) | none
    cursor: str | None


def _parse(rtype: str, params: list[tuple[str, str]], now: float, page_size: int, max_page_size: int) -> _Query:
    known = params_for(rtype)
    criteria: list[Criterion] = []
    sort: list[_SortKey] = []
    includes: list[tuple[SearchParam, tuple[str, ...]]] = []
    count, total_mode, cursor = page_size, "estimate", None
    for key, value in params:
        name, _, modifier = key.partition(":")
        if name in _IGNORED:
            continue
        if name in _CONTROL:
            if modifier:
                raise InputError(f"{name} takes no modifier (:{modifier})")
            if name == "_count":
                try:
                    count = int(value)
                except ValueError:
                    raise InputError(f"_count must be a whole number, not {value!r}") from None
                if count < 0:
                    raise InputError("_count must not be negative")
                count = min(count, max_page_size)
            elif name == "_sort":
                sort.extend(_sort_keys(rtype, known, value))
            elif name == "_include":
                includes.extend(_include(rtype, known, value))
            elif name == "_total":
                if value not in ("none", "estimate", "accurate"):
                    raise InputError(f"_total must be none, estimate or accurate, not {value!r}")
                total_mode = value
            elif name == "_summary":
                if value != "count":
                    raise InputError(f"_summary={value} is not supported (only _summary=count)")
                count = 0
            else:
                cursor = value
            continue
        if value == "":
            continue  # an empty parameter is ignored (FHIR search)
        if name in SPECIAL:
            criteria.append(_special(name, modifier, value, now))
            continue
        p = known.get(name)
        if p is None:
            raise InputError(_unknown(rtype, name, known))
        if modifier and modifier not in _MODIFIERS[p.type] and not (
                p.type == "reference" and modifier[:1].isupper() and modifier.isalpha()):
            raise InputError(f"search parameter {p.name} ({p.type}) does not support the modifier :{modifier}")
        criteria.append(_criterion(rtype, p, modifier, value, now))
    return _Query(rtype, criteria, sort, includes, count, total_mode, cursor)


def _unknown(rtype: str, name: str, known: dict[str, SearchParam]) -> str:
    if name in _UNSUPPORTED:
        return f"search parameter {name} is not supported"
    if "." in name:
        return f"chained search parameters are not supported ({name})"
    hint = did_you_mean(name, [*known, *SPECIAL, *(c for c in _CONTROL if c != "_cursor")])
    return f"unknown search parameter {name!r} for {rtype}" + (f"; {hint}" if hint else "")


def _sort_keys(rtype: str, known: dict[str, SearchParam], value: str) -> list[_SortKey]:
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        desc = item.startswith("-")
        name = item[1:] if desc else item
        if name == "_id":
            out.append(_SortKey(name, desc, "id"))
            continue
        if name == "_lastUpdated":
            out.append(_SortKey(name, desc, "lu"))
            continue
        p = known.get(name)
        if p is None:
            hint = did_you_mean(name, [*known, *SPECIAL])
            raise InputError(f"_sort: unknown search parameter {name!r} for {rtype}" + (f"; {hint}" if hint else ""))
        if p.type not in _SORTABLE:
            raise InputError(f"_sort: cannot sort by {p.type} parameter {name!r}")
        out.append(_SortKey(name, desc, p.type, p.column))
    return out


def _include(rtype: str, known: dict[str, SearchParam], value: str) -> list[tuple[SearchParam, tuple[str, ...]]]:
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise InputError(f"_include must be Type:parameter[:TargetType], not {value!r}")
    if parts[0] != rtype:
        raise InputError(f"_include={value}: only parameters of the searched type {rtype} can be included "
                         "(_include:iterate is not supported)")
    refs = [p for p in known.values() if p.type == "reference"]
    if parts[1] == "*":
        chosen = refs
    else:
        p = known.get(parts[1])
        if p is None or p.type != "reference":
            hint = did_you_mean(parts[1], [q.name for q in refs])
            raise InputError(f"_include: {rtype} has no reference parameter {parts[1]!r}"
                             + (f"; {hint}" if hint else ""))
        chosen = [p]
    out = []
    for p in chosen:
        targets = p.targets if p.restricted else ()
        if len(parts) == 3:
            if targets and parts[2] not in targets:
                raise InputError(f"_include={value}: {p.name} refers to {', '.join(targets)}, not {parts[2]}")
            targets = (parts[2],)
        out.append((p, targets))
    return out


@dataclass
class _Hit:
    id: str
    keys: list[Any]  # the phase's sort key values, the id last
    phase: int
    content: bytes


class _Searcher:
    def __init__(self, conn: sa.Connection, q: _Query, principal: Principal, read_condition: ReadCondition,
                 snapshot: float, indexer: Callable[[dict[str, Any]], list[tuple[str, Row]]]) -> None:
        self.conn, self.q, self.principal, self.snapshot, self.indexer = conn, q, principal, snapshot, indexer
        self.read_condition = read_condition
        self._access: dict[str, Any] = {}
        self.sort = q.sort or [_SortKey("_id", False, "id")]
        self.primary = self.sort[0]
        self.phases = 2 if self.primary.nullable else 1

    def access(self, rtype: str) -> Any:
        """The access condition of a type: None = unrestricted, False = not readable at all."""
        rc = self.read_condition
        if rc is None or isinstance(rc, sa.sql.ClauseElement) or not callable(rc):
            return rc
        if rtype not in self._access:
            try:
                self._access[rtype] = rc(self.principal, rtype)
            except AccessError:
                if rtype == self.q.rtype:
                    raise
                self._access[rtype] = False
        return self._access[rtype]

    def base(self, skip: tuple[Criterion, ...] = ()) -> list[Any]:
        r = resources.c
        conds = [r.resource_type == self.q.rtype, r.deleted.is_(False), r.last_updated <= self.snapshot]
        acc = self.access(self.q.rtype)
        if acc is not None:
            conds.append(acc)
        conds.extend(c.sql(self.q.rtype) for c in self.q.criteria if not any(c is x for x in skip))
        return conds

    # ------------------------------------------------------------ resources changed since the snapshot
    def changed(self) -> dict[str, tuple[list[Any], int, bytes]]:
        """Resources of the type changed after the snapshot whose version as of the snapshot matched:
        id -> (sort key values as of then, phase, content as of then)."""
        r, h = resources.c, history.c
        conds = [r.resource_type == self.q.rtype, r.last_updated > self.snapshot, r.deleted.is_(False)]
        acc = self.access(self.q.rtype)
        if acc is not None:
            conds.append(acc)
        ids = [row[0] for row in self.conn.execute(sa.select(r.id).where(*conds).limit(MAX_CHANGED + 1))]
        if not ids:
            return {}
        if len(ids) > MAX_CHANGED:
            raise GoneError(f"more than {MAX_CHANGED} {self.q.rtype} resources changed since this search started; "
                            "repeat the search")
        best: dict[str, tuple[int, float, bool, bytes]] = {}
        for k in range(0, len(ids), 500):
            rows = self.conn.execute(sa.select(h.id, h.version_id, h.last_updated, h.deleted, h.content).where(
                h.resource_type == self.q.rtype, h.id.in_(ids[k:k + 500]), h.last_updated <= self.snapshot))
            for rid, vid, lu, deleted, content in rows:
                if rid not in best or vid > best[rid][0]:
                    best[rid] = (vid, lu, deleted, content)
        out = {}
        for rid, (_vid, lu, deleted, content) in best.items():
            if deleted:
                continue
            resource = orjson.loads(content)
            ctx = _Ctx(self.indexer(resource), lu, rid)
            if all(c.py(ctx) for c in self.q.criteria):
                phase = 1 if self.phases == 2 and self.primary.py(ctx) is None else 0
                out[rid] = ([k.py(ctx) for k in self.keys(phase)], phase, bytes(content))
        return out

    # ------------------------------------------------------------ pages
    def keys(self, phase: int) -> list[_SortKey]:
        """The sort keys of a phase, the id last (phase 1: the resources without a primary key value)."""
        keys = self.sort if phase == 0 else self.sort[1:]
        return keys if any(k.kind == "id" for k in keys) else [*keys, _SortKey("_id", False, "id")]

    def columns(self, phase: int) -> tuple[list[tuple[Any, bool, bool]], Any, list[Any], tuple[Criterion, ...]]:
        """(sort columns [(expr, desc, nullable)], the FROM, extra conditions, criteria the extra
        conditions replace) of a phase."""
        r = resources.c
        cols: list[tuple[Any, bool, bool]] = []
        frm: Any = resources
        extra: list[Any] = []
        replaced: list[Criterion] = []
        for n, k in enumerate(self.keys(phase)):
            if n == 0 and phase == 0 and k.kind == "date":
                # the one row per resource that holds its sort value: PostgreSQL can walk
                # ix_idx_date_end (descending) or ix_idx_date_q (ascending) in order and stop after
                # a page; date criteria on the same parameter bound the walk
                d = idx_date.alias("sort_date")
                flag = d.c.is_max if k.desc else d.c.is_min
                value = d.c.end if k.desc else d.c.start
                frm = resources.join(d, sa.and_(d.c.resource_type == r.resource_type, d.c.id == r.id,
                                                d.c.param == k.column, flag.is_(True)))
                cols.append((value, k.desc, False))
                for c in self.q.criteria:
                    if not (isinstance(c, _IndexCriterion) and c.kind == "date" and c.column == k.column
                            and c.ranges and not c.negate):
                        continue
                    tests = [_sort_row_test(*rng, k.desc, value) for rng in c.ranges]
                    if all(t is not None for t in tests):
                        extra.append(sa.or_(*[t[0] for t in tests if t]))
                        if all(t[1] for t in tests if t):
                            replaced.append(c)
            elif n == 0 and phase == 0 and k.nullable:
                e = k.sql()
                extra.append(e.is_not(None))
                cols.append((e, k.desc, False))
            else:
                cols.append((k.sql(), k.desc, k.nullable))
        if phase == 1:
            p = self.primary
            t = _TABLES[p.kind].alias()
            conds = [t.c.resource_type == r.resource_type, t.c.id == r.id, t.c.param == p.column]
            if p.kind == "date":
                conds.append((t.c.is_max if p.desc else t.c.is_min).is_(True))
            extra.append(~sa.exists().where(*conds))
        return cols, frm, extra, tuple(replaced)

    def page(self, phase: int, after: list[Any] | None, limit: int,
             candidates: dict[str, tuple[list[Any], int, bytes]]) -> list[_Hit]:
        cols, frm, extra, replaced = self.columns(phase)
        q = (sa.select(*[c[0].label(f"k{i}") for i, c in enumerate(cols)], resources.c.content)
             .select_from(frm).where(*self.base(replaced), *extra))
        if after is not None:
            q = q.where(_after(cols, after))
        q = q.order_by(*_order(cols)).limit(limit)
        mine = {rid: c for rid, c in candidates.items() if c[1] == phase}
        if mine:
            # the snapshot versions of resources changed since: the database orders them with the
            # rest (same collation) and applies the cursor condition to them as to the others
            types = [k.sql_type for k in self.keys(phase)]
            inner = q.subquery()
            parts: list[Any] = [sa.select(*inner.c)]
            for vals, _phase, _content in mine.values():
                parts.append(sa.select(*[(sa.literal(v, type_=ty) if v is not None else sa.cast(sa.null(), ty))
                                         .label(f"k{i}") for i, (v, ty) in enumerate(zip(vals, types))],
                                       sa.cast(sa.null(), sa.LargeBinary).label("content")))
            u = sa.union_all(*parts).subquery()
            ucols = [(u.c[f"k{i}"], c[1], c[2]) for i, c in enumerate(cols)]
            q = sa.select(u)
            if after is not None:
                q = q.where(_after(ucols, after))
            q = q.order_by(*_order(ucols)).limit(limit)
        hits = []
        for row in self.conn.execute(q):
            vals = list(row[:-1])
            rid = vals[-1]
            content = row[-1] if row[-1] is not None else mine[rid][2]
            hits.append(_Hit(rid, vals, phase, bytes(content)))
        return hits

    def total(self, candidates: dict[str, tuple[list[Any], int, bytes]]) -> int:
        n = self.conn.execute(sa.select(sa.func.count()).select_from(resources).where(*self.base())).scalar_one()
        return int(n) + len(candidates)

    # ------------------------------------------------------------ _include
    def included(self, hits: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
        wanted: dict[str, set[str]] = {}
        for p, targets in self.q.includes:
            get = getter(p)
            for res in hits:
                for v in get(res):
                    ref = v.get("reference") if isinstance(v, dict) else None
                    tr = parse_reference(ref) if isinstance(ref, str) else None
                    if tr and (not targets or tr[0] in targets):
                        wanted.setdefault(tr[0], set()).add(tr[1])
        if self.q.rtype in wanted:
            wanted[self.q.rtype] -= {res["id"] for res in hits}
        out = []
        r = resources.c
        for rtype in sorted(wanted):
            ids = sorted(wanted[rtype])
            acc = self.access(rtype)
            if not ids or acc is False:
                continue
            for k in range(0, len(ids), 500):
                conds = [r.resource_type == rtype, r.id.in_(ids[k:k + 500]), r.deleted.is_(False)]
                if acc is not None:
                    conds.append(acc)
                out.extend((rtype, rid, bytes(c)) for rid, c in self.conn.execute(
                    sa.select(r.id, r.content).where(*conds).order_by(r.id)))
        return out


def search(conn: sa.Connection, resource_type: str, params: list[tuple[str, str]], *, principal: Principal,
           base_url: str, read_condition: ReadCondition = None, page_size: int = 50, max_page_size: int = 500,
           store: Any = None, snapshot_grace: float = 0.0, now: float | None = None) -> dict[str, Any]:
    """One page of a search as a searchset Bundle (see the module docstring). `store`: its indexer
    re-indexes the snapshot versions of changed resources; `now`: the present for ``ap`` (tests)."""
    if not resource_type[:1].isupper() or not resource_type.isalpha() or len(resource_type) > 64:
        raise InputError(f"{resource_type!r} is not a resource type")
    params = [(str(k), str(v)) for k, v in params]
    phash = _params_hash(params)
    cursors = [v for k, v in params if k == "_cursor"]
    cur = _decode_cursor(cursors[-1], phash) if cursors else None
    snapshot = float(cur["s"]) if cur else time.time() - snapshot_grace
    # the present for `ap`: the snapshot's, so that every page of a search compares alike
    q = _parse(resource_type, params, snapshot if now is None else now, page_size, max_page_size)
    indexer = getattr(store, "indexer", None) or index_entries
    if conn.dialect.name == "postgresql":
        # for this transaction: psycopg prepares a statement run 5 times on a connection, and
        # PostgreSQL may then use a generic plan that ignores the values, bad for index searches
        # whose selectivity is all in the values (patient=X&code=Y: 0.2 -> 14 ms), so plan each
        # search anew; and no parallel workers: starting them costs more (20-40 ms) than a page
        conn.exec_driver_sql("SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
                             "set_config('max_parallel_workers_per_gather', '0', true)")
    s = _Searcher(conn, q, principal, read_condition, snapshot, indexer)

    candidates = s.changed()
    hits: list[_Hit] = []
    if q.count > 0:
        phase, after = (cur["p"], cur["k"]) if cur else (0, None)
        if cur and (not 0 <= phase < s.phases or len(after) != len(s.keys(phase))):
            raise InputError("_cursor does not fit this search (follow the next link as given)")
        while phase < s.phases and len(hits) <= q.count:
            hits.extend(s.page(phase, after, q.count + 1 - len(hits), candidates))
            phase, after = phase + 1, None
    total: int | None = None
    if cur is not None:
        total = cur.get("t")
    elif q.count > 0 and len(hits) <= q.count and q.total_mode != "none":
        total = len(hits)  # a first page that holds every match is its own count
    elif q.total_mode == "accurate" or q.count == 0:
        total = s.total(candidates)

    base = base_url.rstrip("/")
    self_params = [(k, v) for k, v in params if k not in _IGNORED]
    links = [{"relation": "self", "url": _url(base, resource_type, self_params)}]
    if len(hits) > q.count:
        last = hits[q.count - 1]
        token = _encode_cursor({"v": 1, "s": snapshot, "p": last.phase, "k": last.keys, "t": total, "h": phash})
        nxt = [(k, v) for k, v in params if k != "_cursor"] + [("_cursor", token)]
        links.append({"relation": "next", "url": _url(base, resource_type, nxt)})
        hits = hits[:q.count]

    matches = [orjson.loads(h.content) for h in hits]
    entries = [{"fullUrl": f"{base}/{resource_type}/{h.id}", "resource": res, "search": {"mode": "match"}}
               for h, res in zip(hits, matches)]
    if q.includes and matches:
        for rtype, rid, content in s.included(matches):
            entries.append({"fullUrl": f"{base}/{rtype}/{rid}", "resource": orjson.loads(content),
                            "search": {"mode": "include"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    bundle["entry"] = entries
    return bundle


def _url(base: str, rtype: str, params: list[tuple[str, str]]) -> str:
    return f"{base}/{rtype}" + (f"?{urlencode(params)}" if params else "")
