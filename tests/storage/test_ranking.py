"""Ranking in SQL: leaderboard, best per method variant, Pareto front, best across jobs - with ties."""

from __future__ import annotations

import pytest

from promptsweep.storage import Storage

PT = {"method": "prompt_tuning", "num_virtual_tokens": 8}
PREFIX = {"method": "prefix_tuning", "prefix_projection": False}
PREFIX_PROJ = {"method": "prefix_tuning", "prefix_projection": True, "encoder_hidden_size": 64}
LSTM = {"method": "p_tuning", "encoder_type": "LSTM", "encoder_num_layers": 2}
MLP = {"method": "p_tuning", "encoder_type": "MLP"}

# number: (params, state, accuracy, trainable params, train seconds)
MAXIMIZE_TRIALS = {
    0: (PT, "complete", 0.80, 1000, 10.0),
    1: (PREFIX, "complete", 0.80, 1000, 5.0),  # ties 0 on value and params, trains faster
    2: (PREFIX_PROJ, "complete", 0.80, 500, 50.0),  # ties on value, fewer params
    3: (LSTM, "complete", 0.85, 100_000, 100.0),  # best value
    4: (MLP, "complete", 0.70, 200, 1.0),
    5: (PT, "pruned", 0.90, 10, 1.0),  # better than all, but pruned: never ranked, not on the front
    6: (MLP, "fail", None, None, None),
    7: (PT, "running", 0.95, 10, 1.0),  # unfinished: neither ranked nor listed as pruned/failed
    8: (PT, "complete", 0.80, 1000, 10.0),  # ties 0 on everything: the lower number first
    9: (MLP, "complete", 0.70, 200, 1.0),  # the same point as 4: both on the Pareto front
}


def _add_trials(storage: Storage, job_id: int, trials: dict) -> None:
    for number, (params, state, value, trainable, seconds) in trials.items():
        storage.record_trial(
            job_id,
            number,
            params=params,
            state=state,
            value=value,
            metrics={"accuracy": value} if value is not None else {},
            trainable_params=trainable,
            train_seconds=seconds,
        )


@pytest.fixture
def max_job(storage: Storage) -> int:
    job = storage.create_job("max", {"objective": {"metric": "accuracy", "direction": "maximize"}})
    _add_trials(storage, job.id, MAXIMIZE_TRIALS)
    return job.id


@pytest.fixture
def min_job(storage: Storage) -> int:
    job = storage.create_job("min", {"objective": {"metric": "eval_loss", "direction": "minimize"}})
    _add_trials(
        storage,
        job.id,
        {
            0: (PT, "complete", 0.5, 10, 1.0),
            1: (PREFIX, "complete", 0.4, 20, 4.0),
            2: (PREFIX_PROJ, "complete", 0.4, 20, 3.0),  # ties 1, trains faster
            3: (MLP, "complete", 0.6, 5, 9.0),
            4: (LSTM, "pruned", 0.1, 1, 1.0),
        },
    )
    return job.id


def test_leaderboard_orders_by_value_then_params_then_time(storage: Storage, max_job: int) -> None:
    board = storage.leaderboard(max_job)
    assert [t.number for t in board] == [3, 2, 1, 0, 8, 4, 9]
    assert all(t.state == "complete" for t in board)
    assert [t.number for t in storage.leaderboard(max_job, limit=2)] == [3, 2]


def test_leaderboard_minimize(storage: Storage, min_job: int) -> None:
    assert [t.number for t in storage.leaderboard(min_job)] == [2, 1, 0, 3]


def test_pruned_and_failed_are_listed_apart(storage: Storage, max_job: int) -> None:
    unranked = storage.unranked_trials(max_job)
    assert [(t.number, t.state.value) for t in unranked] == [(5, "pruned"), (6, "fail")]


def test_best_per_method_variant(storage: Storage, max_job: int) -> None:
    best = storage.best_per_method(max_job)
    assert [(t.variant, t.number) for t in best] == [
        ("p_tuning_lstm", 3),
        ("prefix_tuning_projection", 2),
        ("prefix_tuning", 1),
        ("prompt_tuning", 0),
        ("p_tuning_mlp", 4),
    ]


def test_best_per_method_minimize(storage: Storage, min_job: int) -> None:
    best = storage.best_per_method(min_job)
    assert [(t.variant, t.number) for t in best] == [
        ("prefix_tuning_projection", 2),
        ("prefix_tuning", 1),
        ("prompt_tuning", 0),
        ("p_tuning_mlp", 3),
    ]


