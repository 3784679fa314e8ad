"""What a Principal may read and write in the record store. Deny by default.

Every read is limited by the two compartment columns of ``store_resources`` that
``router.store.store.compartment`` fills on each write: ``patient_id`` (the Patient the resource is
about; the Patient's own id for a Patient) and ``org_id`` (the responsible Organization: the
Patient's managingOrganization, a Coverage's payor, an Observation's performer, ...). A type missing
from a role's table cannot be read at all (ForbiddenError); a type present is limited to the rows
its rule matches. ``read_condition`` turns the rule into SQL so searches are filtered in the
database, and ``check_read`` evaluates that very condition against one row, so a single read and
a search can never disagree.

Read scopes (OR-ed together when a rule lists several):

=============  ==============================================================================
``any``        every resource of the type (directory data without patient data)
``org``        ``org_id`` = the principal's organisation
``managed``    patients managed by the organisation: ``patient_id`` in the ids of non-deleted
               Patients whose ``org_id`` (managingOrganization) is the principal's organisation
``served``     patients the organisation produced records for: ``patient_id`` in the
               ``patient_id`` of non-deleted resources whose ``org_id`` is the organisation
``insured``    ``patient_id`` in the beneficiaries of non-deleted Coverages whose ``org_id``
               (payor) is the principal's organisation - whatever the Coverage's status/period
``prescribed`` ``patient_id`` in the subjects of non-deleted MedicationRequests
``self``       ``patient_id`` = the citizen's own Patient id (nothing when it is unknown)
=============  ==============================================================================

Directory types, readable by every role: Organization, Location, Practitioner,
PractitionerRole, Medication.

Reads per role (besides the directory types):

==============  ==========================================================================
admin, router   everything (no condition)
lab             Patient: ``org`` | ``served``; Specimen, ServiceRequest, DiagnosticReport,
                Observation: ``org`` (what the lab itself performed)
insurer         Coverage: ``org`` (its own contracts only, not another payor's);
                Patient and the service records Encounter, Claim, ExplanationOfBenefit,
                ServiceRequest, DiagnosticReport, Observation, Procedure, Condition,
                MedicationRequest, MedicationDispense: ``insured``
pharmacy        MedicationRequest, MedicationDispense: ``any`` (a pharmacy looks a
                prescription up by its number and must see earlier dispenses of it);
                Patient, Coverage (eligibility): ``prescribed``
organization    Patient and every patient-compartment type (Encounter, Observation,
                DiagnosticReport, ServiceRequest, Specimen, Condition, Procedure,
                AllergyIntolerance, Immunization, MedicationRequest, MedicationDispense,
                DocumentReference, CarePlan, Coverage, Claim, ExplanationOfBenefit):
                ``managed`` | ``org``
citizen         Patient and every patient-compartment type: ``self``
==============  ==========================================================================

A role that needs an organisation (lab, insurer, pharmacy, organization) but has none, or a citizen
whose Patient is unknown, reads nothing of the patient data (the condition is false).

Writes (``authorize_write``, the ``authorize`` callable of ``Store.transaction``). The
principle: a client may only write what it can read back, so "its own organisation" means the
organisation the store files the resource under (``compartment()``'s org, the ``org_id`` column).

==============  ==========================================================================
admin, router   anything, including delete and $merge
lab             create/update Specimen, ServiceRequest, DiagnosticReport, Observation whose
                org is the lab (and, on update, was the lab); Patient and Practitioner whose
                org is the lab or absent (a lab registers patients it gets samples for; a
                Patient managed by another organisation stays out of its reach). No delete.
pharmacy        create/update MedicationDispense performed by the pharmacy (and, on update,
                previously performed by it); update an existing MedicationRequest when only
                its ``status``/``statusReason`` change. Nothing else.
organization    create/update a Patient it manages (managingOrganization is the organisation,
                before and after: it cannot hand a patient over - that is admin work). The
                rest of its data reaches the store through the router.
insurer         read-only
citizen         read-only
==============  ==========================================================================

Known limit: a ServiceRequest whose requester is an Organization is filed under the requester,
so the performing lab does not see it through the API (the router still delivers it).
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..errors import ForbiddenError
from .principal import Principal
from .store import PATIENT_PATHS, Stored, compartment
from .tables import resources

DIRECTORY = ("Organization", "Location", "Practitioner", "PractitionerRole", "Medication")
PATIENT_TYPES = ("Patient", *sorted(PATIENT_PATHS))
INSURER_SERVICE = ("Encounter", "Claim", "ExplanationOfBenefit", "ServiceRequest", "DiagnosticReport",
                   "Observation", "Procedure", "Condition", "MedicationRequest", "MedicationDispense")
LAB_RESULTS = ("Specimen", "ServiceRequest", "DiagnosticReport", "Observation")

Rule = tuple[str, ...]  # read scopes, OR-ed

#: role -> resource type -> read scopes. A type absent from a role's table is forbidden.
READ_RULES: dict[str, dict[str, Rule]] = {
    "lab": {"Patient": ("org", "served"), **{t: ("org",) for t in LAB_RESULTS}},
    "insurer": {"Coverage": ("org",), "Patient": ("insured",), **{t: ("insured",) for t in INSURER_SERVICE}},
    "pharmacy": {"MedicationRequest": ("any",), "MedicationDispense": ("any",), "Patient": ("prescribed",),
                 "Coverage": ("prescribed",)},
    "organization": {t: ("managed", "org") for t in PATIENT_TYPES},
    "citizen": {t: ("self",) for t in PATIENT_TYPES},
}
for _rules in READ_RULES.values():
    _rules.update({t: ("any",) for t in DIRECTORY})

UNRESTRICTED = frozenset({"admin", "router"})
NEEDS_ORG = frozenset({"lab", "insurer", "pharmacy", "organization"})

#: role -> resource type -> how the new resource's org must relate to the principal's ("own", or
#: "own-or-none"); pharmacy's MedicationRequest status updates are a special case (see below).
WRITE_RULES: dict[str, dict[str, str]] = {
    "lab": {**{t: "own" for t in LAB_RESULTS}, "Patient": "own-or-none", "Practitioner": "own-or-none"},
    "pharmacy": {"MedicationDispense": "own", "MedicationRequest": "status-only"},
    "organization": {"Patient": "own"},
}
STATUS_FIELDS = ("status", "statusReason")


# ---------------------------------------------------------------------------------------- reads
def _alias(name: str) -> Any:
    return resources.alias(name)


def _patients_of(rtype: str | None, org: str, name: str, column: str = "patient_id") -> Any:
    """SELECT patient ids from non-deleted rows of `rtype` (any type when None) filed under `org`."""
    a = _alias(name)
    q = sa.select(a.c[column]).where(a.c.deleted.is_(False), a.c.org_id == org, a.c[column].is_not(None))
    if rtype is not None:
        q = q.where(a.c.resource_type == rtype)
    return q


def _scope(scope: str, p: Principal) -> sa.ColumnElement[bool]:
    r = resources.c
    if scope == "any":
        return sa.true()
    if scope == "self":
        return r.patient_id == p.patient if p.patient else sa.false()
    if scope == "prescribed":
        a = _alias("acl_rx")
        return r.patient_id.in_(sa.select(a.c.patient_id).where(
            a.c.resource_type == "MedicationRequest", a.c.deleted.is_(False), a.c.patient_id.is_not(None)))
    org = p.organization
    if not org:
        return sa.false()
    if scope == "org":
        return r.org_id == org
    if scope == "managed":
        return r.patient_id.in_(_patients_of("Patient", org, "acl_managed", "id"))
    if scope == "served":
        return r.patient_id.in_(_patients_of(None, org, "acl_served"))
    if scope == "insured":
        return r.patient_id.in_(_patients_of("Coverage", org, "acl_cov"))
    raise AssertionError(f"unknown read scope {scope!r}")


def read_condition(principal: Principal, resource_type: str) -> sa.ColumnElement[bool] | None:
    """The condition over ``router.store.tables.resources`` limiting what `principal` may read of
    `resource_type`; None when unrestricted (admin, router). ForbiddenError when the role may not
    read the type at all."""
    if principal.role in UNRESTRICTED:
        return None
    rule = READ_RULES.get(principal.role, {}).get(resource_type)
    if rule is None:
        raise ForbiddenError(f"role {principal.role} may not read {resource_type}")
    if principal.role in NEEDS_ORG and not principal.organization and resource_type not in DIRECTORY:
        return sa.false()
    conds = [_scope(s, principal) for s in rule]
    return conds[0] if len(conds) == 1 else sa.or_(*conds)


def check_read(conn: sa.Connection, principal: Principal, stored: Stored) -> None:
    """ForbiddenError unless `principal` may read `stored`: read_condition evaluated on its row."""
    cond = read_condition(principal, stored.resource_type)
    if cond is None:
        return
    r = resources.c
    hit = conn.execute(sa.select(sa.literal(1)).select_from(resources).where(
        r.resource_type == stored.resource_type, r.id == stored.id, cond)).first()
    if hit is None:
        raise ForbiddenError(f"{stored.resource_type}/{stored.id} is outside what role {principal.role} "
                             f"({principal.client_id}) may read")


def readable_types(principal: Principal) -> set[str] | None:
    """The types `principal` may read at all (None: every type)."""
    if principal.role in UNRESTRICTED:
        return None
    return set(READ_RULES.get(principal.role, {}))


# ---------------------------------------------------------------------------------------- writes
def _strip(resource: dict[str, Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k not in extra}
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


def _deny(p: Principal, action: str, rtype: str, reason: str) -> ForbiddenError:
    return ForbiddenError(f"role {p.role} may not {action} {rtype}: {reason}")


def authorize_write(principal: Principal, action: str, new: dict[str, Any] | None, current: Stored | None) -> None:
    """Store.transaction's `authorize`: ForbiddenError unless `principal` may do `action`
    ("create", "update", "delete", "merge") with `new` (the resource to write) given `current`
    (what is stored now, possibly a tombstone, or None)."""
    if principal.role in UNRESTRICTED:
        return
    rtype = (new or {}).get("resourceType") or (current.resource_type if current else "resource")
    if action not in ("create", "update"):
        raise _deny(principal, action, rtype, f"{action} is reserved to admin")
    rules = WRITE_RULES.get(principal.role)
    if not rules:
        raise _deny(principal, action, rtype, "the role is read-only")
    if new is None:
        raise _deny(principal, action, rtype, "no resource given")
    rule = rules.get(rtype)
    if rule is None:
        raise _deny(principal, action, rtype, "type not writable by the role")
    own = principal.organization
    if not own:
        raise _deny(principal, action, rtype, "the client has no organisation")
    if rule == "status-only":
        if action != "update" or current is None or current.deleted:
            raise _deny(principal, action, rtype, "only the status of an existing one may change")
        if _strip(new, STATUS_FIELDS) != _strip(current.resource(), STATUS_FIELDS):
            raise _deny(principal, action, rtype, "only status and statusReason may change")
        return
    allowed: tuple[str | None, ...] = (own,) if rule == "own" else (own, None)
    _, org = compartment(new)
    if org not in allowed:
        raise _deny(principal, action, rtype, "its organisation is not the client's")
    if current is not None and current.org_id not in allowed:
        raise _deny(principal, action, rtype, "the stored one belongs to another organisation")

