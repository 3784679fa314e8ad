"""The library of conversion functions mappings call: HL7 v2 datatypes -> FHIR R4 datatypes.

Every function has the signature ``fn(value, ctx, **args) -> JSON | None``:

* ``value`` is one HL7 value (a ``V``: field repetition, component or subcomponent), a plain
  ``str`` constant, or None. Functions that read components take a ``str`` as ER7 text with the
  default encoding characters (``"mmol/L^^UCUM"``); scalar functions take it as plain text.
* ``ctx`` is the ``FnContext`` of the message being mapped (time zone, code systems, concept maps,
  the policy for unmapped codes, the list warnings go to).
* the result is plain JSON data (dict / list / str / int / float / bool) or None, meaning "omit
  the element". Empty values and the HL7 null ``""`` give None.

``FUNCTIONS`` is the one registry the compiler looks names up in: name -> ``FunctionSpec`` with
the callable, what it returns, a doc string with an example and the arguments it accepts.

Choices made where HL7 and FHIR do not meet (see each function's doc):

* times without a zone get the offset of ``ctx.timezone`` at that local date and time (zoneinfo,
  DST-correct; a time in a DST gap or fold takes the offset in force before the transition, PEP
  495 ``fold=0``). HL7 hour or minute precision is padded with ``:00`` seconds because FHIR
  dateTime has no hour/minute precision. Offsets with seconds (pre-1920 local mean time) are
  rounded to the minute. A zone given on a date-only value is dropped (FHIR forbids it).
* ``instant`` needs at least the hour; missing minutes/seconds are padded with zeros.
* decimals become JSON numbers: ``"5"`` -> 5, ``"5.50"`` -> 5.5 (the trailing zero, i.e. the
  stated precision, is lost: the engine serialises with orjson, which has no decimal type).
* warnings (ctx.warnings, journaled) never carry patient data: no identifiers, names, values,
  sex or interpretation codes. They do name vocabulary terms a mapping maintainer needs: unknown
  coding-system names, and the system|code a concept map lacks (test codes of OBX-3/OBR-4 -
  for coded results, OBX-5, only the system). MappingError messages (the message is dead-lettered
  whole anyway) name the offending value - a bad date, an unmapped code - but never a СНИЛС/ЕНП.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime as _datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import MappingError, ValidationError
from ..registry import did_you_mean
from ..store.identity import ENP, ENP_ALIASES, SNILS, SNILS_ALIASES, canonical
from .codesystems import DEFAULT as DEFAULT_CODESYSTEMS
from .codesystems import UCUM, CodeSystems, is_absolute_uri, is_local, is_oid, is_uuid
from .hl7 import DEFAULT_ENCODING, Encoding, V, unescape

__all__ = [
    "FUNCTIONS",
    "Arg",
    "ConceptMapFn",
    "FnContext",
    "FunctionSpec",
    "address",
    "annotation",
    "boolean",
    "code",
    "codeable_concept",
    "coding",
    "contact_point",
    "date",
    "datetime",
    "decimal",
    "filler_identifier",
    "gender",
    "human_name",
    "identifier",
    "identifier_ei",
    "instant",
    "integer",
    "interpretation",
    "looks_ucum",
    "names",
    "observation_status",
    "obx_value",
    "period",
    "placer_identifier",
    "quantity",
    "reference_range",
    "report_status",
    "spec",
    "string",
    "suggest",
    "time",
    "uri",
    "zone",
]

JSON = Any
#: ``concept_map(map_name, source_system, source_code) -> (system, code, display) | None``
ConceptMapFn = Callable[[str, "str | None", str], "tuple[str | None, str, str | None] | None"]


@dataclass(slots=True)
class FnContext:
    """What conversion functions may know about the message being mapped.

    ``concept_map`` receives the source system as a FHIR URI when it resolves (and, when that
    finds nothing, again as the HL7 name as sent: ``"LN"``), otherwise the HL7 name as sent
    (``"L"``, ``"99LAB"``), otherwise None. ``unmapped`` decides what happens to a
    code with no target (concept maps, and the fixed HL7 tables behind ``gender``,
    ``observation_status``, ``report_status``, ``interpretation``, ``boolean``): ``error`` raises
    MappingError, ``warn`` omits the element and appends to ``warnings``, ``pass`` omits it silently.
    """

    timezone: str = "Europe/Moscow"
    codesystems: CodeSystems = DEFAULT_CODESYSTEMS
    concept_map: ConceptMapFn | None = None
    unmapped: Literal["error", "pass", "warn"] = "error"
    warnings: list[str] = field(default_factory=list)
    #: a cache kept across messages by whoever owns ``concept_map`` (a compiled mapping passes
    #: its own): concept-map translations are looked up once per coded value; None: no cache
    memo: dict[Any, Any] | None = None


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for a name, cached (the compiler may call it at load to check the setting)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise MappingError(f"unknown time zone {name!r}") from exc


# --------------------------------------------------------------------------------------------
# small helpers (hot path: no regex compilation, no per-call allocation beyond the result)
# --------------------------------------------------------------------------------------------

def _v(value: V | str | None) -> V | None:
    """The value as a V, or None when empty / HL7 null."""
    if value is None:
        return None
    if isinstance(value, V):
        return value if value.raw and value.raw != '""' else None
    if isinstance(value, str):
        return V(value, DEFAULT_ENCODING) if value and value != '""' else None
    raise MappingError(f"expected an HL7 value, got {type(value).__name__}")


def _plain(value: V | str | None) -> str:
    """Decoded text of a value ('' when empty or HL7 null); str constants are plain text."""
    if value is None:
        return ""
    if isinstance(value, V):
        raw = value.raw
        if not raw or raw == '""':
            return ""
        return unescape(raw, value.enc) if value.enc.escape in raw else raw
    if isinstance(value, str):
        return "" if value == '""' else value
    return str(value)


def _plain_raw(raw: str, enc: Encoding) -> str:
    """_plain of a V with this encoded text."""
    if not raw or raw == '""':
        return ""
    return unescape(raw, enc) if enc.escape in raw else raw


def _parts(v: V) -> list[str]:
    """Raw (still encoded) components of a field, or subcomponents of a component."""
    return _split(v.raw, v.enc, v.level)


def _split(raw: str, enc: Encoding, level: int) -> list[str]:
    """_parts of the value `raw` at `level` (0 field, 1 component, 2 subcomponent)."""
    if level == 0:
        return raw.split(enc.component)
    if level == 1:
        return raw.split(enc.subcomponent)
    return [raw]


def _t(parts: list[str], n: int, enc: Encoding) -> str:
    """Decoded text of part n (1-based); '' when absent, empty or HL7 null."""
    if n > len(parts):
        return ""
    s = parts[n - 1]
    if not s or s == '""':
        return ""
    return unescape(s, enc) if enc.escape in s else s


def _texts(parts: list[str], enc: Encoding, n: int) -> list[str]:
    """[_t(parts, i, enc).strip() for i in 1..n] in one pass, so part i is at index i - 1 ('' past
    the end): the stripped text of every part, for functions that read most of them."""
    e = enc.escape
    out = [("" if s == '""' else unescape(s, enc).strip() if e in s else s.strip()) for s in parts]
    if len(out) < n:
        out += [""] * (n - len(out))
    return out


def _sub(parts: list[str], n: int, enc: Encoding) -> list[str]:
    """Raw subcomponents of component n of a field."""
    if n > len(parts) or not parts[n - 1]:
        return []
    return parts[n - 1].split(enc.subcomponent)


def _unmapped(ctx: FnContext, message: str, warning: str | None = None) -> None:
    """Apply the unmapped-code policy. ``message`` (the error) may name the code; ``warning``,
    when given, is what goes to ctx.warnings instead (without the patient's value)."""
    policy = ctx.unmapped
    if policy == "error":
        raise MappingError(message)
    if policy == "warn":
        _warn(ctx, warning or message)
    return None


def _warn(ctx: FnContext, message: str) -> None:
    if message not in ctx.warnings:
        ctx.warnings.append(message)


def _table(ctx: FnContext, table: Mapping[str, str], code: str, what: str, default: str | None,
           private: bool = False) -> str | None:
    hit = table.get(code)
    if hit is None:
        hit = table.get(code.upper())
    if hit is not None:
        return hit
    if default:
        return default
    _unmapped(ctx, f"{what}: code {_clip(code)!r} has no FHIR equivalent",
              f"{what}: a code without FHIR equivalent" if private else None)
    return None


# --------------------------------------------------------------------------------------------
# dates and times
# --------------------------------------------------------------------------------------------

_TM = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,9}))?)?)?(?:[+-][0-9]{4})?")
_MDAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DTM_FORMAT = "YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]"
_DIGITS = frozenset("0123456789")
_CACHE_MAX = 4096
#: memo of conversions by input text (bounded, cleared when full). Pure: same input, same output.
_DATETIME_CACHE: dict[tuple[str, str], str] = {}


def _bad_dtm(what: str, text: str, why: str = "") -> MappingError:
    extra = f" ({why})" if why else ""
    return MappingError(f"{what}: {_clip(text)!r} is not an HL7 date/time {_DTM_FORMAT}{extra}")


def _parse_dtm(text: str, what: str) -> tuple[str, str, str, str, str, str, str, str]:
    """Split and check DTM text: (year, month, day, hour, minute, second, fraction, zone) with ''
    for absent parts; zone as +hh:mm."""
    body, zone_text = text, ""
    n = len(text)
    if n > 5 and text[-5] in "+-":
        body, z = text[:-5], text[-5:]
        if not (_DIGITS.issuperset(z[1:]) and z[1:3] <= "14" and z[3:] <= "59" and (z[1:3] != "14" or z[3:] == "00")):
            raise _bad_dtm(what, text, "zone")
        zone_text = f"{z[0]}{z[1:3]}:{z[3:]}"
    frac = ""
    dot = body.find(".")
    if dot >= 0:
        body, frac = body[:dot], body[dot + 1:]
        if len(body) != 14 or not 1 <= len(frac) <= 9 or not _DIGITS.issuperset(frac):
            raise _bad_dtm(what, text)
    size = len(body)
    if size not in (4, 6, 8, 10, 12, 14) or not _DIGITS.issuperset(body):
        raise _bad_dtm(what, text)
    y = body[:4]
    if y == "0000":
        raise _bad_dtm(what, text, "year 0000")
    mo, d, h, mi, sec = body[4:6], body[6:8], body[8:10], body[10:12], body[12:14]
    if mo and not "01" <= mo <= "12":
        raise _bad_dtm(what, text, f"month {mo}")
    if d:
        mon = int(mo)
        last = _MDAYS[mon]
        if mon == 2:
            yr = int(y)
            last = 29 if yr % 4 == 0 and (yr % 100 != 0 or yr % 400 == 0) else 28
        if not 1 <= int(d) <= last:
            raise _bad_dtm(what, text, f"day {d}")
        if h and (h > "23" or mi > "59" or sec > "59"):
            raise _bad_dtm(what, text, "time out of range")
    return y, mo, d, h, mi, sec, frac, zone_text


def _offset_text(seconds: int) -> str:
    sign = "+" if seconds >= 0 else "-"
    minutes = (abs(seconds) + 30) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@lru_cache(maxsize=8192)
