"""The lifecycle verbs in storage: stop, pause, resume, extend (and cancel of a paused job), on SQLite
and PostgreSQL. The search side (what a driver does with a request) is in tests/search/test_lifecycle.py."""

from __future__ import annotations

import pytest

from promptsweep.exceptions import JobNotFoundError, JobStateError
from promptsweep.storage import JobStatus, Storage

SPEC = {
    "name": "fine-foods",
    "model": "minilm",
    "dataset": {"source": "fine-foods"},
    "task": "classification",
    "objective": {"metric": "accuracy"},
    "budget": {"num_trials": 6},
}


def _job_in(storage: Storage, status: str) -> int:
    """A job brought to ``status`` the way the service gets it there."""
    job = storage.create_job(status, SPEC)
    if status == "queued":
        return job.id
    assert storage.claim_job(f"w-{job.id}").id == job.id  # the oldest queued: tests make one at a time
    if status == "running":
        return job.id
    if status == "cancelled":
        storage.cancel_job(job.id)
    elif status == "paused":
        storage.pause_job(job.id)
        storage.set_job_status(job.id, "paused", error="paused by the user")
    else:
        storage.set_job_status(job.id, status)
    return job.id


def _events(storage: Storage, job_id: int) -> list[str]:
    return [e["event"] for e in storage.get_job(job_id).history]


def test_stop_asks_a_running_job_and_queues_a_paused_one(storage: Storage) -> None:
    running = _job_in(storage, "running")
    job = storage.stop_job(running)
    assert (job.status, job.request) == (JobStatus.RUNNING, "stop")
    assert storage.stop_job(running).request == "stop"  # asking again changes nothing
    assert _events(storage, running).count("stop requested") == 1
    assert storage.heartbeat(running, f"w-{running}") is True  # its driver keeps the job
    # The driver ends it: the request is over.
    done = storage.set_job_status(running, "succeeded", error="stopped by the user after 3 trials")
    assert (done.status, done.request, done.error) == (
        JobStatus.SUCCEEDED,
        None,
        "stopped by the user after 3 trials",
    )

    paused = _job_in(storage, "paused")
    job = storage.stop_job(paused)
    assert (job.status, job.request) == (JobStatus.QUEUED, "stop")
    assert storage.claim_job("w2").id == paused  # a worker takes it, request and all
    assert storage.get_job(paused).request == "stop"


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_stop_refuses_a_finished_job(storage: Storage, status: str) -> None:
    job_id = _job_in(storage, status)
    before = storage.get_job(job_id)
    with pytest.raises(JobStateError, match=f"job {job_id} is {status}: only a running"):
        storage.stop_job(job_id)
    assert storage.get_job(job_id) == before


def test_stop_refuses_a_job_that_never_started(storage: Storage) -> None:
    job_id = _job_in(storage, "queued")
    with pytest.raises(JobStateError, match=f"job {job_id} is queued and has never started.*cancel it"):
        storage.stop_job(job_id)
    assert storage.get_job(job_id).request is None


def test_pause_holds_a_queued_job_out_of_the_queue_until_resumed(storage: Storage) -> None:
    job_id = _job_in(storage, "queued")
    job = storage.pause_job(job_id)
    assert job.status is JobStatus.PAUSED and not job.status.is_finished
    assert storage.claim_job("w") is None  # no worker takes a paused job
    assert storage.requeue_stale(0) == []  # nor is it re-queued
    resumed = storage.resume_job(job_id)
    assert resumed.status is JobStatus.QUEUED
    assert storage.claim_job("w").id == job_id
    assert _events(storage, job_id) == ["submitted", "paused", "resumed", "claimed"]


def test_pause_of_a_running_job_is_a_request_that_resume_withdraws(storage: Storage) -> None:
    job_id = _job_in(storage, "running")
    job = storage.pause_job(job_id)
    assert (job.status, job.request) == (JobStatus.RUNNING, "pause")
    # stop replaces a pending pause (the job then selects instead of pausing) ...
    assert storage.stop_job(job_id).request == "stop"
    with pytest.raises(JobStateError, match=f"job {job_id} is running: only a paused or interrupted"):
        storage.resume_job(job_id)  # a pending stop is not withdrawn
    with pytest.raises(JobStateError, match="being stopped: it cannot be paused"):
        storage.pause_job(job_id)
    other = _job_in(storage, "running")
    storage.pause_job(other)
    withdrawn = storage.resume_job(other)  # ... and resume withdraws it
    assert (withdrawn.status, withdrawn.request) == (JobStatus.RUNNING, None)
    storage.pause_job(other)
    paused = storage.set_job_status(other, "paused", error="paused by the user", holder=f"w-{other}")
    assert (paused.status, paused.request, paused.worker_id, paused.finished_at) == (
        JobStatus.PAUSED,
        None,
        None,
        None,
    )
    assert storage.cancel_job(other).status is JobStatus.CANCELLED  # a paused job can be cancelled


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled", "paused"])
def test_pause_refuses_a_job_that_is_not_queued_or_running(storage: Storage, status: str) -> None:
    job_id = _job_in(storage, status)
    before = storage.get_job(job_id)
    with pytest.raises(JobStateError, match=f"job {job_id} is {status}: only a queued or running"):
        storage.pause_job(job_id)
    assert storage.get_job(job_id) == before


