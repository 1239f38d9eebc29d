"""A self-contained HTML report of one job (plotly; readable without a server).

Sections: the job, the leaderboard, the best trial per method variant, a per-method comparison (every
trial's validation value per method variant: best and spread), the Pareto front (objective against
trainable parameters), the optimization history, the learning curves (intermediate values) and the
parameter importances (``optuna.visualization``). plotly.js is inlined once, so the file opens offline
in any browser.

Tables fit the page width: a trial's parameters share one wrapped ``parameters`` cell, one-row tables
(the job, the budget plan) are key/value lists that wrap, headers break after ``_``, and text cells
wrap anywhere; numbers never break. ``tests/dashboards/test_browser.py`` measures it in Chromium.
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptsweep._logging import get_logger
from promptsweep.dashboards._leaderboard import (
    SHOWN_PARAMS,
    describe_method,
    job_metric,
    job_summary,
    leaderboard_rows,
    trial_row,
    unranked_rows,
)

if TYPE_CHECKING:
    from promptsweep.storage import JobRecord, Storage, TrialRecord

_log = get_logger(__name__)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1200px;
       color: #222; }
h1 { font-size: 1.6em; overflow-wrap: anywhere; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; width: 100%; }
th, td { padding: 0.25em 0.5em; border-bottom: 1px solid #eee; text-align: right; vertical-align: top; }
th { background: #f5f5f5; } td { white-space: nowrap; }
td.text, th.text { text-align: left; }
td.long { white-space: normal; overflow-wrap: anywhere; min-width: 8em; }
.kv { display: flex; flex-wrap: wrap; gap: 0.3em 1.6em; margin: 0.5em 0; font-size: 0.9em; }
.kv div { white-space: nowrap; } .kv span { color: #666; margin-right: 0.4em; }
.kv div.long { white-space: normal; overflow-wrap: anywhere; }
.plot { width: 100%; overflow: hidden; margin-top: 1em; }
.table-wrap { max-width: 100%; overflow-x: auto; }
@media (max-width: 900px) { table { font-size: 0.75em; } th, td { padding: 0.2em 0.3em; } }
.note { color: #777; font-style: italic; overflow-wrap: anywhere; }
"""

