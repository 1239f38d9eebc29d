"""Make ``rev1.db``: a SQLite database at promptsweep's first schema revision (0001_jobs_trials).

Kept with the file so the asset can be rebuilt; run from the repository root:
``.venv/bin/python tests/storage/assets/make_rev1_db.py``. Its rows are checked by
``tests/storage/test_migrations.py`` after upgrading.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from promptsweep.storage._engine import create_storage_engine
from promptsweep.storage._migrations import BASE_REVISION, upgrade_to

ASSET = Path(__file__).with_name("rev1.db")

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


def main() -> None:
    ASSET.unlink(missing_ok=True)
    engine = create_storage_engine(make_url(f"sqlite:///{ASSET}"))
    upgrade_to(engine, BASE_REVISION)
    engine.dispose()
    conn = sqlite3.connect(ASSET)
    with conn:
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
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("VACUUM")
    conn.close()
    print(f"wrote {ASSET} ({ASSET.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
