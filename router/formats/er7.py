"""HL7 v2 ER7 ("pipe and hat") parser and serialiser.

The model is plain data, so it can be compared, copied and built by hand::

    Message(encoding, segments: list[Segment])
    Segment(name, fields: list[Field])
    Field        = list of repetitions
    repetition   = list of components
    component    = list of subcomponents (str, escape sequences already decoded)

``parse(data)`` always yields the canonical form: every field has at least one repetition, every
repetition at least one component, every component at least one subcomponent (an empty field is
``[[[""]]]``). ``Segment.fields[0]`` is field 1. In header segments (MSH, FHS, BHS) field 1 is the
field separator and field 2 the encoding characters, each held as one raw string
(``[[["|"]]]``, ``[[["^~\\\\&"]]]``); ``serialise`` writes both from ``Message.encoding``.
``parse(serialise(m)) == m`` for every canonical ``m``.

Input
    ``bytes`` or ``str``. Segments end with CR, LF or CRLF; a UTF-8 byte-order mark, MLLP framing
    (VT ... FS) and blank lines are ignored. The encoding characters come from MSH-1/MSH-2 (any
    ASCII punctuation, all different; a fifth MSH-2 character is the v2.7 truncation character).
    One quirk is tolerated: MSH-2 ``^~\\\\&`` (the escape character doubled, as a source-code
    string literal leaves it; 17 LinuxForHealth test messages carry it) means ``^~\\&``. A
    segment name is an upper-case letter and two upper-case letters or digits (Z-segments alike),
    followed by the field separator or the end of the segment. Syntax is the same for versions 2.3 to 2.8, so
    ``parse`` checks neither MSH-9 nor MSH-12; strict checks of the message structure per version
    are ``validate_structure`` (hl7apy), off the hot path.

Character sets (MSH-18, first repetition; bytes only: a ``str`` is already decoded)
    MSH is ASCII, so MSH-18 is read from the raw bytes before the rest is decoded.
    ====================  ===============  =============================================
    MSH-18                codec            note
    ====================  ===============  =============================================
    (empty)               utf-8            HL7's default is ASCII; UTF-8 is a superset
    UNICODE UTF-8         utf-8
    UNICODE, UTF-8        utf-8            older / informal spellings
    ASCII                 ascii
    8859/1 ... 8859/9     iso8859-1..9     8859/5 is Cyrillic
    8859/15               iso8859-15
    CP1251, WINDOWS-1251  cp1251           not in HL7 table 0211, but common in Russia
    GB 18030-2000         gb18030
    BIG-5                 big5
    KS X 1001             euc_kr
    ====================  ===============  =============================================
    Other values (UNICODE UTF-16/32, ISO IR87, ...) are accepted only when the bytes are pure
    ASCII. Bytes that do not decode raise InputError naming the segment and byte offset. The
    charset also decodes ``\\Xhh..\\`` escapes. The messages of one ``parse`` share one charset
    and one set of encoding characters; a batch mixing them is split with ``split_batch`` first.

Escape sequences
    ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` become the delimiters, ``\\P\\`` the truncation character
    (when MSH-2 has one), ``\\Xhh..\\`` the decoded bytes, ``\\.br\\`` a line feed. Any other
    sequence (``\\H\\ \\N\\ \\.sp\\ \\Cxxyy\\ \\Zxx\\``, undecodable ``\\X..\\``) and a lone escape
    character stay in the text verbatim, and ``serialise`` writes them back unchanged, so
    formatted text (FT) keeps its formatting. ``serialise`` escapes the delimiters, a literal
    escape character (``\\E\\``), CR (``\\X0D\\``), LF (``\\.br\\``, or ``\\X0A\\`` where "." is
    a delimiter) and the MLLP bytes VT/FS (``\\X0B\\``, ``\\X1C\\``).

Batches and files
    ``parse`` accepts one message, several messages one after another, or a batch file
    ([FHS] {[BHS] {MSH ...} [BTS]} [FTS]) as one ``Message`` holding every segment; headers and
    trailers are optional as in python-hl7, but every segment must belong to a message, FHS only
    comes first, a BHS cannot open inside an open batch, nothing follows FTS, and BTS-1 / FTS-1
    counts, when given, must match. ``split_batch`` returns the messages of such input one by one.

Field access
    ``get(msg_or_text, "PID-3[2].1")``: on a ``Message`` it indexes the tree; on ``str``/``bytes``
    it splits only the addressed segment (no tree for the rest, and no checks of the rest).

Errors are ``router.errors.InputError`` with the segment number and field in the text.
"""
from __future__ import annotations

