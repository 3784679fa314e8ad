"""The mapping language: YAML mappings compiled at load into plain Python callables.

* hl7.py        fast ER7 message model for mappings: segments, scoped lookups, field values (V)
* paths.py      source paths (HL7 `PID-3[*].1`, XML XPath, JSON dotted) parsed at load
* functions.py  the library of conversion functions (HL7 datatypes -> FHIR datatypes)
* conceptmap.py CSV concept maps
* compiler.py   YAML -> callable(envelope) -> transaction Bundle
"""
