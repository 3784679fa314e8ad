"""HTTP source: POST to a route's path on the engine's HTTP server.

HL7 v2 bodies (``x-application/hl7-v2+er7``) are answered with an HL7 ACK (200, AA only
after durable enqueue); other bodies (e.g. a FHIR Bundle) with 202 and the message id,
errors as a FHIR OperationOutcome.
"""
from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..errors import InputError, RejectedError, TransportError
from ..formats import hl7v2
from ..formats.ack import build_ack
from .base import SourceContext
from .http import HttpOptions

HL7_TYPES = ("x-application/hl7-v2+er7", "application/hl7-v2", "application/edi-hl7v2")


def outcome(status: int, code: str, text: str) -> JSONResponse:
    return JSONResponse(status_code=status, media_type="application/fhir+json", content={
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    })


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
        try:
            if is_hl7:
                header = hl7v2.parse_header(hl7v2.decode(body))
            accepted = intake.prepare(body, source=source, content_type=None if is_hl7 else ctype or None,
                                      headers={"http_path": self.options.path})
        except RejectedError as exc:
            if is_hl7:
                return Response(build_ack(header, "AR", str(exc), error="unsupported-message-type"),
                                status_code=200, media_type="x-application/hl7-v2+er7")
            return outcome(422, "not-supported", str(exc))
        except InputError as exc:
            if is_hl7:
                return Response(build_ack(header, "AR", str(exc), error="application-error"),
                                status_code=400, media_type="x-application/hl7-v2+er7")
            return outcome(400, "invalid", str(exc))
        try:
            await intake.enqueue(accepted)
        except TransportError:
            if is_hl7:
                return Response(build_ack(header, "AE", "message not stored, please resend", error="application-error"),
                                status_code=503, media_type="x-application/hl7-v2+er7")
            return outcome(503, "transient", "message not stored, please resend")
        env = accepted.envelope
        if is_hl7:
            return Response(build_ack(header, "AA"), status_code=200, media_type="x-application/hl7-v2+er7",
                            headers={"X-Message-Id": env.id})
        return JSONResponse(status_code=202, content={"id": env.id, "route": env.route, "status": "queued"},
                            headers={"X-Message-Id": env.id})
