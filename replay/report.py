"""The HTML report of a replay: one self-contained file (plots inlined as PNG, no scripts).

Plots (matplotlib, Agg backend): the recorded KPIs over time with each policy's predicted
profit rate; setpoints recorded vs recommended for the stations whose recommendations moved
most; the distributions of counterfactual differences to the reference policy. Tables: the
summary's KPI means and differences with their 95% intervals, and the regression diffs.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from linetwin.replay.run import ReplayResult
from linetwin.replay.scan import KPI_NAMES

LABELS = {
    "throughput_per_hour": "throughput, parts/h",
    "scrap_rate": "scrap rate",
    "energy_kwh_per_good_part": "energy, kWh/part",
    "profit_per_hour": "profit rate, /h",
}
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1d2733}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #d5dbe3}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid
#e3e8ee;text-align:right}th:first-child,td:first-child{text-align:left}
img{max-width:100%}.muted{color:#687585}code{background:#f1f4f7;padding:0 .25em}
"""


def write_report(path: str | Path, result: ReplayResult, summary: dict[str, Any]) -> None:
    """Write the report of `result` (with its `summary`) to `path`, atomically."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>linetwin replay: {_e(result.spec.name)}</title><style>{STYLE}</style>",
        f"<h1>Replay of <code>{_e(Path(result.recording).name)}</code></h1>",
        _settings(summary),
        "<h2>Counterfactual runs</h2>",
        _counterfactual_table(summary),
        "<h2>KPIs over time</h2>",
        _img(_kpi_plot(result)),
        "<h2>Setpoints: recorded and recommended</h2>",
        _img(_setpoint_plot(result)),
        "<h2>Decisions</h2>",
        _decision_table(summary),
    ]
    if result.counterfactual is not None and len(result.counterfactual.policies) > 1:
        parts += ["<h2>Distributions of differences to the reference</h2>"]
        parts += [_img(_difference_plot(result))]
    if "regression" in summary:
        parts += ["<h2>Regression diff between optimizer versions</h2>", _regression(summary)]
    parts.append("</html>\n")
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(target)


def _e(x: object) -> str:
    return html.escape(str(x))


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else _e(x)


def _ci(d: dict[str, Any] | None) -> str:
    if not d or d.get("mean") is None:
        return "-"
    if d.get("ci_low") is None:
        return _num(d["mean"])
    return f"{_num(d['mean'])} <span class=muted>[{_num(d['ci_low'])}, {_num(d['ci_high'])}]</span>"


def _settings(summary: dict[str, Any]) -> str:
    s = summary["settings"]
    return (
        f"<p>Line <b>{_e(summary['line'])}</b>, {summary['decision_points']} decision points "
        f"every {s['cadence_s']:g} s; counterfactuals: {s['seeds']} seeds x "
        f"{summary.get('counterfactual', {}).get('starts', 0)} starts, "
        f"{s['horizon_s']:g} s each; seed {s['seed']}. Intervals are 95%.</p>"
    )


def _counterfactual_table(summary: dict[str, Any]) -> str:
    if "counterfactual" not in summary:
        return (
            "<p class=muted>No counterfactual runs (seeds 0, or no start with a full horizon).</p>"
        )
    ref = summary["counterfactual"]["reference"]
    head = "".join(f"<th>{_e(LABELS[k])}</th>" for k in KPI_NAMES)
    rows = []
    for name, p in summary["policies"].items():
        if "kpis" not in p:
            continue
        cells = "".join(f"<td>{_ci(p['kpis'][k])}</td>" for k in KPI_NAMES)
        rows.append(f"<tr><td>{_e(name)}</td>{cells}</tr>")
        if "difference_vs_reference" in p:
            d = p["difference_vs_reference"]
            cells = "".join(f"<td>{_ci(d[k])}</td>" for k in KPI_NAMES)
            rows.append(f"<tr><td class=muted>&nbsp;&nbsp;minus {_e(ref)}</td>{cells}</tr>")
    return f"<table><tr><th>policy</th>{head}</tr>{''.join(rows)}</table>"


def _decision_table(summary: dict[str, Any]) -> str:
    rows = []
    for name, p in summary["policies"].items():
        d = p["decisions"]
        gain = d["predicted_difference_vs_recorded"]["profit_per_hour"]
        rows.append(
            f"<tr><td>{_e(name)}</td><td>{d['fallbacks']}</td>"
            f"<td>{_num(d['changed_share'], 3)}</td><td>{_ci(gain)}</td></tr>"
        )
    return (
        "<table><tr><th>policy</th><th>fallbacks</th><th>share of points changed</th>"
        f"<th>predicted profit gain vs recorded, /h</th></tr>{''.join(rows)}</table>"
    )


def _regression(summary: dict[str, Any]) -> str:
    rows = []
    for pair, r in summary["regression"].items():
        stations = ", ".join(
            f"{_e(k)} ({v})" for k, v in r["stations_most_often_differing"].items()
        )
        rows.append(
            f"<tr><td>{_e(pair)}</td><td>{_num(r['differ_share'], 3)}</td>"
            f"<td>{_num(r['max_relative_difference'], 3)}</td><td>{stations or '-'}</td>"
            f"<td>{_ci(r['predicted_profit_gain_difference'])}</td></tr>"
        )
    return (
        "<table><tr><th>versions</th><th>share of points differing (&gt;1% of range)</th>"
        "<th>max difference (share of range)</th><th>stations most often differing</th>"
        f"<th>predicted profit gain difference, /h</th></tr>{''.join(rows)}</table>"
    )


def _img(png: bytes) -> str:
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _kpi_plot(result: ReplayResult) -> bytes:
    import matplotlib.pyplot as plt

    w = result.windows
    hours = w["time_s"] / 3600.0
    fig, axes = plt.subplots(len(KPI_NAMES), 1, figsize=(10, 8), sharex=True)
    span = max(1, round(900.0 / result.settings.cadence_s))
    rows = result.decisions
    policy = np.array(rows.policy)
    for ax, k in zip(axes, KPI_NAMES, strict=True):
        ax.plot(hours, w[k], color="#9ca3af", lw=0.6, alpha=0.6, label="recorded (window)")
        ax.plot(hours, _rolling(w[k], span), color="#111827", lw=1.2, label="recorded (15 min)")
        for p in result.policies:
            mine = policy == p.name
            pred = np.array(rows.predicted[k])[mine]
            if np.isfinite(pred).any():
                ax.plot(hours, pred, lw=1.0, label=f"{p.name} (predicted)")
        ax.set_ylabel(LABELS[k], fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=4, loc="lower left")
    axes[-1].set_xlabel("line time, h")
    return _png(fig)


def _rolling(values: np.ndarray, span: int) -> np.ndarray:
    """Trailing mean over `span` points, ignoring NaN (NaN where the window has none)."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    sums = np.convolve(np.where(ok, v, 0.0), np.ones(span))[: v.size]
    counts = np.convolve(ok.astype(float), np.ones(span))[: v.size]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _setpoint_plot(result: ReplayResult, most: int = 4) -> bytes:
    import matplotlib.pyplot as plt

    rows = result.decisions
    policy = np.array(rows.policy)
    hours = result.windows["time_s"] / 3600.0
    names = [s.name for s in result.spec.stations]
    recorded = np.stack(
        [rows.recorded[i] for i in np.flatnonzero(policy == result.policies[0].name)]
    )
    moved = np.zeros(len(names))
    chosen = {}
    for p in result.policies:
        if p.kind == "recorded":
            continue
        sp = np.stack([rows.setpoints[i] for i in np.flatnonzero(policy == p.name)])
        chosen[p.name] = sp
        moved += np.nanmax(np.abs(sp[..., 0] - recorded[..., 0]), axis=0)
    pick = np.argsort(-moved)[:most]
    fig, axes = plt.subplots(len(pick), 1, figsize=(10, 1.9 * len(pick) + 0.5), sharex=True)
    for ax, i in zip(np.atleast_1d(axes), pick, strict=True):
        ax.step(hours, recorded[:, i, 0], where="post", color="#111827", lw=1.2, label="recorded")
        for name, sp in chosen.items():
            ax.step(hours, sp[:, i, 0], where="post", lw=0.9, label=name)
        ax.set_ylabel(f"{names[i]}\nspeed", fontsize=8)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7, ncol=4, loc="lower left")
    np.atleast_1d(axes)[-1].set_xlabel("line time, h")
    return _png(fig)


def _difference_plot(result: ReplayResult) -> bytes:
    import matplotlib.pyplot as plt

    cf = result.counterfactual
    assert cf is not None
    ref = cf.kpis[cf.reference]
    fig, axes = plt.subplots(1, len(KPI_NAMES), figsize=(12, 3))
    for ax, k in zip(axes, KPI_NAMES, strict=True):
        for name in cf.policies[1:]:
            d = (cf.kpis[name][k] - ref[k]).reshape(-1)
            d = d[np.isfinite(d)]
            if d.size:
                ax.hist(d, bins=30, alpha=0.5, label=name)
        ax.axvline(0.0, color="#111827", lw=0.8)
        ax.set_title(f"{LABELS[k]}\nminus {cf.reference}", fontsize=8)
    axes[0].legend(fontsize=7)
    return _png(fig)