def _local_offset(tz: str, y: str, mo: str, d: str, h: str, mi: str) -> str:
    """The UTC offset of a local wall time in zone tz (fold=0), as +hh:mm. Cached per minute."""
    off = _datetime(int(y), int(mo), int(d), int(h), int(mi), tzinfo=zone(tz)).utcoffset()
    return _offset_text(int(off.total_seconds())) if off is not None else "+00:00"


def _dtm_text(value: V | str | None) -> str:
    """The DTM text of a DTM/DT value or the first component of a TS (TS.2 precision is ignored)."""
    if value is None:
        return ""
    if isinstance(value, V):
        return _dtm_raw(value.raw, value.enc, value.level)
    text = str(value).strip()
    if "^" in text:
        text = text.split("^", 1)[0]
    return "" if text == '""' else text


def _dtm_raw(raw: str, enc: Encoding, level: int) -> str:
    """_dtm_text of the encoded value `raw` at `level`."""
    if level == 0:
        if enc.component in raw:
            raw = raw.split(enc.component, 1)[0]
    elif level == 1 and enc.subcomponent in raw:
        raw = raw.split(enc.subcomponent, 1)[0]
    raw = raw.strip()
    return "" if raw == '""' else raw


def _to_datetime(text: str, ctx: FnContext, what: str) -> str:
    tz = ctx.timezone
    hit = _DATETIME_CACHE.get((text, tz))
    if hit is not None:
        return hit
    y, mo, d, h, mi, sec, frac, zone_text = _parse_dtm(text, what)
    if not mo:
        out = y
    elif not d:
        out = f"{y}-{mo}"
    elif not h:
        out = f"{y}-{mo}-{d}"
    else:
        mi = mi or "00"
        out = f"{y}-{mo}-{d}T{h}:{mi}:{sec or '00'}"
        if frac:
            out = f"{out}.{frac}"
        out += zone_text or _local_offset(tz, y, mo, d, h, mi)
    if len(_DATETIME_CACHE) >= _CACHE_MAX:
        _DATETIME_CACHE.clear()
    _DATETIME_CACHE[(text, tz)] = out
    return out


def date(value: V | str | None, ctx: FnContext, **_: Any) -> str | None:
    """HL7 DT/DTM/TS -> FHIR ``date`` (YYYY, YYYY-MM or YYYY-MM-DD; a time part is dropped).

    Example: ``PID-7 "19800315"`` -> ``"1980-03-15"``; ``"198003"`` -> ``"1980-03"``;
    ``"19800315083000+0300"`` -> ``"1980-03-15"`` (the date as written, no zone conversion).
    """
    text = _dtm_text(value)
    if not text:
        return None
    return _to_datetime(text, ctx, "date")[:10]


def _date_raw(raw: str, enc: Encoding, level: int, ctx: FnContext) -> str | None:
    text = _dtm_raw(raw, enc, level)
    return _to_datetime(text, ctx, "date")[:10] if text else None


def datetime(value: V | str | None, ctx: FnContext, **_: Any) -> str | None:
    """HL7 DT/DTM/TS -> FHIR ``dateTime``, keeping the precision given.

    Example: ``OBX-14 "20230822021111"`` -> ``"2023-08-22T02:11:11+03:00"`` (ctx.timezone
    Europe/Moscow); ``"202308220211-0400"`` -> ``"2023-08-22T02:11:00-04:00"``; ``"202308"`` ->
    ``"2023-08"``. A time without a zone gets ctx.timezone's offset at that date (DST-correct).
    """
    text = _dtm_text(value)
    if not text:
        return None
    return _to_datetime(text, ctx, "datetime")


def _datetime_raw(raw: str, enc: Encoding, level: int, ctx: FnContext) -> str | None:
    text = _dtm_raw(raw, enc, level)
    return _to_datetime(text, ctx, "datetime") if text else None


def instant(value: V | str | None, ctx: FnContext, **_: Any) -> str | None:
    """HL7 DTM/TS -> FHIR ``instant`` (needs at least the hour; minutes/seconds padded with 00).

    Example: ``MSH-7 "202308220211"`` -> ``"2023-08-22T02:11:00+03:00"``; a date without a time
    (``"20230822"``) raises MappingError.
    """
    return _instant(_dtm_text(value), ctx)


def _instant_raw(raw: str, enc: Encoding, level: int, ctx: FnContext) -> str | None:
    return _instant(_dtm_raw(raw, enc, level), ctx)


def _instant(text: str, ctx: FnContext) -> str | None:
    if not text:
        return None
    out = _to_datetime(text, ctx, "instant")
    if len(out) < 11:
        raise MappingError(f"instant: {text!r} has no time of day (an instant needs at least YYYYMMDDHH)")
    return out


def time(value: V | str | None, ctx: FnContext, **_: Any) -> str | None:
    """HL7 TM (HH[MM[SS[.S]]][+/-ZZZZ]) -> FHIR ``time`` hh:mm:ss (FHIR time has no zone: dropped).

    Example: ``"0830"`` -> ``"08:30:00"``; ``"083015.5+0300"`` -> ``"08:30:15.5"``.
    """
    text = _dtm_text(value)
    if not text:
        return None
    m = _TM.fullmatch(text)
    if m is None:
        raise MappingError(f"time: {text!r} is not an HL7 time HH[MM[SS[.S]]][+/-ZZZZ]")
    h, mi, s, frac = m.groups()
    if h > "23" or (mi is not None and mi > "59") or (s is not None and s > "59"):
        raise MappingError(f"time: {text!r} is not an HL7 time (out of range)")
    out = f"{h}:{mi or '00'}:{s or '00'}"
    return f"{out}.{frac}" if frac else out


def period(value: V | str | None, ctx: FnContext, **_: Any) -> dict[str, str] | None:
    """HL7 DR (start^end) -> FHIR ``Period`` (DR[Period]).

    Example: ``"20230101^20231231"`` -> ``{"start": "2023-01-01", "end": "2023-12-31"}``.
    """
    v = _v(value)
    if v is None:
        return None
    parts = _parts(v)
    return _period(_t(parts, 1, v.enc), _t(parts, 2, v.enc), ctx, "period")


def _period(start: str, end: str, ctx: FnContext, what: str) -> dict[str, str] | None:
    out: dict[str, str] = {}
    if start:
        out["start"] = _to_datetime(start.strip(), ctx, what)
    if end:
        out["end"] = _to_datetime(end.strip(), ctx, what)
    return out or None


# --------------------------------------------------------------------------------------------
# numbers and scalars
# --------------------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?[0-9]+")


def _try_number(text: str) -> int | float | None:
    """HL7 NM text -> int (no decimal point) or float; None when it is not a number.

    ``[+-]digits[.digits]`` with a decimal point or comma; no exponents, blanks inside, or
    non-ASCII digits. Out-of-range values (inf, > 4300 digits) are None too.
    """
    t = text.strip()
    if not t or not t.isascii():
        return None
    body = t[1:] if t[0] in "+-" else t
    if "," in body:
        if "." in body:
            return None
        body = body.replace(",", ".")
        t = t.replace(",", ".")
    a, dot, b = body.partition(".")
    if not (a or b) or (a and not a.isdigit()) or (b and not b.isdigit()):
        return None
    try:
        if dot:
            f = float(t)
            return f if math.isfinite(f) else None
        return int(t)
    except ValueError:
        return None


def _number(text: str, what: str) -> int | float:
    n = _try_number(text)
    if n is None:
        raise MappingError(f"{what}: {_clip(text.strip())!r} is not a number (or out of range)")
    return n


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def decimal(value: V | str | None, ctx: FnContext, **_: Any) -> int | float | None:
    """HL7 NM -> FHIR ``decimal`` (a JSON number). A decimal comma is accepted.

    Example: ``"7.5"`` -> ``7.5``; ``"180"`` -> ``180``; ``"5,6"`` -> ``5.6``; ``"n/a"`` raises.
    """
    text = _plain(value).strip()
    return _number(text, "decimal") if text else None


def integer(value: V | str | None, ctx: FnContext, **_: Any) -> int | None:
    """HL7 NM/SI -> FHIR ``integer`` (32-bit signed). Example: ``"3"`` -> ``3``; ``"2.5"`` raises."""
    return _integer(_plain(value).strip())


def _integer_raw(raw: str, enc: Encoding, level: int, ctx: FnContext) -> int | None:
    return _integer(_plain_raw(raw, enc).strip())


def _integer(text: str) -> int | None:
    if not text:
        return None
    if _INT.fullmatch(text) is None:
        raise MappingError(f"integer: {_clip(text)!r} is not an integer")
    n = int(text)
    if not -2147483648 <= n <= 2147483647:
        raise MappingError("integer: value out of the 32-bit range FHIR allows")
    return n


def string(value: V | str | None, ctx: FnContext, *, strip: bool = True, **_: Any) -> str | None:
    """Any HL7 value -> FHIR ``string``: the decoded text (escapes resolved, ``\\.br\\`` -> newline).

    Example: ``"Smith \\T\\ Sons"`` -> ``"Smith & Sons"``. ``strip: false`` keeps surrounding blanks.
    """
    text = _plain(value)
    if strip:
        text = text.strip()
    return text or None


def _string_raw(raw: str, enc: Encoding, level: int, ctx: FnContext, strip: bool | None = None) -> str | None:
    text = _plain_raw(raw, enc)
    if strip is None or strip:  # (not given: strip)
        text = text.strip()
    return text or None


_BOOL = MappingProxyType({"Y": True, "N": False})


def boolean(value: V | str | None, ctx: FnContext, **_: Any) -> bool | None:
    """HL7 ID from table 0136 (Y/N, or a CWE with it in component 1) -> FHIR ``boolean``.
    Example: ``"Y"`` -> ``true``; ``"N^No^HL70136"`` -> ``false``."""
    return _boolean(_first(value), ctx)


def _boolean_raw(raw: str, enc: Encoding, level: int, ctx: FnContext) -> bool | None:
    return _boolean(_first_raw(raw, enc, level), ctx)


def _boolean(text: str, ctx: FnContext) -> bool | None:
    if not text:
        return None
    hit = _BOOL.get(text) if text in _BOOL else _BOOL.get(text.upper())
    if hit is None:
        _unmapped(ctx, f"boolean: code {_clip(text)!r} is not Y or N (HL7 table 0136)",
                  "boolean: a code other than Y or N (HL7 table 0136)")
        return None
    return hit


def uri(value: V | str | None, ctx: FnContext, **_: Any) -> str | None:
    """HL7 HD (or a plain string) -> FHIR ``uri`` (HD[uri]).

    HD: a namespace ID configured in the code systems wins; else HD.2 universal ID (``ISO`` or an
    OID -> ``urn:oid:``, ``UUID`` -> ``urn:uuid:``, a URI as it is); else HD.1 as it is.
    A plain value: an OID -> ``urn:oid:...``, a UUID -> ``urn:uuid:...``, else itself.
    Example: ``"LAB^1.2.643.5.1.13.13.12.1.77.123^ISO"`` -> ``"urn:oid:1.2.643.5.1.13.13.12.1.77.123"``.
    """
    v = _v(value)
    if v is None:
        return None
    return _uri_raw(v.raw, v.enc, v.level, ctx)


