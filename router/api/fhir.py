"""The FHIR R4 REST API over the record store, mounted at ``settings.api.base_path`` (``/fhir``).

Interactions (every response is ``application/fhir+json``)::

    GET  /metadata                       CapabilityStatement (no credentials needed)
    GET  /{type}/{id}                    read      (ETag W/"<version>", Last-Modified)
    GET  /{type}/{id}/_history/{vid}     vread
    GET  /{type}/{id}/_history           history-instance (Bundle type history, newest first)
    GET  /{type}?params                  search-type (searchset Bundle, paged by next links)
    POST /{type}/_search                 the same, parameters in a form body (and/or the URL)
    POST /                               transaction Bundle -> transaction-response
    PUT  /{type}/{id}                    update: a one-entry transaction (identifier upserts apply)
    POST /{type}                         create: a one-entry transaction (an If-None-Exist header
                                         names the identifier to upsert on); the body's id is ignored

Any FHIR R4 resource type is served; the CapabilityStatement lists the types with search
parameters beyond ``_id``, ``_lastUpdated`` and ``identifier`` (router.store.search_params) and
those access control names. Every path under the base path belongs to the API: an ``http``
source configured there would be answered by the API instead.

Every other request needs credentials (deny by default): an ``X-API-Key`` or an OAuth bearer
token (router.api.auth). Each read, vread, history, search and write leaves one audit row per
request (a transaction: one per entry written), allowed or denied, with the patient id where
known and the request id: the ``X-Request-Id`` header when the client sends a sane one, else a
generated one; it is returned in the response's ``X-Request-Id`` header either way.

Errors are one ``OperationOutcome`` each, never a traceback: InputError 400 (malformed JSON,
unknown search parameter, bad id), UnauthorizedError 401 (with ``WWW-Authenticate``),
ForbiddenError 403, NotFoundError 404 (also an unknown resource type, with a did-you-mean),
405 (a known path with a method it does not take), ConflictError 409 (identifiers matching
several stored resources; a unique-key clash with concurrent writes that persists after
WRITE_ATTEMPTS tries), GoneError 410 (deleted; a search cursor too old), 413 (body over
MAX_BODY_BYTES), 415 (a body that is not JSON / a form), ValidationError 422 (e.g. a СНИЛС
with a wrong check number), TransientError and database outages 503, anything else 500 with
only the request id (the exception is logged with it).

403 or 404 for a resource the caller may not see
-------------------------------------------------
**403, consistently.** The order of checks is: credentials (401), the role's right to read the
resource *type* at all (403, before any lookup), the resource's existence (404), the caller's
right to this *instance* (patient compartment / organisation, 403), deletion (410). So a lab
asking for a Claim gets 403 whether or not it exists; a citizen asking for another person's
Observation gets 403; nobody learns that a resource they may not read was deleted (the 403
comes first). The price is that an authenticated client can tell an existing id it may not
read (403) from a missing one (404). We accept it: ids are server-assigned UUIDs (not
guessable, not meaningful) and every such attempt is audited as denied, while a 404 would hide
misconfigured scopes from the integrators who must fix them. Searches never answer 403 for
single resources: what the caller may not read is simply not in the results (only a type the
role may not read at all is 403). Writes: 403 when the role may not write that resource (e.g.
a lab writing another organisation's results); the whole transaction is then refused.

The database work of a request runs in one short transaction (``engine.begin()``), in the
threadpool (the endpoints are plain ``def``), so the event loop that also serves MLLP never
waits on the database. Allowed accesses are audited inside that transaction (no data without
its audit row); refused and failed ones in a transaction of their own afterwards.
"""
from __future__ import annotations

import difflib
import email.utils
import re
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
import sqlalchemy as sa
import sqlalchemy.exc
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute

from .. import __version__
from ..config.schema import ApiSettings
from ..errors import (AccessError, ConflictError, ForbiddenError, GoneError, InputError, NotFoundError,
                      PermanentError, RouterError, TransientError, UnauthorizedError, ValidationError)
