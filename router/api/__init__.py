"""The FHIR REST API over the record store (router.api.fhir) and its authentication (router.api.auth)."""
