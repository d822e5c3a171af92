"""The calibration's HTML report: one self-contained file (plots inlined as PNG, no scripts).

Sections: the summary and the validation coverage; held-out KPIs with the fitted and the
skeleton twin's 95% intervals against the plant (a plot and a table); per-station shares and
buffer levels (table); every parameter with its value, interval, source and reason; the law
choices with each candidate's AIC; per station, the empirical distribution of processing
intervals against the fitted law's (the same smoothing by the log interval applied), and the
Kaplan-Meier survival of busy times to failure and of repair times against the fitted laws.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from linetwin.twin.calibrate.errors import CalibrationError
from linetwin.twin.calibrate.laws import CONTAMINATION, IntervalData, Lifetimes, _smoothed
from linetwin.twin.calibrate.numeric import norm_sf

if TYPE_CHECKING:
    from linetwin.twin.calibrate.run import Calibration

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1d2733}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #d5dbe3}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid
#e3e8ee;text-align:right}th:first-child,td:first-child{text-align:left}
td.l{text-align:left}img{max-width:100%}.muted{color:#687585}.out{color:#b3261e;font-weight:600}
code{background:#f1f4f7;padding:0 .25em}
"""
KPI_LABELS = {
    "throughput_per_hour": "throughput, good parts/h",
    "scrap_rate": "scrap rate",
    "energy_kwh_per_good_part": "energy per good part, kWh",
}
MAX_PLOTS = 12


