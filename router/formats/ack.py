"""HL7 v2 acknowledgements (ACK) built from the original message's header.

The ACK swaps sender and receiver, answers in the sender's version and encoding
characters, carries MSA-2 = MSH-10 and, on errors, an ERR segment with location,
HL7 error code (table 0357) and text.
"""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

from ..errors import InputError
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


def unescape(text: str, h: Header) -> str:
    """The reverse of escape() for the delimiter sequences; other escapes are left as they are."""
    e = h.escape
    if e not in text:
        return text
    chars = {"F": h.field_sep, "S": h.component_sep, "T": h.subcomponent_sep, "R": h.repetition_sep, "E": e}
    q = re.escape(e)
    return re.sub(f"{q}([FSTRE]){q}", lambda m: chars[m.group(1)], text)


def _version(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (2, 5)


def build_ack(header: Header | None, code: str, text: str = "", *, error: str | None = None,
              location: str = "", severity: str = "E", control_id: str | None = None,
              app: str = "ROUTER", facility: str = "") -> bytes:
    """ACK for `header` (None when the message could not be parsed at all) with MSA-1 = code
    (AA/AE/AR or CA/CE/CR). `error` is a key of ERROR_CODES; `location` like PID^1^3.

    The ERR segment follows the sender's version: from 2.5 on ERR-2 location (ERL), ERR-3 the
    table 0357 code (CWE), ERR-4 severity and ERR-8 the text; before 2.5 (2.1-2.4) ERR-1 holds
    the location and code together (ELD: segment^sequence^field^code&text&HL70357)."""
    h = header or _DEFAULT
    fs, cs, ss = h.field_sep, h.component_sep, h.subcomponent_sep
    enc = f"{h.component_sep}{h.repetition_sep}{h.escape}{h.subcomponent_sep}"
    now = time.strftime("%Y%m%d%H%M%S")
    trigger = h.message_type.split("^")[1] if "^" in h.message_type else ""
    version = h.version or "2.5"
    msh = fs.join([
        "MSH", enc, h.receiving_application or app, h.receiving_facility or facility,
        h.sending_application, h.sending_facility, now, "",
        f"ACK{cs}{trigger}{cs}ACK" if trigger and _version(version) >= (2, 3, 1) else
        f"ACK{cs}{trigger}" if trigger else "ACK",
        control_id or uuid.uuid4().hex[:20], h.processing_id or "P", version,
    ])
    segs = [msh, fs.join(["MSA", code, h.control_id, escape(text[:80], h)])]
    if error:
        num, name = ERROR_CODES.get(error, ERROR_CODES["application-error"])
        loc = [escape(p, h) for p in location.split("^")] if location else []
        if _version(version) >= (2, 5):
            # ERR-2 location (ERL), ERR-3 HL7 error code (CWE), ERR-4 severity, ERR-8 user message
            segs.append(fs.join(["ERR", "", cs.join(loc), f"{num}{cs}{name}{cs}HL70357", severity, "", "", "",
                                 escape(text, h)]))
        else:
            # ERR-1 (ELD): segment ID ^ sequence ^ field position ^ code identifying error (CE)
            eld = (loc + ["", "", ""])[:3] + [ss.join([num, name, "HL70357"])]
            segs.append(fs.join(["ERR", cs.join(eld)]))
    return ("\r".join(segs) + "\r").encode("utf-8")


def wanted(ack_type: str, outcome: str) -> bool:
    """Does an acknowledgment type (MSH-15 for the commit ACK, MSH-16 for the application ACK; HL7
    table 0155) ask for an ACK with this outcome (A accepted, E error, R reject)? AL always, ER only
    on E/R, SU only on A, NE never; a value outside the table counts as AL."""
    if ack_type == "NE":
        return False
    if ack_type == "ER":
        return outcome != "A"
    if ack_type == "SU":
        return outcome == "A"
    return True


@dataclass(frozen=True)
class AckError:
    """One ERR segment of a received ACK."""

    location: str  # e.g. MSH^1^9 (components joined with ^)
    code: str  # table 0357 code, e.g. 200
    name: str  # its text, e.g. Unsupported message type
    text: str  # ERR-8 user message (2.5+), or ''

    def __str__(self) -> str:
        return " ".join(p for p in (self.location, self.code, self.name) if p)


@dataclass(frozen=True)
class AckInfo:
    """What a received ACK says (see read_ack)."""

    code: str  # MSA-1
    control_id: str  # MSA-2: MSH-10 of the acknowledged message
    text: str  # MSA-3
    errors: tuple[AckError, ...]


def read_ack(raw: bytes) -> AckInfo:
    """Read MSA and ERR of an ACK (any version). Raises InputError when it is not one."""
    from .hl7v2 import decode, parse_header, split_segments

    text = decode(raw)
    h = parse_header(text)
    fs, cs, ss = h.field_sep, h.component_sep, h.subcomponent_sep
    code = control_id = msa_text = ""
    errors: list[AckError] = []
    found = False
    for seg in split_segments(text):
        f = seg.split(fs)
        if f[0] == "MSA":
            found = True
            code, control_id, msa_text = (f + ["", "", "", ""])[1:4]
        elif f[0] == "ERR":
            f += [""] * 9
            if any(f[2:9]):  # 2.5+: ERR-2 location, ERR-3 code, ERR-8 user message
                where = "^".join(p for p in f[2].split(cs) if p)
                num, name = (f[3].split(cs) + ["", ""])[:2]
                msg = f[8]
            else:  # before 2.5: ELD in ERR-1 (segment^sequence^field^code&text&table)
                comps = f[1].split(cs) + ["", "", "", ""]
                where = "^".join(p for p in comps[:3] if p)
                num, name = (comps[3].split(ss) + ["", ""])[:2]
                msg = ""
            errors.append(AckError(*(unescape(p, h) for p in (where, num, name, msg))))
    if not found:
        raise InputError("not an acknowledgment: no MSA segment")
    return AckInfo(code.strip().upper(), control_id, unescape(msa_text, h), tuple(errors))
