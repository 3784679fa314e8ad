"""The search-index rows of one resource: [(kind, row)], kind in token|string|date|reference|quantity.

Placeholder until the full search parameter set lands: indexes identifier tokens only.
"""
from __future__ import annotations

from typing import Any


def index_entries(resource: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            out.append(("token", {"param": "identifier", "system": ident.get("system"), "code": ident["value"]}))
    return out
