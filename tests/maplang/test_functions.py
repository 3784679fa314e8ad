"""The mapping language's conversion functions (router/maplang/functions.py, codesystems.py).

Inputs are HL7 v2 values taken from the shared corpus (LinuxForHealth hl7v2-fhir-converter, hl7apy
and HL7 V2-to-FHIR sample messages; the source file is named next to each) plus Russian cases.
Expected outputs are exact FHIR R4 JSON; whole resources built from them are validated with
fhir.resources.R4B.
"""
from __future__ import annotations

import csv
import re
from datetime import datetime as dt
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from router.errors import ConfigError, MappingError
from router.maplang import functions as fn
from router.maplang.codesystems import CodeSystems, system_uri
from router.maplang.functions import FUNCTIONS, FnContext
from router.maplang.hl7 import DEFAULT_ENCODING, Encoding, Message, V, escape, unescape

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CORPUS = SHARED / "corpus"
TABLES = CORPUS / "v2-to-fhir" / "mappings" / "codesystems"
E = DEFAULT_ENCODING
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SNILS = "urn:oid:1.2.643.100.3"
ORIGINAL_TEXT = "http://hl7.org/fhir/StructureDefinition/originalText"


def hv(raw: str, enc: Encoding = E) -> V:
    return V(raw, enc)


def ctx(**kw: Any) -> FnContext:
    return FnContext(**kw)


def observation(**elements: Any) -> dict[str, Any]:
    """An R4B-valid Observation around the elements under test."""
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "test"}, **elements}
    Observation.model_validate(obs)
    return obs


# ============================================================================================
# code systems
# ============================================================================================

class TestCodeSystems:
    @pytest.mark.parametrize(("name", "uri"), [
        ("LN", LOINC), ("ln", LOINC), ("SCT", "http://snomed.info/sct"),
        ("SNM", "http://terminology.hl7.org/CodeSystem/snm"), ("I9", "http://terminology.hl7.org/CodeSystem/icd9"),
        ("I9C", "http://hl7.org/fhir/sid/icd-9-cm"), ("I10", "http://hl7.org/fhir/sid/icd-10"),
        ("ICD10", "http://hl7.org/fhir/sid/icd-10"), ("UCUM", UCUM), ("NDC", "http://hl7.org/fhir/sid/ndc"),
        ("CPT", "http://www.ama-assn.org/go/cpt"), ("CVX", "http://hl7.org/fhir/sid/cvx"),
        ("HL70078", "http://terminology.hl7.org/CodeSystem/v2-0078"),
        ("HL70064", "http://terminology.hl7.org/CodeSystem/v2-0064"),
        ("hl70396", "http://terminology.hl7.org/CodeSystem/v2-0396"),
        ("ФСЛИ", "urn:oid:1.2.643.5.1.13.13.11.1080"), ("FSLI", "urn:oid:1.2.643.5.1.13.13.11.1080"),
        ("фсли", "urn:oid:1.2.643.5.1.13.13.11.1080"),
        ("1.2.643.5.1.13.13.11.1080", "urn:oid:1.2.643.5.1.13.13.11.1080"),
        ("МКБ-10", "urn:oid:1.2.643.5.1.13.13.11.1005"),
        ("2.16.840.1.113883.6.1", "urn:oid:2.16.840.1.113883.6.1"),
        ("urn:oid:1.2.3", "urn:oid:1.2.3"), ("http://example.org/cs", "http://example.org/cs"),
        (" LN ", LOINC),
    ])
    def test_known(self, name: str, uri: str) -> None:
        assert system_uri(name) == uri

    @pytest.mark.parametrize("name", ["L", "99LAB", "99zzz", "", None, "XYZ", "43396-1", "1.", "1..2", "3.1"])
    def test_local_and_unknown_have_no_uri(self, name: str | None) -> None:
        assert system_uri(name) is None

    def test_local_prefix(self) -> None:
        cs = CodeSystems(local_prefix="http://lab.example.ru/codes/")
        assert cs.uri("L") == "http://lab.example.ru/codes/L"
        assert cs.uri("99LAB") == "http://lab.example.ru/codes/99LAB"
        assert cs.uri("LN") == LOINC

    def test_extra_wins_and_is_case_insensitive(self) -> None:
        cs = CodeSystems({"LAB1": "urn:oid:1.2.643.5.1.13.13.12.1.77.1", "LN": "http://example.org/loinc-copy"})
        assert cs.uri("LAB1") == cs.uri("lab1") == "urn:oid:1.2.643.5.1.13.13.12.1.77.1"
        assert cs.uri("LN") == "http://example.org/loinc-copy"
        assert system_uri("LN") == LOINC  # the defaults are untouched: no global state
        assert dict(cs.extra) == {"LAB1": "urn:oid:1.2.643.5.1.13.13.12.1.77.1",
                                  "LN": "http://example.org/loinc-copy"}

    @pytest.mark.parametrize("extra", [{"X": "not a uri"}, {"": "http://x.org"}, {"X": 5}])
    def test_bad_extra_is_a_config_error(self, extra: dict[str, Any]) -> None:
        with pytest.raises(ConfigError):
            CodeSystems(extra)

    def test_identifier_uri_does_not_use_the_code_table(self) -> None:
        cs = CodeSystems({"HOSP": "http://hospital.example.ru/mrn"})
        assert cs.identifier_uri("LN") is None
        assert cs.identifier_uri("HOSP") == "http://hospital.example.ru/mrn"
        assert cs.identifier_uri("СНИЛС") == SNILS
        assert cs.identifier_uri("1.2.643.100.3") == SNILS
        assert cs.identifier_uri("0A8A1752-E336-43E1-BF7F-0C8F6F437CA3") == \
            "urn:uuid:0a8a1752-e336-43e1-bf7f-0c8f6f437ca3"


# ============================================================================================
# dates and times
# ============================================================================================

class TestDateTime:
    @pytest.mark.parametrize(("hl7", "fhir"), [
        ("2023", "2023"),
        ("202308", "2023-08"),
        ("20230822", "2023-08-22"),
        ("2023082202", "2023-08-22T02:00:00+03:00"),      # hour precision: padded (FHIR needs seconds)
        ("202308220211", "2023-08-22T02:11:00+03:00"),
        ("20230822021111", "2023-08-22T02:11:11+03:00"),  # OBX-14, MDM_T02 sample
        ("20230822021111.1234", "2023-08-22T02:11:11.1234+03:00"),
        ("202408160605-1000", "2024-08-16T06:05:00-10:00"),  # OBX-14, FHIRConverterTest nte_split
        ("20230822021111+0000", "2023-08-22T02:11:11+00:00"),
        ("20230822+0500", "2023-08-22"),  # a zone on a date is dropped (FHIR forbids it)
        ("20240229", "2024-02-29"),
        ("20170303^S", "2017-03-03"),  # TS with degree of precision
    ])
    def test_datetime(self, hl7: str, fhir: str) -> None:
        assert fn.datetime(hv(hl7), ctx()) == fhir
        observation(effectiveDateTime=fhir)

    @pytest.mark.parametrize(("tz", "hl7", "fhir"), [
        ("Europe/Moscow", "20100715120000", "2010-07-15T12:00:00+04:00"),  # MSD (DST until 2011)
        ("Europe/Moscow", "20100115120000", "2010-01-15T12:00:00+03:00"),
        ("Europe/Moscow", "20130115120000", "2013-01-15T12:00:00+04:00"),  # 2011-2014 permanent +4
        ("Europe/Moscow", "20230715120000", "2023-07-15T12:00:00+03:00"),
        ("Europe/Berlin", "20230701120000", "2023-07-01T12:00:00+02:00"),
        ("Europe/Berlin", "20230115120000", "2023-01-15T12:00:00+01:00"),
        ("Europe/Berlin", "20230326023000", "2023-03-26T02:30:00+01:00"),  # in the spring gap: fold=0
        ("Europe/Berlin", "20231029023000", "2023-10-29T02:30:00+02:00"),  # ambiguous: first (fold=0)
        ("Asia/Kolkata", "20230101000000", "2023-01-01T00:00:00+05:30"),
        ("Europe/Moscow", "19000101120000", "1900-01-01T12:00:00+02:30"),  # LMT +02:30:17 rounded
    ])
    def test_zone_offset_at_that_date(self, tz: str, hl7: str, fhir: str) -> None:
        assert fn.datetime(hv(hl7), ctx(timezone=tz)) == fhir

    @pytest.mark.parametrize("bad", ["20231301", "20230230", "20230229", "2023-08-22", "abc", "20230822021160",
                                     "20230822246000", "20230822+1500", "20230822+0360", "202", "0000",
                                     "20230822021111.", "20230822021111.1234567890", "2023082202111",
                                     "２０２３"])
    def test_bad_input_names_the_value(self, bad: str) -> None:
        with pytest.raises(MappingError, match=bad.replace(".", r"\.").replace("+", r"\+")):
            fn.datetime(hv(bad), ctx())

    def test_empty_and_null_are_omitted(self) -> None:
        for f in (fn.date, fn.datetime, fn.instant, fn.time):
            assert f(hv(""), ctx()) is None
            assert f(hv('""'), ctx()) is None
            assert f(None, ctx()) is None

    @pytest.mark.parametrize(("hl7", "fhir"), [
        ("19251008", "1925-10-08"),  # PID-7, MDM_T02 sample
        ("200605", "2006-05"), ("2006", "2006"), ("19800315083000+0300", "1980-03-15"),
    ])
    def test_date(self, hl7: str, fhir: str) -> None:
        assert fn.date(hv(hl7), ctx()) == fhir
        Patient.model_validate({"resourceType": "Patient", "birthDate": fhir})

    def test_instant(self) -> None:
        assert fn.instant(hv("201705130822"), ctx()) == "2017-05-13T08:22:00+03:00"  # MSH-7, telcom test
        assert fn.instant(hv("20170513082201.5-0500"), ctx()) == "2017-05-13T08:22:01.5-05:00"
        with pytest.raises(MappingError, match="no time of day"):
            fn.instant(hv("20170513"), ctx())
        observation(issued=fn.instant(hv("2017051308"), ctx()))

    @pytest.mark.parametrize(("hl7", "fhir"), [("08", "08:00:00"), ("0830", "08:30:00"), ("083015", "08:30:15"),
                                               ("083015.5+0300", "08:30:15.5")])
    def test_time(self, hl7: str, fhir: str) -> None:
        assert fn.time(hv(hl7), ctx()) == fhir
        observation(valueTime=fhir)

    @pytest.mark.parametrize("bad", ["2460", "8", "0860", "08:30"])
    def test_bad_time(self, bad: str) -> None:
        with pytest.raises(MappingError, match="not an HL7 time"):
            fn.time(hv(bad), ctx())

    def test_period(self) -> None:
        assert fn.period(hv("20230101^20231231235959"), ctx()) == \
            {"start": "2023-01-01", "end": "2023-12-31T23:59:59+03:00"}
        assert fn.period(hv("^20231231"), ctx()) == {"end": "2023-12-31"}
        assert fn.period(hv("^"), ctx()) is None

    def test_unknown_time_zone(self) -> None:
        with pytest.raises(MappingError, match="unknown time zone"):
            fn.datetime(hv("20230101120000"), ctx(timezone="Mars/Olympus"))


