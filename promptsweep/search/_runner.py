"""Running a search job: the driver side (Ray Tune ``Tuner`` + :class:`PromptsweepSearch`).

``run_job`` does, in the driver process:

1. reads and validates the job's stored spec (:class:`~promptsweep.exceptions.SpecError` before any
   trial);
2. prepares the model files and the tokenized dataset **once** (``promptsweep.methods.prepare_inputs``);
   trials get the resulting paths, not a rebuild; plans the search from the budget (``_planning``:
   a timed step, the configs, rungs and survivor steps; stored in the job's summary) and scores the
   floors on validation (``_selecting``);
3. starts (or connects to) Ray: an embedded local instance sized by the spec (``num_cpus``, no
   dashboard, a small object store), or ``auto`` / ``ray://`` for a cluster; refuses GPUs the pool lacks;
4. creates the job's Optuna study **once** on the job's database (``Storage.optuna_storage()``), so
   optuna-dashboard shows it (its objectives named, e.g. ``accuracy``); on a fresh study, enqueues the
   warm-start configs (Optuna ``enqueue_trial``; Ray's ``points_to_evaluate`` is ignored with
   define-by-run spaces, ray#35319);
5. resumes: trials a killed run left RUNNING are re-run under their own numbers; the budget counts the
   trials already finished (complete, pruned, failed);
6. runs the ``Tuner`` (``tune.with_resources`` with fractional GPUs, ``max_concurrent_trials``, ASHA /
   median stopping over training steps, ``FailureConfig`` retries) with :class:`TrialRecorder`
   writing every trial to storage as it happens;
7. selects honestly: the best trial(s) by the **validation** objective (complete trials only); the test
   split is evaluated only for those and stored as ``test_metrics``; nothing from the test split is
   told to the sampler, the pruner or the leaderboard ordering.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptsweep import _faults, paths
from promptsweep._logging import get_logger
from promptsweep.exceptions import JobNotFoundError
from promptsweep.search._fill import budget_fill
from promptsweep.search._planning import Plan, describe_plan, job_plan
from promptsweep.search._pool import check_pool, ensure_ray
from promptsweep.search._progress import data_summary, describe_data, preparation_progress
from promptsweep.search._running import (
    batch_started,
    continue_batch,
    failed_trials,
    failure_budget_spent,
    finished_count,
    grants_used_up,
    next_batch,
    reopen_batch,
    settle_batch,
    tune_job,
    unfinished_trials,
)
from promptsweep.search._selecting import describe_floors, score_job_floors
from promptsweep.search._space import make_sampler
from promptsweep.search._spec import JobSpec, check_model, parse_spec
from promptsweep.search._submitting import data_spec
from promptsweep.search._worker import HEARTBEAT_S, heartbeating, process_id, stale_default

_log = get_logger(__name__)


@dataclass(frozen=True)
class JobOutcome:
    """What a finished ``run_job`` call produced.

    Attributes:
        job_id: the job.
        status: ``succeeded``, ``failed``, ``cancelled`` (cancelled in storage while it ran),
            ``paused`` (paused by the user: its running trials finished, no new one started), or ``lost``
            (a worker's job was re-queued or claimed by another worker while it ran; see ``run_job``).
        counts: trials per state in the study (``complete``, ``pruned``, ``fail``, ``running``, ``waiting``).
        best_trials: the selected trial numbers: the best by the validation objective (one), or the
            Pareto front (multi-objective), complete trials only.
        best_values: validation objective values of each selected trial, in ``best_trials`` order.
        best_params: flat params of each selected trial.
        test_metrics: trial number -> metrics on the test split (selected trials only; empty when the
            data has no test split).
        wall_seconds: wall-clock seconds of this call.
        error: why the job failed, if it did; why it stopped or paused (``stopped by the user ...``).
        granted: the extensions (trials, seconds) this run saw through; ``run_job`` queues the job
            again when it was extended beyond them meanwhile.
    """

    job_id: int
    status: str
    counts: dict[str, int]
    best_trials: list[int] = field(default_factory=list)
    best_values: list[list[float]] = field(default_factory=list)
    best_params: list[dict[str, Any]] = field(default_factory=list)
    test_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    error: str | None = None
    granted: tuple[int, float] | None = None

    @property
    def finished(self) -> int:
        """Trials that ended (complete + pruned + fail)."""
        return sum(self.counts.get(k, 0) for k in ("complete", "pruned", "fail"))


# ------------------------------------------------------------------------------------------------
# the job's inputs


def job_inputs(spec: JobSpec, *, capped: bool = True, progress: Any = None) -> Any:
    """The :class:`promptsweep.methods.PreparedInputs` of a job with ``spec`` (prepared once, cached on
    disk). ``capped=False``: the whole validation and test splits (no ``dataset.max_eval_examples``;
    the capped splits are stratified subsamples of these), e.g. to re-score finalists or an export.
    ``progress``: ``progress(stage, done, total)`` while tokenizing (see ``prepare_inputs``)."""
    from promptsweep.methods import TaskType, prepare_inputs

    if not capped and spec.dataset.max_eval_examples is not None:
        spec = spec.model_copy(
            update={"dataset": spec.dataset.model_copy(update={"max_eval_examples": None})}
        )
    return prepare_inputs(
        spec.model,
        data_spec(spec),
        TaskType(spec.task),
        max_length=spec.dataset.max_length,
        cache_dir=paths.cache_dir(),
        progress=progress,
    )


def check_job_model(spec: JobSpec) -> None:
    """:func:`check_model` where the job runs: a local folder's ``config.json`` as it is now, a hub
    name's from the folder it resolves to (downloaded, or the hub cache's offline).

    Raises:
        SpecError: naming the field, as at submit; or the model, when it cannot be resolved here.
    """
    from promptsweep.methods import model_config_if_known, read_model_config, resolve_model_dir

    model_config = model_config_if_known(spec.model)
    if model_config is None:
        model_config = read_model_config(resolve_model_dir(spec.model, paths.cache_dir()))
    check_model(spec, model_config=model_config)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _state_counts(study: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
    return counts


def _enqueue_warm_start(spec: JobSpec, study: Any, limit: int | None) -> None:
    """Enqueue the job's warm-start configs that no trial of ``study`` has run or holds yet, in order,
    until ``limit`` trials wait (``None``: all; Optuna's ``skip_if_exists`` decides what was run)."""
    from optuna.trial import TrialState

    from promptsweep.search._space import to_optuna_params, warm_start_params

    def waiting() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    for params in warm_start_params(spec):
        if limit is not None and waiting() >= limit:
            return
        study.enqueue_trial(to_optuna_params(params), skip_if_exists=True)


def _create_study(spec: JobSpec, storage: Any, job_id: int, plan: Plan) -> tuple[Any, bool]:
    """Create the job's study once (``Storage.create_study``: idempotent, cross-process locked; it also
    names the objectives, ``study.set_metric_names``, on a resumed job's study too) and load it with the
    spec's sampler; return ``(study, fresh)`` where ``fresh`` means no trial yet."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_name = storage.create_study(job_id)
    study = optuna.load_study(
        study_name=study_name, storage=storage.optuna_storage(), sampler=make_sampler(spec, plan)
    )
    fresh = not study.get_trials(deepcopy=False)
    if fresh:
        study.set_user_attr("promptsweep_spec", spec.to_dict())
        study.set_user_attr("promptsweep_objectives", spec.metric_names)
    return study, fresh


# ------------------------------------------------------------------------------------------------
# run_job


def run_job(
    job_id: int,
    storage: Any,
    *,
    progress: bool = True,
    worker_id: str | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> JobOutcome:
    """Run (or resume) job ``job_id`` to the end of its budget, recording every trial as it happens.

    Args:
        job_id: a submitted job.
        storage: the :class:`promptsweep.storage.Storage` holding it.
        progress: draw the live rich table on stderr (foreground runs).
        worker_id: the worker that claimed the job (``Storage.claim_job``). The run stops when the job
            is no longer running under it (re-queued after missed heartbeats, or claimed by another
            worker) and then leaves the job's status to its new holder (outcome status ``"lost"``).
            ``None`` (a foreground run): the job is held as ``run@HOST-PID-XXXXXX`` (``Storage.hold_job``;
            refused while another holder heartbeats it) and heartbeated every ``heartbeat_s`` seconds, so
            a worker re-queues it if this process dies.

    Returns:
        The :class:`JobOutcome`: state counts, the selected trial(s) by validation objective, their test
        metrics.

    Raises:
        JobNotFoundError: no such job.
        SpecError: the stored spec is invalid, or asks for resources the pool lacks (before any trial).
        PromptsweepError: the data or model cannot be prepared (the job is marked ``failed`` with the
            reason); a killed run can be resumed by calling ``run_job`` again.
    """
    t0 = time.time()
    job = storage.get_job(job_id)
    if job is None:  # pragma: no cover - storage raises JobNotFoundError itself
        raise JobNotFoundError(f"no job with id {job_id}")
    foreground = worker_id is None
    try:
        spec = parse_spec(dict(job.spec), source=f"of job {job_id}")
        if worker_id is None:
            # In the foreground: held and heartbeated like a worker's job, so that a worker re-queues
            # and resumes it if this process dies.
            worker_id = f"run@{process_id()}-{uuid.uuid4().hex[:6]}"
            storage.hold_job(job_id, worker_id, live_within_s=stale_default())
            with heartbeating(storage, job_id, worker_id, heartbeat_s):
                outcome = _run(job, spec, storage, progress=progress, t0=t0, worker_id=worker_id)
        else:
            outcome = _run(job, spec, storage, progress=progress, t0=t0, worker_id=worker_id)
    except KeyboardInterrupt:
        # Ctrl-C (a worker: also SIGTERM): the unfinished trials stay RUNNING in the study and our
        # tables, so that resuming re-runs them under their own numbers (as after a killed process).
        # A foreground run leaves the job interrupted for `run --job`; a worker's job goes back to the
        # queue at once (no stale-heartbeat wait) for the next worker.
        if foreground:
            status = "interrupted"
            reason = f"interrupted (Ctrl-C or SIGTERM); resume with `promptsweep run --job {job_id}`"
        else:
            status = "queued"
            reason = "its worker was stopped (SIGTERM or Ctrl-C); the next worker resumes it"
        _log.warning("job %d %s: %s", job_id, status, reason)
        try:
            storage.set_job_status(job_id, status, error=reason, holder=worker_id)
        except Exception:  # pragma: no cover
            _log.exception("could not mark job %d %s", job_id, status)
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        _log.error("job %d failed: %s (resume with `promptsweep run --job %d`)", job_id, reason, job_id)
        try:
            storage.set_job_status(job_id, "failed", error=reason, holder=worker_id)
        except Exception:  # pragma: no cover
            _log.exception("could not mark job %d failed", job_id)
        raise
    if outcome.status == "lost":
        return outcome
    if storage.get_job(job_id).status.value == "cancelled":
        _log.warning("job %d was cancelled while it ran; its finished trials are kept", job_id)
        return dataclasses.replace(outcome, status="cancelled")
    record = storage.set_job_status(
        job_id, outcome.status, error=outcome.error, holder=worker_id, requeue_beyond=outcome.granted
    )
    if outcome.status == "succeeded" and record.status.value == "queued":
        _log.info("job %d was extended while it finished: queued again", job_id)
    return outcome


def _run(
    job: Any, spec: JobSpec, storage: Any, *, progress: bool, t0: float, worker_id: str | None
) -> JobOutcome:
    import ray

    job_id = int(job.id)
    base = Path(spec.output_dir) if spec.output_dir else paths.runs_dir()
    job_dir = (base / f"job-{job_id}").absolute()
    job_dir.mkdir(parents=True, exist_ok=True)

    # 0. the model against the job's task, methods and poolings, before any data is prepared: submit
    # could not check a hub name (it does not reach the hub), and a stored job's local folder may have
    # changed since (an alias's known config is checked again, at no cost).
    check_job_model(spec)

    # 1. model files + tokenized data, once per job (cached on disk by the methods layer); what the
    # data became (examples and truncations per split, cleaning notes) goes into the job's summary.
    if progress:
        with preparation_progress(_stderr_console()) as report:
            inputs = job_inputs(spec, progress=report)
    else:
        inputs = job_inputs(spec)
    storage.update_job_summary(job_id, data=data_summary(inputs))
    for line in describe_data(data_summary(inputs)):
        _log.info("job %d %s", job_id, line)
        if progress:
            _stderr_console().print(line, highlight=False, markup=False)
    # 2. the plan: stored with the job, made once (a resumed job keeps its plan); the floors.
    plan = job_plan(spec, storage, job, inputs)
    for line in describe_plan(plan.to_dict()):
        _log.info("job %d %s", job_id, line.strip())
        if progress:
            _stderr_console().print(line, highlight=False)
    floors = score_job_floors(spec, storage, job_id, inputs)
    if progress and floors:
        _stderr_console().print(describe_floors(floors, spec.objective.metric), highlight=False)

    # 3. the resource pool.
    started_ray = ensure_ray(spec)
    try:
        check_pool(spec)

        # 4. the study, created once; warm start on a fresh one: as many warm-start configs as the
        # plan runs (the rest are enqueued when `extend` adds trials), so none is left waiting.
        study, fresh = _create_study(spec, storage, job_id, plan)
        if fresh:
            _enqueue_warm_start(spec, study, plan.configs)
        failed_before = len(failed_trials(study))
        _faults.hold("study")  # the chaos tests kill a worker here

        # 5. the plan's trials, then what `extend` added; a user's stop / pause ends the loop. The
        # ledger in the job's summary says what is left; a batch a dead run left open goes on first
        # (its seconds booked up to when that run was declared over). Ledger writes are made only
        # while this run holds the job.
        def book(**parts: Any) -> Any:
            record = storage.update_job_summary(job_id, holder=worker_id, **parts)
            if record.status.value != "running" or record.worker_id != worker_id:
                raise _Lost
            return record

        current = storage.get_job(job_id)
        request = current.request if current.request in ("stop", "pause") else None
        ended = "done"
        try:
            if current.summary.get("batch"):
                end = _previous_run_end(current, after=float(current.summary["batch"]["started_at"]))
                current = book(**reopen_batch(current.summary, end, time.time()))
            while True:
                batch = continue_batch(plan, study, current)
                if batch is None and current.summary.get("batch"):  # nothing of it is left
                    update = settle_batch(current.summary, current, finished_count(study), time.time())
                    if current.summary["batch"]["kind"] == "plan":
                        update["planned_trials"] = finished_count(study)
                    current = book(**update)
                reopened = batch is not None
                batch = batch or next_batch(plan, study, current)
                if batch is None:
                    break
                stale = unfinished_trials(study)
                if request and not (request == "stop" and stale):
                    ended = request  # asked before this run: only a stop re-runs unfinished trials
                    break
                if batch.kind != "plan" and "planned_trials" not in current.summary:
                    current = book(planned_trials=batch.base)
                if stale:
                    _log.info("job %d: resuming; re-running unfinished trial(s) %s", job_id, stale)
                if batch.kind != "plan":
                    _log.info("job %d: extended: %s", job_id, batch.describe())
                    if not reopened:
                        slots = spec.resources.max_concurrent_trials  # a time extension: one wave
                        _enqueue_warm_start(spec, study, slots if batch.trials < 0 else batch.trials)
                before = finished_count(study)
                if not reopened:
                    current = book(**batch_started(batch, before, time.time()))
                ended = tune_job(
                    spec,
                    storage,
                    job_id,
                    study,
                    job_dir,
                    inputs,
                    plan,
                    stale,
                    batch.trials,
                    progress=progress,
                    worker_id=worker_id,
                    cap=batch.cap_s,
                    failed_so_far=len(failed_trials(study)) - failed_before,
                    halted=request,
                    fill=budget_fill(plan, study, batch.trials, len(stale)) if batch.kind == "plan" else None,
                )
                if ended == "lost":
                    raise _Lost
                if ended == "cancelled":
                    return _ended(job_id, study, t0, "cancelled", "cancelled by the user")
                current = storage.get_job(job_id)
                update = settle_batch(current.summary, current, finished_count(study), time.time())
                spent = failure_budget_spent(spec, plan, study, before=failed_before)
                if batch.kind == "plan" and ended == "done" and not spent:
                    update["planned_trials"] = finished_count(study)
                if ended != "done" or spent:
                    # stopped early (a request, the failure budget): the batch stays open for what
                    # is left of it, its seconds so far booked
                    update = reopen_batch(current.summary, time.time(), time.time())
                current = book(**update)
                if spent:
                    break  # the job fails; a retry runs the rest of this batch with a fresh budget
                if ended in ("stop", "pause"):
                    request = current.request if current.request in ("stop", "pause") else None
                    if request:
                        ended = request  # a stop asked after a pause replaces it
                        break
                    ended = "done"  # a withdrawn pause goes on
                elif batch.kind == "trials" and finished_count(study) == before:
                    break  # nothing finished (e.g. its wall-clock cap): do not ask again
        except _Lost:
            why = f"worker {worker_id} lost job {job_id} to a re-queue or another worker"
            return _ended(job_id, study, t0, "lost", why)
        if ended == "pause":
            why = f"paused by the user; `promptsweep resume {job_id}` queues it again"
            return _ended(job_id, study, t0, "paused", why)
        # 6. past the failure budget the job fails (its finished trials are kept).
        spent = failure_budget_spent(spec, plan, study, before=failed_before)
        if spent:
            return _ended(job_id, study, t0, "failed", spent)
        if ended == "stop":  # what was granted but not run is given up: a later `extend` counts from here
            try:
                current = book(**grants_used_up(current.summary, current, finished_count(study)))
            except _Lost:
                why = f"worker {worker_id} lost job {job_id} to a re-queue or another worker"
                return _ended(job_id, study, t0, "lost", why)
        # 7. honest selection on validation; the test split for the selected trial(s) only.
        outcome = _select(spec, storage, job_id, study, inputs, t0)
        if outcome.status == "succeeded" and ended == "stop":
            finished = finished_count(study)
            why = f"stopped by the user after {finished} trials"
            if plan.configs is not None and finished <= plan.configs:
                why = f"stopped by the user after {finished} of {plan.configs} planned trials"
            elif plan.configs is not None:
                why += f" ({plan.configs} planned, {finished - plan.configs} more filling the budget)"
            outcome = dataclasses.replace(outcome, error=why)
        # The grants this run has seen through: an `extend` that lands after them (during the
        # selection, or while Ray shuts down) queues the job again when run_job marks it succeeded.
        return dataclasses.replace(outcome, granted=(current.extra_trials, current.extra_time_s))
    finally:
        if started_ray:
            ray.shutdown()


class _Lost(Exception):
    """This run no longer holds its job (re-queued, or taken by another worker)."""


#: History events that end a run its process did not end itself (a dead, stopped or paused worker).
_RUN_ENDS = ("requeued", "queued", "interrupted", "failed", "paused")


def _previous_run_end(job: Any, *, after: float) -> float:
    """When the run that left a batch open (started at ``after``, ``time.time()`` seconds) was
    declared over: the first re-queue, interrupt, failure or pause in the job's history after it. A
    re-queue after a missed heartbeat comes up to the stale timeout after the death, which is then
    booked too. ``after`` itself when there is none (no time booked: a foreground run killed and run
    again with ``run --job``)."""
    from datetime import UTC, datetime

    for event in job.history or []:
        if event.get("event") in _RUN_ENDS:
            at = datetime.fromisoformat(event["at"])
            when = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
            if when >= after:
                return when
    return after


def _ended(job_id: int, study: Any, t0: float, status: str, error: str) -> JobOutcome:
    """The outcome of a run that ends without a selection (``lost``, ``failed``, ``paused``,
    ``cancelled``)."""
    return JobOutcome(
        job_id=job_id, status=status, counts=_state_counts(study), wall_seconds=time.time() - t0, error=error
    )


def _select(spec: JobSpec, storage: Any, job_id: int, study: Any, inputs: Any, t0: float) -> JobOutcome:
    """Pick the best trial(s) on validation (``_selecting.select``); test split for those only."""
    from promptsweep.search._selecting import select

    counts = _state_counts(study)
    chosen = select(spec, storage, job_id, inputs)
    selected = chosen["selected"]
    if not selected:
        return JobOutcome(
            job_id=job_id,
            status="failed",
            counts=counts,
            wall_seconds=time.time() - t0,
            error="no trial completed (see the trials' errors; resume with `promptsweep run --job "
            f"{job_id}` after fixing the cause)",
        )
    return JobOutcome(
        job_id=job_id,
        status="succeeded",
        counts=counts,
        best_trials=[r.number for r in selected],
        best_values=[list(r.values or [r.value]) for r in selected],
        best_params=[dict(r.params) for r in selected],
        test_metrics=chosen["test_metrics"],
        wall_seconds=time.time() - t0,
    )
