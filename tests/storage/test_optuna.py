"""Optuna's tables in the same database: the job's study, and optuna-dashboard reading during writes."""

from __future__ import annotations

import json
import multiprocessing
import time
from wsgiref.util import setup_testing_defaults

import pytest

from promptsweep.storage import HEAD_REVISION, Storage
from tests.storage import _workers

SPAWN = multiprocessing.get_context("spawn")


def test_create_study_once_in_the_same_database(storage: Storage) -> None:
    optuna = pytest.importorskip("optuna")
    job = storage.create_job("multi", {"objective": {"metric": "accuracy", "secondary": "trainable_params"}})
    assert storage.create_study(job.id) == job.study_name
    assert storage.create_study(job.id) == job.study_name  # idempotent: no DuplicatedStudyError
    summaries = optuna.get_all_study_summaries(storage=storage.optuna_storage())
    assert [(s.study_name, [d.name for d in s.directions]) for s in summaries] == [
        (job.study_name, ["MAXIMIZE", "MINIMIZE"])
    ]
    # Optuna's tables and its alembic_version live beside ours; promptsweep's schema check still passes.
    optuna_url_storage = optuna.storages.RDBStorage(storage.url)
    assert optuna.study.get_all_study_names(optuna_url_storage) == [job.study_name]
    optuna_url_storage.engine.dispose()
    with Storage(storage.url) as reopened:
        assert reopened.schema_revision() == HEAD_REVISION
    assert storage.optuna_storage() is storage.optuna_storage()


def test_processes_creating_the_study_at_once_on_a_fresh_database(db_url: str) -> None:
    # optuna#5385: Optuna's first open of a database creates its tables; racing processes failed with
    # "table ... already exists" / a duplicate alembic_version row (seen here without the lock).
    pytest.importorskip("optuna")
    with Storage(db_url) as storage:
        job = storage.create_job("race", {"objective": {"metric": "accuracy"}})
    ready, start, out = SPAWN.Queue(), SPAWN.Event(), SPAWN.Queue()
    args = (db_url, job.id, ready, start, out)
    workers = [SPAWN.Process(target=_workers.create_study, args=args) for _ in range(4)]
    for w in workers:
        w.start()
    for _ in workers:  # every process has imported Optuna and opened the database: now race
        ready.get(timeout=120)
    start.set()
    results = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(30)
    assert results == [("ok", job.study_name)] * 4
    with Storage(db_url) as storage:
        import optuna

        assert optuna.study.get_all_study_names(storage.optuna_storage()) == [job.study_name]


def _get(app, path: str, query: str = "") -> tuple[str, dict]:
    environ: dict = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, _headers, _exc=None: status.append(s)))
    return status[0], json.loads(body)


def test_dashboard_reads_the_study_while_a_job_writes(db_url: str) -> None:
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    n_trials = 16
    with Storage(db_url) as storage:
        job = storage.create_job("live", {"objective": {"metric": "accuracy", "direction": "maximize"}})
        storage.create_study(job.id)  # once, before any trial (optuna#5385)
        writer = SPAWN.Process(target=_workers.write_study, args=(db_url, job.id, n_trials, 0.1))
        writer.start()
        # The dashboard opens the URL itself, as `optuna-dashboard <url>` does.
        app = optuna_dashboard.wsgi(storage.url)
        seen: list[int] = []
        ranked: list[int] = []
        try:
            deadline = time.monotonic() + 120
            while writer.is_alive() and time.monotonic() < deadline:
                status, studies = _get(app, "/api/studies")
                assert status.startswith("200"), studies
                (study,) = [s for s in studies["study_summaries"] if s["study_name"] == job.study_name]
                status, detail = _get(app, f"/api/studies/{study['study_id']}", "after=0")
                assert status.startswith("200"), detail
                seen.append(len(detail["trials"]))
                ranked.append(len(storage.leaderboard(job.id)))  # promptsweep's own reads go on too
                time.sleep(0.05)
        finally:
            writer.join(120)
        assert writer.exitcode == 0
        # A fresh dashboard (its trial cache lives 2 s) sees every trial.
        status, detail = _get(
            optuna_dashboard.wsgi(storage.url), f"/api/studies/{study['study_id']}", "after=0"
        )
        assert len(detail["trials"]) == n_trials
        assert all(t["state"] == "Complete" for t in detail["trials"])
        assert detail["has_intermediate_values"] is True
        assert len(storage.leaderboard(job.id)) == n_trials
        assert len(storage.list_intermediate(job.id, 0)) == 2
    # The reads overlapped the writes (≥ 3.2 s of trials, longer than the dashboard's 2 s trial cache):
    # the dashboard saw the study part-way, and never went backwards.
    assert any(0 < n < n_trials for n in seen), seen
    assert seen == sorted(seen) and ranked == sorted(ranked)
