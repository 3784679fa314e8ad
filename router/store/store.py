"""Versioned FHIR resources with identifier upserts and atomic transaction bundles.

Every write goes through ``Store.transaction`` (a FHIR transaction Bundle) or the single-resource
helpers it uses. Inside the caller's database transaction; a bundle is all-or-nothing: it is
planned in memory on its own overlay and merged only when every entry planned (router.store.writer);
when several bundles share one commit (``write_bundles``) the first failing one raises and the
caller's batch logic isolates it.

Identity of a written resource, in order: a conditional URL (``Type?identifier=sys|val``) or
``ifNoneExist``; the resource's business identifiers (router.store.identity); the id it carries
(``PUT Type/id``, or ``id`` in the resource); else a new UUID. When the stored resource found by
identifier has another id than the incoming one, the incoming id is mapped to the stored one and
every reference in the bundle is rewritten, so a resent message upserts instead of duplicating.

A write whose content equals the current version (ignoring ``meta``) creates no version.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from ..errors import GoneError, InputError, NotFoundError, ValidationError
from . import identity
from .principal import ROUTER, Principal
from .tables import history, identifiers, resources
from .writer import BatchWriter, State, instant, plan_entry_identity

Authorize = Callable[[Principal, str, "dict[str, Any] | None", "Stored | None"], None]

# where a resource says which patient it is about, and which organisation is responsible for it
PATIENT_PATHS: dict[str, tuple[str, ...]] = {
    "Observation": ("subject",), "DiagnosticReport": ("subject",), "ServiceRequest": ("subject",),
    "Specimen": ("subject",), "Encounter": ("subject",), "Coverage": ("beneficiary",), "Claim": ("patient",),
    "ExplanationOfBenefit": ("patient",), "MedicationRequest": ("subject",), "MedicationDispense": ("subject",),
    "Condition": ("subject",), "Procedure": ("subject",), "AllergyIntolerance": ("patient",),
    "Immunization": ("patient",), "DocumentReference": ("subject",), "CarePlan": ("subject",),
}
ORG_PATHS: dict[str, tuple[str, ...]] = {
    "Patient": ("managingOrganization",), "Observation": ("performer",), "DiagnosticReport": ("performer",),
    "ServiceRequest": ("requester", "performer"), "Encounter": ("serviceProvider",), "Coverage": ("payor",),
    "Claim": ("provider",), "ExplanationOfBenefit": ("insurer",), "MedicationRequest": ("requester",),
    "MedicationDispense": ("performer.actor",), "Specimen": ("collection.collector",),
}


@dataclass(frozen=True)
class Stored:
    """One version of a resource as stored."""

    resource_type: str
    id: str
    version_id: int
    last_updated: float
    deleted: bool
    content: bytes
    patient_id: str | None = None
    org_id: str | None = None

    def resource(self) -> dict[str, Any]:
        return orjson.loads(self.content)  # type: ignore[no-any-return]


def _refs(value: Any, path: str) -> list[str]:
    """Reference strings at a dotted path (lists flattened)."""
    cur = [value]
    for part in path.split("."):
        nxt = []
        for v in cur:
            x = v.get(part) if isinstance(v, dict) else None
            nxt.extend(x if isinstance(x, list) else [x] if x is not None else [])
        cur = nxt
    return [v["reference"] for v in cur if isinstance(v, dict) and isinstance(v.get("reference"), str)]


def _ref_id(ref: str, rtype: str) -> str | None:
    parts = ref.split("/")
    if len(parts) >= 2 and parts[-2] == rtype:
        return parts[-1]
    if len(parts) >= 4 and parts[-4] == rtype and parts[-2] == "_history":
        return parts[-3]
    return None


def compartment(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    """(patient id, organization id) a resource belongs to, for access control."""
    rtype = resource["resourceType"]
    patient = resource.get("id") if rtype == "Patient" else None
    for path in PATIENT_PATHS.get(rtype, ()):
        for ref in _refs(resource, path):
            patient = patient or _ref_id(ref, "Patient")
    org = resource.get("id") if rtype == "Organization" else None
    for path in ORG_PATHS.get(rtype, ()):
        for ref in _refs(resource, path):
            org = org or _ref_id(ref, "Organization")
    return patient, org


def rewrite_references(value: Any, mapping: dict[str, str]) -> Any:
    """Replace every Reference.reference found in mapping (urn:uuid:..., Type/old -> Type/new).

    Copy on write: the containers on the way to a replaced reference are new, everything else is
    shared with `value` (which is left as it was). Rewriting every resource of every bundle was
    6.5% of a worker's time as a deep copy."""
    if not mapping:
        return value
    t = type(value)
    if t is dict:
        return _rewrite_dict(value, mapping)
    if t is list:
        return _rewrite_list(value, mapping)
    return value