_ZONES = ["Europe/Moscow", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]


@settings(max_examples=400, deadline=None)
@given(when=st.datetimes(min_value=dt(1900, 1, 1), max_value=dt(2100, 12, 31)),
       precision=st.integers(0, 6), digits=st.integers(1, 6),
       offset=st.one_of(st.none(), st.integers(-14 * 60, 14 * 60)), tz=st.sampled_from(_ZONES))
@example(when=dt(2023, 3, 26, 2, 30), precision=4, digits=1, offset=None, tz="Europe/Berlin")
@example(when=dt(2023, 10, 29, 2, 30), precision=5, digits=1, offset=None, tz="Europe/Berlin")
def test_datetime_round_trip(when: dt, precision: int, digits: int, offset: int | None, tz: str) -> None:
    """DTM with random precision and zone -> FHIR dateTime -> parsed back: same instant, same precision."""
    fields = [f"{when.year:04d}", f"{when.month:02d}", f"{when.day:02d}", f"{when.hour:02d}",
              f"{when.minute:02d}", f"{when.second:02d}"]
    size = min(precision, 5) + 1
    text = "".join(fields[:size])
    frac = ""
    if precision == 6:
        frac = f"{when.microsecond:06d}"[:digits]
        text += "." + frac
    if offset is not None:
        text += f"{'-' if offset < 0 else '+'}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
    out = fn.datetime(hv(text), ctx(timezone=tz))
    assert out is not None
    if size <= 3:  # a date: YYYY, YYYY-MM or YYYY-MM-DD, no zone
        assert out == "-".join(fields[:size])
        return
    parsed = dt.fromisoformat(out)
    naive = when.replace(microsecond=int(frac.ljust(6, "0")) if frac else 0)
    if size < 6:
        naive = naive.replace(second=0)
    if size < 5:
        naive = naive.replace(minute=0)
    assert parsed.replace(tzinfo=None) == naive  # the wall time written is the wall time sent
    if frac:
        assert out.split(".")[1][:len(frac)] == frac and out.split(".")[1][len(frac)] in "+-"
    if offset is not None:
        assert parsed.utcoffset() == timedelta(minutes=offset)
        assert parsed == naive.replace(tzinfo=timezone(timedelta(minutes=offset)))  # same instant
        return
    z = ZoneInfo(tz)
    expected = z.utcoffset(naive)  # fold=0
    assert expected is not None
    assume(expected % timedelta(minutes=1) == timedelta(0))  # LMT offsets with seconds are rounded
    assert parsed.utcoffset() == expected
    back = parsed.astimezone(z).replace(tzinfo=None)
    imaginary = naive.replace(tzinfo=z).astimezone(timezone.utc).astimezone(z).replace(tzinfo=None) != naive
    if not imaginary:
        assert back == naive  # the instant really is that wall time in the zone


# ============================================================================================
# escaping (hl7.py) as functions see it
# ============================================================================================

