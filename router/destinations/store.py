"""Record-store destination: applies each message's FHIR Bundle to the central store inside the
batch's database transaction (router.store.store.Store.write_bundles)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

import sqlalchemy as sa

from ..registry import ComponentSpec
from ..store import audit
from ..store.principal import ROUTER
from ..store.store import Store
from .base import DestinationContext, Output


class StoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreDestination:
    transactional = True

    def __init__(self, options: StoreOptions, context: DestinationContext) -> None:
        self.store = Store()
        self.route = context.route

    def write(self, outputs: list[Output], tx: sa.Connection | None) -> None:
        if tx is None:
            raise RuntimeError("the store destination needs the batch transaction")
        from ..errors import DestinationRejected

        bundles = []
        for out in outputs:
            if out.document is None:
                raise DestinationRejected("the store takes FHIR resources: this route's mapping produced none")
            bundles.append((out.document, out.envelope.id))
        written = self.store.write_bundles(tx, bundles)
        # one audit row per resource the router wrote, in the same transaction
        audit.record_many(tx, ({"principal": ROUTER, "action": action, "resource_type": rtype, "resource_id": rid,
                                "patient_id": patient, "request_id": mid, "detail": f"route {self.route}"}
                               for action, rtype, rid, patient, mid in written))

    def close(self) -> None:
        return None


SPEC = ComponentSpec("destination", "store", "the central health record store (FHIR resources)", StoreOptions,
                     lambda o, c: StoreDestination(o, c), needs_document=True)
