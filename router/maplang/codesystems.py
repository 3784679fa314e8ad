"""Coding-system names (HL7 table 0396, Russian reference books, OIDs) -> FHIR system URIs.

This is the ONE place the mapping language turns the name of a coding system, as an HL7 v2
message writes it (CWE.3 ``LN``, ``SCT``, ``I10``, ``HL70078``, ``99LAB``, ``ФСЛИ``,
``1.2.643.5.1.13.13.11.1080`` ...), into the URI FHIR wants in ``Coding.system``.

Resolution order of ``CodeSystems.uri(name)``:

1. names configured at runtime (``CodeSystems(extra={...})``), exact spelling first, then
   upper-cased;
2. the built-in table ``DEFAULT_SYSTEMS`` (table 0396 names with a FHIR URI, plus Russian
   names), exact then upper-cased;
3. ``HL7nnnn`` / ``HL7nnnnn`` / ``v2-nnnn`` -> ``http://terminology.hl7.org/CodeSystem/v2-nnnn``;
4. a bare OID (``1.2.643.5.1.13.13.11.1005``) -> ``urn:oid:<OID>``;
5. a name that is already an absolute URI (``http://...``, ``https://...``, ``urn:...``) -> itself;
6. local systems (``L``, ``99zzz``; table 0396 "local general code") -> ``local_prefix + name``
   when a local prefix is configured, else None;
7. anything else -> None (unknown: the caller decides what to do, usually omit ``system``).

The HL7 V2-to-FHIR tables in ``shared/corpus/v2-to-fhir/mappings`` have no concept map for table
0396 (only the table's listing in chapterdata.csv), so the 0396 -> URI table below follows the
FHIR R4 registry of external code systems (terminologies-systems.html) and HL7 terminology
(THO) URIs. Identifier systems (``СНИЛС``, ``ЕНП``, assigning-authority namespaces) resolve
through ``identifier_uri``, which never consults the code-system table (an assigning authority
called ``LN`` is not LOINC).

Everything here is immutable data: ``CodeSystems`` is built once from configuration and shared.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..errors import ConfigError
from ..store.identity import ENP, ENP_ALIASES, SNILS, SNILS_ALIASES

V2_TABLE = "http://terminology.hl7.org/CodeSystem/v2-"
LOINC = "http://loinc.org"
SNOMED_CT = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
FSLI = "urn:oid:1.2.643.5.1.13.13.11.1080"
MKB10 = "urn:oid:1.2.643.5.1.13.13.11.1005"

#: table 0396 names (and common aliases senders use) -> FHIR system URI
_HL7_0396: dict[str, str] = {
    "LN": LOINC,
    "LOINC": LOINC,
    "SCT": SNOMED_CT,
    "SNOMED": SNOMED_CT,
    "SNOMEDCT": SNOMED_CT,
    "SNOMED-CT": SNOMED_CT,
    # SNM is SNOMED 2 (not SNOMED CT); THO keeps it as its own code system.
    "SNM": "http://terminology.hl7.org/CodeSystem/snm",
    "SNM3": "http://terminology.hl7.org/CodeSystem/SNM3",
    "I9": "http://terminology.hl7.org/CodeSystem/icd9",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9CDX": "http://hl7.org/fhir/sid/icd-9-cm",
    "ICD9": "http://terminology.hl7.org/CodeSystem/icd9",
    "ICD9CM": "http://hl7.org/fhir/sid/icd-9-cm",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "ICD-10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I10P": "http://www.cms.gov/Medicare/Coding/ICD10",
    "ICD10PCS": "http://www.cms.gov/Medicare/Coding/ICD10",
    "ICD10CA": "http://hl7.org/fhir/sid/icd-10-ca",
    "ICD10AM": "http://terminology.hl7.org/CodeSystem/icd10AM",
    "ICD10GM": "http://fhir.de/CodeSystem/bfarm/icd-10-gm",
    "ICDO": "http://terminology.hl7.org/CodeSystem/icd-o",
    "ICDO3": "http://terminology.hl7.org/CodeSystem/icd-o-3",
    "UCUM": UCUM,
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT4": "http://www.ama-assn.org/go/cpt",
    "CPTM": "http://www.ama-assn.org/go/cpt",
    "HCPCS": "http://terminology.hl7.org/CodeSystem/HCPCS",
    "HPC": "http://terminology.hl7.org/CodeSystem/HCPCS",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://terminology.hl7.org/CodeSystem/MVX",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "NCI": "http://ncimeta.nci.nih.gov",
    "NUCCPT": "http://nucc.org/provider-taxonomy",
    "NUCCHCPT": "http://nucc.org/provider-taxonomy",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "MDC": "urn:iso:std:iso:11073:10101",
    "HGNC": "http://www.genenames.org",
    "ATC": "http://www.whocc.no/atc",
    "WC": "http://www.whocc.no/atc",
    "ISO3166_1": "urn:iso:std:iso:3166",
    "ISO3166_2": "urn:iso:std:iso:3166:-2",
    "ISO4217": "urn:iso:std:iso:4217",
    "ISO639": "urn:ietf:bcp:47",
    "NPI": "http://hl7.org/fhir/sid/us-npi",
    "ART": "http://terminology.hl7.org/CodeSystem/art",
    "CAS": "http://terminology.hl7.org/CodeSystem/CAS",
    "ACR": "http://terminology.hl7.org/CodeSystem/ACR",
}

#: Russian reference books (domain.md: OIDs under 1.2.643.5.1.13.13.11) by the names senders use
_RUSSIAN: dict[str, str] = {
    "ФСЛИ": FSLI,
    "FSLI": FSLI,
    "НСИ.ФСЛИ": FSLI,
    "МКБ-10": MKB10,
    "МКБ10": MKB10,
    "MKB-10": MKB10,
    "MKB10": MKB10,
    "ФРМО": "urn:oid:1.2.643.5.1.13.13.11.1461",
    "FRMO": "urn:oid:1.2.643.5.1.13.13.11.1461",
}

DEFAULT_SYSTEMS: Mapping[str, str] = MappingProxyType({**_HL7_0396, **_RUSSIAN})

#: identifier systems recognised by name (assigning authority / identifier type)
IDENTIFIER_ALIASES: Mapping[str, str] = MappingProxyType({
    "СНИЛС": SNILS, "SNILS": SNILS, "ПФР": SNILS,
    "ЕНП": ENP, "ENP": ENP, **{a: SNILS for a in SNILS_ALIASES}, **{a: ENP for a in ENP_ALIASES},
})

_HL7_TABLE = re.compile(r"(?:HL7|V2-)(\d{4,5})", re.IGNORECASE)
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9]\d*))+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_oid(text: str) -> bool:
    return _OID.fullmatch(text) is not None


def is_uuid(text: str) -> bool:
    return _UUID.fullmatch(text) is not None


def is_absolute_uri(text: str) -> bool:
    """http(s)://..., urn:..., or another scheme:// URI, without whitespace."""
    if not text or any(c.isspace() for c in text):
        return False
    return text.startswith("urn:") or "://" in text