from ..logging import get
from ..store import access, audit, search_params
from ..store import search as store_search
from ..store.principal import Principal
from ..store.store import Store, Stored, compartment, instant
from .auth import Authenticator

log = get("router.api")

FHIR_JSON = "application/fhir+json"
JSON_TYPES = (FHIR_JSON, "application/json", "application/json+fhir")
FORM = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 32 * 1024 * 1024
WRITE_ATTEMPTS = 3  # a write that clashes with a concurrent one on a unique key is tried again
FHIR_VERSION = "4.0.1"
TYPE_INTERACTIONS = ("read", "vread", "update", "create", "search-type", "history-instance")

#: the resource types of FHIR R4 (4.0.1): any of them may be stored, read and searched
R4_TYPES = frozenset({
    "Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment", "AppointmentResponse",
    "AuditEvent", "Basic", "Binary", "BiologicallyDerivedProduct", "BodyStructure", "Bundle", "CapabilityStatement",
    "CarePlan", "CareTeam", "CatalogEntry", "ChargeItem", "ChargeItemDefinition", "Claim", "ClaimResponse",
    "ClinicalImpression", "CodeSystem", "Communication", "CommunicationRequest", "CompartmentDefinition",
    "Composition", "ConceptMap", "Condition", "Consent", "Contract", "Coverage", "CoverageEligibilityRequest",
    "CoverageEligibilityResponse", "DetectedIssue", "Device", "DeviceDefinition", "DeviceMetric", "DeviceRequest",
    "DeviceUseStatement", "DiagnosticReport", "DocumentManifest", "DocumentReference", "EffectEvidenceSynthesis",
    "Encounter", "Endpoint", "EnrollmentRequest", "EnrollmentResponse", "EpisodeOfCare", "EventDefinition",
    "Evidence", "EvidenceVariable", "ExampleScenario", "ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal",
    "GraphDefinition", "Group", "GuidanceResponse", "HealthcareService", "ImagingStudy", "Immunization",
    "ImmunizationEvaluation", "ImmunizationRecommendation", "ImplementationGuide", "InsurancePlan", "Invoice",
    "Library", "Linkage", "List", "Location", "Measure", "MeasureReport", "Media", "Medication",
    "MedicationAdministration", "MedicationDispense", "MedicationKnowledge", "MedicationRequest",
    "MedicationStatement", "MedicinalProduct", "MedicinalProductAuthorization", "MedicinalProductContraindication",
    "MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
    "MedicinalProductManufactured", "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect", "MessageDefinition", "MessageHeader", "MolecularSequence", "NamingSystem",
    "NutritionOrder", "Observation", "ObservationDefinition", "OperationDefinition", "OperationOutcome",
    "Organization", "OrganizationAffiliation", "Parameters", "Patient", "PaymentNotice", "PaymentReconciliation",
    "Person", "PlanDefinition", "Practitioner", "PractitionerRole", "Procedure", "Provenance", "Questionnaire",
    "QuestionnaireResponse", "RelatedPerson", "RequestGroup", "ResearchDefinition", "ResearchElementDefinition",
    "ResearchStudy", "ResearchSubject", "RiskAssessment", "RiskEvidenceSynthesis", "Schedule", "SearchParameter",
    "ServiceRequest", "Slot", "Specimen", "SpecimenDefinition", "StructureDefinition", "StructureMap",
    "Subscription", "Substance", "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
    "SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification", "SupplyDelivery",
    "SupplyRequest", "Task", "TerminologyCapabilities", "TestReport", "TestScript", "ValueSet", "VerificationResult",
    "VisionPrescription",
})

#: recorded as the principal of requests without valid credentials
ANONYMOUS = Principal(client_id="anonymous", role="anonymous")  # type: ignore[arg-type]