def _uri_raw(raw: str, enc: Encoding, level: int, ctx: FnContext) -> str | None:
    if not raw or raw == '""':
        return None
    parts = _split(raw, enc, level)
    if len(parts) > 1:
        ns, uid, utype = _t(parts, 1, enc).strip(), _t(parts, 2, enc).strip(), _t(parts, 3, enc).strip()
        hit = ctx.codesystems.configured(ns) if ns else None
        if hit is None and uid:
            hit = _uid_uri(uid, utype)
        if hit is None and ns:
            hit = ctx.codesystems.identifier_uri(ns) or ns
        if hit is None and uid:
            hit = uid
        text = hit or ""
    else:
        text = _t(parts, 1, enc).strip()
        if is_oid(text):
            return "urn:oid:" + text
        if is_uuid(text):
            return "urn:uuid:" + text.lower()
    if not text:
        return None
    if any(c.isspace() for c in text):
        raise MappingError(f"uri: {_clip(text)!r} contains blanks and is not a URI")
    return text


def _uid_uri(uid: str, utype: str) -> str | None:
    t = utype.upper()
    if is_oid(uid) and t in ("", "ISO", "HL7"):
        return "urn:oid:" + uid
    if is_uuid(uid) and t in ("", "UUID", "GUID"):
        return "urn:uuid:" + uid.lower()
    if is_absolute_uri(uid):
        return uid
    if t == "ISO" and is_oid(uid.removeprefix("urn:oid:")):
        return "urn:oid:" + uid.removeprefix("urn:oid:")
    return None


# --------------------------------------------------------------------------------------------
# codes
# --------------------------------------------------------------------------------------------

_Coding = tuple[str, str, str, str, str]  # system, version, code, display, source system name as sent
_Cwe = tuple[tuple[_Coding, ...], str, tuple[str, ...], tuple[dict[str, str], ...]]  # + the codings as dicts
_CWE_CACHE: dict[tuple[str, int, str, CodeSystems], _Cwe] = {}


def _coding_t(parts: list[str], i: int, ver: int, oid: int, enc: Encoding, cs: CodeSystems,
              warnings: list[str]) -> _Coding | None:
    """The triplet starting at component i (CWE.1-3 / 4-6 / 10-12) as a _Coding tuple."""
    code = _t(parts, i, enc).strip()
    if not code:
        return None
    name = _t(parts, i + 2, enc).strip()
    system = cs.uri(name) if name else None
    if system is None:
        oid_text = _t(parts, oid, enc).strip()
        if oid_text and is_oid(oid_text):
            system = "urn:oid:" + oid_text
        elif name and not is_local(name):
            warnings.append(f"unknown coding system {_clip(name)!r}: coding written without a system")
    return system or "", _t(parts, ver, enc).strip(), code, _t(parts, i + 1, enc).strip(), name


def _coding_dict(c: _Coding) -> dict[str, str]:
    system, version, code, display, _name = c
    out: dict[str, str] = {}
    if system:
        out["system"] = system
    if version:
        out["version"] = version
    out["code"] = code
    if display:
        out["display"] = display
    return out


def _parse_cwe(v: V, cs: CodeSystems) -> _Cwe:
    enc = v.enc
    parts = _parts(v)
    n = len(parts)
    warnings: list[str] = []
    codings: list[_Coding] = []
    for i, ver, oid in ((1, 7, 14), (4, 8, 17), (10, 13, 20)):
        if i > n:
            break
        c = _coding_t(parts, i, ver, oid, enc, cs, warnings)
        if c is not None and all(c[0] != o[0] or c[2] != o[2] for o in codings):  # same system|code: once
            codings.append(c)
    text = _t(parts, 9, enc).strip() if n >= 9 else ""
    if not codings and not text:
        text = _t(parts, 2, enc).strip() or _t(parts, 5, enc).strip()
    return tuple(codings), text, tuple(warnings), tuple(_coding_dict(c) for c in codings)


def _cwe(raw: str, enc: Encoding, level: int, cs: CodeSystems) -> _Cwe:
    key = (raw, level, enc.component + enc.subcomponent + enc.escape, cs)
    hit = _CWE_CACHE.get(key)
    if hit is None:
        hit = _parse_cwe(V(raw, enc, level), cs)
        if len(_CWE_CACHE) >= _CACHE_MAX:
            _CWE_CACHE.clear()
        _CWE_CACHE[key] = hit
    return hit


def _codeable(raw: str, enc: Encoding, level: int, ctx: FnContext, concept_map: str | None,
              private: bool = False) -> dict[str, Any] | None:
    codings_t, text, warnings, dicts = _cwe(raw, enc, level, ctx.codesystems)
    for w in warnings:
        _warn(ctx, w)
    if not codings_t:
        return {"text": text} if text else None
    codings = [d.copy() for d in dicts]  # (the cached ones are never handed out)
    if concept_map:
        memo = ctx.memo
        if memo is None:
            _translate(ctx, concept_map, codings, [c[4] for c in codings_t], private)
        else:  # the translation depends only on the codings: looked up once per mapping
            key = (concept_map, codings_t, private)
            got = memo.get(key)
            if got is None:
                got = _translation(ctx, concept_map, codings, [c[4] for c in codings_t], private)
                if len(memo) >= _CACHE_MAX:
                    memo.clear()
                memo[key] = got
            new, message, warning = got
            if new is not None:
                codings.append(dict(new))
            elif message is not None:
                _unmapped(ctx, message, warning)
    out: dict[str, Any] = {"coding": codings}
    if text:
        out["text"] = text
    return out


def _translate(ctx: FnContext, name: str, codings: list[dict[str, str]], sources: list[str],
               private: bool = False) -> None:
    new, message, warning = _translation(ctx, name, codings, sources, private)
    if new is not None:
        codings.append(new)
    elif message is not None:
        _unmapped(ctx, message, warning)


def _translation(ctx: FnContext, name: str, codings: list[dict[str, str]], sources: list[str],
                 private: bool = False) -> tuple[dict[str, str] | None, str | None, str | None]:
    """What the concept map says about codings: (the target coding to append, None, None), or
    (None, None, None) when it is there already, or (None, error, warning) when no coding maps."""
    lookup = ctx.concept_map
    if lookup is None:
        raise MappingError(f"concept map {name!r} is used but no concept maps are loaded")
    for coding, source in zip(codings, sources, strict=True):
        system = coding.get("system")
        hit = lookup(name, system or source or None, coding["code"])
        if hit is None and system and source and source != system:
            hit = lookup(name, source, coding["code"])  # a map written with the HL7 name ("LN")
        if hit is not None:
            system, code, display = hit
            new: dict[str, str] = {}
            if system:
                new["system"] = system
            new["code"] = code
            if display:
                new["display"] = display
            if any(c.get("system") == new.get("system") and c["code"] == code for c in codings):
                return None, None, None
            return new, None, None
    first = codings[0]
    system = first.get("system") or sources[0] or "?"
    return (None, f"concept map {name!r} has no target for {system}|{first['code']}",
            f"concept map {name!r} has no target for a coded value of {system}" if private else None)


def codeable_concept(value: V | str | None, ctx: FnContext, *, concept_map: str | None = None,
                     **_: Any) -> dict[str, Any] | None:
    """HL7 CWE/CE/CNE -> FHIR ``CodeableConcept`` (CWE[CodeableConcept]).

    Triplets 1-3, 4-6 and 10-12 become codings (versions from 7, 8, 13; when a system name does
    not resolve, the OID in 14/17/20 is used); 9 (original text) becomes ``text`` (2 when there
    is no code at all). ``concept_map: NAME`` translates the first coding the map knows and
    appends the target coding; no target -> ctx.unmapped policy.
    Example: ``"2345-7^Glucose^LN^GLU^Глюкоза^L"`` ->
    ``{"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"},
    {"code": "GLU", "display": "Глюкоза"}]}``.
    """
    v = _v(value)
    if v is None:
        return None
    return _codeable(v.raw, v.enc, v.level, ctx, concept_map)


def _codeable_concept_raw(raw: str, enc: Encoding, level: int, ctx: FnContext,
                          concept_map: str | None = None) -> dict[str, Any] | None:
    if not raw or raw == '""':
        return None
    return _codeable(raw, enc, level, ctx, concept_map)


def coding(value: V | str | None, ctx: FnContext, **_: Any) -> dict[str, str] | None:
    """HL7 CWE/CE/CNE -> FHIR ``Coding`` from the first triplet (CWE[Coding]: 1 code, 2 display,
    3 system, 7 version). Example: ``"718-7^Hemoglobin^LN"`` ->
    ``{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}``.
    """
    v = _v(value)
    if v is None:
        return None
    warnings: list[str] = []
    c = _coding_t(_parts(v), 1, 7, 14, v.enc, ctx.codesystems, warnings)
    for w in warnings:
        _warn(ctx, w)
    return _coding_dict(c) if c is not None else None


def code(value: V | str | None, ctx: FnContext, **_: Any) -> str | None:
    """The first code of a CWE/CE/CNE/ID/IS (component 1, else 4, else 10) as a FHIR ``code``.

    Example: ``"F^Final^HL70085"`` -> ``"F"``.
    """
    v = _v(value)
    if v is None:
        return None
    parts = _parts(v)
    for i in (1, 4, 10):
        text = _t(parts, i, v.enc).strip()
        if text:
            return text
    return None


# --------------------------------------------------------------------------------------------
# fixed HL7 tables (from shared/corpus/v2-to-fhir/mappings/codesystems; tests compare)
# --------------------------------------------------------------------------------------------

#: 0001 AdministrativeSex -> administrative-gender
SEX_0001 = MappingProxyType({"F": "female", "M": "male", "O": "other", "U": "unknown", "A": "other", "N": "other"})

#: spellings outside table 0001 that senders use (Russian Ж/М - the М is Cyrillic - and full words)
SEX_ALIASES = MappingProxyType({"FEMALE": "female", "MALE": "male", "Ж": "female", "\u041c": "male",
                               "ЖЕН": "female", "МУЖ": "male"})

#: 0085 ObservationResultStatusCodesInterpretation -> observation-status (B I N O R S U V: no target)
OBSERVATION_STATUS_0085 = MappingProxyType({
    "A": "amended", "C": "corrected", "D": "entered-in-error", "F": "final", "P": "preliminary",
    "X": "cancelled", "W": "entered-in-error",
})

#: 0123 ResultStatus[Non-Queries] -> diagnostic-report-status (A M N: no target; Y Z: error)
REPORT_STATUS_0123 = MappingProxyType({
    "O": "registered", "I": "registered", "S": "registered", "P": "preliminary", "C": "corrected",
    "R": "partial", "F": "final", "X": "cancelled",
})
REPORT_STATUS_ERRORS = frozenset({"Y", "Z"})

INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
#: 0078 InterpretationCodes -> v3-ObservationInterpretation (code -> display; AC HM OBX QCF TOX: none)
INTERPRETATION_0078 = MappingProxyType({
    "<": "Off scale low", ">": "Off scale high", "A": "Abnormal", "AA": "Critical abnormal", "B": "Better",
    "CAR": "Carrier", "D": "Significant change down", "DET": "Detected", "E": "Equivocal",
    "EX": "outside threshold", "EXP": "Expected", "H": "High", "HH": "Critical high",
    "HU": "Significantly high", "I": "Intermediate", "IE": "Insufficient evidence", "IND": "Indeterminate",
    "L": "Low", "LL": "Critical low", "LU": "Significantly low", "MS": "moderately susceptible",
    "N": "Normal", "NCL": "No CLSI defined breakpoint", "ND": "Not detected", "NEG": "Negative",
    "NR": "Non-reactive", "NS": "Non-susceptible", "POS": "Positive", "R": "Resistant", "RR": "Reactive",
    "S": "Susceptible", "SDD": "Susceptible-dose dependent", "SYN-R": "Synergy - resistant",
    "SYN-S": "Synergy - susceptible", "U": "Significant change up", "VS": "very susceptible",
    "UNE": "Unexpected", "W": "Worse", "WR": "Weakly reactive",
})

