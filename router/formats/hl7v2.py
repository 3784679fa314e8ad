"""Fast access to HL7 v2 (ER7) fields with plain string splitting.

Only what the routing core needs on the hot path: the MSH header (sender,
control id, message type, version, encoding characters) and field lookup by a
path such as ``PID-3``, ``PID-3.1``, ``OBX-5[2].1.1`` without building a tree.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError

_SEG_SPLIT = re.compile(r"\r\n|\r|\n")
_PATH = re.compile(r"^([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?-(\d+)(?:\[(\d+)\])?(?:\.(\d+))?(?:\.(\d+))?$")


@dataclass(frozen=True)
class Header:
    field_sep: str
    component_sep: str
    repetition_sep: str
    escape: str
    subcomponent_sep: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str  # e.g. ORU^R01 (MSG-1^MSG-2)
    structure: str
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str = ""  # MSH-15: AL, ER, NE, SU; empty = original acknowledgment mode
    application_ack_type: str = ""  # MSH-16: AL, ER, NE, SU

    def ack_headers(self) -> dict[str, str]:
        """MSH-15 and MSH-16 as envelope headers (accept_ack_type, application_ack_type), when valued."""
        out = {}
        if self.accept_ack_type:
            out["accept_ack_type"] = self.accept_ack_type
        if self.application_ack_type:
            out["application_ack_type"] = self.application_ack_type
        return out

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgment mode: the sender filled MSH-15 (accept acknowledgment type)."""
        return bool(self.accept_ack_type)

    @property
    def sender(self) -> str:
        return f"{self.sending_application}|{self.sending_facility}"


def decode(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def split_segments(text: str) -> list[str]:
    return [s for s in _SEG_SPLIT.split(text.strip("\x0b\x1c\r\n ")) if s]


def parse_header(text: str) -> Header:
    """Read MSH only. Raises InputError naming what is wrong."""
    text = text.lstrip("\ufeff\x0b\r\n ")
    if not text.startswith("MSH"):
        raise InputError("message does not start with an MSH segment")
    if len(text) < 8:
        raise InputError("MSH segment is too short to hold the encoding characters")
    fs = text[3]
    end = len(text)
    for sep in ("\r", "\n"):
        k = text.find(sep)
        if k != -1:
            end = min(end, k)
    msh = text[:end]
    fields = msh.split(fs)
    enc = fields[1] if len(fields) > 1 else ""
    if len(enc) < 4 or len(set(enc[:4] + fs)) != 5 or any(c.isalnum() for c in enc[:4]):
        raise InputError(f"MSH-2 encoding characters {enc!r} are missing or invalid")
    cs, rs, esc, ss = enc[0], enc[1], enc[2], enc[3]

    def f(n: int) -> str:  # MSH-n (MSH-1 is the separator itself)
        i = n - 1
        return fields[i] if i < len(fields) else ""

    msg = f(9).split(rs)[0].split(cs)
    if not msg[0]:
        raise InputError("MSH-9 message type is empty")
    mtype = msg[0] + (f"^{msg[1]}" if len(msg) > 1 and msg[1] else "")
    structure = msg[2] if len(msg) > 2 else ""
    return Header(
        field_sep=fs, component_sep=cs, repetition_sep=rs, escape=esc, subcomponent_sep=ss,
        sending_application=f(3), sending_facility=f(4), receiving_application=f(5),
        receiving_facility=f(6), message_type=mtype, structure=structure, control_id=f(10),
        processing_id=f(11).split(cs)[0], version=f(12).split(cs)[0],
        accept_ack_type=f(15).split(cs)[0].strip().upper(), application_ack_type=f(16).split(cs)[0].strip().upper(),
    )


class Message:
    """Lazy field access over the segments of one message."""

    __slots__ = ("header", "segments")

    def __init__(self, text: str) -> None:
        self.header = parse_header(text)
        self.segments = split_segments(text.lstrip("\ufeff"))

    def segment_fields(self, name: str) -> list[list[str]]:
        fs = self.header.field_sep
        out = []
        for seg in self.segments:
            if seg.startswith(name) and (len(seg) == 3 or seg[3] == fs):
                parts = seg.split(fs)
                if name == "MSH":  # MSH-1 is the separator: shift so MSH-n is parts[n]
                    parts.insert(1, fs)
                out.append(parts)
        return out

    def get(self, path: str) -> str | None:
        """Value at path (first repetition/component unless indexed). None when absent."""
        m = _PATH.match(path)
        if not m:
            raise ValueError(f"not an HL7 field path: {path!r} (expected e.g. PID-3, PID-3.1, OBX[2]-5[1].1)")
        seg, seg_i, fld, rep, comp, sub = m.groups()
        segs = self.segment_fields(seg)
        si = int(seg_i) - 1 if seg_i else 0
        if si >= len(segs):
            return None
        parts = segs[si]
        n = int(fld)
        if n >= len(parts):
            return None
        value = parts[n]
        if seg == "MSH" and n in (1, 2):
            return value
        h = self.header
        reps = value.split(h.repetition_sep)
        ri = int(rep) - 1 if rep else 0
        if ri >= len(reps):
            return None
        value = reps[ri]
        if comp:
            comps = value.split(h.component_sep)
            ci = int(comp) - 1
            if ci >= len(comps):
                return None
            value = comps[ci]
            if sub:
                subs = value.split(h.subcomponent_sep)
                si2 = int(sub) - 1
                if si2 >= len(subs):
                    return None
                value = subs[si2]
        return value


def is_field_path(path: str) -> bool:
    """True when `path` is a field path Message.get understands (PID-3, OBX[2]-5[1].1)."""
    return _PATH.match(path) is not None


def is_hl7(raw: bytes) -> bool:
    return raw.lstrip(b"\xef\xbb\xbf\x0b\r\n ").startswith(b"MSH")


def is_batch(raw: bytes) -> bool:
    """An HL7 batch file (FHS/BHS envelope) or several messages in a row (more than one MSH segment)."""
    head = raw.lstrip(b"\xef\xbb\xbf\x0b\r\n ")
    if head.startswith((b"FHS", b"BHS")):
        return True
    return head.startswith(b"MSH") and re.search(rb"[\r\n]MSH", head) is not None


def split_messages(raw: bytes) -> list[bytes]:
    """The messages of a batch (see is_batch), each ended by CR; anything else as it is.
    Raises InputError naming the segment when the batch envelope or its counts are wrong."""
    if not is_batch(raw):
        return [raw]
    from .er7 import split_batch

    return [p.encode("utf-8") if isinstance(p, str) else p for p in split_batch(raw)]
