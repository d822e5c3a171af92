"""`POST /v1/whatif`: candidate setpoints evaluated by the surrogate and by forked twins."""

from __future__ import annotations

from fastapi import APIRouter

from linetwin.api.auth import Principal
from linetwin.api.deps import WHAT_IF, RuntimeDep
from linetwin.api.problems import validation_error
from linetwin.api.routes.common import AUTH_ERRORS, TWIN_KPIS, finite, interval
from linetwin.api.schemas import Estimate, WhatIfIn, WhatIfOut, WhatIfResult
from linetwin.twin.kpi import Kpis
from linetwin.twin.params import setpoints_to_mapping

MAX_TWIN_CANDIDATES = 8

router = APIRouter(tags=["engineering"])


@router.post("/v1/whatif", response_model=WhatIfOut, responses=AUTH_ERRORS)
def post_whatif(body: WhatIfIn, runtime: RuntimeDep, _: Principal = WHAT_IF) -> WhatIfOut:
    """Evaluate candidate setpoints from the latest snapshot with the surrogate (mean and
    calibrated std) and, with `twin`, with forked twin runs (mean, std, 95% CI over runs;
    every candidate sees the same random streams). Changes nothing."""
    if body.twin is not None and len(body.candidates) > MAX_TWIN_CANDIDATES:
        raise validation_error(
            ("body", "candidates"), f"at most {MAX_TWIN_CANDIDATES} candidates with twin runs"
        )
    snap, arrays = runtime.candidate_arrays(body.candidates)
    sur = runtime.surrogate_whatif(snap, arrays)
    twins: list[Kpis | None] = [None] * len(sur)
    if body.twin is not None:
        t = body.twin
        twins = list(runtime.twin_whatif(snap, arrays, t.seeds, t.hours, t.seed))
    results = []
    for j, s in enumerate(sur):
        k = twins[j]
        results.append(
            WhatIfResult(
                setpoints=setpoints_to_mapping(runtime.spec, arrays[j]),
                surrogate={
                    n: Estimate(mean=finite(m), std=finite(sd)) for n, (m, sd) in s.kpis.items()
                },
                ood_score=finite(s.ood_score),
                in_envelope=s.in_envelope,
                twin=None if k is None else {n: interval(getattr(k, n)) for n in TWIN_KPIS},
            )
        )
    return WhatIfOut(
        line_time_s=snap.time_s,
        results=results,
        runs=0 if body.twin is None else body.twin.seeds,
        hours=0.0 if body.twin is None else body.twin.hours,
    )
