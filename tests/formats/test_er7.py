"""router.formats.er7: the corpus (../shared/corpus/MANIFEST.tsv), escapes, encodings, character
sets, batches, field access, strict validation, and hypothesis round-trip and fuzz tests."""
from __future__ import annotations

import csv
import re
import string
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.errors import InputError
from router.formats import er7
from router.formats.er7 import Encoding, Message, Segment

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def _manifest() -> list[dict[str, str]]:
    path = CORPUS / "MANIFEST.tsv"
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return [r for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "message"]


ROWS = _manifest()
NEGATIVE_ROWS = [r for r in ROWS if "negative(" in r["note"]]

# Every row marked negative, how it is rejected and what the error says. "parse": er7.parse raises.
# "strict": well-formed ER7 that only strict structure validation (hl7apy, parse(strict=True))
# rejects -- upstream hl7apy raises for them only with VALIDATION_LEVEL.STRICT, or (18, 19) not at
# all: see MISLABELLED_NEGATIVE.
NEGATIVE = {
    "samples__sample_bad_batch.hl7":
        ("parse", "segment 2 (EVN) is outside any message: after BHS (segment 1) the next segment must be MSH"),
    "samples__sample_bad_batch1.hl7":
        ("parse", "segment 4: BHS opens a batch while the batch opened at segment 1 is still open (BTS missing)"),
    "samples__sample_bad_file.hl7": ("parse", "segment 3 (EVN) is outside any message"),
    "samples__sample_bad_file1.hl7":
        ("parse", "segment 5: BHS opens a batch while the batch opened at segment 2 is still open"),
    "samples__sample_bad_file2.hl7": ("parse", "segment 5: FHS (file header) must be the first segment"),
    "samples__sample_bad_file3.hl7": ("parse", "segment 2 (EVN) is outside any message: after FHS"),
    "test_parser__test_parse_message_duplicate_encoding_chars__15.hl7":
        ("parse", "MSH-2 (segment 1): encoding characters '^&&^' repeat '&'"),
    "test_parser__test_parse_message_duplicate_encoding_chars__16.hl7":
        ("parse", "MSH-2 (segment 1): too many encoding characters '^&&^##'"),
    "test_parser__test_parse_message_missing_encoding_chars__10.hl7":
        ("parse", "MSH-2 (segment 1): encoding characters '@%\\\\' are incomplete: expected 4"),
    "test_parser__test_parse_message_missing_encoding_chars_zero__08.hl7":
        ("parse", "MSH-2 (segment 1): the encoding characters are missing"),
    "test_parser__test_parse_message_missing_encoding_chars_zero__09.hl7":
        ("parse", "MSH-2 (segment 1): encoding characters '^~\\\\' are incomplete: expected 4"),
    "test_parser__test_parse_message_too_many_encoding_chars__11.hl7":
        ("parse", "MSH-2 (segment 1): too many encoding characters '@%\\\\&$?!'"),
    "test_parser__test_parse_message_too_many_encoding_chars__12.hl7":
        ("parse", "MSH-2 (segment 1): too many encoding characters '^~\\\\&#$'"),
    "test_core___get_fail_test_msg__03.hl7":
        ("strict", "Missing required child OML_O33_ORDER_PRIOR.OML_O33_OBSERVATION_PRIOR"),
    "test_parser__test_parse_unknown_message_strict__13.hl7": ("strict", "Missing required child ADT_A01.EVN"),
    "test_parser__test_parse_unknown_message_strict__14.hl7": ("strict", "MSH-9 (message type) is empty"),
    "test_parser__test_parse_message_missing_structure__17.hl7": ("strict", "MSH-9 (message type) is empty"),
    "test_parser__test_parse_message_incomplete_structure__18.hl7":
        ("strict", "MSH-9 'ADT' has neither a trigger event"),
    "test_parser__test_parse_message_missing_version__19.hl7": ("strict", "MSH-12 (version) is empty"),
}

# Negatives that hl7apy's own tests parse without error (default validation): test_parse_message_
# incomplete_structure / _missing_version only call parse_message; missing_structure__17 is the
# message of the non-strict test (its strict twin raises). Kept negative here through strict mode.
MISLABELLED_NEGATIVE = {
    "test_parser__test_parse_message_incomplete_structure__18.hl7",
    "test_parser__test_parse_message_missing_version__19.hl7",
    "test_parser__test_parse_message_missing_structure__17.hl7",
}

