"""Schema versions: Alembic revisions, the version check, upgrading the committed old-schema databases
(``assets/rev1.db``, ``assets/rev2.db``, made by ``assets/make_old_dbs.py``) and old schemas made on
each backend."""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from promptsweep.exceptions import SchemaVersionError
from promptsweep.storage import (
    HEAD_REVISION,
    JobStatus,
    Storage,
    TrialState,
    method_variant,
    spec_hash,
    upgrade_database,
)
from promptsweep.storage._engine import create_storage_engine
from promptsweep.storage._migrations import (
    BASE_REVISION,
    MIGRATIONS_DIR,
    script_head,
    script_revisions,
    upgrade_to,
)
from promptsweep.storage._models import VERSION_TABLE, Base

ASSETS = Path(__file__).with_name("assets")
SECOND_REVISION = "0002_queue_intermediate"
THIRD_REVISION = "0003_job_summary"
FOURTH_REVISION = "0004_job_history"
FIFTH_REVISION = "0005_job_requests"
REPO = Path(__file__).resolve().parents[2]


def test_head_constant_matches_the_shipped_scripts() -> None:
    assert script_head() == HEAD_REVISION
    assert script_revisions() == [
        HEAD_REVISION,
        FIFTH_REVISION,
        FOURTH_REVISION,
        THIRD_REVISION,
        SECOND_REVISION,
        BASE_REVISION,
    ]


def test_migrations_ship_as_package_data() -> None:
    setuptools = pytest.importorskip("setuptools")
    packages = setuptools.find_packages(str(REPO), include=["promptsweep*"])
    assert "promptsweep.storage._alembic" in packages and "promptsweep.storage._alembic.versions" in packages
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"*.mako"' in pyproject and '"*.ini"' in pyproject
    assert (MIGRATIONS_DIR / "script.py.mako").is_file() and (MIGRATIONS_DIR / "env.py").is_file()


