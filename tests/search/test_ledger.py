"""The batch ledger a job's driver keeps in its summary (``search._running.next_batch`` and friends):
what is left of the plan and of each ``extend``, across stops, kills and mixed extensions. Real
Optuna studies (in memory) and real stored jobs (SQLite and PostgreSQL); no Ray: the end-to-end runs
are in tests/search/test_lifecycle.py."""

from __future__ import annotations

import optuna
import pytest

from promptsweep.search._planning import Plan
from promptsweep.search._running import (
    batch_started,
    finished_count,
    grants_used_up,
    next_batch,
    settle_batch,
)
from promptsweep.storage import Storage

SPEC = {"name": "ledger", "model": "minilm", "dataset": {"source": "x"}, "budget": {"num_trials": 2}}


def _plan(configs: int | None, time_budget_s: float | None = None) -> Plan:
    return Plan(
        configs=configs,
        max_steps=100,
        epochs=1.0,
        rungs=[],
        reduction_factor=3.0,
        eval_every_steps=50,
        reaching=[],
        expected_trial_seconds=None,
        compute_budget_s=None,
        time_budget_s=time_budget_s,
        concurrency=1,
        planned=[],
    )


def _finish(study: optuna.Study, n: int) -> None:
    for _ in range(n):
        study.tell(study.ask(), 0.5)


def _run(storage: Storage, job_id: int, study: optuna.Study, plan: Plan, finish: int, seconds: float) -> str:
    """What the driver does for one batch: record it, let ``finish`` trials end in ``seconds``, book it."""
    job = storage.get_job(job_id)
    batch = next_batch(plan, study, job)
    assert batch is not None
    start = 1_000.0
    storage.update_job_summary(job_id, **batch_started(batch, finished_count(study), start))
    _finish(study, finish)
    job = storage.get_job(job_id)
    update = settle_batch(job.summary, job, finished_count(study), start + seconds)
    if batch.kind == "plan":
        update["planned_trials"] = finished_count(study)
    storage.update_job_summary(job_id, **update)
    return batch.kind


def test_a_time_extension_does_not_use_up_a_later_trial_extension(storage: Storage) -> None:
    job_id = storage.create_job("ledger", SPEC).id
    study, plan = optuna.create_study(direction="maximize"), _plan(2)
    assert next_batch(plan, study, storage.get_job(job_id)).trials == 2
    assert _run(storage, job_id, study, plan, finish=2, seconds=10) == "plan"
    assert next_batch(plan, study, storage.get_job(job_id)) is None

    storage.extend_job(job_id, time_s=60)
    batch = next_batch(plan, study, storage.get_job(job_id))
    assert (batch.kind, batch.trials, batch.cap_s) == ("time", -1, 60.0)
    assert _run(storage, job_id, study, plan, finish=6, seconds=60) == "time"  # 6 trials in its minute
    assert next_batch(plan, study, storage.get_job(job_id)) is None

    storage.extend_job(job_id, trials=5)  # counted from what was granted, not from finished trials
    batch = next_batch(plan, study, storage.get_job(job_id))
    assert (batch.kind, batch.trials) == ("trials", 5)
    _run(storage, job_id, study, plan, finish=5, seconds=30)
    assert next_batch(plan, study, storage.get_job(job_id)) is None
    assert storage.get_job(job_id).summary["extra_trials_run"] == 5


def test_a_batch_a_dead_run_left_open_is_booked_by_its_finished_trials(storage: Storage) -> None:
    job_id = storage.create_job("ledger", SPEC).id
    study, plan = optuna.create_study(), _plan(2)
    _run(storage, job_id, study, plan, finish=2, seconds=5)
    storage.extend_job(job_id, trials=5)
    batch = next_batch(plan, study, storage.get_job(job_id))
    storage.update_job_summary(job_id, **batch_started(batch, finished_count(study), 1_000.0))
    _finish(study, 2)
    study.ask()  # one trial left RUNNING by the dead run
    job = storage.get_job(job_id)
    storage.update_job_summary(job_id, **settle_batch(job.summary, job, finished_count(study), 1_000.0))
    batch = next_batch(plan, study, storage.get_job(job_id))
    # 3 of the 5 are left; the unfinished one is re-run among them
    assert (batch.kind, batch.trials) == ("trials", 3)


def test_a_time_budget_is_not_restarted_by_a_resume(storage: Storage) -> None:
    job_id = storage.create_job("ledger", SPEC).id
    study, plan = optuna.create_study(), _plan(None, time_budget_s=600)
    batch = next_batch(plan, study, storage.get_job(job_id))
    assert (batch.kind, batch.trials, batch.cap_s) == ("plan", -1, 600.0)
    storage.update_job_summary(job_id, **batch_started(batch, 0, 1_000.0))
    _finish(study, 3)
    job = storage.get_job(job_id)  # paused (or killed) 550 s in
    storage.update_job_summary(job_id, **settle_batch(job.summary, job, 3, 1_550.0))
    assert next_batch(plan, study, storage.get_job(job_id)).cap_s == pytest.approx(50.0)
    job = storage.get_job(job_id)
    storage.update_job_summary(job_id, **batch_started(next_batch(plan, study, job), 3, 2_000.0))
    job = storage.get_job(job_id)
    storage.update_job_summary(job_id, **settle_batch(job.summary, job, 3, 9_999.0))  # capped at 50 s
    assert storage.get_job(job_id).summary["plan_time_used_s"] == pytest.approx(600.0)
    # the plan's time is spent: nothing is left (the driver then records the plan as done)
    assert next_batch(plan, study, storage.get_job(job_id)) is None


def test_a_stop_gives_up_what_was_granted_and_a_later_extend_counts_from_there(storage: Storage) -> None:
    job_id = storage.create_job("ledger", SPEC).id
    study, plan = optuna.create_study(), _plan(10)
    storage.update_job_summary(
        job_id, **batch_started(next_batch(plan, study, storage.get_job(job_id)), 0, 0.0)
    )
    _finish(study, 4)
    storage.extend_job(job_id, trials=10, time_s=300)
    job = storage.get_job(job_id)  # stopped after 4 of 10 planned trials
    storage.update_job_summary(job_id, **settle_batch(job.summary, job, 4, 20.0))
    job = storage.get_job(job_id)
    storage.update_job_summary(job_id, **grants_used_up(job.summary, job, finished_count(study)))
    assert next_batch(plan, study, storage.get_job(job_id)) is None
    storage.extend_job(job_id, trials=1)
    batch = next_batch(plan, study, storage.get_job(job_id))
    assert (batch.kind, batch.trials) == ("trials", 1)  # exactly one, not the 10 given up
