"""docs/routes.md against the code: the generated reference is current, complete, and the
hand-written examples are valid routes files."""
from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from router.cli import main
from router.config import reference
from router.config.loader import load_config
from router.config.schema import ApplicationAck, ListenerSettings, RetryPolicy, Route, RoutesFile, Settings
from router.registry import BUILTINS, KINDS, Registry

ROOT = Path(__file__).resolve().parent.parent
ROUTES_MD = ROOT / "docs" / "routes.md"
STALE = (f"the generated reference in docs/routes.md is out of date with the code; regenerate it with:\n\n"
         f"    {reference.REGENERATE}\n")


def generated() -> str:
    part = reference.generated_part(ROUTES_MD.read_text(encoding="utf-8"))
    assert part is not None, f"docs/routes.md lacks the markers {reference.BEGIN} / {reference.END}"
    return part


def sections(text: str, level: str) -> dict[str, str]:
    """Heading line (without the #s) -> its text, for headings of exactly this level."""
    out: dict[str, str] = {}
    parts = re.split(rf"^{re.escape(level)} (.+)$", text, flags=re.M)
    for title, body in zip(parts[1::2], parts[2::2]):
        out[title.strip()] = body
    return out


def rows(body: str) -> set[str]:
    """The keys of the first table in a section (its rows up to the next heading)."""
    body = re.split(r"^#", body, maxsplit=1, flags=re.M)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", body, flags=re.M))


def test_the_generated_reference_is_up_to_date() -> None:
    current, wanted = generated(), reference.markdown()
    if current != wanted:
        diff = "".join(list(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True),
                                                 "docs/routes.md", "generated from the code", n=1))[:60])
        pytest.fail(STALE + "\n" + diff, pytrace=False)


def test_the_regenerate_command_is_documented_and_works() -> None:
    assert reference.REGENERATE in (reference.__doc__ or "")
    assert reference.REGENERATE in ROUTES_MD.read_text(encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "router.config.reference", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, STALE + result.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_every_component_and_option_is_documented(kind: str) -> None:
    text = generated()
    registry = reference.docs_registry()
    names = set(BUILTINS[kind]) | set(registry.names(kind))  # type: ignore[index]
    documented = sections(text, "###")
    for name in sorted(names):
        title = reference.component_heading(kind, name).removeprefix("### ")
        assert title in documented, f"{kind} {name!r} is missing from docs/routes.md; {STALE}"
        spec = registry.get(kind, name)  # type: ignore[arg-type]
        keys = {f.alias or n for n, f in spec.options.model_fields.items()}
        assert rows(documented[title]) == keys, f"options of {kind} {name!r} in docs/routes.md; {STALE}"


@pytest.mark.parametrize(("title", "model", "level"), [
    ("Top level", RoutesFile, "##"),
    ("`settings`", Settings, "##"),
    ("`ListenerSettings`", ListenerSettings, "###"),
    ("Route", Route, "##"),
    ("`retry`", RetryPolicy, "##"),
    ("`application_ack`", ApplicationAck, "##"),
])
def test_every_schema_field_is_documented(title: str, model: type, level: str) -> None:
    documented = sections(generated(), level)
    assert title in documented, f"section {title!r} is missing from docs/routes.md; {STALE}"
    keys = {f.alias or n for n, f in model.model_fields.items()}
    assert rows(documented[title]) == keys, f"keys of {title} in docs/routes.md; {STALE}"


def test_every_route_field_has_its_default_and_description() -> None:
    route_rows = {r.key: r for r in reference.options_of(Route)}
    assert set(route_rows) == set(Route.model_fields)
    text = generated()
    for name, field in Route.model_fields.items():
        if field.description:
            assert field.description.replace("<", "&lt;").replace(">", "&gt;") in text, name


def test_the_examples_are_valid_routes_files(tmp_path: Path) -> None:
    """Every complete routes file shown in the hand-written part passes `router check`."""
    text = ROUTES_MD.read_text(encoding="utf-8")
    checked = 0
    for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, flags=re.S)):
        data = yaml.safe_load(block)
        if not (isinstance(data, dict) and "routes" in data):
            continue  # a fragment
        path = tmp_path / f"example{i}.yaml"
        path.write_text(block, encoding="utf-8")
        load_config(path)
        checked += 1
    assert checked >= 2  # the minimal route and the full example


def test_router_components_lists_every_component() -> None:
    result = CliRunner().invoke(main, ["components"])
    assert result.exit_code == 0, result.output
    for kind in KINDS:
        for name in BUILTINS[kind]:
            assert re.search(rf"^  {re.escape(name)}  - ", result.output, flags=re.M), (kind, name)


def test_router_components_markdown_is_the_reference() -> None:
    result = CliRunner().invoke(main, ["components", "--markdown"])
    assert result.exit_code == 0, result.output
    for kind in KINDS:
        for name in BUILTINS[kind]:
            assert reference.component_heading(kind, name) in result.output
    installed = Registry()
    if all(installed.names(k) == reference.docs_registry().names(k) for k in KINDS):  # no extra plugins here
        assert result.output in generated()


def test_router_components_with_an_unknown_plugin_fails_cleanly() -> None:
    result = CliRunner().invoke(main, ["components", "--plugin", "no_such_module.anywhere"])
    assert result.exit_code == 2
    assert "no_such_module" in result.output and "Traceback" not in result.output