def is_local(name: str) -> bool:
    """Table 0396 local coding systems: ``L`` and ``99zzz``."""
    return name == "L" or name.startswith("99")


def _normalise(extra: Mapping[str, str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, uri in extra.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{what}: a coding-system name must be a non-empty string, got {name!r}")
        if not isinstance(uri, str) or not is_absolute_uri(uri.strip()):
            raise ConfigError(f"{what}: {name!r} must map to an absolute URI (http://..., urn:oid:...), got {uri!r}")
        out[name.strip()] = uri.strip()
        out.setdefault(name.strip().upper(), uri.strip())
    return out


@dataclass(frozen=True, eq=False)
class CodeSystems:
    """The coding-system registry of one configuration: defaults plus ``extra`` names.

    ``extra`` maps names as senders write them (``"LAB1"``, ``"99MED"``, a namespace ID of an
    assigning authority) to URIs and wins over the defaults. ``local_prefix``, when set, turns
    local systems (``L``, ``99zzz``) into ``local_prefix + name``; otherwise they have no URI.
    Instances compare and hash by identity (conversion results are memoised per instance).
    """

    extra: Mapping[str, str] = field(default_factory=dict)
    local_prefix: str | None = None
    _table: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _extra: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        extra = _normalise(self.extra, "code systems")
        if self.local_prefix is not None and not is_absolute_uri(self.local_prefix):
            raise ConfigError(f"code systems: local_prefix must be an absolute URI prefix, got {self.local_prefix!r}")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))
        object.__setattr__(self, "_extra", MappingProxyType(extra))
        object.__setattr__(self, "_table", MappingProxyType({**DEFAULT_SYSTEMS, **extra}))

    def uri(self, name: str | None) -> str | None:
        """The FHIR system URI for a coding-system name, or None when it has none (see module doc)."""
        if not name:
            return None
        table = self._table
        hit = table.get(name)
        if hit is not None:
            return hit
        sent = name
        name = name.strip()
        upper = name.upper()
        if upper != sent:
            hit = table.get(upper)
            if hit is not None:
                return hit
        if not name:
            return None
        if name == "L" or name.startswith("99"):
            return self.local_prefix + name if self.local_prefix else None
        if upper.startswith(("HL7", "V2-")):
            m = _HL7_TABLE.fullmatch(name)
            if m is not None:
                return V2_TABLE + m.group(1)
        if name[0] in "012" and _OID.fullmatch(name):
            return "urn:oid:" + name
        if ":" in name and is_absolute_uri(name):
            return name
        return None

    def configured(self, name: str | None) -> str | None:
        """The URI configured for a name in ``extra`` (exact, then upper-cased), or None."""
        if not name:
            return None
        return self._extra.get(name) or self._extra.get(name.strip().upper())

    def identifier_uri(self, name: str | None) -> str | None:
        """The Identifier.system for an assigning-authority / namespace name, or None.

        Configured ``extra`` names first, then СНИЛС/ЕНП names, OIDs (``urn:oid:``), UUIDs
        (``urn:uuid:``) and absolute URIs. The code-system table is not consulted.
        """
        if not name:
            return None
        name = name.strip()
        if not name:
            return None
        hit = self._extra.get(name) or self._extra.get(name.upper())
        if hit is not None:
            return hit
        hit = IDENTIFIER_ALIASES.get(name) or IDENTIFIER_ALIASES.get(name.upper())
        if hit is not None:
            return hit
        if _OID.fullmatch(name):
            return "urn:oid:" + name
        if _UUID.fullmatch(name):
            return "urn:uuid:" + name.lower()
        if is_absolute_uri(name):
            return name
        return None

    def names(self) -> list[str]:
        """Every name the table knows (for did-you-mean and documentation)."""
        return sorted(self._table)


DEFAULT = CodeSystems()


def system_uri(name: str | None) -> str | None:
    """``CodeSystems().uri(name)`` with the built-in table only."""
    return DEFAULT.uri(name)