def test_pareto_front_metric_vs_trainable_params(storage: Storage, max_job: int) -> None:
    front = storage.pareto_front(max_job)
    assert [t.number for t in front] == [4, 9, 2, 3]
    points = [(t.value, t.trainable_params) for t in front]
    assert points == [(0.70, 200), (0.70, 200), (0.80, 500), (0.85, 100_000)]


def test_pareto_front_minimize(storage: Storage, min_job: int) -> None:
    assert [t.number for t in storage.pareto_front(min_job)] == [3, 0, 1, 2]


def test_empty_job_ranks_nothing(storage: Storage) -> None:
    job = storage.create_job("empty", {})
    storage.record_trial(job.id, 0, params=PT, state="running")
    assert storage.leaderboard(job.id) == []
    assert storage.best_per_method(job.id) == []
    assert storage.pareto_front(job.id) == []
    assert storage.best_across_jobs() == []


def test_best_across_jobs_per_model_dataset_task(storage: Storage) -> None:
    def job(name: str, model: str, task: str, metric: str, direction: str, trials: dict) -> int:
        spec = {
            "model": model,
            "dataset": {"source": "fine-foods"},
            "task": task,
            "objective": {"metric": metric, "direction": direction},
        }
        job_id = storage.create_job(name, spec).id
        _add_trials(storage, job_id, trials)
        return job_id

    a = job("a", "minilm", "classification", "accuracy", "maximize", MAXIMIZE_TRIALS)  # best 0.85 @ 100k
    b = job("b", "minilm", "classification", "accuracy", "maximize", {0: (PT, "complete", 0.85, 50, 1.0)})
    c = job("c", "minilm", "classification", "eval_loss", "minimize", {0: (PT, "complete", 0.40, 9, 1.0)})
    job("d", "minilm", "classification", "eval_loss", "minimize", {0: (MLP, "complete", 0.45, 1, 1.0)})
    job("e", "smollm2-135m", "verbalizer", "accuracy", "maximize", {0: (PT, "pruned", 0.99, 1, 1.0)})
    f = job("f", "smollm2-135m", "verbalizer", "accuracy", "maximize", {0: (LSTM, "complete", 0.6, 1, 1.0)})
    best = storage.best_across_jobs()
    summary = [
        (r.model, r.task, r.objective_metric, r.job_id, r.trial.number, r.trial.value, r.jobs) for r in best
    ]
    assert summary == [
        ("minilm", "classification", "accuracy", b, 0, 0.85, 2),  # ties a's 0.85 with fewer params
        ("minilm", "classification", "eval_loss", c, 0, 0.40, 2),  # minimized
        ("smollm2-135m", "verbalizer", "accuracy", f, 0, 0.6, 2),  # e's pruned 0.99 does not count
    ]
    assert all(r.dataset == "fine-foods" for r in best)
    assert a not in {r.job_id for r in best}


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_pareto_front_drops_points_tied_on_one_axis_and_worse_on_the_other(
    storage: Storage, direction: str
) -> None:
    sign = 1 if direction == "maximize" else -1
    job = storage.create_job("front", {"objective": {"metric": "m", "direction": direction}})
    _add_trials(
        storage,
        job.id,
        {
            0: (PT, "complete", sign * 0.9, 100, 1.0),
            1: (PT, "complete", sign * 0.8, 100, 1.0),  # same params as 0, worse value: dominated
            2: (PT, "complete", sign * 0.9, 300, 1.0),  # same value as 0, more params: dominated
            3: (PT, "complete", sign * 0.95, 300, 1.0),  # better value for more params: on the front
            4: (PT, "complete", sign * 0.99, None, 1.0),  # no parameter count: not on the front
            5: (PT, "complete", sign * 0.5, 10, 1.0),  # fewest params: on the front
        },
    )
    assert [t.number for t in storage.pareto_front(job.id)] == [5, 0, 3]


def test_best_across_jobs_full_tie_goes_to_the_older_job(storage: Storage) -> None:
    spec = {"model": "minilm", "dataset": "fine-foods", "task": "classification", "objective": "accuracy"}
    older, newer = (storage.create_job(name, spec).id for name in ("older", "newer"))
    _add_trials(storage, newer, {0: (PT, "complete", 0.8, 100, 2.0)})  # recorded first
    _add_trials(storage, older, {3: (PT, "complete", 0.8, 100, 2.0)})
    (best,) = storage.best_across_jobs()
    assert (best.job_id, best.job_name, best.trial.number, best.jobs) == (older, "older", 3, 2)