# Rows not marked negative that are not HL7 messages, with the error they get.
MISLABELLED_POSITIVE = {
    # `MSH|||||||||aaa`: hl7apy's to_er7() of a bare MSH segment object in a test of value assignment;
    # no encoding characters -- the very defect of the negative ..._missing_encoding_chars_zero__08
    "test_core__test_assign_value_traversal__05.hl7": "MSH-2 (segment 1): the encoding characters are missing",
    # python-hl7's mllp_send --loose tests: `MSH|^~\&|foo` + newline + `bar` is a placeholder payload
    # for newline conversion, and `bar` is no segment name
    "test_client__test_loose_unix_newline__05.hl7": "segment 2: 'bar' does not start with a valid segment name",
    "test_client__test_loose_windows_newline__03.hl7": "segment 2: 'bar' does not start with a valid segment name",
    "test_client__test_loose_windows_newline__04.hl7": "segment 2: 'bar' does not start with a valid segment name",
}

POSITIVE_ROWS = [r for r in ROWS if "negative(" not in r["note"]
                 and Path(r["local_path"]).name not in MISLABELLED_POSITIVE]


def _read(row: dict[str, str]) -> bytes:
    return (CORPUS / row["local_path"]).read_bytes()


def _id(row: dict[str, str]) -> str:
    return row["local_path"]


# --------------------------------------------------------------------------- corpus


def test_the_corpus_is_classified() -> None:
    if not ROWS:
        pytest.skip("the shared corpus is not available")
    assert {Path(r["local_path"]).name for r in NEGATIVE_ROWS} == set(NEGATIVE)
    names = {Path(r["local_path"]).name for r in ROWS}
    assert set(MISLABELLED_POSITIVE) <= names and MISLABELLED_NEGATIVE <= set(NEGATIVE)


@pytest.mark.parametrize("row", POSITIVE_ROWS, ids=_id)
def test_corpus_message_parses_and_round_trips(row: dict[str, str]) -> None:
    data = _read(row)
    msg = er7.parse(data)
    assert msg.segments and msg.segments[0].name in ("MSH", "FHS", "BHS")
    assert er7.parse(er7.serialise(msg)) == msg
    assert er7.parse(er7.serialise(msg).encode("utf-8")) == msg
    # MSH-9 / MSH-12 as the manifest read them, from the tree and from the text without a tree
    for column, path in (("msh9", "MSH-9"), ("msh12", "MSH-12")):
        if row[column] and msg.segment("MSH") is not None:
            assert er7.get(msg, path) == row[column]
            assert er7.get(data, path) == row[column]


@pytest.mark.parametrize("row", NEGATIVE_ROWS, ids=_id)
def test_corpus_negative_is_rejected(row: dict[str, str]) -> None:
    data = _read(row)
    how, text = NEGATIVE[Path(row["local_path"]).name]
    if how == "parse":
        with pytest.raises(InputError, match=re.escape(text)):
            er7.parse(data)
        assert any(text in p for p in er7.validate_structure(data))
    else:
        er7.parse(data)  # well-formed ER7
        problems = er7.validate_structure(data)
        assert any(text in p for p in problems), problems
        with pytest.raises(InputError, match="strict validation failed: .*" + re.escape(text)):
            er7.parse(data, strict=True)


@pytest.mark.parametrize("name", sorted(MISLABELLED_POSITIVE))
def test_corpus_rows_that_are_not_messages_are_rejected(name: str) -> None:
    row = next((r for r in ROWS if Path(r["local_path"]).name == name), None)
    if row is None:
        pytest.skip("the shared corpus is not available")
    with pytest.raises(InputError, match=re.escape(MISLABELLED_POSITIVE[name])):
        er7.parse(_read(row))


def test_corpus_totals() -> None:
    if not ROWS:
        pytest.skip("the shared corpus is not available")
    parsed = rejected = 0
    for row in ROWS:
        try:
            er7.parse(_read(row))
            parsed += 1
        except InputError:
            rejected += 1
    strict = sum(1 for how, _ in NEGATIVE.values() if how == "strict")
    assert rejected == len(NEGATIVE) - strict + len(MISLABELLED_POSITIVE)
    assert parsed == len(ROWS) - rejected


