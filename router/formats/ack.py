"""HL7 v2 acknowledgements (ACK) built from the original message's header.

The ACK swaps sender and receiver, answers in the sender's version and encoding
characters, carries MSA-2 = MSH-10 and, on errors, an ERR segment with location,
HL7 error code (table 0357) and text.
"""
from __future__ import annotations

import time
import uuid

from .hl7v2 import Header

# HL7 table 0357 message error condition codes
ERROR_CODES = {
    "segment-sequence": ("100", "Segment sequence error"),
    "required-field": ("101", "Required field missing"),
    "data-type": ("102", "Data type error"),
    "table-value": ("103", "Table value not found"),
    "unsupported-message-type": ("200", "Unsupported message type"),
    "unsupported-event": ("201", "Unsupported event code"),
    "unsupported-processing-id": ("202", "Unsupported processing id"),
    "unsupported-version": ("203", "Unsupported version id"),
    "unknown-key": ("204", "Unknown key identifier"),
    "duplicate-key": ("205", "Duplicate key identifier"),
    "application-record-locked": ("206", "Application record locked"),
    "application-error": ("207", "Application internal error"),
}

_DEFAULT = Header("|", "^", "~", "\\", "&", "", "", "", "", "", "", "", "P", "2.5")


def escape(text: str, h: Header) -> str:
    """Escape delimiter characters in text per HL7 (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\), one line."""
    e = h.escape
    out = text.replace(e, f"{e}E{e}")
    for ch, code in ((h.field_sep, "F"), (h.component_sep, "S"), (h.subcomponent_sep, "T"), (h.repetition_sep, "R")):
        out = out.replace(ch, f"{e}{code}{e}")
    return out.replace("\r", " ").replace("\n", " ")


def build_ack(header: Header | None, code: str, text: str = "", *, error: str | None = None,
              location: str = "", severity: str = "E", control_id: str | None = None,
              app: str = "ROUTER", facility: str = "") -> bytes:
    """ACK for `header` (None when the message could not be parsed at all) with MSA-1 = code
    (AA/AE/AR or CA/CE/CR). `error` is a key of ERROR_CODES; `location` like PID^1^3."""
    h = header or _DEFAULT
    fs, cs = h.field_sep, h.component_sep
    enc = f"{h.component_sep}{h.repetition_sep}{h.escape}{h.subcomponent_sep}"
    now = time.strftime("%Y%m%d%H%M%S")
    trigger = h.message_type.split("^")[1] if "^" in h.message_type else ""
    msh = fs.join([
        "MSH", enc, h.receiving_application or app, h.receiving_facility or facility,
        h.sending_application, h.sending_facility, now, "",
        f"ACK{cs}{trigger}{cs}ACK" if trigger else "ACK",
        control_id or uuid.uuid4().hex[:20], h.processing_id or "P", h.version or "2.5",
    ])
    segs = [msh, fs.join(["MSA", code, h.control_id, escape(text, h)[:80]])]
    if error:
        num, name = ERROR_CODES.get(error, ERROR_CODES["application-error"])
        # ERR (v2.5+): ERR-2 location, ERR-3 HL7 error code (CWE), ERR-4 severity, ERR-8 user message
        loc = location.replace("^", cs)
        segs.append(fs.join(["ERR", "", loc, f"{num}{cs}{name}{cs}HL70357", severity, "", "", "", escape(text, h)]))
    return ("\r".join(segs) + "\r").encode("utf-8")
