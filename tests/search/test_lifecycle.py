"""The lifecycle verbs on real jobs (Ray Tune embedded + Optuna on the job's SQLite database + the tiny
encoder): cancel kills and records ``cancelled``; stop lets running trials finish, then selects; pause
leaves the study for resume; extend continues a finished study. Storage's side is in
tests/storage/test_lifecycle.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from promptsweep.search import run_job, run_worker, submit
from promptsweep.storage import Storage
from tests.search.conftest import tiny_spec

pytestmark = pytest.mark.slow


def _study(storage: Storage, job_id: int) -> optuna.Study:
    return optuna.load_study(study_name=storage.get_job(job_id).study_name, storage=storage.optuna_storage())


def _submit(storage: Storage, model: Path, data: Path, out: Path, *, trials: int, steps: int) -> int:
    """One trial at a time, no early stopping, no warm start: every trial trains ``steps`` steps."""
    spec = tiny_spec(
        model,
        data,
        out / "runs",
        warm_start=False,
        scheduler={"name": "none"},
        budget={"num_trials": trials, "max_steps": steps, "eval_every_steps": 100},
        resources={"cpus_per_trial": 1, "max_concurrent_trials": 1, "num_cpus": 2},
    )
    return submit(spec, storage)


def _when(
    storage: Storage, job_id: int, ready: Callable[[list], bool], action: Callable[[], object]
) -> threading.Thread:
    """Call ``action()`` (in a thread) once ``ready(trials)`` holds for the job's trials (180 s at most)."""

    def watch() -> None:
        deadline = time.time() + 180
        while time.time() < deadline:
            if ready(storage.list_trials(job_id)):
                action()
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _one_ended(trials: list) -> bool:
    return any(t.state.value != "running" for t in trials)


def _states_agree(storage: Storage, job_id: int) -> None:
    """Optuna's states equal our tables' (``cancelled`` is PRUNED in Optuna, which has no such state)."""
    ours = {t.number: t.state.value for t in storage.list_trials(job_id)}
    theirs = {t.number: t.state.name.lower() for t in _study(storage, job_id).trials}
    assert {n: ("pruned" if s == "cancelled" else s) for n, s in ours.items()} == theirs


def _events(storage: Storage, job_id: int) -> list[str]:
    return [e["event"] for e in storage.get_job(job_id).history]