def _norm(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


_ENCODINGS = st.sampled_from([DEFAULT_ENCODING, Encoding("|", "#", "~", "!", "@"), Encoding("*", "^", "~", "\\", "&")])


@settings(max_examples=300)
@given(text=st.text(), enc=_ENCODINGS)
@example(text="\\E\\ \\.br\\ \\X41\\ ^&~|\r\n\r", enc=DEFAULT_ENCODING)
def test_escape_round_trip(text: str, enc: Encoding) -> None:
    assert unescape(escape(text, enc), enc) == _norm(text)


@settings(max_examples=300)
@given(texts=st.lists(st.text(), min_size=1, max_size=9), enc=_ENCODINGS)
def test_splitting_never_breaks_an_escaped_delimiter(texts: list[str], enc: Encoding) -> None:
    raw = enc.component.join(escape(t, enc) for t in texts)
    v = V(raw, enc)
    assert len(v.components()) == len(texts)
    for i, t in enumerate(texts, 1):
        assert str(v.c(i)) == _norm(t)
    # the functions read components the same way: XPN family/given, CWE display/original text;
    # a component written `""` is HL7's explicit null, which functions read as empty
    def read(t: str) -> str:
        return "" if escape(t, enc) == '""' else _norm(t)

    name = fn.human_name(v, ctx())
    family, given = read(texts[0]).strip(), [g for g in (read(t).strip() for t in texts[1:3]) if g]
    if family or given or any(read(t).strip() for t in texts[3:6]):
        assert name is not None
        assert name.get("family", "") == family
        assert name.get("given", []) == given
    assert fn.string(v.c(1), ctx(), strip=False) == (read(texts[0]) or None)


@given(text=st.text(min_size=1))
def test_string_is_the_decoded_text(text: str) -> None:
    assert fn.string(hv(escape(text)), ctx()) == (_norm(text).strip() or None)


def test_formatted_text_line_breaks() -> None:
    # OBX-5 FT, V2-to-FHIR MDM_T02 sample (shortened)
    raw = r"Critical Values Entered On:  08/22/2023 2:11 EDT \.br\ Performed On:  08/22/2023\.br\\.br\Lab :   Yes"
    assert fn.obx_value(hv(raw), ctx(), type="FT") == {
        "valueString": "Critical Values Entered On:  08/22/2023 2:11 EDT \n Performed On:  08/22/2023\n\nLab :   Yes"}
    assert fn.obx_value(hv(r"line 1\.sp\line 2"), ctx(), type="FT") == {"valueString": "line 1\nline 2"}
    assert fn.obx_value(hv(r"Na\S\K \T\ Cl\F\x\R\y\E\z"), ctx(), type="TX") == {"valueString": r"Na^K & Cl|x~y\z"}


# ============================================================================================
# codes
# ============================================================================================

class TestCodeableConcept:
    def test_loinc(self) -> None:  # OBX-3, Hl7EncounterFHIRConversionTest testEncounterReferencesObservation
        out = fn.codeable_concept(hv("24467-3^CD3+CD4+ (T4 helper) cells [#/volume] in Blood^LN"), ctx())
        assert out == {"coding": [{"system": LOINC, "code": "24467-3",
                                   "display": "CD3+CD4+ (T4 helper) cells [#/volume] in Blood"}]}
        observation(code=out)

    def test_alternate_triplet_and_unknown_system(self) -> None:  # OBX-3, FHIRConverterTest nte_split
        c = ctx()
        out = fn.codeable_concept(hv("1894^Non-HDL Cholesterol, calc^43396-1^1894"), c)
        assert out == {"coding": [{"code": "1894", "display": "Non-HDL Cholesterol, calc"}]}
        assert c.warnings == ["unknown coding system '43396-1': coding written without a system"]

    def test_hl7_table_and_cvx(self) -> None:  # OBX-5 CWE / CE, VXU messages of the converter tests
        assert fn.codeable_concept(hv("V01^Insured^HL70064"), ctx()) == {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v2-0064", "code": "V01", "display": "Insured"}]}
        assert fn.codeable_concept(hv("107^DTaP, AA1 UF^CVX"), ctx()) == {"coding": [
            {"system": "http://hl7.org/fhir/sid/cvx", "code": "107", "display": "DTaP, AA1 UF"}]}

    def test_text_only(self) -> None:  # DG1-3 "^Ovarian Cancer", FHIRConverterTest nte_split
        assert fn.codeable_concept(hv("^Ovarian Cancer"), ctx()) == {"text": "Ovarian Cancer"}
        assert fn.codeable_concept(hv("^^^^^^^^"), ctx()) is None

    def test_all_components(self) -> None:
        raw = ("2345-7^Glucose [Mass/volume] in Serum^LN^GLU^Глюкоза^99LAB^2.74^1.0^Глюкоза натощак"
               "^1000^Глюкоза (ФСЛИ)^ФСЛИ")
        out = fn.codeable_concept(hv(raw), ctx())
        assert out == {"coding": [
            {"system": LOINC, "version": "2.74", "code": "2345-7", "display": "Glucose [Mass/volume] in Serum"},
            {"version": "1.0", "code": "GLU", "display": "Глюкоза"},
            {"system": "urn:oid:1.2.643.5.1.13.13.11.1080", "code": "1000", "display": "Глюкоза (ФСЛИ)"}],
            "text": "Глюкоза натощак"}
        observation(code=out)

    def test_oid_components_fill_in_unknown_systems(self) -> None:
        raw = "A1^Thing^XLAB" + "^" * 11 + "1.2.643.5.1.13.13.11.1080"
        assert fn.codeable_concept(hv(raw), ctx()) == {"coding": [
            {"system": "urn:oid:1.2.643.5.1.13.13.11.1080", "code": "A1", "display": "Thing"}]}

    def test_escapes_in_components(self) -> None:
        out = fn.codeable_concept(hv(r"NA\T\K^Na\S\K ratio^L"), ctx())
        assert out == {"coding": [{"code": "NA&K", "display": "Na^K ratio"}]}

    def test_duplicate_triplets_collapse(self) -> None:
        assert fn.codeable_concept(hv("718-7^Hgb^LN^718-7^Hgb^LN"), ctx()) == {"coding": [
            {"system": LOINC, "code": "718-7", "display": "Hgb"}]}

    def test_configured_system(self) -> None:
        c = ctx(codesystems=CodeSystems({"99LAB": "urn:oid:1.2.643.5.1.13.13.12.1.77.1.1"}))
        assert fn.codeable_concept(hv("GLU^Глюкоза^99LAB"), c) == {"coding": [
            {"system": "urn:oid:1.2.643.5.1.13.13.12.1.77.1.1", "code": "GLU", "display": "Глюкоза"}]}
        # the memo is per code-system registry: the default registry still has no URI for 99LAB
        assert fn.codeable_concept(hv("GLU^Глюкоза^99LAB"), ctx()) == {"coding": [
            {"code": "GLU", "display": "Глюкоза"}]}

    def test_results_are_fresh_objects(self) -> None:
        a = fn.codeable_concept(hv("718-7^Hgb^LN"), ctx())
        assert a is not None
        a["coding"][0]["code"] = "changed"
        assert fn.codeable_concept(hv("718-7^Hgb^LN"), ctx()) == {"coding": [
            {"system": LOINC, "code": "718-7", "display": "Hgb"}]}


def _fsli_map(name: str, system: str | None, code: str) -> tuple[str | None, str, str | None] | None:
    table = {("lab2fsli", "L", "GLU"): ("urn:oid:1.2.643.5.1.13.13.11.1080", "1000", "Глюкоза"),
             ("lab2fsli", LOINC, "718-7"): ("urn:oid:1.2.643.5.1.13.13.11.1080", "1001", None),
             ("lab2fsli", "LN", "2345-7"): ("urn:oid:1.2.643.5.1.13.13.11.1080", "1002", "")}
    return table.get((name, system or "", code))


class TestConceptMap:
    def test_appends_the_target(self) -> None:
        c = ctx(concept_map=_fsli_map)
        assert fn.codeable_concept(hv("GLU^Глюкоза^L"), c, concept_map="lab2fsli") == {"coding": [
            {"code": "GLU", "display": "Глюкоза"},
            {"system": "urn:oid:1.2.643.5.1.13.13.11.1080", "code": "1000", "display": "Глюкоза"}]}
        assert fn.codeable_concept(hv("X^x^L^718-7^Hgb^LN"), c, concept_map="lab2fsli") == {"coding": [
            {"code": "X", "display": "x"}, {"system": LOINC, "code": "718-7", "display": "Hgb"},
            {"system": "urn:oid:1.2.643.5.1.13.13.11.1080", "code": "1001"}]}

    def test_a_map_written_with_hl7_names(self) -> None:
        assert fn.codeable_concept(hv("2345-7^Glucose^LN"), ctx(concept_map=_fsli_map), concept_map="lab2fsli") == {
            "coding": [{"system": LOINC, "code": "2345-7", "display": "Glucose"},
                       {"system": "urn:oid:1.2.643.5.1.13.13.11.1080", "code": "1002"}]}

    def test_unmapped_policies(self) -> None:
        with pytest.raises(MappingError, match=re.escape("concept map 'lab2fsli' has no target for L|NOPE")):
            fn.codeable_concept(hv("NOPE^?^L"), ctx(concept_map=_fsli_map), concept_map="lab2fsli")
        warn = ctx(concept_map=_fsli_map, unmapped="warn")
        assert fn.codeable_concept(hv("NOPE^?^L"), warn, concept_map="lab2fsli") == {"coding": [
            {"code": "NOPE", "display": "?"}]}
        assert warn.warnings == ["concept map 'lab2fsli' has no target for L|NOPE"]
        quiet = ctx(concept_map=_fsli_map, unmapped="pass")
        assert fn.codeable_concept(hv("NOPE^?^L"), quiet, concept_map="lab2fsli") is not None
        assert quiet.warnings == []

    def test_warnings_about_coded_results_do_not_name_the_result(self) -> None:
        c = ctx(concept_map=_fsli_map, unmapped="warn")
        assert fn.obx_value(hv("27268008^Salmonella^SCT"), c, type="CWE", concept_map="lab2fsli") == {
            "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "27268008",
                                                 "display": "Salmonella"}]}}
        assert c.warnings == ["concept map 'lab2fsli' has no target for a coded value of http://snomed.info/sct"]
        with pytest.raises(MappingError, match="27268008"):  # the error (dead letter) does name it
            fn.obx_value(hv("27268008^Salmonella^SCT"), ctx(concept_map=_fsli_map), type="CWE",
                         concept_map="lab2fsli")

    def test_no_maps_loaded(self) -> None:
        with pytest.raises(MappingError, match="no concept maps are loaded"):
            fn.codeable_concept(hv("GLU^^L"), ctx(), concept_map="lab2fsli")

    def test_obx_value_passes_the_map_on(self) -> None:
        out = fn.obx_value(hv("GLU^Глюкоза^L"), ctx(concept_map=_fsli_map), type="CWE", concept_map="lab2fsli")
        assert out is not None and out["valueCodeableConcept"]["coding"][1]["code"] == "1000"


def test_coding_and_code() -> None:
    assert fn.coding(hv("718-7^Hemoglobin^LN^HGB^Hgb^L"), ctx()) == \
        {"system": LOINC, "code": "718-7", "display": "Hemoglobin"}
    assert fn.coding(hv("^Hemoglobin^LN"), ctx()) is None
    assert fn.code(hv("F^Final^HL70085"), ctx()) == "F"
    assert fn.code(hv("^^^ALT^^L"), ctx()) == "ALT"
    assert fn.code(hv("F"), ctx()) == "F"
    assert fn.code(hv(""), ctx()) is None


# ============================================================================================
# HL7 tables
# ============================================================================================

