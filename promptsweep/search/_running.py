"""Running a job's trials: the Ray Tune ``Tuner`` over the planned search, and its failure budget.

:func:`tune_job` builds the ``Tuner`` (``tune.with_resources`` with fractional GPUs,
``max_concurrent_trials``, ASHA / median stopping over training steps, ``FailureConfig`` retries for
trials whose process died) with :class:`PromptsweepSearch` asking Optuna and :class:`TrialRecorder`
writing every trial to storage as it happens. The search starts no new trial after the job's
wall-clock cap or once :func:`max_failed_trials` trials failed; :func:`failure_budget_spent` then
names the count and the last error for the job's status.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptsweep._logging import get_logger
from promptsweep.search._fill import fill_pays
from promptsweep.search._planning import Plan, deadline_grace, train_budget
from promptsweep.search._spec import TASK_METRICS, JobSpec

_log = get_logger(__name__)

#: The failure budget when the spec gives none: half the planned configs, at least this many.
MIN_FAILED_TRIALS = 3


def max_failed_trials(spec: JobSpec, plan: Plan) -> int:
    """The job's failure budget: ``budget.max_failed_trials``, else half the planned configs (at least
    :data:`MIN_FAILED_TRIALS`; a plan without a config count gets that)."""
    given = spec.budget.max_failed_trials
    if given is not None:
        return int(given)
    return max(MIN_FAILED_TRIALS, math.ceil((plan.configs or 0) / 2))


def failed_trials(study: Any) -> list[Any]:
    """The study's FAIL trials, by number."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]


def failure_budget_spent(spec: JobSpec, plan: Plan, study: Any, *, before: int = 0) -> str | None:
    """Why this run fails for its failed trials (the count, the budget, the last error), or ``None``.
    ``before``: the study's failed trials when the run started (the budget is per run, so a retried
    or resumed job gets a fresh one)."""
    failed = failed_trials(study)[before:]
    limit = max_failed_trials(spec, plan)
    if len(failed) < limit:
        return None
    last = failed[-1]
    error = str(last.user_attrs.get("error") or "no error text").strip().splitlines()
    return (
        f"{len(failed)} trials failed (budget.max_failed_trials = {limit}); the search stopped "
        "(`promptsweep retry` gives it a fresh failure budget). "
        f"Last error (trial {last.number}): {error[-1] if error else ''}"
    )


def tune_job(
    spec: JobSpec,
    storage: Any,
    job_id: int,
    study: Any,
    job_dir: Path,
    inputs: Any,
    plan: Plan,
    stale: list[int],
    remaining: int,
    *,
    progress: bool,
    worker_id: str | None = None,
    cap: float | None = None,
    failed_so_far: int = 0,
    halted: str | None = None,
    fill: Any = None,
) -> str:
    """Run the Tuner: ``remaining`` trials (-1: until the wall-clock cap), re-running ``stale`` first.

    Args:
        cap: this run's wall-clock cap in seconds (``None``: none); no trial starts after it,
            running ones end at it with an evaluation.
        failed_so_far: trials that failed in this job's run before this Tuner (they count against
            the failure budget).
        halted: a ``stop`` / ``pause`` already asked: no new trial starts (a stop still re-runs
            ``stale``).
        fill: the budget ledger of a screening plan's run (:func:`~promptsweep.search._fill.budget_fill`):
            past the ``remaining`` planned trials, more start while it says the budget pays for them.

    Returns why it ended: ``"done"`` (its trials ran, or its cap or failure budget ended it),
    ``"cancelled"``, ``"stop"`` / ``"pause"`` (a user's request: the running trials finished, no new
    one started), ``"lost"`` (``worker_id`` no longer holds the job).
    """
    from ray import tune

    from promptsweep.search._progress import Progress
    from promptsweep.search._recorder import CancelStopper, TrialRecorder
    from promptsweep.search._scheduler import make_scheduler
    from promptsweep.search._searcher import PromptsweepSearch
    from promptsweep.search._space import sample_params
    from promptsweep.search._trainable import run_trial
    from promptsweep.storage import default_artifact_dir

    r = spec.resources
    modes = ["max" if d == "maximize" else "min" for d in spec.directions]
    # The wall-clock cap: no trial starts after it, and running trials end at their next step with an
    # evaluation and a saved adapter (TrainBudget.deadline); Tune's own time budget is the backstop.
    deadline = time.time() + cap if cap else None
    if fill is not None:
        fill.deadline = deadline  # a config past the plan starts only if it reaches its first rung
    display = (
        Progress(
            job_id,
            spec.objective.metric,
            spec.objective.resolved_direction,
            None if fill is not None else plan.configs,
        )
        if progress
        else None
    )
    # Where Ray persists each trial's final checkpoint (its adapter), for the driver and readers anywhere.
    storage_path = spec.ray_storage_path or str(job_dir / "ray")
    recorder = TrialRecorder(
        storage=storage,
        job_id=job_id,
        metric_names=spec.metric_names,
        task_metrics=TASK_METRICS[spec.task],
        study=study,
        storage_path=storage_path,
        progress=display,
        artifact_dir=default_artifact_dir(storage),
    )
    searcher = PromptsweepSearch(
        study=study,
        space_fn=functools.partial(sample_params, space=spec.space),
        metrics=spec.metric_names,
        modes=modes,
        resume_numbers=stale,
        job_dir=job_dir,
        deadline=deadline,
        max_failed=max(0, max_failed_trials(spec, plan) - failed_so_far),
        before_tell=recorder.attach_adapter,
        fill=fill,
    )
    if halted:
        searcher.halt(halted)
    resources = {"cpu": r.cpus_per_trial}
    if r.gpus_per_trial:
        resources["gpu"] = r.gpus_per_trial
    fn = tune.with_resources(
        tune.with_parameters(
            run_trial,
            inputs=inputs,
            budget=dataclasses.replace(train_budget(spec, plan), deadline=deadline),
            job_dir=str(job_dir),
            seed=spec.seed,
            total_steps=plan.max_steps,
            torch_threads=r.torch_threads or max(1, int(r.cpus_per_trial)),
        ),
        resources,
    )
    # A multi-objective job's second value (trainable_params) exists only in the final result; the
    # searcher checks every objective itself when a trial ends (missing -> FAIL).
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Ctrl-C must interrupt the job (run_job then leaves unfinished trials to a resume); Tune's own
    # handler would end the search as if its budget were spent and mark them stopped early.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # Tune's own console output (the legacy engine at verbose=0 prints nothing): our table shows progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    stopper = CancelStopper(storage, job_id, worker_id=worker_id, on_request=searcher.halt)
    run_name = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(spec, plan),
            num_samples=-1 if fill is not None else remaining,
            max_concurrent_trials=r.max_concurrent_trials,
            time_budget_s=cap + deadline_grace(plan) if cap else None,
            reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
            trial_name_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=storage_path,
            callbacks=[recorder],
            stop=stopper,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # One checkpoint per trial (its final adapter); a `num_to_keep` would make Tune snapshot
            # its experiment state after each.
            verbose=0,
        ),
    )
    if display is not None:
        with display:
            tuner.fit()
    else:
        tuner.fit()
    # Tune ends a search stopped as a whole (time budget, cancel) without ending its running trials.
    if stopper.lost:
        # The job's new holder re-runs the unfinished trials; leave them as they are.
        return "lost"
    reason = "the job was cancelled" if stopper.cancelled else "the search stopped (time budget backstop)"
    unended = recorder.finish_unended(searcher, reason, cancelled=stopper.cancelled)
    if unended:
        _log.info("job %d: trial(s) %s stopped early: %s", job_id, unended, reason)
    if stopper.cancelled:
        return "cancelled"
    return stopper.request or "done"


