"""HL7 v2 values as mappings see them.

A ``V`` is one occurrence (one repetition) of a field, component or subcomponent, still in
encoded form, with the message's encoding characters. Functions read it with ``str(v)`` (the
decoded text of the whole value), ``v.c(n)`` (component n, 1-based, a V), ``v.s(n)`` (subcomponent),
``v.components()``. Escape sequences are decoded only when text is read, so delimiters inside
escaped text never split a value.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..formats import hl7v2


@dataclass(frozen=True)
class Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


DEFAULT_ENCODING = Encoding()


def unescape(text: str, enc: Encoding) -> str:
    """Decode HL7 escape sequences: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\ \\.br\\ (formatting -> newline or dropped)."""
    e = enc.escape
    if e not in text:
        return text
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != e:
            out.append(ch)
            i += 1
            continue
        j = text.find(e, i + 1)
        if j == -1:  # a lone escape character: keep it
            out.append(text[i:])
            break
        code = text[i + 1:j]
        if code == "F":
            out.append(enc.field)
        elif code == "S":
            out.append(enc.component)
        elif code == "T":
            out.append(enc.subcomponent)
        elif code == "R":
            out.append(enc.repetition)
        elif code == "E":
            out.append(e)
        elif code.startswith("X") and len(code) > 1:
            try:
                out.append(bytes.fromhex(code[1:]).decode("utf-8", "replace"))
            except ValueError:
                out.append(text[i:j + 1])
        elif code in (".br", "br"):
            out.append("\n")
        elif code.startswith(".") or code in ("H", "N") or code.startswith("Z") or code.startswith("C") \
                or code.startswith("M"):
            pass  # formatting / character-set switches: no text
        else:
            out.append(text[i:j + 1])
        i = j + 1
    return "".join(out)


def escape(text: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Encode text so it can stand in a field (inverse of unescape for plain text and newlines)."""
    e = enc.escape
    out = text.replace(e, f"{e}E{e}")
    out = out.replace(enc.field, f"{e}F{e}").replace(enc.component, f"{e}S{e}")
    out = out.replace(enc.subcomponent, f"{e}T{e}").replace(enc.repetition, f"{e}R{e}")
    return out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{e}.br{e}")


class V:
    """One value (a field repetition, component or subcomponent) in encoded form."""

    __slots__ = ("raw", "enc", "level")

    def __init__(self, raw: str, enc: Encoding, level: int = 0) -> None:
        self.raw, self.enc, self.level = raw, enc, level  # level 0 field, 1 component, 2 subcomponent

    def __str__(self) -> str:
        return unescape(self.raw, self.enc)

    def __repr__(self) -> str:
        return f"V({self.raw!r})"

    def __bool__(self) -> bool:
        return bool(self.raw) and self.raw != '""'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, V) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    @property
    def is_null(self) -> bool:
        """HL7 explicit null ("")."""
        return self.raw == '""'

    def components(self) -> list[V]:
        sep = self.enc.component if self.level == 0 else self.enc.subcomponent
        return [V(p, self.enc, self.level + 1) for p in self.raw.split(sep)]

    def c(self, n: int) -> V:
        """Component n (1-based); empty when absent."""
        if self.level >= 2:
            return self if n == 1 else V("", self.enc, 2)
        sep = self.enc.component if self.level == 0 else self.enc.subcomponent
        parts = self.raw.split(sep) if sep in self.raw else [self.raw]
        return V(parts[n - 1], self.enc, self.level + 1) if n <= len(parts) else V("", self.enc, self.level + 1)

    def s(self, n: int) -> V:
        """Subcomponent n of this component."""
        return self.c(n) if self.level == 1 else V(self.raw, self.enc, 2) if n == 1 else V("", self.enc, 2)

    def text(self, n: int | None = None) -> str:
        """Decoded text of component n (or of the whole value)."""
        return str(self.c(n) if n is not None else self)


class Segment:
    __slots__ = ("name", "fields", "index")

    def __init__(self, name: str, fields: list[str], index: int) -> None:
        self.name, self.fields, self.index = name, fields, index

    def field(self, n: int) -> str:
        """Raw field n (MSH-1 is the field separator, as in the standard)."""
        return self.fields[n] if n < len(self.fields) else ""


_ENCODINGS: dict[tuple[str, str, str, str, str], Encoding] = {}