# --------------------------------------------------------------------------- parsing


H18 = "MSH|^~\\&|A" + "|" * 15 + "{}"  # an MSH whose MSH-18 is {}
ORU = ("MSH|^~\\&|LIS|LAB|EHR|HOSP|20240501103000||ORU^R01^ORU_R01|C1|P|2.5.1\r"
       "PID|1||123^^^HOSP^MR~456^^^&1.2.643.100.3&ISO^SNILS||Doe^John^^^^^L||19800501|M\r"
       "OBX|1|TX|T^Text||line one\\.br\\line two \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\X41\\||||||F\r"
       "ZXT|1|custom^value\r")


def test_model() -> None:
    msg = er7.parse(ORU)
    assert msg.encoding == er7.DEFAULT_ENCODING
    assert [s.name for s in msg.segments] == ["MSH", "PID", "OBX", "ZXT"]
    msh, pid = msg.segments[0], msg.segments[1]
    assert msh.fields[0] == [[["|"]]] and msh.fields[1] == [[["^~\\&"]]]
    assert msh.field(9) == [[["ORU"], ["R01"], ["ORU_R01"]]]
    assert pid.field(3) == [[["123"], [""], [""], ["HOSP"], ["MR"]],
                            [["456"], [""], [""], ["", "1.2.643.100.3", "ISO"], ["SNILS"]]]
    assert pid.field(2) == [[[""]]] and pid.field(99) is None
    assert msg.segment("ZXT") == Segment("ZXT", [[[["1"]]], [[["custom"], ["value"]]]])
    assert (msg.message_type, msg.version, msg.control_id, msg.charset) == ("ORU^R01", "2.5.1", "C1", "")


def test_escape_sequences() -> None:
    msg = er7.parse(ORU)
    assert er7.get(msg, "OBX-5") == "line one\nline two | ^ & ~ \\ A"
    text = er7.serialise(msg)
    assert "line one\\.br\\line two \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ A|" in text


def test_formatting_escapes_stay_verbatim_and_are_written_back() -> None:
    src = "MSH|^~\\&|A\rOBX|1|FT|||\\H\\bold\\N\\ \\.sp2\\ \\Zx\\ \\XZZ\\ \\Cxxyy\\ lone \\ end\r"
    msg = er7.parse(src)
    assert er7.get(msg, "OBX-5") == "\\H\\bold\\N\\ \\.sp2\\ \\Zx\\ \\XZZ\\ \\Cxxyy\\ lone \\ end"
    assert er7.serialise(msg) == src.replace("lone \\ end", "lone \\E\\ end")
    assert er7.parse(er7.serialise(msg)) == msg


def test_hex_escapes_use_the_message_charset() -> None:
    utf8 = er7.parse("MSH|^~\\&|A\rNTE|1||\\XC3A9\\ \\X0D0A\\ \\XC3\\\r")
    assert er7.get(utf8, "NTE-3") == "é \r\n \\XC3\\"  # an incomplete UTF-8 sequence stays as it is
    cyr = er7.parse(H18.format("8859/5") + "\rNTE|1||\\XC8\\\r")
    assert er7.get(cyr, "NTE-3") == bytes([0xC8]).decode("iso8859-5") == "Ш"


def test_serialise_escapes_delimiters_and_line_breaks() -> None:
    msg = Message(er7.DEFAULT_ENCODING, [
        Segment("MSH", [[[["|"]]], [[["^~\\&"]]], [[["A|B^C~D&E\\F"]]]]),
        Segment("NTE", [[[["one\ntwo\rthree\x0bfour\x1c"]]]]),
    ])
    assert er7.serialise(msg) == ("MSH|^~\\&|A\\F\\B\\S\\C\\R\\D\\T\\E\\E\\F\r"
                                  "NTE|one\\.br\\two\\X0D\\three\\X0B\\four\\X1C\\\r")
    assert er7.parse(er7.serialise(msg)) == msg


def test_non_default_encoding_characters() -> None:
    src = "MSH#$%!@#LAB#FAC#####ORU$R01#1#P#2.5\rPID#1##A@B$C%D##O!S!BRIEN!F!X$J\r"
    msg = er7.parse(src)
    assert msg.encoding == Encoding("#", "$", "%", "!", "@")
    assert er7.get(msg, "MSH-1") == "#" and er7.get(msg, "MSH-2") == "$%!@"
    assert er7.get(msg, "MSH-9") == "ORU$R01"
    assert er7.get(msg, "PID-3.1.2") == "B" and er7.get(msg, "PID-3[2]") == "D"
    assert er7.get(msg, "PID-5.1") == "O$BRIEN#X"
    assert er7.serialise(msg) == src