def _trial_dirname(trial: Any) -> str:
    """Tune's per-trial directory name: the Optuna trial number and the Tune trial id."""
    from promptsweep.search._trainable import NUMBER_KEY

    return f"trial-{int(trial.config.get(NUMBER_KEY, -1)):04d}-{trial.trial_id}"


def unfinished_trials(study: Any) -> list[int]:
    """Numbers of the study's trials left RUNNING (by a run that died or was stopped): re-run first."""
    from optuna.trial import TrialState

    return [t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]


def finished_count(study: Any) -> int:
    """Trials of the study that ended: complete, pruned or failed."""
    from optuna.trial import TrialState

    ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state in ended)


@dataclass(frozen=True)
class Batch:
    """One ``Tuner`` run of a job: ``plan`` (the planned trials), ``trials`` (extended by trials) or
    ``time`` (extended by wall-clock seconds).

    Attributes:
        kind: which.
        trials: how many trials it starts (-1: until its cap), unfinished ones re-run included.
        cap_s: its wall-clock cap (``None``: none).
        base: the trials the plan finished (extensions count from there).
    """

    kind: str
    trials: int
    cap_s: float | None
    base: int

    def describe(self) -> str:
        if self.kind == "time":
            return f"new trials for {self.cap_s:.0f} s"
        return f"{self.trials} more trial(s)"


def next_batch(plan: Plan, study: Any, job: Any) -> Batch | None:
    """What a job has left to run, given its study and its stored record; ``None`` when nothing.

    The ledger lives in the job's summary: ``planned_trials`` (set once the plan's batch is done),
    ``plan_time_used_s``, ``extra_trials_run`` and ``extension_time_used_s`` (what earlier batches
    used), ``batch`` (the batch in progress, written by :func:`batch_started`, booked by
    :func:`settle_batch`; one a dead run left open is continued first, see :func:`continue_batch`).

    The plan's trials come first (``plan.configs`` less those finished; with ``budget.time_budget_s``
    capped at what is left of it; a time-only plan: one run until its cap; a plan that fills its budget
    also past its configs while what its ended trials left pays for a first rung,
    :func:`~promptsweep.search._fill.fill_pays`), then
    ``job.extra_trials - extra_trials_run`` trials, then ``job.extra_time_s -
    extension_time_used_s`` seconds of new trials.
    """
    finished = finished_count(study)
    stale = len(unfinished_trials(study))
    summary = job.summary or {}
    plan_done = "planned_trials" in summary or any(e.get("event") == "succeeded" for e in job.history)
    if not plan_done:
        cap = None
        if plan.time_budget_s:
            cap = max(0.0, float(plan.time_budget_s) - float(summary.get("plan_time_used_s") or 0.0))
        if cap is not None and cap < 1.0:
            if stale:  # its time is spent: the unfinished trials end at their next step
                return Batch("plan", stale, 1.0, finished)
        elif plan.configs is None:
            return Batch("plan", -1, cap, finished)
        elif plan.configs - finished > 0 or stale or fill_pays(plan, study):
            # a plan that fills its budget goes on past its configs (e.g. after a pause) while it pays
            return Batch("plan", max(plan.configs - finished, stale, 0), cap, finished)
    base = int(summary.get("planned_trials", finished))
    left = int(job.extra_trials or 0) - int(summary.get("extra_trials_run") or 0)
    if left > 0 or stale:
        return Batch("trials", max(left, stale), None, base)
    time_left = float(job.extra_time_s or 0.0) - float(summary.get("extension_time_used_s") or 0.0)
    if time_left >= 1.0:
        return Batch("time", -1, time_left, base)
    return None


