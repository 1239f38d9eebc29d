"""The define-by-run space: conditional parameters, ranges, warm-start configs, serialization (no Ray)."""

from __future__ import annotations

import json
import math
import warnings

import optuna
import pytest

from promptsweep.methods import method_config_from_params
from promptsweep.search import SearchSpace, default_spec, parse_spec, sample_params, warm_start_params
from promptsweep.search._space import make_sampler, to_optuna_params

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(space: SearchSpace, n: int, sampler: optuna.samplers.BaseSampler) -> list[dict]:
    study = optuna.create_study(sampler=sampler, direction="maximize")
    out = []
    for _ in range(n):
        trial = study.ask()
        params = sample_params(trial, space)
        out.append(params)
        # a deterministic, parameter-dependent value so that TPE has something to model
        study.tell(trial, math.log(params["num_virtual_tokens"]) - abs(math.log(params["learning_rate"]) + 4))
    return out


def test_each_method_samples_only_its_own_parameters() -> None:
    space = default_spec().space
    samples = _sample(space, 300, optuna.samplers.RandomSampler(seed=0))
    seen = {s["method"] for s in samples}
    assert seen == {"prompt_tuning", "prefix_tuning", "p_tuning"}
    own = {
        "prompt_tuning": {"prompt_init"},
        "prefix_tuning": {"prefix_projection", "encoder_hidden_size"},
        "p_tuning": {"encoder_type", "encoder_hidden_size", "encoder_dropout", "encoder_num_layers"},
    }
    shared = {"method", "num_virtual_tokens", "learning_rate", "pooling"}
    both_projection = set()
    both_encoders = set()
    for s in samples:
        assert set(s) - shared <= own[s["method"]], s
        # the methods layer accepts every sampled config (a foreign or inactive key would raise)
        method_config_from_params(s, "classification")
        if s["method"] == "p_tuning":
            both_encoders.add(s["encoder_type"])
            assert ("encoder_num_layers" in s) == (s["encoder_type"] == "LSTM"), s
        if s["method"] == "prefix_tuning":
            both_projection.add(s["prefix_projection"])
            assert ("encoder_hidden_size" in s) == s["prefix_projection"], s
        rng = getattr(space, s["method"]).learning_rate
        assert rng.low <= s["learning_rate"] <= rng.high
        assert 1 <= s["num_virtual_tokens"] <= 128
        assert s["pooling"] in space.pooling
    assert both_encoders == {"LSTM", "MLP"} and both_projection == {True, False}


def test_num_virtual_tokens_is_log_scaled() -> None:
    samples = _sample(default_spec().space, 300, optuna.samplers.RandomSampler(seed=1))
    small = sum(s["num_virtual_tokens"] <= 11 for s in samples)
    # log-uniform on [1, 128]: P(<= 11) ~ 0.5; uniform would give ~0.09
    assert small > 0.3 * len(samples)


def test_tpe_multivariate_grouped_sampler_runs_the_conditional_space() -> None:
    spec = default_spec()
    sampler = make_sampler(spec)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate and sampler._group
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "inconsistent distribution" warnings
        samples = _sample(spec.space, 30, sampler)
    assert len({s["method"] for s in samples}) >= 2


def test_non_classification_space_has_no_pooling() -> None:
    spec = parse_spec({"name": "v", "model": "smollm2-135m", "task": "verbalizer"})
    for s in _sample(spec.space, 40, optuna.samplers.RandomSampler(seed=2)):
        assert "pooling" not in s
        method_config_from_params(s, "verbalizer")


def test_fixed_range_is_not_registered_with_optuna() -> None:
    data = default_spec().space.model_dump()
    data.update(methods=["prompt_tuning"], num_virtual_tokens={"low": 8, "high": 8})
    space = SearchSpace.model_validate(data)
    study = optuna.create_study()
    trial = study.ask()
    assert sample_params(trial, space)["num_virtual_tokens"] == 8
    assert "num_virtual_tokens" not in trial.params


def test_warm_start_configs_are_paper_defaults_valid_for_their_method() -> None:
    spec = default_spec()
    configs = warm_start_params(spec)
    # every method once, the most reliable default first (ASHA promotes the first trial at each rung)
    assert sorted(c["method"] for c in configs) == sorted(spec.space.methods)
    assert configs[0]["method"] == "prefix_tuning"
    by_method = {c["method"]: c for c in configs}
    assert by_method["prompt_tuning"]["learning_rate"] == pytest.approx(3e-2)
    assert by_method["prefix_tuning"]["prefix_projection"] is False
    for c in configs:
        method_config_from_params(c, spec.task)
    off = spec.model_copy(update={"warm_start": False})
    assert warm_start_params(off) == []


def test_enqueued_configs_come_back_first_from_the_sampler() -> None:
    spec = default_spec()
    study = optuna.create_study(sampler=make_sampler(spec), direction="maximize")
    configs = warm_start_params(spec)
    for c in configs:
        study.enqueue_trial(to_optuna_params(c))
    for expected in configs:
        trial = study.ask()
        assert sample_params(trial, spec.space) == expected
        study.tell(trial, 0.5)


