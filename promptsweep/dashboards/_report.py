"""A self-contained HTML report of one job (plotly; readable without a server).

Sections: the job, the leaderboard, the best trial per method variant, the Pareto front (objective
against trainable parameters), the optimization history, the learning curves (intermediate values)
and the parameter importances (``optuna.visualization``). plotly.js is inlined once, so the file opens
offline in any browser.
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptsweep._logging import get_logger
from promptsweep.dashboards._leaderboard import (
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
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f5; } td.text, th.text { text-align: left; }
.note { color: #777; font-style: italic; }
"""


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


def _table(rows: list[dict[str, Any]], *, empty: str) -> str:
    if not rows:
        return f'<p class="note">{html.escape(empty)}</p>'
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns and any(r.get(key) is not None for r in rows):
                columns.append(key)
    text_cols = {"method", "state", "name", "status", "model", "task", "objective", "best_method", "error"}
    head = "".join(f'<th class="{"text" if c in text_cols else ""}">{html.escape(c)}</th>' for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"text" if c in text_cols else ""}">{html.escape(_fmt(row.get(c)))}</td>'
            for c in columns
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Figures:
    """Collects plotly figures as HTML fragments; plotly.js is inlined with the first one only."""

    def __init__(self) -> None:
        self.count = 0

    def render(self, fig: Any) -> str:
        fragment = fig.to_html(full_html=False, include_plotlyjs=self.count == 0, default_height="460px")
        self.count += 1
        return f'<div class="plot">{fragment}</div>'


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
    for key in ("floor_warning", "separation"):
        if summary.get(key):
            parts.append(f'<p class="note">{html.escape(str(summary[key]))}</p>')
    plan = summary.get("plan")
    if plan:
        shown = {k: v for k, v in plan.items() if k != "costs"}
        shown.update({f"timed {k}": v for k, v in (plan.get("costs") or {}).items() if k != "config"})
        parts += ["<h2>Budget plan</h2>", _table([{k: str(v) for k, v in shown.items()}], empty="")]
    floors = summary.get("floors")
    if floors:
        rows = [{"floor": name, **m} for name, m in floors.items() if isinstance(m, dict)]
        parts += ["<h2>Floors (validation)</h2>", _table(rows, empty="None.")]
    finalists = summary.get("finalists")
    if finalists:
        rows = [{k: v for k, v in f.items() if k != "metrics"} for f in finalists]
        parts += ["<h2>Finalists re-scored on the whole validation split</h2>", _table(rows, empty="")]
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
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        _table([summary], empty=""),
        f"<h2>Leaderboard (validation {html.escape(metric)}, {html.escape(direction)})</h2>",
        _table(leaderboard_rows(storage, job_id)[:25], empty="No finished trials yet."),
        "<h2>Best trial per method</h2>",
        _table(leaderboard_rows(storage, job_id, per_method=True), empty="No finished trials yet."),
        "<h2>Pareto front</h2>",
        _table(
            [trial_row(t, metric, rank=i + 1) for i, t in enumerate(front)], empty="No finished trials yet."
        ),
        "<h2>Stopped early and failed trials</h2>",
        _table(unranked_rows(storage, job_id), empty="None."),
        *_summary_sections(job.summary or {}),
    ]
    if any(t.value is not None and t.trainable_params for t in trials):
        parts.append(figures.render(_pareto_figure(job, trials, front)))
    parts += _optuna_sections(storage, job, figures)
    if job.error:
        parts.insert(1, f'<p class="note">Job error: {html.escape(job.error)}</p>')
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
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
