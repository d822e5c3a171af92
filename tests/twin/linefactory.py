"""Build line specs for tests from a compact description."""

from __future__ import annotations

from typing import Any

from linetwin.twin.spec import LineSpec, parse_spec


def station(
    name: str,
    cycle: float,
    buffer: int | None = None,
    *,
    processing: str = "exponential",
    mtbf: float | None = None,
    mttr: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Return one station table."""
    st: dict[str, Any] = {"name": name, "cycle_time_s": cycle, "processing": processing}
    if buffer is not None:
        st["buffer_after"] = buffer
    if mtbf is not None:
        st["mtbf_s"], st["mttr_s"] = mtbf, mttr
    st.update(extra)
    return st


def serial_line(
    cycles: list[float],
    buffers: list[int],
    *,
    processing: str = "exponential",
    mtbf: list[float | None] | None = None,
    mttr: list[float | None] | None = None,
    name: str = "test-line",
    cv: float | None = None,
    **extra: Any,
) -> LineSpec:
    """Return a plain serial line: no scrap, default energy, optional failures.

    `cv` goes with processing "gamma" or "lognormal"; `extra` keys go to every station that
    fails (failure_law, failure_shape, repair_law, repair_cv).
    """
    n = len(cycles)
    stations = []
    for i, c in enumerate(cycles):
        f = mtbf[i] if mtbf else None
        r = mttr[i] if mttr else None
        more: dict[str, Any] = dict(extra) if f is not None else {}
        if cv is not None:
            more["cv"] = cv
        stations.append(
            station(
                f"s{i}",
                c,
                buffers[i] if i < n - 1 else None,
                processing=processing,
                mtbf=f,
                mttr=r,
                **more,
            )
        )
    return parse_spec({"name": name, "stations": stations}, "<test>")