def test_migrated_schema_matches_the_models(storage: Storage) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = sa.create_engine(storage.url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_object": lambda obj, name, type_, *_: (
                        type_ != "table" or name.startswith("promptsweep_")
                    ),
                    "version_table": VERSION_TABLE,
                },
            )
            diffs = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_committed_first_schema_database_upgrades_and_keeps_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(ASSETS / "rev1.db", db)
    url = f"sqlite:///{db}"
    with pytest.raises(SchemaVersionError) as info:
        Storage(url)
    message = str(info.value)
    assert "promptsweep db upgrade" in message and str(db) in message and BASE_REVISION in message
    with sqlite3.connect(db) as conn:  # refusing changed nothing
        assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(BASE_REVISION,)]

    # The command the error names works as written (the CLI's --db goes before `db upgrade`).
    command = shlex.split(re.search(r"`(promptsweep --db [^`]+)`", message).group(1))
    assert command[0] == "promptsweep"
    done = subprocess.run(
        [sys.executable, "-m", "promptsweep.cli", *command[1:]], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert upgrade_database(url) == (HEAD_REVISION, HEAD_REVISION)  # idempotent

    with Storage(url) as storage:
        _assert_committed_rows(storage)
        queued = storage.get_job(2)
        assert (queued.attempts, queued.status) == (0, JobStatus.QUEUED)
        # The second revision's features work on the old rows.
        storage.record_intermediate(1, 0, 10, {"accuracy": 0.7})
        assert [r.step for r in storage.list_intermediate(1, 0)] == [10]
        claimed = storage.claim_job("w")
        assert claimed.id == 2 and claimed.attempts == 1


def _assert_committed_rows(storage: Storage) -> None:
    """The rows ``assets/make_old_dbs.py`` writes at the first revision, read back at head."""
    done, queued = storage.get_job(1), storage.get_job(2)
    assert (done.name, done.status, done.model, done.task, done.attempts) == (
        "fine-foods minilm",
        JobStatus.SUCCEEDED,
        "minilm",
        "classification",
        1,
    )
    assert done.direction == "maximize" and queued.direction == "minimize"
    assert done.summary == {} and queued.summary == {}  # no summary yet (revision 0003: NULL)
    # revision 0004: no history before it; the spec's hash computed by the migration
    assert done.history == [] and queued.history == []
    assert done.spec_hash == spec_hash(done.spec) and len(done.spec_hash) == 64
    assert done.spec_hash != queued.spec_hash
    # revision 0005: no pending request, nothing added by `extend`
    assert (done.request, done.extra_trials, done.extra_time_s) == (None, 0, 0.0)
    assert (queued.request, queued.extra_trials, queued.extra_time_s) == (None, 0, 0.0)
    with storage._engine.connect() as conn:  # stored by the migration, not only computed on read
        stored = dict(conn.execute(sa.text("SELECT id, spec_hash FROM promptsweep_jobs")).all())
    assert stored == {1: done.spec_hash, 2: queued.spec_hash}
    trials = storage.list_trials(1)
    assert [(t.number, t.state, t.value) for t in trials] == [
        (0, TrialState.COMPLETE, 0.71),
        (1, TrialState.COMPLETE, 0.74),
        (2, TrialState.PRUNED, 0.6),
        (3, TrialState.FAIL, None),
    ]
    # The variant column (revision 0002) was backfilled from each trial's params.
    assert [t.variant for t in trials] == [
        "prompt_tuning",
        "prefix_tuning_projection",
        "p_tuning_lstm",
        "p_tuning_mlp",
    ]
    # revision 0006: where the old trials ran was never recorded
    assert {(t.node_id, t.node_host) for t in trials} == {(None, None)}
    assert [t.number for t in storage.leaderboard(1)] == [1, 0]
    assert [t.variant for t in storage.best_per_method(1)] == [
        "prefix_tuning_projection",
        "prompt_tuning",
    ]


def test_committed_second_schema_database_upgrades_and_keeps_rows(tmp_path: Path) -> None:
    db = tmp_path / "rev2.db"
    shutil.copy(ASSETS / "rev2.db", db)
    url = f"sqlite:///{db}"
    with pytest.raises(SchemaVersionError, match="promptsweep db upgrade") as info:
        Storage(url)
    assert SECOND_REVISION in str(info.value) and HEAD_REVISION in str(info.value)
    with sqlite3.connect(db) as conn:  # refusing changed nothing
        assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(SECOND_REVISION,)]
        assert "summary" not in {row[1] for row in conn.execute("PRAGMA table_info(promptsweep_jobs)")}

    assert upgrade_database(url) == (SECOND_REVISION, HEAD_REVISION)
    assert upgrade_database(url) == (HEAD_REVISION, HEAD_REVISION)  # idempotent
    with Storage(url) as storage:
        _assert_committed_rows(storage)
        held = storage.get_job(2)
        assert (held.status, held.worker_id, held.attempts) == (JobStatus.RUNNING, "worker-a", 1)
        assert [(r.step, r.metrics) for r in storage.list_intermediate(1, 0)] == [
            (10, {"accuracy": 0.65}),
            (20, {"accuracy": 0.71}),
        ]
        assert storage.heartbeat(2, "worker-a")  # the worker's claim still holds after the upgrade
        # The third revision's summary works on the old rows and leaves them as they were.
        before = storage.get_job(1)
        summarized = storage.update_job_summary(1, selected_trial=1, floors={"majority": 0.5})
        assert summarized.summary == {"selected_trial": 1, "floors": {"majority": 0.5}}
        assert dataclasses.replace(summarized, summary={}) == before


FIRST_SCHEMA_PARAMS = [
    {"method": "prompt_tuning", "num_virtual_tokens": 8},
    {"method": "prefix_tuning", "prefix_projection": True, "encoder_hidden_size": 64},
    {"method": "prefix_tuning", "prefix_projection": False},
    {"method": "prefix_tuning"},
    {"method": "p_tuning", "encoder_type": "LSTM"},
    {"method": "p_tuning", "encoder_type": "lstm"},
    {"method": "p_tuning", "encoder_type": "MLP"},
    {"method": "p_tuning"},
    {"method": "lora_someday"},
    {"num_virtual_tokens": 3},
]


