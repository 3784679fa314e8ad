"""`router check` / load_config: every problem at once, each as file:line:column: message (hint)."""
from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from router.cli import main
from router.config.durations import parse_duration
from router.config.loader import load_config
from router.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def problems(path: str | Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def expect(path: str | Path, *lines: str) -> list[str]:
    return [f"{path}:{line}" for line in lines]


def check(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["check", *args])
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- the CLI


def test_cli_valid_file_exits_0_with_route_count() -> None:
    code, out, err = check(fixture("valid.yaml"))
    assert (code, out, err) == (0, f"{fixture('valid.yaml')}: OK, 4 routes\n", "")


def test_cli_shipped_routes_yaml_is_ok() -> None:
    path = ROOT / "routes.yaml"
    n = len(yaml.safe_load(path.read_text(encoding="utf-8"))["routes"])
    code, out, err = check(str(path))
    assert err == ""
    assert code == 0
    assert out == f"{path}: OK, {n} route{'s' if n != 1 else ''}\n"


def test_cli_reports_every_problem_of_several_routes_in_one_run() -> None:
    f = fixture("several.yaml")
    code, out, err = check(f)
    assert code == 1
    assert out == ""
    assert err.splitlines() == expect(
        f,
        "2:3: settings.mlp: unknown key 'mlp' (did you mean 'mllp'?)",
        "4:5: routes[0]: missing required key 'destinations'",
        "5:20: routes[0].source.type: unknown source type 'mlp' (did you mean 'mllp'?)",
        "7:5: routes[0].destinatons: unknown key 'destinatons' (did you mean 'destinations'?)",
        "8:11: routes[1].name: duplicate route name 'lab-results' (first defined at routes[0])",
        "9:32: routes[1].source.port: Input should be a valid integer, unable to parse string as an integer (got 'abc')",
        "10:14: routes[1].mapping: unknown mapping 'nosuch' (known: passthrough)",
        "11:23: routes[1].retry.attempts: Input should be greater than or equal to 1 (got 0)",
        "11:41: routes[1].retry.initial_delay: '5x' is not a duration (use seconds or a string like 500ms, 5s, 2m, 1h, 30d)",
        "12:27: routes[1].destinations[0].type: unknown destination type 'stor' (did you mean 'store'?)",
        "19:13: routes[3].accept: routes 'adt' and 'adt-copy' both accept ADT^* and *^A01 (e.g. ADT^A01) on the "
        "shared listener tcp port 2575 (routes sharing a listener need disjoint 'accept' lists)",
    ) + [f"{f}: 11 problems"]


def test_cli_yaml_syntax_error_has_line_and_column() -> None:
    f = fixture("yaml_syntax.yaml")
    code, out, err = check(f)
    assert code == 1
    assert err.splitlines() == [
        f"{f}:4:9: YAML syntax error: expected ',' or '}}', but got ':' (while parsing a flow mapping at line 3, column 13)",
        f"{f}: 1 problem",
    ]


def test_cli_missing_file(tmp_path: Path) -> None:
    f = str(tmp_path / "nope.yaml")
    code, out, err = check(f)
    assert code == 1
    assert err.splitlines() == [f"{f}: file not found", f"{f}: 1 problem"]


# --------------------------------------------------------------------------- routes that fail the schema


def test_route_failing_schema_still_gets_components_mapping_and_listener_checked() -> None:
    f = fixture("schema_failed_route.yaml")
    assert problems(f) == expect(
        f,
        "7:20: routes[1].source.type: unknown source type 'mlp' (did you mean 'mllp'?)",
        "8:14: routes[1].mapping: unknown mapping 'nosuch' (known: passthrough)",
        "9:5: routes[1].destinatons: unknown key 'destinatons' (did you mean 'destinations'?)",
        "10:27: routes[1].destinations[0].type: unknown destination type 'stor' (did you mean 'store'?)",
        "13:13: routes[2].accept: routes 'lab' and 'overlapping' both accept ORU^R01 on the shared listener "
        "tcp port 2575 (routes sharing a listener need disjoint 'accept' lists)",
        "15:5: routes[2].descripton: unknown key 'descripton' (did you mean 'description'?)",
    )


# --------------------------------------------------------------------------- the shape of the file


@pytest.mark.parametrize("name", ["empty.yaml", "comment_only.yaml"])
def test_empty_file(name: str) -> None:
    f = fixture(name)
    assert problems(f) == expect(f, "1:1: the file is empty (a routes file is a mapping with a 'routes' list)")


def test_file_that_is_a_list() -> None:
    f = fixture("file_is_list.yaml")
    assert problems(f) == expect(
        f, "1:1: the file must be a mapping with a 'routes' list (got a list) (put the routes under a top-level 'routes:' key)")


def test_routes_not_a_list() -> None:
    f = fixture("routes_not_list.yaml")
    assert problems(f) == expect(
        f, "2:3: routes: must be a list of routes (got a mapping) (start each route with '- name: ...')")


def test_routes_key_missing() -> None:
    f = fixture("no_routes.yaml")
    assert problems(f) == expect(f, "1:1: missing required key 'routes' (list the routes under a top-level 'routes:' key)")


def test_empty_routes_list_is_ok(tmp_path: Path) -> None:
    f = tmp_path / "routes.yaml"
    f.write_text("routes: []\n", encoding="utf-8")
    assert load_config(f).routes == ()


def test_duplicate_yaml_keys() -> None:
    f = fixture("duplicate_keys.yaml")
    assert problems(f) == expect(
        f,
        "5:5: routes[0].source: duplicate key 'source' (first defined at line 3, column 5; the later value would silently win)",
        "5:13: routes[0].source: missing required key 'path'",
    )


def test_more_than_one_yaml_document(tmp_path: Path) -> None:
    f = tmp_path / "routes.yaml"
    f.write_text("routes: []\n---\nroutes: []\n", encoding="utf-8")
    assert problems(f) == expect(
        f, "2:1: the file holds more than one YAML document (remove the '---' separator; routes.yaml is one document)")


def test_unknown_top_level_and_settings_keys(tmp_path: Path) -> None:
    f = tmp_path / "routes.yaml"
    f.write_text(textwrap.dedent("""\
        setings: {}
        settings:
          http: {prot: 8081}
        routes: []
        """), encoding="utf-8")
    assert problems(f) == expect(
        f,
        "1:1: setings: unknown key 'setings' (did you mean 'settings'?)",
        "3:9: settings.http: missing required key 'port'",
        "3:10: settings.http.prot: unknown key 'prot' (did you mean 'port'?)",
    )


def test_bad_route_name_has_a_hint(tmp_path: Path) -> None:
    f = tmp_path / "routes.yaml"
    f.write_text("routes:\n  - {name: Lab Results, source: mllp, destinations: [discard]}\n", encoding="utf-8")
    assert problems(f) == expect(
        f,
        "2:12: routes[0].name: String should match pattern '^[a-z0-9][a-z0-9._-]{0,62}$' (got 'Lab Results') "
        "(unique, used in queue names: up to 63 lowercase letters, digits, '.', '_' or '-')",
    )


# --------------------------------------------------------------------------- plugins, components, mappings


def test_missing_plugin_module_is_reported_and_the_rest_still_checked() -> None:
    f = fixture("missing_plugin.yaml")
    assert problems(f) == expect(
        f,
        "2:13: settings.plugins[0]: plugin module 'adapters.nosuch' cannot be imported: No module named "
        "'adapters.nosuch' (is its package installed in this environment?)",
        "9:13: routes[1].accept: routes 'a' and 'b' both accept ADT^A01 on the shared listener tcp port 2575 "
        "(route 'a' has no 'accept' list, so it takes every message type; "
        "routes sharing a listener need disjoint 'accept' lists)",
    )


def test_plugin_components_are_known(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "check_plugin_demo.py").write_text(textwrap.dedent("""\
        from router.registry import ComponentSpec, NoOptions
        COMPONENTS = [ComponentSpec("destination", "lis", "demo", NoOptions, lambda o, c: None)]
        """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    f = tmp_path / "routes.yaml"
    f.write_text(textwrap.dedent("""\
        settings: {plugins: [check_plugin_demo]}
        routes:
          - {name: a, source: mllp, destinations: [lis]}
          - {name: b, source: {type: http, path: /b}, destinations: [lsi]}
        """), encoding="utf-8")
    assert problems(f) == expect(
        f, "4:62: routes[1].destinations[0]: unknown destination type 'lsi' (did you mean 'lis'?)")


def test_destination_options_of_the_wrong_type() -> None:
    f = fixture("destination_options.yaml")
    assert problems(f) == expect(
        f,
        "5:40: routes[0].destinations[0].fsync: Input should be a valid boolean, unable to interpret input (got 'maybe')",
        "6:48: routes[0].destinations[1].timeout: '5x' is not a duration (use seconds or a string like 500ms, 5s, 2m, 1h, 30d)",
        "7:29: routes[0].destinations[2].queue: Input should be a valid string (got a list)",
        "8:9: routes[0].destinations[3]: missing required key 'path'",
        "8:22: routes[0].destinations[3].pth: unknown key 'pth' (did you mean 'path'?)",
    )


def test_filter_conditions() -> None:
    f = fixture("filters.yaml")
    assert problems(f) == expect(
        f,
        "5:9: routes[0].filter[0]: a condition needs exactly one of equals, not_equals, in, not_in, matches, exists",
        "6:9: routes[0].filter[1]: bad regular expression '(unclosed': missing ), unterminated subpattern at position 0",
        "7:24: routes[0].filter[2].equal: unknown key 'equal' (did you mean 'equals'?)",
        "11:42: routes[1].filter.where.any[0]: a condition needs exactly one of equals, not_equals, in, not_in, "
        "matches, exists",
    )


def test_filter_of_the_wrong_shape(tmp_path: Path) -> None:
    f = tmp_path / "routes.yaml"
    f.write_text(textwrap.dedent("""\
        routes:
          - name: a
            source: mllp
            filter: {type: fields, where: CITYLAB}
            destinations: [discard]
        """), encoding="utf-8")
    assert problems(f) == expect(
        f, "4:35: routes[0].filter.where: Input should be a valid list or a valid dictionary (got 'CITYLAB')")


def test_mapping_function_that_does_not_exist() -> None:
    f = fixture("mapping_function.yaml")
    assert problems(f) == expect(
        f,
        "4:14: routes[0].mapping: mapping function 'router.mapping:missing_function' cannot be loaded: "
        "router.mapping has no 'missing_function' (write it as package.module:function)",
    )


# --------------------------------------------------------------------------- listeners


def test_mllp_routes_on_one_port_with_overlapping_accept() -> None:
    f = fixture("mllp_overlap.yaml")
    assert problems(f) == expect(
        f,
        "8:13: routes[1].accept: routes 'lab' and 'lab-all' both accept ORU^R01 on the shared listener tcp port 2575 "
        "(routes sharing a listener need disjoint 'accept' lists)",
        "11:13: routes[2].source: routes 'lab' and 'catch-all' both accept ORU^R01 on the shared listener tcp port 2575 "
        "(route 'catch-all' has no 'accept' list, so it takes every message type; "
        "routes sharing a listener need disjoint 'accept' lists)",
    )


def test_mllp_and_http_on_the_same_port() -> None:
    f = fixture("port_conflict.yaml")
    assert problems(f) == expect(
        f,
        "6:13: routes[1].source: tcp port 8080 is used by both route 'web' (http source) and route 'tcp' (mllp source) "
        "(give each listener its own port/path)",
    )


def test_http_sources_on_the_same_path() -> None:
    f = fixture("http_paths.yaml")
    assert problems(f) == expect(
        f,
        "9:13: routes[2].source: routes 'a' and 'c' both accept every message type on the shared listener "
        "HTTP path /hl7/lab, tcp port 8080 (routes sharing a listener need disjoint 'accept' lists)",
    )


def test_valid_file_loads() -> None:
    config = load_config(fixture("valid.yaml"))
    assert [r.name for r in config.routes] == ["lab", "adt", "web-a", "web-b"]
    lab, adt = config.routes[0], config.routes[1]
    assert lab.filter is not None and lab.filter.spec.name == "fields"
    assert [d.spec.name for d in adt.destinations] == ["discard"]
    assert adt.route.retry.initial_delay == 0.5 and adt.route.retry.max_delay == 60.0
    assert config.settings.mllp.port == 2600


# --------------------------------------------------------------------------- durations


@given(st.integers(min_value=0, max_value=10**12))
def test_duration_milliseconds(n: int) -> None:
    assert math.isclose(parse_duration(f"{n}ms"), n / 1000, rel_tol=1e-9, abs_tol=1e-12)


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from([("s", 1), ("m", 60), ("h", 3600), ("", 1)]))
def test_duration_units(n: int, unit: tuple[str, int]) -> None:
    assert math.isclose(parse_duration(f"{n}{unit[0]}"), n * unit[1], rel_tol=1e-9)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_duration_number_is_seconds(x: float) -> None:
    assert parse_duration(x) == x


@given(st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-9, allow_nan=False)))
def test_duration_negative_number_raises(x: float) -> None:
    with pytest.raises(ValueError):
        parse_duration(x)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d", ""]))
