"""Frozen records returned by :class:`promptsweep.storage.Storage`, and the enums they use.

Callers never see ORM rows (as optuna's ``FrozenTrial``): each record is a frozen dataclass built
from a row inside the session that read it, so it stays valid after the session closes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """Life cycle of a search job: ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``.

    A ``running`` job whose worker stops heartbeating goes back to ``queued`` (see
    :meth:`Storage.requeue_stale`). A run stopped by Ctrl-C leaves its job ``interrupted``: not
    finished, not in the queue, resumed by ``promptsweep run --job N``. A ``paused`` job
    (:meth:`Storage.pause_job`) keeps its study and is not claimed until :meth:`Storage.resume_job`
    queues it again. ``queued``, ``running``, ``paused`` and ``interrupted`` jobs can be
    ``cancelled``; an extended ``succeeded`` job is ``queued`` again (:meth:`Storage.extend_job`).
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    PAUSED = "paused"

    @property
    def is_finished(self) -> bool:
        """True for ``succeeded``, ``failed`` and ``cancelled``."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class TrialState(StrEnum):
    """A trial's state, as Optuna's ``TrialState``: ``running`` / ``complete`` / ``pruned`` / ``fail``;
    and ``cancelled``: killed by a job's cancel (Optuna has no such state: the study has it PRUNED,
    with its last value, like any trial stopped early)."""

    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """True for every state but ``running``."""
        return self is not TrialState.RUNNING


class Direction(StrEnum):
    """Direction of an objective, as Optuna's ``StudyDirection`` (lower case)."""

    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


class MethodVariant(StrEnum):
    """The prompt-method variants ranked side by side by :meth:`Storage.best_per_method`.

    Derived from a trial's flat parameters (``method`` plus ``prefix_projection`` or
    ``encoder_type``) by :func:`method_variant`:

    - ``prompt_tuning`` - soft prompt on the input embeddings (Lester et al. 2021).
    - ``prefix_tuning`` - per-layer prefix, no reparameterization (Li & Liang 2021).
    - ``prefix_tuning_projection`` - prefix through the MLP reparameterization.
    - ``p_tuning_lstm`` / ``p_tuning_mlp`` - P-tuning's prompt encoder (Liu et al. 2021).
    """

    PROMPT_TUNING = "prompt_tuning"
    PREFIX_TUNING = "prefix_tuning"
    PREFIX_TUNING_PROJECTION = "prefix_tuning_projection"
    P_TUNING_LSTM = "p_tuning_lstm"
    P_TUNING_MLP = "p_tuning_mlp"


def method_variant(params: Mapping[str, Any] | None) -> str | None:
    """Return the :class:`MethodVariant` value of a trial's flat parameters.

    ``method`` picks the family; prefix tuning splits on ``prefix_projection`` (truthy → with
    projection) and P-tuning on ``encoder_type`` (``LSTM`` | ``MLP``, case-insensitive; missing →
    ``MLP``, PEFT's default). A method this storage does not know keeps its own name, so new methods
    still rank (each as one group). Returns ``None`` when ``params`` has no ``method``.
    """
    if not params or params.get("method") is None:
        return None
    method = str(params["method"])
    if method == "prefix_tuning":
        if params.get("prefix_projection"):
            return MethodVariant.PREFIX_TUNING_PROJECTION.value
        return MethodVariant.PREFIX_TUNING.value
    if method == "p_tuning":
        encoder = str(params.get("encoder_type") or "MLP").upper()
        return MethodVariant.P_TUNING_LSTM.value if encoder == "LSTM" else MethodVariant.P_TUNING_MLP.value
    return method


def as_utc(value: datetime | None) -> datetime | None:
    """Return ``value`` as an aware UTC datetime (SQLite hands naive UTC values back)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def json_safe(value: Any) -> Any:
    """Return ``value`` with non-finite floats (NaN, ±inf) replaced by ``None``.

    PostgreSQL's JSONB refuses NaN, and SQLite reads NaN back as NULL; storing ``None`` keeps both
    backends alike. Tuples become lists; mapping keys become strings; NumPy (or other ``numbers``)
    scalars and 0-d arrays/tensors become plain ``int``/``float``/``bool`` (metrics often arrive as
    ``numpy.float32``, which ``json`` cannot write). Anything else is returned as is.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return json_safe(float(value))
    if getattr(value, "shape", None) in ((), []) and callable(getattr(value, "item", None)):
        return json_safe(value.item())  # numpy.bool_, 0-d numpy array or torch tensor
    return value


