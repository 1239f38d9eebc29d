"""Flat, display-ready rows for jobs and trials: shared by the CLI tables, the API and the HTML report.

Everything here reads :class:`promptsweep.storage.JobRecord` / ``TrialRecord`` objects and the
storage layer's ranking queries; no SQL.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptsweep.storage import JobRecord, Storage, TrialRecord

# Parameters shown beside every trial, in this order (the flat trial parameters of methods).
SHOWN_PARAMS = (
    "num_virtual_tokens",
    "learning_rate",
    "pooling",
    "prompt_init",
    "prefix_projection",
    "encoder_type",
    "encoder_hidden_size",
)


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def job_metric(job: JobRecord) -> tuple[str, str]:
    """Return ``(objective metric, direction)`` of a job, e.g. ``("accuracy", "maximize")``."""
    return str(job.objective_metric or "value"), str(_enum_value(job.direction))


def describe_method(params: dict[str, Any] | None, method: str | None = None) -> str:
    """A trial's method variant name, e.g. ``p_tuning_lstm`` or ``prefix_tuning_projection``."""
    from promptsweep.storage import method_variant

    params = dict(params or {})
    if method is not None:
        params.setdefault("method", method)
    return method_variant(params) or "?"


def trial_row(trial: TrialRecord, metric: str, rank: int | None = None) -> dict[str, Any]:
    """A flat, JSON-serializable dict describing one trial for tables and the report.

    Keys: ``rank``, ``trial``, ``method`` (the variant), ``state``, the objective ``metric`` (validation),
    ``test_<metric>``, ``trainable_params``, ``train_seconds``, ``steps``, ``node`` (the Ray node that
    ran it: the first 8 characters of its id and its host; ``None`` when unknown) and the shown
    parameters.
    """
    params = dict(trial.params or {})
    row: dict[str, Any] = {
        "rank": rank,
        "trial": trial.number,
        "method": trial.variant or describe_method(params, trial.method),
        "state": str(_enum_value(trial.state)),
        metric: trial.value if trial.value is not None else (trial.metrics or {}).get(metric),
        f"test_{metric}": (trial.test_metrics or {}).get(metric),
        "trainable_params": trial.trainable_params,
        "train_seconds": None if trial.train_seconds is None else round(trial.train_seconds, 1),
        "steps": trial.steps,
        "node": f"{trial.node_id[:8]} {trial.node_host or ''}".strip() if trial.node_id else None,
    }
    for key in SHOWN_PARAMS:
        if key in params:
            row[key] = params[key]
    return row


def state_counts(trials: list[TrialRecord]) -> dict[str, int]:
    """Count trials per state (``running``, ``complete``, ``pruned``, ``fail``)."""
    return dict(Counter(str(_enum_value(t.state)) for t in trials))


def leaderboard_rows(
    storage: Storage, job_id: int, *, per_method: bool = False, pareto: bool = False
) -> list[dict[str, Any]]:
    """Rows of the job's leaderboard (ranked finished trials), best per method, or Pareto front.

    The ranking itself is the storage layer's (SQL); this only flattens the records.

    Raises:
        JobNotFoundError: no job ``job_id``.
    """
    job = storage.get_job(job_id)
    metric, _ = job_metric(job)
    if pareto:
        trials = storage.pareto_front(job_id)
    elif per_method:
        trials = storage.best_per_method(job_id)
    else:
        trials = storage.leaderboard(job_id)
    return [trial_row(t, metric, rank=i + 1) for i, t in enumerate(trials)]


def job_summary(storage: Storage, job: JobRecord) -> dict[str, Any]:
    """A flat dict describing one job: id, name, status, model, task, trial counts and best value."""
    metric, direction = job_metric(job)
    trials = storage.list_trials(job.id)
    counts = state_counts(trials)
    best = storage.leaderboard(job.id)[:1]
    return {
        "id": job.id,
        "name": job.name,
        "status": str(_enum_value(job.status)),
        "model": job.model,
        "task": job.task,
        "objective": f"{metric} ({direction})",
        "trials": len(trials),
        "complete": counts.get("complete", 0),
        "pruned": counts.get("pruned", 0),
        "failed": counts.get("fail", 0),
        "cancelled": counts.get("cancelled", 0),
        "running": counts.get("running", 0),
        "best": best[0].value if best else None,
        "best_trial": best[0].number if best else None,
        "best_method": best[0].variant if best else None,
        "created": job.created_at.strftime("%Y-%m-%d %H:%M:%S") if job.created_at else None,
    }


def unranked_rows(storage: Storage, job_id: int) -> list[dict[str, Any]]:
    """Rows of the job's pruned and failed trials (not ranked), with their last intermediate validation
    value of the objective metric (``last <metric>``, ``at step``) and the error.

    Raises:
        JobNotFoundError: no job ``job_id``.
    """
    metric, _ = job_metric(storage.get_job(job_id))
    rows = []
    for t in storage.unranked_trials(job_id):
        row = trial_row(t, metric)
        row.pop("rank", None)
        history = storage.list_intermediate(job_id, t.number)
        last = history[-1] if history else None
        row[metric] = None
        row[f"last {metric}"] = last.metrics.get(metric) if last else None
        row["at step"] = last.step if last else None
        row["error"] = t.error
        rows.append(row)
    return rows
