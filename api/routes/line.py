"""The line: its spec, its latest state, its KPIs (now and as a trend)."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from linetwin.api.auth import Principal
from linetwin.api.deps import READ, RuntimeDep
from linetwin.api.problems import validation_error
from linetwin.api.routes.common import AUTH_ERRORS, TWIN_KPIS, finite, scalar, state_out
from linetwin.api.schemas import (
    ErrorOut,
    KpiHistoryOut,
    KpiPoint,
    KpisOut,
    LineOut,
    PredictionsOut,
    StateOut,
    StationSpecOut,
)
from linetwin.twin.kpi import window_kpis

router = APIRouter(tags=["line"])


@router.get("/v1/state", response_model=StateOut, responses=AUTH_ERRORS)
def get_state(runtime: RuntimeDep, _: Principal = READ) -> StateOut:
    """The latest snapshot of the line (scenario 0 of the real-time twin)."""
    return state_out(runtime.spec, runtime.latest_snapshot())


@router.get("/v1/line", response_model=LineOut, responses=AUTH_ERRORS)
def get_line(runtime: RuntimeDep, _: Principal = READ) -> LineOut:
    """The validated line spec served."""
    spec = runtime.spec
    stations = []
    for st in spec.stations:
        sps = {
            name: sp.model_dump(mode="json")
            for name, sp in (
                ("speed", st.setpoints.speed),
                ("temperature", st.setpoints.temperature),
            )
            if sp is not None
        }
        stations.append(
            StationSpecOut(
                name=st.name,
                cycle_time_s=st.cycle_time_s,
                setpoints=sps,
                buffer_after=st.buffer_after,
            )
        )
    return LineOut(
        name=spec.name,
        spec_hash=spec.spec_hash(),
        stations=stations,
        spec=spec.model_dump(mode="json"),
    )


@router.get(
    "/v1/kpis",
    response_model=KpisOut,
    responses={
        **AUTH_ERRORS,
        503: {"model": ErrorOut, "description": "Fewer than two snapshots yet."},
    },
)
def get_kpis(
    runtime: RuntimeDep,
    window_s: Annotated[
        float, Query(gt=0, description="Window, line s (at most `kpi_window_max_s`).")
    ] = 600.0,
    _: Principal = READ,
) -> KpisOut:
    """KPIs of the line over the last `window_s` line seconds of its snapshots."""
    most = runtime.settings.kpi_window_max_s
    if window_s > most:
        raise validation_error(
            ("query", "window_s"), f"must be at most {most:g} s", "less_than_equal"
        )
    k = runtime.kpis(window_s)
    if k is None:
        raise HTTPException(503, "not enough snapshots yet", headers={"Retry-After": "1"})
    names = [st.name for st in runtime.spec.stations]
    end = runtime.history[-1].time_s
    return KpisOut(
        window_s=k.hours * 3600.0,
        from_time_s=end - k.hours * 3600.0,
        to_time_s=end,
        throughput_per_hour=scalar(k, "throughput_per_hour"),
        scrap_per_hour=scalar(k, "scrap_per_hour"),
        scrap_rate=scalar(k, "scrap_rate"),
        energy_kwh_per_hour=scalar(k, "energy_kwh_per_hour"),
        energy_kwh_per_good_part=scalar(k, "energy_kwh_per_good_part"),
        profit_per_hour=scalar(k, "profit_per_hour"),
        oee=scalar(k, "oee"),
        availability={n: finite(float(k.availability[0, i])) for i, n in enumerate(names)},
        utilisation={n: finite(float(k.utilisation[0, i])) for i, n in enumerate(names)},
    )


@router.get("/v1/kpis/history", response_model=KpiHistoryOut, responses=AUTH_ERRORS)
def get_kpi_history(
    runtime: RuntimeDep,
    step_s: Annotated[
        float,
        Query(ge=1, le=86_400, allow_inf_nan=False, description="Line s between points."),
    ] = 60.0,
    average_s: Annotated[
        float,
        Query(gt=0, le=86_400, allow_inf_nan=False, description="Line s each point averages."),
    ] = 600.0,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest.")] = 360,
    _: Principal = READ,
) -> KpiHistoryOut:
    """The measured KPI trend over the last line day: one point at each multiple of
    `step_s` line s, averaged over the `average_s` before it (the service keeps every
    snapshot of the last `kpi_window_max_s`, one a minute before that)."""
    snaps = runtime.trend_snapshots()
    points: list[KpiPoint] = []
    if len(snaps) >= 2:
        times = [s.time_s for s in snaps]
        top = math.floor(times[-1] / step_s + 1e-9)
        ends = [(top - n) * step_s for n in range(limit)]
        last_j = -1
        for t in reversed([t for t in ends if t > times[0] + 1e-9]):
            j = bisect_right(times, t + 1e-9) - 1
            i = bisect_left(times, t - average_s - 1e-9)
            if i >= j or j == last_j:  # no window, or a gap: the same snapshot again
                continue
            last_j = j
            k = window_kpis(snaps[i], snaps[j])
            points.append(
                KpiPoint(
                    time_s=times[j],
                    window_s=times[j] - times[i],
                    **{n: scalar(k, n) for n in TWIN_KPIS},
                )
            )
    return KpiHistoryOut(step_s=step_s, average_s=average_s, points=points)


@router.get("/v1/kpis/predictions", response_model=PredictionsOut, responses=AUTH_ERRORS)
def get_predictions(runtime: RuntimeDep, _: Principal = READ) -> PredictionsOut:
    """Predicted against realised KPIs over matching windows (each prediction's horizon from
    the state it was made at), the tracked bias per KPI with its standard error, and how often
    the realised value fell inside the model's 90% band."""
    return PredictionsOut.model_validate(runtime.controller.honesty.summary())
