"""Versioned FHIR resources with identifier upserts and atomic transaction bundles.

Every write goes through ``Store.transaction`` (a FHIR transaction Bundle) or the single-resource
helpers it uses. Inside the caller's database transaction; a bundle is all-or-nothing (a
SAVEPOINT when several bundles share one commit, see ``write_bundles``).

Identity of a written resource, in order: a conditional URL (``Type?identifier=sys|val``) or
``ifNoneExist``; the resource's business identifiers (router.store.identity); the id it carries
(``PUT Type/id``, or ``id`` in the resource); else a new UUID. When the stored resource found by
identifier has another id than the incoming one, the incoming id is mapped to the stored one and
every reference in the bundle is rewritten, so a resent message upserts instead of duplicating.

A write whose content equals the current version (ignoring ``meta``) creates no version.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
import sqlalchemy as sa

from ..errors import ConflictError, GoneError, InputError, NotFoundError, ValidationError
from . import identity
from .principal import ROUTER, Principal
from .tables import INDEX_TABLES, history, identifiers, resources

_ID_OK = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")

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


def instant(ts: float) -> str:
    """FHIR instant (UTC, milliseconds)."""
    t = time.gmtime(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(ts * 1000) % 1000:03d}Z"


def _strip_meta(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = dict(out.pop("meta", None) or {})
    for k in ("versionId", "lastUpdated"):
        meta.pop(k, None)
    if meta:
        out["meta"] = meta
    return out


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
    """Replace every Reference.reference found in mapping (urn:uuid:..., Type/old -> Type/new)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "reference" and isinstance(v, str) and v in mapping:
                out[k] = mapping[v]
            else:
                out[k] = rewrite_references(v, mapping)
        return out
    if isinstance(value, list):
        return [rewrite_references(v, mapping) for v in value]
    return value