def test_space_serializes_with_the_job() -> None:
    space = default_spec().space
    again = SearchSpace.model_validate(json.loads(json.dumps(space.model_dump(mode="json"))))
    assert again == space
    a = _sample(space, 20, optuna.samplers.RandomSampler(seed=3))
    b = _sample(again, 20, optuna.samplers.RandomSampler(seed=3))
    assert a == b


@pytest.mark.parametrize("name", ["asha", "median", "none"])
def test_schedulers_count_training_steps(name: str) -> None:
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    from promptsweep.search._planning import plan_search
    from promptsweep.search._scheduler import make_scheduler

    data = default_spec().to_dict()
    data["scheduler"] = {"name": name, "grace_period_steps": 50, "reduction_factor": 3}
    data["budget"] = {"num_trials": 10, "max_steps": 300}
    spec = parse_spec(data)
    plan = plan_search(spec, train_examples=1000, eval_examples=100, costs=None)
    sched = make_scheduler(spec, plan)
    if name == "none":
        assert sched is None
        return
    assert sched._time_attr == "step" and sched._metric == "accuracy" and sched._mode == "max"
    if name == "asha":
        assert isinstance(sched, ASHAScheduler)
        rungs = sorted(m for m, _ in sched._brackets[0]._rungs)
        assert rungs[:2] == [50, 150] and plan.rungs == [50, 150]  # grace * 3**k below max_steps
        assert all(r >= 300 for r in rungs[2:])  # at the budget's end, if at all: never a cut
    else:
        assert isinstance(sched, MedianStoppingRule)


def test_sampler_choice() -> None:
    from promptsweep.search._space import make_sampler

    data = default_spec().to_dict()
    data["sampler"] = {"name": "random"}
    assert isinstance(make_sampler(parse_spec(data)), optuna.samplers.RandomSampler)
    data["sampler"] = {"name": "nsga2"}
    data["objective"] = {"metric": "accuracy", "secondary": "trainable_params"}
    assert isinstance(make_sampler(parse_spec(data)), optuna.samplers.NSGAIISampler)


@pytest.mark.parametrize("task", ["verbalizer", "generation"])
def test_a_causal_lm_gets_its_own_learning_rate_ranges_and_defaults(task: str) -> None:
    from promptsweep.search._spec_space import CAUSAL_LM_LEARNING_RATES

    data = {"name": "v", "model": "smollm2-135m", "task": task}
    if task == "generation":
        data["dataset"] = {"source": "fine-foods", "text_column": "review", "target_column": "summary"}
        data["objective"] = {"metric": "eval_loss"}
    spec = parse_spec(data)
    encoder = default_spec().space
    for method, rng in CAUSAL_LM_LEARNING_RATES.items():
        assert getattr(spec.space, method).learning_rate == rng
        assert (
            rng.high < getattr(encoder, method).learning_rate.high
        )  # the encoder ranges' tops are dead here
    by_method = {c["method"]: c for c in warm_start_params(spec)}
    assert by_method["prompt_tuning"]["learning_rate"] == pytest.approx(1e-2)  # 3e-2 stayed near the majority
    for method, config in by_method.items():
        rng = getattr(spec.space, method).learning_rate
        assert rng.low <= config["learning_rate"] <= rng.high
    sampled = _sample(spec.space, 30, optuna.samplers.RandomSampler(seed=0))
    assert all(s["learning_rate"] <= 1e-2 for s in sampled)


def test_a_given_learning_rate_range_and_a_stored_spec_keep_their_ranges() -> None:
    given = {"low": 0.05, "high": 0.2, "log": True}
    spec = parse_spec(
        {
            "name": "v",
            "model": "smollm2-135m",
            "task": "verbalizer",
            "space": {"prompt_tuning": {"learning_rate": given}},
        }
    )
    assert spec.space.prompt_tuning.learning_rate.model_dump() == given
    assert spec.space.prefix_tuning.learning_rate.high == pytest.approx(
        1e-2
    )  # not given: the causal-LM range
    # a job stored before the causal-LM ranges existed reloads with the ranges it ran with
    stored = spec.to_dict()
    stored["space"]["prefix_tuning"]["learning_rate"] = {"low": 1e-2, "high": 8e-2, "log": True}
    assert parse_spec(stored).space.prefix_tuning.learning_rate.high == pytest.approx(8e-2)
    # a SearchSpace built in Python keeps a range set on it, and gets the causal-LM one otherwise
    space = SearchSpace(pooling=None, p_tuning={"learning_rate": given})
    built = parse_spec({"name": "v", "model": "smollm2-135m", "task": "verbalizer", "space": space})
    assert built.space.p_tuning.learning_rate.model_dump() == given
    assert built.space.prompt_tuning.learning_rate.high == pytest.approx(1e-2)
