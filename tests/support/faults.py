"""Test plugin: components that fail on demand (registered via settings.plugins: [tests.support.faults]).

* mapping ``faults.to_bundle``: a Bundle with one Basic resource per message; raises MappingError
  when the message contains POISON.
* destination ``flaky``: DestinationUnavailable while the file named by ``switch`` exists, and
  counts each write in ``log`` (one line per message id) so tests can check "processed once".
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from router.destinations.base import DestinationContext, Output
from router.envelope import Envelope
from router.formats import hl7v2
from router.errors import DestinationUnavailable, MappingError
from router.registry import ComponentSpec


def to_bundle(env: Envelope) -> dict[str, Any]:
    """One Basic resource whose id comes from OBR-2 (the order) and whose content is OBX-5."""
    if b"POISON" in env.raw:
        raise MappingError("poison message: cannot map")
    msg = hl7v2.Message(hl7v2.decode(env.raw))
    order = msg.get("OBR-2") or env.id
    rid = hashlib.sha1(order.encode()).hexdigest()[:16]
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Basic", "id": rid, "code": {"text": msg.get("OBX-5")}}}]}


class FlakyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    switch: str
    log: str
    delay: float = 0.0  # seconds per write call (to widen the window of a batch in flight)


class Flaky:
    transactional = False

    def __init__(self, options: FlakyOptions, context: DestinationContext) -> None:
        self.switch, self.log, self.delay = Path(options.switch), Path(options.log), options.delay

    def write(self, outputs: list[Output], tx: Any) -> None:
        if self.switch.exists():
            raise DestinationUnavailable("flaky destination is down (switch file present)")
        if self.delay:
            time.sleep(self.delay)
        with open(self.log, "a") as fh:
            for o in outputs:
                fh.write(o.envelope.id + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        return None


COMPONENTS = [ComponentSpec("destination", "flaky", "fails while a switch file exists", FlakyOptions,
                            lambda o, c: Flaky(o, c))]
