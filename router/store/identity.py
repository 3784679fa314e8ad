"""Business identifiers: which identifiers key a resource for upserts, and Russian identifier rules.

A resource's keys are its identifiers (system|value) of the kinds listed in KEYED_IDENTIFIERS:
a resent or corrected message carrying the same key updates the stored resource instead of
creating another. СНИЛС values are normalised to 11 digits and their check number verified;
ЕНП values must be 16 digits.
"""
from __future__ import annotations

import functools
import re
from operator import mul
from typing import Any

from ..errors import ValidationError

SNILS = "urn:oid:1.2.643.100.3"
SNILS_ALIASES = ("http://fhir.ru/core/systems/snils", "http://fhir.ru/ig/RuSEMD/systems/snils")
# ЕНП (single OMS policy number). No public OID was verified for it (domain.md); configurable here.
ENP = "urn:oid:1.2.643.5.1.13.2.1.1.735"
ENP_ALIASES = ("http://fhir.ru/core/systems/enp",)

_NON_DIGITS = re.compile(r"\D")
_WEIGHTS = range(9, 0, -1)


def snils_check(digits9: str) -> str:
    """The two-digit check number of a СНИЛС from its first nine digits (domain.md)."""
    if len(digits9) == 9 and digits9.isascii() and digits9.isdigit():  # bytes - "0" (48); weights sum to 45
        s = sum(map(mul, digits9.encode(), _WEIGHTS)) - 48 * 45
    else:
        s = sum(map(mul, map(int, digits9), _WEIGHTS))
    if s < 100:
        return f"{s:02d}"
    if s in (100, 101):
        return "00"
    r = s % 101
    return "00" if r == 100 else f"{r:02d}"


def normalize_snils(value: str) -> str:
    digits = value if value.isdecimal() else _NON_DIGITS.sub("", value)  # isdecimal: what \d matches
    if len(digits) != 11:
        raise ValidationError(f"СНИЛС must have 11 digits, got {len(digits)}")
    if int(digits[:9]) > 1001998 and digits[9:] != snils_check(digits[:9]):  # checked above 001-001-998 only
        raise ValidationError("СНИЛС check number does not match")
    return digits


def normalize_enp(value: str) -> str:
    digits = _NON_DIGITS.sub("", value)
    if len(digits) != 16:
        raise ValidationError(f"ЕНП must have 16 digits, got {len(digits)}")
    return digits


@functools.lru_cache(maxsize=4096)
def canonical(system: str, value: str) -> tuple[str, str]:
    """(system, value) in the store's canonical form; raises ValidationError for a bad СНИЛС/ЕНП.
    Cached: a batch canonicalises the same patient identifiers several times (prefetch, planning,
    writing), and the СНИЛС check number each time."""
    if system == SNILS or system in SNILS_ALIASES:
        return SNILS, normalize_snils(value)
    if system == ENP or system in ENP_ALIASES:
        return ENP, normalize_enp(value)
    return system, value.strip()


def _identifiers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    ident = resource.get("identifier")
    if isinstance(ident, dict):
        return [ident]
    return [i for i in ident or [] if isinstance(i, dict)]


def _mrn_system(ident: dict[str, Any]) -> str | None:
    """MRN (type MR) with an assigner but no system: keyed as mrn:<assigner>."""
    codes = [c.get("code") for c in (ident.get("type") or {}).get("coding", []) if isinstance(c, dict)]
    assigner = ident.get("assigner") or {}
    who = assigner.get("reference") or (assigner.get("identifier") or {}).get("value") or assigner.get("display")
    if "MR" in codes and who:
        return f"mrn:{who}"
    return None


def normalize_identifiers(resource: dict[str, Any]) -> None:
    """Rewrite СНИЛС/ЕНП identifiers of a resource in place to their canonical system and value."""
    for ident in _identifiers(resource):
        system, value = ident.get("system"), ident.get("value")
        if isinstance(system, str) and isinstance(value, str):
            ident["system"], ident["value"] = canonical(system, value)


def business_keys(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """The (system, value) keys a resource is upserted on (canonical form, no duplicates).

    Patient: СНИЛС, ЕНП, and MRNs (identifier type MR with a system, or with an assigner).
    Every other type: each identifier with a system and a value (order numbers, visit numbers,
    prescription numbers, case ids, policy numbers, ...). Identifiers with use "old" key nothing.
    """
    rtype = resource.get("resourceType")
    keys: list[tuple[str, str]] = []
    for ident in _identifiers(resource):
        value = ident.get("value")
        if not isinstance(value, str) or not value.strip() or ident.get("use") == "old":
            continue
        system = ident.get("system")
        if rtype == "Patient":
            if system in (SNILS, ENP, *SNILS_ALIASES, *ENP_ALIASES):
                keys.append(canonical(system, value))
                continue
            codes = [c.get("code") for c in (ident.get("type") or {}).get("coding", []) if isinstance(c, dict)]
            if isinstance(system, str) and system and "MR" in codes:
                keys.append((system, value.strip()))
            elif (mrn := _mrn_system(ident)) is not None:
                keys.append((mrn, value.strip()))
        elif isinstance(system, str) and system:
            keys.append(canonical(system, value))
    return list(dict.fromkeys(keys))