def test_duration_negative_string_raises(n: int, unit: str) -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_duration(f"-{n}{unit}")


@given(st.one_of(
    st.text().filter(lambda s: not re.search(r"\d", s)),  # no number at all
    st.tuples(st.integers(min_value=0, max_value=999), st.sampled_from(["x", "sec", "dd", "ms5", "5", "MS", " m s"]))
      .map(lambda t: f"{t[0]}{t[1]}" if t[1] != "5" else f"{t[0]}.{t[1]}.{t[1]}"),
    st.sampled_from([None, True, False, [], {}, float("nan"), float("inf"), 10**400]),
))
def test_duration_junk_raises(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_two_routes_cannot_share_a_dead_letter_queue(tmp_path) -> None:
    f = tmp_path / "routes.yaml"
    f.write_text("routes:\n"
                 "  - {name: a, source: mllp, accept: [ORU^R01], destinations: [discard], dead_letter_queue: shared}\n"
                 "  - {name: b, source: mllp, accept: [ADT^A01], destinations: [discard], dead_letter_queue: shared}\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert [str(p) for p in err.value.problems] == [
        f"{f}:3:92: routes[1].dead_letter_queue: dead-letter queue 'shared' is also used by route 'a' "
        "(each route needs its own dead-letter queue (replay returns messages to it))"]


def test_a_python_filter_must_name_a_function_that_exists(tmp_path) -> None:
    f = tmp_path / "routes.yaml"
    f.write_text("routes:\n  - name: a\n    source: mllp\n    filter: {type: python, function: 'router.filters:nope'}\n"
                 "    destinations: [discard]\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert len(err.value.problems) == 1
    assert "filter function 'router.filters:nope' cannot be loaded: router.filters has no 'nope'" in str(err.value)


def test_a_hand_over_must_name_an_existing_route(tmp_path) -> None:
    f = tmp_path / "routes.yaml"
    f.write_text("routes:\n  - name: first\n    source: mllp\n    destinations: [{type: amqp, route: secnd}]\n"
                 "  - name: second\n    source: {type: http, path: /x}\n    destinations: [discard]\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert [str(p) for p in err.value.problems] == [
        f"{f}:4:40: routes[0].destinations[0].route: no route 'secnd' to hand over to (did you mean 'second'?)"]


def test_an_http_source_may_not_sit_under_the_fhir_api(tmp_path) -> None:
    f = tmp_path / "routes.yaml"
    f.write_text("routes:\n  - name: a\n    source: {type: http, path: /fhir/in}\n    destinations: [discard]\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert [str(p) for p in err.value.problems] == [
        f"{f}:3:32: routes[0].source.path: HTTP path /fhir/in is inside the FHIR API's base path /fhir "
        "(choose another path, or move the API (settings.api.base_path))"]
