"""Record-store destination: writes FHIR resources into the central store in the batch's transaction.

This is the routing core's minimal store: current version per (type, id) with a version
counter; an identical write creates no new version. The full store (history, search
index, identifier upserts) builds on the same table.
"""
from __future__ import annotations

import time
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from ..db import insert_rows, metadata
from ..errors import DestinationRejected
from ..registry import ComponentSpec
from .base import DestinationContext, Output

resources = sa.Table(
    "store_resources", metadata,
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("version_id", sa.Integer, nullable=False),
    sa.Column("last_updated", sa.Float, nullable=False),
    sa.Column("message_id", sa.String(36), nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
)


class StoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def resources_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document.get("resourceType") == "Bundle":
        return [e["resource"] for e in document.get("entry", []) if isinstance(e, dict) and "resource" in e]
    return [document]


class StoreDestination:
    transactional = True

    def __init__(self, options: StoreOptions, context: DestinationContext) -> None:
        self.route = context.route

    def write(self, outputs: list[Output], tx: sa.Connection | None) -> None:
        if tx is None:
            raise RuntimeError("the store destination needs the batch transaction")
        now = time.time()
        wanted: dict[tuple[str, str], tuple[bytes, str]] = {}
        for out in outputs:
            if out.document is None:
                raise DestinationRejected("the store takes FHIR resources: this route's mapping produced none")
            for res in resources_of(out.document):
                rtype, rid = res.get("resourceType"), res.get("id")
                if not isinstance(rtype, str) or not isinstance(rid, str) or not rid:
                    raise DestinationRejected(f"resource without resourceType/id in message {out.envelope.id}")
                wanted[(rtype, rid)] = (orjson.dumps(res, option=orjson.OPT_SORT_KEYS), out.envelope.id)
        if not wanted:
            return
        r = resources.c
        keys = list(wanted)
        current: dict[tuple[str, str], tuple[int, bytes]] = {}
        for i in range(0, len(keys), 300):
            cond = sa.tuple_(r.resource_type, r.id).in_(keys[i:i + 300])
            for row in tx.execute(sa.select(r.resource_type, r.id, r.version_id, r.content).where(cond)):
                current[(row[0], row[1])] = (row[2], row[3])
        inserts, updates = [], []
        for key, (content, mid) in wanted.items():
            old = current.get(key)
            if old is None:
                inserts.append({"resource_type": key[0], "id": key[1], "version_id": 1, "last_updated": now,
                                "message_id": mid, "content": content})
            elif old[1] != content:
                updates.append({"k_type": key[0], "k_id": key[1], "version_id": old[0] + 1, "last_updated": now,
                                "message_id": mid, "content": content})
        insert_rows(tx, resources, inserts)
        if updates:
            tx.execute(resources.update().where(r.resource_type == sa.bindparam("k_type"), r.id == sa.bindparam("k_id"))
                       .values(version_id=sa.bindparam("version_id"), last_updated=sa.bindparam("last_updated"),
                               message_id=sa.bindparam("message_id"), content=sa.bindparam("content")), updates)

    def close(self) -> None:
        return None


SPEC = ComponentSpec("destination", "store", "the central health record store (FHIR resources)", StoreOptions,
                     lambda o, c: StoreDestination(o, c), needs_document=True)
