"""The search parameters of the record store, as data.

Per resource type: name -> (type, extraction path(s)), following the FHIR R4 SearchParameter
definitions (https://hl7.org/fhir/R4/searchparameter-registry.html) for the parameters the store
supports. The indexer (router/store/indexer.py) extracts and indexes what these paths point at on
every write; the search (router/store/search.py) looks the parameters up here; the API lists them
in its CapabilityStatement (``catalogue()``).

Paths are dotted element names relative to the resource, walked by a small hand-written walker
(not FHIRPath): lists are flattened at every step, and ``name[x]`` is a choice element, i.e. any
of ``nameDateTime``, ``namePeriod``, ... (the suffix says the type). ``X as Quantity`` in FHIR is
written as the concrete element, ``valueQuantity``.

A reference parameter may be restricted to target types (``patient`` is ``subject`` where the
reference is to a Patient). Such a parameter shares the index rows of the unrestricted one
(``index_as``) and the search adds the target type, so the rows are written once.

Besides these, every type has ``_id`` and ``_lastUpdated`` (kept on the resource row itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ParamType = Literal["token", "string", "date", "reference", "quantity"]
KINDS: tuple[ParamType, ...] = ("token", "string", "date", "reference", "quantity")


@dataclass(frozen=True, slots=True)
class SearchParam:
    name: str
    type: ParamType
    paths: tuple[str, ...]  # dotted, relative to the resource; "effective[x]" is a choice element
    targets: tuple[str, ...] = ()  # reference: the resource types it points at (informational unless restricted)
    restricted: bool = False  # reference: only references to `targets` match (e.g. patient = subject:Patient)
    index_as: str = ""  # the name its index rows are stored under (default: its own name)
    expression: str = ""  # the FHIR R4 expression, for documentation

    @property
    def column(self) -> str:
        """The ``param`` value of its index rows."""
        return self.index_as or self.name


def _t(path: str, expr: str = "") -> tuple[ParamType, tuple[str, ...], dict[str, object]]:
    return "token", tuple(path.split(" | ")), {"expression": expr}


def _s(path: str, expr: str = "") -> tuple[ParamType, tuple[str, ...], dict[str, object]]:
    return "string", tuple(path.split(" | ")), {"expression": expr}


def _d(path: str, expr: str = "") -> tuple[ParamType, tuple[str, ...], dict[str, object]]:
    return "date", tuple(path.split(" | ")), {"expression": expr}


def _q(path: str, expr: str = "") -> tuple[ParamType, tuple[str, ...], dict[str, object]]:
    return "quantity", tuple(path.split(" | ")), {"expression": expr}


def _r(path: str, *targets: str, expr: str = "") -> tuple[ParamType, tuple[str, ...], dict[str, object]]:
    return "reference", tuple(path.split(" | ")), {"targets": targets, "expression": expr}


def _patient_of(param: str, path: str, expr: str) -> tuple[ParamType, tuple[str, ...], dict[str, object]]:
    """`param` restricted to Patient references, sharing `param`'s index rows."""
    return "reference", (path,), {"targets": ("Patient",), "restricted": True, "index_as": param, "expression": expr}


_ID = _t("identifier")
_STATUS = _t("status")
_SUBJECT_TARGETS = ("Patient", "Group", "Device", "Location")

