"""Make the committed old-schema SQLite databases that ``tests/storage/test_migrations.py`` upgrades.

- ``rev1.db``: promptsweep's first schema revision (``0001_jobs_trials``): two jobs, four trials.
- ``rev2.db``: the second (``0002_queue_intermediate``): the same rows made at the first revision and
  upgraded, as a user's database was, then used at the second: a worker claimed the queued job and
  heartbeats it, and a trial has intermediate metrics.

Kept with the files so the assets can be rebuilt; run from the repository root:
``.venv/bin/python tests/storage/assets/make_old_dbs.py [rev1.db] [rev2.db]`` (no argument: both).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from promptsweep.storage._engine import create_storage_engine
from promptsweep.storage._migrations import BASE_REVISION, upgrade_to

ASSETS = Path(__file__).parent
SECOND_REVISION = "0002_queue_intermediate"

JOBS = [
    # id, name, status, metric, direction, model, dataset, task
    (1, "fine-foods minilm", "succeeded", "accuracy", "maximize", "minilm", "fine-foods", "classification"),
    (2, "queued job", "queued", "eval_loss", "minimize", "smollm2-135m", "fine-foods", "verbalizer"),
]
TRIALS = [
    # job, number, params, state, value, trainable_params, train_seconds
    (1, 0, {"method": "prompt_tuning", "num_virtual_tokens": 8}, "complete", 0.71, 6144, 12.5),
    (
        1,
        1,
        {"method": "prefix_tuning", "prefix_projection": True, "num_virtual_tokens": 4},
        "complete",
        0.74,
        99000,
        20.0,
    ),
    (
        1,
        2,
        {"method": "p_tuning", "encoder_type": "LSTM", "num_virtual_tokens": 4},
        "pruned",
        0.6,
        400000,
        3.0,
    ),
    (1, 3, {"method": "p_tuning", "encoder_type": "MLP", "num_virtual_tokens": 4}, "fail", None, None, None),
]
#: rev2.db only: the worker holding job 2, and trial 0 of job 1's learning curve (step, accuracy).
WORKER = "worker-a"
CURVE = [(10, 0.65), (20, 0.71)]


def _migrate(path: Path, revision: str) -> None:
    engine = create_storage_engine(make_url(f"sqlite:///{path}"))
    try:
        upgrade_to(engine, revision)
    finally:
        engine.dispose()


def _first_schema_rows(conn: sqlite3.Connection) -> None:
    for job_id, name, status, metric, direction, model, dataset, task in JOBS:
        conn.execute(
            "INSERT INTO promptsweep_jobs (id, name, spec, status, objective_metric, direction, model, "
            "dataset, task, study_name, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                job_id,
                name,
                json.dumps({"name": name, "model": model}),
                status,
                metric,
                direction,
                model,
                dataset,
                task,
                f"promptsweep-job-{job_id}",
                "2026-11-29 12:00:00.000000",
            ),
        )
    for job_id, number, params, state, value, trainable, seconds in TRIALS:
        conn.execute(
            'INSERT INTO promptsweep_trials (job_id, number, method, params, state, value, "values", '
            "metrics, trainable_params, train_seconds) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                job_id,
                number,
                params["method"],
                json.dumps(params),
                state,
                value,
                json.dumps([value]) if value is not None else None,
                json.dumps({"accuracy": value} if value is not None else {}),
                trainable,
                seconds,
            ),
        )


def _second_schema_rows(conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE promptsweep_jobs SET status = 'running', worker_id = ?, attempts = 1, "
        "started_at = '2026-11-30 08:00:00.000000', heartbeat_at = '2026-11-30 08:00:30.000000' "
        "WHERE id = 2",
        (WORKER,),
    )
    for step, accuracy in CURVE:
        conn.execute(
            "INSERT INTO promptsweep_intermediate_metrics (trial_id, step, metrics, recorded_at) VALUES "
            "((SELECT id FROM promptsweep_trials WHERE job_id = 1 AND number = 0), ?, ?, ?)",
            (step, json.dumps({"accuracy": accuracy}), "2026-11-29 12:00:00.000000"),
        )


def _write(path: Path, rows: Callable[[sqlite3.Connection], object], journal: str | None = None) -> None:
    conn = sqlite3.connect(path)
    try:
        if journal is not None:
            conn.execute(f"PRAGMA journal_mode = {journal}")
        with conn:  # one transaction, committed
            rows(conn)
    finally:
        conn.close()


def make(name: str) -> Path:
    """Write ``name`` (``rev1.db`` or ``rev2.db``) next to this script; return its path."""
    if name not in ("rev1.db", "rev2.db"):
        raise ValueError(f"can make rev1.db or rev2.db, not {name!r}")
    path = ASSETS / name
    path.unlink(missing_ok=True)
    _migrate(path, BASE_REVISION)
    _write(path, _first_schema_rows)
    if name == "rev2.db":
        _migrate(path, SECOND_REVISION)
        _write(path, _second_schema_rows)
    _write(path, lambda conn: conn.execute("VACUUM"), journal="DELETE")
    return path


def main(names: list[str]) -> None:
    for name in names or ["rev1.db", "rev2.db"]:
        path = make(name)
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
