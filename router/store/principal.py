"""Who is asking: the authenticated client the store checks every read and write against."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["lab", "insurer", "pharmacy", "organization", "citizen", "admin", "router"]
ROLES: tuple[Role, ...] = ("lab", "insurer", "pharmacy", "organization", "citizen", "admin", "router")


@dataclass(frozen=True)
class Principal:
    client_id: str
    role: Role
    organization: str | None = None  # Organization id the client acts for (lab, insurer, pharmacy, organization)
    patient: str | None = None  # citizen: their own Patient id
    scopes: frozenset[str] = field(default_factory=frozenset)  # e.g. {"system/*.read"}; informational


#: the routing engine itself, writing what routes deliver
ROUTER = Principal(client_id="router", role="router")