def test_cancel_kills_running_trials_and_records_them_cancelled(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    # ~12 s per trial: the cancel (seen within 5 s) lands while the first one trains.
    job_id = _submit(storage, tiny_encoder, reviews_dir, tmp_path, trials=4, steps=3000)
    # The first intermediate value marks the trial mid-training (steps is set when it reports).
    started = _when(
        storage,
        job_id,
        lambda ts: bool(ts) and bool(storage.list_intermediate(job_id, ts[0].number)),
        lambda: storage.cancel_job(job_id),
    )
    outcome = run_job(job_id, storage, progress=False)
    started.join(timeout=5)
    assert outcome.status == "cancelled"
    job = storage.get_job(job_id)
    assert job.status.value == "cancelled" and job.request is None
    trials = storage.list_trials(job_id)
    assert [t.state.value for t in trials] == ["cancelled"]
    assert trials[0].error.startswith("killed at step") and "the job was cancelled" in trials[0].error
    _states_agree(storage, job_id)
    assert "selected_trial" not in job.summary  # nothing is selected or exported for a cancelled job


def test_stop_lets_the_running_trial_finish_starts_none_and_selects(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    job_id = _submit(storage, tiny_encoder, reviews_dir, tmp_path, trials=30, steps=1200)
    stopper = _when(storage, job_id, lambda ts: bool(ts), lambda: storage.stop_job(job_id))
    outcome = run_job(job_id, storage, progress=False)
    stopper.join(timeout=5)
    assert outcome.status == "succeeded"
    job = storage.get_job(job_id)
    trials = storage.list_trials(job_id)
    # The running trial trained to its end (a stop is not a kill); at most one more began before the
    # driver's next poll (5 s) saw the request.
    assert 1 <= len(trials) <= 2
    assert [t.state.value for t in trials] == ["complete"] * len(trials)
    assert all(t.steps == 1200 for t in trials)
    assert job.status.value == "succeeded" and job.request is None
    assert job.error == f"stopped by the user after {len(trials)} of 30 planned trials"
    assert job.summary["selected_trial"] in {t.number for t in trials}  # selected and exported
    events = _events(storage, job_id)
    assert events.index("stop requested") < events.index("succeeded")
    _states_agree(storage, job_id)


def test_a_stop_after_a_pause_the_run_already_saw_stops_the_job(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    """pause, seen by the driver (within 5 s), then stop while the trial still trains (~25 s): the
    stop replaces the pause, so the job selects and succeeds instead of pausing."""
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    job_id = _submit(storage, tiny_encoder, reviews_dir, tmp_path, trials=20, steps=6000)

    def pause_then_stop() -> None:
        storage.pause_job(job_id)
        time.sleep(7)
        storage.stop_job(job_id)

    actor = _when(
        storage,
        job_id,
        lambda ts: bool(ts) and bool(storage.list_intermediate(job_id, ts[0].number)),
        pause_then_stop,
    )
    outcome = run_job(job_id, storage, progress=False)
    actor.join(timeout=10)
    job = storage.get_job(job_id)
    assert (outcome.status, job.status.value, job.request) == ("succeeded", "succeeded", None)
    trials = storage.list_trials(job_id)
    assert [(t.state.value, t.steps) for t in trials] == [("complete", 6000)]  # finished, none new
    assert job.error == "stopped by the user after 1 of 20 planned trials"
    events = _events(storage, job_id)
    assert "paused" not in events and events[-3:] == ["pause requested", "stop requested", "succeeded"]
    _states_agree(storage, job_id)


def test_pause_keeps_the_study_and_resume_continues_it_on_a_worker(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    job_id = _submit(storage, tiny_encoder, reviews_dir, tmp_path, trials=5, steps=600)
    pauser = _when(storage, job_id, _one_ended, lambda: storage.pause_job(job_id))
    outcome = run_job(job_id, storage, progress=False)
    pauser.join(timeout=5)
    assert outcome.status == "paused"
    job = storage.get_job(job_id)
    assert (job.status.value, job.request, job.worker_id) == ("paused", None, None)
    before = storage.list_trials(job_id)
    assert 1 <= len(before) < 5
    assert [t.state.value for t in before] == ["complete"] * len(before)  # none killed, none left running
    assert run_worker(storage, once=True) == 0  # a paused job is not claimed

    storage.resume_job(job_id)
    assert run_worker(storage, once=True) == 1
    job = storage.get_job(job_id)
    assert job.status.value == "succeeded" and job.error is None
    trials = storage.list_trials(job_id)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]  # numbering continued, no trial twice
    assert [t.state.value for t in trials] == ["complete"] * 5
    assert [(t.number, t.params) for t in trials[: len(before)]] == [(t.number, t.params) for t in before]
    assert _events(storage, job_id) == [
        "submitted",
        "running",  # the foreground run's hold
        "pause requested",
        "paused",
        "resumed",
        "claimed",
        "succeeded",
    ]
    _states_agree(storage, job_id)


def test_extend_continues_a_finished_study_by_trials_then_by_time(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    job_id = _submit(storage, tiny_encoder, reviews_dir, tmp_path, trials=2, steps=100)
    assert run_job(job_id, storage, progress=False).status == "succeeded"
    first = [(t.number, t.params) for t in storage.list_trials(job_id)]
    assert len(first) == 2

    assert storage.extend_job(job_id, trials=3).status.value == "queued"
    assert run_worker(storage, once=True) == 1
    job = storage.get_job(job_id)
    assert job.status.value == "succeeded"
    trials = storage.list_trials(job_id)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]  # exactly 3 more, in the same study
    assert [(t.number, t.params) for t in trials[:2]] == first
    assert job.summary["planned_trials"] == 2
    assert len(_study(storage, job_id).trials) == 5

    storage.extend_job(job_id, time_s=4)
    t0 = time.time()
    assert run_worker(storage, once=True) == 1
    job = storage.get_job(job_id)
    assert job.status.value == "succeeded"
    more = storage.list_trials(job_id)[5:]
    assert more and all(t.state.value in ("complete", "pruned") for t in more)
    assert [t.number for t in more] == list(range(5, 5 + len(more)))
    assert job.summary["extension_time_used_s"] == 4.0  # its trials ran until its cap: all of it
    assert time.time() - t0 < 120
    assert run_worker(storage, once=True) == 0  # nothing is left: the job is not queued again

    # trials granted after a time extension: exactly that many more (the time's trials do not count)
    done = len(storage.list_trials(job_id))
    storage.extend_job(job_id, trials=2)
    assert run_worker(storage, once=True) == 1
    job = storage.get_job(job_id)
    assert job.status.value == "succeeded"
    assert [t.number for t in storage.list_trials(job_id)] == list(range(done + 2))
    assert job.summary["extra_trials_run"] == 5 and not job.summary.get("batch")
    _states_agree(storage, job_id)


def test_warm_start_enqueues_what_the_plan_runs_and_extend_takes_the_next_default(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    from promptsweep.search import parse_spec
    from promptsweep.search._space import paper_default_params, warm_start_order

    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = tiny_spec(
        tiny_encoder,
        reviews_dir,
        tmp_path / "runs",
        scheduler={"name": "none"},
        budget={"num_trials": 1, "max_steps": 10, "eval_every_steps": 10},
        resources={"cpus_per_trial": 1, "max_concurrent_trials": 1, "num_cpus": 2},
    )
    job_id = submit(spec, storage)
    parsed = parse_spec(spec)
    defaults = [paper_default_params(m, parsed) for m in warm_start_order(parsed)]
    assert len(defaults) == 3
    assert run_job(job_id, storage, progress=False).status == "succeeded"
    # one planned trial: the first default ran, and no other default waits in the study
    states = [t.state.name for t in _study(storage, job_id).trials]
    assert states == ["COMPLETE"]
    assert storage.list_trials(job_id)[0].method == defaults[0]["method"]

    storage.extend_job(job_id, trials=1)
    assert run_worker(storage, once=True) == 1
    trials = storage.list_trials(job_id)
    assert [t.method for t in trials] == [d["method"] for d in defaults[:2]]
    assert [t.state.name for t in _study(storage, job_id).trials] == ["COMPLETE", "COMPLETE"]


def test_stop_of_a_paused_job_selects_from_its_finished_trials_without_new_ones(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    job_id = _submit(storage, tiny_encoder, reviews_dir, tmp_path, trials=20, steps=300)
    pauser = _when(storage, job_id, _one_ended, lambda: storage.pause_job(job_id))
    assert run_job(job_id, storage, progress=False).status == "paused"
    pauser.join(timeout=5)
    finished = [t.number for t in storage.list_trials(job_id)]
    assert storage.stop_job(job_id).status.value == "queued"
    assert run_worker(storage, once=True) == 1
    job = storage.get_job(job_id)
    assert [t.number for t in storage.list_trials(job_id)] == finished  # no new trial
    assert job.status.value == "succeeded"
    assert job.error == f"stopped by the user after {len(finished)} of 20 planned trials"
    assert job.summary["selected_trial"] in finished