class TestTables:
    @pytest.mark.parametrize(("hl7", "fhir"), [("F", "female"), ("M", "male"), ("O", "other"), ("U", "unknown"),
                                               ("A", "other"), ("N", "other"), ("f", "female"),
                                               ("Female", "female"), ("male", "male"), ("Ж", "female"),
                                               ("\u041c", "male")])
    def test_gender(self, hl7: str, fhir: str) -> None:
        assert fn.gender(hv(hl7), ctx()) == fhir
        Patient.model_validate({"resourceType": "Patient", "gender": fhir})

    def test_gender_unmapped(self) -> None:
        with pytest.raises(MappingError, match=r"gender .*'X'"):
            fn.gender(hv("X"), ctx())
        c = ctx(unmapped="warn")
        assert fn.gender(hv("X"), c) is None
        assert c.warnings == ["gender (HL7 table 0001): a code without FHIR equivalent"]  # no patient data
        assert fn.gender(hv("X"), ctx(), default="unknown") == "unknown"

    @pytest.mark.parametrize(("hl7", "fhir"), [("F", "final"), ("C", "corrected"), ("X", "cancelled"),
                                               ("P", "preliminary"), ("A", "amended"), ("D", "entered-in-error"),
                                               ("W", "entered-in-error")])
    def test_observation_status(self, hl7: str, fhir: str) -> None:
        assert fn.observation_status(hv(hl7), ctx()) == fhir
        Observation.model_validate({"resourceType": "Observation", "status": fhir, "code": {"text": "x"}})

    @pytest.mark.parametrize("hl7", ["R", "I", "S", "B", "N", "O", "U", "V"])
    def test_observation_status_without_target(self, hl7: str) -> None:
        with pytest.raises(MappingError, match=f"code '{hl7}' has no FHIR equivalent"):
            fn.observation_status(hv(hl7), ctx())
        assert fn.observation_status(hv(hl7), ctx(), default="preliminary") == "preliminary"
        assert fn.observation_status(hv(hl7), ctx(unmapped="pass")) is None

    @pytest.mark.parametrize(("hl7", "fhir"), [("O", "registered"), ("I", "registered"), ("S", "registered"),
                                               ("P", "preliminary"), ("C", "corrected"), ("R", "partial"),
                                               ("F", "final"), ("X", "cancelled")])
    def test_report_status(self, hl7: str, fhir: str) -> None:
        assert fn.report_status(hv(hl7), ctx()) == fhir

    def test_report_status_errors_and_gaps(self) -> None:
        for code in ("Y", "Z"):
            with pytest.raises(MappingError, match="cannot be accepted"):
                fn.report_status(hv(code), ctx(unmapped="pass"))
        assert fn.report_status(hv("A"), ctx(), default="partial") == "partial"
        with pytest.raises(MappingError):
            fn.report_status(hv("A"), ctx())

    def test_interpretation(self) -> None:  # OBX-8 "L", Hl7EncounterFHIRConversionTest
        out = fn.interpretation(hv("L"), ctx())
        assert out == {"coding": [{"system": INTERP, "code": "L", "display": "Low"}]}
        assert fn.interpretation(hv("HH^Critical high^HL70078"), ctx()) == \
            {"coding": [{"system": INTERP, "code": "HH", "display": "Critical high"}]}
        assert fn.interpretation(hv("<"), ctx()) == \
            {"coding": [{"system": INTERP, "code": "<", "display": "Off scale low"}]}
        observation(interpretation=[out])
        with pytest.raises(MappingError, match="'TOX'"):
            fn.interpretation(hv("TOX"), ctx())
        quiet = ctx(unmapped="warn")
        assert fn.interpretation(hv("TOX"), quiet) is None
        assert quiet.warnings == ["interpretation: a code (HL7 table 0078) without FHIR equivalent"]
        assert fn.interpretation(hv("TOX"), ctx(), default="A") == \
            {"coding": [{"system": INTERP, "code": "A", "display": "Abnormal"}]}

    def test_boolean(self) -> None:
        assert fn.boolean(hv("Y"), ctx()) is True
        assert fn.boolean(hv("n"), ctx()) is False
        assert fn.boolean(hv("N^No^HL70136"), ctx()) is False
        quiet = ctx(unmapped="warn")
        assert fn.boolean(hv("maybe"), quiet) is None
        assert quiet.warnings == ["boolean: a code other than Y or N (HL7 table 0136)"]
        assert fn.boolean(hv(""), ctx()) is None
        with pytest.raises(MappingError, match="not Y or N"):
            fn.boolean(hv("maybe"), ctx())


def _csv_rows(name: str) -> list[list[str]]:
    path = TABLES / f"HL7 Concept Map_ {name} - Sheet1.csv"
    if not path.is_file():
        pytest.skip(f"shared corpus table {name} is not available")
    with path.open(encoding="utf-8") as f:
        return [r for r in list(csv.reader(f))[2:] if r and r[0].strip()]


def _csv_map(name: str) -> dict[str, str]:
    return {r[0].strip(): r[6].strip() for r in _csv_rows(name) if r[6].strip()}


@pytest.mark.parametrize(("csv_name", "table"), [
    ("AdministrativeSex", fn.SEX_0001),
    ("ObservationResultStatusCodesInterpretation", fn.OBSERVATION_STATUS_0085),
    ("ResultStatus[Non-Queries]", fn.REPORT_STATUS_0123),
    ("NameType", fn.NAME_USE_0200),
    ("TelecommunicationUseCode", fn.TELECOM_USE_0201),
    ("AddressType[Use]", fn.ADDRESS_USE_0190),
    ("AddressType[Type]", fn.ADDRESS_TYPE_0190),
])
def test_tables_follow_the_shared_csv(csv_name: str, table: dict[str, str]) -> None:
    assert dict(table) == _csv_map(csv_name)


def test_interpretation_table_follows_the_shared_csv() -> None:
    rows = _csv_rows("InterpretationCodes")
    assert dict(fn.INTERPRETATION_0078) == {r[0].strip(): r[8].strip() for r in rows if r[6].strip()}
    assert all(r[9].strip() == INTERP for r in rows if r[6].strip())


def test_equipment_table_follows_the_shared_csv() -> None:
    csv_map = _csv_map("TelecommunicationEquipmentType")
    assert csv_map.pop("CP") == "mobile"  # a contact-point-use code in the CSV: system phone + use mobile
    table = dict(fn.TELECOM_SYSTEM_0202)
    assert table.pop("CP") == "phone"
    assert table == csv_map


def test_identifier_type_table_follows_the_shared_csv() -> None:
    rows = _csv_rows("IdentifierType")
    csv_map = {r[0].strip(): r[8].strip() for r in rows if r[0].strip() != "NNxxx"}
    assert all(r[6].strip() == r[0].strip() and r[9].strip() == V2_0203 for r in rows)
    table = dict(fn.IDENTIFIER_TYPE_0203)
    assert table.pop("PLAC") and table.pop("FILL")  # added: not in the CSV
    assert table == csv_map


def test_yes_no_table_follows_the_shared_csv() -> None:
    assert {k: str(v).lower() for k, v in fn._BOOL.items()} == _csv_map("YesNoIndicator")


# ============================================================================================
# names, identifiers, addresses, telecom
# ============================================================================================

class TestHumanName:
    @pytest.mark.parametrize(("hl7", "fhir"), [
        ("DOE^JANE^", {"family": "DOE", "given": ["JANE"]}),  # PID-5, encounter tests
        ("Moose^Mickey^J^III^^^", {"family": "Moose", "given": ["Mickey", "J"], "suffix": ["III"]}),  # telcom
        ("JOHN^DOE^TEST^JR.^^^D", {"use": "usual", "family": "JOHN", "given": ["DOE", "TEST"], "suffix": ["JR."]}),
        ("Иванов^Иван^Петрович^^^^L", {"use": "official", "family": "Иванов", "given": ["Иван", "Петрович"]}),
        ("Smith&van&Smith^Anna^^^Dr^PhD^M", {"use": "maiden", "family": "Smith", "given": ["Anna"],
                                             "prefix": ["Dr"], "suffix": ["PhD"]}),
        ("Petrova^Olga^^^^^B", {"family": "Petrova", "given": ["Olga"]}),  # B (birth) has no name-use
        ("^^^^^^L", None), ("", None),
    ])
    def test_xpn(self, hl7: str, fhir: dict[str, Any] | None) -> None:
        assert fn.human_name(hv(hl7), ctx()) == fhir

    def test_period(self) -> None:
        raw = "Petrova^Olga^^^^^L^^^^^20100101^20200101"
        assert fn.human_name(hv(raw), ctx()) == {"use": "official", "family": "Petrova", "given": ["Olga"],
                                                 "period": {"start": "2010-01-01", "end": "2020-01-01"}}
        out = fn.human_name(hv("Petrova^Olga^^^^^L^^^20100101&20200101"), ctx())
        assert out is not None and out["period"] == {"start": "2010-01-01", "end": "2020-01-01"}