#: 0200 NameType -> name-use
NAME_USE_0200 = MappingProxyType({
    "BAD": "old", "D": "usual", "L": "official", "M": "maiden", "MSK": "anonymous", "N": "nickname",
    "NAV": "temp", "R": "official", "TEMP": "temp",
})
#: 0201 TelecommunicationUseCode -> contact-point-use
TELECOM_USE_0201 = MappingProxyType({"PRN": "home", "WPN": "work", "PRS": "mobile"})
#: 0202 TelecommunicationEquipmentType -> contact-point-system (CP: phone with use mobile)
TELECOM_SYSTEM_0202 = MappingProxyType({
    "PH": "phone", "FX": "fax", "MD": "other", "CP": "phone", "SAT": "other", "BP": "pager",
    "Internet": "email", "X.400": "email", "TDD": "other", "TTY": "other",
})
#: 0190 AddressType -> address-use / address-type
ADDRESS_USE_0190 = MappingProxyType({"BA": "old", "BI": "billing", "C": "temp", "B": "work", "H": "home",
                                     "O": "work"})
ADDRESS_TYPE_0190 = MappingProxyType({"M": "postal", "SH": "postal"})

IDENTIFIER_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
#: 0203 IdentifierType (identity map onto v2-0203; code -> display). PLAC and FILL are not in the
#: shared CSV but are v2-0203 codes the V2-to-FHIR segment maps assign (ORC-2/3, OBR-2/3).
IDENTIFIER_TYPE_0203 = MappingProxyType({
    "ACSN": "Accession ID", "AM": "American Express", "AMA": "American Medical Association Number",
    "AN": "Account number", "ANON": "Anonymous identifier", "ANC": "Account number Creditor",
    "AND": "Account number debitor", "ANT": "Temporary Account Number",
    "APRN": "Advanced Practice Registered Nurse number", "ASID": "Ancestor Specimen ID",
    "BA": "Bank Account Number", "BC": "Bank Card Number", "BCT": "Birth Certificate",
    "BR": "Birth registry number", "BRN": "Breed Registry Number", "BSNR": "Primary physician office number",
    "CC": "Cost Center number", "CONM": "Change of Name Document", "CZ": "Citizenship Card",
    "CY": "County number", "DDS": "Dentist license number",
    "DEA": "Drug Enforcement Administration registration number", "DI": "Diner’s Club card",
    "DFN": "Drug Furnishing or prescriptive authority Number", "DL": "Driver’s license number",
    "DN": "Doctor number", "DO": "Osteopathic License number", "DP": "Diplomatic Passport",
    "DPM": "Podiatrist license number", "DR": "Donor Registration Number", "DS": "Discover Card",
    "EI": "Employee number", "EN": "Employer number", "ESN": "Staff Enterprise Number", "FI": "Facility ID",
    "GI": "Guarantor internal identifier", "GL": "General ledger number",
    "GN": "Guarantor external identifier", "HC": "Health Card Number",
    "JHN": "Jurisdictional health number (Canada)", "IND": "Indigenous/Aboriginal",
    "LACSN": "Laboratory Accession ID", "LANR": "Lifelong physician number",
    "LI": "Labor and industries number", "LN": "License number", "LR": "Local Registry ID",
    "MA": "Patient Medicaid number", "MB": "Member Number", "MC": "Patient’s Medicare number",
    "MCD": "Practitioner Medicaid number", "MCN": "Microchip Number", "MCR": "Practitioner Medicare number",
    "MCT": "Marriage Certificate", "MD": "Medical License number", "MI": "Military ID number",
    "MR": "Medical record number", "MRT": "Temporary Medical Record Number", "MS": "MasterCard",
    "NBSNR": "Secondary physician office number", "NCT": "Naturalization Certificate",
    "NE": "National employer identifier", "NH": "National Health Plan Identifier",
    "NI": "National unique individual identifier", "NII": "National Insurance Organization Identifier",
    "NIIP": "National Insurance Payor Identifier (Payor)",
    "NP": "Nurse practitioner number", "NPI": "National provider identifier",
    "OD": "Optometrist license number", "PA": "Physician Assistant number", "PC": "Parole Card",
    "PCN": "Penitentiary/correctional institution Number", "PE": "Living Subject Enterprise Number",
    "PEN": "Pension Number", "PI": "Patient internal identifier", "PN": "Person number",
    "PNT": "Temporary Living Subject Number", "PPIN": "Medicare/CMS Performing Provider Identification Number",
    "PPN": "Passport number", "PRC": "Permanent Resident Card Number", "PRN": "Provider number",
    "PT": "Patient external identifier", "QA": "QA number", "RI": "Resource identifier",
    "RPH": "Pharmacist license number", "RN": "Registered Nurse Number", "RR": "Railroad Retirement number",
    "RRI": "Regional registry ID", "RRP": "Railroad Retirement Provider", "SID": "Specimen ID",
    "SL": "State license", "SN": "Subscriber Number", "SP": "Study Permit", "SR": "State registry ID",
    "SS": "Social Security number", "TAX": "Tax ID number", "TN": "Treaty Number/ (Canada)",
    "TPR": "Temporary Permanent Resident (Canada)", "U": "Unspecified identifier",
    "UPIN": "Medicare/CMS (formerly HCFA)’s Universal Physician Identification numbers",
    "USID": "Unique Specimen ID", "VN": "Visit number", "VP": "Visitor Permit", "VS": "VISA",
    "WC": "WIC identifier", "WCN": "Workers’ Comp Number", "WP": "Work Permit",
    "XX": "Organization identifier",
    "PLAC": "Placer Identifier", "FILL": "Filler Identifier",
})
_NN_DISPLAY = "National Person Identifier where the xxx is the ISO table 3166 3-character (alphabetic) country code"
_NN = re.compile(r"NN[A-Z]{3}")


def gender(value: V | str | None, ctx: FnContext, *, default: str | None = None, **_: Any) -> str | None:
    """HL7 table 0001 (PID-8) -> FHIR ``administrative-gender`` code.

    F female, M male, O/A/N other, U unknown; also accepted: Female/Male and Russian Ж/М (Cyrillic).
    Example: ``"F"`` -> ``"female"``. Other codes: ``default`` when given, else ctx.unmapped policy.
    """
    return _gender(_first(value), ctx, default)


def _gender_raw(raw: str, enc: Encoding, level: int, ctx: FnContext, default: str | None = None) -> str | None:
    return _gender(_first_raw(raw, enc, level), ctx, default)


def _gender(text: str, ctx: FnContext, default: str | None) -> str | None:
    if not text:
        return None
    hit = SEX_0001.get(text) or SEX_ALIASES.get(text.upper())
    return hit or _table(ctx, SEX_0001, text, "gender (HL7 table 0001)", default, private=True)


def observation_status(value: V | str | None, ctx: FnContext, *, default: str | None = None,
                       **_: Any) -> str | None:
    """HL7 table 0085 (OBX-11) -> FHIR ``Observation.status``.

    A amended, C corrected, D/W entered-in-error, F final, P preliminary, X cancelled. B I N O R S
    U V have no target in the V2-to-FHIR table: ``default`` when given (e.g. ``default: final``),
    else ctx.unmapped policy. Example: ``"F"`` -> ``"final"``.
    """
    text = _first(value)
    return _table(ctx, OBSERVATION_STATUS_0085, text, "observation_status (HL7 table 0085)", default) \
        if text else None


def _observation_status_raw(raw: str, enc: Encoding, level: int, ctx: FnContext,
                            default: str | None = None) -> str | None:
    text = _first_raw(raw, enc, level)
    hit = OBSERVATION_STATUS_0085.get(text)  # the usual case: a code of the table as it stands
    if hit is not None:
        return hit
    return _table(ctx, OBSERVATION_STATUS_0085, text, "observation_status (HL7 table 0085)", default) \
        if text else None


def report_status(value: V | str | None, ctx: FnContext, *, default: str | None = None,
                  **_: Any) -> str | None:
    """HL7 table 0123 (OBR-25) -> FHIR ``DiagnosticReport.status``.

    O/I/S registered, P preliminary, C corrected, R partial, F final, X cancelled. Y and Z ("no
    order", "no such patient") always raise MappingError, as the table says. A M N have no target:
    ``default`` when given, else ctx.unmapped policy. Example: ``"F"`` -> ``"final"``.
    """
    return _report_status(_first(value), ctx, default)


def _report_status_raw(raw: str, enc: Encoding, level: int, ctx: FnContext,
                       default: str | None = None) -> str | None:
    return _report_status(_first_raw(raw, enc, level), ctx, default)


def _report_status(text: str, ctx: FnContext, default: str | None) -> str | None:
    if not text:
        return None
    if text.upper() in REPORT_STATUS_ERRORS:
        raise MappingError(f"report_status: result status {text!r} (HL7 table 0123) means the report "
                           "cannot be accepted")
    return _table(ctx, REPORT_STATUS_0123, text, "report_status (HL7 table 0123)", default)


def interpretation(value: V | str | None, ctx: FnContext, *, default: str | None = None,
                   **_: Any) -> dict[str, Any] | None:
    """HL7 table 0078 (one OBX-8 repetition, CWE) -> FHIR ``CodeableConcept`` in
    v3-ObservationInterpretation. Example: ``"H"`` -> ``{"coding": [{"system":
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H",
    "display": "High"}]}``. Codes without a target (AC HM OBX QCF TOX, local codes): ``default``
    (a 0078 code) when given, else ctx.unmapped policy.
    """
    return _interpretation(_first(value), ctx, default)


def _interpretation_raw(raw: str, enc: Encoding, level: int, ctx: FnContext,
                        default: str | None = None) -> dict[str, Any] | None:
    return _interpretation(_first_raw(raw, enc, level), ctx, default)


