"""Online honesty: predictions paired with what the line then did over the same window."""

import numpy as np
import pytest

from linetwin.optimizer.honesty import KPIS, PredictionAudit
from linetwin.twin import Twin, bundled_spec, window_kpis


def test_pairs_close_after_the_horizon_and_correct_by_the_bias() -> None:
    twin = Twin(bundled_spec("example"), 1, seed=3)
    twin.advance(3600.0)
    audit = PredictionAudit(horizon_s=600.0, period_s=60.0)
    raw = {
        "throughput_per_hour": (200.0, 5.0),
        "scrap_rate": (0.01, 0.002),
        "energy_kwh_per_good_part": (0.5, 0.05),
        "profit_per_hour": (600.0, 20.0),
    }
    snaps = [twin.snapshot()]
    for _ in range(30):
        snaps.append(twin.step(60.0))
    for i, snap in enumerate(snaps):
        audit.observe(snap, raw)
        closed = max(0, i - 9)  # a pair closes once its 600 s have passed
        assert len(audit.recent) == closed
    # the same windows, measured independently
    realised = np.array(
        [
            [float(getattr(window_kpis(snaps[j], snaps[j + 10]), k)[0]) for k in KPIS]
            for j in range(len(snaps) - 10)
        ]
    )
    want = np.array([raw[k][0] for k in KPIS]) - np.nanmean(realised, axis=0)  # NaN: unmeasured
    summary = audit.summary()
    got = np.array([summary["kpis"][k]["bias"] for k in KPIS])
    np.testing.assert_allclose(got, want, rtol=1e-9)
    finite = np.isfinite(realised).sum(axis=0)
    assert [summary["kpis"][k]["pairs"] for k in KPIS] == finite.tolist()
    pair = summary["recent"][-1]
    assert pair["end_time_s"] - pair["start_time_s"] == pytest.approx(600.0)
    corrected = audit.correct(raw)
    for i, k in enumerate(KPIS):
        assert corrected[k][0] == pytest.approx(raw[k][0] - want[i])
        assert corrected[k][1] >= raw[k][1]  # widened by the bias's uncertainty


def test_nothing_predicted_opens_no_pair_and_too_few_pairs_correct_nothing() -> None:
    twin = Twin(bundled_spec("two-station"), 1, seed=1)
    audit = PredictionAudit(horizon_s=120.0, period_s=60.0)
    audit.observe(twin.snapshot(), None)  # a fallback: nothing predicted
    audit.observe(twin.step(200.0), None)
    assert audit.summary()["open_pairs"] == 0 and audit.summary()["recent"] == []
    raw = {k: (1.0, 0.1) for k in KPIS}
    assert audit.correct(raw) == raw  # no pair closed yet: no bias to take out