class TestIdentifier:
    def test_mr_without_authority(self) -> None:  # PID-3, encounter tests
        out = fn.identifier(hv("1234^^^^MR"), ctx())
        assert out == {"type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
                       "value": "1234"}

    def test_authority_oid(self) -> None:  # PID-3, hl7apy test_validation
        out = fn.identifier(hv("1010110909194822^^^GATEWAY_IL&1.3.6.1.4.1.21367.2011.2.5.17&ISO^PK"), ctx())
        assert out == {"type": {"text": "PK"}, "system": "urn:oid:1.3.6.1.4.1.21367.2011.2.5.17",
                       "value": "1010110909194822"}

    def test_unresolved_namespace_becomes_the_assigner(self) -> None:  # PID-3, MDM_T02 sample
        out = fn.identifier(hv("000010004^^^ST01A^MR"), ctx())
        assert out == {"type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
                       "value": "000010004", "assigner": {"display": "ST01A"}}

    def test_configured_namespace(self) -> None:
        c = ctx(codesystems=CodeSystems({"ST01A": "http://hospital.example.ru/mrn"}))
        out = fn.identifier(hv("000010004^^^ST01A^MR"), c)
        assert out is not None and out["system"] == "http://hospital.example.ru/mrn"

    def test_args(self) -> None:
        out = fn.identifier(hv("42"), ctx(), system="http://lab.example.ru/pid", type="PI", use="usual")
        assert out == {"use": "usual", "type": {"coding": [{"system": V2_0203, "code": "PI",
                                                            "display": "Patient internal identifier"}]},
                       "system": "http://lab.example.ru/pid", "value": "42"}

    def test_check_digit_and_period(self) -> None:
        out = fn.identifier(hv("12345^6^M10^^MR^^20200101^20301231"), ctx())
        assert out == {
            "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/identifier-checkDigit", "valueString": "6"},
                {"url": "http://hl7.org/fhir/StructureDefinition/namingsystem-checkDigit", "valueString": "M10"}],
            "type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
            "value": "12345", "period": {"start": "2020-01-01", "end": "2030-12-31"}}

    @pytest.mark.parametrize("raw", [
        "112-233-445 95^^^ПФР&1.2.643.100.3&ISO^SNILS",
        "11223344595^^^^СНИЛС",
        "112-233-445 95^^^^SNILS",
        "112 233 445 95^^^&1.2.643.100.3&ISO",
        "11223344595^^^СНИЛС",
        "11223344595^^^http://fhir.ru/core/systems/snils",
    ])
    def test_snils(self, raw: str) -> None:
        out = fn.identifier(hv(raw), ctx())
        assert out is not None
        assert out["system"] == SNILS and out["value"] == "11223344595"
        Patient.model_validate({"resourceType": "Patient", "identifier": [out]})

    def test_bad_snils_names_no_digits(self) -> None:
        with pytest.raises(MappingError) as err:
            fn.identifier(hv("112-233-445 96^^^^SNILS"), ctx())
        assert "СНИЛС" in str(err.value) and "check number" in str(err.value)
        assert "112" not in str(err.value) and "96" not in str(err.value)
        with pytest.raises(MappingError, match="11 digits"):
            fn.identifier(hv("1234^^^^СНИЛС"), ctx())

    def test_enp(self) -> None:
        out = fn.identifier(hv("7700 0000 0000 0017^^^^ENP"), ctx())
        assert out == {"type": {"text": "ENP"}, "system": "urn:oid:1.2.643.5.1.13.2.1.1.735",
                       "value": "7700000000000017"}
        with pytest.raises(MappingError, match="ЕНП"):
            fn.identifier(hv("770000000000001^^^^ЕНП"), ctx())

    def test_empty_value(self) -> None:
        assert fn.identifier(hv("^^^LAB^MR"), ctx()) is None

    def test_ei(self) -> None:
        out = fn.identifier_ei(hv("ORD-1001^LIS^1.2.643.5.1.13.13.12.1.77.1^ISO"), ctx(), type="FILL")
        assert out == {"type": {"coding": [{"system": V2_0203, "code": "FILL", "display": "Filler Identifier"}]},
                       "system": "urn:oid:1.2.643.5.1.13.13.12.1.77.1", "value": "ORD-1001"}
        assert fn.identifier_ei(hv("142324567^YOUR_EHR"), ctx()) == {  # ORC-2, converter tests
            "value": "142324567", "assigner": {"display": "YOUR_EHR"}}
        assert fn.identifier_ei(hv("142324567^YOUR_EHR"), ctx(), system="urn:oid:1.2.3") == {
            "system": "urn:oid:1.2.3", "value": "142324567"}
        out = fn.identifier_ei(hv("A1^^0a8a1752-e336-43e1-bf7f-0c8f6f437ca3^UUID"), ctx())
        assert out is not None and out["system"] == "urn:uuid:0a8a1752-e336-43e1-bf7f-0c8f6f437ca3"


def test_placer_filler_and_annotation() -> None:
    assert fn.placer_identifier(hv("142324567^YOUR_EHR"), ctx()) == {  # ORC-2, converter tests
        "type": {"coding": [{"system": V2_0203, "code": "PLAC", "display": "Placer Identifier"}]},
        "value": "142324567", "assigner": {"display": "YOUR_EHR"}}
    assert fn.filler_identifier(hv("R-778^LIS^1.2.643.5.1.13.13.12.1.77.1^ISO"), ctx()) == {
        "type": {"coding": [{"system": V2_0203, "code": "FILL", "display": "Filler Identifier"}]},
        "system": "urn:oid:1.2.643.5.1.13.13.12.1.77.1", "value": "R-778"}
    note = fn.annotation(hv(r"Гемолиз\.br\повторить \T\ уточнить"), ctx(), time=hv("202308220211"))
    assert note == {"text": "Гемолиз\nповторить & уточнить", "time": "2023-08-22T02:11:00+03:00"}
    observation(note=[note])
    assert fn.annotation(hv("\\.br\\"), ctx()) is None


class TestAddress:
    @pytest.mark.parametrize(("hl7", "fhir"), [
        ("9999^^CITY^STATE^ZIP^CAN", {"line": ["9999"], "city": "CITY", "state": "STATE", "postalCode": "ZIP",
                                      "country": "CAN"}),  # PID-11, MDM_T02 sample
        ("19 Raymond St^Route3^Albany^NY^56321^USA^P",
         {"line": ["19 Raymond St", "Route3"], "city": "Albany", "state": "NY", "postalCode": "56321",
          "country": "USA"}),  # P (permanent) has no use/type
        ("3003 TESTING RD LOT 92^^BOULDER^CO^12345-2144^US^P^^BOULDER",
         {"line": ["3003 TESTING RD LOT 92"], "city": "BOULDER", "district": "BOULDER", "state": "CO",
          "postalCode": "12345-2144", "country": "US"}),
        ("ул. Ленина&Ленина&1^кв. 5^Москва^Москва^101000^RUS^H",
         {"use": "home", "line": ["ул. Ленина", "Ленина", "1", "кв. 5"], "city": "Москва", "state": "Москва",
          "postalCode": "101000", "country": "RUS"}),
        ("а/я 10^^Казань^^420000^RUS^M", {"type": "postal", "line": ["а/я 10"], "city": "Казань",
                                          "postalCode": "420000", "country": "RUS"}),
        ("^^^^^^H", None),
    ])
    def test_xad(self, hl7: str, fhir: dict[str, Any] | None) -> None:
        assert fn.address(hv(hl7), ctx()) == fhir

    def test_district_and_period(self) -> None:
        raw = "Main 1^^Town^^^^B^^077&Some County^^^20200101&20211231"
        assert fn.address(hv(raw), ctx()) == {"use": "work", "line": ["Main 1"], "city": "Town",
                                              "district": "Some County",
                                              "period": {"start": "2020-01-01", "end": "2021-12-31"}}