def _interpretation(text: str, ctx: FnContext, default: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    display = INTERPRETATION_0078.get(text) or INTERPRETATION_0078.get(text.upper())
    if display is None:
        if default and default in INTERPRETATION_0078:
            text, display = default, INTERPRETATION_0078[default]
        else:
            _unmapped(ctx, f"interpretation: code {_clip(text)!r} (HL7 table 0078) has no FHIR equivalent",
                      "interpretation: a code (HL7 table 0078) without FHIR equivalent")
            return None
    return {"coding": [{"system": INTERPRETATION_SYSTEM, "code": text.upper(), "display": display}]}


def _first(value: V | str | None) -> str:
    """Component 1 text of a coded value (ID/IS/CWE.1), stripped."""
    if value is None:
        return ""
    if isinstance(value, V):
        return _first_raw(value.raw, value.enc, value.level)
    text = str(value)
    return "" if text == '""' else text.split("^", 1)[0].strip()


def _first_raw(raw: str, enc: Encoding, level: int) -> str:
    """_first of the encoded value `raw` at `level`."""
    if not raw or raw == '""':
        return ""
    if level == 0:
        if enc.component in raw:
            raw = raw.split(enc.component, 1)[0]
    elif level == 1 and enc.subcomponent in raw:
        raw = raw.split(enc.subcomponent, 1)[0]
    if enc.escape in raw:
        raw = unescape(raw, enc)
    return raw.strip()


# --------------------------------------------------------------------------------------------
# names, identifiers, addresses, telecom
# --------------------------------------------------------------------------------------------

def human_name(value: V | str | None, ctx: FnContext, **_: Any) -> dict[str, Any] | None:
    """HL7 XPN -> FHIR ``HumanName`` (XPN[HumanName]).

    1.1 family (FN surname); 2 then 3 given (3, e.g. an отчество, stays one given name); 5 prefix;
    4, 6, 14 suffix; 7 use via table 0200 (unmapped types: no use); 12/13 period (else 10 DR).
    Example: ``"Иванов^Иван^Петрович^^^^L"`` ->
    ``{"use": "official", "family": "Иванов", "given": ["Иван", "Петрович"]}``.
    """
    v = _v(value)
    if v is None:
        return None
    return _human_name_raw(v.raw, v.enc, v.level, ctx)


def _human_name_raw(raw: str, enc: Encoding, level: int, ctx: FnContext) -> dict[str, Any] | None:
    if not raw or raw == '""':
        return None
    parts = _split(raw, enc, level)
    n = len(parts)
    out: dict[str, Any] = {}
    if n >= 7:
        use = _t(parts, 7, enc).strip()
        if use:
            hit = NAME_USE_0200.get(use) or NAME_USE_0200.get(use.upper())
            if hit:
                out["use"] = hit
    fam = _sub(parts, 1, enc) if level == 0 else parts[:1]
    family = _t(fam, 1, enc).strip() if fam else ""
    if family:
        out["family"] = family
    given = [g for g in (_t(parts, 2, enc).strip(), _t(parts, 3, enc).strip()) if g]
    if given:
        out["given"] = given
    prefix = _t(parts, 5, enc).strip()
    if prefix:
        out["prefix"] = [prefix]
    suffix = [s for s in (_t(parts, 4, enc).strip(), _t(parts, 6, enc).strip(), _t(parts, 14, enc).strip()) if s]
    if suffix:
        out["suffix"] = suffix
    if n >= 10:
        per = _period(_t(parts, 12, enc), _t(parts, 13, enc), ctx, "human_name period")
        if per is None:
            dr = _sub(parts, 10, enc)
            per = _period(_t(dr, 1, enc), _t(dr, 2, enc), ctx, "human_name period") if dr else None
        if per:
            out["period"] = per
    if "family" not in out and "given" not in out and "prefix" not in out and "suffix" not in out:
        return None
    return out


def _type_cc(code_text: str) -> dict[str, Any]:
    display = IDENTIFIER_TYPE_0203.get(code_text)
    if display is None and _NN.fullmatch(code_text):
        display = _NN_DISPLAY
    if display is None:
        return {"text": code_text}
    return {"coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": code_text, "display": display}]}


_SNILS_TYPES = frozenset({"SNILS", "СНИЛС"})
_ENP_TYPES = frozenset({"ENP", "ЕНП"})
_SNILS_SYSTEMS = frozenset({SNILS, *SNILS_ALIASES})
_ENP_SYSTEMS = frozenset({ENP, *ENP_ALIASES})


def _russian(system: str | None, type_code: str, value: str, what: str) -> tuple[str | None, str]:
    """СНИЛС / ЕНП: canonical system and normalised, checked value (store.identity rules)."""
    t = type_code.upper()
    if system in _SNILS_SYSTEMS or t in _SNILS_TYPES:
        kind, system = "СНИЛС", SNILS
    elif system in _ENP_SYSTEMS or t in _ENP_TYPES:
        kind, system = "ЕНП", ENP
    else:
        return system, value
    try:
        return canonical(system, value)
    except ValidationError as exc:  # the message names no digits
        raise MappingError(f"{what}: invalid {kind}: {exc}") from None


