"""Tables of the central health record store (FHIR R4 resources in SQL).

* ``store_resources``   the current version of each resource (tombstone when deleted), plus the
                        columns access control filters on: the patient compartment it belongs to
                        and the organisation responsible for it.
* ``store_history``     every version ever written (``meta.versionId`` 1..n), append-only.
* ``store_identifiers`` business identifier -> resource, for conditional create/update (upserts)
                        and the ``identifier`` search parameter. Unique per (type, system, value).
* ``idx_*``             the search index, one table per parameter type, rebuilt for a resource on
                        every write of it (router/store/indexer.py decides what goes in).
* ``store_audit``       append-only audit log of reads and writes (router/store/audit.py).
* ``store_api_keys``    machine clients: hashed API keys with their role and scope.

Content is the resource JSON as bytes (orjson), with ``meta.versionId``/``meta.lastUpdated`` set.
"""
from __future__ import annotations

import sqlalchemy as sa

from ..db import metadata

_TYPE = sa.String(64)
_ID = sa.String(64)

resources = sa.Table(
    "store_resources", metadata,
    sa.Column("resource_type", _TYPE, primary_key=True),
    sa.Column("id", _ID, primary_key=True),
    sa.Column("version_id", sa.Integer, nullable=False),
    sa.Column("last_updated", sa.Float, nullable=False),  # epoch seconds
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("patient_id", _ID, nullable=True),  # Patient compartment (the Patient's own id for a Patient)
    sa.Column("org_id", _ID, nullable=True),  # responsible Organization (managing/performing)
    sa.Column("message_id", sa.String(36), nullable=True),  # the routed message that last wrote it
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Index("ix_store_resources_patient", "patient_id", "resource_type"),
    sa.Index("ix_store_resources_updated", "resource_type", "last_updated"),
    sa.Index("ix_store_resources_org", "resource_type", "org_id", "deleted"),  # access control by organisation
)

history = sa.Table(
    "store_history", metadata,
    sa.Column("resource_type", _TYPE, primary_key=True),
    sa.Column("id", _ID, primary_key=True),
    sa.Column("version_id", sa.Integer, primary_key=True),
    sa.Column("last_updated", sa.Float, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
)

identifiers = sa.Table(
    "store_identifiers", metadata,
    sa.Column("resource_type", _TYPE, primary_key=True),
    sa.Column("system", sa.String(256), primary_key=True),
    sa.Column("value", sa.String(256), primary_key=True),
    sa.Column("id", _ID, nullable=False),
    sa.Index("ix_store_identifiers_res", "resource_type", "id"),
)


def _idx(name: str, *cols: sa.Column) -> sa.Table:  # type: ignore[type-arg]
    return sa.Table(
        name, metadata,
        sa.Column("resource_type", _TYPE, nullable=False),
        sa.Column("id", _ID, nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        *cols,
        sa.Index(f"ix_{name}_res", "resource_type", "id"),
    )


idx_token = _idx("idx_token", sa.Column("system", sa.String(256), nullable=True),
                 sa.Column("code", sa.String(256), nullable=False))
# value: lower-cased and accent-folded (indexer.fold); exact: as written, for :exact
idx_string = _idx("idx_string", sa.Column("value", sa.String(256), nullable=False),
                  sa.Column("exact", sa.String(256), nullable=True))
# [start, end) in epoch seconds; is_min/is_max: the resource's row with the lowest start / highest end
# for this parameter (exactly one each), the sort key of _sort=date / _sort=-date
idx_date = _idx("idx_date", sa.Column("start", sa.Float, nullable=False), sa.Column("end", sa.Float, nullable=False),
                sa.Column("is_min", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
                sa.Column("is_max", sa.Boolean, nullable=False, default=False, server_default=sa.false()))
idx_reference = _idx("idx_reference", sa.Column("target_type", _TYPE, nullable=False),
                     sa.Column("target_id", _ID, nullable=False))
idx_quantity = _idx("idx_quantity", sa.Column("value", sa.Float, nullable=False),
                    sa.Column("system", sa.String(256), nullable=True), sa.Column("code", sa.String(64), nullable=True))

sa.Index("ix_idx_token_q", idx_token.c.resource_type, idx_token.c.param, idx_token.c.code, idx_token.c.system)
sa.Index("ix_idx_string_q", idx_string.c.resource_type, idx_string.c.param, idx_string.c.value)
sa.Index("ix_idx_date_q", idx_date.c.resource_type, idx_date.c.param, idx_date.c.start)
sa.Index("ix_idx_date_end", idx_date.c.resource_type, idx_date.c.param, idx_date.c.end)  # ge/gt, _sort=-date
# string prefix search (LIKE 'abc%') on PostgreSQL in a non-C collation needs text_pattern_ops
sa.Index("ix_idx_string_prefix", idx_string.c.resource_type, idx_string.c.param, idx_string.c.value,
         postgresql_ops={"value": "text_pattern_ops"}).ddl_if(dialect="postgresql")
sa.Index("ix_idx_reference_q", idx_reference.c.resource_type, idx_reference.c.param, idx_reference.c.target_id)
sa.Index("ix_idx_quantity_q", idx_quantity.c.resource_type, idx_quantity.c.param, idx_quantity.c.value)

# PostgreSQL: a token's param, code and system are strongly dependent (a LOINC code is always a
# `code` of system LOINC); without these statistics the planner multiplies their selectivities,
# underestimates code=X twentyfold and drives a sorted search from it instead of walking the sort
# index (benchmarks/search.py: 58 -> 10 ms for code=Y&date=ge..&_sort=-date at 100,000 Observations)
sa.event.listen(idx_token, "after_create", sa.DDL(
    "CREATE STATISTICS IF NOT EXISTS st_idx_token_q (dependencies, mcv) ON param, code, system FROM idx_token"
).execute_if(dialect="postgresql"))
sa.event.listen(idx_reference, "after_create", sa.DDL(
    "CREATE STATISTICS IF NOT EXISTS st_idx_reference_q (dependencies) ON param, target_type FROM idx_reference"
).execute_if(dialect="postgresql"))

INDEX_TABLES = {"token": idx_token, "string": idx_string, "date": idx_date, "reference": idx_reference,
                "quantity": idx_quantity}

audit = sa.Table(
    "store_audit", metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),  # read, vread, search, history, create, update, delete, transaction
    sa.Column("resource_type", _TYPE, nullable=True),
    sa.Column("resource_id", _ID, nullable=True),
    sa.Column("patient_id", _ID, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),  # allowed, denied, error
    sa.Column("detail", sa.Text, nullable=True),  # e.g. the reason for a denial; never patient data
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Index("ix_store_audit_at", "at"),
    sa.Index("ix_store_audit_patient", "patient_id"),
)

api_keys = sa.Table(
    "store_api_keys", metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),  # the public part of the key
    sa.Column("secret_hash", sa.String(128), nullable=False),  # scrypt/sha256 of the secret part
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("organization", _ID, nullable=True),  # Organization id the client acts for (lab, insurer, ...)
    sa.Column("patient", _ID, nullable=True),  # citizen clients: their Patient id
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)
