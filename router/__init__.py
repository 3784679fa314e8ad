"""HL7 v2 / FHIR integration and message-routing engine."""
from __future__ import annotations

__version__ = "0.1.0"