_ID = re.compile(r"^[A-Za-z0-9.-]{1,64}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


# ---------------------------------------------------------------------------- responses and errors
class FhirResponse(Response):
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class PayloadTooLarge(InputError):
    code = "too-long"


class UnsupportedMediaType(InputError):
    code = "not-supported"


class MethodNotAllowed(InputError):
    code = "not-supported"


# error class -> (HTTP status, FHIR IssueType); the first match (most specific first) wins
_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (UnauthorizedError, 401, "login"),
    (ForbiddenError, 403, "forbidden"),
    (AccessError, 403, "security"),
    (PayloadTooLarge, 413, "too-long"),
    (UnsupportedMediaType, 415, "not-supported"),
    (MethodNotAllowed, 405, "not-supported"),
    (InputError, 400, "invalid"),
    (ValidationError, 422, "invalid"),
    (NotFoundError, 404, "not-found"),
    (GoneError, 410, "deleted"),
    (ConflictError, 409, "conflict"),
    (PermanentError, 422, "processing"),
    (TransientError, 503, "transient"),
)


def outcome(severity: str, code: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": severity, "code": code, "diagnostics": text}]}


def error_response(exc: BaseException, request_id: str, www_authenticate: str = "") -> FhirResponse:
    """The OperationOutcome for any exception: never a traceback, never internals for a 500."""
    if isinstance(exc, RequestValidationError):
        errs = exc.errors()
        where = ", ".join(".".join(str(x) for x in e.get("loc", ())) for e in errs[:3])
        return FhirResponse(outcome("error", "invalid", f"invalid request: {where or 'parameters'}"), status_code=400)
    if isinstance(exc, sqlalchemy.exc.IntegrityError):
        # two requests writing the same identifier or id at once: the loser may simply retry
        return FhirResponse(outcome("error", "conflict", "a concurrent write of the same resource or identifier; "
                                                         "retry the request"), status_code=409)
    if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        log.warning("api: database unavailable", request_id=request_id, error=type(exc).__name__)
        return FhirResponse(outcome("error", "transient", "database unavailable; retry later"), status_code=503,
                            headers={"Retry-After": "5"})
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            headers = {"WWW-Authenticate": www_authenticate} if status == 401 and www_authenticate else None
            return FhirResponse(outcome("error", code, str(exc)), status_code=status, headers=headers)
    log.error("api: request failed", request_id=request_id, error=type(exc).__name__, exc_info=exc)
    return FhirResponse(outcome("fatal", "exception", f"internal error (request id {request_id})"), status_code=500)


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else str(uuid.uuid4())


def _fhir_route_class(www_authenticate: str) -> type[APIRoute]:
    class FhirRoute(APIRoute):
        """Every FHIR route: a request id in and out, and any exception (including FastAPI's own
        parameter validation) answered as an OperationOutcome by error_response."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def fhir_handler(request: Request) -> Response:
                rid = _request_id(request)
                request.state.request_id = rid
                try:
                    response = await handler(request)
                except Exception as exc:  # noqa: BLE001 - the one place errors become responses
                    response = error_response(exc, rid, www_authenticate)
                response.headers["X-Request-Id"] = rid
                return response

            return fhir_handler

    return FhirRoute


async def _body(request: Request) -> bytes:
    """The request body, read on the event loop (the endpoints themselves run in the threadpool)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def json_body(request: Request, body: bytes) -> dict[str, Any]:
    ctype = _media_type(request)
    if ctype and ctype not in JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type {ctype} is not accepted; send {FHIR_JSON}")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError("body must be a JSON object (a FHIR resource)")
    return value  # type: ignore[no-any-return]


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _clip(value: str | None, n: int = 64) -> str | None:
    return value[:n] if value else None


# ---------------------------------------------------------------------------- the capability catalogue
def search_catalogue() -> dict[str, list[dict[str, str]]]:
    """Resource type -> its search parameters [{name, type, documentation}], from
    router.store.search_params (the table the indexer and the search use): the types it
    describes, plus the other types access control knows (their identifiers, _id, _lastUpdated).
    Every other R4 type is served the same way but not listed."""
    sp = search_params
    out = sp.catalogue()
    for rtype in (*access.DIRECTORY, *access.PATIENT_TYPES):
        if rtype not in out:
            out[rtype] = [{"name": n, "type": t, "documentation": doc} for n, (t, doc) in sp.SPECIAL.items()] + \
                         [{"name": p.name, "type": p.type, "documentation": p.expression}
                          for p in sp.params_for(rtype).values()]
    return {t: [{k: v for k, v in p.items() if v} for p in params] for t, params in out.items()}


def capability_statement(base_url: str, started: float) -> dict[str, Any]:
    catalogue = search_catalogue()
    resources = []
    for rtype in sorted(catalogue):
        resources.append({
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": c} for c in TYPE_INTERACTIONS],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
            "searchParam": catalogue[rtype],
        })
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(started),
        "publisher": "hl7-router",
        "kind": "instance",
        "software": {"name": "hl7-router", "version": __version__},
        "implementation": {"description": "hl7-router central health record store", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Reads and searches are limited to what the caller's role may see; every access "
                             "is audited. Writes (transaction, create, update) upsert on business identifiers "
                             "(СНИЛС, ЕНП, MRN, order and prescription numbers): a resource carrying a stored "
                             "identifier updates the stored resource, whatever id it was sent with.",
            "security": {
                "cors": False,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "OAuth", "display": "OAuth"}]}],
                "description": "OAuth 2.0 bearer token (JWT) in Authorization, or an API key in X-API-Key.",
            },
            "resource": resources,
            "interaction": [{"code": "transaction"}],
        }],
    }


