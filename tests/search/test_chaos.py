"""Chaos: a worker killed at each moment of a job, one trial's process killed, a worker SIGTERMed;
then a second worker finishes the job. On SQLite and PostgreSQL (``db_url``).

The first worker is a real ``promptsweep worker --once`` process (its own embedded Ray). For the
moments without an observable window it is told to stop at a hold point (``promptsweep._faults``:
``PROMPTSWEEP_CHAOS_HOLD``) and killed there; mid-trial it is killed when a trial has reported a
validation value. SIGKILL goes to its whole process group (the worker, its Ray and trial processes),
as when a machine or container is lost. The second worker runs in this process (the session's Ray)
and re-queues the dead worker's job as stale. After each, every assertion of :func:`_finished_once`
holds: exactly ``NUM_TRIALS`` finished trials, none run twice to completion, Optuna's states equal
our tables', the job's status and reason, and the export reloads to the recorded test metrics.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from promptsweep._faults import HOLD_ENV, MARK_ENV
from promptsweep.export import export_adapter
from promptsweep.methods import evaluate_adapter
from promptsweep.search import job_inputs, parse_spec, run_job, run_worker, submit
from promptsweep.search._trainable import PID_FILE, trial_dir
from promptsweep.storage import Storage
from tests.search.conftest import tiny_spec, write_reviews

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

NUM_TRIALS = 3
REPO = Path(__file__).resolve().parents[2]


def _spec(model: Path, data: Path, out: Path) -> dict[str, Any]:
    """Three one-at-a-time trials of 400 steps (validation every 100), no early stopping; the warm
    start enqueues the paper defaults when the study is created."""
    return tiny_spec(
        model,
        data,
        out / "runs",
        scheduler={"name": "none"},
        budget={"num_trials": NUM_TRIALS, "max_steps": 400, "eval_every_steps": 100},
        resources={"cpus_per_trial": 1, "max_concurrent_trials": 1, "num_cpus": 1},
    )


def _fresh_data(tmp_path: Path) -> Path:
    """Reviews no other test uses: data preparation runs (no tokenized cache to hit)."""
    d = tmp_path / "reviews"
    d.mkdir()
    write_reviews(d / "train.csv", 160, seed=int(time.time() * 1000) % 100_000)
    write_reviews(d / "test.csv", 60, seed=1, flip=True)
    return d


def _start_worker(url: str, tmp_path: Path, hold: str | None) -> tuple[subprocess.Popen, Path]:
    mark = tmp_path / "held"
    env = {**os.environ, "PYTHONPATH": str(REPO), MARK_ENV: str(mark)}
    env.pop(HOLD_ENV, None)
    if hold:
        env[HOLD_ENV] = hold
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptsweep", "--db", url, "worker", "--once"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "worker.log", "w"),  # noqa: SIM115 - closed with the process
    )
    return proc, mark


def _wait_for(what: str, ready, proc: subprocess.Popen, tmp_path: Path, timeout_s: float = 240) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            log = (tmp_path / "worker.log").read_text()[-3000:]
            pytest.fail(f"the worker ended (code {proc.returncode}) before {what}:\n{log}")
        time.sleep(0.1)
    pytest.fail(f"no {what} within {timeout_s:.0f} s")


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


def _mid_trial(storage: Storage, job_id: int) -> bool:
    return any(
        t.state.value == "running" and storage.list_intermediate(job_id, t.number)
        for t in storage.list_trials(job_id)
    )


def _finish_with_second_worker(storage: Storage, job_id: int) -> None:
    """The dead worker's heartbeat is stale after 1 s here (300 s by default)."""
    time.sleep(1.5)
    assert run_worker(storage, once=True, stale_after_s=1.0) == 1


