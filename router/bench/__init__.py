"""`router bench`: measurements of the engine beside baselines, one module per measurement.

* parse_map.py    parse + map in process (ours, str.split, python-hl7, hl7apy + fhir.resources)
* mllp_ingest.py  MLLP ingest with durable ACK (ours on the embedded queue and on RabbitMQ, beside
                  python-hl7's asyncio MLLP server and a Node.js @medplum/hl7 server that store nothing)
* end_to_end.py   MLLP -> RabbitMQ -> workers -> PostgreSQL, beside a pika + psycopg raw pipeline;
                  peak RSS of the listener and the workers (psutil)
* store.py        FHIR search latency at N Observations, transaction-bundle writes per second
* report.py       JSON, markdown report and PNG plot

Each measurement is a function returning plain dicts; runner.py runs the ones asked for. The store
and parse measurements reuse benchmarks/*.py of the source tree (found beside the package).
"""
