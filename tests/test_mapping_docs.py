"""docs/mappings.md against the code: the generated reference is current and complete, and the
hand-written examples are real (mappings compile, the broken one fails as shown, the Python
mapping runs)."""
from __future__ import annotations

import difflib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router.envelope import Envelope
from router.errors import ConfigError
from router.maplang import reference
from router.maplang.compiler import FieldSpec, MappingResult, MappingSpec, ResourceSpec, compile_mapping
from router.maplang.functions import FUNCTIONS
from router.maplang.paths import ATTACHED, UNTIL
from router.validation import validate_fhir

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS_MD = ROOT / "docs" / "mappings.md"
STALE = (f"the generated reference in docs/mappings.md is out of date with the code; regenerate it with:\n\n"
         f"    {reference.REGENERATE}\n")
BROKEN = "with mistakes, on purpose"  # the description of the example `router check` is shown failing on


def text() -> str:
    return MAPPINGS_MD.read_text(encoding="utf-8")


def generated() -> str:
    part = reference.generated_part(text())
    assert part is not None, f"docs/mappings.md lacks the markers {reference.BEGIN} / {reference.END}"
    return part


def guide() -> str:
    """The hand-written part (before the generated reference)."""
    return text().split(reference.BEGIN)[0]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", guide(), flags=re.S | re.M)


def mapping_examples() -> list[str]:
    """Every complete mapping file shown in the guide: a YAML block with `resources:`."""
    out = []
    for block in blocks("yaml"):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "resources" in data:
            out.append(block)
    return out


def sections(body: str, level: str) -> dict[str, str]:
    """Heading (without the #s) -> its text, for headings of exactly this level."""
    parts = re.split(rf"^{re.escape(level)} (.+)$", body, flags=re.M)
    return {title.strip(): content for title, content in zip(parts[1::2], parts[2::2])}


def table_keys(body: str) -> set[str]:
    """The first column of the tables in a section, up to the next heading."""
    body = re.split(r"^#", body, maxsplit=1, flags=re.M)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", body, flags=re.M))


# --------------------------------------------------------------------------- the generated reference


def test_the_generated_reference_is_up_to_date() -> None:
    current, wanted = generated(), reference.markdown()
    if current != wanted:
        diff = "".join(list(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True),
                                                 "docs/mappings.md", "generated from the code", n=1))[:60])
        pytest.fail(STALE + "\n" + diff, pytrace=False)