class TestContactPoint:
    def test_corpus_patient_telecom(self) -> None:  # PID-13/14, Hl7TelecomFHIRConversionTest
        pid13 = ("^PRN^PH^^22^555^1111313^^^^^^^^^^^3~^PRS^CP^^22^555^2221313^^^^^^^^^^^1~"
                 "^NET^X.400^email.test@gmail.com^^^^^^^^^^^^^^2")
        home, mobile, email = pid13.split("~")
        ext = "http://hl7.org/fhir/StructureDefinition/contactpoint-"
        assert fn.contact_point(hv(home), ctx()) == {
            "extension": [{"url": ext + "country", "valueString": "22"}, {"url": ext + "area", "valueString": "555"},
                          {"url": ext + "local", "valueString": "1111313"}],
            "system": "phone", "value": "+22 555 1111313", "use": "home", "rank": 3}
        assert fn.contact_point(hv(mobile), ctx()) == {
            "extension": [{"url": ext + "country", "valueString": "22"}, {"url": ext + "area", "valueString": "555"},
                          {"url": ext + "local", "valueString": "2221313"}],
            "system": "phone", "value": "+22 555 2221313", "use": "mobile", "rank": 1}
        assert fn.contact_point(hv(email), ctx()) == {"system": "email", "value": "email.test@gmail.com", "rank": 2}
        work = fn.contact_point(hv("^WPN^PH^^^555^1111414^889"), ctx())
        assert work == {"extension": [{"url": ext + "area", "valueString": "555"},
                                      {"url": ext + "local", "valueString": "1111414"},
                                      {"url": ext + "extension", "valueString": "889"}],
                        "system": "phone", "value": "555 1111414 X889", "use": "work"}
        assert fn.contact_point(hv("^WPN^Internet^moose.mickey@buisness.com^^^^^^^^^^^^^^4"), ctx()) == \
            {"system": "email", "value": "moose.mickey@buisness.com", "use": "work", "rank": 4}
        Patient.model_validate({"resourceType": "Patient", "telecom": [
            fn.contact_point(hv(r), ctx()) for r in (home, mobile, email)]})

    def test_legacy_number_without_type(self) -> None:  # PID-13 "(866)845-0900", MDM_T02 sample
        out = fn.contact_point(hv("(866)845-0900"), ctx())
        assert out == {"_system": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                                  "valueCode": "unknown"}]},
                       "value": "(866)845-0900"}
        Patient.model_validate({"resourceType": "Patient", "telecom": [out]})

    def test_other_forms(self) -> None:
        assert fn.contact_point(hv("^^^ivanov@example.ru"), ctx()) == {"system": "email", "value": "ivanov@example.ru"}
        assert fn.contact_point(hv("+7(495)1234567^PRN^FX"), ctx()) == \
            {"system": "fax", "value": "+7(495)1234567", "use": "home"}
        assert fn.contact_point(hv("^^CP^^^^^^^^^+79161234567"), ctx()) == \
            {"system": "phone", "value": "+79161234567", "use": "mobile"}
        assert fn.contact_point(hv("123^^BP"), ctx()) == {"system": "pager", "value": "123"}
        assert fn.contact_point(hv("123^^ZZ"), ctx()) == {"system": "other", "value": "123"}
        assert fn.contact_point(hv("^PRN^PH"), ctx()) is None


# ============================================================================================
# quantities, observation values, reference ranges
# ============================================================================================

@pytest.mark.parametrize(("unit", "ok"), [
    ("mmol/L", True), ("g/dL", True), ("mg/dl", True), ("10*9/L", True), ("10*12/L", True), ("10^9/L", True),
    ("{Cells}/uL", True), ("%", True), ("fL", True), ("pg", True), ("U/L", True), ("mm[Hg]", True),
    ("cm[H2O]", True), ("mL/min/{1.73_m2}", True), ("kg/m2", True), ("/[HPF]", True), ("[IU]/L", True),
    ("m[IU]/mL", True), ("mm/h", True), ("Cel", True), ("1", True), ("{ratio}", True), ("10*-3", True),
    ("(mg/dL)/h", True), ("s", True),
    ("gm/dl", False), ("mIU/mL", False), ("K/uL", False), ("mEq/L", False), ("cells/mcL", False), ("sec", False),
    ("ммоль/л", False), ("mg /dL", False), ("", False), ("mg//dL", False), ("mg/", False), ("(mg", False),
    ("mg)", False), ("x10E3/uL", False), ("10", False),
])
def test_looks_ucum(unit: str, ok: bool) -> None:
    assert fn.looks_ucum(unit) is ok


class TestQuantity:
    @pytest.mark.parametrize(("value", "unit", "fhir"), [
        ("7.5", "g/dL^^UCUM", {"value": 7.5, "unit": "g/dL", "system": UCUM, "code": "g/dL"}),
        ("180", "mg/dL", {"value": 180, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}),  # FHIRConverterTest
        ("7.5", "gm/dl", {"value": 7.5, "unit": "gm/dl"}),  # OBX-6 not UCUM, PPR_PC1 converter test
        ("440", "{Cells}/uL^cells per microliter^UCUM",
         {"value": 440, "unit": "cells per microliter", "system": UCUM, "code": "{Cells}/uL"}),
        ("5,6", "ммоль/л", {"value": 5.6, "unit": "ммоль/л", "system": UCUM, "code": "mmol/L"}),
        ("4.5", r"10\S\9/л", {"value": 4.5, "unit": "10^9/л", "system": UCUM, "code": "10*9/L"}),
        ("4.5", "10^9/л", {"value": 4.5, "unit": "9/л"}),  # unescaped ^ splits: CWE.1 "10", CWE.2 "9/л"
        ("12", "Ед/л", {"value": 12, "unit": "Ед/л", "system": UCUM, "code": "U/L"}),
        ("1", "tab^tablet^99UNITS", {"value": 1, "unit": "tablet"}),
        ("1", "TAB^tablet^http://example.org/units", {"value": 1, "unit": "tablet",
                                                       "system": "http://example.org/units", "code": "TAB"}),
        ("-0.5", None, {"value": -0.5}),
        ("+3", "", {"value": 3}),
    ])
    def test_nm_with_unit(self, value: str, unit: str | None, fhir: dict[str, Any]) -> None:
        u = hv(unit) if unit is not None else None
        assert fn.quantity(hv(value), ctx(), unit=u) == fhir
        observation(valueQuantity=fhir)

    def test_cq(self) -> None:
        assert fn.quantity(hv("10^mg&milligram&UCUM"), ctx()) == \
            {"value": 10, "unit": "milligram", "system": UCUM, "code": "mg"}
        assert fn.quantity(hv("2^d"), ctx()) == {"value": 2, "unit": "d", "system": UCUM, "code": "d"}

    def test_constant_unit_string(self) -> None:
        assert fn.quantity("70", ctx(), unit="kg") == {"value": 70, "unit": "kg", "system": UCUM, "code": "kg"}

    @pytest.mark.parametrize("bad", ["abc", "1e5", "1.2.3", "1 000", "nan", "inf", "٣", "1_000", ".", "--1"])
    def test_bad_numbers(self, bad: str) -> None:
        with pytest.raises(MappingError, match="not a number"):
            fn.quantity(hv(bad), ctx())
        with pytest.raises(MappingError):
            fn.decimal(hv(bad), ctx())