def _rewrite_dict(value: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    out = None
    for k, v in value.items():
        t = type(v)
        if t is str:
            if k != "reference" or v not in mapping:
                continue
            new: Any = mapping[v]
        elif t is dict:
            new = _rewrite_dict(v, mapping)
        elif t is list:
            new = _rewrite_list(v, mapping)
        else:
            continue
        if new is not v:
            if out is None:
                out = dict(value)
            out[k] = new
    return value if out is None else out


def _rewrite_list(value: list[Any], mapping: dict[str, str]) -> list[Any]:
    out = None
    for n, v in enumerate(value):
        t = type(v)
        if t is dict:
            new = _rewrite_dict(v, mapping)
        elif t is list:
            new = _rewrite_list(v, mapping)
        else:
            continue
        if new is not v:
            if out is None:
                out = list(value)
            out[n] = new
    return value if out is None else out


class Store:
    """Stateless: holds only the indexer used on every write."""

    def __init__(self, indexer: Callable[[dict[str, Any]], list[tuple[str, dict[str, Any]]]] | None = None) -> None:
        if indexer is None:
            from .indexer import index_entries

            indexer = index_entries
        self.indexer = indexer

    # ------------------------------------------------------------------ reads
    def current(self, conn: sa.Connection, rtype: str, rid: str) -> Stored | None:
        r = resources.c
        row = conn.execute(sa.select(r.resource_type, r.id, r.version_id, r.last_updated, r.deleted, r.content,
                                     r.patient_id, r.org_id)
                           .where(r.resource_type == rtype, r.id == rid)).first()
        return Stored(*row) if row else None

    def read(self, conn: sa.Connection, rtype: str, rid: str) -> Stored:
        s = self.current(conn, rtype, rid)
        if s is None:
            raise NotFoundError(f"{rtype}/{rid} not found")
        if s.deleted:
            raise GoneError(f"{rtype}/{rid} was deleted (version {s.version_id})")
        return s

    def vread(self, conn: sa.Connection, rtype: str, rid: str, vid: int) -> Stored:
        h = history.c
        row = conn.execute(sa.select(h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.content)
                           .where(h.resource_type == rtype, h.id == rid, h.version_id == vid)).first()
        if row is None:
            raise NotFoundError(f"{rtype}/{rid}/_history/{vid} not found")
        cur = self.current(conn, rtype, rid)
        s = Stored(*row, patient_id=cur.patient_id if cur else None, org_id=cur.org_id if cur else None)
        if s.deleted:
            raise GoneError(f"{rtype}/{rid} version {vid} is a deletion")
        return s

    def history(self, conn: sa.Connection, rtype: str, rid: str) -> list[Stored]:
        """Every version, newest first. NotFoundError when the resource never existed."""
        cur = self.current(conn, rtype, rid)
        if cur is None:
            raise NotFoundError(f"{rtype}/{rid} not found")
        h = history.c
        rows = conn.execute(sa.select(h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.content)
                            .where(h.resource_type == rtype, h.id == rid).order_by(h.version_id.desc())).all()
        return [Stored(*r, patient_id=cur.patient_id, org_id=cur.org_id) for r in rows]

    def find_by_identifier(self, conn: sa.Connection, rtype: str, keys: Iterable[tuple[str, str]]) -> set[str]:
        keys = list(keys)
        if not keys:
            return set()
        i = identifiers.c
        cond = sa.or_(*[sa.and_(i.system == s, i.value == v) for s, v in keys])
        return {row[0] for row in conn.execute(sa.select(i.id).where(i.resource_type == rtype, cond))}

    # ------------------------------------------------------------------ writes
    def writer(self, conn: sa.Connection, now: float | None = None) -> BatchWriter:
        return BatchWriter(conn, self.indexer, compartment, now)

    def put(self, conn: sa.Connection, resource: dict[str, Any], *, message_id: str | None = None,
            now: float | None = None) -> tuple[Stored, bool]:
        """Write `resource` (which carries resourceType and id) as the next version.
        Returns (stored, changed); an identical content creates no version."""
        w = self.writer(conn, now)
        st, changed, _ = w.put(dict(resource), message_id)
        w.flush()
        return _stored(resource["resourceType"], resource["id"], st), changed

    def delete(self, conn: sa.Connection, rtype: str, rid: str, *, now: float | None = None) -> Stored | None:
        """Tombstone version; identifiers and index rows go. None when there was nothing to delete."""
        w = self.writer(conn, now)
        st = w.delete(rtype, rid)
        w.flush()
        return _stored(rtype, rid, st) if st else None

    # ------------------------------------------------------------------ transactions
    def transaction(self, conn: sa.Connection, bundle: dict[str, Any], *, principal: Principal = ROUTER,
                    message_id: str | None = None, authorize: Authorize | None = None) -> dict[str, Any]:
        """Apply a transaction Bundle atomically inside `conn`'s transaction; return the
        transaction-response Bundle. `authorize(principal, action, new, current)` may raise
        ForbiddenError for any entry (the whole bundle then fails)."""
        w = self.writer(conn)
        response = self._apply(w, bundle, principal, message_id, authorize)
        w.flush()
        return response

    def _apply(self, w: BatchWriter, bundle: Any, principal: Principal, message_id: str | None,
               authorize: Authorize | None) -> dict[str, Any]:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise InputError("expected a Bundle")
        if bundle.get("type") not in ("transaction", "batch"):
            raise InputError(f"Bundle.type must be transaction, not {bundle.get('type')!r}")
        entries = bundle.get("entry") or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InputError("Bundle.entry must be a list of objects")
        w.begin_bundle()
        try:
            refmap: dict[str, str] = {}
            plan = [plan_entry_identity(w, n, e, refmap) for n, e in enumerate(entries)]
            responses = []
            for method, rtype, rid, res in plan:
                if method == "DELETE":
                    if authorize:
                        authorize(principal, "delete", None, _stored(rtype, rid, w.state((rtype, rid))))
                    st = w.delete(rtype, rid)
                    responses.append({"response": {"status": "204 No Content" if st else "404 Not Found"}})
                    continue
                if method == "MERGE":
                    assert res is not None
                    responses.append(self._merge_entry(w, res, refmap, principal, authorize))
                    continue
                assert res is not None
                res = rewrite_references(res, refmap)
                res["id"] = rid
                cur = w.state((rtype, rid))
                if authorize:
                    authorize(principal, "update" if cur and not cur.deleted else "create", res,
                              _stored(rtype, rid, cur))
                st, _changed, created = w.put(res, message_id)
                responses.append({"fullUrl": f"{rtype}/{rid}", "response": {
                    "status": "201 Created" if created else "200 OK",
                    "location": f"{rtype}/{rid}/_history/{st.version_id}", "etag": f'W/"{st.version_id}"',
                    "lastModified": instant(st.last_updated)}})
        except BaseException:
            w.abort_bundle()
            raise
        w.commit_bundle()
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}

    # ------------------------------------------------------------------ merge (ADT^A40)
    def merge_patients(self, conn: sa.Connection, source_id: str, target_id: str, *, now: float | None = None) -> int:
        """Merge Patient/source into Patient/target: every resource referring to the source is
        rewritten to the target (new versions), the source's identifiers move to the target, and
        the source becomes inactive with a replaced-by link. Returns how many resources moved."""
        w = self.writer(conn, now)
        w.begin_bundle()
        moved = self._merge(w, source_id, target_id)
        w.commit_bundle()
        w.flush()
        return moved

    def _merge(self, w: BatchWriter, source_id: str, target_id: str) -> int:
        if source_id == target_id:
            raise InputError("cannot merge a patient into itself")
        src_state, tgt_state = w.state(("Patient", source_id)), w.state(("Patient", target_id))
        for pid, st in ((source_id, src_state), (target_id, tgt_state)):
            if st is None:
                raise NotFoundError(f"Patient/{pid} not found")
            if st.deleted or st.body is None:
                raise GoneError(f"Patient/{pid} was deleted")
        assert src_state and tgt_state and src_state.body is not None and tgt_state.body is not None
        source = {**src_state.body, "resourceType": "Patient", "id": source_id}
        target = {**tgt_state.body, "resourceType": "Patient", "id": target_id}
        mapping = {f"Patient/{source_id}": f"Patient/{target_id}"}
        r = resources.c
        rows = w.conn.execute(sa.select(r.resource_type, r.id).where(
            r.patient_id == source_id, r.deleted.is_(False), r.resource_type != "Patient")).all()
        keys = {(t, i) for t, i in rows} | {k for k, st in w.ov.states.items()
                                            if st is not None and st.patient_id == source_id and k[0] != "Patient"}
        moved = 0
        for rtype, rid in sorted(keys):
            st = w.state((rtype, rid))
            if st is None or st.body is None:
                continue
            w.put(rewrite_references({**st.body, "resourceType": rtype, "id": rid}, mapping))
            moved += 1
        known = {(i.get("system"), i.get("value")) for i in target.get("identifier", [])}
        extra = [i for i in source.get("identifier", []) if (i.get("system"), i.get("value")) not in known]
        source["active"] = False
        source["identifier"] = [{**i, "use": "old"} for i in source.get("identifier", [])]  # keys nothing now
        source["link"] = [{"other": {"reference": f"Patient/{target_id}"}, "type": "replaced-by"}]
        w.put(source)
        target["identifier"] = list(target.get("identifier", [])) + extra
        target["link"] = list(target.get("link", [])) + [{"other": {"reference": f"Patient/{source_id}"},
                                                          "type": "replaces"}]
        w.put(target)
        return moved

    def _merge_entry(self, w: BatchWriter, params: dict[str, Any], refmap: dict[str, str],
                     principal: Principal, authorize: Authorize | None) -> dict[str, Any]:
        """A Bundle entry POST Patient/$merge with Parameters source-patient and target-patient
        (or result-patient) references; lets a mapping express ADT^A40."""
        refs: dict[str, str] = {}
        for p in params.get("parameter", []):
            ref = (p.get("valueReference") or {}).get("reference")
            if isinstance(ref, str):
                refs[p.get("name", "")] = refmap.get(ref, ref)
        src = refs.get("source-patient")
        tgt = refs.get("target-patient") or refs.get("result-patient")
        if not src or not tgt:
            raise InputError("Patient/$merge needs source-patient and target-patient references")
        sid, tid = _ref_id(src, "Patient"), _ref_id(tgt, "Patient")
        if not sid or not tid:
            raise InputError("Patient/$merge references must be Patient/<id>")
        if authorize:
            authorize(principal, "merge", None, _stored("Patient", sid, w.state(("Patient", sid))))
        moved = self._merge(w, sid, tid)
        return {"response": {"status": "200 OK", "location": f"Patient/{tid}", "outcome": {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational",
                       "diagnostics": f"merged Patient/{sid} into Patient/{tid}; {moved} resources moved"}]}}}

    def write_bundles(self, conn: sa.Connection, bundles: list[tuple[dict[str, Any], str | None]],
                      ) -> list[tuple[str, str, str, str | None, str | None]]:
        """The router's batch path: many bundles in the caller's one transaction and one flush,
        each bundle atomic (the first failing one raises; the caller's batch logic isolates it).
        Returns what was written, (action, type, id, patient id, message id) per resource."""
        w = self.writer(conn)
        normal = [(_as_transaction(b), mid) for b, mid in bundles]
        w.prefetch(*_wanted(normal))
        for bundle, message_id in normal:
            self._apply(w, bundle, ROUTER, message_id, None)
        return w.flush()


def _as_transaction(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("resourceType") == "Bundle":
        if doc.get("type") not in ("transaction", "batch"):
            raise ValidationError(f"the store takes transaction Bundles, not type {doc.get('type')!r}")
        return doc
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": doc}]}


def _wanted(bundles: list[tuple[dict[str, Any], str | None]]) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Ids and identifier keys the bundles will look up, to prefetch them in two queries."""
    keys: list[tuple[str, str]] = []
    idents: list[tuple[str, str, str]] = []
    for bundle, _ in bundles:
        for e in bundle.get("entry") or []:
            res = e.get("resource") if isinstance(e, dict) else None
            if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                continue
            rtype = res["resourceType"]
            if isinstance(res.get("id"), str):
                keys.append((rtype, res["id"]))
            try:
                idents.extend((rtype, s, v) for s, v in identity.business_keys(res))
            except ValidationError:
                pass  # reported when the bundle is applied
    return keys, idents


def _stored(rtype: str, rid: str, st: State | None) -> Stored | None:
    if st is None:
        return None
    return Stored(rtype, rid, st.version_id, st.last_updated, st.deleted, st.content, st.patient_id, st.org_id)
