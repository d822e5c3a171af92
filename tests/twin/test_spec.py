"""Checks of the line spec: bundled lines, defaults, hashing, error messages and the docs.

* every bundled line loads and compiles, and the three lines keep their character;
* defaults are filled in (speed setpoint, temperature setpoint from the thermal window);
* `spec_hash` ignores key order and spelling, and sees every effective value;
* every error names the source, the key path and the offending value;
* `docs/line-spec.md` documents every key of the schema (with its default and range), and its
  minimal example and its error example are true as they stand;
* random valid specs validate and round-trip through their JSON dump.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linetwin.twin import layout as L
from linetwin.twin.errors import SpecError
from linetwin.twin.params import compile_params
from linetwin.twin.spec import (
    BUNDLED_LINES,
    Economics,
    LineSpec,
    Setpoint,
    bundled_spec,
    load_spec,
    loads_spec,
    parse_spec,
    spec_json_schema,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "line-spec.md"


def line(
    top: str = "",
    a: str = "",
    b: str = "",
    a_cycle: str = "10.0",
    a_buffer: str = "buffer_after = 3",
    b_name: str = "b",
) -> str:
    """Return the TOML of a two-station line with extra lines at the top and in each station."""
    return "\n".join(
        [
            'name = "t"',
            top,
            "[[stations]]",
            'name = "a"',
            f"cycle_time_s = {a_cycle}",
            a_buffer,
            a,
            "[[stations]]",
            f'name = "{b_name}"',
            "cycle_time_s = 8.0",
            b,
            "",
        ]
    )


def error_of(text: str, source: str = "line.toml") -> str:
    """Return the message of the SpecError that loading `text` raises."""
    with pytest.raises(SpecError) as info:
        loads_spec(text, source)
    return str(info.value)


# --------------------------------------------------------------------------- bundled lines


@pytest.mark.parametrize("name", BUNDLED_LINES)
def test_bundled_lines_load_and_compile(name: str) -> None:
    spec = bundled_spec(name)
    assert isinstance(spec, LineSpec)
    assert spec.stations[-1].buffer_after is None
    assert all(st.buffer_after is not None for st in spec.stations[:-1])
    lp = compile_params(spec)
    assert lp.params.shape == (spec.n_stations, L.N_PARAMS)
    assert np.isfinite(lp.params).all()
    assert (lp.params[:, L.P_CYCLE] > 0).all()
    assert lp.present[:, L.S_SPEED].all()
    assert (lp.present[:, L.S_TEMP] == [st.is_thermal for st in spec.stations]).all()


def test_bundled_lines_are_the_shipped_files() -> None:
    shipped = {
        p.name.removesuffix(".toml")
        for p in (resources.files("linetwin.twin") / "lines").iterdir()
        if p.name.endswith(".toml")
    }
    assert shipped == set(BUNDLED_LINES)
    assert bundled_spec() == bundled_spec("example")
    with pytest.raises(SpecError, match=r"no bundled line named 'nope' \(have: example"):
        bundled_spec("nope")


def test_varied_line_uses_every_new_law() -> None:
    spec = bundled_spec("varied")
    assert {st.processing for st in spec.stations} == {"gamma", "lognormal", "deterministic"}
    assert {st.failure_law for st in spec.stations if st.mtbf_s} == {"weibull", "exponential"}
    assert {st.repair_law for st in spec.stations if st.mttr_s} == {"lognormal", "exponential"}
    shapes = {st.failure_shape for st in spec.stations if st.failure_shape}
    assert min(shapes) < 1.0 < max(shapes)  # early-life and wear-out failures
    cvs = [st.cv for st in spec.stations if st.cv]
    assert min(cvs) <= 0.1 and max(cvs) >= 0.4
    assert any(st.failure_law == "weibull" and st.wear.failure_gain > 0 for st in spec.stations)
    assert any(st.is_thermal for st in spec.stations)


def test_long_line_has_its_promised_character() -> None:
    spec = bundled_spec("long")
    assert spec.n_stations == 24
    assert sum(st.is_thermal for st in spec.stations) >= 3
    assert sum(st.mtbf_s is not None and st.wear.failure_gain > 0 for st in spec.stations) >= 3
    buffers = [st.buffer_after for st in spec.stations[:-1]]
    assert 0 in buffers
    assert len(set(buffers)) >= 5
    assert {st.processing for st in spec.stations} == {"deterministic", "exponential"}
    assert spec.economics != Economics()


# --------------------------------------------------------------------------- defaults


def test_defaults_are_filled() -> None:
    spec = loads_spec(line())
    a = spec.stations[0]
    assert a.processing == "exponential"
    assert a.mtbf_s is None and a.mttr_s is None
    assert a.setpoints.speed == Setpoint(
        min=0.5, max=1.5, nominal=1.0, max_step=0.1, resolution=0.005
    )
    assert a.setpoints.speed.grid is None
    assert a.setpoints.temperature is None
    assert a.thermal is None and not a.is_thermal
    assert (a.scrap.base, a.scrap.speed_gain, a.scrap.temperature_gain, a.scrap.max) == (
        0.0,
        0.0,
        0.0,
        0.5,
    )
    assert (a.energy.idle_kw, a.energy.run_kw, a.energy.speed_exponent) == (1.0, 5.0, 2.0)
    assert (a.wear.speed_exponent, a.wear.failure_gain) == (2.0, 0.0)
    assert a.sensors.temperature_noise_c == 0.5
    assert a.sensors.vibration_mm_s == 2.0
    assert spec.description == ""
    eco = spec.economics
    assert (eco.price_per_good_part, eco.cost_per_scrap_part, eco.energy_price_per_kwh) == (
        10.0,
        2.0,
        0.15,
    )
    assert eco.currency == "EUR"


def test_temperature_setpoint_is_derived_from_the_thermal_window() -> None:
    spec = loads_spec(line(a="thermal = { ideal_min_c = 180.0, ideal_max_c = 200.0 }"))
    st = spec.stations[0]
    assert st.is_thermal
    assert st.thermal is not None
    assert (st.thermal.ambient_c, st.thermal.time_constant_s, st.thermal.heater_kw) == (
        25.0,
        600.0,
        20.0,
    )
    assert st.thermal.initial_c is None
    assert st.setpoints.temperature == Setpoint(
        min=160.0, max=220.0, nominal=190.0, max_step=5.0, resolution=0.5
    )
    assert st.setpoints.speed == Setpoint(
        min=0.5, max=1.5, nominal=1.0, max_step=0.1, resolution=0.005
    )


def test_explicit_setpoints_are_kept() -> None:
    spec = loads_spec(
        line(
            a="thermal = { ideal_min_c = 180.0, ideal_max_c = 200.0 }\n"
            "setpoints.temperature = { min = 150.0, max = 230.0, nominal = 185.0, max_step = 2 }\n"
            "setpoints.speed = { min = 0.8, max = 1.2, nominal = 1.0, max_step = 0.1, grid = 0.05 }"
        )
    )
    sp = spec.stations[0].setpoints
    assert sp.temperature == Setpoint(min=150.0, max=230.0, nominal=185.0, max_step=2.0)
    assert sp.speed == Setpoint(min=0.8, max=1.2, nominal=1.0, max_step=0.1, grid=0.05)


def test_strings_are_trimmed() -> None:
    spec = loads_spec(line(top='description = "  spaced  "').replace('"a"', '" a "'))
    assert spec.stations[0].name == "a"
    assert spec.description == "spaced"


def test_spec_is_frozen() -> None:
    spec = bundled_spec("two-station")
    with pytest.raises(ValueError, match="frozen"):
        spec.stations[0].cycle_time_s = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- spec_hash


def reverse_keys(obj: Any) -> Any:
    """Return `obj` with the keys of every mapping in reverse order."""
    if isinstance(obj, dict):
        return {k: reverse_keys(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list | tuple):
        return [reverse_keys(v) for v in obj]
    return obj


def test_spec_hash_is_stable_across_key_order_and_spelling() -> None:
    spec = bundled_spec("example")
    h = spec.spec_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert h == bundled_spec("example").spec_hash()
    data = spec.model_dump(mode="json")
    assert parse_spec(reverse_keys(data)).spec_hash() == h
    # the same line written in another key order, with ints for floats and an explicit default
    a = loads_spec(
        'name = "t"\n[[stations]]\nname = "a"\ncycle_time_s = 10.0\nbuffer_after = 3\n'
        '[[stations]]\nname = "b"\ncycle_time_s = 8.0\n'
    )
    text_b = "\n".join(
        [
            "[[stations]]",
            "buffer_after = 3",
            'processing = "exponential"',
            "cycle_time_s = 10",
            'name = "a"',
            "[[stations]]",
            "cycle_time_s = 8",
            'name = "b"',
            "[stations.scrap]",
            "max = 0.5",
        ]
    )
    b = loads_spec('name = "t"\n' + text_b)
    assert a == b
    assert a.spec_hash() == b.spec_hash()


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ("", "description"),
        ("", "buffer"),
        ("mtbf_s = 3600.0\nmttr_s = 60.0", "a"),
        ("scrap = { base = 0.01 }", "a"),
        ("energy = { run_kw = 5.5 }", "a"),
        ("sensors = { power_noise_kw = 0.06 }", "a"),
        ('processing = "deterministic"', "a"),
        ("setpoints.speed = { min = 0.5, max = 1.5, nominal = 1.0, max_step = 0.2 }", "a"),
    ],
)
def test_spec_hash_changes_when_a_value_changes(extra: str, where: str) -> None:
    base = loads_spec(line()).spec_hash()
    if where == "description":
        text = line(top='description = "x"')
    elif where == "buffer":
        text = line(a_buffer="buffer_after = 4")
    else:
        text = line(a=extra)
    assert loads_spec(text).spec_hash() != base


def test_spec_hash_sees_the_economics_and_the_thermal_window() -> None:
    thermal = "thermal = { ideal_min_c = 180.0, ideal_max_c = 200.0 }"
    h = loads_spec(line(a=thermal)).spec_hash()
    assert loads_spec(line(a=thermal.replace("200.0", "201.0"))).spec_hash() != h
    assert loads_spec(line(a=thermal, top="economics = { currency = 'USD' }")).spec_hash() != h


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            line(top='colour = "red"'),
            "line.toml: colour: unknown key (got 'red')",
            id="unknown-top-level-key",
        ),
        pytest.param(
            line(top="economics = { price = 4.0 }"),
            "line.toml: economics.price: unknown key (got 4.0)",
            id="unknown-economics-key",
        ),
        pytest.param(
            line(a="speed = 1.2"),
            "line.toml: stations[0] ('a').speed: unknown key (got 1.2)",
            id="unknown-station-key",
        ),
        pytest.param(
            line(b="thermal = { ideal_min_c = 1.0, ideal_max_c = 2.0, tau = 5.0 }"),
            "line.toml: stations[1] ('b').thermal.tau: unknown key (got 5.0)",
            id="unknown-nested-key",
        ),
        pytest.param(
            line(
                a="setpoints.speed = { min = 0.5, max = 1.5, nominal = 1.0, max_step = 0.1, "
                "step = 1 }"
            ),
            "line.toml: stations[0] ('a').setpoints.speed.step: unknown key (got 1)",
            id="unknown-setpoint-key",
        ),
        pytest.param(
            line(a_cycle="-10.0"),
            "line.toml: stations[0] ('a').cycle_time_s: Input should be greater than 0 (got -10.0)",
            id="negative-cycle-time",
        ),
        pytest.param(
            line(a_cycle="0"),
            "line.toml: stations[0] ('a').cycle_time_s: Input should be greater than 0 (got 0)",
            id="zero-cycle-time",
        ),
        pytest.param(
            line(a="setpoints.speed = { min = 1.5, max = 0.5, nominal = 1.0, max_step = 0.1 }"),
            "line.toml: stations[0] ('a').setpoints.speed: needs min <= nominal <= max "
            "(got min=1.5, nominal=1.0, max=0.5)",
            id="setpoint-min-above-max",
        ),
        pytest.param(
            line(a="setpoints.speed = { min = 0.5, max = 1.5, nominal = 2.0, max_step = 0.1 }"),
            "line.toml: stations[0] ('a').setpoints.speed: needs min <= nominal <= max "
            "(got min=0.5, nominal=2.0, max=1.5)",
            id="nominal-outside-limits",
        ),
        pytest.param(
            line(
                a="setpoints.speed = { min = 0.5, max = 1.5, nominal = 1.0, max_step = 0.05, "
                "grid = 0.1 }"
            ),
            "line.toml: stations[0] ('a').setpoints.speed: grid (0.1) is coarser than max_step "
            "(0.05): the setpoint could never reach the next grid value within one cycle",
            id="grid-coarser-than-max-step",
        ),
        pytest.param(
            line(
                a="setpoints.speed = { min = 0.5, max = 1.5, nominal = 1.0, max_step = 0.05, "
                "resolution = 0.1 }"
            ),
            "line.toml: stations[0] ('a').setpoints.speed: resolution (0.1) is larger than "
            "max_step (0.05): every allowed move would be too small to send",
            id="resolution-above-max-step",
        ),
        pytest.param(
            line(a="setpoints.speed = { min = 0.5, max = 1.5, nominal = 1.0, max_step = 0.0 }"),
            "line.toml: stations[0] ('a').setpoints.speed.max_step: Input should be greater "
            "than 0 (got 0.0)",
            id="zero-max-step",
        ),
        pytest.param(
            line(a="setpoints.speed = { min = 0.5, max = 1.5 }"),
            "line.toml: stations[0] ('a').setpoints.speed.nominal: Field required\n"
            "line.toml: stations[0] ('a').setpoints.speed.max_step: Field required",
            id="partial-speed-setpoint",
        ),
        pytest.param(
            line(a_buffer=""),
            "line.toml: (top level): stations[0] ('a'): buffer_after is required",
            id="buffer-missing",
        ),
        pytest.param(
            line(b="buffer_after = 2"),
            "line.toml: (top level): stations[1] ('b'): the last station has no buffer behind "
            "it; remove buffer_after (got 2)",
            id="buffer-on-last",
        ),
        pytest.param(
            line(a_buffer="buffer_after = -1"),
            "line.toml: stations[0] ('a').buffer_after: Input should be greater than or equal "
            "to 0 (got -1)",
            id="negative-buffer",
        ),
        pytest.param(
            line(b_name="a"),
            "line.toml: (top level): station names must be unique (repeated: a)",
            id="duplicate-names",
        ),
        pytest.param(
            line(a="mtbf_s = 3600.0"),
            "line.toml: stations[0] ('a'): mtbf_s and mttr_s come together: give both or neither "
            "(got mtbf_s=3600.0, mttr_s=None)",
            id="mtbf-without-mttr",
        ),
        pytest.param(
            line(b="mttr_s = 60.0"),
            "line.toml: stations[1] ('b'): mtbf_s and mttr_s come together: give both or neither "
            "(got mtbf_s=None, mttr_s=60.0)",
            id="mttr-without-mtbf",
        ),
        pytest.param(
            line(
                a="setpoints.temperature = { min = 150.0, max = 230.0, nominal = 190.0, "
                "max_step = 5.0 }"
            ),
            "line.toml: stations[0] ('a'): setpoints.temperature needs a [thermal] section on "
            "this station",
            id="temperature-without-thermal",
        ),
        pytest.param(
            line(a="thermal = { ideal_min_c = 200.0, ideal_max_c = 180.0 }"),
            "line.toml: stations[0] ('a').thermal: needs ideal_min_c <= ideal_max_c "
            "(got 200.0 > 180.0)",
            id="ideal-window-reversed",
        ),
        pytest.param(
            line(a="thermal = { ideal_min_c = 180.0, ideal_max_c = 200.0, time_constant_s = 0 }"),
            "line.toml: stations[0] ('a').thermal.time_constant_s: Input should be greater "
            "than 0 (got 0)",
            id="zero-time-constant",
        ),
        pytest.param(
            line(a="scrap = { base = 1.5 }"),
            "line.toml: stations[0] ('a').scrap.base: Input should be less than or equal to 1 "
            "(got 1.5)",
            id="scrap-above-one",
        ),
        pytest.param(
            line(a_cycle='"fast"'),
            "line.toml: stations[0] ('a').cycle_time_s: Input should be a valid number "
            "(got 'fast')",
            id="string-for-number",
        ),
        pytest.param(
            line(a_buffer="buffer_after = 2.5"),
            "line.toml: stations[0] ('a').buffer_after: Input should be a valid integer (got 2.5)",
            id="fraction-for-integer",
        ),
        pytest.param(
            line(a="scrap = 0.1"),
            "line.toml: stations[0] ('a').scrap: Input should be a valid dictionary or instance "
            "of Scrap (got 0.1)",
            id="number-for-table",
        ),
        pytest.param(
            line(a='processing = "weibull"'),
            "line.toml: stations[0] ('a').processing: Input should be 'exponential', "
            "'deterministic', 'gamma' or 'lognormal' (got 'weibull')",
            id="unknown-processing",
        ),
        pytest.param(
            line(b_name="b c"),
            "line.toml: stations[1] ('b c').name: String should match pattern "
            "'^[A-Za-z0-9_.-]{1,64}$' (got 'b c')",
            id="bad-station-name",
        ),
        pytest.param(
            'name = "t"\nstations = []\n',
            "line.toml: stations: Tuple should have at least 1 item after validation, not 0",
            id="no-stations",
        ),
        pytest.param(
            'description = "no name"\n[[stations]]\nname = "a"\ncycle_time_s = 1.0\n',
            "line.toml: name: Field required",
            id="missing-line-name",
        ),
        pytest.param(
            'name = 5\n[[stations]]\nname = "a"\ncycle_time_s = 1.0\n',
            "line.toml: name: Input should be a valid string (got 5)",
            id="number-for-string",
        ),
    ],
)
def test_errors_name_file_key_path_and_value(text: str, expected: str) -> None:
    assert error_of(text) == expected


def test_every_problem_is_reported_at_once() -> None:
    msg = error_of(line(a_cycle="-1.0", a="colour = 1", b="scrap = { max = 2.0 }"))
    assert msg.splitlines() == [
        "line.toml: stations[0] ('a').cycle_time_s: Input should be greater than 0 (got -1.0)",
        "line.toml: stations[0] ('a').colour: unknown key (got 1)",
        "line.toml: stations[1] ('b').scrap.max: Input should be less than or equal to 1 (got 2.0)",
    ]


def test_toml_syntax_error_names_the_file_and_the_line() -> None:
    msg = error_of('name = "t"\n[[stations]\nname = "a"\n')
    assert msg.startswith("line.toml: TOML syntax error: ")
    assert "line 2" in msg


def test_load_spec_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "my-line.toml"
    path.write_text(line(), encoding="utf-8")
    spec = load_spec(path)
    assert spec == loads_spec(line())
    assert load_spec(str(path)) == spec
    path.write_text(line(a_cycle="-2.0"), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == (
        f"{path}: stations[0] ('a').cycle_time_s: Input should be greater than 0 (got -2.0)"
    )
    path.write_text("name = \n", encoding="utf-8")
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}: TOML syntax error: "):
        load_spec(path)


def test_unreadable_file_is_a_spec_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(SpecError) as info:
        load_spec(missing)
    assert str(info.value) == f"{missing}: cannot read line spec: No such file or directory"
    with pytest.raises(SpecError, match=rf"^{re.escape(str(tmp_path))}: cannot read line spec"):
        load_spec(tmp_path)  # a directory


def test_parse_and_loads_name_their_default_sources() -> None:
    data = {"name": "t", "stations": [{"name": "a", "cycle_time_s": -1}]}
    with pytest.raises(SpecError, match=r"^<spec>: stations\[0\] \('a'\)\.cycle_time_s: "):
        parse_spec(data)
    with pytest.raises(SpecError, match=r"^request: stations\[0\] "):
        parse_spec(data, "request")
    with pytest.raises(SpecError, match=r"^<string>: "):
        loads_spec(line(a_cycle="-1"))


# --------------------------------------------------------------------------- the docs


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def doc_sections() -> dict[str, str]:
    """Return the doc's sections by heading text (a section ends at the next heading)."""
    sections: dict[str, str] = {}
    heading = ""
    body: list[str] = []
    in_code = False
    for raw in doc_text().splitlines():
        if raw.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"^#{1,6} (.*)$", raw)
        if m:
            sections[heading] = "\n".join(body)
            heading, body = m.group(1).strip(), []
        else:
            body.append(raw)
    sections[heading] = "\n".join(body)
    return sections


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def model_sections() -> dict[str, str]:
    """Return the doc sections that document a model, by model name: `... (model `Name`)`."""
    out = {}
    for heading, body in doc_sections().items():
        m = re.search(r"\(model `(\w+)`\)$", heading)
        if m:
            assert m.group(1) not in out, f"two doc sections for model {m.group(1)}"
            out[m.group(1)] = body
    return out