def write_report(path: str | os.PathLike[str], result: Calibration) -> None:
    """Write the report of `result` to `path`, atomically."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    s = result.summary
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>linetwin calibrate: {_e(s['line'])}</title><style>{STYLE}</style>",
        f"<h1>Calibration of <code>{_e(s['line'])}</code> on "
        f"<code>{_e(Path(result.recording).name)}</code></h1>",
        _summary(s),
        "<h2>Held-out validation</h2>",
    ]
    if result.validation:
        parts += [
            _img(_kpi_plot(result.validation)),
            _validation_table([r for r in result.validation if r["station"] is None]),
            "<h3>Stations: status shares and buffer levels</h3>",
            _validation_table([r for r in result.validation if r["station"] is not None]),
        ]
    else:
        parts.append("<p class=muted>No held-out tail (holdout 0): nothing validated.</p>")
    parts += ["<h2>Parameters</h2>", _param_table(result), "<h2>Laws (chosen by AIC)</h2>"]
    parts.append(_law_table(result))
    plots = [(name, f) for name, f in result.stations.items() if f.intervals is not None]
    if plots:
        parts.append("<h2>Processing times: log against fitted law</h2>")
        for name, f in plots[:MAX_PLOTS]:
            law = result.spec.stations[result.spec.station_index(name)]
            assert f.intervals is not None
            parts.append(_img(_interval_plot(name, f.intervals, law.processing, law, s)))
        if len(plots) > MAX_PLOTS:
            parts.append(f"<p class=muted>{len(plots) - MAX_PLOTS} more stations not drawn.</p>")
    lives = [
        (name, f.lifetimes)
        for name, f in result.stations.items()
        if any(life.n_events >= 3 for life in f.lifetimes.values())
    ]
    if lives:
        parts.append(
            "<h2>Busy time to failure and repair time: log (Kaplan-Meier) against the fitted "
            "law</h2>"
        )
        for name, lt in lives[:MAX_PLOTS]:
            st = result.spec.stations[result.spec.station_index(name)]
            parts.append(_img(_survival_plot(name, lt, st)))
    parts.append("</html>\n")
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text("\n".join(parts), encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CalibrationError(
            f"{target}: cannot write the report: {exc.strerror or exc}"
        ) from None


def _e(x: object) -> str:
    return html.escape(str(x))


def _n(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else _e(x)


def _summary(s: dict[str, Any]) -> str:
    text = (
        f"<p>{s['rows']} rows every {_n(s['log_interval_s'])} s; fitted on the first "
        f"{s['fit_rows']} ({_n(s['fit_span_h'], 3)} h), held out the last {s['holdout']:.0%}. "
        f"{s['fitted']} parameters fitted, {s['kept']} kept from the skeleton (reasons below)."
    )
    v = s.get("validation_summary")
    if v:
        cov = v["coverage"]
        text += (
            f" Held-out tail: {_n(v['tail_h'], 3)} h, {v['replications']} replications, "
            f"{v['setpoint_changes']} setpoint changes; the plant falls inside the fitted "
            f"twin's 95% interval on {cov['fitted']['inside']} of {cov['fitted']['rows']} "
            f"rows, the skeleton's on {cov['skeleton']['inside']} of {cov['skeleton']['rows']}."
        )
    if "warning" in s:
        text += f" <b>{_e(s['warning'])}</b>"
    return text + "</p>"


def _cell(d: dict[str, Any]) -> str:
    cls = " class=out" if d.get("inside") is False else ""
    return (
        f"<td{cls}>{_n(d.get('mean'))} <span class=muted>[{_n(d.get('low'))}, "
        f"{_n(d.get('high'))}]</span></td>"
    )


def _validation_table(rows: list[dict[str, Any]]) -> str:
    body = "".join(
        f"<tr><td>{_e(KPI_LABELS.get(r['kpi'], r['kpi']))}</td><td class=l>"
        f"{_e(r['station'] or '')}</td><td>{_n(r['plant'])}</td>{_cell(r['fitted'])}"
        f"{_cell(r['skeleton'])}</tr>"
        for r in rows
    )
    return (
        "<table><tr><th>KPI</th><th>station</th><th>plant</th><th>fitted twin [95%]</th>"
        f"<th>skeleton twin [95%]</th></tr>{body}</table>"
        "<p class=muted>Red: the plant falls outside the twin's interval.</p>"
    )


def _param_table(result: Calibration) -> str:
    rows = []
    for p in result.params:
        iv = "" if p.low is None else f"[{_n(p.low)}, {_n(p.high)}]"
        rows.append(
            f"<tr><td>{_e(p.station)}</td><td class=l><code>{_e(p.key)}</code></td>"
            f"<td>{_n(p.value)}</td><td>{iv}</td><td>{_n(p.skeleton)}</td>"
            f"<td class=l>{_e(p.status)}</td><td class=l>{_e(p.reason)}</td></tr>"
        )
    return (
        "<table><tr><th>station</th><th>key</th><th>value</th><th>95% interval</th>"
        f"<th>skeleton</th><th>source</th><th>why</th></tr>{''.join(rows)}</table>"
    )


def _law_table(result: Calibration) -> str:
    rows = []
    for c in result.laws:
        cands = ", ".join(
            f"{f.law} {f.aic:.1f}" + ("" if math.isnan(f.shape) else f" ({f.shape:.3g})")
            for f in c.candidates
        )
        law = c.chosen.law if c.chosen else "-"
        rows.append(
            f"<tr><td>{_e(c.what)}</td><td class=l>{_e(law)}</td><td class=l>{_e(cands)}</td>"
            f"<td class=l>{_e(c.reason)}</td></tr>"
        )
    if not rows:
        return "<p class=muted>No law could be chosen: too few intervals or failures.</p>"
    return (
        "<table><tr><th>what</th><th>law</th><th>candidates: AIC (cv or shape)</th>"
        f"<th>why</th></tr>{''.join(rows)}</table>"
    )


def _img(png: bytes) -> str:
    return f"<p><img alt='' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _kpi_plot(rows: list[dict[str, Any]]) -> bytes:
    import matplotlib.pyplot as plt

    main = [r for r in rows if r["station"] is None]
    fig, axes = plt.subplots(1, len(main), figsize=(4 * len(main), 2.8))
    for ax, r in zip(np.atleast_1d(axes), main, strict=True):
        for i, name in enumerate(("fitted", "skeleton")):
            d = r[name]
            if d["mean"] is None:
                continue
            ax.errorbar(
                [i], [d["mean"]], yerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]],
                fmt="o", capsize=5, color=("#1f6fb2", "#8a8f98")[i],
            )  # fmt: skip
        if r["plant"] is not None:
            ax.axhline(r["plant"], color="#b3261e", lw=1.5, label="plant")
        ax.set_xticks([0, 1], ["fitted", "skeleton"])
        ax.set_xlim(-0.6, 1.6)
        ax.set_title(KPI_LABELS[r["kpi"]], fontsize=10)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    return _png(fig)


def _interval_plot(
    name: str, data: IntervalData, law: str, station: Any, s: dict[str, Any]
) -> bytes:
    import matplotlib.pyplot as plt

    dt = s["log_interval_s"]
    fig, ax = plt.subplots(figsize=(7, 2.6))
    top = int(np.quantile(np.repeat(data.d, data.n.astype(int)), 0.995)) + 1
    grid = np.arange(0, top + 1)
    emp = np.zeros(top + 1)
    np.add.at(emp, np.minimum(data.d, top), data.n)
    emp /= emp.sum()
    model = np.zeros(top + 1)
    cv = getattr(station, "cv", None) or 1.0
    for v in np.unique(data.v):  # the law smoothed as the log sees it, mixed over speeds
        one = IntervalData(grid, np.full(grid.size, v), np.ones(grid.size))
        p = _smoothed(one, law, station.cycle_time_s, cv)
        late = _smoothed(IntervalData(grid - 1, one.v, one.n), law, station.cycle_time_s, cv)
        model += data.n[data.v == v].sum() * ((1 - CONTAMINATION) * p + CONTAMINATION * late)
    model /= max(model.sum(), 1e-12)
    ax.bar(grid * dt, emp, width=0.8 * dt, color="#c9d6e3", label="log")
    ax.plot(grid * dt, model, color="#1f6fb2", lw=1.5, label=f"fitted {law}")
    ax.set_xlabel("time between completions while busy, s")
    ax.set_ylabel("share")
    ax.set_title(name, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def kaplan_meier(life: Lifetimes) -> tuple[np.ndarray, np.ndarray]:
    """The product-limit estimate of the survival function with censoring and left
    truncation: event times `(k,)` and the survival just after each `(k,)`."""
    times = np.unique(life.end[life.event])
    surv = np.ones(times.size)
    s = 1.0
    for i, t in enumerate(times):
        at_risk = int(((life.start < t) & (life.end >= t)).sum())
        deaths = int(((life.end == t) & life.event).sum())
        if at_risk:
            s *= 1.0 - deaths / at_risk
        surv[i] = s
    return times, surv


def _law_survival(t: np.ndarray, law: str, mean: float, shape: float | None) -> np.ndarray:
    if law == "weibull" and shape:
        eta = mean / math.gamma(1.0 + 1.0 / shape)
        return np.exp(-((t / eta) ** shape))
    if law == "lognormal" and shape:
        sig = math.sqrt(math.log1p(shape * shape))
        mu = math.log(mean) - 0.5 * sig * sig
        return norm_sf((np.log(np.maximum(t, 1e-12)) - mu) / sig)
    return np.exp(-t / mean)


def _survival_plot(name: str, lifetimes: dict[str, Lifetimes], st: Any) -> bytes:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
    spec_of = {
        "failures": ("busy time to failure, s", getattr(st, "failure_law", "exponential"),
                     st.mtbf_s, getattr(st, "failure_shape", None)),
        "repairs": ("repair time, s", getattr(st, "repair_law", "exponential"), st.mttr_s,
                    getattr(st, "repair_cv", None)),
    }  # fmt: skip
    for ax, key in zip(axes, ("failures", "repairs"), strict=True):
        label, law, mean, shape = spec_of[key]
        life = lifetimes.get(key)
        ax.set_xlabel(label)
        if life is None or life.n_events == 0 or mean is None:
            ax.text(0.5, 0.5, "no events", ha="center", transform=ax.transAxes)
            continue
        t, s = kaplan_meier(life)
        ax.step(np.r_[0.0, t], np.r_[1.0, s], where="post", color="#8a8f98", label="log")
        grid = np.linspace(0.0, float(life.end.max()), 200)
        ax.plot(grid, _law_survival(grid, law, mean, shape), color="#1f6fb2", label=law)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("share surviving")
    fig.suptitle(name, fontsize=10)
    return _png(fig)
