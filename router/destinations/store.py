"""Record-store destination: applies each message's FHIR Bundle to the central store inside the
batch's database transaction (router.store.store.Store.write_bundles)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

import sqlalchemy as sa

from ..registry import ComponentSpec
from ..store.store import Store
from .base import DestinationContext, Output


class StoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreDestination:
    transactional = True

    def __init__(self, options: StoreOptions, context: DestinationContext) -> None:
        self.store = Store()

    def write(self, outputs: list[Output], tx: sa.Connection | None) -> None:
        if tx is None:
            raise RuntimeError("the store destination needs the batch transaction")
        from ..errors import DestinationRejected

        bundles = []
        for out in outputs:
            if out.document is None:
                raise DestinationRejected("the store takes FHIR resources: this route's mapping produced none")
            bundles.append((out.document, out.envelope.id))
        self.store.write_bundles(tx, bundles)

    def close(self) -> None:
        return None


SPEC = ComponentSpec("destination", "store", "the central health record store (FHIR resources)", StoreOptions,
                     lambda o, c: StoreDestination(o, c), needs_document=True)
