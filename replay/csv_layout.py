"""Describe the CSV layout of plant logs and check a log's header against a line spec.

The layout is wide: one CSV row per sampling instant of one line (one scenario), one column
per value. Columns are a time column (`time_s`, seconds, or `timestamp`, ISO 8601 with a UTC
offset), the optional line counters `released`, `good_out`, `scrap_total`, and per station
`<station>.<field>` with the station's name from the line spec and a field of
`STATION_FIELDS`. `docs/recordings.md` ("Importing plant logs (CSV)") documents units, which
columns are required and how missing ones are filled.

    layout = parse_header(["time_s", "press.status", ...], spec, "plant.csv")
    layout.column_types()     # Arrow type per column, for pyarrow's CSV reader
    csv_header(spec)          # every column of the layout, in export order
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from linetwin.replay.errors import ImportCsvError
from linetwin.twin.layout import STATUS_NAMES
from linetwin.twin.recorder import SCALAR_COLUMNS
from linetwin.twin.spec import LineSpec

TIME_COLUMNS = ("time_s", "timestamp")
"""Exactly one of these: seconds as a number, or an ISO 8601 date-time with a UTC offset."""

LINE_COUNTERS = SCALAR_COLUMNS
"""Optional line columns (cumulative parts); derived from the station counters when absent."""

STATION_FIELDS: dict[str, pa.DataType] = {
    "status": pa.dictionary(pa.int32(), pa.string()),
    "speed": pa.float64(),
    "temperature_setpoint_c": pa.float64(),
    "temperature_c": pa.float64(),
    "temperature_valid": pa.bool_(),
    "power_kw": pa.float64(),
    "power_valid": pa.bool_(),
    "vibration_mm_s": pa.float64(),
    "vibration_valid": pa.bool_(),
    "completed": pa.int64(),
    "scrapped": pa.int64(),
    "failures": pa.int64(),
    "energy_kwh": pa.float64(),
    "wear": pa.float64(),
    "buffer_level": pa.int64(),
}
"""Per-station fields and the Arrow type each cell is parsed as, in export order."""

REQUIRED_FIELDS = ("status", "speed", "completed", "scrapped")
"""Required on every station; `temperature_setpoint_c` is required on stations with a
temperature setpoint, `buffer_level` on every station but the last (it has no buffer behind),
and `energy_kwh` where `power_kw` is absent."""

READINGS = {
    "temperature_c": "temperature_valid",
    "power_kw": "power_valid",
    "vibration_mm_s": "vibration_valid",
}
"""Sensor readings (the only cells that may be empty) and their optional validity flags."""

STATUS_VALUES: dict[str, int] = {name: code for code, name in enumerate(STATUS_NAMES)}
STATUS_VALUES.update({str(code): code for code in range(len(STATUS_NAMES))})
"""Accepted `status` cells (compared after trimming blanks and lower-casing) and their codes."""


TRUE_VALUES = ("1", "true", "True", "TRUE")
FALSE_VALUES = ("0", "false", "False", "FALSE")
"""Accepted cells of the `*_valid` flag columns."""


def csv_error(source: str, line: int, column: str | None, problem: str) -> ImportCsvError:
    """Build the error for `problem` at 1-based CSV `line` (1 is the header) and `column`."""
    where = f"{source}: line {line}" + ("" if column is None else f", column {column!r}")
    return ImportCsvError(f"{where}: {problem}", line=line, column=column)


def station_fields(spec: LineSpec, index: int) -> tuple[str, ...]:
    """Return the fields station `index` of `spec` may have, in export order."""
    st = spec.stations[index]
    skip = set()
    if st.setpoints.temperature is None:
        skip.add("temperature_setpoint_c")
    if index == spec.n_stations - 1:
        skip.add("buffer_level")
    return tuple(f for f in STATION_FIELDS if f not in skip)


def csv_header(spec: LineSpec, time_column: str = "time_s") -> list[str]:
    """Return every column of the layout for `spec`, in export order."""
    names = [time_column, *LINE_COUNTERS]
    for i, st in enumerate(spec.stations):
        names += [f"{st.name}.{field}" for field in station_fields(spec, i)]
    return names


@dataclass(frozen=True)
class Layout:
    """Where each value of a recording comes from in one CSV file.

    `station[field]` holds, per station in flow order, the column name or None where the CSV
    lacks it (a required one is never None); `line[counter]` likewise for the line counters.
    """

    source: str
    spec: LineSpec
    names: tuple[str, ...]
    time_column: str
    line: dict[str, str | None]
    station: dict[str, tuple[str | None, ...]]

    def column_types(self) -> dict[str, pa.DataType]:
        """Return the Arrow type to parse each column as (`timestamp` is read as text)."""
        types = {self.time_column: pa.float64() if self.time_column == "time_s" else pa.string()}
        types.update({name: pa.int64() for name in self.line.values() if name is not None})
        for field, cols in self.station.items():
            types.update({c: STATION_FIELDS[field] for c in cols if c is not None})
        return types

    def derived(self) -> tuple[str, ...]:
        """Name the recorded values the CSV lacks (`released`, `press.wear`, ...): they are
        derived or filled by the documented rules (validity flags are not listed)."""
        out = [name for name, col in self.line.items() if col is None]
        flags = set(READINGS.values())
        for i, st in enumerate(self.spec.stations):
            for field in station_fields(self.spec, i):
                if self.station[field][i] is None and field not in flags:
                    out.append(f"{st.name}.{field}")
        return tuple(out)


def _names_list(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def parse_header(names: Sequence[str], spec: LineSpec, source: str) -> Layout:
    """Check a CSV header against the layout and `spec`; return where each value comes from.

    Raises ImportCsvError (line 1, naming the column) for an empty, repeated or unknown column,
    an unknown station or field, a field the station cannot have, no or two time columns, a
    missing required column, or a validity flag without its reading.
    """

    def err(column: str | None, problem: str) -> ImportCsvError:
        return csv_error(source, 1, column, problem)

    index = {st.name: i for i, st in enumerate(spec.stations)}
    seen: set[str] = set()
    found: dict[tuple[str, int], str] = {}
    line: dict[str, str | None] = dict.fromkeys(LINE_COUNTERS)
    times = []
    for pos, name in enumerate(names, start=1):
        if name.strip() == "":
            raise err(None, f"column {pos} has no name")
        if name in seen:
            raise err(name, "column appears twice in the header")
        seen.add(name)
        if name in TIME_COLUMNS:
            times.append(name)
            continue
        if name in LINE_COUNTERS:
            line[name] = name
            continue
        station, dot, field = name.rpartition(".")
        if not dot:
            raise err(
                name,
                f"unknown column (expected {' or '.join(TIME_COLUMNS)}, "
                f"{', '.join(LINE_COUNTERS)}, or <station>.<field>)",
            )
        if station not in index:
            raise err(
                name,
                f"unknown station {station!r}: line {spec.name!r} has {_names_list(list(index))}",
            )
        i = index[station]
        if field not in STATION_FIELDS:
            raise err(name, f"unknown field {field!r} (fields: {', '.join(STATION_FIELDS)})")
        if field not in station_fields(spec, i):
            why = (
                "has no buffer behind it (it is the last station)"
                if field == "buffer_level"
                else "has no temperature setpoint in the line spec"
            )
            raise err(name, f"station {station!r} {why}")
        found[(field, i)] = name
    if len(times) != 1:
        problem = "no time column" if not times else "two time columns"
        raise err(None, f"{problem}: give exactly one of {' or '.join(TIME_COLUMNS)}")
    for (field, i), name in found.items():
        reading = next((r for r, v in READINGS.items() if v == field), None)
        if reading is not None and (reading, i) not in found:
            raise err(name, f"validity flag without its reading {spec.stations[i].name}.{reading}")
    for i, st in enumerate(spec.stations):
        allowed = station_fields(spec, i)
        required = [*REQUIRED_FIELDS]
        required += [f for f in ("temperature_setpoint_c", "buffer_level") if f in allowed]
        if ("power_kw", i) not in found:
            required.append("energy_kwh")
        for field in required:
            if (field, i) not in found:
                extra = " (required when power_kw is absent)" if field == "energy_kwh" else ""
                raise err(f"{st.name}.{field}", f"required column is missing{extra}")
    columns = {
        field: tuple(found.get((field, i)) for i in range(spec.n_stations))
        for field in STATION_FIELDS
    }
    return Layout(source, spec, tuple(names), times[0], line, columns)