def encoding(field: str, component: str, repetition: str, escape: str, subcomponent: str) -> Encoding:
    """The (shared, immutable) Encoding for these characters: one object per distinct set."""
    key = (field, component, repetition, escape, subcomponent)
    enc = _ENCODINGS.get(key)
    if enc is None:
        enc = Encoding(*key)
        if len(_ENCODINGS) < 256:
            _ENCODINGS[key] = enc
    return enc


def _msh(text: str) -> tuple[str, list[str]]:
    """The field separator and the fields of the MSH segment as hl7v2.parse_header reads them
    (MSH-n is fields[n - 1] for n > 1), raising
    the InputError it raises for a message it refuses, in the same order - without building the
    Header (Message.header does that when something asks)."""
    text = text.lstrip("\ufeff\x0b\r\n ")
    if not text.startswith("MSH"):
        raise InputError("message does not start with an MSH segment")
    if len(text) < 8:
        raise InputError("MSH segment is too short to hold the encoding characters")
    end = text.find("\r")
    k = text.find("\n", 0, end if end != -1 else len(text))
    if k != -1:
        end = k
    fs = text[3]
    fields = (text[:end] if end != -1 else text).split(fs)
    enc = fields[1] if len(fields) > 1 else ""
    chars = enc[:4]
    if len(enc) < 4 or len(set(chars + fs)) != 5 or any(map(str.isalnum, chars)):
        raise InputError(f"MSH-2 encoding characters {enc!r} are missing or invalid")
    msh9 = fields[8] if len(fields) > 8 else ""
    if not msh9.split(enc[1])[0].split(enc[0])[0]:
        raise InputError("MSH-9 message type is empty")
    return fs, fields


class Message:
    """A parsed ER7 message: segments split into fields, the rest split on demand."""

    __slots__ = ("segments", "enc", "_header", "_text", "msh", "by_name", "_values", "owner")

    def __init__(self, text: str) -> None:
        fs, self.msh = _msh(text)  # MSH-n is msh[n - 1], as hl7v2.parse_header numbers them
        self._text, self._header = text, None
        enc = self.msh[1]
        self.enc = encoding(fs, enc[0], enc[1], enc[2], enc[3])
        self._values: dict[tuple[int, int], list[V]] = {}
        self.owner: list[int | None] | None = None  # paths.owners(), computed when a lookup needs it
        text = text.lstrip("\ufeff")
        if "\n" in text:
            lines = hl7v2.split_segments(text)
        else:  # the usual \r-separated message: what split_segments does, without the regex
            lines = [s for s in text.strip("\x0b\x1c\r\n ").split("\r") if s]
        segments: list[Segment] = []
        by_name: dict[str, list[int]] = {}
        append, get = segments.append, by_name.get
        for i, seg in enumerate(lines):
            parts = seg.split(fs)
            name = parts[0]
            if len(name) != 3:  # (a 3-letter name is followed by the separator or ends the segment)
                name = seg[:3]
                if len(seg) > 3 and seg[3] != fs:
                    raise InputError(f"segment {i + 1} ({seg[:8]!r}) is not followed by the field separator {fs!r}")
            if name == "MSH":
                parts.insert(1, fs)  # MSH-1 is the separator; MSH-2 the encoding characters
            append(Segment(name, parts, i))
            idx = get(name)
            if idx is None:
                by_name[name] = [i]
            else:
                idx.append(i)
        self.segments, self.by_name = segments, by_name

    @property
    def header(self) -> hl7v2.Header:
        """The MSH header (hl7v2.parse_header), parsed when first asked for."""
        h = self._header
        if h is None:
            h = self._header = hl7v2.parse_header(self._text)
        return h

    def msh_field(self, n: int) -> str:
        """Raw MSH-n as the header reads it (what Header.sending_application etc. hold)."""
        msh = self.msh
        return msh[n - 1] if n - 1 < len(msh) else ""

    def values(self, seg: Segment, field: int) -> list[V]:
        """Every repetition of a field (split once per message)."""
        key = (seg.index, field)
        got = self._values.get(key)
        if got is None:
            got = self._values[key] = self._split(seg, field)
        return got

    def _split(self, seg: Segment, field: int) -> list[V]:
        raw = seg.field(field)
        if seg.name == "MSH" and field in (1, 2):
            return [V(raw, self.enc)] if raw else []
        if not raw:
            return []
        return [V(r, self.enc) for r in raw.split(self.enc.repetition)]