def test_truncation_character_v27() -> None:
    msg = er7.parse("MSH|^~\\&#|A|||||||1|P|2.7\rNTE|1||cut\\P\\ here#\r")
    assert msg.encoding.truncation == "#" and er7.get(msg, "MSH-2") == "^~\\&#"
    assert er7.get(msg, "NTE-3") == "cut# here#"
    assert er7.parse(er7.serialise(msg)) == msg


def test_doubled_escape_in_msh2_is_read_as_one() -> None:
    # ^~\\& comes from source-code string literals (17 LinuxForHealth hl7v2-fhir-converter messages)
    msg = er7.parse("MSH|^~\\\\&|A\rPID|1||a&b\r")
    assert msg.encoding == er7.DEFAULT_ENCODING and er7.get(msg, "PID-3.1.2") == "b"
    assert er7.serialise(msg).startswith("MSH|^~\\&|A\r")


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_separators_bom_and_framing(sep: str) -> None:
    text = sep.join(["MSH|^~\\&|A|B|||||ADT^A01|1|P|2.5", "EVN|A01", "", "PID|1||X  "]) + sep + sep
    want = er7.parse(text)
    assert [s.name for s in want.segments] == ["MSH", "EVN", "PID"]
    assert er7.get(want, "PID-3") == "X  "  # trailing spaces are data
    assert er7.parse(b"\xef\xbb\xbf" + text.encode()) == want
    assert er7.parse(b"\x0b" + text.encode() + b"\x1c\r") == want
    assert er7.parse("\ufeff" + text) == want


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty input: expected an HL7 v2 message starting with MSH"),
    ("\r\n  \r", "empty input"),
    ("PID|1||123", "missing MSH: segment 1 starts with 'PID|1||123', expected MSH"),
    ("MSH", "segment 1 (MSH) ends before MSH-1, the field separator"),
    ("MSHA^~\\&|", "MSH-1 (segment 1): 'A' cannot be the field separator"),
    ("MSH|", "MSH-2 (segment 1): the encoding characters are missing"),
    ("MSH|^~\\|A", "MSH-2 (segment 1): encoding characters '^~\\\\' are incomplete: expected 4"),
    ("MSH|^~\\&#$|A", "MSH-2 (segment 1): too many encoding characters '^~\\\\&#$'"),
    ("MSH|^~\\a|A", "MSH-2 (segment 1): 'a' in '^~\\\\a' cannot be an encoding character"),
    ("MSH|^~|&|A", "MSH-2 (segment 1): encoding characters '^~' are incomplete"),
    ("MSH|^~\\^|A", "MSH-2 (segment 1): encoding characters '^~\\\\^' repeat '^'"),
    ("MSH|^~\\&|A\rpid|1", "segment 2: 'pid|1' does not start with a valid segment name"),
    ("MSH|^~\\&|A\rPI", "segment 2: 'PI' does not start with a valid segment name"),
    ("MSH|^~\\&|A\r PID|1", "segment 2: ' PID|1' does not start with a valid segment name"),
    ("MSH|^~\\&|A\rPID1|1", "segment 2 (PID): expected the field separator '|' right after the segment "
                            "name, found '1'"),
    ("MSH|^~\\&|A\rEVN|1\rMSH|^~\\&#|B", "MSH-2 (segment 3): encoding characters '|^~\\\\&#' differ "
                                        "from '|^~\\\\&' of segment 1"),
    ("MSH|^~\\&|A\rMSH!^~\\&!B", "segment 2 (MSH): expected the field separator '|'"),
    ("MSH|^~\\&|A\r" + H18.format("8859/1"), "MSH-18 (segment 2): character set differs"),
])
def test_rejections_name_segment_and_field(data: str | bytes, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        er7.parse(data)


def test_parse_takes_only_text_or_bytes() -> None:
    with pytest.raises(TypeError):
        er7.parse(12)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- character sets


CYRILLIC = "MSH|^~\\&|МИС|ГКБ1|||20240501||ADT^A01^ADT_A01|1|P|2.5|||||RU|{cs}\rPID|1||1||Иванов^Иван^Иванович\r"


@pytest.mark.parametrize(("msh18", "codec"), [
    ("8859/5", "iso8859-5"), ("CP1251", "cp1251"), ("windows-1251", "cp1251"),
    ("UNICODE UTF-8", "utf-8"), ("", "utf-8"),
])
def test_cyrillic_in_its_msh18_charset(msh18: str, codec: str) -> None:
    text = CYRILLIC.format(cs=msh18)
    msg = er7.parse(text.encode(codec))
    assert msg == er7.parse(text)
    assert er7.get(msg, "PID-5.1") == "Иванов" and er7.get(msg, "MSH-3") == "МИС"
    assert msg.charset == msh18.upper()
    assert er7.get(text.encode(codec), "PID-5.3") == "Иванович"  # without the tree


def test_8859_1_and_ascii() -> None:
    text = H18.format("8859/1") + "\rPID|1||1||Müller^Zoë\r"
    assert er7.get(er7.parse(text.encode("latin-1")), "PID-5.2") == "Zoë"
    ascii_msg = H18.format("ASCII") + "\rPID|1||1||Muller\r"
    assert er7.get(er7.parse(ascii_msg.encode()), "PID-5") == "Muller"
    with pytest.raises(InputError, match=re.escape("segment 2: byte 0xC3 at offset 42 is not valid in the "
                                                   "MSH-18 character set ASCII (ascii)")):
        er7.parse(ascii_msg.replace("Muller", "Müller").encode())


def test_non_utf8_bytes_without_msh18_are_rejected() -> None:
    data = CYRILLIC.format(cs="").encode("cp1251")
    with pytest.raises(InputError, match=re.escape(
            "segment 1: byte 0xCC at offset 9 is not valid UTF-8, and MSH-18 does not name a character "
            "set (e.g. 8859/1, 8859/5, CP1251)")):
        er7.parse(data)
    with pytest.raises(InputError, match="segment 2: byte 0xC8 at offset 72 is not valid UTF-8"):
        er7.parse(data.replace("МИС|ГКБ1".encode("cp1251"), b"MIS|GKB1"))


def test_unsupported_charsets_and_bom_contradictions() -> None:
    text = CYRILLIC.format(cs="UNICODE UTF-16")
    with pytest.raises(InputError, match="MSH-18 character set 'UNICODE UTF-16' is not supported"):
        er7.parse(text.encode("utf-8"))
    ascii_only = H18.format("ISO IR87") + "\rPID|1\r"
    assert er7.parse(ascii_only.encode()).charset == "ISO IR87"  # pure ASCII: nothing to decode
    with pytest.raises(InputError, match="UTF-8 byte-order mark but MSH-18 says 8859/5"):
        er7.parse(b"\xef\xbb\xbf" + CYRILLIC.format(cs="8859/5").encode("iso8859-5"))


# --------------------------------------------------------------------------- field access


def test_get_paths() -> None:
    msg = er7.parse(ORU)
    cases = {
        "MSH-1": "|", "MSH-2": "^~\\&", "MSH-3": "LIS", "MSH-9": "ORU^R01^ORU_R01", "MSH-9.2": "R01",
        "PID-3": "123^^^HOSP^MR", "PID-3[2]": "456^^^&1.2.643.100.3&ISO^SNILS", "PID-3[2].1": "456",
        "PID-3[2].4": "&1.2.643.100.3&ISO", "PID-3[2].4.2": "1.2.643.100.3", "PID-3[3]": None,
        "PID-3.9": None, "PID-3.4.2": None, "PID-40": None, "PV1-1": None, "OBX[2]-1": None,
        "PID[1]-5.2": "John", "ZXT-2.2": "value", "MSH-2.1": "^~\\&", "MSH-2.2": None,
    }
    for path, want in cases.items():
        assert er7.get(msg, path) == want, path
        assert er7.get(ORU, path) == want, path
        assert er7.get(ORU.encode(), path) == want, path
        assert msg.get(path) == want
    for bad in ("PID3", "pid-3", "PID-0", "PID-3[0]", "PID-3.0", "PID-3.1.0", "PID-3.1.1.1"):
        with pytest.raises(ValueError, match="HL7"):
            er7.get(msg, bad)
    with pytest.raises(InputError, match="missing MSH"):
        er7.get("PID|1", "PID-1")


def test_get_escapes_composite_values() -> None:
    msg = er7.parse("MSH|^~\\&|A\rPID|1||a\\S\\b^c\\T\\d&e\r")
    assert er7.get(msg, "PID-3.1") == "a^b"
    assert er7.get(msg, "PID-3") == "a\\S\\b^c\\T\\d&e"  # composite: ER7, still escaped
    assert er7.get(msg, "PID-3.2") == "c\\T\\d&e" and er7.get(msg, "PID-3.2.1") == "c&d"


# --------------------------------------------------------------------------- batches


BATCH = ("FHS|^~\\&|A|F|||20240101||file1\r"
         "BHS|^~\\&|A|F|||20240101\r"
         "MSH|^~\\&|A|F|||20240101||ADT^A01^ADT_A01|1|P|2.5\rEVN|A01\r"
         "MSH|^~\\&|A|F|||20240101||ADT^A01^ADT_A01|2|P|2.5\rEVN|A01\r"
         "BTS|2\r"
         "BHS|^~\\&|A|F|||20240101\r"
         "MSH|^~\\&|A|F|||20240101||ADT^A08^ADT_A01|3|P|2.5\r"
         "BTS|1\r"
         "FTS|2\r")


def test_split_batch_and_parse_whole_file() -> None:
    parts = er7.split_batch(BATCH)
    assert [er7.get(p, "MSH-10") for p in parts] == ["1", "2", "3"]
    assert parts[0] == "MSH|^~\\&|A|F|||20240101||ADT^A01^ADT_A01|1|P|2.5\rEVN|A01\r"
    assert er7.split_batch(BATCH.encode()) == [p.encode() for p in parts]
    whole = er7.parse(BATCH)
    assert [s.name for s in whole.segments].count("MSH") == 3
    assert er7.get(whole, "MSH[3]-9.2") == "A08" and er7.get(whole, "FHS-9") == "file1"
    assert er7.parse(er7.serialise(whole)) == whole


@pytest.mark.parametrize(("change", "message"), [
    (("BTS|2", "BTS|3"), "BTS-1 (segment 7): batch message count 3 does not match the 2 message(s) in the batch"),
    (("FTS|2", "FTS|1"), "FTS-1 (segment 11): file batch count 1 does not match the 2 batch(es) in the file"),
    (("BTS|2", "BTS|two"), "BTS-1 (segment 7): batch message count 'two' is not a whole number"),
    (("BTS|1\r", "BTS|1\rBTS|0\r"), "segment 11: BTS closes no batch"),
    (("FTS|2\r", "FTS|2\rMSH|^~\\&|A\r"), "segment 11: FTS (file trailer) must be the last segment, found MSH"),
    (("BTS|2\rBHS", "BHS"), "segment 7: BHS opens a batch while the batch opened at segment 2 is still open"),
])
def test_batch_envelope_errors(change: tuple[str, str], message: str) -> None:
    bad = BATCH.replace(*change)
    for fn in (er7.parse, er7.split_batch):
        with pytest.raises(InputError, match=re.escape(message)):
            fn(bad)


def test_split_batch_shapes() -> None:
    msg = "MSH|^~\\&|A\rPID|1\r"
    assert er7.split_batch(msg) == [msg]
    assert er7.split_batch(msg + msg.replace("A", "B")) == [msg, msg.replace("A", "B")]
    assert er7.split_batch("FHS|^~\\&\rFTS|0\r") == []
    assert er7.split_batch("BHS|^~\\&\rBTS|0\r") == []
    assert er7.split_batch(msg + "BTS|1\r") == [msg]  # trailer without header (python-hl7 allows it)
    with pytest.raises(InputError, match="empty input"):
        er7.split_batch(b"  \r\n")
    with pytest.raises(InputError, match="segment 2: 'x' does not start with a valid segment name"):
        er7.split_batch("BHS|^~\\&\rx\r")


def test_batch_of_messages_in_different_charsets() -> None:
    one = CYRILLIC.format(cs="8859/5").encode("iso8859-5")
    two = CYRILLIC.format(cs="CP1251").encode("cp1251")
    data = b"BHS|^~\\&\r" + one + two + b"BTS|2\r"
    with pytest.raises(InputError):
        er7.parse(data)  # one document cannot hold two charsets
    parts = er7.split_batch(data)
    assert [er7.get(p, "PID-5.1") for p in parts] == ["Иванов", "Иванов"]
    assert [er7.parse(p).charset for p in parts] == ["8859/5", "CP1251"]


# --------------------------------------------------------------------------- strict validation


ADT = ("MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|1|P|2.5\rEVN|A01|20240101\r"
       "PID|1||123^^^H^MR||DOE^JOHN\rPV1|1|I\r")


def test_validate_structure() -> None:
    assert er7.validate_structure(ADT) == []
    assert er7.validate_structure(ADT.encode()) == []
    assert er7.parse(ADT, strict=True) == er7.parse(ADT)
    assert er7.validate_structure(ADT.replace("EVN|A01|20240101\r", "")) == [
        "structure: Missing required child ADT_A01.EVN"]
    assert er7.validate_structure(ADT, version="2.8") == ["segment 2: EVN-1 is not defined in HL7 v2.8"]
    assert er7.validate_structure(ADT + "XYZ|1\r") == ["segment 5 (XYZ) is not defined in HL7 v2.5"]
    assert er7.validate_structure(ADT + "ZXY|1\r") == []  # Z-segments are allowed
    assert er7.validate_structure(ADT.replace("PID|1", "PID|one")) == [
        "structure: one is not an HL7 valid SI value"]
    assert er7.validate_structure(ADT.replace("ADT^A01^ADT_A01", "ADT^A04")) == [
        "MSH-9 (no MSH-9.3 given): message structure 'ADT_A04' is not defined in HL7 v2.5; set MSH-9.3 "
        "to the structure of this trigger event"]
    assert er7.validate_structure(ADT.replace("|2.5", "|2.2")) == [
        "MSH-12 version '2.2' is not supported for strict validation (supported: 2.3, 2.3.1, 2.4, 2.5, "
        "2.5.1, 2.6, 2.7, 2.7.1, 2.8, 2.8.1, 2.8.2)"]
    assert er7.validate_structure("PID|1") == [
        "missing MSH: segment 1 starts with 'PID|1', expected MSH (or FHS/BHS for a batch)"]
    batch = "BHS|^~\\&\r" + ADT + ADT.replace("EVN|A01|20240101\r", "") + "BTS|2\r"
    assert er7.validate_structure(batch) == ["message 2: structure: Missing required child ADT_A01.EVN"]
    with pytest.raises(InputError, match="strict validation failed: structure: Missing required child"):
        er7.parse(ADT.replace("PV1|1|I\r", ""), strict=True)


def test_validate_structure_is_cached() -> None:
    text = ADT.replace("|1|P|", "|cache-test|P|")
    er7.validate_structure(text)
    start = time.perf_counter()
    for _ in range(20):
        assert er7.validate_structure(text) == []
    assert time.perf_counter() - start < 0.5  # hl7apy itself takes tens of milliseconds per message


# --------------------------------------------------------------------------- hypothesis

SPECIAL_NAMES = {"MSH", "FHS", "BHS", "BTS", "FTS"}
CHARSET_NAMES = ["", "UNICODE UTF-8", "8859/1", "8859/5", "CP1251", "ASCII", "unicode utf-8"]


@st.composite
def encodings(draw: st.DrawFn) -> Encoding:
    if draw(st.booleans()):
        return er7.DEFAULT_ENCODING
    chars = draw(st.lists(st.sampled_from(string.punctuation), min_size=5, max_size=6, unique=True))
    return Encoding(*chars[:5], chars[5] if len(chars) == 6 else "")


def texts(enc: Encoding) -> st.SearchStrategy[str]:
    e = enc.escape
    tricky = [enc.field, enc.component, enc.repetition, enc.subcomponent, e, enc.truncation or "#",
              "\r", "\n", "\r\n", "\x0b", "\x1c", " ", "\ufeff", '""', "MSH", "\\",
              *(f"{e}{code}{e}" for code in ("F", "S", "T", "R", "E", "P", "X41", "XC3A9", "XC3", "X0D",
                                             "X", "XZZ", ".br", ".sp2", "H", "N", "Zx", "", "C2842")),
              f"{e}X41", f"X41{e}"]
    return st.one_of(st.text(max_size=8),
                     st.lists(st.one_of(st.text(max_size=4), st.sampled_from(tricky)), min_size=1,
                              max_size=4).map("".join))


def fields(enc: Encoding) -> st.SearchStrategy[list]:
    text = texts(enc)
    return st.one_of(text.map(lambda t: [[[t]]]),
                     st.lists(st.lists(st.lists(text, min_size=1, max_size=3), min_size=1, max_size=3),
                              min_size=1, max_size=3))


names = st.from_regex(r"\A[A-Z][A-Z0-9]{2}\Z").filter(lambda n: n not in SPECIAL_NAMES)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    enc = draw(encodings())
    msh_fields = [[[[enc.field]]], [[[enc.msh2]]]] + draw(st.lists(fields(enc), max_size=20))
    if len(msh_fields) >= 18 and draw(st.booleans()):
        msh_fields[17] = [[[draw(st.sampled_from(CHARSET_NAMES))]]]
    body = draw(st.lists(st.builds(Segment, names, st.lists(fields(enc), max_size=6)), max_size=5))
    return Message(enc, [Segment("MSH", msh_fields), *body])


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_round_trip(msg: Message) -> None:
    text = er7.serialise(msg)
    assert er7.parse(text) == msg
    codec = er7.CHARSETS.get(msg.charset)
    if codec is not None:
        try:
            data = text.encode(codec)
        except UnicodeEncodeError:
            return
        assert er7.parse(data) == msg


@settings(max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.data())
def test_get_on_text_matches_get_on_tree(msg: Message, data: st.DataObject) -> None:
    text = er7.serialise(msg)
    i = data.draw(st.integers(0, len(msg.segments) - 1))
    seg = msg.segments[i]
    occurrence = [s.name for s in msg.segments[:i + 1]].count(seg.name)
    n = data.draw(st.integers(1, len(seg.fields) + 1))
    rep, comp, sub = (data.draw(st.integers(1, 4)) for _ in range(3))
    for path in (f"{seg.name}[{occurrence}]-{n}", f"{seg.name}[{occurrence}]-{n}[{rep}]",
                 f"{seg.name}[{occurrence}]-{n}[{rep}].{comp}", f"{seg.name}[{occurrence}]-{n}[{rep}].{comp}.{sub}"):
        assert er7.get(text, path) == er7.get(msg, path), path
    if n <= len(seg.fields) and seg.name != "MSH":
        field = seg.fields[n - 1]
        if rep <= len(field) and comp <= len(field[rep - 1]) and sub <= len(field[rep - 1][comp - 1]):
            assert er7.get(text, f"{seg.name}[{occurrence}]-{n}[{rep}].{comp}.{sub}") == \
                field[rep - 1][comp - 1][sub - 1]


def _fuzz_seeds() -> list[bytes]:
    seeds = [ORU.encode(), BATCH.encode(), CYRILLIC.format(cs="8859/5").encode("iso8859-5")]
    seeds += [_read(r) for r in ROWS[::7]]  # a spread of the corpus, negatives included
    return seeds


SEEDS = _fuzz_seeds()
NASTY = b"|^~\\&#\r\n\x0b\x1c\x00\xff\xc3\xef\xbb\xbfMSHBTSFTSFHSBHS0129X.br"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "duplicate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        chunk = draw(st.one_of(st.binary(min_size=1, max_size=4),
                               st.lists(st.sampled_from(NASTY), min_size=1, max_size=4).map(bytes)))
        if op == "replace":
            data[pos:pos + len(chunk)] = chunk
        elif op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            end = pos + draw(st.integers(1, 64))
            data[pos:pos] = data[pos:end]
    return bytes(data)


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(), st.binary(max_size=300), st.text(max_size=300),
                 st.text(max_size=300).map(lambda t: "MSH|^~\\&|" + t),
                 st.binary(max_size=300).map(lambda b: b"MSH|^~\\&|" + b)))
def test_fuzz_parse_returns_or_raises_input_error(data: bytes | str) -> None:
    start = time.perf_counter()
    try:
        msg = er7.parse(data)
    except InputError as exc:
        assert str(exc)
    else:
        assert er7.parse(er7.serialise(msg)) == msg
    for call in (lambda: er7.split_batch(data), lambda: er7.get(data, "PID-3[2].1.1")):
        try:
            call()
        except InputError as exc:
            assert str(exc)
    assert time.perf_counter() - start < 1.0
