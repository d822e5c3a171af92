"""The service's settings: one class, filled from `LINETWIN_*` environment variables and flags.

Every field `name` may come from the environment variable `LINETWIN_<NAME>` (`LINETWIN_PORT`,
`LINETWIN_MODEL_DIR`, ...); a flag given on the command line wins over the environment, which
wins over the default. `LINETWIN_DATA_DIR` is the same variable the admin commands read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linetwin.api.errors import UsageError
from linetwin.api.storage import default_data_dir

ENV_PREFIX = "LINETWIN_"
ModeName = Literal["closed", "advisory", "manual"]
PlantName = Literal["twin", "external"]


class Settings(BaseModel):
    """How `linetwin serve` runs: the line, its model, where data lives, where to listen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    line: str | None = Field(
        default=None, description="Line spec TOML file or bundled line name; None: the example."
    )
    model_dir: Path | None = Field(
        default=None, description="Surrogate checkpoint folder; None: the line's default model."
    )
    data_dir: Path = Field(
        default_factory=default_data_dir, description="Folder of the SQLite database."
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on.")
    mode: ModeName = Field(default="advisory", description="Controller mode at start.")
    plant: PlantName = Field(
        default="twin",
        description="The plant: the real-time twin (the demo) or an external line whose rows "
        "arrive at POST /v1/plant/snapshots or through the OPC UA connector (--opcua).",
    )
    stale_after_s: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="External plant: its data are stale after this many wall s without a row "
        "(or a gap of as many plant s between rows).",
    )
    opcua: Path | None = Field(
        default=None,
        description="External plant: read it and write setpoints through the OPC UA server "
        "this mapping TOML names (docs/opcua.md).",
    )
    record: Path | None = Field(
        default=None,
        description="Record every snapshot to this Parquet file (docs/recordings.md); it must "
        "not exist yet, and is complete once the service stops.",
    )
    speed: float = Field(
        default=60.0, gt=0, allow_inf_nan=False, description="Line seconds per wall second."
    )
    tick_s: float = Field(
        default=1.0, gt=0, allow_inf_nan=False, description="Line seconds between snapshots."
    )
    period_s: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="Line seconds between controller decisions (and the recent-throughput window).",
    )
    budget_s: float = Field(
        default=0.08, gt=0, allow_inf_nan=False, description="Wall seconds per controller cycle."
    )
    seed: int = Field(default=0, description="Seed of the real-time twin.")
    rate_per_s: float = Field(
        default=200.0,
        ge=0,
        allow_inf_nan=False,
        description="Requests per second each API key may sustain (token bucket); 0: no limit.",
    )
    rate_burst: int = Field(
        default=400, ge=1, description="Requests an API key may make at once (bucket size)."
    )
    silent_after_s: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="Wall seconds without an acknowledgement before a client counts as silent.",
    )
    kpi_window_max_s: float = Field(
        default=3600.0,
        gt=0,
        allow_inf_nan=False,
        description="Longest KPI window, line s (the runtime keeps this much snapshot history).",
    )

    max_body_bytes: int = Field(
        default=65_536,
        ge=1024,
        description="Largest request body, bytes, of every route but what-if (413 past it).",
    )
    max_whatif_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest body of POST /v1/whatif, bytes."
    )
    max_plant_body_bytes: int = Field(
        default=16_777_216,
        ge=1024,
        description="Largest body of POST /v1/plant/snapshots, bytes (16 MiB: about 850 rows "
        "of a 50-station line as JSON, 3,000 as CSV; send a day in batches).",
    )
    max_errors: int = Field(
        default=20, ge=1, description="Validation errors listed in a 422 (then 'and N more')."
    )
    max_streams_per_key: int = Field(
        default=8,
        ge=1,
        description="Event streams and long polls one API key may hold open at once (429).",
    )
    key_recheck_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        allow_inf_nan=False,
        description="Wall s between checks that the key of an open stream or long poll is "
        "still active (a revoked key's requests end).",
    )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Build settings from `environ` (default: `os.environ`) and flags (None: not given).

        Invalid values raise `UsageError` naming the field and where its value came from.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for name in cls.model_fields:
            var = ENV_PREFIX + name.upper()
            if env.get(var):
                values[name], origin[name] = env[var], var
        for name, value in flags.items():
            if name not in cls.model_fields:
                raise UsageError(f"unknown setting {name!r}")
            if value is not None:
                values[name], origin[name] = value, f"--{name.replace('_', '-')}"
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "settings"
            where = origin.get(field, field)
            raise UsageError(f"{where}: {first['msg']}") from None