def table_rows(body: str) -> dict[str, list[str]]:
    """Return the key table of a section: first-column `key` -> the row's cells."""
    rows = {}
    for raw in body.splitlines():
        if not raw.startswith("|"):
            continue
        cells = [c.strip() for c in raw.strip().strip("|").split("|")]
        m = re.fullmatch(r"`(\w+)`", cells[0])
        if m:
            rows[m.group(1)] = cells
    return rows


def schema_models() -> dict[str, dict[str, Any]]:
    """Return every object model of the JSON Schema (the top level and all $defs) by title."""
    schema = spec_json_schema()
    models = {schema["title"]: schema}
    for name, sub in schema.get("$defs", {}).items():
        assert sub.get("type") == "object", name
        models[name] = sub

    def refs(node: Any) -> set[str]:
        if isinstance(node, dict):
            found = {node["$ref"]} if "$ref" in node else set()
            return found.union(*(refs(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(refs(v) for v in node))
        return set()

    for ref in refs(schema):
        assert ref.removeprefix("#/$defs/") in models, ref
    return models


def bounds(prop: dict[str, Any]) -> list[str]:
    """Return the range tokens (`> 0`, `<= 1`, ...) the doc must state for a property."""
    ops = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    out = []
    for node in [prop, *prop.get("anyOf", [])]:
        for key, op in ops.items():
            if key in node:
                v = node[key]
                shown = str(int(v)) if float(v).is_integer() else str(v)
                out.append(f"{op} {shown}")
    return out


def test_doc_exists_and_names_the_schema_models() -> None:
    models = schema_models()
    documented = model_sections()
    assert set(documented) == set(models), "doc sections `(model `X`)` vs schema models"


def test_doc_documents_every_key_of_the_schema() -> None:
    missing = []
    for model, schema in schema_models().items():
        rows = table_rows(model_sections()[model])
        for key in schema["properties"]:
            if key not in rows:
                missing.append(f"{model}.{key}")
    assert not missing, f"keys missing from docs/line-spec.md: {missing}"
    # and every key in the doc's tables exists
    extra = [
        f"{model}.{key}"
        for model, body in model_sections().items()
        for key in table_rows(body)
        if key not in schema_models()[model]["properties"]
    ]
    assert not extra, f"docs/line-spec.md documents keys the spec does not have: {extra}"


def test_doc_states_every_default_and_range() -> None:
    wrong = []
    for model, schema in schema_models().items():
        rows = table_rows(model_sections()[model])
        required = set(schema.get("required", ()))
        for key, prop in schema["properties"].items():
            cells = rows[key]
            assert len(cells) == 6, f"{model}.{key}: expected 6 cells, got {cells}"
            default_cell, range_cell = cells[3], cells[4]
            if key in required:
                ok = default_cell == "required"
            elif "default" not in prop:  # a default factory: a sub-table of defaults
                ok = default_cell != "required"
            elif prop["default"] is None:
                ok = default_cell.startswith("absent")
            else:
                ok = f"`{json.dumps(prop['default'])}`" in default_cell
            if not ok:
                wrong.append(f"{model}.{key}: default {prop.get('default')!r} vs {default_cell!r}")
            for token in bounds(prop):
                if f"`{token}`" not in range_cell:
                    wrong.append(f"{model}.{key}: range {token!r} missing from {range_cell!r}")
    assert not wrong, "\n".join(wrong)


def test_doc_minimal_example_is_valid_as_it_stands() -> None:
    blocks = code_blocks(doc_sections()["Minimal example"], "toml")
    assert blocks, "no toml block under 'Minimal example'"
    spec = loads_spec(blocks[0], "docs/line-spec.md")
    assert spec == bundled_spec("two-station")
    assert spec.spec_hash() == bundled_spec("two-station").spec_hash()


def test_doc_error_example_is_what_the_loader_says() -> None:
    body = doc_sections()["Error messages"]
    (bad,) = code_blocks(body, "toml")
    said = code_blocks(body, "text")[0].strip()
    assert error_of(bad, "line.toml") == said


def test_doc_other_error_examples_are_real() -> None:
    said = code_blocks(doc_sections()["Error messages"], "text")[1].strip().splitlines()
    speed = "setpoints.speed = { min = 1.2, max = 0.8, nominal = 1.0, max_step = 0.1 }"
    produced = [
        error_of(line(b_name="cure", b=speed)),
        error_of(line(a_buffer="").replace('"a"', '"feed"')),
        error_of(line(b_name="press").replace('"a"', '"press"')),
        error_of('name = "t"\n[[stations]\nname = "a"\n'),
    ]
    assert said[:4] == produced
    assert said[4] == "missing.toml: cannot read line spec: No such file or directory"


# --------------------------------------------------------------------------- random specs


def finite(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def setpoint_tables(draw: st.DrawFn, lo: float, hi: float) -> dict[str, Any]:
    low, mid, high = sorted(draw(finite(lo, hi)) for _ in range(3))
    step = draw(finite(1e-3, 10.0))
    out: dict[str, Any] = {"min": low, "max": high, "nominal": mid, "max_step": step}
    if draw(st.booleans()):
        out["resolution"] = draw(finite(0.0, min(1.0, step)))
    if draw(st.booleans()):
        out["grid"] = draw(finite(1e-3, min(1.0, step)))
    return out


@st.composite
def station_tables(draw: st.DrawFn, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "cycle_time_s": draw(finite(0.1, 600.0))}
    if draw(st.booleans()):
        law = draw(st.sampled_from(["exponential", "deterministic", "gamma", "lognormal"]))
        out["processing"] = law
        if law in ("gamma", "lognormal"):
            out["cv"] = draw(finite(0.01, 10.0))
    if draw(st.booleans()):
        out["mtbf_s"] = draw(finite(1.0, 1e6))
        out["mttr_s"] = draw(finite(1.0, 1e4))
        if draw(st.booleans()):
            out["failure_law"] = "weibull"
            out["failure_shape"] = draw(finite(0.1, 20.0))
        if draw(st.booleans()):
            out["repair_law"] = "lognormal"
            out["repair_cv"] = draw(finite(0.01, 10.0))
    setpoints: dict[str, Any] = {}
    if draw(st.booleans()):
        setpoints["speed"] = draw(setpoint_tables(0.1, 3.0))
    if draw(st.booleans()):
        lo, hi = sorted(draw(finite(30.0, 300.0)) for _ in range(2))
        thermal: dict[str, Any] = {"ideal_min_c": lo, "ideal_max_c": hi}
        if draw(st.booleans()):
            thermal["ambient_c"] = draw(finite(0.0, 29.0))
        if draw(st.booleans()):
            thermal["time_constant_s"] = draw(finite(1.0, 7200.0))
        if draw(st.booleans()):
            thermal["heater_kw"] = draw(finite(0.0, 100.0))
        if draw(st.booleans()):
            thermal["initial_c"] = draw(finite(0.0, 300.0))
        out["thermal"] = thermal
        if draw(st.booleans()):
            setpoints["temperature"] = draw(setpoint_tables(30.0, 320.0))
    if setpoints:
        out["setpoints"] = setpoints
    if draw(st.booleans()):
        out["scrap"] = {
            "base": draw(finite(0.0, 0.1)),
            "speed_gain": draw(finite(0.0, 1.0)),
            "temperature_gain": draw(finite(0.0, 0.01)),
            "max": draw(finite(0.0, 1.0)),
        }
    if draw(st.booleans()):
        out["energy"] = {"idle_kw": draw(finite(0.0, 10.0)), "run_kw": draw(finite(0.0, 50.0))}
    if draw(st.booleans()):
        out["wear"] = {"failure_gain": draw(finite(0.0, 1.0))}
    if draw(st.booleans()):
        out["sensors"] = {"vibration_mm_s": draw(finite(0.0, 10.0))}
    return out


@st.composite
def line_dicts(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(
        st.lists(
            st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True),
            min_size=2,
            max_size=6,
            unique=True,
        )
    )
    stations = [draw(station_tables(n)) for n in names]
    for s in stations[:-1]:
        s["buffer_after"] = draw(st.integers(0, 10))
    out: dict[str, Any] = {"name": draw(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))}
    out["stations"] = stations
    if draw(st.booleans()):
        out["economics"] = {
            "price_per_good_part": draw(finite(0.0, 100.0)),
            "currency": draw(st.sampled_from(["EUR", "USD", "CHF"])),
        }
    return out


@settings(max_examples=80, deadline=None, database=None)
@given(line_dicts())
def test_random_valid_specs_validate_and_round_trip(data: dict[str, Any]) -> None:
    spec = parse_spec(data, "random")
    assert spec.n_stations == len(data["stations"])
    assert [s.name for s in spec.stations] == [s["name"] for s in data["stations"]]
    for st_spec, st_data in zip(spec.stations, data["stations"], strict=True):
        assert st_spec.is_thermal == ("thermal" in st_data)
        assert (st_spec.setpoints.temperature is not None) == st_spec.is_thermal
        assert st_spec.buffer_after == st_data.get("buffer_after")
    dumped = spec.model_dump(mode="json")
    json.dumps(dumped, allow_nan=False)  # plain JSON
    again = parse_spec(dumped, "dump")
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()
    assert parse_spec(reverse_keys(dumped)).spec_hash() == spec.spec_hash()
    lp = compile_params(spec)
    assert np.isfinite(lp.params).all()
    assert all(math.isfinite(v) for v in lp.nominal[lp.present])


# --------------------------------------------------------------------------- laws


@pytest.mark.parametrize(
    ("a", "message"),
    [
        (
            'processing = "gamma"',
            "line.toml: stations[0] ('a'): processing 'gamma' needs cv (its coefficient of "
            "variation)",
        ),
        (
            'processing = "deterministic"\ncv = 0.3',
            "line.toml: stations[0] ('a'): cv (0.3) is only for processing 'gamma' or "
            "'lognormal', not 'deterministic': remove it or change the law",
        ),
        ("cv = 0.3", "line.toml: stations[0] ('a'): cv (0.3) is only for processing 'gamma'"),
        (
            'processing = "lognormal"\ncv = 0.0',
            "line.toml: stations[0] ('a').cv: Input should be greater than 0 (got 0.0)",
        ),
        (
            'processing = "lognormal"\ncv = nan',
            "line.toml: stations[0] ('a').cv: Input should be a finite number (got nan)",
        ),
        (
            'processing = "gamma"\ncv = inf',
            "line.toml: stations[0] ('a').cv: Input should be a finite number (got inf)",
        ),
        (
            'processing = "gamma"\ncv = "0.3"',
            "line.toml: stations[0] ('a').cv: Input should be a valid number (got '0.3')",
        ),
        (
            'failure_law = "weibull"\nfailure_shape = 2.0',
            "line.toml: stations[0] ('a'): failure_law 'weibull' needs mtbf_s and mttr_s "
            "(it has neither)",
        ),
        (
            'mtbf_s = 600.0\nmttr_s = 60.0\nfailure_law = "weibull"',
            "line.toml: stations[0] ('a'): failure_law 'weibull' needs failure_shape "
            "(the Weibull shape)",
        ),
        (
            "mtbf_s = 600.0\nmttr_s = 60.0\nfailure_shape = 2.0",
            "line.toml: stations[0] ('a'): failure_shape (2.0) is only for failure_law "
            "'weibull', not 'exponential'",
        ),
        (
            'mtbf_s = 600.0\nmttr_s = 60.0\nfailure_law = "weibull"\nfailure_shape = 0.05',
            "line.toml: stations[0] ('a').failure_shape: Input should be greater than or equal "
            "to 0.1 (got 0.05)",
        ),
        (
            'failure_law = "gamma"',
            "line.toml: stations[0] ('a').failure_law: Input should be 'exponential' or "
            "'weibull' (got 'gamma')",
        ),
        (
            'repair_law = "lognormal"\nrepair_cv = 0.5',
            "line.toml: stations[0] ('a'): repair_law 'lognormal' needs mtbf_s and mttr_s "
            "(it has neither)",
        ),
        (
            'mtbf_s = 600.0\nmttr_s = 60.0\nrepair_law = "lognormal"',
            "line.toml: stations[0] ('a'): repair_law 'lognormal' needs repair_cv (its "
            "coefficient of variation)",
        ),
        (
            "mtbf_s = 600.0\nmttr_s = 60.0\nrepair_cv = 0.5",
            "line.toml: stations[0] ('a'): repair_cv (0.5) is only for repair_law 'lognormal', "
            "not 'exponential'",
        ),
        (
            'mtbf_s = 600.0\nmttr_s = 60.0\nrepair_law = "lognormal"\nrepair_cv = -1.0',
            "line.toml: stations[0] ('a').repair_cv: Input should be greater than 0 (got -1.0)",
        ),
    ],
)
def test_law_parameters_are_checked(a: str, message: str) -> None:
    assert error_of(line(a=a)).startswith(message)


def test_laws_compile_to_their_parameters() -> None:
    spec = loads_spec(
        line(
            a='processing = "gamma"\ncv = 0.5\nmtbf_s = 900.0\nmttr_s = 60.0\n'
            'failure_law = "weibull"\nfailure_shape = 2.0\nrepair_law = "lognormal"\n'
            "repair_cv = 0.75",
            b='processing = "lognormal"\ncv = 0.75',
        )
    )
    p = compile_params(spec).params
    assert p[0, L.P_PROC_LAW] == L.LAW_GAMMA and p[0, L.P_PROC_SHAPE] == pytest.approx(4.0)
    assert p[0, L.P_EXPO] == 0.0
    assert p[0, L.P_FAIL_LAW] == L.LAW_WEIBULL and p[0, L.P_FAIL_SHAPE] == 2.0
    # Weibull(eta, 2) has mean eta * sqrt(pi) / 2.
    assert p[0, L.P_FAIL_SCALE] == pytest.approx(900.0 * 2.0 / math.sqrt(math.pi))
    sigma = math.sqrt(math.log(1.0 + 0.75**2))
    assert p[0, L.P_REPAIR_LAW] == L.LAW_LOGNORMAL
    assert p[0, L.P_REPAIR_SIGMA] == pytest.approx(sigma)
    assert p[1, L.P_PROC_LAW] == L.LAW_LOGNORMAL and p[1, L.P_PROC_SHAPE] == pytest.approx(sigma)
    assert p[1, L.P_FAIL_LAW] == L.LAW_EXPONENTIAL and p[1, L.P_REPAIR_LAW] == L.LAW_EXPONENTIAL


def test_hash_of_a_spec_without_the_new_keys_is_unchanged() -> None:
    """Specs that use no new law key keep the hash they had (shipped surrogates stay valid)."""
    # The example line's hash before the law keys existed (its shipped surrogate's).
    assert bundled_spec("example").spec_hash() == (
        "218aeb554951d4b39545edf878c61e9416079f691e515dc3280f96a0f889c109"
    )
    plain = loads_spec(line(a="mtbf_s = 600.0\nmttr_s = 60.0"))
    explicit = loads_spec(
        line(
            a='mtbf_s = 600.0\nmttr_s = 60.0\nfailure_law = "exponential"\n'
            'repair_law = "exponential"'
        )
    )
    assert explicit.spec_hash() == plain.spec_hash()
    hashes = {
        plain.spec_hash(),
        loads_spec(line(a='processing = "gamma"\ncv = 0.3')).spec_hash(),
        loads_spec(line(a='processing = "gamma"\ncv = 0.4')).spec_hash(),
        loads_spec(line(a='processing = "lognormal"\ncv = 0.3')).spec_hash(),
        loads_spec(
            line(a='mtbf_s = 600.0\nmttr_s = 60.0\nfailure_law = "weibull"\nfailure_shape = 2.0')
        ).spec_hash(),
        loads_spec(
            line(a='mtbf_s = 600.0\nmttr_s = 60.0\nrepair_law = "lognormal"\nrepair_cv = 0.5')
        ).spec_hash(),
    }
    assert len(hashes) == 6