#: Columns of long text, wrapped anywhere (the other cells never break).
_LONG_COLUMNS = {"error", "parameters", "node"}
#: Columns shown as text (left-aligned).
_TEXT_COLUMNS = _LONG_COLUMNS | {
    "method",
    "state",
    "name",
    "status",
    "model",
    "task",
    "objective",
    "best_method",
    "floor",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _heading(name: str) -> str:
    """A column name that may break after ``_``, ``[`` or a space (``trainable_<wbr>params``)."""
    return "".join(html.escape(ch) + ("<wbr>" if ch in "_[ " else "") for ch in name)


def _fold_params(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its trial parameters folded into one ``parameters`` text cell (in
    :data:`SHOWN_PARAMS` order, those set only), placed after the trial's other columns."""
    shown = [k for k in SHOWN_PARAMS if row.get(k) is not None]
    if not shown:
        return row
    out = {k: v for k, v in row.items() if k not in SHOWN_PARAMS}
    folded = ", ".join(f"{k} {_fmt(row[k])}" for k in shown)
    tail = {k: out.pop(k) for k in ("error",) if k in out}  # the error stays last
    return {**out, "parameters": folded, **tail}


def _table(rows: list[dict[str, Any]], *, empty: str) -> str:
    if not rows:
        return f'<p class="note">{html.escape(empty)}</p>'
    rows = [_fold_params(row) for row in rows]
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns and any(r.get(key) is not None for r in rows):
                columns.append(key)

    def cls(column: str) -> str:
        if column in _LONG_COLUMNS:
            return ' class="text long"'
        return ' class="text"' if column in _TEXT_COLUMNS else ""

    head = "".join(f"<th{cls(c)}>{_heading(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td{cls(c)}>{html.escape(_fmt(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    # Fits from ~1000 px up; narrower, the table scrolls inside its box, never the page.
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _key_values(values: dict[str, Any]) -> str:
    """One record as a wrapping list of ``key value`` pairs (fits any width, unlike a one-row table)."""
    items = []
    for key, value in values.items():
        if value is None:
            continue
        text = _fmt(value)
        long = ' class="long"' if len(text) > 40 else ""
        items.append(f"<div{long}><span>{html.escape(key)}</span>{html.escape(text)}</div>")
    return f'<div class="kv">{"".join(items)}</div>'


def _comparison_figure(job: JobRecord, trials: list[TrialRecord]) -> Any | None:
    """Validation values per method variant: every complete trial (a box: median, quartiles, range),
    the variant's best (a star) and trials stopped early at their last value (grey crosses: a
    truncated run, not comparable). ``None`` when no trial has a value."""
    import plotly.graph_objects as go

    metric, direction = job_metric(job)
    complete: dict[str, list[TrialRecord]] = {}
    stopped: dict[str, list[TrialRecord]] = {}
    for t in trials:
        value = _validation_value(t, metric)
        if value is None:
            continue
        variant = t.variant or describe_method(t.params, t.method)
        (complete if t.state.value == "complete" else stopped).setdefault(variant, []).append(t)
    variants = sorted(set(complete) | set(stopped))
    if not variants:
        return None
    pick = max if direction == "maximize" else min
    fig = go.Figure()
    for variant in variants:
        group = complete.get(variant, [])
        if not group:
            continue
        fig.add_trace(
            go.Box(
                x=[variant] * len(group),
                y=[t.value for t in group],
                name=variant,
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
                text=[f"trial {t.number}" for t in group],
                hovertemplate="%{text}<br>" + metric + " %{y:.4f}<extra></extra>",
                showlegend=False,
            )
        )
    best = [(v, pick(complete[v], key=lambda t: t.value)) for v in variants if complete.get(v)]
    if best:
        fig.add_trace(
            go.Scatter(
                x=[v for v, _ in best],
                y=[t.value for _, t in best],
                mode="markers+text",
                marker={"symbol": "star", "size": 15, "color": "black"},
                text=[f"{t.value:.4f}" for _, t in best],
                textposition="middle right",
                name=f"best per variant ({direction})",
                hovertemplate="best: trial %{customdata}<br>" + metric + " %{y:.4f}<extra></extra>",
                customdata=[t.number for _, t in best],
            )
        )
    early = [(v, t) for v in variants for t in stopped.get(v, [])]
    if early:
        fig.add_trace(
            go.Scatter(
                x=[v for v, _ in early],
                y=[_validation_value(t, metric) for _, t in early],
                mode="markers",
                marker={"symbol": "x", "size": 9, "color": "#999"},
                name="stopped early (last value)",
                text=[f"trial {t.number} ({t.state.value})" for _, t in early],
                hovertemplate="%{text}<br>" + metric + " %{y:.4f}<extra></extra>",
            )
        )
    counts = {v: len(complete.get(v, [])) for v in variants}
    fig.update_layout(
        title=f"Validation {metric} per method variant: best (star) and spread of complete trials",
        xaxis={
            "title": "method variant (complete trials)",
            "categoryorder": "array",
            "categoryarray": variants,
            "tickvals": variants,
            "ticktext": [f"{v} ({counts[v]})" for v in variants],
        },
        yaxis={"title": f"validation {metric}"},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def _validation_value(trial: TrialRecord, metric: str) -> float | None:
    """A trial's validation value of ``metric``: its objective value, else its last recorded metric."""
    if trial.value is not None:
        return float(trial.value)
    value = (trial.metrics or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


class _Figures:
    """Collects plotly figures as HTML fragments; plotly.js is inlined with the first one only."""

    def __init__(self) -> None:
        self.count = 0

    def render(self, fig: Any, *, element_id: str | None = None) -> str:
        fragment = fig.to_html(
            full_html=False,
            include_plotlyjs=self.count == 0,
            default_height="460px",
            config={"responsive": True},
        )
        self.count += 1
        ident = f' id="{element_id}"' if element_id else ""
        return f'<div class="plot"{ident}>{fragment}</div>'


def _pareto_figure(job: JobRecord, trials: list[TrialRecord], front: list[TrialRecord]) -> Any:
    import plotly.graph_objects as go

    metric, direction = job_metric(job)
    fig = go.Figure()
    by_variant: dict[str, list[TrialRecord]] = {}
    for t in trials:
        if t.value is not None and t.trainable_params:
            by_variant.setdefault(t.variant or str(t.method), []).append(t)
    for variant, group in sorted(by_variant.items()):
        fig.add_trace(
            go.Scatter(
                x=[t.trainable_params for t in group],
                y=[t.value for t in group],
                mode="markers",
                name=variant,
                text=[f"trial {t.number} ({t.state.value})" for t in group],
                hovertemplate="%{text}<br>trainable params %{x:,}<br>" + metric + " %{y:.4f}<extra></extra>",
            )
        )
    front = sorted(
        (t for t in front if t.trainable_params and t.value is not None), key=lambda t: t.trainable_params
    )
    if front:
        fig.add_trace(
            go.Scatter(
                x=[t.trainable_params for t in front],
                y=[t.value for t in front],
                mode="lines+markers",
                line={"shape": "hv", "color": "black", "dash": "dot"},
                marker={"symbol": "star", "size": 12, "color": "black"},
                name="Pareto front",
            )
        )
    fig.update_layout(
        title=f"Pareto front: {metric} ({direction}) vs trainable parameters (fewer is better)",
        xaxis={"title": "trainable parameters", "type": "log"},
        yaxis={"title": f"validation {metric}"},
    )
    return fig


def _optuna_sections(storage: Storage, job: JobRecord, figures: _Figures) -> list[str]:
    """History, learning curves and importances from the job's Optuna study (notes where unavailable)."""
    import optuna
    import optuna.visualization as vis

    metric, _ = job_metric(job)
    parts: list[str] = []
    try:
        study = optuna.load_study(study_name=job.study_name, storage=storage.optuna_storage())
    except KeyError:
        return [
            f'<p class="note">No Optuna study {html.escape(job.study_name)} yet (no trial has started).</p>'
        ]
    target: dict[str, Any] = {}
    if len(study.directions) > 1:
        target = {"target": lambda t: t.values[0], "target_name": metric}
    else:
        target = {"target_name": metric}
    plots = [
        ("Optimization history", lambda: vis.plot_optimization_history(study, **target)),
        ("Learning curves (intermediate validation values)", lambda: vis.plot_intermediate_values(study)),
        ("Parameter importances", lambda: vis.plot_param_importances(study, **target)),
    ]
    for title, make in plots:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        try:
            with warnings.catch_warnings():  # few trials per regime: optuna warns, the plot is still right
                warnings.simplefilter("ignore")
                fig = make()
            if not fig.data:
                raise ValueError("not enough finished trials to plot")
            parts.append(figures.render(fig))
        except Exception as exc:  # optuna raises several types for too-few-trials cases
            _log.info("report: %s unavailable: %s", title, exc)
            parts.append(f'<p class="note">Not available for this job yet: {html.escape(str(exc))}</p>')
    return parts


def _summary_sections(summary: dict[str, Any]) -> list[str]:
    """The job's plan, floors, finalists and warnings (its stored summary) as HTML."""
    parts = []
    for key in ("floor_warning", "floor_separation", "separation", "kept_state"):
        if summary.get(key):
            parts.append(f'<p class="note">{html.escape(str(summary[key]))}</p>')
    plan = summary.get("plan")
    if plan:
        shown = {k: v for k, v in plan.items() if k != "costs"}
        shown.update({f"timed {k}": v for k, v in (plan.get("costs") or {}).items() if k != "config"})
        parts += ["<h2>Budget plan</h2>", _key_values({k: str(v) for k, v in shown.items()})]
    floors = summary.get("floors")
    if floors:
        rows = [{"floor": name, **m} for name, m in floors.items() if isinstance(m, dict)]
        parts += ["<h2>Floors (validation)</h2>", _table(rows, empty="None.")]
    finalists = summary.get("finalists")
    if finalists:
        rows = [{k: v for k, v in f.items() if k != "metrics"} for f in finalists]
        parts += [
            "<h2>Finalists (validation: ranked subsample, then the whole split where rescored)</h2>",
            _table(rows, empty=""),
        ]
    return parts


def render_report(storage: Storage, job_id: int) -> str:
    """Return the HTML report of job ``job_id`` (a complete document, plotly.js inlined).

    Raises:
        JobNotFoundError: no job ``job_id``.
    """
    job = storage.get_job(job_id)
    metric, direction = job_metric(job)
    trials = storage.list_trials(job_id)
    front = storage.pareto_front(job_id)
    summary = job_summary(storage, job)
    figures = _Figures()
    title = f"promptsweep job {job.id}: {job.name}"
    # Rendered in document order: the first figure carries plotly.js.
    comparison = _comparison_figure(job, trials)
    compared = (
        figures.render(comparison, element_id="method-comparison")
        if comparison is not None
        else '<p class="note">No trial has a validation value yet.</p>'
    )
    pareto = ""
    if any(t.value is not None and t.trainable_params for t in trials):
        pareto = figures.render(_pareto_figure(job, trials, front), element_id="pareto-front")
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        _key_values(summary),
        f"<h2>Leaderboard (validation {html.escape(metric)}, {html.escape(direction)})</h2>",
        _table(leaderboard_rows(storage, job_id)[:25], empty="No finished trials yet."),
        "<h2>Best trial per method</h2>",
        _table(leaderboard_rows(storage, job_id, per_method=True), empty="No finished trials yet."),
        "<h2>Method comparison</h2>",
        compared,
        "<h2>Pareto front</h2>",
        _table(
            [trial_row(t, metric, rank=i + 1) for i, t in enumerate(front)], empty="No finished trials yet."
        ),
        pareto,
        "<h2>Stopped early and failed trials</h2>",
        _table(unranked_rows(storage, job_id), empty="None."),
        *_summary_sections(job.summary or {}),
    ]
    parts += _optuna_sections(storage, job, figures)
    if job.error:
        parts.insert(1, f'<p class="note">Job error: {html.escape(job.error)}</p>')
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def write_report(storage: Storage, job_id: int, out: str | os.PathLike[str]) -> Path:
    """Write the HTML report of job ``job_id`` to ``out`` (replacing it) and return its absolute path.

    Raises:
        JobNotFoundError: no job ``job_id``.
    """
    path = Path(out).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(storage, job_id), encoding="utf-8")
    return path