def _finished_once(storage: Storage, job_id: int, spec: dict[str, Any], tmp_path: Path) -> None:
    """The job ended as if nothing had happened, and its adapter exports and reloads."""
    job = storage.get_job(job_id)
    assert (job.status.value, job.error, job.request) == ("succeeded", None, None), job.history
    rows = storage.list_trials(job_id)
    assert [r.number for r in rows] == list(range(NUM_TRIALS))  # exactly NUM_TRIALS, none extra
    assert [r.state.value for r in rows] == ["complete"] * NUM_TRIALS
    study = optuna.load_study(study_name=job.study_name, storage=storage.optuna_storage())
    assert [(t.number, t.state) for t in study.trials] == [
        (n, TrialState.COMPLETE) for n in range(NUM_TRIALS)
    ]
    assert [t.values for t in study.trials] == [r.values for r in rows]
    assert [r.steps for r in rows] == [400] * NUM_TRIALS  # each trained its whole budget, once
    for r in rows:  # each validation step recorded once: no trial ran twice to completion
        steps = [p.step for p in storage.list_intermediate(job_id, r.number)]
        assert steps == sorted(set(steps)), (r.number, steps)
        assert study.trials[r.number].intermediate_values.keys() <= set(steps)
    selected = job.summary["selected_trial"]
    recorded = storage.get_trial(job_id, selected).test_metrics
    out = export_adapter(storage, job_id, tmp_path / "export")
    assert out.trial_number == selected
    reloaded = evaluate_adapter(job_inputs(parse_spec(spec)), out.out_dir, split="test")
    assert reloaded["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)
    assert reloaded["eval_loss"] == pytest.approx(recorded["eval_loss"], rel=1e-4)


@pytest.mark.parametrize("moment", ["prepare", "study", "mid_trial", "between_trials", "select"])
def test_worker_killed_at_each_moment_then_a_second_worker_finishes(
    ray_local: Any, tiny_encoder: Path, db_url: str, tmp_path: Path, moment: str
) -> None:
    storage = Storage(db_url)
    data = _fresh_data(tmp_path) if moment == "prepare" else _shared_data(tmp_path)
    spec = _spec(tiny_encoder, data, tmp_path)
    job_id = submit(spec, storage)
    proc, mark = _start_worker(db_url, tmp_path, hold=None if moment == "mid_trial" else moment)
    try:
        if moment == "mid_trial":
            _wait_for("trial mid-run", lambda: _mid_trial(storage, job_id), proc, tmp_path)
        else:
            _wait_for(f"hold at {moment}", mark.is_file, proc, tmp_path)
    finally:
        _kill_group(proc)
    job = storage.get_job(job_id)
    assert job.status.value == "running" and job.attempts == 1  # dead, not yet noticed
    before = {t.number: t.state.value for t in storage.list_trials(job_id)}
    if moment in ("prepare", "study"):
        assert before == {}
    elif moment == "mid_trial":
        assert "running" in before.values()
    elif moment == "between_trials":
        assert before == {0: "complete"}
    else:  # select: every trial finished, the winner's test metrics recorded, no selection stored
        assert set(before.values()) == {"complete"} and "selected_trial" not in job.summary
    _finish_with_second_worker(storage, job_id)
    job = storage.get_job(job_id)
    assert job.attempts == 2 and "requeued" in [e["event"] for e in job.history]
    _finished_once(storage, job_id, spec, tmp_path)


def _shared_data(tmp_path: Path) -> Path:
    d = tmp_path.parent / "chaos-reviews"
    with contextlib.suppress(FileExistsError):
        d.mkdir()
        write_reviews(d / "train.csv", 160, seed=0)
        write_reviews(d / "test.csv", 60, seed=1, flip=True)
    return d


def test_a_trial_process_killed_mid_trial_is_restarted_and_the_job_finishes(
    ray_local: Any, tiny_encoder: Path, db_url: str, tmp_path: Path
) -> None:
    """Only the Ray worker running a trial dies (OOM killer, a lost node): the trial is retried from
    its start under its own number (an infrastructure fault); the job goes on in the same driver."""
    storage = Storage(db_url)
    spec = _spec(tiny_encoder, _shared_data(tmp_path), tmp_path)
    job_id = submit(spec, storage)
    killed: list[int] = []

    def kill_first_trial_process() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if _mid_trial(storage, job_id):
                pid_file = trial_dir(tmp_path / "runs" / f"job-{job_id}", 0) / PID_FILE
                if pid_file.is_file():
                    pid = int(pid_file.read_text())
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_first_trial_process, daemon=True)
    killer.start()
    outcome = run_job(job_id, storage, progress=False)
    killer.join(timeout=5)
    assert killed, "no trial process was found to kill"
    assert outcome.status == "succeeded"
    # The restart note stays on the trial; the job itself ended clean.
    assert "its process was restarted 1 time(s)" in (storage.get_trial(job_id, 0).error or "")
    _finished_once(storage, job_id, spec, tmp_path)


def test_sigterm_requeues_the_workers_job_at_once_and_a_second_worker_finishes(
    ray_local: Any, tiny_encoder: Path, db_url: str, tmp_path: Path
) -> None:
    storage = Storage(db_url)
    spec = _spec(tiny_encoder, _shared_data(tmp_path), tmp_path)
    job_id = submit(spec, storage)
    proc, _ = _start_worker(db_url, tmp_path, hold=None)
    try:
        _wait_for("trial mid-run", lambda: _mid_trial(storage, job_id), proc, tmp_path)
        sent = time.time()
        os.kill(proc.pid, signal.SIGTERM)  # the worker process only, as a supervisor does
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        stopped_s, code = time.time() - sent, proc.returncode
    finally:
        _kill_group(proc)
    log = (tmp_path / "worker.log").read_text()
    assert code == 143 and stopped_s < 60, (code, stopped_s, log[-2000:])
    assert "worker stopped (SIGTERM)" in log
    job = storage.get_job(job_id)
    assert job.status.value == "queued" and "its worker was stopped" in job.error  # no stale wait
    assert job.attempts == 0  # handed back, not a death: --max-attempts counts deaths only
    assert "running" in {t.state.value for t in storage.list_trials(job_id)}  # left for a re-run
    assert run_worker(storage, once=True) == 1
    _finished_once(storage, job_id, spec, tmp_path)