class TestObxValue:
    def test_sn_equals(self) -> None:  # OBX-5/6, Hl7EncounterFHIRConversionTest
        out = fn.obx_value(hv("=^440"), ctx(), type=hv("SN"), units=hv("{Cells}/uL^cells per microliter^UCUM"))
        assert out == {"valueQuantity": {"value": 440, "unit": "cells per microliter", "system": UCUM,
                                         "code": "{Cells}/uL"}}
        observation(**out)

    @pytest.mark.parametrize(("sn", "fhir"), [
        ("<^0.5", {"valueQuantity": {"value": 0.5, "comparator": "<", "unit": "mg/L", "system": UCUM,
                                     "code": "mg/L"}}),
        (">=^10", {"valueQuantity": {"value": 10, "comparator": ">=", "unit": "mg/L", "system": UCUM,
                                     "code": "mg/L"}}),
        ("^10^-^20", {"valueRange": {"extension": [{"url": ORIGINAL_TEXT, "valueString": "10 - 20"}],
                                     "low": {"value": 10, "unit": "mg/L", "system": UCUM, "code": "mg/L"},
                                     "high": {"value": 20, "unit": "mg/L", "system": UCUM, "code": "mg/L"}}}),
        ("^1^:^128", {"valueRatio": {"extension": [{"url": ORIGINAL_TEXT, "valueString": "1 : 128"}],
                                     "numerator": {"value": 1, "unit": "mg/L", "system": UCUM, "code": "mg/L"},
                                     "denominator": {"value": 128, "unit": "mg/L", "system": UCUM,
                                                     "code": "mg/L"}}}),
        ("<^1^/^2", {"valueRatio": {"extension": [{"url": ORIGINAL_TEXT, "valueString": "< 1 / 2"}],
                                    "numerator": {"value": 1, "comparator": "<", "unit": "mg/L", "system": UCUM,
                                                  "code": "mg/L"},
                                    "denominator": {"value": 2, "unit": "mg/L", "system": UCUM, "code": "mg/L"}}}),
        ("^2^+", {"valueString": "2 + mg/L"}),
        ("<>^5", {"valueString": "<> 5 mg/L"}),
        ("~^5", {"valueString": "~ 5 mg/L"}),
        ("^abc", {"valueString": "abc mg/L"}),
        ("^5^x", {"valueQuantity": {"extension": [{"url": ORIGINAL_TEXT, "valueString": "5 x"}], "value": 5,
                                    "unit": "mg/L", "system": UCUM, "code": "mg/L"}}),
    ])
    def test_sn(self, sn: str, fhir: dict[str, Any]) -> None:
        assert fn.obx_value(hv(sn), ctx(), type="SN", units=hv("mg/L^^UCUM")) == fhir
        observation(**fhir)

    def test_nm(self) -> None:
        assert fn.obx_value(hv("7.5"), ctx(), type=hv("NM"), units=hv("gm/dl")) == \
            {"valueQuantity": {"value": 7.5, "unit": "gm/dl"}}  # PPR_PC1 converter test
        assert fn.obx_value(hv("3"), ctx(), type="NM") == {"valueQuantity": {"value": 3}}  # VXU dose number
        c = ctx()
        assert fn.obx_value(hv("<0.5"), c, type="NM", units=hv("mmol/L")) == {"valueQuantity": {
            "value": 0.5, "comparator": "<", "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}}
        assert c.warnings == ["obx_value: an NM value carries a comparator; read as SN"]
        with pytest.raises(MappingError, match="NM value 'positive' is not a number"):
            fn.obx_value(hv("positive"), ctx(), type="NM")

    def test_text_and_codes(self) -> None:
        assert fn.obx_value(hv("This is content"), ctx(), type="ST") == {"valueString": "This is content"}
        assert fn.obx_value(hv("ECHOCARDIOGRAPHIC REPORT"), ctx(), type="TX") == \
            {"valueString": "ECHOCARDIOGRAPHIC REPORT"}
        out = fn.obx_value(hv("107^DTaP, AA1 UF^CVX"), ctx(), type="CE")  # VXU converter tests
        assert out == {"valueCodeableConcept": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "107",
                                                            "display": "DTaP, AA1 UF"}]}}
        observation(**out)
        assert fn.obx_value(hv("POS"), ctx(), type="IS") == {"valueCodeableConcept": {"coding": [{"code": "POS"}]}}

    def test_dates_and_times(self) -> None:
        assert fn.obx_value(hv("20170303"), ctx(), type="TS") == {"valueDateTime": "2017-03-03"}  # VXU
        assert fn.obx_value(hv("20200802124455"), ctx(), type="DTM") == \
            {"valueDateTime": "2020-08-02T12:44:55+03:00"}
        assert fn.obx_value(hv("1230"), ctx(), type="TM") == {"valueTime": "12:30:00"}
        out = fn.obx_value(hv("20200101^20200131"), ctx(), type="DR")
        assert out == {"valuePeriod": {"start": "2020-01-01", "end": "2020-01-31"}}
        observation(**out)
        out = fn.obx_value(hv("3.5^5.5"), ctx(), type="NR")
        assert out == {"valueRange": {"low": {"value": 3.5}, "high": {"value": 5.5}}}
        observation(**out)

    def test_unsupported_types(self) -> None:
        with pytest.raises(MappingError, match="value type 'ED' is not supported"):
            fn.obx_value(hv("^application^pdf^Base64^JVBERi0="), ctx(), type="ED")
        c = ctx(unmapped="warn")
        assert fn.obx_value(hv("x"), c, type="ED") is None
        assert fn.obx_value(hv("x"), c, type="") is None
        assert c.warnings == ["obx_value: value type 'ED' is not supported",
                              "obx_value: OBX-2 (value type) is empty but OBX-5 is valued"]

    def test_empty_value(self) -> None:
        for t in ("NM", "SN", "ST", "CWE", "DT", "TM", "FT"):
            assert fn.obx_value(hv(""), ctx(), type=t) is None
            assert fn.obx_value(hv('""'), ctx(), type=t) is None


class TestReferenceRange:
    @pytest.mark.parametrize(("text", "low", "high"), [
        ("3.5-5.5", 3.5, 5.5), ("5.9-8.4", 5.9, 8.4),  # PPR_PC1 converter test
        ("649-1346 cells/mcL", 649, 1346),  # Hl7EncounterFHIRConversionTest
        ("<130 optimal", None, 130),  # FHIRConverterTest nte_split
        (">10", 10, None), ("<=5", None, 5), (">= 1,5", 1.5, None), ("3,5 - 5,5", 3.5, 5.5),
        ("-1--0.5", -1, -0.5), ("0.1..0.4", 0.1, 0.4), ("≤ 7", None, 7),
        ("negative", None, None), ("см. комментарий", None, None), ("10-abc", None, None),
    ])
    def test_parse(self, text: str, low: float | None, high: float | None) -> None:
        out = fn.reference_range(hv(text), ctx(), units=hv("mmol/L^^UCUM"))
        expected: dict[str, Any] = {}
        q = {"unit": "mmol/L", "system": UCUM, "code": "mmol/L"}
        if low is not None:
            expected["low"] = {"value": low, **q}
        if high is not None:
            expected["high"] = {"value": high, **q}
        expected["text"] = text
        assert out == expected
        observation(referenceRange=[out])

    def test_without_unit(self) -> None:
        assert fn.reference_range(hv("3.5-5.5"), ctx()) == {"low": {"value": 3.5}, "high": {"value": 5.5},
                                                            "text": "3.5-5.5"}
        assert fn.reference_range(hv(""), ctx()) is None


# ============================================================================================
# scalars
# ============================================================================================

def test_scalars() -> None:
    c = ctx()
    assert fn.decimal(hv("7.5"), c) == 7.5 and fn.decimal(hv("180"), c) == 180 and fn.decimal(hv(" 0,25 "), c) == 0.25
    assert fn.integer(hv("3"), c) == 3 and fn.integer(hv("-7"), c) == -7
    for bad in ("2.5", "x", "2147483648"):
        with pytest.raises(MappingError):
            fn.integer(hv(bad), c)
    assert fn.string(hv("  Smith \\T\\ Sons "), c) == "Smith & Sons"
    assert fn.string(hv("  x "), c, strip=False) == "  x "
    assert fn.string("plain \\ text", c) == "plain \\ text"
    assert fn.uri(hv("LAB^1.2.643.5.1.13.13.12.1.77.123^ISO"), c) == "urn:oid:1.2.643.5.1.13.13.12.1.77.123"
    assert fn.uri(hv("MIICEHRApplication"), c) == "MIICEHRApplication"  # MSH-3, telcom test: HD.1 as is
    assert fn.uri(hv("^0a8a1752-e336-43e1-bf7f-0c8f6f437ca3^UUID"), c) == \
        "urn:uuid:0a8a1752-e336-43e1-bf7f-0c8f6f437ca3"
    assert fn.uri(hv("1.2.643.5.1.13"), c) == "urn:oid:1.2.643.5.1.13"
    assert fn.uri(hv("^http://lab.example.ru/fhir^URI"), c) == "http://lab.example.ru/fhir"
    assert fn.uri(hv("СНИЛС"), c) == "СНИЛС"
    assert fn.uri(hv("СНИЛС^^"), c) == SNILS
    with pytest.raises(MappingError, match="blanks"):
        fn.uri(hv("not a uri"), c)


# ============================================================================================
# СНИЛС property (independent check-number oracle from domain.md)
# ============================================================================================

def _oracle_check(digits9: str) -> str:
    s = sum(int(d) * (9 - i) for i, d in enumerate(digits9))  # weights 9..1
    if s < 100:
        return f"{s:02d}"
    if s in (100, 101):
        return "00"
    r = s % 101
    return "00" if r == 100 else f"{r:02d}"


@settings(max_examples=300)
@given(number=st.integers(0, 999_999_999), style=st.sampled_from(["plain", "dashed", "spaced"]))
@example(number=112233445, style="dashed")
def test_snils_with_its_check_number_passes(number: int, style: str) -> None:
    d = f"{number:09d}"
    check = _oracle_check(d)
    text = {"plain": d + check, "dashed": f"{d[:3]}-{d[3:6]}-{d[6:]} {check}",
            "spaced": f"{d[:3]} {d[3:6]} {d[6:]} {check}"}[style]
    out = fn.identifier(hv(text + "^^^^SNILS"), ctx())
    assert out is not None and out["system"] == SNILS and out["value"] == d + check


@settings(max_examples=300)
@given(number=st.integers(1_001_999, 999_999_999), wrong=st.integers(0, 99))
def test_snils_with_a_wrong_check_number_fails(number: int, wrong: int) -> None:
    d = f"{number:09d}"
    assume(f"{wrong:02d}" != _oracle_check(d))
    with pytest.raises(MappingError, match="check number"):
        fn.identifier(hv(f"{d}{wrong:02d}^^^&1.2.643.100.3&ISO"), ctx())


# ============================================================================================
# whole corpus messages
# ============================================================================================

def _corpus_message(rel: str) -> Message:
    path = CORPUS / rel
    if not path.is_file():
        pytest.skip(f"shared corpus file {rel} is not available")
    return Message(path.read_text(encoding="utf-8"))