import os
import re
import string
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..errors import InputError

__all__ = [
    "CHARSETS",
    "DEFAULT_ENCODING",
    "Encoding",
    "Message",
    "Segment",
    "VERSIONS",
    "decode",
    "get",
    "parse",
    "serialise",
    "split_batch",
    "validate_structure",
]

Component = list[str]
Repetition = list[Component]
Field = list[Repetition]

_HEADERS = frozenset(("MSH", "FHS", "BHS"))
_ENVELOPE = frozenset(("FHS", "BHS", "BTS", "FTS"))
_NAME = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+\Z")
_DELIMITERS = frozenset(string.punctuation)
_BLANK = " \t\x0b\x0c\x1c"                       # whitespace and MLLP framing: a line of only these is skipped
_LEAD = "\ufeff\x0b\x0c\r\n\t "                 # stripped before the first segment
_TRAIL = "\x1c\r\n"                              # stripped after the last one
_BOM = b"\xef\xbb\xbf"
_LEAD_BYTES = b"\x0b\x0c\r\n\t "
_BLANK_BYTES = _BLANK.encode()
_PATH = re.compile(r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?-(\d+)(?:\[(\d+)\])?(?:\.(\d+))?(?:\.(\d+))?\Z")

#: MSH-18 (upper case, single spaces) -> Python codec. See the module docstring.
CHARSETS: dict[str, str] = {
    "": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "ASCII": "ascii",
    **{f"8859/{n}": f"iso8859-{n}" for n in range(1, 10)},
    "8859/15": "iso8859-15",
    "CP1251": "cp1251",
    "WINDOWS-1251": "cp1251",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc_kr",
}


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Encoding:
    """The delimiters of a message (MSH-1 and MSH-2)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""  # v2.7+: optional fifth MSH-2 character

    @property
    def msh2(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_ENCODING = Encoding()


@dataclass(slots=True)
class Segment:
    name: str
    fields: list[Field]

    def field(self, n: int) -> Field | None:
        """Field n (1-based, as in PID-3), None when the segment is shorter."""
        return self.fields[n - 1] if 0 < n <= len(self.fields) else None


@dataclass(slots=True)
class Message:
    """A parsed message, or a batch of messages parsed as one document."""

    encoding: Encoding
    segments: list[Segment]

    def segment(self, name: str, occurrence: int = 1) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                occurrence -= 1
                if occurrence == 0:
                    return seg
        return None

    def get(self, path: str) -> str | None:
        return get(self, path)

    @property
    def message_type(self) -> str:
        """MSH-9.1^MSH-9.2 (just MSH-9.1 when there is no trigger event)."""
        code, event = get(self, "MSH-9.1") or "", get(self, "MSH-9.2") or ""
        return f"{code}^{event}" if event else code

    @property
    def version(self) -> str:
        return get(self, "MSH-12.1") or ""

    @property
    def control_id(self) -> str:
        return get(self, "MSH-10") or ""

    @property
    def charset(self) -> str:
        """MSH-18 (first repetition) as looked up in CHARSETS: upper case, "" when absent."""
        return _model_charset_key(self).lstrip("?")


# --------------------------------------------------------------------------- escapes


def _hex_text(code: str, codec: str) -> str | None:
    """Text of an \\Xhh..\\ code (without the escape characters), None when it does not decode."""
    digits = code[1:]
    if not _HEX.match(digits):
        return None
    try:
        return bytes.fromhex(digits).decode(codec)
    except UnicodeDecodeError:
        return None


def _simple_codes(enc: Encoding) -> dict[str, str]:
    codes = {"F": enc.field, "S": enc.component, "T": enc.subcomponent, "R": enc.repetition,
             "E": enc.escape, ".br": "\n"}
    if enc.truncation:
        codes["P"] = enc.truncation
    return codes


@lru_cache(maxsize=64)
def _unescaper(enc: Encoding, codec: str) -> Callable[[str], str]:
    e = enc.escape
    codes = _simple_codes(enc)

    def unescape(s: str) -> str:
        out: list[str] = []
        i = 0
        while True:
            k = s.find(e, i)
            if k == -1:
                out.append(s[i:])
                return "".join(out)
            out.append(s[i:k])
            j = s.find(e, k + 1)
            if j == -1:  # a lone escape character: literal
                out.append(s[k:])
                return "".join(out)
            code = s[k + 1:j]
            text = codes.get(code)
            if text is None and code[:1] == "X":
                text = _hex_text(code, codec)
            out.append(s[k:j + 1] if text is None else text)  # unknown / formatting: verbatim
            i = j + 1

    return unescape


@lru_cache(maxsize=64)
def _escaper(enc: Encoding, codec: str) -> Callable[[str], str]:
    e = enc.escape
    delimiters = (enc.field, enc.component, enc.repetition, enc.subcomponent)
    line_feed = f"{e}X0A{e}" if "." in delimiters or e == "." else f"{e}.br{e}"  # \.br\ needs the "."
    table = {enc.field: f"{e}F{e}", enc.component: f"{e}S{e}", enc.repetition: f"{e}R{e}",
             enc.subcomponent: f"{e}T{e}", "\r": f"{e}X0D{e}", "\n": line_feed,
             "\x0b": f"{e}X0B{e}", "\x1c": f"{e}X1C{e}"}
    trans = str.maketrans(table)
    unsafe = frozenset(table)
    needs = re.compile("[" + re.escape("".join(table) + e) + "]")
    codes = _simple_codes(enc)
    literal_escape = f"{e}E{e}"

    def verbatim(code: str) -> bool:
        """True when parse keeps \\code\\ as it is, so it can be written back unchanged."""
        if code in codes or any(c in unsafe for c in code):
            return False
        return not (code[:1] == "X" and _hex_text(code, codec) is not None)

    def escape(s: str) -> str:
        if not needs.search(s):
            return s
        if e not in s:
            return s.translate(trans)
        out: list[str] = []
        i = 0
        while True:
            k = s.find(e, i)
            if k == -1:
                out.append(s[i:].translate(trans))
                return "".join(out)
            out.append(s[i:k].translate(trans))
            j = s.find(e, k + 1)
            if j != -1 and verbatim(s[k + 1:j]):
                out.append(s[k:j + 1])
                i = j + 1
            else:
                out.append(literal_escape)
                i = k + 1

    return escape


# --------------------------------------------------------------------------- decoding


def _charset_key(msh2: str, msh18: str) -> str:
    """Normalised MSH-18 (first repetition/component/subcomponent) from raw text."""
    msh2 = _tolerated(msh2)
    if len(msh2) >= 4:
        cs, rs, esc, ss = msh2[0], msh2[1], msh2[2], msh2[3]
        msh18 = msh18.split(rs, 1)[0].split(cs, 1)[0].split(ss, 1)[0]
        if esc in msh18:  # an escaped charset name is not one we know
            return "?" + msh18
    return " ".join(msh18.split()).upper()


def _line_charset_key(line: str) -> str:
    """Charset key of an MSH line (raw text)."""
    if len(line) < 4:
        return ""
    parts = line.split(line[3])
    return _charset_key(parts[1], parts[17]) if len(parts) > 17 else ""


def _model_charset_key(msg: Message) -> str:
    seg = msg.segment("MSH")
    try:
        text = seg.fields[17][0][0][0] if seg is not None else ""
    except IndexError:  # shorter segment, or a hand-built field with empty lists
        return ""
    enc = msg.encoding
    if any(c in text for c in (enc.field, enc.component, enc.repetition, enc.subcomponent,
                               enc.escape, "\r", "\n", "\x0b", "\x1c")):
        return "?" + text  # written escaped, so parse will not recognise it either
    return " ".join(text.split()).upper()


def _codec(key: str) -> str:
    return CHARSETS.get(key, "utf-8")


def _segment_no(raw: bytes, offset: int) -> int:
    """Number of the segment holding byte offset, counted as parse counts (blank lines skipped)."""
    before = re.split(rb"\r\n|\r|\n", raw[:offset].lstrip(_LEAD_BYTES))[:-1]
    return sum(1 for line in before if line.strip(_BLANK_BYTES)) + 1


def _first_msh_line(raw: bytes) -> bytes:
    if raw.startswith(b"MSH"):
        start = 0
    else:
        m = re.search(rb"[\r\n]MSH", raw)
        if m is None:
            return b""
        start = m.start() + 1
    end = len(raw)
    for sep in (b"\r", b"\n"):
        k = raw.find(sep, start)
        if k != -1:
            end = min(end, k)
    return raw[start:end]


def decode(data: bytes) -> str:
    """Bytes -> text in the character set MSH-18 names (UTF-8 when it names none)."""
    raw = bytes(data)
    bom = raw.startswith(_BOM)
    if bom:
        raw = raw[3:]
    key = _line_charset_key(_first_msh_line(raw.lstrip(_LEAD_BYTES)).decode("latin-1"))
    codec = CHARSETS.get(key)
    if codec is None:
        if raw.isascii():
            return raw.decode("ascii")
        supported = ", ".join(k for k in CHARSETS if k)
        raise InputError(f"MSH-18 character set {key.lstrip('?')!r} is not supported for non-ASCII "
                         f"input (supported: {supported})")
    if bom and codec not in ("utf-8", "ascii"):
        raise InputError(f"the input starts with a UTF-8 byte-order mark but MSH-18 says {key} ({codec})")
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        where = (f"segment {_segment_no(raw, exc.start)}: byte 0x{raw[exc.start]:02X} at offset "
                 f"{exc.start + (3 if bom else 0)}")
        if not key:
            raise InputError(f"{where} is not valid UTF-8, and MSH-18 does not name a character set "
                             f"(e.g. 8859/1, 8859/5, CP1251)") from None
        raise InputError(f"{where} is not valid in the MSH-18 character set {key} ({codec})") from None


# --------------------------------------------------------------------------- parsing


def _lines(text: str) -> list[str]:
    """The non-blank lines (segments) of a text, framing and BOM removed."""
    text = text.lstrip(_LEAD).rstrip(_TRAIL)
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    return [s for s in text.split("\r") if s and (s[0] not in _BLANK or s.strip(_BLANK))]


def _header_encoding(line: str, no: int) -> Encoding:
    """Encoding characters of a header segment (MSH, FHS, BHS) at segment number no."""
    name = line[:3]
    if len(line) < 4:
        raise InputError(f"segment {no} ({name}) ends before {name}-1, the field separator")
    fs = line[3]
    if fs not in _DELIMITERS:
        raise InputError(f"{name}-1 (segment {no}): {fs!r} cannot be the field separator "
                         f"(it must be ASCII punctuation, e.g. '|')")
    end = line.find(fs, 4)
    chars = _tolerated(line[4:] if end == -1 else line[4:end])
    where = f"{name}-2 (segment {no})"
    if not chars:
        raise InputError(f"{where}: the encoding characters are missing (expected 4, e.g. ^~\\&)")
    if len(chars) < 4:
        raise InputError(f"{where}: encoding characters {chars!r} are incomplete: expected 4 "
                         f"(component, repetition, escape, subcomponent), got {len(chars)}")
    if len(chars) > 5:
        raise InputError(f"{where}: too many encoding characters {chars!r}: expected 4, or 5 with "
                         f"the v2.7 truncation character, got {len(chars)}")
    for c in chars:
        if c not in _DELIMITERS:
            raise InputError(f"{where}: {c!r} in {chars!r} cannot be an encoding character "
                             f"(it must be ASCII punctuation)")
    seen = fs
    for c in chars:
        if c in seen:
            raise InputError(f"{where}: encoding characters {chars!r} repeat {c!r} "
                             f"(with MSH-1 {fs!r}, every delimiter must be different)")
        seen += c
    return Encoding(fs, chars[0], chars[1], chars[2], chars[3], chars[4:])


def _tolerated(chars: str) -> str:
    """MSH-2 as meant: ``^~\\\\&`` (the escape character doubled, as left behind by a source-code
    string literal) is ``^~\\&``."""
    return chars[:3] + chars[4] if len(chars) == 5 and chars[2:4] == "\\\\" else chars


def _check_name(line: str, no: int, fs: str) -> str:
    name = line[:3]
    if not _NAME.match(name):
        raise InputError(f"segment {no}: {line[:12]!r} does not start with a valid segment name "
                         f"(3 characters: an upper-case letter, then upper-case letters or digits)")
    if len(line) > 3 and line[3] != fs:
        raise InputError(f"segment {no} ({name}): expected the field separator {fs!r} right after "
                         f"the segment name, found {line[3]!r}")
    return name


def _field1(line: str) -> str:
    """Field 1 of a trailer segment (BTS, FTS)."""
    if len(line) < 4:
        return ""
    return line[4:].split(line[3], 1)[0]


def _count(line: str, no: int, what: str) -> int | None:
    name = line[:3]
    value = _field1(line).strip()
    if not value:
        return None
    if not value.isdigit() or not value.isascii():
        raise InputError(f"{name}-1 (segment {no}): {what} {value!r} is not a whole number")
    return int(value)


def _envelope(names: Sequence[str], lines: Sequence[str]) -> list[tuple[int, int]]:
    """Check the order of FHS/BHS/MSH/BTS/FTS and the BTS-1/FTS-1 counts.

    Returns the (start, end) line ranges of the messages.
    """
    messages: list[tuple[int, int]] = []
    start = -1            # first line of the current message, -1 outside a message
    batch = -1            # line of the open BHS, -1 when none
    implicit = False      # messages outside a BHS batch form an implicit batch
    in_batch = 0          # messages in the open (explicit or implicit) batch
    batches = 0
    last = len(names) - 1

    def end_message(i: int) -> None:
        nonlocal start
        if start >= 0:
            messages.append((start, i))
            start = -1

    def close_batch() -> None:
        nonlocal batch, implicit, in_batch, batches
        if batch >= 0 or implicit:
            batches += 1
        batch, implicit, in_batch = -1, False, 0

    for i, name in enumerate(names):
        no = i + 1
        if name == "MSH":
            end_message(i)
            start = i
            if batch < 0:
                implicit = True
            in_batch += 1
        elif name == "FHS":
            if i:
                raise InputError(f"segment {no}: FHS (file header) must be the first segment; "
                                 f"a file cannot hold a second FHS or start after other segments")
        elif name == "BHS":
            end_message(i)
            if batch >= 0:
                raise InputError(f"segment {no}: BHS opens a batch while the batch opened at segment "
                                 f"{batch + 1} is still open (BTS missing)")
            if implicit:
                close_batch()
            batch = i
        elif name == "BTS":
            end_message(i)
            if batch < 0 and not implicit:
                raise InputError(f"segment {no}: BTS closes no batch (no BHS or message since the "
                                 f"last batch trailer)")
            want = _count(lines[i], no, "batch message count")
            if want is not None and want != in_batch:
                raise InputError(f"BTS-1 (segment {no}): batch message count {want} does not match "
                                 f"the {in_batch} message(s) in the batch")
            close_batch()
        elif name == "FTS":
            end_message(i)
            if i != last:
                raise InputError(f"segment {no}: FTS (file trailer) must be the last segment, "
                                 f"found {names[i + 1]} after it")
            close_batch()
            want = _count(lines[i], no, "file batch count")
            if want is not None and want != batches:
                raise InputError(f"FTS-1 (segment {no}): file batch count {want} does not match "
                                 f"the {batches} batch(es) in the file")
        elif start < 0:
            prev = names[i - 1] if i else ""
            raise InputError(f"segment {no} ({name}) is outside any message: after {prev} "
                             f"(segment {i}) the next segment must be MSH")
    end_message(len(names))
    return messages


def _parse_lines(lines: list[str]) -> Message:
    if not lines:
        raise InputError("empty input: expected an HL7 v2 message starting with MSH")
    first = lines[0]
    head = first[:3]
    if head not in _HEADERS:
        raise InputError(f"missing MSH: segment 1 starts with {first[:12]!r}, expected MSH "
                         f"(or FHS/BHS for a batch)")
    enc = _header_encoding(first, 1)
    fs, cs, rs, ss, esc = enc.field, enc.component, enc.repetition, enc.subcomponent, enc.escape
    msh2 = enc.msh2
    msh = first if head == "MSH" else next((s for s in lines if s.startswith("MSH")), "")
    codec_key = _line_charset_key(msh)
    unescape = _unescaper(enc, _codec(codec_key))
    mixed = head != "MSH"
    segments: list[Segment] = []
    append = segments.append
    for no, line in enumerate(lines, 1):
        name = line[:3]
        if name in _HEADERS:
            if no > 1:
                mixed = True
                _check_name(line, no, fs)
                other = _header_encoding(line, no)
                if other != enc:
                    raise InputError(f"{name}-2 (segment {no}): encoding characters "
                                     f"{other.field + other.msh2!r} differ from {fs + msh2!r} of "
                                     f"segment 1; split the batch with split_batch() first")
                if name == "MSH" and _line_charset_key(line) != codec_key:
                    raise InputError(f"MSH-18 (segment {no}): character set differs from the first "
                                     f"message's {codec_key or 'default'!r}; split the batch with "
                                     f"split_batch() first")
            parts = line.split(fs)
            fields: list[Field] = [[[[fs]]], [[[msh2]]]]
            del parts[:2]
        else:
            if name in _ENVELOPE:
                mixed = True
            if not _NAME.match(name) or (len(line) > 3 and line[3] != fs):
                _check_name(line, no, fs)  # raises, saying which
            parts = line.split(fs)
            del parts[0]
            fields = []
        add = fields.append
        if rs in line or ss in line or esc in line:
            for f in parts:
                if esc in f:
                    add([[[unescape(s) if esc in s else s for s in c.split(ss)] for c in r.split(cs)]
                         for r in f.split(rs)])
                elif rs in f or ss in f:
                    add([[c.split(ss) for c in r.split(cs)] for r in f.split(rs)])
                elif cs in f:
                    add([[[c] for c in f.split(cs)]])
                else:
                    add([[[f]]])
        else:  # the common case: components at most
            for f in parts:
                add([[[c] for c in f.split(cs)]] if cs in f else [[[f]]])
        append(Segment(name, fields))
    if mixed:
        _envelope([s.name for s in segments], lines)
    return Message(enc, segments)


def parse(data: bytes | bytearray | memoryview | str, *, strict: bool = False) -> Message:
    """Parse one ER7 message (or a batch, see the module docstring). Raises InputError.

    strict=True also validates the message structure with hl7apy (slow: for routes that ask).
    """
    if isinstance(data, str):
        msg = _parse_lines(_lines(data))
    elif isinstance(data, (bytes, bytearray, memoryview)):
        msg = _parse_lines(_lines(decode(bytes(data))))
    else:
        raise TypeError(f"parse() takes bytes or str, not {type(data).__name__}")
    if strict:
        problems = validate_structure(data)
        if problems:
            raise InputError("strict validation failed: " + "; ".join(problems))
    return msg


# --------------------------------------------------------------------------- serialising


def serialise(msg: Message) -> str:
    """ER7 text of a message: segments ended by CR, text escaped. Inverse of parse."""
    enc = msg.encoding
    fs, cs, rs, ss = enc.field, enc.component, enc.repetition, enc.subcomponent
    escape = _escaper(enc, _codec(_model_charset_key(msg)))
    out: list[str] = []
    for seg in msg.segments:
        name = seg.name
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a valid segment name")
        if name in _HEADERS:
            parts = [name, enc.msh2]
            fields = seg.fields[2:]
        else:
            parts = [name]
            fields = seg.fields
        for f in fields:
            if len(f) == 1 and len(f[0]) == 1 and len(f[0][0]) == 1:
                parts.append(escape(f[0][0][0]))
            else:
                parts.append(rs.join(cs.join(ss.join([escape(s) for s in c]) for c in r) for r in f))
        out.append(fs.join(parts))
    out.append("")
    return "\r".join(out)


# --------------------------------------------------------------------------- field access


@lru_cache(maxsize=1024)
def _path(path: str) -> tuple[str, int, int, int, int, int]:
    m = _PATH.match(path)
    if not m:
        raise ValueError(f"not an HL7 field path: {path!r} (expected e.g. PID-3, PID-3[2].1, OBX[2]-5.1.2)")
    name, occ, fld, rep, comp, sub = m.groups()
    nums = (int(occ or 1), int(fld), int(rep or 1), int(comp or 0), int(sub or 0))
    if 0 in nums[:3] or (comp is not None and nums[3] == 0) or (sub is not None and nums[4] == 0):
        raise ValueError(f"HL7 path indexes start at 1: {path!r}")
    return (name, *nums)


def _pick(field: Field, rep: int, comp: int, sub: int, enc: Encoding, codec: str) -> str | None:
    if rep > len(field):
        return None
    r = field[rep - 1]
    if comp:
        if comp > len(r):
            return None
        c = r[comp - 1]
        if sub:
            return c[sub - 1] if sub <= len(c) else None
        if len(c) == 1:
            return c[0]
        escape = _escaper(enc, codec)
        return enc.subcomponent.join([escape(s) for s in c])
    if len(r) == 1 and len(r[0]) == 1:
        return r[0][0]
    escape = _escaper(enc, codec)
    return enc.component.join(enc.subcomponent.join([escape(s) for s in c]) for c in r)


def get(source: Message | str | bytes, path: str) -> str | None:
    """Value at path: PID-3, PID-3.1, PID-3[2].1, OBX[2]-5.1.2 (1-based; first occurrence,
    repetition and the whole value unless indexed). None when absent.

    A single value comes back as decoded text; a value with components (or subcomponents) below
    the addressed level comes back in ER7 with the message's delimiters, escaped. MSH-1 and MSH-2
    (FHS-, BHS-) are the delimiters themselves. On str/bytes only the header and the addressed
    segment are split.
    """
    name, occ, fld, rep, comp, sub = _path(path)
    if isinstance(source, Message):
        seg = source.segment(name, occ)
        if seg is None or fld > len(seg.fields):
            return None
        if name in _HEADERS and fld <= 2:
            return seg.fields[fld - 1][0][0][0] if rep == 1 and comp <= 1 and sub <= 1 else None
        return _pick(seg.fields[fld - 1], rep, comp, sub, source.encoding,
                     _codec(_model_charset_key(source)))
    text = decode(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    lines = _lines(text)
    if not lines or lines[0][:3] not in _HEADERS:
        raise InputError("missing MSH: the text does not start with an MSH (or FHS/BHS) segment")
    enc = _header_encoding(lines[0], 1)
    fs = enc.field
    for line in lines:
        if line.startswith(name) and (len(line) == 3 or line[3] == fs):
            occ -= 1
            if occ == 0:
                break
    else:
        return None
    parts = line.split(fs)
    if name in _HEADERS:
        parts[0] = fs  # now parts[n - 1] is field n
        if fld > len(parts):
            return None
        if fld <= 2:
            return (fs, enc.msh2)[fld - 1] if rep == 1 and comp <= 1 and sub <= 1 else None
        raw = parts[fld - 1]
    elif fld < len(parts):
        raw = parts[fld]
    else:
        return None
    codec = _codec(_line_charset_key(next((s for s in lines if s.startswith("MSH")), "")))
    unescape = _unescaper(enc, codec)
    cs, rs, ss, esc = enc.component, enc.repetition, enc.subcomponent, enc.escape
    field = [[[unescape(s) if esc in s else s for s in c.split(ss)] for c in r.split(cs)]
             for r in raw.split(rs)]
    return _pick(field, rep, comp, sub, enc, codec)


# --------------------------------------------------------------------------- batches


def split_batch(data: bytes | str) -> list[bytes] | list[str]:
    """The messages of a batch file ([FHS] {[BHS] {MSH...} [BTS]} [FTS]) or of several messages in a
    row, each as its own text (same type as the input, segments ended by CR). Checks the envelope
    and BTS-1/FTS-1 counts; each message is parsed (and decoded) on its own by ``parse``.
    """
    if isinstance(data, str):
        lines = _lines(data)
        names = [s[:3] for s in lines]
        text_lines = lines
    else:
        raw = bytes(data)
        if raw.startswith(_BOM):
            raw = raw[3:]
        raw = raw.lstrip(_LEAD_BYTES).rstrip(b"\x1c\r\n")
        raw_lines = [s for s in re.split(rb"\r\n|\r|\n", raw) if s.strip(_BLANK_BYTES)]
        text_lines = [s.decode("latin-1") for s in raw_lines]  # delimiters and names are ASCII
        names = [s[:3] for s in text_lines]
    if not names:
        raise InputError("empty input: expected an HL7 v2 message or batch")
    if names[0] not in _HEADERS:
        raise InputError(f"missing MSH: segment 1 starts with {text_lines[0][:12]!r}, expected MSH "
                         f"(or FHS/BHS for a batch)")
    fs = ""
    for no, line in enumerate(text_lines, 1):
        if line[:3] in _HEADERS:
            fs = _header_encoding(line, no).field
        _check_name(line, no, fs)
    ranges = _envelope(names, text_lines)
    if isinstance(data, str):
        return ["\r".join(lines[a:b]) + "\r" for a, b in ranges]
    return [b"\r".join(raw_lines[a:b]) + b"\r" for a, b in ranges]


# --------------------------------------------------------------------------- strict validation

#: versions validate_structure checks (hl7apy also knows 2.1, 2.2 and 2.8.1/2.8.2)
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2")


def validate_structure(text: str | bytes, version: str | None = None, *,
                       include_warnings: bool = False) -> list[str]:
    """Problems found by a strict check of the message structure (required segments and groups,
    cardinality, datatypes, field lengths and tables as warnings) with hl7apy; [] when valid.

    version overrides MSH-12. Slow (tens of milliseconds): for routes that opt in, never the hot
    path. Results are cached per message text. A batch is checked message by message.
    """
    try:
        chunks = split_batch(text)
        msgs = [(m, parse(m)) for m in chunks]
    except InputError as exc:
        return [str(exc)]
    problems: list[str] = []
    for i, (chunk, msg) in enumerate(msgs, 1):
        prefix = f"message {i}: " if len(msgs) > 1 else ""
        er7 = chunk if isinstance(chunk, str) else decode(chunk)
        found = (_header_problems(msg, version) or _undefined_fields(msg, version or msg.version)
                 or _hl7apy_problems(_with_version(er7, msg, version), include_warnings))
        problems += [prefix + p for p in found]
    return problems


def _header_problems(msg: Message, version: str | None) -> list[str]:
    out = []
    v = version or msg.version
    if not v:
        out.append("MSH-12 (version) is empty: the structure cannot be checked without a version")
    elif v not in VERSIONS:
        out.append(f"MSH-12 version {v!r} is not supported for strict validation "
                   f"(supported: {', '.join(VERSIONS)})")
    code, event, structure = (get(msg, f"MSH-9.{n}") or "" for n in (1, 2, 3))
    if not code:
        out.append("MSH-9 (message type) is empty")
    elif not structure and not event:
        out.append(f"MSH-9 {code!r} has neither a trigger event (MSH-9.2) nor a message structure "
                   f"(MSH-9.3)")
    elif not out:
        name = structure or f"{code}_{event}"
        if not _known_structure(name, v):
            where = "MSH-9.3" if structure else "MSH-9 (no MSH-9.3 given)"
            out.append(f"{where}: message structure {name!r} is not defined in HL7 v{v}"
                       + ("" if structure else "; set MSH-9.3 to the structure of this trigger event"))
    return out


def _undefined_fields(msg: Message, version: str) -> list[str]:
    """Segments and non-empty fields the version does not define (hl7apy's strict parse only says
    "unknown element" about them)."""
    out = []
    for no, seg in enumerate(msg.segments, 1):
        if seg.name.startswith("Z"):
            continue
        defined = _defined_fields(seg.name, version)
        if defined is None:
            out.append(f"segment {no} ({seg.name}) is not defined in HL7 v{version}")
            continue
        for n, f in enumerate(seg.fields, 1):
            if n not in defined and f != [[[""]]]:
                out.append(f"segment {no}: {seg.name}-{n} is not defined in HL7 v{version}")
    return out


@lru_cache(maxsize=1024)
def _defined_fields(name: str, version: str) -> frozenset[int] | None:
    from hl7apy import load_reference
    from hl7apy.exceptions import HL7apyException

    try:
        ref = load_reference(name, "Segment", version)
    except (HL7apyException, KeyError, ImportError):
        return None
    return frozenset(int(child[0].rsplit("_", 1)[1]) for child in ref[1])


@lru_cache(maxsize=512)
def _known_structure(name: str, version: str) -> bool:
    from hl7apy import load_reference
    from hl7apy.exceptions import HL7apyException

    try:
        load_reference(name, "Message", version)
    except (HL7apyException, KeyError, ImportError):
        return False
    return True


def _with_version(er7: str, msg: Message, version: str | None) -> str:
    if not version or version == msg.version:
        return er7
    lines = _lines(er7)
    fs = msg.encoding.field
    parts = lines[0].split(fs)
    parts += [""] * (12 - len(parts))
    parts[11] = version
    lines[0] = fs.join(parts)
    return "\r".join(lines) + "\r"


@lru_cache(maxsize=256)
def _hl7apy_problems_cached(er7: str, include_warnings: bool) -> tuple[str, ...]:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import ValidationError as Hl7apyValidationError
    from hl7apy.parser import parse_message

    fd, report = tempfile.mkstemp(prefix="er7-validate-", suffix=".txt")
    os.close(fd)
    try:
        try:
            parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, force_validation=True,
                          report_file=report)
        except Hl7apyValidationError:
            pass  # every problem is in the report
        except Exception as exc:  # hl7apy raises its own and plain exceptions while building the tree
            return (f"structure: {_readable(exc)}",)
        with open(report, encoding="utf-8") as f:
            lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    finally:
        os.unlink(report)
    out: dict[str, None] = {}  # in order, each problem once (repeated groups repeat them)
    for ln in lines:
        kind, _, text = ln.partition(": ")
        if kind == "Error":
            out[f"structure: {text}"] = None
        elif kind == "Warning" and include_warnings:
            out[f"warning: {text}"] = None
    return tuple(out)


def _hl7apy_problems(er7: str, include_warnings: bool) -> list[str]:
    return list(_hl7apy_problems_cached(er7, include_warnings))


def _readable(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "unknown Element with strict validation" in text:
        return "a segment, field or component unknown to this version and structure (strict mode)"
    if type(exc).__name__ == "MaxChildLimitReached":
        return f"cardinality: {text}"
    return text