def continue_batch(plan: Plan, study: Any, job: Any) -> Batch | None:
    """The rest of the batch a dead (or stopped) run left open (``job.summary["batch"]``, its time
    booked by :func:`reopen_batch`), re-running its unfinished trials; ``None`` when nothing of it is
    left (then :func:`settle_batch` books it)."""
    record = (job.summary or {}).get("batch")
    if not record:
        return None
    finished = finished_count(study)
    stale = len(unfinished_trials(study))
    summary = job.summary
    base = int(summary.get("planned_trials", finished))
    if record["kind"] == "plan":
        batch = next_batch(plan, study, job)
        return batch if batch is not None and batch.kind == "plan" else None
    if record["kind"] == "trials":
        left = int(record.get("trials") or 0) - (finished - int(record["from"]))
        return Batch("trials", max(left, stale), None, base) if left > 0 or stale else None
    time_left = float(job.extra_time_s or 0.0) - float(summary.get("extension_time_used_s") or 0.0)
    if time_left >= 1.0 or stale:
        return Batch("time", -1 if time_left >= 1.0 else stale, max(time_left, 1.0), base)
    return None


def batch_started(batch: Batch, finished: int, now: float) -> dict[str, Any]:
    """The summary update that records ``batch`` as in progress (``finished``: trials finished
    before it)."""
    record = {"kind": batch.kind, "from": finished, "trials": batch.trials, "cap_s": batch.cap_s}
    return {"batch": {**record, "started_at": now}}


def _seconds(summary: dict[str, Any], record: dict[str, Any], end: float) -> dict[str, Any]:
    """The ledger update for a capped batch's seconds from its ``started_at`` until ``end``."""
    cap = record.get("cap_s")
    if cap is None or record["kind"] == "trials":
        return {}
    used = max(0.0, min(end - float(record.get("started_at") or end), float(cap)))
    key = "extension_time_used_s" if record["kind"] == "time" else "plan_time_used_s"
    return {key: float(summary.get(key) or 0.0) + used}


def reopen_batch(summary: dict[str, Any], end: float, now: float) -> dict[str, Any]:
    """The summary update for a run that finds a batch left open by the run before it: the seconds
    it ran until ``end`` (when that run was declared over) are booked and the batch goes on from
    ``now`` (its trials are booked when it ends). Empty when no batch is open."""
    record = summary.get("batch")
    if not record:
        return {}
    booked = _seconds(summary, record, end)
    cap = record.get("cap_s")
    if booked and cap is not None:  # what is left of its cap
        ((key, total),) = booked.items()
        cap = max(0.0, float(cap) - (total - float(summary.get(key) or 0.0)))
    return {**booked, "batch": {**record, "cap_s": cap, "started_at": now}}


def settle_batch(summary: dict[str, Any], job: Any, finished: int, end: float) -> dict[str, Any]:
    """The summary update that books the batch in progress (``summary["batch"]``) into the ledger:
    a ``trials`` batch's finished trials into ``extra_trials_run`` (at most what was granted), a
    capped batch's seconds (until ``end``, at most its cap) into ``plan_time_used_s`` /
    ``extension_time_used_s``. Empty when no batch is in progress."""
    record = summary.get("batch")
    if not record:
        return {}
    update: dict[str, Any] = {"batch": None, **_seconds(summary, record, end)}
    if record["kind"] == "trials":
        run = int(summary.get("extra_trials_run") or 0) + max(0, finished - int(record["from"]))
        update["extra_trials_run"] = min(run, int(job.extra_trials or 0))
    return update


def grants_used_up(summary: dict[str, Any], job: Any, finished: int) -> dict[str, Any]:
    """The summary update for a stopped job: the plan counts as done and every extension granted so
    far as used, so that nothing the user stopped runs later (a later ``extend`` counts from here)."""
    return {
        "planned_trials": int(summary.get("planned_trials", finished)),
        "extra_trials_run": int(job.extra_trials or 0),
        "extension_time_used_s": float(job.extra_time_s or 0.0),
        "batch": None,
    }