# ---------------------------------------------------------------------------- one request
@dataclass
class Call:
    """One audited request: who asks, what about, and its request id."""

    request_id: str
    action: str
    resource_type: str | None = None
    resource_id: str | None = None
    patient_id: str | None = None
    principal: Principal | None = None


@dataclass
class WriteLog:
    """Wraps access.authorize_write for Store.transaction, remembering each entry it authorised
    (action, type, id, patient) for the audit."""

    seen: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)

    def __call__(self, principal: Principal, action: str, new: dict[str, Any] | None, current: Stored | None) -> None:
        if new is not None:
            rtype, rid, patient = new.get("resourceType"), new.get("id"), compartment(new)[0]
        elif current is not None:
            rtype, rid, patient = current.resource_type, current.id, current.patient_id
        else:
            rtype = rid = patient = None
        self.seen.append((action, rtype, rid, patient))
        access.authorize_write(principal, action, new, current)


class FhirApi:
    def __init__(self, engine: sa.Engine, settings: ApiSettings, base_dir: str) -> None:
        self.engine = engine
        self.settings = settings
        self.store = Store()
        self.auth = Authenticator(settings, base_dir, engine)
        self.started = time.time()

    # ------------------------------------------------------------------ plumbing
    def base_url(self, request: Request) -> str:
        return str(request.base_url).rstrip("/") + self.settings.base_path.rstrip("/")

    @staticmethod
    def resource_type(name: str) -> str:
        if name in R4_TYPES:
            return name
        lower = {t.lower(): t for t in R4_TYPES}
        guess = [lower[name.lower()]] if name.lower() in lower else \
            difflib.get_close_matches(name, sorted(R4_TYPES), n=1)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        raise NotFoundError(f"unknown resource type {name[:64]!r}{hint}")

    @staticmethod
    def resource_id(rid: str) -> str:
        if not _ID.match(rid):
            raise InputError(f"invalid resource id {rid[:80]!r} (1-64 of A-Z a-z 0-9 - .)")
        return rid

    @contextmanager
    def audited(self, request: Request, action: str, rtype: str | None = None, rid: str | None = None,
                ) -> Iterator[Call]:
        """Authenticate, then run the body; a failure (401 included) leaves a denied or error
        audit row in its own transaction and propagates. Success rows are the body's job (in its
        transaction, see record)."""
        call = Call(request.state.request_id, action, _clip(rtype), _clip(rid))
        try:
            call.principal = self.auth.authenticate(request.headers)
            yield call
        except Exception as exc:
            self._record_failure(call, exc)
            raise

    def _record_failure(self, call: Call, exc: BaseException) -> None:
        outcome_: audit.Outcome
        if isinstance(exc, AccessError):
            outcome_, detail = "denied", f"{exc.code}: {exc}"
        elif isinstance(exc, RouterError):
            outcome_, detail = "error", f"{exc.code}: {exc}"
        else:
            outcome_, detail = "error", type(exc).__name__
        try:
            with self.engine.begin() as conn:
                audit.record(conn, call.principal or ANONYMOUS, call.action, resource_type=call.resource_type,
                             resource_id=call.resource_id, patient_id=call.patient_id, outcome=outcome_,
                             detail=detail[:1000], request_id=call.request_id)
        except Exception as audit_exc:  # noqa: BLE001 - the request's own error is what the client gets
            log.error("api: audit row not written", request_id=call.request_id, error=type(audit_exc).__name__)

    @staticmethod
    def record(conn: sa.Connection, call: Call, action: str | None = None, *, resource_type: str | None = None,
               resource_id: str | None = None, patient_id: str | None = None, detail: str | None = None) -> None:
        assert call.principal is not None
        audit.record(conn, call.principal, action or call.action,
                     resource_type=resource_type or call.resource_type, resource_id=resource_id or call.resource_id,
                     patient_id=patient_id or call.patient_id, outcome="allowed", detail=detail,
                     request_id=call.request_id)

    def visible(self, conn: sa.Connection, call: Call, rtype: str, rid: str, *, deleted_ok: bool = False) -> Stored:
        """The current version of a resource the caller may read: 403 for a type the role may not
        read (before looking), 404 when missing, 403 for an instance outside the caller's
        compartment, and only then 410 when deleted (unless deleted_ok: vread and history show
        the versions of a deleted resource)."""
        assert call.principal is not None
        access.read_condition(call.principal, rtype)
        cur = self.store.current(conn, rtype, rid)
        if cur is None:
            raise NotFoundError(f"{rtype}/{rid} not found")
        call.patient_id = cur.patient_id
        access.check_read(conn, call.principal, cur)
        if cur.deleted and not deleted_ok:
            raise GoneError(f"{rtype}/{rid} was deleted (version {cur.version_id})")
        return cur

    # ------------------------------------------------------------------ interactions
    def metadata(self, request: Request) -> FhirResponse:
        return FhirResponse(capability_statement(self.base_url(request), self.started))

    def read(self, request: Request, rtype: str, rid: str) -> FhirResponse:
        with self.audited(request, "read", rtype, rid) as call:
            rtype, rid = self.resource_type(rtype), self.resource_id(rid)
            with self.engine.begin() as conn:
                st = self.visible(conn, call, rtype, rid)
                self.record(conn, call)
        return self._resource(st)

    def vread(self, request: Request, rtype: str, rid: str, vid: str) -> FhirResponse:
        with self.audited(request, "vread", rtype, rid) as call:
            rtype, rid = self.resource_type(rtype), self.resource_id(rid)
            if not vid.isdigit() or not 0 < int(vid) < 2**31:
                raise NotFoundError(f"{rtype}/{rid}/_history/{vid[:20]} not found (versions are 1, 2, ...)")
            with self.engine.begin() as conn:
                self.visible(conn, call, rtype, rid, deleted_ok=True)
                st = self.store.vread(conn, rtype, rid, int(vid))
                self.record(conn, call, detail=f"version {vid}")
        return self._resource(st)

    def history(self, request: Request, rtype: str, rid: str) -> FhirResponse:
        with self.audited(request, "history", rtype, rid) as call:
            rtype, rid = self.resource_type(rtype), self.resource_id(rid)
            with self.engine.begin() as conn:
                self.visible(conn, call, rtype, rid, deleted_ok=True)
                versions = self.store.history(conn, rtype, rid)
                self.record(conn, call, detail=f"{len(versions)} versions")
        base = self.base_url(request)
        entries = []
        for v in versions:
            method = "DELETE" if v.deleted else ("POST" if v.version_id == 1 else "PUT")
            status = "410 Gone" if v.deleted else ("201 Created" if v.version_id == 1 else "200 OK")
            entry: dict[str, Any] = {"fullUrl": f"{base}/{rtype}/{rid}"}
            if not v.deleted:
                entry["resource"] = v.resource()
            entry["request"] = {"method": method, "url": rtype if method == "POST" else f"{rtype}/{rid}"}
            entry["response"] = {"status": status, "etag": _etag(v.version_id), "lastModified": instant(v.last_updated)}
            entries.append(entry)
        return FhirResponse({"resourceType": "Bundle", "type": "history", "total": len(entries),
                             "link": [{"relation": "self", "url": f"{base}/{rtype}/{rid}/_history"}],
                             "entry": entries})

    def search_get(self, request: Request, rtype: str) -> FhirResponse:
        return self._search(request, rtype, None)

    def search_post(self, request: Request, rtype: str, body: bytes) -> FhirResponse:
        return self._search(request, rtype, body)

    @staticmethod
    def _form(request: Request, body: bytes) -> list[tuple[str, str]]:
        ctype = _media_type(request)
        if body.strip() and ctype != FORM:
            raise UnsupportedMediaType(f"POST _search takes a {FORM} body, not {ctype or '(no Content-Type)'}")
        try:
            return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise InputError("the form body is not UTF-8") from None

    def _search(self, request: Request, rtype: str, form: bytes | None) -> FhirResponse:
        """Search-type; `form` is the body of POST _search (its parameters add to the URL's)."""
        with self.audited(request, "search", rtype) as call:
            rtype = self.resource_type(rtype)
            params = list(request.query_params.multi_items())
            if form is not None:
                params += self._form(request, form)
            assert call.principal is not None
            call.patient_id = _searched_patient(rtype, params, call.principal)
            access.read_condition(call.principal, rtype)  # 403 for a type the role may not read at all
            with self.engine.begin() as conn:
                # the callable: matches and _include'd resources each limited by the rule of their type
                bundle = store_search.search(conn, rtype, params, principal=call.principal,
                                             base_url=self.base_url(request), read_condition=access.read_condition,
                                             page_size=self.settings.page_size,
                                             max_page_size=self.settings.max_page_size, store=self.store)
                patients = {compartment(e["resource"])[0] for e in bundle.get("entry", [])
                            if isinstance(e.get("resource"), dict)} - {None}
                if call.patient_id is None and len(patients) == 1:
                    call.patient_id = next(iter(patients))
                query = "&".join(sorted({k for k, _ in params}))
                self.record(conn, call, detail=f"params: {query or '(none)'}; {len(bundle.get('entry', []))} "
                                              f"entries, {len(patients)} patient(s)"[:1000])
        return FhirResponse(bundle)

    def transaction(self, request: Request, body: bytes) -> FhirResponse:
        with self.audited(request, "transaction") as call:
            bundle = json_body(request, body)
            if bundle.get("resourceType") != "Bundle":
                raise InputError(f"POST {self.settings.base_path} takes a transaction Bundle, "
                                 f"not {str(bundle.get('resourceType'))[:64]}")
            result, _ = self._write(call, bundle)
        return FhirResponse(result)

    def create(self, request: Request, rtype: str, body: bytes) -> FhirResponse:
        with self.audited(request, "create", rtype) as call:
            rtype = self.resource_type(rtype)
            resource = self._single(request, body, rtype)
            resource.pop("id", None)  # the server assigns the id (or the identifiers find the stored one)
            req: dict[str, Any] = {"method": "POST", "url": rtype}
            if if_none_exist := request.headers.get("if-none-exist"):
                req["ifNoneExist"] = if_none_exist
            return self._write_one(call, request, resource, req)

    def update(self, request: Request, rtype: str, rid: str, body: bytes) -> FhirResponse:
        with self.audited(request, "update", rtype, rid) as call:
            rtype, rid = self.resource_type(rtype), self.resource_id(rid)
            resource = self._single(request, body, rtype)
            if resource.setdefault("id", rid) != rid:
                raise InputError(f"the resource's id {str(resource['id'])[:64]!r} differs from the URL's {rid!r}")
            return self._write_one(call, request, resource, {"method": "PUT", "url": f"{rtype}/{rid}"})

    def _single(self, request: Request, body: bytes, rtype: str) -> dict[str, Any]:
        resource = json_body(request, body)
        if resource.get("resourceType") != rtype:
            raise InputError(f"the body is a {str(resource.get('resourceType'))[:64]}, not a {rtype}")
        return resource

    def _write_one(self, call: Call, request: Request, resource: dict[str, Any], req: dict[str, Any]) -> FhirResponse:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": resource, "request": req}]}
        result, stored = self._write(call, bundle, read_back=True)
        assert stored is not None
        resp = result["entry"][0]["response"]
        status = int(resp["status"].split()[0])
        base = self.base_url(request)
        out = self._resource(stored, status=status)
        out.headers["Location"] = f"{base}/{resp['location']}"
        return out

    def _write(self, call: Call, bundle: dict[str, Any], read_back: bool = False,
               ) -> tuple[dict[str, Any], Stored | None]:
        """Store.transaction with access.authorize_write on every entry, audited per entry. A
        unique-key clash with a concurrent request (both creating the same identifier) is retried:
        the next attempt finds the other's resource and updates it, as if they had come in turn."""
        assert call.principal is not None
        original = orjson.dumps(bundle)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            writes = WriteLog()
            try:
                with self.engine.begin() as conn:
                    result = self.store.transaction(conn, orjson.loads(original), principal=call.principal,
                                                    authorize=writes)
                    for action, rtype, rid, patient in writes.seen:
                        self.record(conn, call, action, resource_type=rtype, resource_id=rid, patient_id=patient)
                    stored = None
                    if read_back:
                        rtype, rid = result["entry"][0]["response"]["location"].split("/")[:2]
                        stored = self.store.read(conn, rtype, rid)
                return result, stored
            except sqlalchemy.exc.IntegrityError:
                if attempt < WRITE_ATTEMPTS:
                    continue
                self._blame(call, writes)
                raise
            except Exception:
                self._blame(call, writes)
                raise
        raise AssertionError("unreachable")

    @staticmethod
    def _blame(call: Call, writes: WriteLog) -> None:
        """Point the failure's audit row at the entry that failed (the last one authorised)."""
        if writes.seen:
            _, call.resource_type, call.resource_id, call.patient_id = writes.seen[-1]

    def _resource(self, st: Stored, status: int = 200) -> FhirResponse:
        return FhirResponse(st.resource(), status_code=status,
                            headers={"ETag": _etag(st.version_id), "Last-Modified": _http_date(st.last_updated)})