@pytest.mark.parametrize("status", ["queued", "running", "succeeded", "failed", "cancelled"])
def test_resume_refuses_a_job_that_is_not_paused_or_interrupted(storage: Storage, status: str) -> None:
    job_id = _job_in(storage, status)
    before = storage.get_job(job_id)
    with pytest.raises(JobStateError, match=f"job {job_id} is {status}: only a paused or interrupted"):
        storage.resume_job(job_id)
    assert storage.get_job(job_id) == before


def test_extend_adds_to_the_budget_and_queues_a_succeeded_job_again(storage: Storage) -> None:
    job_id = _job_in(storage, "succeeded")
    storage.set_job_status(job_id, "succeeded", error="stopped by the user after 2 of 6 planned trials")
    job = storage.extend_job(job_id, trials=3)
    assert (job.status, job.extra_trials, job.extra_time_s) == (JobStatus.QUEUED, 3, 0.0)
    assert job.finished_at is None and job.error is None
    job = storage.extend_job(job_id, trials=2, time_s=30)
    assert (job.status, job.extra_trials, job.extra_time_s) == (JobStatus.QUEUED, 5, 30.0)
    details = [e.get("detail", "") for e in job.history if e["event"] == "extended"]
    assert details == ["+3 trials; was succeeded: queued to continue its study", "+2 trials, +30 s"]
    assert storage.claim_job("w").id == job_id

    running = _job_in(storage, "running")
    job = storage.extend_job(running, time_s=12.5)
    assert (job.status, job.extra_trials, job.extra_time_s) == (JobStatus.RUNNING, 0, 12.5)
    storage.stop_job(running)
    with pytest.raises(JobStateError, match="being stopped: extend it once it has succeeded"):
        storage.extend_job(running, trials=1)


@pytest.mark.parametrize(
    ("status", "hint"), [("failed", "retry` queues a failed job again"), ("cancelled", "can be extended$")]
)
def test_extend_refuses_a_failed_or_cancelled_job(storage: Storage, status: str, hint: str) -> None:
    job_id = _job_in(storage, status)
    before = storage.get_job(job_id)
    with pytest.raises(JobStateError, match=f"job {job_id} is {status}: only a .*{hint}"):
        storage.extend_job(job_id, trials=1)
    assert storage.get_job(job_id) == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "extend needs trials and/or time_s"),
        ({"trials": 0}, "trials must be a positive whole number, got 0"),
        ({"trials": -2}, "trials must be a positive whole number, got -2"),
        ({"trials": 1.5}, "trials must be a positive whole number, got 1.5"),
        ({"time_s": 0}, "time_s must be a number of seconds, at least 1, got 0"),
        ({"time_s": float("inf")}, "time_s must be a number of seconds, at least 1, got inf"),
        ({"trials": 1, "time_s": -1}, "time_s must be a number of seconds, at least 1, got -1"),
    ],
)
def test_extend_refuses_a_bad_amount_and_changes_nothing(storage: Storage, kwargs, match) -> None:
    job_id = _job_in(storage, "succeeded")
    before = storage.get_job(job_id)
    with pytest.raises(ValueError, match=match):
        storage.extend_job(job_id, **kwargs)
    assert storage.get_job(job_id) == before


@pytest.mark.parametrize("verb", ["stop_job", "pause_job", "resume_job", "cancel_job"])
def test_a_verb_on_an_unknown_job_names_it(storage: Storage, verb: str) -> None:
    with pytest.raises(JobNotFoundError, match="404"):
        getattr(storage, verb)(404)
    with pytest.raises(JobNotFoundError, match="404"):
        storage.extend_job(404, trials=1)


def test_retry_and_the_end_of_a_run_clear_a_pending_request(storage: Storage) -> None:
    job_id = _job_in(storage, "running")
    storage.pause_job(job_id)
    assert storage.set_job_status(job_id, "interrupted").request is None
    storage.resume_job(job_id)
    assert storage.claim_job("w9").id == job_id
    storage.stop_job(job_id)
    storage.set_job_status(job_id, "failed", error="boom")
    assert storage.retry_job(job_id).request is None


def test_stop_refuses_a_paused_job_that_never_started(storage: Storage) -> None:
    job_id = _job_in(storage, "queued")
    storage.pause_job(job_id)
    with pytest.raises(JobStateError, match=f"job {job_id} is paused and has never started.*cancel it"):
        storage.stop_job(job_id)
    assert (storage.get_job(job_id).status, storage.get_job(job_id).request) == (JobStatus.PAUSED, None)


