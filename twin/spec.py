"""Describe a production line: the validated, immutable line spec and its TOML loader.

The spec models are frozen pydantic models: one definition gives validation with key paths,
defaults, the JSON Schema (`linetwin line schema`) and the filled-in dump (`linetwin line show`).
The twin's kernel never sees them: `twin.params` compiles a spec into plain arrays once.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from linetwin.twin.errors import SpecError

# strict: a string or a boolean is never silently turned into a number; no inf or nan either.
_STRICT = ConfigDict(
    extra="forbid", frozen=True, str_strip_whitespace=True, strict=True, allow_inf_nan=False
)

SETPOINT_NAMES = ("speed", "temperature")
"""Setpoint names in kernel order: index 0 is speed, index 1 is temperature."""


class Setpoint(BaseModel):
    """Limits of one setpoint: engineering range, nominal value and rate of change."""

    model_config = _STRICT
    min: float = Field(description="Lowest value the plant accepts.")
    max: float = Field(description="Highest value the plant accepts.")
    nominal: float = Field(description="Value the line runs at when nobody optimizes.")
    max_step: float = Field(gt=0, description="Largest change per optimizer cycle.")
    resolution: float = Field(
        0.0, ge=0, description="Smallest move the actuator resolves; smaller moves are not sent."
    )
    grid: float | None = Field(
        None, gt=0, description="If set, the setpoint only takes values min + k * grid."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Setpoint:
        if not self.min <= self.nominal <= self.max:
            raise ValueError(
                f"needs min <= nominal <= max (got min={self.min}, nominal={self.nominal}, "
                f"max={self.max})"
            )
        if self.grid is not None and self.grid > self.max_step:
            raise ValueError(
                f"grid ({self.grid}) is coarser than max_step ({self.max_step}): the setpoint "
                "could never reach the next grid value within one cycle"
            )
        if self.resolution > self.max_step:
            raise ValueError(
                f"resolution ({self.resolution}) is larger than max_step ({self.max_step}): "
                "every allowed move would be too small to send"
            )
        return self


class Setpoints(BaseModel):
    """The setpoints of one station; `temperature` exists only on thermal stations."""

    model_config = _STRICT
    speed: Setpoint = Field(
        default_factory=lambda: Setpoint(
            min=0.5, max=1.5, nominal=1.0, max_step=0.1, resolution=0.005
        ),
        description="Multiplier of the nominal processing rate (1.0 = nominal cycle time).",
    )
    temperature: Setpoint | None = Field(
        None, description="Process temperature in °C; defaults from the thermal section."
    )


class Thermal(BaseModel):
    """First-order thermal dynamics of a heated station."""

    model_config = _STRICT
    ideal_min_c: float = Field(description="Lower end of the temperature window without scrap, °C.")
    ideal_max_c: float = Field(description="Upper end of the temperature window without scrap, °C.")
    ambient_c: float = Field(25.0, description="Ambient temperature, °C.")
    time_constant_s: float = Field(600.0, gt=0, description="Time constant toward setpoint, s.")
    heater_kw: float = Field(
        20.0, ge=0, description="Heater power that holds the station at the temperature max, kW."
    )
    initial_c: float | None = Field(
        None, description="Temperature at the start of a run, °C; default: the nominal setpoint."
    )

    @model_validator(mode="after")
    def _window(self) -> Thermal:
        if self.ideal_min_c > self.ideal_max_c:
            raise ValueError(
                f"needs ideal_min_c <= ideal_max_c (got {self.ideal_min_c} > {self.ideal_max_c})"
            )
        return self


class Scrap(BaseModel):
    """Scrap probability per finished part: base + speed and temperature penalties, capped."""

    model_config = _STRICT
    base: float = Field(0.0, ge=0, le=1, description="Scrap probability at nominal conditions.")
    speed_gain: float = Field(
        0.0, ge=0, description="Added probability per (speed - nominal speed)² above nominal."
    )
    temperature_gain: float = Field(
        0.0, ge=0, description="Added probability per °C² outside the ideal window."
    )
    max: float = Field(0.5, ge=0, le=1, description="Cap on the scrap probability.")


class Energy(BaseModel):
    """Electrical power of a station by state (heating is in the thermal section)."""

    model_config = _STRICT
    idle_kw: float = Field(1.0, ge=0, description="Power when starved, blocked or down, kW.")
    run_kw: float = Field(5.0, ge=0, description="Power while processing at nominal speed, kW.")
    speed_exponent: float = Field(
        2.0, ge=0, description="Running power scales with (speed / nominal) ** speed_exponent."
    )


class Wear(BaseModel):
    """Wear accrued by processing; it raises the failure rate until the next repair."""

    model_config = _STRICT
    speed_exponent: float = Field(
        2.0, ge=0, description="Wear accrues at (speed / nominal) ** speed_exponent per busy hour."
    )
    failure_gain: float = Field(
        0.0, ge=0, description="Failure rate multiplier 1 + failure_gain * wear (wear in hours)."
    )


class Sensors(BaseModel):
    """Measurement noise and the vibration model of a station's sensors."""

    model_config = _STRICT
    temperature_noise_c: float = Field(0.5, ge=0, description="Std of temperature noise, °C.")
    power_noise_kw: float = Field(0.05, ge=0, description="Std of power noise, kW.")
    vibration_mm_s: float = Field(
        2.0, ge=0, description="Vibration while processing at nominal speed, no wear, mm/s."
    )
    vibration_wear_gain: float = Field(
        0.05, ge=0, description="Vibration multiplier 1 + gain * wear (wear in hours)."
    )
    vibration_noise_mm_s: float = Field(0.1, ge=0, description="Std of vibration noise, mm/s.")


