"""Trials and intermediate metrics: upsert round trips, derived fields, bad input (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from promptsweep.exceptions import JobNotFoundError, TrialNotFoundError
from promptsweep.storage import MethodVariant, Storage, TrialRecord, TrialState, method_variant

PREFIX = {
    "method": "prefix_tuning",
    "num_virtual_tokens": 16,
    "learning_rate": 0.01,
    "prefix_projection": True,
}


@pytest.fixture
def job_id(storage: Storage) -> int:
    return storage.create_job("trials", {"objective": {"metric": "accuracy", "direction": "maximize"}}).id


def test_record_trial_upserts_one_row(storage: Storage, job_id: int) -> None:
    started = storage.record_trial(job_id, 0, params=PREFIX, optuna_trial_id=7, ray_trial_id="abc_00000")
    assert isinstance(started, TrialRecord)
    assert started.state is TrialState.RUNNING and started.finished_at is None
    assert started.method == "prefix_tuning" and started.variant == MethodVariant.PREFIX_TUNING_PROJECTION
    done = storage.record_trial(
        job_id,
        0,
        state="complete",
        value=0.75,
        metrics={"accuracy": 0.75, "macro_f1": 0.7, "eval_loss": 0.52},
        trainable_params=123_456,
        total_params=22_836_096,
        train_seconds=31.5,
        peak_memory_bytes=1_500_000_000,
        steps=200,
        epochs=1.5,
        adapter_dir="/runs/job/0/adapter",
    )
    # Fields not given again are kept; the state change sets finished_at.
    assert done.params == PREFIX and done.optuna_trial_id == 7 and done.ray_trial_id == "abc_00000"
    assert done.state is TrialState.COMPLETE and done.value == 0.75 and done.values == [0.75]
    assert done.metrics == {"accuracy": 0.75, "macro_f1": 0.7, "eval_loss": 0.52}
    assert (done.trainable_params, done.total_params, done.steps, done.epochs) == (
        123_456,
        22_836_096,
        200,
        1.5,
    )
    assert done.peak_memory_bytes == 1_500_000_000 and done.train_seconds == 31.5
    assert done.started_at == started.started_at and done.finished_at >= done.started_at
    assert storage.get_trial(job_id, 0) == done
    # Recording the final state again changes nothing else and keeps the first finish time.
    again = storage.record_trial(job_id, 0, state="complete", test_metrics={"accuracy": 0.73})
    assert again.finished_at == done.finished_at and again.test_metrics == {"accuracy": 0.73}
    assert [t.number for t in storage.list_trials(job_id)] == [0]
    # None for params/metrics/state means "leave as is".
    kept = storage.record_trial(job_id, 0, state=None, params=None, metrics=None, steps=201)
    assert (kept.state, kept.params, kept.metrics["accuracy"], kept.steps) == ("complete", PREFIX, 0.75, 201)


def test_values_fill_value_and_non_finite_become_null(storage: Storage, job_id: int) -> None:
    multi = storage.record_trial(job_id, 1, params={"method": "prompt_tuning"}, values=[0.8, 4096])
    assert multi.value == 0.8 and multi.values == [0.8, 4096.0]
    nan = storage.record_trial(
        job_id, 2, params={"method": "prompt_tuning"}, state="fail", value=float("nan"),
        metrics={"eval_loss": float("inf")}, error="TrainingError: NaN loss at step 3",
    )  # fmt: skip
    assert nan.value is None and nan.metrics == {"eval_loss": None} and nan.error.startswith("TrainingError")
    assert nan.finished_at is not None


def test_numpy_scalars_are_stored_as_plain_numbers(storage: Storage, job_id: int) -> None:
    np = pytest.importorskip("numpy")
    trial = storage.record_trial(
        job_id, 0, params={"method": "prompt_tuning", "num_virtual_tokens": np.int64(8)},
        metrics={"accuracy": np.float32(0.5), "eval_loss": np.float64("nan"), "correct": np.bool_(True),
                 "per_class": np.array([0.25, 0.75]).tolist(), "mean": np.array(0.5)},
        value=np.float32(0.5), trainable_params=np.int64(6144),
    )  # fmt: skip
    assert trial.params == {"method": "prompt_tuning", "num_virtual_tokens": 8}
    assert trial.metrics == {"accuracy": 0.5, "eval_loss": None, "correct": True, "per_class": [0.25, 0.75],
                             "mean": 0.5}  # fmt: skip
    assert type(trial.params["num_virtual_tokens"]) is int and type(trial.metrics["accuracy"]) is float
    assert (trial.value, trial.trainable_params) == (0.5, 6144)
    curve = storage.record_intermediate(job_id, 0, 10, {"accuracy": np.float32(0.25)})
    assert curve.metrics == {"accuracy": 0.25}
    with pytest.raises(ValueError, match="metrics must be JSON-serializable"):
        storage.record_intermediate(job_id, 0, 20, {"confusion": np.eye(2)})
    assert [r.step for r in storage.list_intermediate(job_id, 0)] == [10]


def test_error_text_keeps_what_postgresql_can_store(storage: Storage, job_id: int) -> None:
    trial = storage.record_trial(job_id, 0, state="fail", error="worker stderr: \x00\x00 garbage")
    assert trial.error == "worker stderr: \ufffd\ufffd garbage"


def test_explicit_times_are_kept(storage: Storage, job_id: int) -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    end = datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC)
    trial = storage.record_trial(
        job_id, 0, params={"method": "prompt_tuning"}, state="pruned", started_at=start, finished_at=end
    )
    assert (trial.started_at, trial.finished_at) == (start, end)


def test_list_trials_filters_states(storage: Storage, job_id: int) -> None:
    for number, state in enumerate(["complete", "pruned", "fail", "running", "complete"]):
        storage.record_trial(job_id, number, params={"method": "prompt_tuning"}, state=state)
    assert [t.number for t in storage.list_trials(job_id, states=["complete"])] == [0, 4]
    assert [t.number for t in storage.list_trials(job_id, states=[TrialState.PRUNED, "fail"])] == [1, 2]
    with pytest.raises(ValueError, match="states must be one of"):
        storage.list_trials(job_id, states=["done"])


def test_trials_of_other_jobs_are_apart(storage: Storage, job_id: int) -> None:
    other = storage.create_job("other", {}).id
    storage.record_trial(job_id, 0, params={"method": "prompt_tuning"}, value=0.1)
    storage.record_trial(other, 0, params={"method": "p_tuning"}, value=0.9)
    assert storage.get_trial(job_id, 0).value == 0.1 and storage.get_trial(other, 0).value == 0.9


def test_intermediate_metrics_round_trip(storage: Storage, job_id: int) -> None:
    storage.record_trial(job_id, 0, params=PREFIX)
    for step, acc in [(20, 0.6), (10, 0.5), (30, 0.7)]:
        storage.record_intermediate(job_id, 0, step, {"accuracy": acc, "eval_loss": 1 - acc})
    storage.record_intermediate(
        job_id, 0, 30, {"accuracy": 0.71, "eval_loss": float("nan")}
    )  # same step: replaced
    curve = storage.list_intermediate(job_id, 0)
    assert [(r.step, r.metrics["accuracy"]) for r in curve] == [(10, 0.5), (20, 0.6), (30, 0.71)]
    assert curve[-1].metrics["eval_loss"] is None
    with pytest.raises(TrialNotFoundError, match="no trial number 5"):
        storage.record_intermediate(job_id, 5, 10, {"accuracy": 0.5})
    with pytest.raises(ValueError, match="step"):
        storage.record_intermediate(job_id, 0, -1, {"accuracy": 0.5})


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"colour": "red"}, "unknown field"),
        ({"state": "finished"}, "'state'='finished' is invalid"),
        ({"params": ["method"]}, "'params'"),
        ({"trainable_params": "many"}, "'trainable_params'"),
        ({"values": "0.5"}, "'values'"),
        ({"started_at": "yesterday"}, "'started_at'"),
        # What PostgreSQL would refuse is refused on both backends, naming the field.
        ({"params": {"method": "prompt_tuning", "out": Path("/x")}}, "params must be JSON-serializable"),
        ({"metrics": {"accuracy": {0.5}}}, "metrics must be JSON-serializable"),
        ({"params": {"method": "m" * 33}}, "method must be at most 32 characters"),
        ({"ray_trial_id": "r" * 65}, "ray_trial_id must be at most 64"),
        ({"params": {"method": "prompt_tuning", "prompt_init_text": "a\x00b"}}, "NUL"),
        ({"adapter_dir": "/runs/\x00"}, "NUL"),
    ],
)
def test_bad_trial_fields_are_refused(storage: Storage, job_id: int, fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        storage.record_trial(job_id, 0, **fields)
    assert storage.list_trials(job_id) == []


def test_unknown_job_or_trial(storage: Storage, job_id: int) -> None:
    with pytest.raises(JobNotFoundError):
        storage.record_trial(999, 0, params=PREFIX)
    with pytest.raises(TrialNotFoundError, match=f"job {job_id} has no trial number 3"):
        storage.get_trial(job_id, 3)
    with pytest.raises(ValueError, match="number must be a non-negative integer"):
        storage.get_trial(job_id, -1)
    for call in (  # beyond the INTEGER columns: a ValueError on both backends, not a driver error
        lambda: storage.get_trial(job_id, 2**31),
        lambda: storage.get_job(2**70),
        lambda: storage.record_trial(job_id, 2**40, params=PREFIX),
        lambda: storage.record_intermediate(job_id, 0, 2**31, {"accuracy": 0.5}),
        lambda: storage.leaderboard(job_id, limit=-1),
    ):
        with pytest.raises(ValueError, match="must be a non-negative integer"):
            call()


@pytest.mark.parametrize(
    ("params", "variant"),
    [
        ({"method": "prompt_tuning", "prompt_init": "text"}, "prompt_tuning"),
        ({"method": "prefix_tuning", "prefix_projection": False}, "prefix_tuning"),
        ({"method": "prefix_tuning"}, "prefix_tuning"),
        (
            {"method": "prefix_tuning", "prefix_projection": True, "encoder_hidden_size": 64},
            "prefix_tuning_projection",
        ),
        ({"method": "p_tuning", "encoder_type": "LSTM", "encoder_num_layers": 2}, "p_tuning_lstm"),
        ({"method": "p_tuning", "encoder_type": "lstm"}, "p_tuning_lstm"),
        ({"method": "p_tuning", "encoder_type": "MLP"}, "p_tuning_mlp"),
        ({"method": "p_tuning"}, "p_tuning_mlp"),
        ({"method": "lora_someday"}, "lora_someday"),
        ({}, None),
    ],
)
def test_method_variant_from_params(params: dict, variant: str | None) -> None:
    assert method_variant(params) == variant