def test_pause_refuses_a_queued_job_being_stopped(storage: Storage) -> None:
    job_id = _job_in(storage, "running")
    storage.set_job_status(job_id, "interrupted", holder=f"w-{job_id}")
    assert storage.stop_job(job_id).status is JobStatus.QUEUED  # queued to select
    with pytest.raises(JobStateError, match=f"job {job_id} is queued and being stopped"):
        storage.pause_job(job_id)
    assert storage.get_job(job_id).request == "stop"


def test_a_worker_handing_its_job_back_uses_no_attempt_and_a_pending_pause_pauses_it(
    storage: Storage,
) -> None:
    job_id = _job_in(storage, "running")
    assert storage.get_job(job_id).attempts == 1
    handed = storage.set_job_status(job_id, "queued", error="its worker was stopped", holder=f"w-{job_id}")
    assert (handed.status, handed.attempts) == (JobStatus.QUEUED, 0)
    assert storage.claim_job("w2").id == job_id
    storage.pause_job(job_id)
    paused = storage.set_job_status(job_id, "queued", error="its worker was stopped", holder="w2")
    assert (paused.status, paused.request, paused.worker_id) == (JobStatus.PAUSED, None, None)
    assert "its worker stopped" in paused.error
    assert storage.claim_job("w3") is None


def test_a_job_whose_worker_died_while_pausing_is_paused_not_requeued(storage: Storage) -> None:
    job_id = _job_in(storage, "running")
    storage.pause_job(job_id)
    assert storage.requeue_stale(0) == []
    job = storage.get_job(job_id)
    assert (job.status, job.request, job.worker_id) == (JobStatus.PAUSED, None, None)
    assert _events(storage, job_id)[-1] == "paused"


def test_a_job_extended_while_it_finished_is_queued_again_in_the_same_write(storage: Storage) -> None:
    job_id = _job_in(storage, "running")
    seen = (storage.get_job(job_id).extra_trials, storage.get_job(job_id).extra_time_s)
    storage.extend_job(job_id, trials=2)  # lands after the run's last look at the job
    job = storage.set_job_status(job_id, "succeeded", holder=f"w-{job_id}", requeue_beyond=seen)
    assert (job.status, job.worker_id, job.finished_at) == (JobStatus.QUEUED, None, None)
    assert _events(storage, job_id)[-2:] == ["succeeded", "queued"]
    assert storage.claim_job("w2").id == job_id
    # seen through: succeeded, nothing queued
    job = storage.set_job_status(job_id, "succeeded", holder="w2", requeue_beyond=(2, 0.0))
    assert job.status is JobStatus.SUCCEEDED
    # a cancel that lands first wins
    other = _job_in(storage, "running")
    storage.extend_job(other, time_s=60)
    storage.cancel_job(other)
    job = storage.set_job_status(other, "succeeded", holder=f"w-{other}", requeue_beyond=(0, 0.0))
    assert job.status is JobStatus.CANCELLED


def test_a_pause_withdrawn_as_the_run_paused_queues_the_job(storage: Storage) -> None:
    job_id = _job_in(storage, "running")
    storage.pause_job(job_id)  # the driver sees it, its trials finish ...
    storage.resume_job(job_id)  # ... the user withdraws it before the driver writes `paused`
    job = storage.set_job_status(job_id, "paused", error="paused by the user", holder=f"w-{job_id}")
    assert (job.status, job.worker_id) == (JobStatus.QUEUED, None)
    assert "the pause was withdrawn" in job.error
    assert storage.claim_job("w2").id == job_id


def test_extend_refuses_a_queued_job_being_stopped(storage: Storage) -> None:
    job_id = _job_in(storage, "running")
    storage.set_job_status(job_id, "interrupted", holder=f"w-{job_id}")
    storage.stop_job(job_id)  # queued to select: a grant now would be given up by the stop
    with pytest.raises(JobStateError, match=f"job {job_id} is queued and being stopped: extend it once"):
        storage.extend_job(job_id, trials=2)
    assert storage.get_job(job_id).extra_trials == 0


def test_a_summary_write_with_a_holder_is_dropped_once_the_job_is_not_its(storage: Storage) -> None:
    job_id = _job_in(storage, "running")
    kept = storage.update_job_summary(job_id, holder=f"w-{job_id}", batch={"kind": "plan"})
    assert kept.summary["batch"] == {"kind": "plan"}
    storage.requeue_stale(0)
    assert storage.claim_job("w2").id == job_id
    lost = storage.update_job_summary(job_id, holder=f"w-{job_id}", batch=None)
    assert lost.worker_id == "w2" and lost.summary["batch"] == {"kind": "plan"}  # not written