def test_the_regenerate_command_is_documented_and_works() -> None:
    assert reference.REGENERATE in (reference.__doc__ or "")
    assert reference.REGENERATE in guide()
    result = subprocess.run([sys.executable, "-m", "router.maplang.reference", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, STALE + result.stderr


def test_the_check_option_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "mappings.md"
    stale.write_text(f"# x\n\n{reference.BEGIN}\nold\n{reference.END}\n", encoding="utf-8")
    assert reference.main(["--check", "--file", str(stale)]) == 1
    assert reference.main(["--write", "--file", str(stale)]) == 0
    assert reference.main(["--check", "--file", str(stale)]) == 0
    assert reference.generated_part(stale.read_text(encoding="utf-8")) == reference.markdown()


def test_every_function_is_documented_with_its_arguments() -> None:
    documented = sections(generated(), "###")
    for name, spec in FUNCTIONS.items():
        title = reference.function_heading(name).removeprefix("### ")
        assert title in documented, f"function {name!r} is missing from docs/mappings.md; {STALE}"
        body = documented[title]
        assert spec.returns in body, f"what {name!r} returns; {STALE}"
        assert table_keys(body) == set(spec.args), f"arguments of {name!r}; {STALE}"
        for arg in spec.args.values():
            for choice in arg.choices:
                assert f"`{choice}`" in body, f"choice {choice!r} of {name!r}; {STALE}"
        assert reference._markdown_doc(spec.doc) in body, f"doc of {name!r}; {STALE}"


@pytest.mark.parametrize(("title", "model"), reference.MODELS)
def test_every_mapping_key_is_documented(title: str, model: type) -> None:
    documented = sections(generated(), "###")
    assert title in documented, f"section {title!r} is missing from docs/mappings.md; {STALE}"
    keys = {f.alias or n for n, f in model.model_fields.items()}
    assert table_keys(documented[title]) == keys, f"keys of {title} in docs/mappings.md; {STALE}"


def test_the_models_are_the_ones_the_compiler_uses() -> None:
    assert [m for _, m in reference.MODELS] == [MappingSpec, ResourceSpec, FieldSpec]


def test_every_key_has_a_description() -> None:
    """From the model, or else from reference.FALLBACK_DESCRIPTIONS (which names only real keys)."""
    for model, extra in reference.FALLBACK_DESCRIPTIONS.items():
        keys = {f.alias or n for n, f in model.model_fields.items()}
        assert set(extra) <= keys, f"FALLBACK_DESCRIPTIONS names keys {model.__name__} does not have"
    for _, model in reference.MODELS:
        for name, f in model.model_fields.items():
            key = f.alias or name
            assert reference.description(model, key, f), f"{model.__name__}.{key} has no description"


def test_the_segment_groups_are_documented() -> None:
    body = sections(generated(), "##")["Segment groups (HL7 v2)"]
    assert table_keys(body) == set(ATTACHED) | set(UNTIL)


# --------------------------------------------------------------------------- the hand-written examples


def test_every_mapping_example_compiles(tmp_path: Path) -> None:
    """Every complete mapping YAML in the guide compiles (the broken one fails as shown)."""
    csv_blocks = blocks("csv")
    assert csv_blocks, "the guide shows a concept map CSV"
    compiled = 0
    for i, block in enumerate(mapping_examples()):
        if BROKEN in block:
            continue
        folder = tmp_path / f"example{i}"
        folder.mkdir()
        for rel in (yaml.safe_load(block).get("concept_maps") or {}).values():
            target = folder / rel  # the concept map the guide shows, wherever the example looks for it
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(csv_blocks[0], encoding="utf-8")
        path = folder / "mapping.yaml"
        path.write_text(block, encoding="utf-8")
        try:
            compile_mapping(path)
        except ConfigError as exc:
            pytest.fail(f"a mapping example in docs/mappings.md does not compile:\n{exc}\n\n{block}", pytrace=False)
        compiled += 1
    assert compiled >= 8


def test_the_walk_through_shows_the_shipped_mapping() -> None:
    shipped = (ROOT / "mappings" / "oru-r01.yaml").read_text(encoding="utf-8")
    assert shipped in mapping_examples(), "the walk-through must show mappings/oru-r01.yaml as it is"


def test_the_broken_example_fails_as_shown(tmp_path: Path) -> None:
    [block] = [b for b in mapping_examples() if BROKEN in b]
    path = tmp_path / "oru-lab.yaml"
    path.write_text(block, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        compile_mapping(path)
    shown = guide()
    problems = err.value.problems
    for p in problems:
        line = str(p).replace(str(path), "/tmp/demo/mappings/oru-lab.yaml")
        assert line in shown, f"router check would print {line!r}; docs/mappings.md shows otherwise"
    assert f"routes.yaml: {len(problems)} problems" in shown


def test_the_python_mapping_example_runs(tmp_path: Path) -> None:
    [source] = [b for b in blocks("python") if "def patient(" in b]
    module_file = tmp_path / "adt_mapping_doc_example.py"
    module_file.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("adt_mapping_doc_example", module_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    raw = (b"MSH|^~\\&|HIS|HOSP|EHR|HOSP|20240501103000||ADT^A01|A1|P|2.5\r"
           b"PID|1||MRN123^^^HOSP^MR||\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd\xd0\xbe\xd0\xb2^Ivan^^^^^L||19800501|X\r")
    result = module.patient(Envelope(route="adt", raw=raw))
    assert isinstance(result, MappingResult)
    validate_fhir(result.document)
    [entry] = result.document["entry"]
    assert entry["resource"]["id"] == "d51afb58-38a4-5c16-8e88-5caa32ac6f33"  # the id the guide shows
    assert "gender" not in entry["resource"]
    assert result.warnings == ["gender (HL7 table 0001): a code without FHIR equivalent"]


def test_the_links_within_the_page_resolve() -> None:
    def slug(title: str) -> str:  # GitHub's heading anchors
        return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")

    body = text()
    anchors = {slug(t) for t in re.findall(r"^#{1,6} (.+)$", body, flags=re.M)}
    anchors |= set(re.findall(r'<a id="([^"]+)">', body))
    for target in re.findall(r"\]\(#([^)]+)\)", body):
        assert target in anchors, f"docs/mappings.md links to #{target}, which is no heading"
