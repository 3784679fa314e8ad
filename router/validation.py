"""FHIR R4 validation with fhir.resources (R4B models, which match R4 for the resources we use).
Slow (about 150 Bundles/s): for dry runs, tests and routes that ask for it, not the hot path."""
from __future__ import annotations

from typing import Any

import pydantic

from .errors import ValidationError


def validate_fhir(document: dict[str, Any]) -> None:
    """Raise ValidationError naming the first invalid element of each invalid resource."""
    from fhir.resources.R4B import get_fhir_model_class

    resources = [document]
    if document.get("resourceType") == "Bundle":
        resources = [e.get("resource") for e in document.get("entry", []) if isinstance(e, dict)]
        shell = {k: v for k, v in document.items() if k != "entry"}
        resources.insert(0, {**shell, "entry": [{k: v for k, v in e.items() if k != "resource"}
                                                for e in document.get("entry", []) if isinstance(e, dict)]})
    problems = []
    for res in resources:
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            problems.append("an entry has no resource")
            continue
        try:
            model = get_fhir_model_class(res["resourceType"])
        except (KeyError, ValueError):
            problems.append(f"unknown resource type {res['resourceType']!r}")
            continue
        try:
            model.model_validate(res)
        except pydantic.ValidationError as exc:
            for err in exc.errors()[:3]:
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(f"{res['resourceType']}/{res.get('id', '?')}: {loc}: {err['msg']}")
    if problems:
        raise ValidationError("; ".join(problems))
