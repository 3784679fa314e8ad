"""HTTP source: POST to a route's path on the engine's HTTP server.

HL7 v2 bodies (``x-application/hl7-v2+er7``) are answered with an HL7 ACK (200, AA only
after durable enqueue); other bodies (e.g. a FHIR Bundle) with 202 and the message id,
errors as a FHIR OperationOutcome.

Enhanced mode (MSH-15 valued), as on MLLP: the commit ACK CA / CE / CR instead of AA / AE / AR,
in the body only when MSH-15 asks for it (AL always, ER only on CE/CR, SU only on CA, NE never);
the HTTP status is the same either way, except that an accepted message without an ACK is answered
204 with no body. MSH-15 and MSH-16 are kept in the envelope headers (accept_ack_type,
application_ack_type); the application ACK is the worker's (router/app_ack.py).
"""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..errors import InputError, RejectedError, TransportError
from ..formats import hl7v2
from ..formats.ack import build_ack, wanted
from .base import SourceContext
from .http import HttpOptions

HL7_TYPES = ("x-application/hl7-v2+er7", "application/hl7-v2", "application/edi-hl7v2")


def outcome(status: int, code: str, text: str) -> JSONResponse:
    return JSONResponse(status_code=status, media_type="application/fhir+json", content={
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    })


def hl7_answer(header: hl7v2.Header | None, outcome: str, status: int, text: str = "", *, error: str | None = None,
               headers: dict[str, str] | None = None) -> Response:
    """The HL7 answer to a POST: outcome A (accepted), E (error) or R (refused); original mode AA/AE/AR,
    enhanced mode (MSH-15) CA/CE/CR when MSH-15 asks for it, else no body (204 when accepted)."""
    if header is not None and header.enhanced:
        if not wanted(header.accept_ack_type, outcome):
            return Response(status_code=204 if outcome == "A" else status, headers=headers)
        code = "C" + outcome
    else:
        code = "A" + outcome
    return Response(build_ack(header, code, text, error=error), status_code=status,
                    media_type="x-application/hl7-v2+er7", headers=headers)


class HttpIntake:
    def __init__(self, options: HttpOptions, context: SourceContext) -> None:
        self.options, self.context = options, context

    async def start(self) -> None:
        app: FastAPI = self.context.extra["http_app"]
        app.add_api_route(self.options.path, self._post, methods=["POST"], include_in_schema=True,
                          summary=f"submit a message to route(s) {', '.join(r.name for r in self.context.intake.routes)}")

    async def stop(self) -> None:
        return None

    async def _post(self, request: Request) -> Any:
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        body = await request.body()
        if len(body) > self.options.max_message_bytes:
            exc = InputError(f"message larger than {self.options.max_message_bytes} bytes")
            self.context.intake.refused(b"", f"http:{self.options.path}", exc)
            return outcome(413, "too-long", str(exc))
        allowed = self.options.content_types
        if allowed and ctype not in allowed:
            return outcome(415, "not-supported", f"Content-Type {ctype or '(none)'} not accepted here; use one of {', '.join(allowed)}")
        if ctype.endswith("json"):
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return outcome(400, "invalid", f"body is not valid JSON: {exc}")
        intake = self.context.intake
        source = f"http:{request.client.host if request.client else ''}{self.options.path}"
        is_hl7 = ctype in HL7_TYPES or hl7v2.is_hl7(body)
        header = None
        extra = {"http_path": self.options.path}
        try:
            if is_hl7:
                header = hl7v2.parse_header(hl7v2.decode(body))
                extra.update(header.ack_headers())
            accepted = intake.prepare(body, source=source, content_type=None if is_hl7 else ctype or None,
                                      headers=extra, header=header)
        except RejectedError as exc:
            if is_hl7:
                return hl7_answer(header, "R", 200, str(exc), error="unsupported-message-type")
            return outcome(422, "not-supported", str(exc))
        except InputError as exc:
            if is_hl7:
                return hl7_answer(header, "R", 400, str(exc), error="application-error")
            return outcome(400, "invalid", str(exc))
        try:
            await intake.enqueue(accepted)
        except TransportError:
            if is_hl7:
                return hl7_answer(header, "E", 503, "message not stored, please resend", error="application-error")
            return outcome(503, "transient", "message not stored, please resend")
        env = accepted.envelope
        if is_hl7:
            return hl7_answer(header, "A", 200, headers={"X-Message-Id": env.id})
        return JSONResponse(status_code=202, content={"id": env.id, "route": env.route, "status": "queued"},
                            headers={"X-Message-Id": env.id})
