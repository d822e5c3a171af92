"""Turn the latest value of every mapped OPC UA node into one row of the plant-log layout.

The row's keys are the plant-log columns of `docs/recordings.md` (`time_s`, `released`,
`press.status`, `press.completed`, ...). `time_s` is seconds since the mapping's
`read.time_origin`: of the newest source timestamp among the row's values (the plant's clock;
the server timestamp where a value has none) with `time_source = "source"`, or of the
connector's clock when the row is assembled with `time_source = "client"`.

Values: `status` as its name (`starved`, `busy`, `blocked`, `down`; a code 0-3 is turned into
its name, anything else is passed on for the validator to refuse), counts as int, the rest as
float. A sensor reading with a bad status is None (an empty cell: no reading). A row is only
built when every other column has a good value; otherwise `build` says which is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from linetwin.replay.csv_layout import READINGS
from linetwin.twin.layout import STATUS_NAMES

_INTEGER = {
    "completed",
    "scrapped",
    "failures",
    "buffer_level",
    "released",
    "good_out",
    "scrap_total",
}


@dataclass(frozen=True)
class Sample:
    """The latest value of one node: `value` (Python), `good` (status), timestamps (UTC)."""

    value: Any
    good: bool
    source_time: datetime | None
    server_time: datetime | None = None


class IncompleteRowError(Exception):
    """A row cannot be built yet: the message names the column and why."""


def _convert(column: str, value: Any) -> Any:
    fld = column.rpartition(".")[2]
    if fld == "status":
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 4:
            return STATUS_NAMES[value]
        return value.strip().lower() if isinstance(value, str) else value
    if isinstance(value, bool):
        return value
    if fld in _INTEGER:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, int):
        return float(value)
    return value


def build_row(
    columns: Mapping[str, str],
    samples: Mapping[str, Sample],
    *,
    time_source: str,
    time_origin: datetime,
    now: datetime,
) -> dict[str, Any]:
    """Return one plant-log row from `samples` keyed by node id; `columns` maps column -> node.

    Raises IncompleteRowError naming the first column without a good value (readings excepted).
    """
    row: dict[str, Any] = {"time_s": math.nan}
    newest: datetime | None = None
    for column, node_id in columns.items():
        sample = samples.get(node_id)
        reading = column.rpartition(".")[2] in READINGS
        if sample is None:
            raise IncompleteRowError(f"{column} (node {node_id}): no value received yet")
        if not sample.good:
            if not reading:
                raise IncompleteRowError(
                    f"{column} (node {node_id}): the server reports a bad value"
                )
            row[column] = None
        else:
            row[column] = _convert(column, sample.value)
        stamp = sample.source_time or sample.server_time
        if stamp is not None and (newest is None or stamp > newest):
            newest = stamp
    when = now if time_source == "client" or newest is None else newest
    row["time_s"] = (when - time_origin).total_seconds()
    return row


async def sleep_unless(event: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` or until `event` is set; return whether it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(seconds, 0.0))
    return event.is_set()