RAW: dict[str, dict[str, tuple[ParamType, tuple[str, ...], dict[str, object]]]] = {
    "Patient": {
        "identifier": _ID,
        "family": _s("name.family", "Patient.name.family"),
        "given": _s("name.given", "Patient.name.given"),
        # "any of the string fields in the HumanName"
        "name": _s("name.family | name.given | name.prefix | name.suffix | name.text", "Patient.name"),
        "birthdate": _d("birthDate", "Patient.birthDate"),
        "gender": _t("gender", "Patient.gender"),
    },
    "Observation": {
        "subject": _r("subject", *_SUBJECT_TARGETS, expr="Observation.subject"),
        "patient": _patient_of("subject", "subject", "Observation.subject.where(resolve() is Patient)"),
        "code": _t("code", "Observation.code"),
        "category": _t("category", "Observation.category"),
        "date": _d("effective[x]", "Observation.effective"),
        "status": _STATUS,
        "value-quantity": _q("valueQuantity", "(Observation.value as Quantity)"),
        "identifier": _ID,
        "based-on": _r("basedOn", "CarePlan", "DeviceRequest", "ImmunizationRecommendation", "MedicationRequest",
                       "NutritionOrder", "ServiceRequest", expr="Observation.basedOn"),
        "specimen": _r("specimen", "Specimen", expr="Observation.specimen"),
    },
    "DiagnosticReport": {
        "subject": _r("subject", *_SUBJECT_TARGETS, expr="DiagnosticReport.subject"),
        "patient": _patient_of("subject", "subject", "DiagnosticReport.subject.where(resolve() is Patient)"),
        "code": _t("code", "DiagnosticReport.code"),
        "date": _d("effective[x]", "DiagnosticReport.effective"),
        "status": _STATUS,
        "identifier": _ID,
        "result": _r("result", "Observation", expr="DiagnosticReport.result"),
        "based-on": _r("basedOn", "CarePlan", "ImmunizationRecommendation", "MedicationRequest", "NutritionOrder",
                       "ServiceRequest", expr="DiagnosticReport.basedOn"),
        "category": _t("category", "DiagnosticReport.category"),
        "issued": _d("issued", "DiagnosticReport.issued"),
    },
    "ServiceRequest": {
        "subject": _r("subject", *_SUBJECT_TARGETS, expr="ServiceRequest.subject"),
        "patient": _patient_of("subject", "subject", "ServiceRequest.subject.where(resolve() is Patient)"),
        "code": _t("code", "ServiceRequest.code"),
        "status": _STATUS,
        "identifier": _ID,
        "authored": _d("authoredOn", "ServiceRequest.authoredOn"),
        "requester": _r("requester", "Practitioner", "Organization", "Patient", "PractitionerRole", "RelatedPerson",
                        "Device", expr="ServiceRequest.requester"),
    },
    "Specimen": {
        "subject": _r("subject", "Patient", "Group", "Device", "Substance", "Location", expr="Specimen.subject"),
        "patient": _patient_of("subject", "subject", "Specimen.subject.where(resolve() is Patient)"),
        "type": _t("type", "Specimen.type"),
        "identifier": _ID,
        "collected": _d("collection.collected[x]", "Specimen.collection.collected"),
    },
    "Encounter": {
        "subject": _r("subject", "Patient", "Group", expr="Encounter.subject"),
        "patient": _patient_of("subject", "subject", "Encounter.subject.where(resolve() is Patient)"),
        "status": _STATUS,
        "identifier": _ID,
        "date": _d("period", "Encounter.period"),
        "class": _t("class", "Encounter.class"),
    },
    "Coverage": {
        "beneficiary": _r("beneficiary", "Patient", expr="Coverage.beneficiary"),
        "patient": _patient_of("beneficiary", "beneficiary", "Coverage.beneficiary"),
        "payor": _r("payor", "Organization", "Patient", "RelatedPerson", expr="Coverage.payor"),
        "status": _STATUS,
        "identifier": _ID,
    },
    "Claim": {
        "patient": _r("patient", "Patient", expr="Claim.patient"),
        "insurer": _r("insurer", "Organization", expr="Claim.insurer"),
        "provider": _r("provider", "Practitioner", "Organization", "PractitionerRole", expr="Claim.provider"),
        "created": _d("created", "Claim.created"),
        "status": _STATUS,
        "identifier": _ID,
    },
    "ExplanationOfBenefit": {
        "patient": _r("patient", "Patient", expr="ExplanationOfBenefit.patient"),
        # not in the R4 registry for ExplanationOfBenefit; defined like Claim.insurer
        "insurer": _r("insurer", "Organization", expr="ExplanationOfBenefit.insurer"),
        "provider": _r("provider", "Practitioner", "Organization", "PractitionerRole",
                       expr="ExplanationOfBenefit.provider"),
        "created": _d("created", "ExplanationOfBenefit.created"),
        "status": _STATUS,
        "identifier": _ID,
    },
    "MedicationRequest": {
        "subject": _r("subject", "Patient", "Group", expr="MedicationRequest.subject"),
        "patient": _patient_of("subject", "subject", "MedicationRequest.subject.where(resolve() is Patient)"),
        "status": _STATUS,
        "identifier": _ID,
        "authoredon": _d("authoredOn", "MedicationRequest.authoredOn"),
        "code": _t("medicationCodeableConcept", "(MedicationRequest.medication as CodeableConcept)"),
        "medication": _r("medicationReference", "Medication", expr="(MedicationRequest.medication as Reference)"),
    },
    "MedicationDispense": {
        "subject": _r("subject", "Patient", "Group", expr="MedicationDispense.subject"),
        "patient": _patient_of("subject", "subject", "MedicationDispense.subject.where(resolve() is Patient)"),
        "prescription": _r("authorizingPrescription", "MedicationRequest",
                           expr="MedicationDispense.authorizingPrescription"),
        "status": _STATUS,
        "whenhandedover": _d("whenHandedOver", "MedicationDispense.whenHandedOver"),
        "identifier": _ID,
        "code": _t("medicationCodeableConcept", "(MedicationDispense.medication as CodeableConcept)"),
    },
    "Organization": {
        "identifier": _ID,
        "name": _s("name | alias", "Organization.name | Organization.alias"),
    },
    "Practitioner": {
        "identifier": _ID,
        "name": _s("name.family | name.given | name.prefix | name.suffix | name.text", "Practitioner.name"),
        "family": _s("name.family", "Practitioner.name.family"),
        "given": _s("name.given", "Practitioner.name.given"),
    },
}