def _identifier(value: str, system: str | None, type_code: str, ctx: FnContext, what: str, *,
                assigner: str = "", use: str | None = None, period: dict[str, str] | None = None,
                extensions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    system, value = _russian(system, type_code, value, what)
    out: dict[str, Any] = {}
    if extensions:
        out["extension"] = extensions
    if use:
        out["use"] = use
    if type_code:
        out["type"] = _type_cc(type_code)
    if system:
        out["system"] = system
    out["value"] = value
    if period:
        out["period"] = period
    if assigner and not system:
        out["assigner"] = {"display": assigner}
    return out


_HD_CACHE: dict[tuple[CodeSystems, tuple[str, ...]], tuple[str | None, str]] = {}


def _hd_system(hd: list[str], enc: Encoding, cs: CodeSystems) -> tuple[str | None, str]:
    """(system, unresolved namespace) from an HD split into subcomponents (memoised by its text:
    assigning authorities are few and repeat in every message)."""
    head = tuple(hd[:3])
    if enc.escape in "".join(head):
        return _hd_system_of(hd, enc, cs)
    key = (cs, head)
    hit = _HD_CACHE.get(key)
    if hit is None:
        hit = _hd_system_of(hd, enc, cs)
        if len(_HD_CACHE) >= _CACHE_MAX:
            _HD_CACHE.clear()
        _HD_CACHE[key] = hit
    return hit


def _hd_system_of(hd: list[str], enc: Encoding, cs: CodeSystems) -> tuple[str | None, str]:
    ns, uid, utype = _t(hd, 1, enc).strip(), _t(hd, 2, enc).strip(), _t(hd, 3, enc).strip()
    system = cs.configured(ns) if ns else None
    if system is None and uid:
        system = _uid_uri(uid, utype)
    if system is None and ns:
        system = cs.identifier_uri(ns)
    return system, ("" if system else ns or uid)


def identifier(value: V | str | None, ctx: FnContext, *, system: str | None = None, type: str | None = None,
               use: str | None = None, **_: Any) -> dict[str, Any] | None:
    """HL7 CX -> FHIR ``Identifier`` (CX[Identifier]).

    1 value; 4 assigning authority HD -> system (a namespace configured in the code systems, else
    4.2 with 4.3: ISO/OID -> ``urn:oid:``, UUID -> ``urn:uuid:``, a URI as is; else a known name
    or OID in 4.1; unresolved -> ``assigner.display``); 5 type via table 0203 (v2-0203; other
    codes -> ``type.text``); 2/3 check digit extensions; 7/8 period. СНИЛС (system
    urn:oid:1.2.643.100.3 or type SNILS/СНИЛС) and ЕНП (type ENP/ЕНП or the ЕНП system) get their
    canonical system and a normalised value; a bad СНИЛС check number or ЕНП length raises
    MappingError. Args: ``system`` when the value has none, ``type`` when CX.5 is empty, ``use``.
    Example: ``"112-233-445 95^^^ПФР&1.2.643.100.3&ISO^SNILS"`` ->
    ``{"type": {"text": "SNILS"}, "system": "urn:oid:1.2.643.100.3", "value": "11223344595"}``.
    """
    v = _v(value)
    if v is None:
        return None
    return _identifier_raw(v.raw, v.enc, v.level, ctx, system, type, use)


def _identifier_raw(raw: str, enc: Encoding, level: int, ctx: FnContext, system: str | None = None,
                    type: str | None = None, use: str | None = None) -> dict[str, Any] | None:
    if not raw or raw == '""':
        return None
    parts = _split(raw, enc, level)
    val = _t(parts, 1, enc).strip()
    if not val:
        return None
    n = len(parts)
    sys_uri, ns = _hd_system(_sub(parts, 4, enc), enc, ctx.codesystems) if n >= 4 else (None, "")
    if sys_uri is None and system:
        sys_uri, ns = system, ""
    type_code = (_t(parts, 5, enc).strip() if n >= 5 else "") or (type or "")
    extensions: list[dict[str, str]] = []
    if n >= 2:
        check = _t(parts, 2, enc).strip()
        if check:
            extensions.append({"url": "http://hl7.org/fhir/StructureDefinition/identifier-checkDigit",
                               "valueString": check})
        scheme = _t(parts, 3, enc).strip() if n >= 3 else ""
        if scheme:
            extensions.append({"url": "http://hl7.org/fhir/StructureDefinition/namingsystem-checkDigit",
                               "valueString": scheme})
    per = _period(_t(parts, 7, enc), _t(parts, 8, enc), ctx, "identifier period") if n >= 7 else None
    return _identifier(val, sys_uri, type_code, ctx, "identifier", assigner=ns, use=use, period=per,
                       extensions=extensions)


def identifier_ei(value: V | str | None, ctx: FnContext, *, system: str | None = None,
                  type: str | None = None, use: str | None = None, **_: Any) -> dict[str, Any] | None:
    """HL7 EI -> FHIR ``Identifier`` (EI[Identifier-System]).

    1 value; system from 2 namespace (configured name) / 3 universal ID with 4 type (ISO/OID ->
    ``urn:oid:``, UUID -> ``urn:uuid:``, URI as is) / a known name or OID in 2; unresolved ->
    ``assigner.display``. Args: ``system`` when the value has none, ``type`` a table 0203 code
    (e.g. PLAC, FILL), ``use``. СНИЛС / ЕНП rules as in ``identifier``.
    Example: ``"ORD-1001^LIS^1.2.643.5.1.13.13.12.1.77.1^ISO"`` with ``type: FILL`` ->
    ``{"type": {...FILL...}, "system": "urn:oid:1.2.643.5.1.13.13.12.1.77.1", "value": "ORD-1001"}``.
    """
    v = _v(value)
    if v is None:
        return None
    return _identifier_ei_raw(v.raw, v.enc, v.level, ctx, system, type, use)


def _identifier_ei_raw(raw: str, enc: Encoding, level: int, ctx: FnContext, system: str | None = None,
                       type: str | None = None, use: str | None = None) -> dict[str, Any] | None:
    if not raw or raw == '""':
        return None
    parts = _split(raw, enc, level)
    val = _t(parts, 1, enc).strip()
    if not val:
        return None
    sys_uri, ns = _hd_system(parts[1:4], enc, ctx.codesystems) if len(parts) > 1 else (None, "")
    if sys_uri is None and system:
        sys_uri, ns = system, ""
    return _identifier(val, sys_uri, type or "", ctx, "identifier_ei", assigner=ns, use=use)


def placer_identifier(value: V | str | None, ctx: FnContext, *, system: str | None = None,
                      use: str | None = None, **_: Any) -> dict[str, Any] | None:
    """HL7 EI placer order number (ORC-2 / OBR-2) -> FHIR ``Identifier`` typed PLAC (v2-0203), as
    the OBR/ORC segment maps assign; otherwise as ``identifier_ei``.
    Example: ``"142324567^YOUR_EHR"`` -> ``{"type": {"coding": [{"system":
    "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC", "display": "Placer Identifier"}]},
    "value": "142324567", "assigner": {"display": "YOUR_EHR"}}``.
    """
    return identifier_ei(value, ctx, system=system, type="PLAC", use=use)


def _placer_identifier_raw(raw: str, enc: Encoding, level: int, ctx: FnContext, system: str | None = None,
                           use: str | None = None) -> dict[str, Any] | None:
    return _identifier_ei_raw(raw, enc, level, ctx, system, "PLAC", use)


def filler_identifier(value: V | str | None, ctx: FnContext, *, system: str | None = None,
                      use: str | None = None, **_: Any) -> dict[str, Any] | None:
    """HL7 EI filler order number (ORC-3 / OBR-3) -> FHIR ``Identifier`` typed FILL (v2-0203);
    otherwise as ``identifier_ei``. Example: ``"R-778^LIS^1.2.643.5.1.13.13.12.1.77.1^ISO"`` ->
    ``{"type": {...FILL...}, "system": "urn:oid:1.2.643.5.1.13.13.12.1.77.1", "value": "R-778"}``.
    """
    return identifier_ei(value, ctx, system=system, type="FILL", use=use)


def _filler_identifier_raw(raw: str, enc: Encoding, level: int, ctx: FnContext, system: str | None = None,
                           use: str | None = None) -> dict[str, Any] | None:
    return _identifier_ei_raw(raw, enc, level, ctx, system, "FILL", use)


def address(value: V | str | None, ctx: FnContext, **_: Any) -> dict[str, Any] | None:
    """HL7 XAD -> FHIR ``Address`` (XAD[Address]).

    1 SAD (1.1-1.3) and 2 and 19 -> ``line``; 3 city; 4 state; 5 postalCode; 6 country; 9 district
    (CWE.9, else CWE.2, else CWE.1: an IS county code before v2.7); 7 via table 0190: M/SH ->
    type postal, BA/BI/C/B/H/O -> use; 12 (DR) or 13/14 period.
    Example: ``"ул. Ленина, д. 1^кв. 5^Москва^^101000^RUS^H"`` ->
    ``{"use": "home", "line": ["ул. Ленина, д. 1", "кв. 5"], "city": "Москва",
    "postalCode": "101000", "country": "RUS"}``.
    """
    v = _v(value)
    if v is None:
        return None
    return _address_raw(v.raw, v.enc, v.level, ctx)


def _address_raw(raw: str, enc: Encoding, level: int, ctx: FnContext) -> dict[str, Any] | None:
    if not raw or raw == '""':
        return None
    parts = _split(raw, enc, level)
    n = len(parts)
    t = _texts(parts, enc, 19)  # component i at t[i - 1]
    out: dict[str, Any] = {}
    kind = t[6]
    if kind:
        if kind in ADDRESS_USE_0190:
            out["use"] = ADDRESS_USE_0190[kind]
        elif kind in ADDRESS_TYPE_0190:
            out["type"] = ADDRESS_TYPE_0190[kind]
    sad = _sub(parts, 1, enc) if level == 0 else parts[:1]
    lines = [s for s in (_t(sad, 1, enc).strip(), _t(sad, 2, enc).strip(), _t(sad, 3, enc).strip()) if s]
    if t[1]:
        lines.append(t[1])
    if t[18]:
        lines.append(t[18])
    if lines:
        out["line"] = lines
    for i, key in ((3, "city"), (9, "district"), (4, "state"), (5, "postalCode"), (6, "country")):
        if i == 9:
            cwe = _sub(parts, 9, enc)
            # CWE[string]: 9, else 2; else 1 (before v2.7 XAD.9 was an IS code, now CWE.1)
            s = (_t(cwe, 9, enc) or _t(cwe, 2, enc) or _t(cwe, 1, enc)).strip() if cwe else ""
        else:
            s = t[i - 1]
        if s:
            out[key] = s
    if n >= 12:
        dr = _sub(parts, 12, enc)
        per = _period(_t(dr, 1, enc), _t(dr, 2, enc), ctx, "address period") if dr else None
        if per is None and n >= 13:
            per = _period(_t(parts, 13, enc), _t(parts, 14, enc), ctx, "address period")
        if per:
            out["period"] = per
    if out.keys().isdisjoint(_ADDRESS_PARTS):
        return None
    return out


_ADDRESS_PARTS = frozenset({"line", "city", "district", "state", "postalCode", "country"})


_XTN_EXT = (
    (5, "http://hl7.org/fhir/StructureDefinition/contactpoint-country"),
    (6, "http://hl7.org/fhir/StructureDefinition/contactpoint-area"),
    (7, "http://hl7.org/fhir/StructureDefinition/contactpoint-local"),
    (8, "http://hl7.org/fhir/StructureDefinition/contactpoint-extension"),
)
_DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


def contact_point(value: V | str | None, ctx: FnContext, **_: Any) -> dict[str, Any] | None:
    """HL7 XTN -> FHIR ``ContactPoint`` (XTN[ContactPoint]).

    system from 3 via table 0202 (PH phone, CP phone + use mobile, FX fax, BP pager, Internet/X.400
    email, others other; no 3 but 4 -> email; neither -> ``_system`` data-absent-reason unknown);
    use from 2 via table 0201 (PRN home, WPN work, PRS mobile); value: 4 for email, else 12, else
    "+5 6 7 X8" from the parts, else 1 (legacy); 5-8 as contactpoint-* extensions; 18 rank;
    13/14 period. Example: ``"^PRN^PH^^7^495^1234567"`` -> ``{"extension": [...], "system":
    "phone", "value": "+7 495 1234567", "use": "home"}``.
    """
    v = _v(value)
    if v is None:
        return None
    return _contact_point_raw(v.raw, v.enc, v.level, ctx)


def _contact_point_raw(raw: str, enc: Encoding, level: int, ctx: FnContext) -> dict[str, Any] | None:
    if not raw or raw == '""':
        return None
    parts = _split(raw, enc, level)
    n = len(parts)
    t = _texts(parts, enc, 18)  # component i at t[i - 1]
    equip, email_addr, use_code = t[2], t[3], t[1]
    system = TELECOM_SYSTEM_0202.get(equip) if equip else None
    if system is None and equip:
        system = TELECOM_SYSTEM_0202.get(equip.upper()) or ("email" if equip.upper() in ("INTERNET", "X.400")
                                                             else None)
    if system is None and email_addr and (not equip or use_code == "NET"):
        system = "email"
    if system is None and equip:
        system = "other"  # an equipment type outside table 0202
    is_email = system == "email"
    out: dict[str, Any] = {}
    ext: list[dict[str, str]] = []
    if is_email:
        val = email_addr or t[0]
    else:
        for i, url in _XTN_EXT:  # (5-8: '' when absent)
            if t[i - 1]:
                ext.append({"url": url, "valueString": t[i - 1]})
        country, area, local, ext_no = t[4], t[5], t[6], t[7]
        val = t[11]
        if not val and local:
            pieces = ([f"+{country}"] if country else []) + ([area] if area else []) + [local]
            val = " ".join(pieces) + (f" X{ext_no}" if ext_no else "")
        if not val:
            val = t[0]
    if not val and not ext:
        return None
    if ext:
        out["extension"] = ext
    if system:
        out["system"] = system
    elif val:
        out["_system"] = {"extension": [{"url": _DATA_ABSENT, "valueCode": "unknown"}]}
    if val:
        out["value"] = val
    use = "mobile" if equip.upper() == "CP" else TELECOM_USE_0201.get(use_code)
    if use:
        out["use"] = use
    if n >= 13:
        rank = t[17]
        if rank:
            r = _try_number(rank)
            if isinstance(r, int) and r > 0:
                out["rank"] = r
        per = _period(_t(parts, 13, enc), _t(parts, 14, enc), ctx, "contact_point period")
        if per:
            out["period"] = per
    return out


# --------------------------------------------------------------------------------------------
# quantities and observation values
# --------------------------------------------------------------------------------------------

_UCUM_PREFIXES = frozenset("Y Z E P T G M k h da d c m u n p f a z y Ki Mi Gi Ti".split())
# prefixable ("metric") atoms; K (kelvin) is left out on purpose: "K/uL" is lab slang for 10*3/uL
_UCUM_METRIC = frozenset(
    "m s g rad C cd mol sr Hz N Pa J W A V F Ohm S Wb Cel T H lm lx Bq Gy Sv l L ar t bar u eV pc "
    "Gal dyn erg P St Mx G Oe Gb sb ph Ci R RAD REM cal eq osm kat U mho B Np g% m[H2O] m[Hg] "
    "[iU] [IU] [c] [h] [k] [e] [G] [g] [ly] gf Ky Lmb".split())
_UCUM_ATOMS = frozenset(
    "10* 10^ [pi] % [ppth] [ppm] [ppb] [pptr] min h d a wk mo ' '' deg gon [in_i] [ft_i] [yd_i] [mi_i] "
    "[lb_av] [oz_av] [gr] [degF] [degR] [pH] [arb'U] [USP'U] [HPF] [LPF] [drp] [CFU] [PFU] [FFU] "
    "[APL'U] [GPL'U] [MPL'U] [beth'U] [todd'U] [dye'U] [smgy'U] [knk'U] [mclg'U] [tb'U] [hnsf'U] "
    "[ka'U] [BAU] [AU] [D'ag'U] [EU] [Lf] [IR] [BU] [S] [HP] [Ch] [mesh_i] [sft_i] [sin_i] [cin_i] "
    "[tsp_us] [tbs_us] [foz_us] [gal_us] [pt_us] [qt_us] [cup_us] [gal_br] [pt_br] [cal_IT] [Btu] "
    "[mclg'U] [kp_C] [tb'U] [iU] [IU] mm[Hg] cm[H2O]".split()) | _UCUM_METRIC
_UCUM_TOKEN = re.compile(r"(\{[^{}]*\})|([./()])|((?:[^./(){}\[\]]|\[[^\[\]]*\])+)")
_UCUM_EXP = re.compile(r"(.*?[^\d+-])([+-]?\d+)")


def _simple_unit(tok: str) -> bool:
    if tok.isdigit():
        return True  # a factor
    if tok in _UCUM_ATOMS:
        return True
    m = _UCUM_EXP.fullmatch(tok)
    if m is not None and m.group(1) != tok:
        base = m.group(1)
        if base in _UCUM_ATOMS or _prefixed(base):
            return True
    return _prefixed(tok)


def _prefixed(tok: str) -> bool:
    return (tok[:1] in _UCUM_PREFIXES and tok[1:] in _UCUM_METRIC) or \
        (tok[:2] in _UCUM_PREFIXES and tok[2:] in _UCUM_METRIC)


@lru_cache(maxsize=2048)
def looks_ucum(unit: str) -> bool:
    """True when a unit string parses as UCUM (case-sensitive atoms, SI prefixes, ``.``/``/``,
    exponents, ``{annotations}``, parentheses). ``mmol/L``, ``10*9/L``, ``{cells}/uL``, ``mm[Hg]``
    pass; ``gm/dl``, ``mIU/mL``, ``K/uL``, ``ммоль/л`` do not."""
    if not unit or len(unit) > 60 or not unit.isascii() or any(c.isspace() for c in unit):
        return False
    if unit.isdigit() and unit != "1":  # a bare number is a factor, not a unit anyone means
        return False
    depth = 0
    expect_unit = True
    pos = 0
    for m in _UCUM_TOKEN.finditer(unit):
        if m.start() != pos:
            return False
        pos = m.end()
        ann, op, tok = m.groups()
        if ann is not None:
            expect_unit = False
        elif op is not None:
            if op == "(":
                if not expect_unit:
                    return False
                depth += 1
            elif op == ")":
                depth -= 1
                if depth < 0 or expect_unit:
                    return False
            else:  # . or /
                if expect_unit and not (op == "/" and m.start() == 0):
                    return False
                expect_unit = True
        else:
            if not expect_unit or not _simple_unit(tok):
                return False
            expect_unit = False
    return pos == len(unit) and depth == 0 and not expect_unit


#: Russian unit spellings (lower case, no blanks) -> UCUM; the text sent stays Quantity.unit
RUSSIAN_UNITS = MappingProxyType({
    "ммоль/л": "mmol/L", "мкмоль/л": "umol/L", "нмоль/л": "nmol/L", "пмоль/л": "pmol/L",
    "моль/л": "mol/L", "г/л": "g/L", "мг/л": "mg/L", "мкг/л": "ug/L", "нг/л": "ng/L", "г/дл": "g/dL",
    "мг/дл": "mg/dL", "нг/мл": "ng/mL", "пг/мл": "pg/mL", "мкг/мл": "ug/mL", "ед/л": "U/L",
    "мед/л": "mU/L", "ме/л": "[IU]/L", "ме/мл": "[IU]/mL", "мме/л": "m[IU]/L", "мме/мл": "m[IU]/mL",
    "мкме/мл": "u[IU]/mL", "%": "%", "фл": "fL", "пг": "pg", "мм/ч": "mm/h", "ммрт.ст.": "mm[Hg]",
    "с": "s", "сек": "s", "мин": "min", "ч": "h", "мосм/кг": "mosm/kg", "кг": "kg", "г": "g", "мг": "mg",
    "мл": "mL", "л": "L", "см": "cm", "мм": "mm", "°c": "Cel",
    "10^9/л": "10*9/L", "10*9/л": "10*9/L", "х10^9/л": "10*9/L", "x10^9/л": "10*9/L", "×10^9/л": "10*9/L",
    "10^12/л": "10*12/L", "10*12/л": "10*12/L", "х10^12/л": "10*12/L", "x10^12/л": "10*12/L",
    "×10^12/л": "10*12/L", "тыс/мкл": "10*3/uL", "млн/мкл": "10*6/uL",
})


_UNITS_CACHE: dict[tuple[str, int, str, CodeSystems], dict[str, str]] = {}
_NO_UNITS: dict[str, str] = {}


def _unit_fields(units: V | str | None, ctx: FnContext) -> dict[str, str]:
    """Quantity.unit/system/code from a units CWE (CWE[Quantity]) or a unit string. READ-ONLY: the
    dict is the memo's own (callers copy its items into the elements they build, never change it)."""
    u = _v(units)
    if u is None:
        return _NO_UNITS
    enc, cs = u.enc, ctx.codesystems
    key = (u.raw, u.level, enc.component + enc.subcomponent + enc.escape, cs)
    hit = _UNITS_CACHE.get(key)
    if hit is None:
        hit = dict(_parse_units(u, cs))
        if len(_UNITS_CACHE) >= _CACHE_MAX:
            _UNITS_CACHE.clear()
        _UNITS_CACHE[key] = hit
    return hit


def _parse_units(u: V, cs: CodeSystems) -> tuple[tuple[str, str], ...]:
    parts, enc = _parts(u), u.enc
    code_text = _t(parts, 1, enc).strip()
    text = _t(parts, 2, enc).strip() if len(parts) > 1 else ""
    name = _t(parts, 3, enc).strip() if len(parts) > 2 else ""
    out: list[tuple[str, str]] = []
    unit = text or code_text
    if unit:
        out.append(("unit", unit))
    if code_text and name:
        system = cs.uri(name)
        if system:
            return (*out, ("system", system), ("code", code_text))
    candidate = code_text or text
    if candidate:
        if looks_ucum(candidate):
            return (*out, ("system", UCUM), ("code", candidate))
        ru = RUSSIAN_UNITS.get(candidate.lower().replace(" ", ""))
        if ru is not None:
            return (*out, ("system", UCUM), ("code", ru))
    return tuple(out)


def quantity(value: V | str | None, ctx: FnContext, *, unit: V | str | None = None,
             **_: Any) -> dict[str, Any] | None:
    """HL7 NM (+ ``unit:`` CWE or string) or CQ -> FHIR ``Quantity`` (NM/CQ/CWE[Quantity]).

    unit = units text (CWE.2, else CWE.1); system + code when CWE.3 names a known system, or UCUM
    when the code looks like UCUM (``mmol/L``, ``10*9/L``), or a Russian spelling mapped to UCUM
    (``ммоль/л`` -> ``mmol/L``). Example: ``"7.5"`` with ``unit: "g/dL^^UCUM"`` ->
    ``{"value": 7.5, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}``.
    """
    v = _v(value)
    if v is None:
        return None
    parts = _parts(v)
    num_text = _t(parts, 1, v.enc)
    if not num_text.strip():
        return None
    out: dict[str, Any] = {"value": _number(num_text, "quantity")}
    if unit is None and len(parts) > 1 and v.level == 0:
        unit = V(parts[1], v.enc, 1)
    out.update(_unit_fields(unit, ctx))
    return out


_COMPARATORS = frozenset({"<", "<=", ">=", ">"})
_ORIGINAL_TEXT = "http://hl7.org/fhir/StructureDefinition/originalText"
_LEADING_COMPARATOR = re.compile(r"\s*(<=|>=|<|>)\s*([+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+))\s*", re.ASCII)


def _sn(v: V, ctx: FnContext, units: V | str | None) -> dict[str, Any]:
    parts, enc = _parts(v), v.enc
    comp = _t(parts, 1, enc).strip()
    num1 = _t(parts, 2, enc).strip()
    sep = _t(parts, 3, enc).strip()
    num2 = _t(parts, 4, enc).strip()
    unit_fields = _unit_fields(units, ctx) if units is not None else _NO_UNITS
    comp_ok = not comp or comp == "=" or comp in _COMPARATORS
    n1 = _try_number(num1) if num1 and comp_ok else None
    if n1 is not None:
        if not sep and not num2:  # SN[Quantity]
            q: dict[str, Any] = {"value": n1}
            if comp in _COMPARATORS:
                q["comparator"] = comp
            q.update(unit_fields)
            return {"valueQuantity": q}
        n2 = _try_number(num2) if num2 else None
        original = [{"url": _ORIGINAL_TEXT, "valueString": " ".join(p for p in (comp, num1, sep, num2) if p)}]
        if n2 is not None and sep in (":", "/"):  # SN[Ratio]
            numerator: dict[str, Any] = {"value": n1}
            if comp in _COMPARATORS:
                numerator["comparator"] = comp
            numerator.update(unit_fields)
            return {"valueRatio": {"extension": original, "numerator": numerator,
                                   "denominator": {"value": n2, **unit_fields}}}
        if n2 is not None and sep == "-" and comp not in _COMPARATORS:  # SN[Range]
            return {"valueRange": {"extension": original, "low": {"value": n1, **unit_fields},
                                   "high": {"value": n2, **unit_fields}}}
        if sep and sep not in (":", "/", "-", "+"):  # SN[Quantity] with a suffix
            q = {"extension": original, "value": n1}
            if comp in _COMPARATORS:
                q["comparator"] = comp
            q.update(unit_fields)
            return {"valueQuantity": q}
    # "<>", "+", and whatever did not parse: the table's valueString
    text = " ".join(p for p in (comp, num1, sep, num2, unit_fields.get("unit", "")) if p)
    return {"valueString": text}


def _ft_text(v: V) -> str:
    return _ft_raw(v.raw, v.enc)


def _ft_raw(raw: str, enc: Encoding) -> str:
    e = enc.escape
    if e not in raw:
        return raw
    sp = f"{e}.sp{e}"
    if sp in raw:
        raw = raw.replace(sp, f"{e}.br{e}")
    return unescape(raw, enc)


def obx_value(value: V | str | None, ctx: FnContext, *, type: V | str | None = None,
              units: V | str | None = None, concept_map: str | None = None, **_: Any) -> dict[str, Any] | None:
    """OBX-5 (one repetition) by OBX-2 ``type`` -> the Observation ``value[x]`` element, as a dict
    to merge into the resource (OBX[Observation] OBX-5/OBX-6 rows).

    NM -> valueQuantity (units: OBX-6); SN -> valueQuantity with comparator, valueRange (``-``),
    valueRatio (``:`` ``/``) or valueString (``<>``, ``+``, unparseable) per SN[Quantity/Range/Ratio];
    ST/TX/FT -> valueString (escapes decoded, ``\\.br\\`` -> newline); CWE/CE/CNE/CF ->
    valueCodeableConcept (``concept_map`` applies); IS/ID -> valueCodeableConcept (code only);
    DT/DTM/TS -> valueDateTime; TM -> valueTime; NR -> valueRange; DR -> valuePeriod.
    Other types (ED, RP, NA, EI, ...): ctx.unmapped policy. An NM value written with a comparator
    (``<0.5``) is read as SN, with a warning.
    Example: ``"5.6"`` with ``type: NM``, ``units: "mmol/L^^UCUM"`` -> ``{"valueQuantity":
    {"value": 5.6, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}}``.
    """
    v = _v(value)
    if v is None:
        return None
    return _obx_value_raw(v.raw, v.enc, v.level, ctx, type, units, concept_map)


def _obx_value_raw(raw: str, enc: Encoding, level: int, ctx: FnContext, type: V | str | None = None,  # noqa: A002
                   units: V | str | None = None, concept_map: str | None = None) -> dict[str, Any] | None:
    if not raw or raw == '""':
        return None
    t = _first(type).upper()
    if t == "NM":
        text = (unescape(raw, enc) if enc.escape in raw else raw).strip()
        if not text:
            return None
        num = _try_number(text)
        if num is None:
            m = _LEADING_COMPARATOR.fullmatch(text)
            num = _try_number(m.group(2)) if m is not None else None
            if m is None or num is None:
                raise MappingError(f"obx_value: NM value {_clip(text)!r} is not a number")
            _warn(ctx, "obx_value: an NM value carries a comparator; read as SN")
            q: dict[str, Any] = {"value": num, "comparator": m.group(1)}
        else:
            q = {"value": num}
        if units is not None:
            q.update(_unit_fields(units, ctx))
        return {"valueQuantity": q}
    v = V(raw, enc, level)
    if t == "SN":
        return _sn(v, ctx, units)
    if t in ("ST", "TX"):
        text = _plain(v)
        return {"valueString": text} if text.strip() else None
    if t == "FT":
        text = _ft_text(v)
        return {"valueString": text} if text.strip() else None
    if t in ("CWE", "CE", "CNE", "CF"):
        cc = _codeable(raw, enc, level, ctx, concept_map, private=True)  # a result: warnings do not name it
        return {"valueCodeableConcept": cc} if cc else None
    if t in ("IS", "ID"):
        c = _first(v)
        return {"valueCodeableConcept": {"coding": [{"code": c}]}} if c else None
    if t in ("DT", "DTM", "TS"):
        dt = datetime(v, ctx)
        return {"valueDateTime": dt} if dt else None
    if t == "TM":
        tm = time(v, ctx)
        return {"valueTime": tm} if tm else None
    if t == "NR":
        parts = _parts(v)
        rng: dict[str, Any] = {}
        low, high = _t(parts, 1, v.enc).strip(), _t(parts, 2, v.enc).strip()
        if low:
            rng["low"] = {"value": _number(low, "obx_value NR")}
        if high:
            rng["high"] = {"value": _number(high, "obx_value NR")}
        return {"valueRange": rng} if rng else None
    if t == "DR":
        per = period(v, ctx)
        return {"valuePeriod": per} if per else None
    if not t:
        _unmapped(ctx, "obx_value: OBX-2 (value type) is empty but OBX-5 is valued")
        return None
    _unmapped(ctx, f"obx_value: value type {_clip(t)!r} is not supported")
    return None


def annotation(value: V | str | None, ctx: FnContext, *, time: V | str | None = None,
               **_: Any) -> dict[str, Any] | None:
    """HL7 FT (one NTE-3 repetition) -> FHIR ``Annotation`` (FT[Annotation-Comment]): ``text`` is
    the decoded text (``\\.br\\`` -> newline); ``time:`` (e.g. NTE-6) -> ``time``.
    Example: ``"Гемолиз\\.br\\повторить"`` -> ``{"text": "Гемолиз\\nповторить"}``.
    """
    v = _v(value)
    if v is None:
        return None
    return _annotation_raw(v.raw, v.enc, v.level, ctx, time)


def _annotation_raw(raw: str, enc: Encoding, level: int, ctx: FnContext,
                    time: V | str | None = None) -> dict[str, Any] | None:
    if not raw or raw == '""':
        return None
    text = _ft_raw(raw, enc).strip()
    if not text:
        return None
    out: dict[str, Any] = {"text": text}
    if time is not None:
        when = datetime(time, ctx)
        if when:
            out["time"] = when
    return out


_NUMBER = r"([+-]?(?:\d+(?:[.,]\d+)?|[.,]\d+))"
_TRAIL = r"(?:\s+[^\d\s].*)?"
_RANGE = re.compile(rf"\s*{_NUMBER}\s*(?:-|–|—|\.\.)\s*{_NUMBER}\s*{_TRAIL}", re.DOTALL | re.ASCII)
_BOUND = re.compile(rf"\s*(<=|>=|<|>|≤|≥)\s*{_NUMBER}\s*{_TRAIL}", re.DOTALL | re.ASCII)


_RANGE_CACHE: dict[str, tuple[int | float | None, int | float | None]] = {}


def _parse_range(text: str) -> tuple[int | float | None, int | float | None]:
    hit = _RANGE_CACHE.get(text)
    if hit is not None:
        return hit
    lo: int | float | None = None
    hi: int | float | None = None
    m = _RANGE.fullmatch(text)
    if m is not None:
        lo, hi = _try_number(m.group(1)), _try_number(m.group(2))
        if lo is None or hi is None:
            lo = hi = None
    else:
        m = _BOUND.fullmatch(text)
        if m is not None:
            if m.group(1) in ("<", "<=", "≤"):
                hi = _try_number(m.group(2))
            else:
                lo = _try_number(m.group(2))
    if len(_RANGE_CACHE) >= _CACHE_MAX:
        _RANGE_CACHE.clear()
    _RANGE_CACHE[text] = (lo, hi)
    return lo, hi


def reference_range(value: V | str | None, ctx: FnContext, *, units: V | str | None = None,
                    **_: Any) -> dict[str, Any] | None:
    """OBX-7 -> one FHIR ``Observation.referenceRange``: ``text`` always, ``low``/``high``
    (SimpleQuantity with the ``units:`` arg, usually OBX-6) when the text parses as ``a-b``,
    ``<b``, ``<=b``, ``>a``, ``>=a`` (trailing words allowed: ``"649-1346 cells/mcL"``).
    ``<b`` and ``<=b`` both give high = b (FHIR ranges are inclusive; the text keeps the
    difference). Example: ``"3.5-5.5"`` with ``units: "mmol/L^^UCUM"`` -> ``{"low": {"value": 3.5,
    "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}, "high":
    {...5.5...}, "text": "3.5-5.5"}``.
    """
    return _reference_range(_plain(value).strip(), ctx, units)


def _reference_range_raw(raw: str, enc: Encoding, level: int, ctx: FnContext,
                         units: V | str | None = None) -> dict[str, Any] | None:
    if not raw or raw == '""':
        return None
    return _reference_range((unescape(raw, enc) if enc.escape in raw else raw).strip(), ctx, units)


def _reference_range(text: str, ctx: FnContext, units: V | str | None) -> dict[str, Any] | None:
    if not text:
        return None
    lo, hi = _parse_range(text)
    out: dict[str, Any] = {}
    if lo is not None or hi is not None:
        uf = _unit_fields(units, ctx) if units is not None else _NO_UNITS
        if lo is not None:
            out["low"] = {"value": lo, **uf}
        if hi is not None:
            out["high"] = {"value": hi, **uf}
    out["text"] = text
    return out


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arg:
    """One argument a function accepts.

    ``value``: an HL7 value (a path in the message) or a constant string; ``str`` / ``bool``:
    constants only. ``choices`` restricts a constant's values.
    """

    type: Literal["value", "str", "bool"]
    doc: str
    required: bool = False
    choices: tuple[str, ...] = ()


Fn = Callable[..., JSON]


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    fn: Fn
    returns: str
    doc: str
    args: Mapping[str, Arg] = field(default_factory=dict)
    #: the same conversion for generated code: ``raw(text, enc, level, ctx, *args)`` with ``text``
    #: the encoded value at ``level`` (0 field, 1 component, 2 subcomponent) and the arguments
    #: positional, in the order of ``args`` (all optional, None when not given); None: call ``fn``.
    #: A function with a raw variant never returns a list (generated code relies on it)
    raw: Fn | None = None

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""

    def check_args(self, given: Mapping[str, object]) -> list[tuple[str, str]]:
        """Problems with the arguments a mapping gives: [(message, hint)]; constants are checked
        for type and choices, values that are paths (not ``str``/``bool``) only for name."""
        problems: list[tuple[str, str]] = []
        for name, val in given.items():
            arg = self.args.get(name)
            if arg is None:
                allowed = ", ".join(sorted(self.args)) or "none"
                problems.append((f"function {self.name!r} has no argument {name!r}",
                                 did_you_mean(name, self.args) or f"arguments: {allowed}"))
                continue
            if arg.type == "bool" and not isinstance(val, bool):
                problems.append((f"{self.name}: argument {name!r} must be true or false", ""))
            elif arg.type == "str" and not isinstance(val, str):
                problems.append((f"{self.name}: argument {name!r} must be a string", ""))
            elif arg.choices and isinstance(val, str) and val not in arg.choices:
                problems.append((f"{self.name}: argument {name!r} must be one of {', '.join(arg.choices)}",
                                 did_you_mean(val, arg.choices)))
        for name, arg in self.args.items():
            if arg.required and name not in given:
                problems.append((f"function {self.name!r} needs argument {name!r}", arg.doc))
        return problems


_STATUS_DEFAULT = Arg("str", "FHIR code used when the HL7 code has no target (else ctx.unmapped policy)")
_OBS_STATUS = ("registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error",
               "unknown")
_REPORT_STATUS = ("registered", "partial", "preliminary", "final", "amended", "corrected", "appended",
                  "cancelled", "entered-in-error", "unknown")
_ID_USE = ("usual", "official", "temp", "secondary", "old")
_ID_ARGS = {
    "system": Arg("str", "Identifier.system when the value carries none that resolves"),
    "type": Arg("str", "HL7 table 0203 type code when the value has none (e.g. MR, PLAC, FILL)"),
    "use": Arg("str", "Identifier.use", choices=_ID_USE),
}


def _spec(fn: Fn, returns: str, args: Mapping[str, Arg] | None = None, name: str | None = None,
          raw: Fn | None = None) -> FunctionSpec:
    return FunctionSpec(name or fn.__name__, fn, returns, fn.__doc__ or "", MappingProxyType(dict(args or {})), raw)


FUNCTIONS: Mapping[str, FunctionSpec] = MappingProxyType({s.name: s for s in (
    _spec(date, "date", raw=_date_raw),
    _spec(datetime, "dateTime", raw=_datetime_raw),
    _spec(instant, "instant", raw=_instant_raw),
    _spec(time, "time"),
    _spec(period, "Period"),
    _spec(codeable_concept, "CodeableConcept", {
        "concept_map": Arg("str", "name of a concept map; its target coding is appended")},
          raw=_codeable_concept_raw),
    _spec(coding, "Coding"),
    _spec(code, "code"),
    _spec(human_name, "HumanName", raw=_human_name_raw),
    _spec(identifier, "Identifier", _ID_ARGS, raw=_identifier_raw),
    _spec(identifier_ei, "Identifier", _ID_ARGS, raw=_identifier_ei_raw),
    _spec(placer_identifier, "Identifier", {k: a for k, a in _ID_ARGS.items() if k != "type"},
          raw=_placer_identifier_raw),
    _spec(filler_identifier, "Identifier", {k: a for k, a in _ID_ARGS.items() if k != "type"},
          raw=_filler_identifier_raw),
    _spec(address, "Address", raw=_address_raw),
    _spec(contact_point, "ContactPoint", raw=_contact_point_raw),
    _spec(quantity, "Quantity", {"unit": Arg("value", "units: a CWE (e.g. OBX-6) or a unit string")}),
    _spec(obx_value, "value[x] (dict to merge)", {
        "type": Arg("value", "the value type, OBX-2", required=True),
        "units": Arg("value", "the units, OBX-6"),
        "concept_map": Arg("str", "concept map applied to coded values")}, raw=_obx_value_raw),
    _spec(reference_range, "Observation.referenceRange", {
        "units": Arg("value", "units for low/high, usually OBX-6")}, raw=_reference_range_raw),
    _spec(annotation, "Annotation", {"time": Arg("value", "when the note was made, e.g. NTE-6")},
          raw=_annotation_raw),
    _spec(interpretation, "CodeableConcept", {
        "default": Arg("str", "table 0078 code used when the code has no target")}, raw=_interpretation_raw),
    _spec(observation_status, "code", {"default": Arg("str", _STATUS_DEFAULT.doc, choices=_OBS_STATUS)},
          raw=_observation_status_raw),
    _spec(report_status, "code", {"default": Arg("str", _STATUS_DEFAULT.doc, choices=_REPORT_STATUS)},
          raw=_report_status_raw),
    _spec(gender, "code", {"default": Arg("str", _STATUS_DEFAULT.doc,
                                          choices=("male", "female", "other", "unknown"))}, raw=_gender_raw),
    _spec(decimal, "decimal"),
    _spec(integer, "integer", raw=_integer_raw),
    _spec(string, "string", {"strip": Arg("bool", "strip surrounding blanks (default true)")}, raw=_string_raw),
    _spec(boolean, "boolean", raw=_boolean_raw),
    _spec(uri, "uri", raw=_uri_raw),
)})


def names() -> list[str]:
    """Every function name, sorted (for the compiler's did-you-mean and the reference docs)."""
    return sorted(FUNCTIONS)


def spec(name: str) -> FunctionSpec | None:
    return FUNCTIONS.get(name)


def suggest(name: str) -> str:
    """``did you mean 'x'?`` for an unknown function name, or ''."""
    return did_you_mean(name, FUNCTIONS)

