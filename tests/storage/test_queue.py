"""The job queue under concurrency (SQLite and PostgreSQL): submits, claims, heartbeats, re-queue, cancel."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time

import pytest

from promptsweep.storage import JobStateError, JobStatus, Storage
from promptsweep.storage._migrations import HEAD_REVISION
from tests.storage import _workers

SPAWN = multiprocessing.get_context("spawn")


def _run_threads(target, count: int) -> list:
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(30)
            results[i] = target(i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def test_fifty_concurrent_submits_make_fifty_distinct_jobs(db_url: str) -> None:
    Storage(db_url).close()  # the schema exists before the race, as after `promptsweep db upgrade`
    clients = [Storage(db_url) for _ in range(50)]  # one engine each: 50 independent database clients
    try:
        jobs = _run_threads(lambda i: clients[i].create_job(f"job-{i}", {"i": i}), 50)
    finally:
        for c in clients:
            c.close()
    with Storage(db_url) as storage:
        stored = storage.list_jobs()
    assert len({j.id for j in jobs}) == 50
    assert len({j.study_name for j in jobs}) == 50
    assert sorted(j.id for j in stored) == sorted(j.id for j in jobs)
    assert {j.spec["i"] for j in stored} == set(range(50))
    assert all(j.status is JobStatus.QUEUED for j in stored)


def test_concurrent_first_open_creates_the_schema_once(db_url: str) -> None:
    # Before the fix, on SQLite one of 6 threads opening a fresh file got "database is locked": the
    # first connection's switch to WAL needs the file alone and does not wait on the busy timeout.
    revisions = _run_threads(lambda _i: Storage(db_url).schema_revision(), 6)
    assert set(revisions) == {HEAD_REVISION}
    with Storage(db_url) as storage:
        assert storage.list_jobs() == []
        assert storage.sqlite_file is None or _journal_mode(storage.sqlite_file) == "wal"


def test_processes_opening_a_fresh_database_at_once_create_the_schema_once(db_url: str) -> None:
    start, out = SPAWN.Event(), SPAWN.Queue()
    openers = [SPAWN.Process(target=_workers.open_storage, args=(db_url, start, out)) for _ in range(4)]
    for p in openers:
        p.start()
    try:
        assert [out.get(timeout=120) for _ in openers] == ["ready"] * len(openers)  # imported, waiting
        start.set()
        results = [out.get(timeout=120) for _ in openers]
    finally:
        for p in openers:
            p.join(30)
    assert results == [HEAD_REVISION] * len(openers), results
    with Storage(db_url) as storage:
        assert storage.create_job("after the race", {}).id == 1


def _journal_mode(path: str) -> str:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def test_claims_are_fifo_and_exclusive(storage: Storage) -> None:
    ids = [storage.create_job(f"j{i}", {}).id for i in range(3)]
    first = storage.claim_job("w1")
    second = storage.claim_job("w2")
    assert (first.id, second.id) == (ids[0], ids[1])
    assert first.status is JobStatus.RUNNING and first.worker_id == "w1" and first.attempts == 1
    assert first.started_at is not None and first.heartbeat_at is not None
    assert storage.claim_job("w3").id == ids[2]
    assert storage.claim_job("w4") is None
    with pytest.raises(ValueError, match="worker_id"):
        storage.claim_job("")
    with pytest.raises(ValueError, match="worker_id must be at most 255"):
        storage.claim_job("w" * 256)


def test_two_worker_processes_never_claim_the_same_job(db_url: str) -> None:
    with Storage(db_url) as storage:
        ids = {storage.create_job(f"j{i}", {}).id for i in range(40)}
        start, out = SPAWN.Event(), SPAWN.Queue()
        workers = [
            SPAWN.Process(target=_workers.claim_all, args=(db_url, f"w{i}", start, out)) for i in range(2)
        ]
        for w in workers:
            w.start()
        time.sleep(0.5)
        start.set()
        results = dict(out.get(timeout=120) for _ in workers)
        for w in workers:
            w.join(30)
        a, b = results["w0"], results["w1"]
        assert set(a).isdisjoint(b)
        assert set(a) | set(b) == ids and len(a) + len(b) == len(ids)
        for worker_id, claimed in results.items():
            assert all(storage.get_job(i).worker_id == worker_id for i in claimed)


def test_many_threads_claiming_at_once_get_distinct_jobs(db_url: str) -> None:
    with Storage(db_url) as storage:
        ids = {storage.create_job(f"j{i}", {}).id for i in range(12)}
    clients = [Storage(db_url) for _ in range(8)]
    try:

        def drain(i: int) -> list[int]:
            got = []
            while (job := clients[i].claim_job(f"t{i}")) is not None:
                got.append(job.id)
            return got

        claimed = _run_threads(drain, 8)
    finally:
        for c in clients:
            c.close()
    flat = [j for got in claimed for j in got]
    assert sorted(flat) == sorted(ids)


def test_a_dead_workers_job_is_requeued_and_resumed(db_url: str) -> None:
    with Storage(db_url) as storage:
        job = storage.create_job("resume me", {})
        claimed = SPAWN.Queue()
        worker = SPAWN.Process(
            target=_workers.claim_and_heartbeat, args=(db_url, "dead-worker", 0.1, claimed)
        )
        worker.start()
        try:
            assert claimed.get(timeout=60) == job.id
            first_beat = storage.get_job(job.id).heartbeat_at
            time.sleep(0.6)
            assert storage.get_job(job.id).heartbeat_at > first_beat  # the live worker heartbeats
            assert storage.requeue_stale(timeout_s=0.5) == []  # and is not taken for dead
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.join(10)
        time.sleep(0.8)
        assert storage.requeue_stale(timeout_s=0.5) == [job.id]
        requeued = storage.get_job(job.id)
        assert requeued.status is JobStatus.QUEUED and requeued.worker_id is None
        assert storage.heartbeat(job.id, "dead-worker") is False  # a late heartbeat is refused
        resumed = storage.claim_job("second-worker")
        assert resumed.id == job.id and resumed.attempts == 2
        assert resumed.started_at == requeued.started_at  # the job's first start is kept
        assert storage.requeue_stale(timeout_s=60) == []


def test_cancel_queued_and_running_jobs(storage: Storage) -> None:
    queued = storage.create_job("queued", {})
    running = storage.create_job("running", {})
    assert storage.claim_job("w").id == queued.id
    # queued.id is now running; `running` is still queued: cancel both.
    cancelled_running = storage.cancel_job(queued.id)
    cancelled_queued = storage.cancel_job(running.id)
    assert cancelled_running.status is JobStatus.CANCELLED and cancelled_running.finished_at is not None
    assert cancelled_queued.status is JobStatus.CANCELLED
    assert storage.heartbeat(queued.id, "w") is False  # the worker learns it must stop
    assert storage.claim_job("w2") is None  # a cancelled job is never claimed
    assert storage.requeue_stale(timeout_s=0) == []  # nor re-queued
    done = storage.create_job("done", {})
    storage.set_job_status(done.id, "succeeded")
    with pytest.raises(JobStateError, match=f"job {done.id} is succeeded"):
        storage.cancel_job(done.id)  # a finished job is refused, and stays as it is
    assert storage.get_job(done.id).status is JobStatus.SUCCEEDED


def test_heartbeat_only_from_the_holding_worker(storage: Storage) -> None:
    job = storage.create_job("j", {})
    storage.claim_job("owner")
    assert storage.heartbeat(job.id, "owner") is True
    assert storage.heartbeat(job.id, "intruder") is False
    with pytest.raises(ValueError, match="timeout_s"):
        storage.requeue_stale(-1)


def test_a_late_worker_does_not_undo_a_cancel(storage: Storage) -> None:
    job = storage.create_job("j", {})
    storage.claim_job("w")
    storage.cancel_job(job.id)
    assert storage.set_job_status(job.id, "succeeded").status is JobStatus.CANCELLED
    assert storage.set_job_status(job.id, "failed", error="x").status is JobStatus.CANCELLED
    assert storage.set_job_status(job.id, "queued").status is JobStatus.QUEUED  # explicitly re-opened


def test_foreground_jobs_without_a_worker_are_not_requeued(storage: Storage) -> None:
    foreground = storage.create_job("cli run", {})
    storage.set_job_status(foreground.id, "running")  # `promptsweep run`: no claim, no heartbeats
    claimed = storage.create_job("worker", {})
    storage.claim_job("w")
    time.sleep(0.3)
    assert storage.requeue_stale(timeout_s=0.1) == [claimed.id]
    assert storage.get_job(foreground.id).status is JobStatus.RUNNING


@pytest.mark.parametrize("first", ["cancel", "finish"])
def test_cancel_and_a_finishing_worker_racing_keep_the_first_committed(storage: Storage, first: str) -> None:
    # Another client's write (uncommitted, holding the row) races promptsweep's read-modify-write:
    # the late call must see the committed change, not overwrite it (PostgreSQL row lock).
    import sqlalchemy as sa

    job = storage.create_job("race", {})
    storage.claim_job("w")
    status = "cancelled" if first == "cancel" else "succeeded"
    engine = sa.create_engine(storage.url)
    result: dict = {}
    try:
        with engine.connect() as conn:
            tx = conn.begin()
            conn.execute(
                sa.text("UPDATE promptsweep_jobs SET status = :s WHERE id = :i"), {"s": status, "i": job.id}
            )
            late = (
                (lambda: storage.set_job_status(job.id, "succeeded"))
                if first == "cancel"
                else (lambda: storage.cancel_job(job.id))
            )

            def call() -> None:
                try:
                    result["record"] = late()
                except JobStateError as exc:  # the late cancel sees the job finished
                    result["refused"] = str(exc)

            thread = threading.Thread(target=call)
            thread.start()
            time.sleep(0.5)  # the late call is now waiting for the row
            tx.commit()
        thread.join(30)
    finally:
        engine.dispose()
    if first == "cancel":
        assert result["record"].status == status  # the cancel wins over the late finish
    else:
        assert (
            result["refused"]
            == f"job {job.id} is succeeded: only a queued, running, paused or interrupted job can be "
            "cancelled"
        )
    assert storage.get_job(job.id).status == status


def test_heartbeats_are_judged_by_the_database_clock(storage: Storage, monkeypatch) -> None:
    # Many machines share one PostgreSQL server: a worker or a re-queuer whose clock is off by ten
    # minutes must neither re-queue a live job nor make its own job look dead.
    if storage.dialect == "sqlite":
        pytest.skip("SQLite serves one machine: every process reads the same clock")
    from datetime import timedelta

    from promptsweep.storage import _base, _jobs, _queue, _records, _trials

    real = _records.utcnow

    def skew(minutes: float) -> None:  # this process's clock, wherever the storage modules read it
        for module in (_base, _jobs, _queue, _trials):
            monkeypatch.setattr(module, "utcnow", lambda: real() + timedelta(minutes=minutes))

    job = storage.create_job("skew", {})
    skew(-10)  # a slow worker
    storage.claim_job("slow-clock")
    assert storage.heartbeat(job.id, "slow-clock")
    skew(0)
    assert storage.requeue_stale(timeout_s=300) == []  # its heartbeat is fresh
    skew(+10)  # a fast re-queuer
    assert storage.requeue_stale(timeout_s=300) == []
    assert storage.get_job(job.id).status is JobStatus.RUNNING
    heartbeat = storage.get_job(job.id).heartbeat_at
    assert abs((heartbeat - real()).total_seconds()) < 60  # written by the server's clock
    skew(0)
    time.sleep(0.3)
    assert storage.requeue_stale(timeout_s=0.1) == [job.id]  # a truly silent worker still goes


def test_a_job_whose_workers_keep_dying_fails_after_max_attempts(storage: Storage) -> None:
    job = storage.create_job("kills its workers", {})
    for attempt in (1, 2):
        assert storage.claim_job(f"w{attempt}").attempts == attempt
        time.sleep(0.05)
        assert storage.requeue_stale(timeout_s=0, max_attempts=3) == [job.id]  # re-queued
    assert storage.claim_job("w3").attempts == 3
    time.sleep(0.05)
    assert storage.requeue_stale(timeout_s=0, max_attempts=3) == []  # not again: failed
    failed = storage.get_job(job.id)
    assert failed.status is JobStatus.FAILED and failed.worker_id is None
    assert failed.error.startswith("gave up after 3 attempts (--max-attempts 3)") and "w3" in failed.error
    assert [e["event"] for e in failed.history][-3:] == ["requeued", "claimed", "failed"]
    assert storage.claim_job("w4") is None
    with pytest.raises(ValueError, match="max_attempts"):
        storage.requeue_stale(1, max_attempts=0)


def test_a_held_foreground_job_is_reaped_like_a_workers_job(storage: Storage) -> None:
    job = storage.create_job("foreground", {})
    held = storage.hold_job(job.id, "run@host-1")
    assert (held.status, held.worker_id, held.attempts) == (JobStatus.RUNNING, "run@host-1", 0)
    assert storage.heartbeat(job.id, "run@host-1") is True
    assert storage.requeue_stale(timeout_s=60) == []  # heartbeating: alive
    time.sleep(0.05)
    assert storage.requeue_stale(timeout_s=0) == [job.id]  # its process died: re-queued
    assert storage.claim_job("worker").id == job.id