def test_corpus_oru_observation_validates() -> None:
    msg = _corpus_message("hl7v2-fhir-converter/extracted_from_java_tests/"
                          "Hl7EncounterFHIRConversionTest__testEncounterReferencesObservation__25.hl7")
    obx = msg.segments[msg.by_name["OBX"][0]]
    c = ctx()

    def field(n: int) -> V | None:
        values = msg.values(obx, n)
        return values[0] if values else None

    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": fn.observation_status(field(11), c),
        "code": fn.codeable_concept(field(3), c),
        **(fn.obx_value(field(5), c, type=field(2), units=field(6)) or {}),
        "interpretation": [fn.interpretation(field(8), c)],
        "referenceRange": [fn.reference_range(field(7), c, units=field(6))],
    }
    assert resource == {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "24467-3",
                             "display": "CD3+CD4+ (T4 helper) cells [#/volume] in Blood"}]},
        "valueQuantity": {"value": 440, "unit": "cells per microliter", "system": UCUM, "code": "{Cells}/uL"},
        "interpretation": [{"coding": [{"system": INTERP, "code": "L", "display": "Low"}]}],
        "referenceRange": [{"low": {"value": 649, "unit": "cells per microliter", "system": UCUM,
                                    "code": "{Cells}/uL"},
                            "high": {"value": 1346, "unit": "cells per microliter", "system": UCUM,
                                     "code": "{Cells}/uL"},
                            "text": "649-1346 cells/mcL"}],
    }
    Observation.model_validate(resource)
    assert c.warnings == []


def test_corpus_patient_validates() -> None:
    msg = _corpus_message("hl7v2-fhir-converter/extracted_from_java_tests/"
                          "Hl7TelecomFHIRConversionTest__patient_telcom_test__01.hl7")
    pid = msg.segments[msg.by_name["PID"][0]]
    c = ctx()
    patient = {
        "resourceType": "Patient",
        "identifier": [fn.identifier(v, c) for v in msg.values(pid, 3)],
        "name": [fn.human_name(v, c) for v in msg.values(pid, 5)],
        "birthDate": fn.date(msg.values(pid, 7)[0], c),
        "gender": fn.gender(msg.values(pid, 8)[0], c),
        "telecom": [fn.contact_point(v, c) for n in (13, 14) for v in msg.values(pid, n)],
    }
    Patient.model_validate(patient)
    assert patient["identifier"] == [{"type": {"coding": [{"system": V2_0203, "code": "MR",
                                                           "display": "Medical record number"}]},
                                      "value": "12345678"}]
    assert patient["birthDate"] == "2006-05-04" and patient["gender"] == "male"
    telecom = [fn.contact_point(v, c) or {} for n in (13, 14) for v in msg.values(pid, n)]
    assert [t["system"] for t in telecom] == ["phone", "phone", "email", "phone", "email", "email"]
    assert [t.get("use") for t in telecom] == ["home", "mobile", None, "work", "work", "work"]


# ============================================================================================
# the registry
# ============================================================================================

def test_registry_names_and_docs() -> None:
    assert fn.names() == sorted(FUNCTIONS)
    assert {"date", "datetime", "instant", "codeable_concept", "coding", "code", "human_name", "identifier",
            "identifier_ei", "address", "contact_point", "quantity", "obx_value", "interpretation",
            "observation_status", "report_status", "gender", "decimal", "integer", "string", "boolean", "uri",
            "reference_range"} <= set(FUNCTIONS)
    for name, spec in FUNCTIONS.items():
        assert spec.name == name and callable(spec.fn)
        assert "Example" in spec.doc, name
        assert spec.summary, name
        assert spec.returns, name


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_omits_empty_values(name: str) -> None:
    spec = FUNCTIONS[name]
    args = {"type": "ST"} if name == "obx_value" else {}
    for empty in (None, "", '""', hv(""), hv('""')):
        assert spec.fn(empty, ctx(), **args) is None, (name, empty)


def test_check_args() -> None:
    spec = FUNCTIONS["obx_value"]
    assert spec.check_args({"type": "NM", "units": "mmol/L"}) == []
    problems = spec.check_args({"unit": "x"})
    assert problems == [("function 'obx_value' has no argument 'unit'", "did you mean 'units'?"),
                        ("function 'obx_value' needs argument 'type'", "the value type, OBX-2")]
    assert FUNCTIONS["observation_status"].check_args({"default": "finale"}) == [
        ("observation_status: argument 'default' must be one of registered, preliminary, final, amended, "
         "corrected, cancelled, entered-in-error, unknown", "did you mean 'final'?")]
    assert FUNCTIONS["string"].check_args({"strip": "yes"}) == [("string: argument 'strip' must be true or false", "")]
    assert FUNCTIONS["date"].check_args({"x": 1}) == [("function 'date' has no argument 'x'", "arguments: none")]


def test_public_surface() -> None:
    assert set(FUNCTIONS) <= set(fn.__all__)
    assert all(hasattr(fn, name) for name in fn.__all__)


def test_suggest() -> None:
    assert fn.suggest("codeable_concep") == "did you mean 'codeable_concept'?"
    assert fn.suggest("observation_stat") == "did you mean 'observation_status'?"
    assert fn.suggest("zzzz") == ""
    assert fn.spec("date") is FUNCTIONS["date"] and fn.spec("nope") is None


# --------------------------------------------------------------------------------------------
# FunctionSpec.raw: what generated code calls, the same conversion as the public function
# --------------------------------------------------------------------------------------------

RAW = sorted(n for n, s in FUNCTIONS.items() if s.raw is not None)


@pytest.mark.parametrize("name", RAW)
def test_raw_variant_takes_the_spec_arguments_in_order(name: str) -> None:
    import inspect

    params = inspect.signature(FUNCTIONS[name].raw).parameters  # type: ignore[arg-type]
    assert list(params)[:4] == ["raw", "enc", "level", "ctx"]
    assert list(params)[4:] == list(FUNCTIONS[name].args)
    assert all(p.default is None for p in list(params.values())[4:])


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except MappingError as exc:
        return "error", str(exc)


_RAW_ARGS: dict[str, list[dict[str, Any]]] = {
    "obx_value": [{"type": V(t, E)} for t in ("NM", "SN", "ST", "FT", "CWE", "ID", "DTM", "TM", "NR", "DR", "ED")]
    + [{"type": V("NM", E), "units": V("mmol/L^^UCUM", E)}, {"type": "CWE", "concept_map": "m"}],
    "reference_range": [{}, {"units": V("mmol/L^mmol/L^UCUM", E)}],
    "codeable_concept": [{}, {"concept_map": "m"}],
    "identifier": [{}, {"system": "urn:oid:1.2.3", "type": "MR", "use": "official"}],
    "identifier_ei": [{}, {"system": "urn:oid:1.2.3", "type": "PLAC"}],
    "placer_identifier": [{}, {"use": "usual"}],
    "filler_identifier": [{}, {"system": "urn:oid:1.2.3"}],
    "annotation": [{}, {"time": V("20240501093000", E)}],
    "interpretation": [{}, {"default": "N"}],
    "observation_status": [{}, {"default": "final"}],
    "report_status": [{}, {"default": "final"}],
    "gender": [{}, {"default": "unknown"}],
    "string": [{}, {"strip": False}, {"strip": True}],
}
_HL7_TEXT = st.text(alphabet="AZaz09.-+<>:/ ^&~\\\"FSTRXEбЖ", max_size=40) | st.sampled_from([
    "2345-7^Glucose^LN", "20240501093000", "202405010930+0300", "19800501", "F", "M", "H", "3.9-6.1", "5.4",
    "<0.5", "11223344595^^^&1.2.643.100.3&ISO^SNILS", "MRN1^^^HOSP^MR", "PL1^EHR^1.2.3^ISO", "Иванов^Иван",
    "ул. Ленина 1^^Москва^^101000^RU", "^PRN^PH^^7^495^1234567", "A \\T\\ B\\.br\\C", '""', ""])


@settings(max_examples=400)
@given(name=st.sampled_from(RAW), text=_HL7_TEXT, level=st.sampled_from([0, 1, 2]), pick=st.integers(0, 20))
def test_raw_variant_is_the_public_function(name: str, text: str, level: int, pick: int) -> None:
    """Same result, same error, same warnings, for any encoded text at any level and the args."""
    spec = FUNCTIONS[name]
    choices = _RAW_ARGS.get(name, [{}])
    kw = choices[pick % len(choices)]

    def lookup(_map: str, system: str | None, code: str) -> tuple[str, str, str] | None:
        return ("http://x", code.upper(), "X") if code[:1].isdigit() else None

    def ctx() -> FnContext:
        return FnContext(concept_map=lookup, unmapped="warn", warnings=[], memo={})
    c1, c2 = ctx(), ctx()
    want = _outcome(lambda: spec.fn(V(text, E, level), c1, **kw))
    got = _outcome(lambda: spec.raw(text, E, level, c2, *(kw.get(a) for a in spec.args)))  # type: ignore[misc]
    assert got == want
    assert c2.warnings == c1.warnings
    assert not isinstance(want[1], list)  # generated code appends a raw variant's result as it is
