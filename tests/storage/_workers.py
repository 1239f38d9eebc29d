"""Worker processes for the job-queue tests (module-level functions, so ``spawn`` can import them)."""

from __future__ import annotations

import time
from typing import Any


def open_storage(url: str, start: Any, out: Any) -> None:
    """Import, say "ready", wait for ``start``, open ``url`` (creating its schema if it has none) and
    put its schema revision on ``out`` (or the error, as one line)."""
    from promptsweep.storage import Storage

    out.put("ready")
    start.wait(60)
    try:
        with Storage(url) as storage:
            out.put(storage.schema_revision())
    except Exception as exc:  # reported to the test, which shows it
        out.put(f"{type(exc).__name__}: {exc}")


def claim_all(url: str, worker_id: str, start: Any, out: Any) -> None:
    """Claim jobs until none is left; put the claimed ids on ``out``."""
    from promptsweep.storage import Storage

    with Storage(url) as storage:
        start.wait(60)
        claimed = []
        while (job := storage.claim_job(worker_id)) is not None:
            claimed.append(job.id)
        out.put((worker_id, claimed))


def claim_and_heartbeat(url: str, worker_id: str, interval_s: float, claimed: Any) -> None:
    """Claim one job, report its id, then heartbeat it forever (until killed)."""
    from promptsweep.storage import Storage

    with Storage(url) as storage:
        job = storage.claim_job(worker_id)
        claimed.put(None if job is None else job.id)
        while job is not None and storage.heartbeat(job.id, worker_id):
            time.sleep(interval_s)


def write_study(url: str, job_id: int, n_trials: int, pause_s: float) -> None:
    """Run a small Optuna study on the job's study, recording every trial in promptsweep's tables."""
    import optuna

    from promptsweep.storage import Storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with Storage(url) as storage:
        job = storage.get_job(job_id)
        study = optuna.load_study(study_name=job.study_name, storage=storage.optuna_storage())

        def objective(trial: optuna.Trial) -> float:
            method = trial.suggest_categorical("method", ["prompt_tuning", "prefix_tuning"])
            tokens = trial.suggest_int("num_virtual_tokens", 1, 64, log=True)
            params = {"method": method, "num_virtual_tokens": tokens}
            storage.record_trial(job_id, trial.number, params=params, optuna_trial_id=trial._trial_id)
            value = 0.0
            for step in (10, 20):
                value = 0.5 + tokens / 256 + step / 1000
                trial.report(value, step)
                storage.record_intermediate(job_id, trial.number, step, {"accuracy": value})
                time.sleep(pause_s)
            storage.record_trial(
                job_id, trial.number, state="complete", value=value, trainable_params=tokens * 384
            )
            return value

        study.optimize(objective, n_trials=n_trials)


def create_study(url: str, job_id: int, ready: Any, start: Any, out: Any) -> None:
    """Open the database, say ``ready``, wait for ``start``, create the job's study; put ("ok", name)
    or ("err", text) on ``out``."""
    import optuna

    from promptsweep.storage import Storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with Storage(url) as storage:
        ready.put(True)
        start.wait(60)
        try:
            out.put(("ok", storage.create_study(job_id)))
        except Exception as exc:  # reported to the test
            out.put(("err", repr(exc)))
