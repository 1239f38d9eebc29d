"""The batch ledger a job's driver keeps in its summary (``search._running.next_batch`` and friends):
what is left of the plan and of each ``extend``, across stops, kills and mixed extensions. Real
Optuna studies (in memory) and real stored jobs (SQLite and PostgreSQL); no Ray: the end-to-end runs
are in tests/search/test_lifecycle.py."""

from __future__ import annotations

import time
from datetime import datetime

import optuna
import pytest

from promptsweep.search._planning import Costs, Plan
from promptsweep.search._runner import _previous_run_end
from promptsweep.search._running import (
    batch_started,
    continue_batch,
    finished_count,
    grants_used_up,
    next_batch,
    reopen_batch,
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


def test_a_batch_a_dead_run_left_open_goes_on_with_what_is_left_of_it(storage: Storage) -> None:
    job_id = storage.create_job("ledger", SPEC).id
    study, plan = optuna.create_study(), _plan(2)
    _run(storage, job_id, study, plan, finish=2, seconds=5)
    storage.extend_job(job_id, trials=5)
    batch = next_batch(plan, study, storage.get_job(job_id))
    storage.update_job_summary(job_id, **batch_started(batch, finished_count(study), 1_000.0))
    _finish(study, 2)
    study.ask()  # one trial left RUNNING by the dead run
    job = storage.get_job(job_id)
    storage.update_job_summary(job_id, **reopen_batch(job.summary, 1_100.0, 2_000.0))
    batch = continue_batch(plan, study, storage.get_job(job_id))
    # 3 of the 5 are left; the unfinished one is re-run among them
    assert (batch.kind, batch.trials) == ("trials", 3)
    study.tell(study.trials[-1].number, 0.5)  # the re-run trial ends, then 2 new ones
    _finish(study, 2)
    job = storage.get_job(job_id)
    storage.update_job_summary(job_id, **settle_batch(job.summary, job, finished_count(study), 2_500.0))
    assert storage.get_job(job_id).summary["extra_trials_run"] == 5
    assert next_batch(plan, study, storage.get_job(job_id)) is None


def test_trials_granted_after_a_killed_time_extension_are_all_new(storage: Storage) -> None:
    """A time extension killed with a trial running, then `extend --trials 3`: the time batch goes on
    first (re-running its trial, for what is left of its seconds), then 3 new trials."""
    job_id = storage.create_job("ledger", SPEC).id
    study, plan = optuna.create_study(), _plan(2)
    _run(storage, job_id, study, plan, finish=2, seconds=5)
    storage.extend_job(job_id, time_s=100)
    batch = next_batch(plan, study, storage.get_job(job_id))
    storage.update_job_summary(job_id, **batch_started(batch, 2, 1_000.0))
    _finish(study, 1)
    study.ask()  # running when the worker was SIGTERMed, 40 s in
    storage.extend_job(job_id, trials=3)
    job = storage.get_job(job_id)
    storage.update_job_summary(job_id, **reopen_batch(job.summary, 1_040.0, 5_000.0))
    batch = continue_batch(plan, study, storage.get_job(job_id))
    assert (batch.kind, batch.trials, batch.cap_s) == ("time", -1, pytest.approx(60.0))
    study.tell(study.trials[-1].number, 0.5)  # the re-run trial ends
    job = storage.get_job(job_id)
    storage.update_job_summary(job_id, **settle_batch(job.summary, job, finished_count(study), 5_060.0))
    assert storage.get_job(job_id).summary["extension_time_used_s"] == pytest.approx(100.0)
    batch = next_batch(plan, study, storage.get_job(job_id))
    assert (batch.kind, batch.trials) == ("trials", 3)


def test_a_dead_runs_seconds_are_booked_up_to_the_first_end_after_its_batch(storage: Storage) -> None:
    job_id = storage.create_job("ledger", SPEC).id
    storage.claim_job("w1")
    storage.requeue_stale(0)  # an older run's end: before the batch, not counted
    storage.claim_job("w2")
    started = time.time()
    time.sleep(0.05)
    storage.set_job_status(job_id, "queued", error="its worker was stopped", holder="w2")
    storage.claim_job("w3")
    storage.set_job_status(job_id, "failed", error="later", holder="w3")
    job = storage.get_job(job_id)
    ends = [e["at"] for e in job.history if e["event"] in ("requeued", "queued")]
    end = _previous_run_end(job, after=started)
    assert started < end < started + 5 and datetime.fromisoformat(ends[-1]).timestamp() == end
    later = started + 3_600  # no end after it: nothing booked
    assert _previous_run_end(job, after=later) == later


def test_a_time_budget_is_not_restarted_by_a_resume(storage: Storage) -> None:
    job_id = storage.create_job("ledger", SPEC).id
    study, plan = optuna.create_study(), _plan(None, time_budget_s=600)
    batch = next_batch(plan, study, storage.get_job(job_id))
    assert (batch.kind, batch.trials, batch.cap_s) == ("plan", -1, 600.0)
    storage.update_job_summary(job_id, **batch_started(batch, 0, 1_000.0))
    _finish(study, 3)
    job = storage.get_job(job_id)  # paused (or killed) 550 s in; resumed at 2,000
    storage.update_job_summary(job_id, **reopen_batch(job.summary, 1_550.0, 2_000.0))
    assert continue_batch(plan, study, storage.get_job(job_id)).cap_s == pytest.approx(50.0)
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


def test_a_plan_that_fills_its_budget_goes_on_past_its_configs_while_it_pays(storage: Storage) -> None:
    """After a pause (the plan's batch left open, every trial ended), a plan that fills its budget
    runs again past its configs while what its ended trials spent leaves a first rung's seconds."""
    from dataclasses import replace

    job_id = storage.create_job("ledger", SPEC).id
    study = optuna.create_study(direction="maximize")
    # a first rung: 1 s set-up, 10 steps of 1 s, 10 validation examples of 0.1 s = 12 s
    plan = replace(
        _plan(2), rungs=[10, 30], eval_at_steps=[10, 30], eval_examples=10, compute_budget_s=100.0, fill=True,
        costs=Costs(step_s=1.0, eval_example_s=0.1, setup_s=1.0), planned=["configs", "max_steps", "rungs"],
    )  # fmt: skip
    start = datetime(2026, 1, 1, 12, 0, 0)

    def ended(seconds: float) -> None:
        study.add_trial(
            optuna.trial.FrozenTrial(
                number=0, state=optuna.trial.TrialState.PRUNED, value=None, values=None, datetime_start=start,
                datetime_complete=datetime.fromtimestamp(start.timestamp() + seconds), params={},
                distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=0,
            )
        )  # fmt: skip

    batch = next_batch(plan, study, storage.get_job(job_id))
    storage.update_job_summary(job_id, **batch_started(batch, 0, 1_000.0))
    for seconds in (40, 20, 10):  # its 2 configs and one past them, 70 of its 100 trial-s
        ended(seconds)
    batch = continue_batch(plan, study, storage.get_job(job_id))  # e.g. resumed after a pause
    assert (batch.kind, batch.trials) == ("plan", 0)  # nothing planned is left; 30 s pay for a first rung
    ended(20)  # 90 of 100 trial-s: 10 left, less than a first rung
    assert continue_batch(plan, study, storage.get_job(job_id)) is None
    # a plan that does not fill ends with its configs, whatever is left of the budget
    assert next_batch(replace(plan, fill=False), study, storage.get_job(job_id)) is None
