"""Jobs: round trips, status transitions, bad input, URL errors (on SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

import pytest

from promptsweep.exceptions import JobNotFoundError, JobStateError, StorageError
from promptsweep.storage import Direction, JobRecord, JobStatus, Storage

SPEC = {
    "name": "fine-foods",
    "model": "minilm",
    "dataset": {"source": "fine-foods", "text_column": "review"},
    "task": "classification",
    "objective": {"metric": "accuracy", "direction": "maximize", "secondary": "trainable_params"},
    "budget": {"num_trials": 6},
}


def test_create_and_get_job_round_trip(storage: Storage) -> None:
    job = storage.create_job("fine-foods", SPEC)
    assert isinstance(job, JobRecord)
    assert job.status is JobStatus.QUEUED
    assert job.study_name == f"promptsweep-job-{job.id}"
    assert (job.objective_metric, job.direction, job.secondary_objective) == (
        "accuracy",
        Direction.MAXIMIZE,
        "trainable_params",
    )
    assert (job.model, job.dataset, job.task) == ("minilm", "fine-foods", "classification")
    assert job.directions == ["maximize", "minimize"]
    assert job.created_at.tzinfo is UTC and job.started_at is None and job.attempts == 0
    again = storage.get_job(job.id)
    assert again == job
    assert again.spec == SPEC
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.status = JobStatus.RUNNING  # type: ignore[misc]


def test_keywords_override_the_spec_and_defaults(storage: Storage) -> None:
    job = storage.create_job(
        "loss", {"objective": "eval_loss"}, direction="minimize", model="m", task="generation"
    )
    assert (job.objective_metric, job.direction, job.model, job.dataset, job.task) == (
        "eval_loss",
        Direction.MINIMIZE,
        "m",
        None,
        "generation",
    )
    bare = storage.create_job("bare", {})
    assert (
        bare.direction is Direction.MAXIMIZE
        and bare.objective_metric is None
        and bare.directions == ["maximize"]
    )


def test_pydantic_spec_is_dumped(storage: Storage) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Spec(pydantic.BaseModel):
        model: str
        objective: dict

    job = storage.create_job("p", Spec(model="minilm", objective={"metric": "macro_f1"}))
    assert job.spec == {"model": "minilm", "objective": {"metric": "macro_f1"}}
    assert job.objective_metric == "macro_f1"


def test_list_jobs_newest_first_and_by_status(storage: Storage) -> None:
    ids = [storage.create_job(f"j{i}", SPEC).id for i in range(3)]
    storage.set_job_status(ids[1], "failed", error="boom")
    assert [j.id for j in storage.list_jobs()] == ids[::-1]
    assert [j.id for j in storage.list_jobs(status="queued")] == [ids[2], ids[0]]
    assert [j.id for j in storage.list_jobs(limit=1)] == [ids[2]]
    failed = storage.get_job(ids[1])
    assert failed.status is JobStatus.FAILED and failed.error == "boom" and failed.finished_at is not None


def test_set_job_status_keeps_times_true(storage: Storage) -> None:
    job = storage.create_job("t", SPEC)
    running = storage.set_job_status(job.id, JobStatus.RUNNING)
    assert running.started_at is not None and running.finished_at is None and running.heartbeat_at is not None
    done = storage.set_job_status(job.id, "succeeded")
    assert done.status is JobStatus.SUCCEEDED
    assert done.started_at == running.started_at and done.finished_at >= done.started_at


def test_an_interrupted_job_is_neither_finished_nor_queued_and_can_be_resumed_or_cancelled(
    storage: Storage,
) -> None:
    first, second = storage.create_job("a", SPEC), storage.create_job("b", SPEC)
    claimed = storage.claim_job("w1")
    assert claimed.id == first.id
    stopped = storage.set_job_status(first.id, "interrupted", error="interrupted (Ctrl-C)")
    assert stopped.status is JobStatus.INTERRUPTED and not stopped.status.is_finished
    assert stopped.finished_at is None and stopped.worker_id is None and stopped.heartbeat_at is None
    assert storage.heartbeat(first.id, "w1") is False  # its old worker must stop
    assert storage.claim_job("w2").id == second.id  # not taken back by a worker
    assert storage.claim_job("w3") is None
    resumed = storage.set_job_status(first.id, "running")
    assert resumed.status is JobStatus.RUNNING and resumed.error is None
    storage.set_job_status(first.id, "interrupted")
    assert storage.cancel_job(first.id).status is JobStatus.CANCELLED


def test_retry_queues_a_failed_or_interrupted_job_and_refuses_other_states(storage: Storage) -> None:
    for status in ("queued", "running", "succeeded", "cancelled"):
        job = storage.create_job(status, SPEC)
        if status == "cancelled":
            storage.cancel_job(job.id)
        elif status != "queued":
            storage.set_job_status(job.id, status)
        with pytest.raises(JobStateError, match=f"job {job.id} is {status}: only a failed or interrupted"):
            storage.retry_job(job.id)
        assert storage.get_job(job.id).status == status  # unchanged
        if status in ("queued", "running"):
            storage.cancel_job(job.id)  # out of the queue for the claim below
    other = storage.create_job("r2", SPEC)
    assert storage.claim_job("w").id == other.id
    storage.set_job_status(other.id, "failed", error="OutOfMemoryError: boom")
    retried = storage.retry_job(other.id)
    assert retried.status is JobStatus.QUEUED and retried.error is None and retried.finished_at is None
    assert storage.claim_job("w2").id == other.id  # a worker takes it
    with pytest.raises(JobNotFoundError):
        storage.retry_job(404)


def test_a_late_ctrl_c_or_a_lost_holder_writes_nothing_over_the_job(storage: Storage) -> None:
    job = storage.create_job("c", SPEC)
    storage.claim_job("w1")
    storage.cancel_job(job.id)
    # Ctrl-C after the user's cancel: the cancel wins
    assert storage.set_job_status(job.id, "interrupted", holder="w1").status is JobStatus.CANCELLED
    assert storage.set_job_status(job.id, "interrupted").status is JobStatus.CANCELLED
    other = storage.create_job("d", SPEC)
    storage.claim_job("w1")
    time.sleep(0.05)
    storage.requeue_stale(0)
    storage.claim_job("w2")  # the job changed hands
    kept = storage.set_job_status(other.id, "failed", error="w1's late error", holder="w1")
    assert (kept.status, kept.worker_id, kept.error) == (JobStatus.RUNNING, "w2", None)
    done = storage.set_job_status(other.id, "succeeded", holder="w2")
    assert done.status is JobStatus.SUCCEEDED


def test_retry_gives_a_job_that_killed_its_workers_a_fresh_allowance(storage: Storage) -> None:
    job = storage.create_job("k", SPEC)
    storage.claim_job("w1")
    time.sleep(0.05)
    storage.requeue_stale(0, max_attempts=1)
    assert storage.get_job(job.id).status is JobStatus.FAILED
    assert storage.retry_job(job.id).attempts == 0
    assert storage.claim_job("w2").attempts == 1


def test_hold_refuses_a_job_another_holder_keeps_alive(storage: Storage) -> None:
    job = storage.create_job("h", SPEC)
    storage.claim_job("w-live")
    with pytest.raises(JobStateError, match="running under w-live"):
        storage.hold_job(job.id, "run@me", live_within_s=300)
    assert storage.get_job(job.id).worker_id == "w-live"  # unchanged
    time.sleep(0.05)
    held = storage.hold_job(job.id, "run@me", live_within_s=0.01)  # its heartbeat is older: dead
    assert (held.worker_id, held.attempts) == ("run@me", 1)  # a foreground hold is not an attempt
    storage.set_job_status(job.id, "succeeded", holder="run@me")
    with pytest.raises(JobStateError, match="is succeeded"):
        storage.hold_job(job.id, "run@me")


def test_the_history_records_each_change_with_its_time(storage: Storage) -> None:
    job = storage.create_job("h", SPEC)
    storage.claim_job("w1")
    storage.set_job_status(job.id, "interrupted", error="interrupted (Ctrl-C)")
    storage.retry_job(job.id)
    storage.claim_job("w2")
    storage.set_job_status(job.id, "failed", error="boom")
    storage.retry_job(job.id)
    storage.cancel_job(job.id)
    history = storage.get_job(job.id).history
    assert [e["event"] for e in history] == [
        "submitted",
        "claimed",
        "interrupted",
        "retried",
        "claimed",
        "failed",
        "retried",
        "cancelled",
    ]
    assert (
        history[1]["detail"] == "by worker w1, attempt 1"
        and history[4]["detail"] == "by worker w2, attempt 1"
    )
    assert history[3]["detail"] == "was interrupted: interrupted (Ctrl-C)"
    times = [datetime.fromisoformat(e["at"]) for e in history]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
    assert storage.get_job(job.id).summary == {}  # the history is not part of the summary


def test_the_spec_hash_names_the_spec_whatever_its_key_order(storage: Storage) -> None:
    a = storage.create_job("a", {"model": "minilm", "budget": {"num_trials": 2, "max_steps": 10}})
    b = storage.create_job("b", {"budget": {"max_steps": 10, "num_trials": 2}, "model": "minilm"})
    c = storage.create_job("c", {"budget": {"max_steps": 11, "num_trials": 2}, "model": "minilm"})
    assert a.spec_hash == b.spec_hash == storage.get_job(a.id).spec_hash
    assert c.spec_hash != a.spec_hash and len(a.spec_hash) == 64


def test_a_new_run_clears_the_last_runs_error(storage: Storage) -> None:
    job = storage.create_job("t", SPEC)
    storage.set_job_status(job.id, "running")
    failed = storage.set_job_status(job.id, "failed", error="interrupted (Ctrl-C)")
    assert failed.error == "interrupted (Ctrl-C)"
    resumed = storage.set_job_status(job.id, "running")
    assert resumed.error is None
    assert storage.set_job_status(job.id, "succeeded").error is None


@pytest.mark.parametrize(
    ("name", "spec", "kwargs", "match"),
    [
        ("", SPEC, {}, "job name"),
        ("x" * 256, SPEC, {}, "job name"),
        ("n", ["not", "a", "dict"], {}, "spec must be a dict"),
        ("n", {"lr": float("nan")}, {}, "JSON-serializable"),
        ("n", {"when": object()}, {}, "JSON-serializable"),
        ("n", {"objective": {"direction": "up"}}, {}, "'maximize' or 'minimize'"),
        ("n", SPEC, {"direction": "sideways"}, "'maximize' or 'minimize'"),
        ("a\x00b", SPEC, {}, "job name must not contain NUL"),
        ("n", {"text": "a\x00b"}, {}, "spec must not contain NUL"),
        ("n", SPEC, {"model": "m" * 513}, "model must be at most 512 characters"),
        ("n", SPEC, {"task": "t" * 33}, "task must be at most 32 characters"),
    ],
)
def test_bad_job_input_is_refused_and_nothing_stored(storage: Storage, name, spec, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        storage.create_job(name, spec, **kwargs)
    assert storage.list_jobs() == []


def test_unknown_job_id_is_a_clear_error(storage: Storage) -> None:
    for call in (
        lambda: storage.get_job(404),
        lambda: storage.set_job_status(404, "running"),
        lambda: storage.cancel_job(404),
        lambda: storage.update_job_summary(404, plan={"trials": 1}),
        lambda: storage.heartbeat(404, "w"),
        lambda: storage.list_trials(404),
        lambda: storage.leaderboard(404),
    ):
        with pytest.raises(JobNotFoundError, match="no job with id 404"):
            call()
    with pytest.raises(ValueError, match=r"status must be one of .*'exploded'"):
        storage.set_job_status(storage.create_job("j", SPEC).id, "exploded")


# -- the job summary (revision 0003) -------------------------------------------------------------
PLAN = {"trials": 12, "per_method": {"prompt_tuning": 4, "p_tuning": 8}, "rescore_top": 3}
FLOORS = [{"name": "majority", "accuracy": 0.52}, {"name": "zero_shot", "accuracy": 0.61}]


def test_job_summary_round_trip_and_merge_by_key(storage: Storage) -> None:
    job = storage.create_job("summary", SPEC)
    assert job.summary == {}
    first = storage.update_job_summary(job.id, plan=PLAN, floors=FLOORS)
    assert first.summary == {"plan": PLAN, "floors": FLOORS}
    assert dataclasses.replace(first, summary={}) == job  # nothing but the summary changed
    assert storage.get_job(job.id) == first and storage.list_jobs()[0] == first
    # A given key is replaced whole; the others are kept.
    second = storage.update_job_summary(job.id, plan={"trials": 6}, selected_trial=3)
    assert second.summary == {"plan": {"trials": 6}, "floors": FLOORS, "selected_trial": 3}
    # None removes a key (a key that is not there: nothing to do).
    third = storage.update_job_summary(job.id, floors=None, finalists=None)
    assert third.summary == {"plan": {"trials": 6}, "selected_trial": 3}
    assert storage.update_job_summary(job.id) == third  # no parts: the job as it is
    emptied = storage.update_job_summary(job.id, plan=None, selected_trial=None)
    assert emptied.summary == {} and storage.get_job(job.id).summary == {}


def test_job_summary_values_are_stored_as_json(storage: Storage) -> None:
    np = pytest.importorskip("numpy")
    job = storage.create_job("summary", SPEC)
    record = storage.update_job_summary(
        job.id,
        floors={"majority": float("nan"), "random": np.float32(0.25), "n": np.int64(3), "ok": np.bool_(True)},
        best=float("inf"),  # a non-finite value is stored as null: only None removes a key
        finalists=(4, 7),
    )
    expected = {
        "floors": {"majority": None, "random": 0.25, "n": 3, "ok": True},
        "best": None,
        "finalists": [4, 7],
    }
    assert record.summary == expected and storage.get_job(job.id).summary == expected
    assert type(storage.get_job(job.id).summary["floors"]["n"]) is int


@pytest.mark.parametrize(
    ("parts", "match"),
    [
        ({"plan": {"methods": {"prompt_tuning"}}}, "summary key 'plan' must be JSON-serializable"),
        ({"finalists": [object()]}, "summary key 'finalists' must be JSON-serializable"),
        ({"floors": {"note": "a\x00b"}}, "summary key 'floors' must not contain NUL"),
        ({"bad\x00key": 1}, "must not contain NUL"),
    ],
)
def test_bad_summary_values_are_refused_and_nothing_stored(storage: Storage, parts, match) -> None:
    job = storage.create_job("summary", SPEC)
    storage.update_job_summary(job.id, plan={"trials": 2})
    with pytest.raises(ValueError, match=match):
        storage.update_job_summary(job.id, selected_trial=1, **parts)
    assert storage.get_job(job.id).summary == {"plan": {"trials": 2}}


def test_job_summary_survives_status_changes_claims_and_reopening(db_url: str) -> None:
    with Storage(db_url) as storage:
        job = storage.create_job("summary", SPEC)
        storage.update_job_summary(job.id, plan=PLAN)
        assert storage.claim_job("w").summary == {"plan": PLAN}
        assert storage.heartbeat(job.id, "w")
        for status in ("running", "succeeded"):
            assert storage.set_job_status(job.id, status).summary == {"plan": PLAN}
        assert storage.update_job_summary(job.id, selected_trial=5).status is JobStatus.SUCCEEDED
        other = storage.create_job("cancelled", SPEC)
        storage.update_job_summary(other.id, floors=FLOORS)
        assert storage.cancel_job(other.id).summary == {"floors": FLOORS}
        assert storage.set_job_status(other.id, "failed").summary == {"floors": FLOORS}  # cancel wins
    with Storage(db_url) as again:
        assert again.get_job(job.id).summary == {"plan": PLAN, "selected_trial": 5}
        assert again.get_job(other.id).summary == {"floors": FLOORS}


def test_concurrent_summary_updates_keep_every_key(storage: Storage) -> None:
    # Each update reads, merges and writes the summary under the job row's lock (PostgreSQL FOR
    # UPDATE, SQLite's write lock): writers of different keys must not overwrite each other.
    from concurrent.futures import ThreadPoolExecutor

    job = storage.create_job("summary", SPEC)
    keys = [f"part{i}" for i in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda key: storage.update_job_summary(job.id, **{key: {"from": key}}), keys))
    assert storage.get_job(job.id).summary == {key: {"from": key} for key in keys}


def test_data_survives_reopening(db_url: str) -> None:
    with Storage(db_url) as first:
        job = first.create_job("persist", SPEC)
    with Storage(db_url) as second:
        assert second.get_job(job.id) == job


@pytest.mark.parametrize(
    ("url", "shown", "hidden"),
    [
        ("postgresql+psycopg://alice:s3cret@127.0.0.1:1/nodb", "alice:***@127.0.0.1:1/nodb", "s3cret"),
        ("postgres://bob:hunter2@127.0.0.1:1/x", "bob:***@127.0.0.1:1/x", "hunter2"),
        ("mysql://carol:pw123@host/db", "carol:***@host/db", "pw123"),
        ("no-scheme-at-all", "no-scheme-at-all", None),
        # A port that is not a number: make_url raises ValueError, still one StorageError.
        ("postgresql+psycopg://dave:pw456@host:notaport/db", "dave:***@host:notaport/db", "pw456"),
        # libpq also takes the password (and the client key's) as query parameters.
        ("postgresql+psycopg://erin@127.0.0.1:1/db?password=pw789", "db?password=***", "pw789"),
        ("postgresql+psycopg://f@127.0.0.1:1/db?sslpassword=pwABC", "sslpassword=***", "pwABC"),
        ("sqlite:////no/such/dir/promptsweep.db", "/no/such/dir/promptsweep.db", None),
    ],
)
def test_bad_url_errors_name_the_url_without_password(url: str, shown: str, hidden: str | None) -> None:
    with pytest.raises(StorageError) as info:
        Storage(url)
    message = str(info.value)
    assert shown in message
    if hidden:
        assert hidden not in message


def test_default_database_is_the_documented_sqlite_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PROMPTSWEEP_DB", raising=False)
    monkeypatch.setenv("PROMPTSWEEP_HOME", str(tmp_path / "home"))
    with Storage() as storage:
        job = storage.create_job("default", {})
        assert storage.dialect == "sqlite"
    assert (tmp_path / "home" / "promptsweep.db").is_file()
    monkeypatch.setenv("PROMPTSWEEP_DB", f"sqlite:///{tmp_path / 'home' / 'promptsweep.db'}")
    with Storage() as again:
        assert again.get_job(job.id).name == "default"


def test_default_database_in_a_home_that_cannot_be_made(tmp_path, monkeypatch) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.delenv("PROMPTSWEEP_DB", raising=False)
    monkeypatch.setenv("PROMPTSWEEP_HOME", str(tmp_path / "a-file"))
    with pytest.raises(StorageError, match=r"PROMPTSWEEP_HOME.*a-file"):
        Storage()


def test_in_memory_sqlite_works_for_one_process() -> None:
    with Storage("sqlite://") as storage:
        job = storage.create_job("mem", {})
        assert storage.claim_job("w").id == job.id


def test_a_failed_transaction_writes_nothing(storage: Storage) -> None:
    from promptsweep.storage._models import JobModel
    from promptsweep.storage._records import utcnow

    def job(name: str) -> JobModel:
        return JobModel(
            name=name, spec={}, status="queued", direction="maximize", created_at=utcnow(), study_name="same"
        )

    with (
        pytest.raises(StorageError, match="violates a constraint") as info,
        storage._writing("two jobs") as session,
    ):
        session.add(job("a"))
        session.flush()
        session.add(job("b"))  # same study name: the unique constraint fails at commit
    assert storage.display_url in str(info.value) and "two jobs" in str(info.value)
    assert storage.list_jobs() == []  # the first job was rolled back with the second


def test_opening_an_existing_database_loads_neither_alembic_nor_optuna(tmp_path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'p.db'}"
    Storage(url).close()
    code = (
        "import sys\nfrom promptsweep.storage import Storage\n"
        f"s = Storage({url!r}); s.list_jobs(); s.close()\n"
        "print(sorted(m for m in ('alembic', 'optuna', 'torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_storage_pickles_by_url(storage: Storage) -> None:
    import pickle

    job = storage.create_job("pickled", {})
    copy = pickle.loads(pickle.dumps(storage))
    try:
        assert copy.url == storage.url and copy is not storage
        assert copy.get_job(job.id) == job
        assert copy.create_job("from the copy", {}).id == job.id + 1
    finally:
        copy.close()


def test_sqlite_path_may_start_with_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with Storage("sqlite:///~/promptsweep-home.db") as storage:
        storage.create_job("home", {})
        assert storage.url == f"sqlite:///{tmp_path}/promptsweep-home.db"
    assert (tmp_path / "promptsweep-home.db").is_file()