def _searched_patient(rtype: str, params: list[tuple[str, str]], principal: Principal) -> str | None:
    """The patient a search is about, when the search names one (for the audit row)."""
    if principal.patient:
        return principal.patient
    for k, v in params:
        name = k.split(":")[0]
        if (name in ("patient", "subject", "beneficiary") or (rtype == "Patient" and name == "_id")) and v:
            first = v.split(",")[0]
            if "/" not in first or first.split("/")[-2] == "Patient":
                return first.split("/")[-1][:64]
    return None


# ---------------------------------------------------------------------------- the router
def fhir_router(engine: sa.Engine, settings: ApiSettings, base_dir: str) -> APIRouter:
    """The FHIR API as an APIRouter with its prefix (``settings.base_path``) set: include it in
    the HTTP app. Builds the Authenticator now (a missing JWT secret fails at start)."""
    api = FhirApi(engine, settings, base_dir)
    challenge = 'Bearer realm="fhir", ApiKey realm="fhir" header="X-API-Key"' if settings.jwt else \
        'ApiKey realm="fhir" header="X-API-Key"'
    router = APIRouter(prefix=settings.base_path.rstrip("/"), route_class=_fhir_route_class(challenge),
                       tags=["FHIR"], default_response_class=FhirResponse)
    responses: dict[int | str, dict[str, Any]] = {200: {"content": {FHIR_JSON: {}}}}

    def metadata(request: Request) -> FhirResponse:
        """The CapabilityStatement (no credentials needed)."""
        return api.metadata(request)

    def read(request: Request, type: str, id: str) -> FhirResponse:
        """Read the current version of a resource."""
        return api.read(request, type, id)

    def vread(request: Request, type: str, id: str, vid: str) -> FhirResponse:
        """Read one version of a resource."""
        return api.vread(request, type, id, vid)

    def history(request: Request, type: str, id: str) -> FhirResponse:
        """Every version of a resource, newest first."""
        return api.history(request, type, id)

    def search_get(request: Request, type: str) -> FhirResponse:
        """Search (searchset Bundle; follow the `next` link for more)."""
        return api.search_get(request, type)

    def search_post(request: Request, type: str, body: bytes = Depends(_body)) -> FhirResponse:
        """Search with the parameters in an application/x-www-form-urlencoded body."""
        return api.search_post(request, type, body)

    def transaction(request: Request, body: bytes = Depends(_body)) -> FhirResponse:
        """Apply a transaction Bundle atomically; answers a transaction-response Bundle."""
        return api.transaction(request, body)

    def create(request: Request, type: str, body: bytes = Depends(_body)) -> FhirResponse:
        """Create (or, matched on business identifiers, update) one resource."""
        return api.create(request, type, body)

    def update(request: Request, type: str, id: str, body: bytes = Depends(_body)) -> FhirResponse:
        """Update one resource (a one-entry transaction)."""
        return api.update(request, type, id, body)

    def unknown(request: Request) -> FhirResponse:
        """Any other path or method under the base path: 405 or 404, as an OperationOutcome."""
        method, path = request.method, request.scope["path"]
        for route in router.routes:
            if isinstance(route, APIRoute) and route.endpoint is not unknown and route.path_regex.match(path):
                raise MethodNotAllowed(f"{method} is not supported on {path}")
        raise NotFoundError(f"no FHIR interaction at {method} {path}")

    add = router.add_api_route
    add("/metadata", metadata, methods=["GET"], responses=responses)
    if router.prefix:
        add("", transaction, methods=["POST"], responses=responses)
    add("/", transaction, methods=["POST"], include_in_schema=bool(not router.prefix))
    add("/{type}/_search", search_post, methods=["POST"], responses=responses)
    add("/{type}/{id}/_history/{vid}", vread, methods=["GET"], responses=responses)
    add("/{type}/{id}/_history", history, methods=["GET"], responses=responses)
    add("/{type}/{id}", read, methods=["GET"], responses=responses)
    add("/{type}/{id}", update, methods=["PUT"], responses=responses)
    add("/{type}", search_get, methods=["GET"], responses=responses)
    add("/{type}", create, methods=["POST"], responses=responses)
    every = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    if router.prefix:
        add("", unknown, methods=every, include_in_schema=False)
    add("/{path:path}", unknown, methods=every, include_in_schema=False)
    return router