#: resource types without a row above still get their identifiers indexed and searchable
FALLBACK: dict[str, tuple[ParamType, tuple[str, ...], dict[str, object]]] = {"identifier": _ID}

#: the parameters of every type, kept on the resource row rather than in the index tables
SPECIAL: dict[str, tuple[str, str]] = {
    "_id": ("token", "the logical id of the resource"),
    "_lastUpdated": ("date", "when the current version was written (meta.lastUpdated)"),
}


def _build(rtype: str, raw: dict[str, tuple[ParamType, tuple[str, ...], dict[str, object]]],
           ) -> dict[str, SearchParam]:
    out = {}
    for name, (kind, paths, extra) in raw.items():
        expr = str(extra.get("expression") or "") or f"{rtype}.{paths[0]}"
        out[name] = SearchParam(name=name, type=kind, paths=paths, targets=tuple(extra.get("targets", ())),  # type: ignore[arg-type]
                                restricted=bool(extra.get("restricted")), index_as=str(extra.get("index_as", "")),
                                expression=expr)
    return out


PARAMS: dict[str, dict[str, SearchParam]] = {rtype: _build(rtype, raw) for rtype, raw in RAW.items()}
_FALLBACK_CACHE: dict[str, dict[str, SearchParam]] = {}


def params_for(resource_type: str) -> dict[str, SearchParam]:
    """The search parameters of a type (for types not listed above: identifier only)."""
    found = PARAMS.get(resource_type)
    if found is None:
        found = _FALLBACK_CACHE.get(resource_type)
        if found is None:
            found = _FALLBACK_CACHE[resource_type] = _build(resource_type, FALLBACK)
    return found


def indexed(resource_type: str) -> list[SearchParam]:
    """The parameters whose rows the indexer writes for a type (those sharing rows left out)."""
    return [p for p in params_for(resource_type).values() if not p.index_as]


def catalogue() -> dict[str, list[dict[str, str]]]:
    """Resource type -> [{name, type, documentation}] for the CapabilityStatement."""
    out: dict[str, list[dict[str, str]]] = {}
    for rtype in PARAMS:
        rows = [{"name": n, "type": t, "documentation": doc} for n, (t, doc) in SPECIAL.items()]
        for p in PARAMS[rtype].values():
            doc = p.expression
            if p.type == "string":
                doc += " (starts with, case and accent insensitive; :exact, :contains)"
            rows.append({"name": p.name, "type": p.type, "documentation": doc})
        out[rtype] = rows
    return out