def _check_id(rid: str) -> str:
    if not rid or len(rid) > 64 or not set(rid) <= _ID_OK:
        raise InputError(f"invalid resource id {rid[:80]!r} (1-64 of A-Z a-z 0-9 - .)")
    return rid


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
    def put(self, conn: sa.Connection, resource: dict[str, Any], *, message_id: str | None = None,
            now: float | None = None) -> tuple[Stored, bool]:
        """Write `resource` (which carries resourceType and id) as the next version.
        Returns (stored, changed); an identical content creates no version."""
        now = now or time.time()
        rtype, rid = resource["resourceType"], _check_id(resource["id"])
        identity.normalize_identifiers(resource)
        keys = identity.business_keys(resource)
        cur = self.current(conn, rtype, rid)
        body = _strip_meta(resource)
        if cur is not None and not cur.deleted and _strip_meta(cur.resource()) == body:
            return cur, False
        version = (cur.version_id + 1) if cur else 1
        body["meta"] = {**(body.get("meta") or {}), "versionId": str(version), "lastUpdated": instant(now)}
        content = orjson.dumps(body)
        patient, org = compartment(body)
        row = {"version_id": version, "last_updated": now, "deleted": False, "patient_id": patient, "org_id": org,
               "message_id": message_id, "content": content}
        r = resources.c
        if cur is None:
            conn.execute(resources.insert().values(resource_type=rtype, id=rid, **row))
        else:
            conn.execute(resources.update().where(r.resource_type == rtype, r.id == rid).values(**row))
        conn.execute(history.insert().values(resource_type=rtype, id=rid, version_id=version, last_updated=now,
                                             deleted=False, content=content))
        self._replace_identifiers(conn, rtype, rid, keys)
        self._reindex(conn, rtype, rid, body)
        return Stored(rtype, rid, version, now, False, content, patient, org), True

    def delete(self, conn: sa.Connection, rtype: str, rid: str, *, now: float | None = None) -> Stored | None:
        """Tombstone version; identifiers and index rows go. None when there was nothing to delete."""
        now = now or time.time()
        cur = self.current(conn, rtype, rid)
        if cur is None or cur.deleted:
            return None
        version = cur.version_id + 1
        content = orjson.dumps({"resourceType": rtype, "id": rid,
                                "meta": {"versionId": str(version), "lastUpdated": instant(now)}})
        r = resources.c
        conn.execute(resources.update().where(r.resource_type == rtype, r.id == rid).values(
            version_id=version, last_updated=now, deleted=True, content=content))
        conn.execute(history.insert().values(resource_type=rtype, id=rid, version_id=version, last_updated=now,
                                             deleted=True, content=content))
        self._replace_identifiers(conn, rtype, rid, [])
        self._reindex(conn, rtype, rid, None)
        return Stored(rtype, rid, version, now, True, content, cur.patient_id, cur.org_id)

    def _replace_identifiers(self, conn: sa.Connection, rtype: str, rid: str, keys: list[tuple[str, str]]) -> None:
        i = identifiers.c
        conn.execute(identifiers.delete().where(i.resource_type == rtype, i.id == rid))
        if not keys:
            return
        taken = self.find_by_identifier(conn, rtype, keys) - {rid}
        if taken:
            raise ConflictError(f"{rtype}/{rid}: identifier already belongs to {rtype}/{sorted(taken)[0]}")
        conn.execute(identifiers.insert(), [{"resource_type": rtype, "system": s[:256], "value": v[:256], "id": rid}
                                            for s, v in keys])

    def _reindex(self, conn: sa.Connection, rtype: str, rid: str, resource: dict[str, Any] | None) -> None:
        for table in INDEX_TABLES.values():
            conn.execute(table.delete().where(table.c.resource_type == rtype, table.c.id == rid))
        if resource is None:
            return
        rows: dict[str, list[dict[str, Any]]] = {}
        for kind, row in self.indexer(resource):
            rows.setdefault(kind, []).append({"resource_type": rtype, "id": rid, **row})
        for kind, batch in rows.items():
            conn.execute(INDEX_TABLES[kind].insert(), batch)

    # ------------------------------------------------------------------ transactions
    def transaction(self, conn: sa.Connection, bundle: dict[str, Any], *, principal: Principal = ROUTER,
                    message_id: str | None = None,
                    authorize: Callable[[Principal, str, dict[str, Any] | None, Stored | None], None] | None = None,
                    ) -> dict[str, Any]:
        """Apply a transaction Bundle atomically inside `conn`'s transaction; return the
        transaction-response Bundle. `authorize(principal, action, new, current)` may raise
        ForbiddenError for any entry (the whole bundle then fails)."""
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise InputError("expected a Bundle")
        if bundle.get("type") not in ("transaction", "batch"):
            raise InputError(f"Bundle.type must be transaction, not {bundle.get('type')!r}")
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            raise InputError("Bundle.entry must be a list")
        now = time.time()
        plan: list[tuple[str, str, str, dict[str, Any] | None, str]] = []  # (method, type, id, resource, fullUrl)
        refmap: dict[str, str] = {}
        for n, e in enumerate(entries):
            if not isinstance(e, dict):
                raise InputError(f"Bundle.entry[{n}] is not an object")
            plan.append(self._plan_entry(conn, n, e, refmap))
        responses = []
        for (method, rtype, rid, res, _full), e in zip(plan, entries):
            if method == "DELETE":
                cur = self.current(conn, rtype, rid)
                if authorize:
                    authorize(principal, "delete", None, cur)
                st = self.delete(conn, rtype, rid, now=now)
                responses.append({"response": {"status": "204 No Content" if st else "404 Not Found"}})
                continue
            if method == "MERGE":
                assert res is not None
                responses.append(self._merge_entry(conn, res, refmap, now, principal, authorize))
                continue
            assert res is not None
            res = rewrite_references(res, refmap)
            res["id"] = rid
            cur = self.current(conn, rtype, rid)
            if authorize:
                authorize(principal, "update" if cur and not cur.deleted else "create", res, cur)
            st, changed = self.put(conn, res, message_id=message_id, now=now)
            created = cur is None or cur.deleted
            status = "201 Created" if created else "200 OK"
            responses.append({"response": {"status": status, "location": f"{rtype}/{rid}/_history/{st.version_id}",
                                           "etag": f'W/"{st.version_id}"', "lastModified": instant(st.last_updated)},
                              **({"fullUrl": f"{rtype}/{rid}"})})
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}

    def _plan_entry(self, conn: sa.Connection, n: int, e: dict[str, Any], refmap: dict[str, str],
                    ) -> tuple[str, str, str, dict[str, Any] | None, str]:
        req = e.get("request") or {}
        method = str(req.get("method") or ("PUT" if (e.get("resource") or {}).get("id") else "POST")).upper()
        url = str(req.get("url") or "")
        full = str(e.get("fullUrl") or "")
        if method == "DELETE":
            rtype, _, rid = url.partition("/")
            if not rid:
                raise InputError(f"Bundle.entry[{n}].request.url must be Type/id for DELETE")
            return ("DELETE", rtype, _check_id(rid), None, full)
        res = e.get("resource")
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise InputError(f"Bundle.entry[{n}].resource is missing or has no resourceType")
        res = dict(res)
        rtype = res["resourceType"]
        if rtype == "Parameters" and url.endswith("$merge"):
            return ("MERGE", "Patient", "", res, full)
        if method not in ("POST", "PUT"):
            raise InputError(f"Bundle.entry[{n}].request.method {method!r} is not supported (POST, PUT, DELETE)")
        identity.normalize_identifiers(res)
        # 1. a conditional URL or ifNoneExist names the identifier to match on
        cond = url.partition("?")[2] if "?" in url else str(req.get("ifNoneExist") or "")
        found: set[str] = set()
        if cond:
            keys = []
            for k, v in parse_qsl(cond, keep_blank_values=True):
                if k != "identifier":
                    raise InputError(f"Bundle.entry[{n}]: conditional writes match on identifier only, not {k!r}")
                system, bar, value = v.partition("|")
                keys.append(identity.canonical(system, value) if bar else ("", v))
            found = self.find_by_identifier(conn, rtype, keys)
        # 2. otherwise the business identifiers the resource carries
        if not found:
            found = self.find_by_identifier(conn, rtype, identity.business_keys(res))
        if len(found) > 1:
            raise ConflictError(f"Bundle.entry[{n}]: {rtype} identifiers match several stored resources "
                                f"({', '.join(sorted(found))})")
        incoming = res.get("id") or (url.split("/")[1] if method == "PUT" and "/" in url and "?" not in url else None)
        rid = next(iter(found)) if found else (incoming or str(uuid.uuid4()))
        _check_id(rid)
        if full:
            refmap[full] = f"{rtype}/{rid}"
        if incoming and incoming != rid:
            refmap[f"{rtype}/{incoming}"] = f"{rtype}/{rid}"
        return (method, rtype, rid, res, full)

    # ------------------------------------------------------------------ merge (ADT^A40)
    def merge_patients(self, conn: sa.Connection, source_id: str, target_id: str, *, now: float | None = None) -> int:
        """Merge Patient/source into Patient/target: every resource referring to the source is
        rewritten to the target (new versions), the source's identifiers move to the target, and
        the source becomes inactive with a replaced-by link. Returns how many resources moved."""
        now = now or time.time()
        if source_id == target_id:
            raise InputError("cannot merge a patient into itself")
        source = self.read(conn, "Patient", source_id).resource()
        target = self.read(conn, "Patient", target_id).resource()
        mapping = {f"Patient/{source_id}": f"Patient/{target_id}"}
        r = resources.c
        moved = 0
        rows = conn.execute(sa.select(r.resource_type, r.id).where(
            r.patient_id == source_id, r.deleted.is_(False), r.resource_type != "Patient")).all()
        for rtype, rid in rows:
            res = rewrite_references(self.read(conn, rtype, rid).resource(), mapping)
            self.put(conn, res, now=now)
            moved += 1
        known = {(i.get("system"), i.get("value")) for i in target.get("identifier", [])}
        extra = [i for i in source.get("identifier", []) if (i.get("system"), i.get("value")) not in known]
        source["active"] = False
        source["identifier"] = [{**i, "use": "old"} for i in source.get("identifier", [])]  # keys nothing now
        source["link"] = [{"other": {"reference": f"Patient/{target_id}"}, "type": "replaced-by"}]
        self.put(conn, source, now=now)
        target["identifier"] = list(target.get("identifier", [])) + extra
        target.setdefault("link", []).append({"other": {"reference": f"Patient/{source_id}"}, "type": "replaces"})
        self.put(conn, target, now=now)
        return moved

    def _merge_entry(self, conn: sa.Connection, params: dict[str, Any], refmap: dict[str, str], now: float,
                     principal: Principal, authorize: Any) -> dict[str, Any]:
        """A Bundle entry POST Patient/$merge with Parameters source-patient and result-patient
        (or target-patient) references; lets a mapping express ADT^A40."""
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
            authorize(principal, "merge", None, self.current(conn, "Patient", sid))
        moved = self.merge_patients(conn, sid, tid, now=now)
        return {"response": {"status": "200 OK", "location": f"Patient/{tid}", "outcome": {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational",
                       "diagnostics": f"merged Patient/{sid} into Patient/{tid}; {moved} resources moved"}]}}}

    def write_bundles(self, conn: sa.Connection, bundles: list[tuple[dict[str, Any], str | None]]) -> None:
        """The router's batch path: many bundles in the caller's one transaction, each atomic
        (on failure the exception propagates and the caller's batch logic isolates the bundle)."""
        for bundle, message_id in bundles:
            if bundle.get("resourceType") == "Bundle" and bundle.get("type") in ("transaction", "batch"):
                self.transaction(conn, bundle, message_id=message_id)
            elif bundle.get("resourceType") == "Bundle":
                raise ValidationError(f"the store takes transaction Bundles, not type {bundle.get('type')!r}")
            else:
                self.transaction(conn, {"resourceType": "Bundle", "type": "transaction",
                                        "entry": [{"resource": bundle}]}, message_id=message_id)