class Station(BaseModel):
    """One station of the serial line and the buffer behind it."""

    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique station name.")
    cycle_time_s: float = Field(
        gt=0, description="Mean processing time at speed 1.0 (the rated rate), s."
    )
    processing: Literal["exponential", "deterministic", "gamma", "lognormal"] = Field(
        "exponential", description="Distribution of processing times."
    )
    cv: float | None = Field(
        None,
        gt=0,
        le=10,
        description="Coefficient of variation of processing times; only (and always) with "
        "processing 'gamma' or 'lognormal'.",
    )
    buffer_after: int | None = Field(
        None, ge=0, le=1_000_000, description="Capacity of the buffer behind; absent on the last."
    )
    mtbf_s: float | None = Field(None, gt=0, description="Mean busy time between failures, s.")
    mttr_s: float | None = Field(None, gt=0, description="Mean time to repair, s.")
    failure_law: Literal["exponential", "weibull"] = Field(
        "exponential", description="Distribution of busy time to failure (needs mtbf_s)."
    )
    failure_shape: float | None = Field(
        None,
        ge=0.1,
        le=20,
        description="Weibull shape of busy time to failure; only (and always) with "
        "failure_law 'weibull'.",
    )
    repair_law: Literal["exponential", "lognormal"] = Field(
        "exponential", description="Distribution of repair times (needs mttr_s)."
    )
    repair_cv: float | None = Field(
        None,
        gt=0,
        le=10,
        description="Coefficient of variation of repair times; only (and always) with "
        "repair_law 'lognormal'.",
    )
    setpoints: Setpoints = Field(default_factory=Setpoints, description="Setpoint limits.")
    thermal: Thermal | None = Field(None, description="Thermal dynamics; makes it thermal.")
    scrap: Scrap = Field(default_factory=Scrap, description="Scrap model.")
    energy: Energy = Field(default_factory=Energy, description="Energy model.")
    wear: Wear = Field(default_factory=Wear, description="Wear model.")
    sensors: Sensors = Field(default_factory=Sensors, description="Sensor model.")

    @model_validator(mode="after")
    def _consistent(self) -> Station:
        if (self.mtbf_s is None) != (self.mttr_s is None):
            raise ValueError(
                f"mtbf_s and mttr_s come together: give both or neither "
                f"(got mtbf_s={self.mtbf_s}, mttr_s={self.mttr_s})"
            )
        _check_laws(self)
        sp = self.setpoints
        if self.thermal is None and sp.temperature is not None:
            raise ValueError("setpoints.temperature needs a [thermal] section on this station")
        if self.thermal is not None and sp.temperature is None:
            th = self.thermal
            mid = 0.5 * (th.ideal_min_c + th.ideal_max_c)
            derived = Setpoint(
                min=th.ideal_min_c - 20.0,
                max=th.ideal_max_c + 20.0,
                nominal=mid,
                max_step=5.0,
                resolution=0.5,
            )
            object.__setattr__(self, "setpoints", Setpoints(speed=sp.speed, temperature=derived))
        temp = self.setpoints.temperature
        if self.thermal is not None and temp is not None and temp.max <= self.thermal.ambient_c:
            raise ValueError(
                f"setpoints.temperature.max ({temp.max}) must be above "
                f"thermal.ambient_c ({self.thermal.ambient_c}): the heater only heats"
            )
        return self

    @property
    def is_thermal(self) -> bool:
        """Whether the station has a temperature setpoint."""
        return self.thermal is not None


_PROCESSING_WITH_CV = ("gamma", "lognormal")

# Keys added after specs (and surrogates trained on them) were in use, with their defaults: a
# key at its default stays out of `spec_hash`, so a spec that uses none keeps its old hash.
_HASH_OPTIONAL_KEYS = {
    "cv": None,
    "failure_law": "exponential",
    "failure_shape": None,
    "repair_law": "exponential",
    "repair_cv": None,
}


