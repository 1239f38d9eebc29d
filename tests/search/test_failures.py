"""Failure semantics on a real embedded Ray: a training error is FAIL at once (not retried), a trial
whose process is killed is retried (``max_failures``), and a job past its failure budget ends failed."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from promptsweep.search import parse_spec, run_job, submit
from promptsweep.search._trainable import PID_FILE, trial_dir
from promptsweep.storage import Storage
from tests.search.conftest import tiny_spec

SPACE = {"pooling": ["mean"], "num_virtual_tokens": {"low": 1, "high": 900, "log": True}}


def _crash(tokens: int) -> dict[str, Any]:
    # the methods layer refuses more than 512 virtual tokens: a Python error inside the trial
    return {"method": "prompt_tuning", "learning_rate": 1e-2, "num_virtual_tokens": tokens}


def _study(storage: Storage, job_id: int) -> optuna.Study:
    return optuna.load_study(study_name=storage.get_job(job_id).study_name, storage=storage.optuna_storage())


def test_a_training_error_fails_at_once_and_a_killed_trial_process_is_retried(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    runs = tmp_path / "runs"
    good = {
        "method": "prefix_tuning",
        "prefix_projection": False,
        "learning_rate": 1e-2,
        "num_virtual_tokens": 4,
    }
    spec = parse_spec(
        tiny_spec(
            tiny_encoder,
            reviews_dir,
            runs,
            budget={"num_trials": 3, "max_steps": 400, "eval_every_steps": 100},
            space=SPACE,
            scheduler={"name": "none"},
            resources={"cpus_per_trial": 1, "max_concurrent_trials": 1, "num_cpus": 1},
            max_failures=1,
            warm_start=False,
            warm_start_configs=[_crash(600), good, {**good, "learning_rate": 2e-2}],
        )
    )
    job_id = submit(spec, storage)
    job_dir = runs / f"job-{job_id}"
    killed: list[int] = []

    def kill_trial_1_once() -> None:  # SIGKILL the Ray worker running trial 1, once, mid-training
        pid_file = trial_dir(job_dir, 1) / PID_FILE
        deadline = time.time() + 300
        while time.time() < deadline:
            if pid_file.is_file() and storage.list_intermediate(job_id, 1):
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_trial_1_once, daemon=True)
    killer.start()
    outcome = run_job(job_id, storage, progress=False)
    killer.join(10)

    assert killed, "trial 1 never reported a validation before the job ended"
    assert outcome.status == "succeeded"
    rows = storage.list_trials(job_id)
    assert [r.state.value for r in rows] == ["fail", "complete", "complete"]
    # the Python error: FAIL at once with its reason, never restarted although max_failures = 1
    assert "num_virtual_tokens" in rows[0].error and "restarted" not in rows[0].error
    # the killed process: restarted once, then trained to the end
    assert "its process was restarted 1 time(s)" in (rows[1].error or "")
    assert rows[1].steps == 400 and Path(rows[1].adapter_dir).is_dir()
    assert int((trial_dir(job_dir, 1) / PID_FILE).read_text()) != killed[0]  # a new process
    assert rows[2].error is None
    assert [t.state for t in _study(storage, job_id).trials] == [
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]


def test_a_job_past_its_failure_budget_stops_and_fails_naming_the_count_and_the_last_error(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = parse_spec(
        tiny_spec(
            tiny_encoder,
            reviews_dir,
            tmp_path / "runs",
            budget={"num_trials": 6, "max_steps": 20, "max_failed_trials": 2},
            space=SPACE,
            scheduler={"name": "none"},
            resources={"cpus_per_trial": 1, "max_concurrent_trials": 1, "num_cpus": 1},
            warm_start=False,
            warm_start_configs=[_crash(600), _crash(700), _crash(800), _crash(850)],
        )
    )
    job_id = submit(spec, storage)
    outcome = run_job(job_id, storage, progress=False)
    job = storage.get_job(job_id)
    assert outcome.status == "failed" and job.status.value == "failed"
    assert job.error.startswith("2 trials failed (budget.max_failed_trials = 2); the search stopped")
    assert "Last error (trial 1)" in job.error and "num_virtual_tokens" in job.error
    # no trial started once the budget was spent (one at a time: exactly two ran)
    assert [r.state.value for r in storage.list_trials(job_id)] == ["fail", "fail"]
    assert [e["event"] for e in job.history][-1] == "failed"
    # a retried job gets a fresh failure budget: two more trials run (and fail) before it stops
    storage.retry_job(job_id)
    assert run_job(job_id, storage, progress=False).status == "failed"
    assert [r.state.value for r in storage.list_trials(job_id)] == ["fail"] * 4
    assert "Last error (trial 3)" in storage.get_job(job_id).error