@dataclass(frozen=True)
class JobRecord:
    """One search job.

    Attributes:
        id: the job id (positive integer, assigned by the database).
        name: the job's name (free text).
        spec: the job spec as submitted (JSON-able dict).
        status: see :class:`JobStatus`.
        objective_metric: the metric the job optimizes (e.g. ``accuracy``); ``None`` if the spec has none.
        direction: the objective's :class:`Direction` (``maximize`` when the spec gives none).
        secondary_objective: ``trainable_params`` for a multi-objective job (always minimized), else ``None``.
        model, dataset, task: what the job searches on, for :meth:`Storage.best_across_jobs`.
        study_name: the Optuna study's name, ``promptsweep-job-<id>``.
        created_at, started_at, finished_at: aware UTC datetimes (``None`` until reached).
        error: why the job ended as it did: a failed job's error, ``stopped by the user ...`` for a
            stopped job, why a job was paused or interrupted (``None`` otherwise).
        worker_id: the worker holding a running job (``None`` when none does).
        heartbeat_at: the holding worker's last heartbeat (aware UTC).
        attempts: how many times a worker claimed the job (>1 after a re-queue).
        summary: what the search layer recorded about the job as a whole (JSON object, e.g. its budget
            plan, baselines, finalists, selected trial; ``{}`` until something is recorded), merged
            key by key by :meth:`Storage.update_job_summary`.
        history: what happened to the job and when, oldest first: ``{"at": ISO time (UTC), "event":
            "submitted" | "claimed" | "running" | "interrupted" | "requeued" | "cancelled" |
            "retried" | "stop requested" | "pause requested" | "paused" | "resumed" | "extended" |
            "succeeded" | "failed", "detail": text or absent}``.
        spec_hash: the SHA-256 of the stored spec in canonical JSON (sorted keys): two jobs with the
            same hash ran the same spec.
        request: a pending ``stop`` or ``pause`` of a running job (its driver acts on it within
            seconds), else ``None``.
        extra_trials, extra_time_s: what ``extend`` added to the job's budget, in all.
    """

    id: int
    name: str
    spec: dict[str, Any]
    status: JobStatus
    objective_metric: str | None
    direction: Direction
    secondary_objective: str | None
    model: str | None
    dataset: str | None
    task: str | None
    study_name: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    worker_id: str | None
    heartbeat_at: datetime | None
    attempts: int
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    spec_hash: str = ""
    request: str | None = None
    extra_trials: int = 0
    extra_time_s: float = 0.0

    @property
    def directions(self) -> list[str]:
        """The Optuna study's directions: the objective's, then ``minimize`` for a secondary objective."""
        if self.secondary_objective:
            return [self.direction.value, Direction.MINIMIZE.value]
        return [self.direction.value]

    @property
    def metric_names(self) -> list[str]:
        """The Optuna study's objective names, in :attr:`directions` order: the objective metric (``value``
        when the job has none), then the secondary objective."""
        names = [self.objective_metric or "value"]
        return [*names, self.secondary_objective] if self.secondary_objective else names


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a job, keyed by ``(job_id, number)``.

    Attributes:
        job_id, number: the job and the trial's number within it (Optuna's trial number).
        optuna_trial_id, ray_trial_id: the trial's ids in Optuna's tables and in Ray Tune.
        method: the ``method`` parameter (``prompt_tuning`` | ``prefix_tuning`` | ``p_tuning``).
        variant: the :class:`MethodVariant` value derived from ``params``.
        params: the flat trial parameters (see docs/architecture.md).
        state: see :class:`TrialState`.
        value: the objective value ranked by the leaderboard (``values[0]``).
        values: all objective values (two for a multi-objective job).
        metrics: final validation metrics, name → value.
        test_metrics: test-split metrics (only for the selected trial).
        trainable_params, total_params: parameter counts.
        train_seconds: wall-clock training time in seconds.
        peak_memory_bytes: peak accelerator (or process) memory in bytes.
        steps, epochs: optimizer steps and epochs done.
        adapter_dir: where the trained adapter was saved (on the machine of the job's driver).
        node_id, node_host: the Ray node that ran the trial (its last attempt) and that node's host
            name / IP address; ``None`` for a trial that never reported.
        error: why the trial failed.
        started_at, finished_at, updated_at: aware UTC datetimes.
    """

    job_id: int
    number: int
    optuna_trial_id: int | None
    ray_trial_id: str | None
    method: str | None
    variant: str | None
    params: dict[str, Any]
    state: TrialState
    value: float | None
    values: list[float | None] | None
    metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    trainable_params: int | None
    total_params: int | None
    train_seconds: float | None
    peak_memory_bytes: int | None
    steps: int | None
    epochs: float | None
    adapter_dir: str | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    node_id: str | None = None
    node_host: str | None = None


@dataclass(frozen=True)
class IntermediateRecord:
    """Validation metrics of one trial at one evaluation step (the source of truth for learning curves)."""

    job_id: int
    number: int
    step: int
    metrics: dict[str, Any]
    recorded_at: datetime


@dataclass(frozen=True)
class BestResult:
    """The best complete trial for one (model, dataset, task, objective metric), across jobs.

    Attributes:
        model, dataset, task: the group.
        objective_metric, direction: the objective the trials were ranked by.
        job_id, job_name: the job holding the best trial.
        trial: the best trial.
        jobs: how many jobs share the group.
    """

    model: str | None
    dataset: str | None
    task: str | None
    objective_metric: str | None
    direction: Direction
    job_id: int
    job_name: str
    trial: TrialRecord
    jobs: int
