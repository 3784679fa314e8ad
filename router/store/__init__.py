"""The central health record store: versioned FHIR R4 resources in SQL.

Public interface (all functions take an open SQLAlchemy connection inside the caller's
transaction, so the router can write a batch of messages per commit):

* router.store.store:    ``Store`` - transaction bundles (atomic, urn:uuid references, conditional
                         entries, identifier upserts), read, vread, history, merge of patients.
* router.store.search:   ``search(conn, resource_type, params, principal, base_url)`` -> searchset Bundle.
* router.store.indexer:  ``index_entries(resource)`` - the search-index rows of one resource.
* router.store.access:   what a Principal may read and write (deny by default).
* router.store.audit:    ``record(conn, ...)`` and ``search(...)`` of the append-only audit log.
"""
