"""Real search jobs: Ray Tune (embedded) + Optuna on the job's SQLite database + tiny frozen PLMs.

One job (7 trials: the three paper defaults, an LSTM P-tuning config, a config made to crash, two
sampled by TPE) backs most assertions; a multi-objective job and a killed-then-resumed job run apart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from promptsweep.methods import discordant, paired_bound
from promptsweep.search import parse_spec, run_job, run_worker, submit, warm_start_params
from promptsweep.search._spec import local_gpu_count
from promptsweep.storage import Storage, artifact_name, default_artifact_dir
from tests.search.conftest import tiny_spec

pytestmark = pytest.mark.slow

#: A P-tuning config with the LSTM prompt encoder (the defaults cover MLP).
LSTM_CONFIG = {"method": "p_tuning", "encoder_type": "LSTM", "learning_rate": 1e-3, "num_virtual_tokens": 4}
#: Made to crash inside the trial: the methods layer refuses more than 512 virtual tokens.
CRASH_CONFIG = {"method": "prompt_tuning", "learning_rate": 1e-2, "num_virtual_tokens": 600}


def _study(storage: Storage, job_id: int) -> optuna.Study:
    return optuna.load_study(study_name=storage.get_job(job_id).study_name, storage=storage.optuna_storage())


@pytest.fixture(scope="module")
def main_job(ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("main-job")
    storage = Storage(f"sqlite:///{out / 'ps.db'}")
    spec = parse_spec(
        tiny_spec(
            tiny_encoder,
            reviews_dir,
            out / "runs",
            budget={"num_trials": 7},
            space={
                "pooling": ["mean", "first_token"],
                "num_virtual_tokens": {"low": 1, "high": 640, "log": True},
            },
            warm_start_configs=[LSTM_CONFIG, CRASH_CONFIG],
        )
    )
    job_id = submit(spec, storage)
    outcome = run_job(job_id, storage, progress=False)
    return storage, job_id, outcome, spec


def test_job_runs_all_methods_and_both_encoders(main_job) -> None:
    storage, job_id, outcome, _spec = main_job
    assert outcome.status == "succeeded"
    assert storage.get_job(job_id).status.value == "succeeded"
    data = storage.get_job(job_id).summary["data"]  # what preparation made of the data, for show/run
    assert data["examples"] == {"train": 120, "validation": 40, "test": 60} and data["max_length"] == 32
    assert set(data["truncated"]) == {"train", "validation", "test"} and data["notes"] == []
    trials = storage.list_trials(job_id)
    assert [t.number for t in trials] == list(range(7))  # one row per trial, none twice
    assert outcome.finished == 7
    assert {t.method for t in trials} == {"prompt_tuning", "prefix_tuning", "p_tuning"}
    assert {t.params["encoder_type"] for t in trials if t.method == "p_tuning"} == {"LSTM", "MLP"}
    for t in trials:  # conditional space: each method's own parameters only
        if t.method != "p_tuning":
            assert not {"encoder_type", "encoder_num_layers", "encoder_dropout"} & set(t.params)
        if t.method == "p_tuning":
            assert ("encoder_num_layers" in t.params) == (t.params["encoder_type"] == "LSTM")


def test_states_agree_between_optuna_and_our_tables(main_job) -> None:
    storage, job_id, _outcome, _spec = main_job
    study = _study(storage, job_id)
    optuna_states = {t.number: t.state.name.lower() for t in study.trials}
    ours = {t.number: t.state.value for t in storage.list_trials(job_id)}
    assert optuna_states == ours
    assert "running" not in ours.values()


def test_asha_stopped_trials_are_pruned_not_complete(main_job) -> None:
    storage, job_id, _outcome, _spec = main_job
    study = _study(storage, job_id)
    total_steps = 40
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "ASHA (rungs at 10 and 20 steps, reduction factor 2) stopped no trial"
    for t in pruned:
        # stopped before its budget, at a rung, with its last validation loss kept at that step
        assert max(t.intermediate_values) < total_steps
        assert t.value == t.intermediate_values[max(t.intermediate_values)]
        row = storage.get_trial(job_id, t.number)
        assert row.state.value == "pruned" and row.steps == max(t.intermediate_values)
        assert row.adapter_dir is None
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            row = storage.get_trial(job_id, t.number)
            assert row.steps == total_steps and row.adapter_dir and Path(row.adapter_dir).is_dir()
            assert row.trainable_params > 0


def test_complete_trials_carry_their_adapters_as_optuna_trial_artifacts(main_job) -> None:
    # Uploaded by the driver while each trial was still RUNNING in Optuna (Optuna's own trial artifact
    # record, which a finished trial refuses), so optuna-dashboard offers each adapter on its trial.
    storage, job_id, _outcome, spec = main_job
    study = _study(storage, job_id)
    assert study.metric_names == spec.metric_names == ["eval_loss"]  # not "Objective 0"
    store = default_artifact_dir(storage)
    assert any(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        metas = get_all_artifact_meta(t, storage=storage.optuna_storage())
        row = storage.get_trial(job_id, t.number)
        if t.state != TrialState.COMPLETE:
            assert metas == [] and row.adapter_dir is None
            continue
        (meta,) = metas
        assert meta.filename == artifact_name(t.number, row.variant)
        with zipfile.ZipFile(store / meta.artifact_id) as zf:
            assert zf.read("adapter_config.json") == Path(row.adapter_dir, "adapter_config.json").read_bytes()


def test_crashing_trial_is_fail_with_its_error_and_the_job_goes_on(main_job) -> None:
    storage, job_id, outcome, _spec = main_job
    crashed = [t for t in storage.list_trials(job_id) if t.params.get("num_virtual_tokens") == 600]
    assert len(crashed) == 1
    row = crashed[0]
    assert row.state.value == "fail"
    assert "num_virtual_tokens" in row.error  # the reason, from the trial's traceback
    told = _study(storage, job_id).trials[row.number]
    assert told.state == TrialState.FAIL
    assert "num_virtual_tokens" in told.user_attrs["error"]  # the dashboard shows why
    # trials after it still ran to an end
    assert all(t.state.value != "running" for t in storage.list_trials(job_id) if t.number > row.number)
    assert outcome.counts.get("complete", 0) >= 1


def test_enqueued_defaults_are_the_first_trials(main_job) -> None:
    storage, job_id, _outcome, spec = main_job
    expected = warm_start_params(spec)
    assert [c["method"] for c in expected[:3]] == ["prefix_tuning", "prompt_tuning", "p_tuning"]
    trials = storage.list_trials(job_id)
    for number, config in enumerate(expected[:3]):  # the paper defaults fix every parameter
        assert trials[number].params == config, number
    for number, config in enumerate(expected[3:], start=3):  # user configs fix what they give
        assert config.items() <= trials[number].params.items(), number
    study = _study(storage, job_id)
    for number in range(len(expected)):
        assert "fixed_params" in study.trials[number].system_attrs  # Optuna's enqueue_trial marker


def test_test_split_never_reaches_sampler_pruner_or_leaderboard(main_job) -> None:
    storage, job_id, outcome, _spec = main_job
    study = _study(storage, job_id)
    trials = storage.list_trials(job_id)
    # 1. what Optuna saw (sampler, pruner values) is exactly the validation curve we recorded
    for t in study.trials:
        ours = {r.step: r.metrics["eval_loss"] for r in storage.list_intermediate(job_id, t.number)}
        told = dict(t.intermediate_values)
        if t.state == TrialState.COMPLETE:
            told[40] = t.value  # the final evaluation is the objective value
        assert told == pytest.approx({s: v for s, v in ours.items() if s in told})
        assert not [k for k in {**t.user_attrs, **t.system_attrs} if "test" in k]
    # 2. the test split was evaluated for the selected trial only
    with_test = [t.number for t in trials if t.test_metrics]
    assert with_test == outcome.best_trials == [study.best_trial.number]
    # 3. the leaderboard orders by validation loss; the winner is the validation winner
    board = storage.leaderboard(job_id)
    assert [t.value for t in board] == sorted(t.value for t in board)
    assert board[0].number == study.best_trial.number
    assert board[0].value == pytest.approx(min(t.metrics["eval_loss"] for t in board))
    # 4. the test labels are flipped: a trial that learned the task on validation is worse than chance
    #    on test, and still it is the one selected (test played no part in choosing it)
    best = storage.get_trial(job_id, outcome.best_trials[0])
    assert best.metrics["accuracy"] > 0.6
    assert best.test_metrics["accuracy"] < 0.5


def test_finalists_of_an_uncapped_job_keep_the_values_they_were_ranked_on(main_job) -> None:
    """No ``max_eval_examples``: trials ranked on the whole validation split already, so the finalists
    (one or more: ASHA decides how many trials complete) are not evaluated again, and ``show`` says why;
    a lone one is not told it was "not re-scored: a single finalist"."""
    from promptsweep.search._selecting import describe_finalists

    storage, job_id, _outcome, spec = main_job
    finalists = storage.get_job(job_id).summary["finalists"]
    values = {t.number: t.value for t in storage.list_trials(job_id) if t.state.value == "complete"}
    assert 1 <= len(finalists) == min(spec.selection.finalists, len(values))
    for f in finalists:
        assert (f["rescored"], f["kept"], f["n"], f["subsample_n"]) == (
            False,
            "ranked on the whole split",
            40,
            40,
        )
        assert f["value"] == f["subsample"] == values[f["number"]]
    _header, *lines = describe_finalists(finalists, "eval_loss")
    assert len(lines) == len(finalists)
    assert all(line.endswith("(n=40; ranked on the whole split)") for line in lines), lines


def test_show_gives_each_finalist_its_own_reason_and_infers_it_for_older_summaries() -> None:
    """``describe_finalists`` prints a finalist's stored ``kept``; a summary stored before ``kept``
    existed gets the reason from the count (one: a single finalist; more: an uncapped ranking)."""
    from promptsweep.search._selecting import describe_finalists

    def finalist(number: int, value: float, **extra: Any) -> dict[str, Any]:
        base = {"number": number, "variant": "prompt_tuning", "subsample": value, "subsample_n": 40}
        return {**base, "value": value, "n": 40, "rescored": False, **extra}

    kept = [finalist(3, 0.8, kept="ranked on the whole split")]
    assert describe_finalists(kept, "accuracy")[1].endswith("0.8000 (n=40; ranked on the whole split)")
    older = [finalist(3, 0.8), finalist(5, 0.7)]
    lines = describe_finalists(older, "accuracy")[1:]
    assert len(lines) == 2 and all(line.endswith("(n=40; ranked on the whole split)") for line in lines)
    assert describe_finalists(older[:1], "accuracy")[1].endswith("(n=40; not re-scored: a single finalist)")
    rescored = [finalist(3, 0.8, subsample_n=12, rescored=True)]
    assert describe_finalists(rescored, "accuracy")[1].endswith("0.8000 (n=12) -> 0.8000 (n=40)")


def test_a_winner_within_the_noise_of_the_runner_up_is_said_to_be_not_separated() -> None:
    """The demo's case: 0.8175 against 0.806 on all 800 validation reviews is a gap of 0.0115 where
    twice the standard error of the difference is 0.039: ``separation`` says so, with both trials'
    values and standard errors; a gap beyond it, a lone finalist or a metric without a standard
    error say nothing."""
    from promptsweep.search._selecting import separation, standard_error

    def finalist(number: int, value: float, n: int = 800) -> dict[str, Any]:
        return {"number": number, "value": value, "se": standard_error("accuracy", value, n), "n": n}

    se_a, se_b = standard_error("accuracy", 0.8175, 800), standard_error("accuracy", 0.806, 800)
    assert se_a == pytest.approx(0.013656, abs=1e-6) and se_b == pytest.approx(0.013981, abs=1e-6)
    sentence = separation([finalist(0, 0.8175), finalist(3, 0.806), finalist(5, 0.70)])
    assert sentence == (
        "trial 0 (0.8175 +/- 0.0137) is not separated from trial 3 (0.8060 +/- 0.0140) on the whole "
        "validation split (n=800): the gap 0.0115 is within 2 standard errors (0.0391)"
    )
    # a gap of 0.045 separates (its bound is 0.0376 at these values)
    assert separation([finalist(0, 0.851), finalist(3, 0.806), finalist(5, 0.70)]) is None
    assert separation([finalist(0, 0.8175)]) is None
    assert separation([{**finalist(0, 0.8175), "se": None}, finalist(3, 0.806)]) is None


def test_a_trial_that_ended_in_an_earlier_state_is_said_to(tmp_path: Path) -> None:
    """``kept_state`` reads the adapter's ``kept_step`` (``TrainBudget.keep_best`` went back) and the
    last validation from the trial's recorded learning curve: a sentence naming both steps; an
    adapter of its last state, or no adapter, gets none."""
    import json

    from promptsweep.search._selecting import kept_state

    storage = Storage(f"sqlite:///{tmp_path / 'kept.db'}")
    job_id = storage.create_job("kept", {"name": "kept"}).id
    curves = {0: [(210, 0.80), (315, 0.80), (420, 0.665)], 1: [(210, 0.80), (420, 0.79)]}
    for number, curve in curves.items():
        storage.record_trial(job_id, number, params={"method": "prompt_tuning"}, state="running")
        for step, value in curve:
            storage.record_intermediate(job_id, number, step, {"accuracy": value, "macro_f1": value - 0.1})
        adapter = tmp_path / f"adapter-{number}"  # what train_trial saves beside the PEFT files
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text("{}")
        meta = {"steps": 420, "kept_step": 210 if number == 0 else None}
        (adapter / "promptsweep_adapter.json").write_text(json.dumps(meta))
        value = 0.80 if number == 0 else 0.79
        storage.record_trial(job_id, number, state="complete", value=value, adapter_dir=str(adapter))
    storage.record_trial(job_id, 2, params={"method": "prompt_tuning"}, state="complete", value=0.7)
    sentence = kept_state(storage, job_id, storage.get_trial(job_id, 0), "accuracy")
    assert sentence == (
        "trial 0 ends in its state validated at step 210 (accuracy 0.8000), not in its last, at step 420 "
        "(0.6650), which validated clearly worse: its adapter and value are the earlier state's"
    )
    assert kept_state(storage, job_id, storage.get_trial(job_id, 1), "accuracy") is None
    assert kept_state(storage, job_id, storage.get_trial(job_id, 2), "accuracy") is None


def test_a_selected_trial_within_the_noise_of_a_floor_is_said_to_be_not_separated_from_it() -> None:
    """The SmolLM2 case: 0.655 on 200 ranked reviews against the majority class's 0.650 beats it, but
    within its noise: ``floor_separation`` names it. Against the majority floor the gap is paired
    through the trial's recall of that class (McNemar), which separates a lead the unpaired rule cannot
    and does not separate a lead of a few reviews; a floor not beaten (``floor_warning``'s) and a
    metric without a standard error say nothing."""
    from promptsweep.search._selecting import floor_separation

    majority = {"accuracy": 0.65, "recall[great]": 1.0, "recall[other]": 0.0}
    floors = {"majority": majority, "zero_shot": {"accuracy": 0.357}, "bad": {"seconds": 1.0}}

    def trial(accuracy: float, recall_great: float | None = None) -> dict[str, float]:
        return {"accuracy": accuracy, **({"recall[great]": recall_great} if recall_great is not None else {})}

    def note(metrics: dict[str, float], on: dict[str, Any] = floors, n: int = 200) -> str | None:
        return floor_separation("accuracy", True, metrics, n, on)

    # unpaired (no recall stored, e.g. a trial recorded before recalls were): 2 x sqrt(se^2 + se^2)
    said = note(trial(0.655))
    assert said is not None and "0.6550 +/- 0.0336 (n=200)" in said and "zero_shot" not in said
    unpaired = "2 standard errors of the difference, unpaired"
    assert f"majority 0.6500 (gap 0.0050, needed > 0.0952: {unpaired})" in said
    # paired: 124 of the 130 great reviews right and 7 of the 70 others: b=7, c=6, (2 sqrt(13) + 1) / 200
    said = note(trial(0.655, 124 / 130))
    assert said is not None and "(gap 0.0050, needed > 0.0411: paired review by review (McNemar))" in said
    # all 130 great right and 4 others: a lead of 4 reviews (b=4, c=0) is not separated: (2*2 + 1) / 200
    assert "needed > 0.0250" in note(trial(0.67, 1.0))
    # 0.72 with 120 of 130 great right: b=24, c=10, 0.0633 < 0.07 paired; unpaired (0.0926) it is not
    assert note(trial(0.72, 120 / 130)) is None
    assert "unpaired" in note(trial(0.72))
    assert note(trial(0.80)) is None  # 0.15 > 2 SE (0.088)
    assert note(trial(0.64)) is None  # below the floor: floor_warning's
    # counts that are not whole (a floor scored on other reviews) and a floor right on more than one
    # class's reviews are compared unpaired
    assert "unpaired" in note(trial(0.655, 124 / 130), {"majority": {**majority, "accuracy": 0.651}})
    mixed = {"head_only": {"accuracy": 0.70, "recall[great]": 0.9, "recall[other]": 0.33}}
    assert "unpaired" in note(trial(0.72, 0.95), mixed)
    assert floor_separation("eval_loss", False, {"eval_loss": 0.5}, 200, {"m": {"eval_loss": 0.6}}) is None
    assert floor_separation("accuracy", False, trial(0.655), 200, floors) is None


def test_a_floor_with_outcomes_is_paired_review_by_review() -> None:
    """Against a floor whose per-review outcomes are stored (head-only, zero-shot), the selected trial's
    own outcomes on the same reviews pair the test (McNemar): a lead the unpaired rule cannot separate is
    separated when the two disagree on few reviews, and not when they disagree on many."""
    from promptsweep.search._selecting import floor_separation

    n = 200
    floors = {"head_only": {"accuracy": 0.66}}

    def pair(both: int, only_trial: int, only_floor: int) -> tuple[str, str]:
        rest = n - both - only_trial - only_floor
        trial = "1" * both + "1" * only_trial + "0" * only_floor + "0" * rest
        floor = "1" * both + "0" * only_trial + "1" * only_floor + "0" * rest
        return trial, floor

    def note(outcomes: tuple[str, str] | None) -> str | None:
        trial, floor = outcomes if outcomes else (None, None)
        return floor_separation(
            "accuracy",
            True,
            {"accuracy": 0.72},
            n,
            floors,
            outcomes=trial,
            floor_outcomes={"head_only": floor} if floor is not None else None,
        )

    # unpaired: 2 sqrt(0.72 x 0.28 / 200 + 0.66 x 0.34 / 200) = 0.0923 > the 0.06 gap
    assert "head_only 0.6600 (gap 0.0600, needed > 0.0923: 2 standard errors" in note(None)
    # 144 and 132 right of 200, disagreeing on 20 reviews (16 vs 4): (2 sqrt(20) + 1) / 200 = 0.0497
    assert note(pair(128, 16, 4)) is None
    # disagreeing on 52 (32 vs 20): (2 sqrt(52) + 1) / 200 = 0.0771 > 0.06
    said = note(pair(112, 32, 20))
    assert "head_only 0.6600 (gap 0.0600, needed > 0.0771: paired review by review (McNemar))" in said
    # outcomes whose hits are not the ranked accuracy's (a reload that scored otherwise) are not paired
    trial, floor = pair(127, 16, 4)  # 143 hits for a ranked 0.72 (144)
    assert "unpaired" in floor_separation(
        "accuracy", True, {"accuracy": 0.72}, n, floors, outcomes=trial, floor_outcomes={"head_only": floor}
    )
    # outcomes of other reviews than the n ranked ones are not paired
    trial, floor = pair(128, 16, 4)
    assert "unpaired" in floor_separation(
        "accuracy",
        True,
        {"accuracy": 0.72},
        n,
        floors,
        outcomes=trial[:-1],
        floor_outcomes={"head_only": floor[:-1]},
    )


def test_the_selected_trial_is_paired_with_a_floor_only_where_pairing_could_decide() -> None:
    """``needs_outcomes``: one more validation pass of the selected adapter is run only for a beaten
    floor, other than the majority class, with stored outcomes, whose gap is within the largest
    McNemar bound the two accuracies allow: (2 sqrt(n min(a + b, 2 - a - b)) + 1) / n."""
    from promptsweep.search._selecting import needs_outcomes

    stored = {"majority": "1", "head_only": "1", "zero_shot": "1"}

    def needs(value: float, floors: dict[str, float], n: int = 200, metric: str = "accuracy") -> bool:
        on = {name: {metric: v} for name, v in floors.items()}
        return needs_outcomes(metric, True, {metric: value}, n, on, stored)

    # MiniLM's demo: 0.80 against head-only 0.74 on 300 reviews: at most 138 discordant, bound 0.0817
    assert needs(0.80, {"head_only": 0.74}, n=300)
    # SmolLM2: 0.82 against zero-shot 0.37 on 200: at most 162 discordant, bound 0.1323 < 0.45
    assert not needs(0.82, {"zero_shot": 0.37})
    assert not needs(0.66, {"majority": 0.65})  # paired through the trial's recall already
    assert not needs(0.60, {"head_only": 0.74})  # not beaten: floor_warning's
    assert not needs(0.80, {"head_only": 0.74}, metric="exact_match")
    assert not needs_outcomes("accuracy", True, {"accuracy": 0.8}, 200, {"head_only": {"accuracy": 0.74}}, {})
    assert not needs_outcomes(
        "accuracy", False, {"accuracy": 0.8}, 200, {"head_only": {"accuracy": 0.7}}, stored
    )


def test_trials_were_recorded_as_they_happened(main_job) -> None:
    storage, job_id, _outcome, _spec = main_job
    for t in storage.list_trials(job_id):
        points = storage.list_intermediate(job_id, t.number)
        if t.state.value == "fail":
            continue
        assert points, t.number
        # every evaluation keeps each class's F1 and recall beside the task's metrics, as the trial's end does
        per_class = {"f1[great]", "f1[other]", "recall[great]", "recall[other]"}
        for record in (*points, t):
            assert {"accuracy", "macro_f1", *per_class} <= record.metrics.keys(), t.number
        # each evaluation was written before the trial finished, not in a batch at the end
        assert all(p.recorded_at <= t.finished_at for p in points)
        assert t.started_at < points[0].recorded_at


def test_multi_objective_job_returns_a_pareto_front(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = tiny_spec(
        tiny_encoder,
        reviews_dir,
        tmp_path / "runs",
        objective={"metric": "eval_loss", "secondary": "trainable_params"},
        sampler={"name": "nsga2"},
        scheduler={"name": "none"},
        budget={"num_trials": 5, "max_steps": 20},
        warm_start_configs=[
            {"method": "prompt_tuning", "learning_rate": 3e-2, "num_virtual_tokens": 1},
            {"method": "p_tuning", "encoder_type": "LSTM", "learning_rate": 3e-3, "num_virtual_tokens": 64},
        ],
    )
    job_id = submit(spec, storage)
    outcome = run_job(job_id, storage, progress=False)
    assert outcome.status == "succeeded"
    study = _study(storage, job_id)
    assert len(study.directions) == 2
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 3
    front = {n: v for n, v in zip(outcome.best_trials, outcome.best_values, strict=True)}
    assert front

    def dominates(a: list[float], b: list[float]) -> bool:  # both objectives minimized
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    for n, v in front.items():
        assert not any(dominates(list(t.values), v) for t in complete), n
    for t in complete:  # every trial off the front is dominated by a front member
        if t.number not in front:
            assert any(dominates(v, list(t.values)) for v in front.values()), t.number
    # trainable parameters really differ between configs (the second objective is measured)
    assert len({t.values[1] for t in complete}) > 1
    # the storage's SQL Pareto front agrees
    assert {t.number for t in storage.pareto_front(job_id)} == set(front)
    assert set(outcome.test_metrics) == set(front)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_killed_job_resumes_without_duplicates(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path, how: str
) -> None:
    """`promptsweep run --job N` in a child process. SIGKILL: the process dies at once. SIGINT (Ctrl-C
    to the foreground process group, sent to a process that inherited SIGINT ignored): the run stops
    within seconds, the job is ``interrupted`` (not failed, not succeeded) and its unfinished trials
    stay running, not stopped early; the next run resumes them."""
    url = f"sqlite:///{tmp_path / 'ps.db'}"
    storage = Storage(url)
    num_trials = 6
    spec = tiny_spec(
        tiny_encoder,
        reviews_dir,
        tmp_path / "runs",
        scheduler={"name": "none"},
        # ~5 s per trial on the tiny model, 20+ s of work left when the signal goes: with 4 trials of
        # 0.3 s (and later 2.5 s) a loaded machine let the whole job finish between the test seeing a
        # trial mid-run and sending the signal (CI saw "succeeded", every trial complete)
        budget={"num_trials": num_trials, "max_steps": 1200, "eval_every_steps": 100},
        resources={"cpus_per_trial": 1, "max_concurrent_trials": 1, "num_cpus": 1},
    )
    job_id = submit(spec, storage)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    run = [sys.executable, "-m", "promptsweep", "--db", url, "run", "--job", str(job_id), "--no-progress"]
    # Started as a CI runner or a script's `cmd &` starts it: SIGINT ignored (`trap '' INT`), which
    # exec keeps - the cause of the Ctrl-C lost in the CI runs of 2026-11-29. `run` must stop anyway.
    proc = subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *run],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    interrupted: dict[int, dict] = {}
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            rows = storage.list_trials(job_id)
            done = [r for r in rows if r.state.value != "running"]
            running = [
                r for r in rows if r.state.value == "running" and storage.list_intermediate(job_id, r.number)
            ]
            if done and running:
                interrupted = {r.number: dict(r.params) for r in running}
                seen_at = time.time()
                break
            assert proc.poll() is None, "the job process ended before it could be killed"
            time.sleep(0.5)
        assert interrupted, "no trial was mid-run within 240 s"
    finally:
        if how == "SIGINT":
            signal_after_s = time.time() - seen_at if interrupted else -1.0
            ended_before_signal = proc.poll() is not None
            signalled = time.time()
            os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=90)
            stop_s, exit_code = time.time() - signalled, proc.returncode
        with contextlib.suppress(ProcessLookupError):  # gone already after a clean SIGINT exit
            os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: driver, its Ray and workers
        proc.wait(timeout=30)

    if how == "SIGINT":
        job = storage.get_job(job_id)
        assert job.status.value == "interrupted" and "promptsweep run --job" in job.error, (
            f"status {job.status.value}: the signal went {signal_after_s:.1f} s after a trial was seen "
            f"mid-run; the job process had {'already' if ended_before_signal else 'not'} ended"
        )
        assert exit_code == 130, f"`run` did not stop on SIGINT within 90 s (exit code {exit_code})"
        assert stop_s < 60, stop_s
        for number in interrupted:  # not recorded as stopped early (pruned): they re-run on resume
            assert storage.get_trial(job_id, number).state.value == "running"
    study = _study(storage, job_id)
    before = {t.number: t.state for t in study.trials}
    assert any(s == TrialState.RUNNING for s in before.values())
    finished_before = sum(
        s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for s in before.values()
    )

    if how == "SIGKILL":
        # The dead foreground run held its job and heartbeated like a worker: a worker reaps it
        # (no heartbeat for 1 s here) and resumes it, in this process's Ray.
        job = storage.get_job(job_id)
        assert job.status.value == "running" and job.worker_id.startswith("run@"), job
        time.sleep(1.5)
        assert run_worker(storage, once=True, stale_after_s=1.0) == 1
        assert storage.get_job(job_id).attempts == 1  # the worker's claim (a foreground hold is not one)
        outcome = None
    else:
        outcome = run_job(job_id, storage, progress=False)  # `run --job N`, in this process's Ray

    study = _study(storage, job_id)
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(num_trials))  # nothing duplicated, nothing extra
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in study.trials)
    assert storage.get_job(job_id).status.value == "succeeded"
    assert outcome is None or outcome.finished == num_trials
    assert finished_before < num_trials
    rows = storage.list_trials(job_id)
    assert [r.number for r in rows] == list(range(num_trials))
    for number, params in interrupted.items():  # the unfinished trial re-ran under its own number
        assert rows[number].params == params
        assert rows[number].state.value == "complete"
        steps = [p.step for p in storage.list_intermediate(job_id, number)]
        assert steps == sorted(set(steps))
        assert study.trials[number].params  # parameters kept in Optuna
    # trials finished before the kill kept their results (not re-run)
    for number, state in before.items():
        if state != TrialState.RUNNING and state != TrialState.WAITING:
            assert study.trials[number].state == state


def test_worker_runs_a_queued_job_and_shows_progress(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path, db_url: str
) -> None:
    """On SQLite and on PostgreSQL (``db_url``): the study and our tables on the same database."""
    import io

    from rich.console import Console

    from promptsweep.search import run_worker
    from promptsweep.search._progress import Progress

    storage = Storage(db_url)
    spec = tiny_spec(
        tiny_encoder,
        reviews_dir,
        tmp_path / "runs",
        warm_start=False,
        scheduler={"name": "none"},
        budget={"num_trials": 2, "max_steps": 10},
    )
    job_id = submit(spec, storage)
    assert run_worker(storage, once=True) == 1
    job = storage.get_job(job_id)
    assert job.status.value == "succeeded"
    assert [t.state.value for t in storage.list_trials(job_id)] == ["complete", "complete"]
    assert run_worker(storage, once=True) == 0  # the queue is empty now
    study = _study(storage, job_id)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert [t.value for t in study.trials] == [t.value for t in storage.list_trials(job_id)]

    # the live display renders what the recorder feeds it
    buffer = io.StringIO()
    display = Progress(job_id, "eval_loss", "minimize", 2, console=Console(file=buffer, width=140))
    with display:
        for t in storage.list_trials(job_id):
            display.trial_started(t.number, t.params)
            display.trial_finished(t.number, t.state.value, t.metrics, None)
    text = buffer.getvalue()
    best = storage.leaderboard(job_id)[0]
    assert "2/2 trials finished" in text
    assert f"trial {best.number} = {best.value:.4f}" in text


def _submit_long_job(storage: Storage, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path) -> int:
    """A job of 30 one-at-a-time trials: long enough to be interrupted after its first trial."""
    spec = tiny_spec(
        tiny_encoder,
        reviews_dir,
        tmp_path / "runs",
        scheduler={"name": "none"},
        budget={"num_trials": 30, "max_steps": 60},
        resources={"cpus_per_trial": 1, "max_concurrent_trials": 1, "num_cpus": 2},
    )
    return submit(spec, storage)


def _after_first_trial(storage: Storage, job_id: int, action: Callable[[], object]) -> threading.Thread:
    """Start a thread that calls ``action()`` once one of the job's trials has ended (180 s at most)."""

    def watch() -> None:
        deadline = time.time() + 180
        while time.time() < deadline:
            if any(t.state.value != "running" for t in storage.list_trials(job_id)):
                action()
                return
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_cancelled_job_stops_and_stays_cancelled(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    job_id = _submit_long_job(storage, tiny_encoder, reviews_dir, tmp_path)
    canceller = _after_first_trial(storage, job_id, lambda: storage.cancel_job(job_id))
    outcome = run_job(job_id, storage, progress=False)
    canceller.join(timeout=5)
    assert outcome.status == "cancelled"
    assert storage.get_job(job_id).status.value == "cancelled"
    assert outcome.finished < 30
    assert all(t.state.value != "running" for t in storage.list_trials(job_id))


def test_worker_that_loses_its_job_stops_and_leaves_it_to_the_new_holder(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    """A worker whose job is re-queued (missed heartbeats) and claimed by another stops its search
    and writes no final status over the new holder's."""
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    job_id = _submit_long_job(storage, tiny_encoder, reviews_dir, tmp_path)
    assert storage.claim_job("worker-a").id == job_id
    requeued: list[int] = []

    def requeue_and_take() -> None:
        requeued.extend(storage.requeue_stale(0))
        storage.claim_job("worker-b")

    taker = _after_first_trial(storage, job_id, requeue_and_take)
    outcome = run_job(job_id, storage, progress=False, worker_id="worker-a")
    taker.join(timeout=5)
    assert requeued == [job_id]
    assert outcome.status == "lost"
    assert outcome.finished < 30
    job = storage.get_job(job_id)
    assert (job.status.value, job.worker_id) == ("running", "worker-b")
    assert storage.heartbeat(job_id, "worker-a") is False


def test_budget_in_seconds_ends_the_search_and_its_running_trials(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    """The wall-clock cap: no trial starts after it, and the trials running at it end at their next
    step with an evaluation and a saved adapter (complete, fewer steps), so the search has a result."""
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = tiny_spec(
        tiny_encoder,
        reviews_dir,
        tmp_path / "runs",
        scheduler={"name": "none"},
        # 100,000 steps cannot finish in 20 s (the tiny encoder runs a few hundred a second), so
        # the cap, not the plan's config count, ends the running trial. A first evaluation at 200
        # steps fits the budget even when a loaded machine makes the plan's timed steps slow.
        budget={"num_trials": None, "time_budget_s": 20, "max_steps": 100_000, "eval_every_steps": 200},
    )
    job_id = submit(spec, storage)
    t0 = time.time()
    outcome = run_job(job_id, storage, progress=False)
    # No trial cap: only the 20 s budget ends this search. The bound guards against a hang; it is
    # loose because CI machines are loaded (the step counts below show the cut itself).
    assert time.time() - t0 < 300
    assert outcome.status == "succeeded"
    rows = storage.list_trials(job_id)
    assert rows and all(t.state.value != "running" for t in rows)
    study = _study(storage, job_id)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    cut = [t for t in rows if (t.steps or 0) < 100_000]
    assert cut, "a 100,000-step trial finished within a 20 s budget"
    for t in cut:  # ended by the cap with a result, not killed
        assert t.state.value == "complete" and t.value is not None, (t.number, t.state, t.error)
        assert t.adapter_dir and Path(t.adapter_dir, "adapter_config.json").is_file()
        assert [p.step for p in storage.list_intermediate(job_id, t.number)][-1] == t.steps
    # the cap is also when the last trial may start (the first one's set-up counts against it)
    assert max(t.started_at for t in rows).timestamp() < t0 + 20 + 15
    assert outcome.finished == len(rows)


@pytest.mark.gpu
@pytest.mark.skipif(local_gpu_count() < 1, reason="needs a CUDA GPU")
def test_fractional_gpus_pack_four_trials_on_one_gpu(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = tiny_spec(
        tiny_encoder,
        reviews_dir,
        tmp_path / "runs",
        scheduler={"name": "none"},
        budget={"num_trials": 4, "max_steps": 200, "eval_every_steps": 50},
        resources={"cpus_per_trial": 0.5, "gpus_per_trial": 0.25, "max_concurrent_trials": 4},
    )
    job_id = submit(spec, storage)
    outcome = run_job(job_id, storage, progress=False)
    rows = storage.list_trials(job_id)
    assert outcome.counts == {"complete": 4}
    # the four trials ran at the same time on the one GPU
    assert max(r.started_at for r in rows) < min(r.finished_at for r in rows)
    assert all(r.peak_memory_bytes and r.peak_memory_bytes > 0 for r in rows)


def test_bad_data_fails_the_job_before_any_trial(
    tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    from promptsweep.exceptions import DataError, SpecError

    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = tiny_spec(tiny_encoder, reviews_dir, tmp_path / "runs")
    spec["dataset"]["label_column"] = "stars"
    # a column the data lacks is refused at submit, naming the field and the columns: nothing stored
    with pytest.raises(
        SpecError, match=r"dataset\.label_column: column 'stars' not found .*\['text', 'label'\]"
    ):
        submit(spec, storage)
    assert storage.list_jobs() == []
    # what only splitting finds (a class too small to carve a validation split from) fails the job
    # before any trial
    data = tmp_path / "reviews"
    data.mkdir()
    (data / "train.csv").write_text((reviews_dir / "train.csv").read_text() + "an odd one,odd\n")
    (data / "test.csv").write_text((reviews_dir / "test.csv").read_text())
    job_id = submit(tiny_spec(tiny_encoder, data, tmp_path / "runs"), storage)
    with pytest.raises(DataError, match="class 'odd' has 1 example"):
        run_job(job_id, storage, progress=False)
    job = storage.get_job(job_id)
    assert job.status.value == "failed" and "class 'odd' has 1 example" in job.error
    assert storage.list_trials(job_id) == []


@pytest.mark.skipif(local_gpu_count() > 0, reason="the pool has a GPU")
def test_gpus_the_pool_lacks_are_refused_before_any_trial(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    from promptsweep.exceptions import SpecError

    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = parse_spec(
        tiny_spec(tiny_encoder, reviews_dir, tmp_path / "runs", resources={"gpus_per_trial": 0.5})
    )
    job = storage.create_job(spec.name, spec.to_dict())  # as a submit from a machine with GPUs would
    with pytest.raises(SpecError, match=r"resources\.gpus_per_trial"):
        run_job(job.id, storage, progress=False)
    assert storage.get_job(job.id).status.value == "failed"
    assert storage.list_trials(job.id) == []


def test_a_budget_alone_plans_the_search_and_survivors_keep_training(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A compute budget and a number of configs: the plan (timed on the job's model) sizes the trials
    and the rungs and is stored with the job, ASHA cuts at the planned rungs, and the survivors train on
    to max_steps in one go; the floors are scored and the finalists re-scored on the whole validation
    split. (How many configs a budget buys is planned in tests/search/test_planning.py: a tiny model's
    step time on a loaded machine is too noisy to pin a count here.)"""
    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = tiny_spec(
        tiny_encoder,
        reviews_dir,
        tmp_path / "runs",
        dataset={"max_eval_examples": 12},  # the ranked subsample; the whole validation split has 40
        objective={"metric": "accuracy"},
        budget={
            "num_trials": 5,
            "max_steps": None,
            "eval_every_steps": None,
            "compute_budget_s": 120,
            "batch_size": 4,
        },
        sampler={"name": "tpe", "n_startup_trials": None},
        scheduler={"name": "asha", "grace_period_steps": None, "reduction_factor": None},
    )
    job_id = submit(spec, storage)
    assert "plan" not in storage.get_job(job_id).summary  # planned when the job starts (timed there)
    with caplog.at_level("INFO", logger="promptsweep.search._scheduler"):
        outcome = run_job(job_id, storage, progress=False)
    assert outcome.status == "succeeded"
    summary = storage.get_job(job_id).summary
    plan = summary["plan"]
    # 120 training reviews at batch 4 = 30 steps an epoch: 3 epochs, one rung at a third of them
    assert plan["planned"] == ["max_steps", "rungs", "eval_every_steps"]
    assert (plan["max_steps"], plan["rungs"], plan["eval_every_steps"]) == (90, [30], 30)
    assert plan["costs"]["step_s"] > 0 and plan["configs"] == 5
    assert plan["expected_trial_seconds"] > 0
    trials = storage.list_trials(job_id)
    assert len(trials) == plan["configs"] == outcome.finished
    for t in trials:
        steps = [p.step for p in storage.list_intermediate(job_id, t.number)]
        if t.state.value == "complete":
            # one continuous run past its rung to the plan's max_steps (validation at the rung and the end)
            assert steps == [30, 90] and t.steps == 90, (t.number, steps)
        elif t.state.value == "pruned":
            assert t.steps in plan["rungs"] and steps == [t.steps], (t.number, steps)
    assert set(summary["floors"]) == set(summary["floor_outcomes"]) == {"majority", "head_only"}
    for name, floor in summary["floors"].items():
        assert 0 <= floor["accuracy"] <= 1
        right = summary["floor_outcomes"][name]  # each of the 12 ranked reviews, right or wrong
        assert len(right) == 12 and right.count("1") / 12 == pytest.approx(floor["accuracy"])
    complete = [t for t in trials if t.state.value == "complete"]
    finalists = summary["finalists"]
    assert len(finalists) == min(3, len(complete))
    # re-scored on the whole split when there is a choice (a lone finalist is not: the next test)
    n = 40 if len(finalists) > 1 else 12
    assert {f["n"] for f in finalists} == {n} and {f["subsample_n"] for f in finalists} == {12}
    assert {f["rescored"] for f in finalists} == {len(finalists) > 1}
    assert [f["value"] for f in finalists] == sorted((f["value"] for f in finalists), reverse=True)
    for f in finalists:
        assert f["se"] == pytest.approx((f["value"] * (1 - f["value"]) / n) ** 0.5)
    assert summary["selected_trial"] == finalists[0]["number"] == outcome.best_trials[0]
    # a floor beaten by less than its noise on the 12 ranked reviews is named (a gap of 0.2 is
    # 2.4 reviews: within 2 standard errors unpaired, and within McNemar's bound paired, (2 + 1) / 12)
    ranked = storage.get_trial(job_id, summary["selected_trial"]).value
    close = [name for name, f in summary["floors"].items() if 0 < ranked - f["accuracy"] <= 0.2]
    if close:
        assert "(n=12)" in summary["floor_separation"], summary
        assert all(f"{name} " in summary["floor_separation"] for name in close), summary
        # every floor is paired: the majority through the trial's recall, head-only through outcomes
        assert "unpaired" not in summary["floor_separation"], summary
    # beating head-only by less than the largest McNemar bound its accuracy allows on 12 reviews,
    # (2 sqrt(round(12 min(a + b, 2 - a - b))) + 1) / 12, the selected trial was scored review by review
    # once more, and its outcomes decide the note against head-only, paired
    head = summary["floors"]["head_only"]["accuracy"]
    gap = ranked - head
    worst = (2 * (round(12 * min(ranked + head, 2 - ranked - head))) ** 0.5 + 1) / 12
    if not 0 < gap <= worst:
        assert "selected_outcomes" not in summary, summary
    else:
        mine = summary["selected_outcomes"]
        assert len(mine) == 12 and mine.count("1") == round(ranked * 12), summary
        only_mine, only_head = discordant(mine, summary["floor_outcomes"]["head_only"])
        assert only_mine - only_head == round(gap * 12)
        bound = paired_bound(only_mine, only_head, 12)
        said = f"head_only {head:.4f} (gap {gap:.4f}, needed > {bound:.4f}: paired review by review"
        assert (said in (summary.get("floor_separation") or "")) == (gap <= bound), summary
    # only the selected trial saw the test split
    assert [t.number for t in trials if t.test_metrics] == [summary["selected_trial"]]
    # the first warm-start config (trial 0) is spared at the rung, whoever reaches it first
    spared = [r.getMessage() for r in caplog.records if "not stopped at the first rung" in r.getMessage()]
    assert spared == ["trial 0 (the first warm-start config) is not stopped at the first rung (30 steps)"]
    assert storage.get_trial(job_id, 0).steps == 90


def test_a_screening_plan_fills_its_budget_with_more_configs_then_ends(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A plan whose configs were planned from the budget starts more of them, past the planned ones,
    while the budget left after the running trials' worst cases pays for a first rung, and ends the
    search when it does not. The plan is stored by hand (a job keeps its stored plan): one config, so
    the second slot starts a config past the plan at once, whatever a tiny trial takes here (2-25 s,
    the first ones the longest: Ray starts their workers)."""
    from promptsweep.search._fill import spent_trial_seconds
    from promptsweep.search._planning import Costs, Plan

    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = tiny_spec(tiny_encoder, reviews_dir, tmp_path / "runs", floors=False)
    job_id = submit(spec, storage)
    costs = Costs(step_s=0.02, eval_example_s=0.001, setup_s=0.5)
    plan = Plan(
        configs=1, max_steps=40, epochs=2.7, rungs=[10, 20], reduction_factor=2, eval_every_steps=10,
        reaching=[1, 1, 1], expected_trial_seconds=None, compute_budget_s=30, time_budget_s=None,
        concurrency=2, planned=["configs", "max_steps", "rungs", "eval_every_steps"], costs=costs,
        eval_at_steps=[10, 20], eval_examples=40, fill=True,
    )  # fmt: skip
    storage.update_job_summary(job_id, plan=plan.to_dict())
    with caplog.at_level("INFO", logger="promptsweep.search._searcher"):
        outcome = run_job(job_id, storage, progress=False)
    assert outcome.status == "succeeded"
    trials = storage.list_trials(job_id)
    messages = [r.getMessage() for r in caplog.records]
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds() for t in _study(storage, job_id).trials
    ]
    assert len(trials) >= 2, (messages, durations)
    assert sum("past the 1 planned" in m for m in messages) == len(trials) - 1, messages
    (ended,) = [m for m in messages if m.startswith("no new config (the budget is short)")]
    # it ended when what was left could not pay for one more first rung (0.5 + 10 x 0.02 + 0.04 s)
    first_rung = 0.5 + 10 * 0.02 + 40 * 0.001
    spent = spent_trial_seconds(_study(storage, job_id))
    assert spent > 30 - first_rung - 0.5, (spent, ended)
    # and past it by no more than the trials that ran past their timed worst case
    assert spent <= 30 + 2 * max(durations), (spent, durations)


def test_a_lone_finalist_keeps_its_ranked_value_and_says_so(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    """One complete trial: nothing to choose between, so it is not re-scored on the whole validation split
    (the test split gives its estimate); its finalist entry reports the subsample it was ranked on, and
    ``show`` says it was not re-scored rather than pretending a 12-review value is a 40-review one."""
    from promptsweep.search._selecting import describe_finalists

    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = tiny_spec(
        tiny_encoder,
        reviews_dir,
        tmp_path / "runs",
        dataset={"max_eval_examples": 12},
        objective={"metric": "accuracy"},
        budget={"num_trials": 1, "max_steps": 10, "eval_every_steps": 10},
        floors=False,
    )
    job_id = submit(spec, storage)
    outcome = run_job(job_id, storage, progress=False)
    assert outcome.status == "succeeded"
    (trial,) = storage.list_trials(job_id)
    (finalist,) = storage.get_job(job_id).summary["finalists"]
    assert (finalist["number"], finalist["rescored"]) == (trial.number, False)
    assert finalist["kept"] == "not re-scored: a single finalist"
    assert (finalist["n"], finalist["subsample_n"], finalist["value"]) == (12, 12, trial.value)
    _header, line = describe_finalists([finalist], "accuracy")
    assert line.endswith("(n=12; not re-scored: a single finalist)"), line
    assert trial.test_metrics  # the selected trial's estimate comes from the test split


def test_trials_of_a_plan_without_screening_resize_to_their_time_share(
    ray_local: Any, tiny_encoder: Path, reviews_dir: Path, tmp_path: Path
) -> None:
    """A budget too small to screen: each slot trains one config on its time share, re-sizing its steps
    from its own step time. The plan here was made from a timing 10 s/step, far slower than the
    tiny model's steps, so both trials grow to twice their planned steps (the bound), are validated at
    half and three quarters of those steps and at their end, every validation recorded, and complete
    with the value of one of them (a plan stored with a job is the one it runs, as on a resume)."""
    from promptsweep.search._planning import Costs, plan_search

    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    spec = tiny_spec(
        tiny_encoder,
        reviews_dir,
        tmp_path / "runs",
        objective={"metric": "accuracy"},
        budget={"num_trials": None, "max_steps": None, "eval_every_steps": None, "compute_budget_s": 1000},
        scheduler={"name": "asha", "grace_period_steps": None, "reduction_factor": None},
    )
    job_id = submit(spec, storage)
    plan = plan_search(
        parse_spec(spec),
        train_examples=120,
        eval_examples=40,
        costs=Costs(step_s=10.0, eval_example_s=0.001, setup_s=0.1),
    )
    assert plan.note and plan.configs == 2 and plan.step_time_s and plan.rungs == []
    storage.update_job_summary(job_id, plan=plan.to_dict())
    outcome = run_job(job_id, storage, progress=False)
    assert outcome.status == "succeeded"
    trials = storage.list_trials(job_id)
    assert [t.state.value for t in trials] == ["complete", "complete"]
    assert plan.eval_fractions == [0.5, 0.75]
    for t in trials:
        assert t.steps == 2 * plan.max_steps, (t.number, t.steps)
        validated = storage.list_intermediate(job_id, t.number)
        assert [p.step for p in validated] == [round(0.5 * t.steps), round(0.75 * t.steps), t.steps]
        assert t.values[0] in [p.metrics["accuracy"] for p in validated]
    assert storage.get_job(job_id).summary["selected_trial"] in {t.number for t in trials}