def _old_schema_db(url: str, revision: str, **job_columns: Any) -> None:
    """Make a database at ``revision``: one running job (with ``job_columns``), a trial per params."""
    engine = create_storage_engine(make_url(url))
    try:
        upgrade_to(engine, revision)
        meta = sa.MetaData()
        jobs = sa.Table("promptsweep_jobs", meta, autoload_with=engine)
        trials = sa.Table("promptsweep_trials", meta, autoload_with=engine)
        with engine.begin() as conn:
            conn.execute(
                jobs.insert().values(
                    name="old", spec={"model": "minilm"}, status="running", direction="maximize",
                    study_name="promptsweep-job-1", created_at=sa.func.now(), **job_columns,
                )
            )  # fmt: skip
            for number, params in enumerate(FIRST_SCHEMA_PARAMS):
                conn.execute(
                    trials.insert().values(
                        job_id=1, number=number, params=params, state="complete", value=0.5,
                        metrics={"accuracy": 0.5},
                    )
                )  # fmt: skip
    finally:
        engine.dispose()


def test_upgrade_from_first_schema_on_each_backend(db_url: str) -> None:
    _old_schema_db(db_url, BASE_REVISION)
    with pytest.raises(
        SchemaVersionError, match=r"`promptsweep db upgrade` on it: `promptsweep --db .* db upgrade`"
    ):
        Storage(db_url)
    storage = Storage(db_url, check_schema=False)
    try:
        assert storage.schema_revision() == BASE_REVISION
        assert storage.upgrade() == (BASE_REVISION, HEAD_REVISION)
    finally:
        storage.close()
    with Storage(db_url) as storage:
        job = storage.get_job(1)
        assert job.status is JobStatus.RUNNING and job.attempts == 1
        # The SQL backfill agrees with method_variant() on every kind of params.
        variants = [t.variant for t in storage.list_trials(1)]
        assert variants == [method_variant(p) for p in FIRST_SCHEMA_PARAMS]
        assert variants[:3] == ["prompt_tuning", "prefix_tuning_projection", "prefix_tuning"]
        # New job ids continue after the old ones.
        assert storage.create_job("new", {}).id == 2


def test_upgrade_from_second_schema_on_each_backend(db_url: str) -> None:
    _old_schema_db(db_url, SECOND_REVISION, worker_id="w", attempts=1)
    with pytest.raises(SchemaVersionError, match=f"revision '{SECOND_REVISION}'.*`promptsweep db upgrade`"):
        Storage(db_url)
    assert upgrade_database(db_url) == (SECOND_REVISION, HEAD_REVISION)
    with Storage(db_url) as storage:
        job = storage.get_job(1)
        assert (job.status, job.worker_id, job.attempts, job.summary) == (JobStatus.RUNNING, "w", 1, {})
        assert [t.params for t in storage.list_trials(1)] == FIRST_SCHEMA_PARAMS
        assert storage.heartbeat(1, "w")
        # The new column holds JSON on each backend (JSONB on PostgreSQL) and merges per key.
        storage.update_job_summary(1, plan={"trials": 10, "methods": ["prompt_tuning"]})
        merged = storage.update_job_summary(1, selected_trial=4)
        assert merged.summary == {"plan": {"trials": 10, "methods": ["prompt_tuning"]}, "selected_trial": 4}
        assert storage.create_job("new", {}).id == 2


def test_newer_or_unversioned_schema_is_refused(db_url: str) -> None:
    with Storage(db_url) as storage:
        engine = sa.create_engine(storage.url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099_from_the_future'"))
        with pytest.raises(SchemaVersionError, match="newer promptsweep"):
            Storage(db_url)
        with pytest.raises(SchemaVersionError, match="newer"):
            upgrade_database(db_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
        with pytest.raises(SchemaVersionError, match="no schema revision"):
            Storage(db_url)
    finally:
        engine.dispose()


def test_upgrade_database_creates_a_new_database(db_url: str) -> None:
    assert upgrade_database(db_url) == (None, HEAD_REVISION)
    with Storage(db_url) as storage:
        assert storage.schema_revision() == HEAD_REVISION


def test_offline_sql_of_the_migrations_renders() -> None:
    from alembic import command

    from promptsweep.storage._migrations import _alembic_config

    config = _alembic_config(url="sqlite:///offline.db")
    config.output_buffer = __import__("io").StringIO()
    command.upgrade(config, "head", sql=True)
    sql = config.output_buffer.getvalue()
    assert "CREATE TABLE promptsweep_intermediate_metrics" in sql
    assert "prefix_tuning_projection" in sql and "UPDATE promptsweep_trials SET variant" in sql
    assert "ALTER TABLE promptsweep_jobs ADD COLUMN summary JSON" in sql