def _check_laws(st: Station) -> None:
    """Raise ValueError unless each law of `st` has exactly the parameters it takes."""
    if st.processing in _PROCESSING_WITH_CV and st.cv is None:
        raise ValueError(f"processing {st.processing!r} needs cv (its coefficient of variation)")
    if st.processing not in _PROCESSING_WITH_CV and st.cv is not None:
        raise ValueError(
            f"cv ({st.cv}) is only for processing 'gamma' or 'lognormal', "
            f"not {st.processing!r}: remove it or change the law"
        )
    if st.failure_law == "weibull":
        if st.mtbf_s is None:
            raise ValueError("failure_law 'weibull' needs mtbf_s and mttr_s (it has neither)")
        if st.failure_shape is None:
            raise ValueError("failure_law 'weibull' needs failure_shape (the Weibull shape)")
    elif st.failure_shape is not None:
        raise ValueError(
            f"failure_shape ({st.failure_shape}) is only for failure_law 'weibull', "
            f"not {st.failure_law!r}"
        )
    if st.repair_law == "lognormal":
        if st.mttr_s is None:
            raise ValueError("repair_law 'lognormal' needs mtbf_s and mttr_s (it has neither)")
        if st.repair_cv is None:
            raise ValueError(
                "repair_law 'lognormal' needs repair_cv (its coefficient of variation)"
            )
    elif st.repair_cv is not None:
        raise ValueError(
            f"repair_cv ({st.repair_cv}) is only for repair_law 'lognormal', not {st.repair_law!r}"
        )


class Economics(BaseModel):
    """Prices that turn KPIs into a profit rate."""

    model_config = _STRICT
    price_per_good_part: float = Field(10.0, ge=0, description="Revenue per good part.")
    cost_per_scrap_part: float = Field(2.0, ge=0, description="Cost per scrapped part.")
    energy_price_per_kwh: float = Field(0.15, ge=0, description="Energy price per kWh.")
    currency: str = Field("EUR", description="Currency of the three prices (a label only).")


class LineSpec(BaseModel):
    """A serial production line: stations in flow order, their buffers and the economics."""

    model_config = _STRICT
    name: str = Field(min_length=1, description="Name of the line.")
    description: str = Field("", description="Free text.")
    stations: tuple[Station, ...] = Field(
        min_length=1, strict=False, description="Stations in flow order."
    )
    economics: Economics = Field(default_factory=Economics, description="Economics.")

    @model_validator(mode="after")
    def _line(self) -> LineSpec:
        names = [s.name for s in self.stations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"station names must be unique (repeated: {', '.join(dupes)})")
        for i, st in enumerate(self.stations[:-1]):
            if st.buffer_after is None:
                raise ValueError(f"stations[{i}] ({st.name!r}): buffer_after is required")
        if self.stations[-1].buffer_after is not None:
            raise ValueError(
                f"stations[{len(self.stations) - 1}] ({self.stations[-1].name!r}): the last "
                f"station has no buffer behind it; remove buffer_after "
                f"(got {self.stations[-1].buffer_after})"
            )
        return self

    @property
    def n_stations(self) -> int:
        """Number of stations."""
        return len(self.stations)

    def station_index(self, name: str) -> int:
        """Return the position of the station called `name`; raise SpecError if unknown."""
        for i, st in enumerate(self.stations):
            if st.name == name:
                return i
        raise SpecError(f"line {self.name!r}: no station named {name!r}")

    def spec_hash(self) -> str:
        """Return the sha256 of the spec with all defaults filled (stable across key order).

        The law keys added later (`cv`, `failure_law`, ...) count only where they differ from
        their defaults, so a spec that does not use them hashes as it did before they existed.
        """
        data = self.model_dump(mode="json")
        for st in data["stations"]:
            for key, default in _HASH_OPTIONAL_KEYS.items():
                if st.get(key) == default:
                    del st[key]
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _key_path(loc: tuple[int | str, ...], data: Any) -> str:
    """Render a pydantic error location as `stations[2] ('oven').thermal.heater_kw`."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            if isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    out += f" ({node['name']!r})"
            else:
                node = None
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def parse_spec(data: dict[str, Any], source: str = "<spec>") -> LineSpec:
    """Validate a spec given as a mapping; `source` names where it came from in errors."""
    try:
        return LineSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        lines = []
        for err in errors:
            loc = tuple(err["loc"])
            if err["type"] == "too_short" and any(
                len(o["loc"]) > len(loc) and tuple(o["loc"][: len(loc)]) == loc for o in errors
            ):
                continue  # an item below failed; the count is a consequence, not the cause
            path = _key_path(loc, data)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            lines.append(f"{source}: {path}: {msg}{shown}")
        raise SpecError("\n".join(lines)) from None


def load_spec(path: str | Path) -> LineSpec:
    """Load and validate a line spec from a TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{p}: cannot read line spec: {exc.strerror or exc}") from None
    return loads_spec(text, str(p))


def loads_spec(text: str, source: str = "<string>") -> LineSpec:
    """Parse and validate a line spec from TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: TOML syntax error: {exc}") from None
    return parse_spec(data, source)


BUNDLED_LINES = ("example", "two-station", "long", "varied")
"""Lines shipped in the package, loadable by name."""


def bundled_spec(name: str = "example") -> LineSpec:
    """Load a line shipped with the package: `example` (the default), `two-station`, ..."""
    if name not in BUNDLED_LINES:
        raise SpecError(f"no bundled line named {name!r} (have: {', '.join(BUNDLED_LINES)})")
    res = resources.files("linetwin.twin") / "lines" / f"{name}.toml"
    return loads_spec(res.read_text(encoding="utf-8"), f"<bundled {name}.toml>")


def spec_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of a line spec file."""
    return LineSpec.model_json_schema()
