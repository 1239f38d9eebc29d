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
   optuna-dashboard shows it; on a fresh study, enqueues the warm-start configs (Optuna
   ``enqueue_trial``; Ray's ``points_to_evaluate`` is ignored with define-by-run spaces, ray#35319);
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

import contextlib
import dataclasses
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptsweep import paths
from promptsweep._logging import get_logger
from promptsweep.exceptions import JobNotFoundError, PromptsweepError, SpecError
from promptsweep.search._planning import (
    Plan,
    describe_plan,
    job_plan,
    make_sampler,
)
from promptsweep.search._running import failed_trials, failure_budget_spent, tune_job
from promptsweep.search._selecting import describe_floors, score_job_floors
from promptsweep.search._spec import (
    JobSpec,
    check_cpu_precision,
    check_resources,
    local_gpu_count,
    parse_spec,
)

_log = get_logger(__name__)

#: Seconds between a held job's heartbeats.
HEARTBEAT_S = 30.0
#: Seconds without a heartbeat after which a worker re-queues a running job (``PROMPTSWEEP_STALE_AFTER_S``).
STALE_AFTER_S = 300.0
#: Worker claims of a job after which a dead worker's job is failed, not re-queued (``--max-attempts``).
MAX_JOB_ATTEMPTS = 3


@dataclass(frozen=True)
class JobOutcome:
    """What a finished ``run_job`` call produced.

    Attributes:
        job_id: the job.
        status: ``succeeded``, ``failed``, ``cancelled`` (cancelled in storage while it ran), or ``lost``
            (a worker's job was re-queued or claimed by another worker while it ran; see ``run_job``).
        counts: trials per state in the study (``complete``, ``pruned``, ``fail``, ``running``, ``waiting``).
        best_trials: the selected trial numbers: the best by the validation objective (one), or the
            Pareto front (multi-objective), complete trials only.
        best_values: validation objective values of each selected trial, in ``best_trials`` order.
        best_params: flat params of each selected trial.
        test_metrics: trial number -> metrics on the test split (selected trials only; empty when the
            data has no test split).
        wall_seconds: wall-clock seconds of this call.
        error: why the job failed, if it did.
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

    @property
    def finished(self) -> int:
        """Trials that ended (complete + pruned + fail)."""
        return sum(self.counts.get(k, 0) for k in ("complete", "pruned", "fail"))


# ------------------------------------------------------------------------------------------------
# submit


def submit(spec: JobSpec | dict[str, Any], storage: Any) -> int:
    """Validate ``spec`` and queue it as a job; return the job id.

    The spec is stored with the job (JSON), including its search space. A local spec (no
    ``ray_address``) asking for GPUs on a machine without any is refused here.

    Raises:
        SpecError: the spec is invalid (the message names the field).
        StorageError: the database cannot be written.
    """
    job_spec = _with_local_source_resolved(parse_spec(spec))
    if job_spec.ray_address is None and job_spec.resources.gpus_per_trial > 0:
        check_resources(job_spec, gpus_available=local_gpu_count())
    if job_spec.ray_address is None and job_spec.resources.gpus_per_trial == 0:
        check_cpu_precision(job_spec)
    job = storage.create_job(
        job_spec.name,
        job_spec.to_dict(),
        objective_metric=job_spec.objective.metric,
        direction=job_spec.objective.resolved_direction,
        secondary_objective=job_spec.objective.secondary,
        model=job_spec.model,
        dataset=job_spec.dataset.source,
        task=job_spec.task,
    )
    _log.info("submitted job %d (%s)", job.id, job_spec.name)
    return int(job.id)


# ------------------------------------------------------------------------------------------------
# helpers

#: Suffixes that mark ``dataset.source`` as a local data file (the formats promptsweep.methods reads).
_DATA_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")


def _with_local_source_resolved(spec: JobSpec) -> JobSpec:
    """Check a local ``dataset.source`` at submit time and store it as an absolute path.

    A source naming a data file (by suffix) or an existing path is local: relative paths resolve
    against the submitting process's directory, so a worker started elsewhere finds the same file.
    Aliases (``fine-foods``) and hub names pass unchanged.

    Raises:
        SpecError: a data file that does not exist (names ``dataset.source`` and the resolved path).
    """
    source = spec.dataset.source
    path = Path(source).expanduser()
    if not (path.exists() or path.suffix.lower() in _DATA_SUFFIXES):
        return spec
    resolved = path.resolve()
    if not resolved.exists():
        raise SpecError(
            f"dataset.source: no such file {str(resolved)!r} (relative paths resolve against the "
            f"current directory, {os.getcwd()!r})"
        )
    dataset = spec.dataset.model_copy(update={"source": str(resolved)})
    return spec.model_copy(update={"dataset": dataset})


def data_spec(spec: JobSpec) -> Any:
    """Return the :class:`promptsweep.methods.DataSpec` that a job with ``spec`` prepares its data with
    (the job's dataset settings and seed), e.g. to rebuild a job's inputs for evaluating an adapter."""
    from promptsweep.methods import DataSpec

    d = spec.dataset
    return DataSpec(
        source=d.source,
        text_column=d.text_column,
        text_pair_column=d.text_pair_column,
        label_column=d.label_column,
        target_column=d.target_column,
        label_words=d.label_words,
        splits={k: v for k, v in d.splits.items() if v is not None},
        validation_fraction=d.validation_fraction,
        max_train_examples=d.max_train_examples,
        max_eval_examples=d.max_eval_examples,
        seed=spec.seed,
    )


def job_inputs(spec: JobSpec, *, capped: bool = True) -> Any:
    """The :class:`promptsweep.methods.PreparedInputs` of a job with ``spec`` (prepared once, cached on
    disk). ``capped=False``: the whole validation and test splits (no ``dataset.max_eval_examples``;
    the capped splits are stratified subsamples of these), e.g. to re-score finalists or an export."""
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
    )


def ensure_ray(spec: JobSpec) -> bool:
    """Start an embedded local Ray (or connect to ``spec.ray_address``); return True if started here.

    The embedded instance is small for shared machines: ``num_cpus`` from the spec (default: all
    cores), no dashboard, a ``resources.object_store_memory_mb`` object store, driver logs off.
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray runs workers at nice 15 by default; here the trials *are* the job's work (a shared machine
    # otherwise starves them). Read by the raylet that ray.init starts.
    os.environ.setdefault("RAY_worker_niceness", "0")
    r = spec.resources
    if spec.ray_address is None:
        ray.init(
            num_cpus=r.num_cpus or os.cpu_count() or 1,
            num_gpus=local_gpu_count(),
            include_dashboard=False,
            object_store_memory=r.object_store_memory_mb * 1024 * 1024,
            configure_logging=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
    else:
        ray.init(address=spec.ray_address, configure_logging=False, log_to_driver=False)
    return True


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _state_counts(study: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
    return counts


def _create_study(spec: JobSpec, storage: Any, job_id: int, plan: Plan) -> tuple[Any, bool]:
    """Create the job's study once (``Storage.create_study``: idempotent, cross-process locked) and
    load it with the spec's sampler; return ``(study, fresh)`` where ``fresh`` means no trial yet."""
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
    try:
        spec = parse_spec(dict(job.spec), source=f"of job {job_id}")
        if worker_id is None:
            # In the foreground: held and heartbeated like a worker's job, so that a worker re-queues
            # and resumes it if this process dies.
            worker_id = f"run@{_process_id()}-{uuid.uuid4().hex[:6]}"
            storage.hold_job(job_id, worker_id, live_within_s=_stale_default())
            with heartbeating(storage, job_id, worker_id, heartbeat_s):
                outcome = _run(job, spec, storage, progress=progress, t0=t0, worker_id=worker_id)
        else:
            outcome = _run(job, spec, storage, progress=progress, t0=t0, worker_id=worker_id)
    except KeyboardInterrupt:
        # Ctrl-C: the unfinished trials stay RUNNING in the study and our tables, so that resuming
        # re-runs them under their own numbers (as after a killed process).
        reason = f"interrupted (Ctrl-C); resume with `promptsweep run --job {job_id}`"
        _log.warning("job %d %s", job_id, reason)
        try:
            storage.set_job_status(job_id, "interrupted", error=reason, holder=worker_id)
        except Exception:  # pragma: no cover
            _log.exception("could not mark job %d interrupted", job_id)
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
    storage.set_job_status(job_id, outcome.status, error=outcome.error, holder=worker_id)
    return outcome


def _run(
    job: Any, spec: JobSpec, storage: Any, *, progress: bool, t0: float, worker_id: str | None
) -> JobOutcome:
    import ray
    from optuna.trial import TrialState

    from promptsweep.search._space import to_optuna_params, warm_start_params

    job_id = int(job.id)
    base = Path(spec.output_dir) if spec.output_dir else paths.runs_dir()
    job_dir = (base / f"job-{job_id}").absolute()
    job_dir.mkdir(parents=True, exist_ok=True)

    # 1. model files + tokenized data, once per job (cached on disk by the methods layer).
    inputs = job_inputs(spec)
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
        pool = ray.cluster_resources()
        check_resources(
            spec, gpus_available=float(pool.get("GPU", 0)), cpus_available=float(pool.get("CPU", 0))
        )

        # 4. the study, created once; warm start on a fresh one.
        study, fresh = _create_study(spec, storage, job_id, plan)
        if fresh:
            for params in warm_start_params(spec):
                study.enqueue_trial(to_optuna_params(params), skip_if_exists=True)
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
        stale = [t.number for t in trials if t.state == TrialState.RUNNING]
        if stale:
            _log.info("job %d: resuming; re-running unfinished trial(s) %s", job_id, stale)
        remaining = -1 if plan.configs is None else max(0, plan.configs - len(finished))
        failed_before = len(failed_trials(study))

        if remaining != 0:
            lost = tune_job(
                spec,
                storage,
                job_id,
                study,
                job_dir,
                inputs,
                plan,
                stale,
                remaining,
                progress=progress,
                worker_id=worker_id,
            )
            if lost:
                why = f"worker {worker_id} lost job {job_id} to a re-queue or another worker"
                return _ended(job_id, study, t0, "lost", why)
        # 5. past the failure budget the job fails (its finished trials are kept).
        spent = failure_budget_spent(spec, plan, study, before=failed_before)
        if spent:
            return _ended(job_id, study, t0, "failed", spent)
        # 6. honest selection on validation; the test split for the selected trial(s) only.
        return _select(spec, storage, job_id, study, inputs, t0)
    finally:
        if started_ray:
            ray.shutdown()


def _ended(job_id: int, study: Any, t0: float, status: str, error: str) -> JobOutcome:
    """The outcome of a run that ends without a selection (``lost``, ``failed``)."""
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


# ------------------------------------------------------------------------------------------------
# worker


def _process_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@contextlib.contextmanager
def heartbeating(storage: Any, job_id: int, worker_id: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Heartbeat ``job_id`` for ``worker_id`` from a thread while the block runs (stops by itself
    when the job is no longer held by ``worker_id``: ``run_job``'s stopper then ends the search)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                if not storage.heartbeat(job_id, worker_id):
                    _log.warning("job %d is no longer held by %s; stopping it", job_id, worker_id)
                    return
            except Exception:  # pragma: no cover - the next beat retries
                _log.exception("heartbeat failed for job %d", job_id)

    thread = threading.Thread(target=beat, daemon=True, name=f"promptsweep-heartbeat-{job_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _stale_default() -> float:
    """The stale-heartbeat timeout: ``$PROMPTSWEEP_STALE_AFTER_S`` seconds, else :data:`STALE_AFTER_S`.

    Raises:
        SpecError: the variable is not a positive number (names it).
    """
    raw = os.environ.get("PROMPTSWEEP_STALE_AFTER_S")
    if raw is None or not raw.strip():
        return STALE_AFTER_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SpecError(f"PROMPTSWEEP_STALE_AFTER_S: expected positive seconds, got {raw!r}")
    return value


def run_worker(
    storage: Any,
    once: bool = False,
    *,
    poll_s: float = 5.0,
    heartbeat_s: float = HEARTBEAT_S,
    stale_after_s: float | None = None,
    max_job_attempts: int = MAX_JOB_ATTEMPTS,
    progress: bool = False,
) -> int:
    """Run queued jobs from ``storage`` one after another; return how many jobs this worker ran.

    Each claimed job is heartbeated from a thread while it runs; jobs whose worker stopped
    heartbeating for ``stale_after_s`` seconds (default ``$PROMPTSWEEP_STALE_AFTER_S``, else 300)
    are re-queued and resumed by whoever claims them, or failed once taken ``max_job_attempts`` times.

    Args:
        once: run at most one job, then return (return 0 at once when the queue is empty).
        poll_s: seconds between polls of an empty queue.
    """
    stale_s = _stale_default() if stale_after_s is None else float(stale_after_s)
    worker_id = f"{_process_id()}-{uuid.uuid4().hex[:6]}"
    ran = 0
    while True:
        try:
            storage.requeue_stale(stale_s, max_attempts=max_job_attempts)
        except Exception:  # pragma: no cover - best effort
            _log.exception("requeue_stale failed")
        job = storage.claim_job(worker_id)
        if job is None:
            if once:
                return ran
            time.sleep(poll_s)
            continue
        try:
            with heartbeating(storage, int(job.id), worker_id, heartbeat_s):
                run_job(int(job.id), storage, progress=progress, worker_id=worker_id)
        except SpecError as exc:
            _log.error("job %d refused: %s", job.id, exc)
        except PromptsweepError as exc:  # bad data, model, ...: the job is marked failed with the reason
            _log.error("job %d failed: %s", job.id, exc)
        except Exception:
            _log.exception("job %d failed", job.id)
        ran += 1
        if once:
            return ran
