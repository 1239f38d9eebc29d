"""Budget planning: configs, rungs and survivor steps from a compute budget (no Ray, no torch)."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from promptsweep.exceptions import SpecError
from promptsweep.search import parse_spec
from promptsweep.search._asha import replay_asha, simulate_asha
from promptsweep.search._planning import (
    LONGEST_TRIAL_SHARE,
    MIN_RUNG_STEPS,
    MIN_SCREENED_CONFIGS,
    SLOT_WALL_UTILIZATION,
    TARGET_EPOCHS,
    Costs,
    Plan,
    describe_plan,
    plan_search,
    train_budget,
)
from promptsweep.search._scheduler import make_scheduler

COSTS = Costs(step_s=0.5, eval_example_s=0.01, setup_s=3.0, precision="bf16")


def _spec(budget: dict[str, Any], **extra: Any) -> Any:
    data = {"name": "plan", "budget": budget, "resources": {"max_concurrent_trials": 2}, **extra}
    return parse_spec(data)


def _full_trial_cost(plan: Plan, costs: Costs, eval_examples: int) -> float:
    evals = math.ceil(plan.max_steps / plan.eval_every_steps)
    return costs.setup_s + plan.max_steps * costs.step_s + evals * eval_examples * costs.eval_example_s


def test_a_wall_clock_budget_alone_plans_configs_rungs_and_survivor_steps() -> None:
    plan = plan_search(_spec({"time_budget_s": 330}), train_examples=1000, eval_examples=300, costs=COSTS)
    assert plan.planned == ["configs", "max_steps", "rungs", "eval_every_steps"]
    # successive halving: rungs grow by the reduction factor, the survivors train to max_steps
    assert plan.reduction_factor == 3 and len(plan.rungs) >= 2
    assert plan.rungs[0] >= MIN_RUNG_STEPS
    assert all(b == a * 3 for a, b in zip(plan.rungs, [*plan.rungs[1:], plan.max_steps], strict=True))
    assert plan.eval_every_steps == plan.rungs[0]
    assert plan.eval_at_steps == plan.rungs  # validation where a rung judges, and at the end
    assert plan.max_steps <= math.ceil(TARGET_EPOCHS * 1000 / 16) + plan.rungs[0]
    # the budget pays for the plan, and a trial trained to the end takes at most its share
    assert plan.compute_budget_s == pytest.approx(330 * 2 * 0.85)
    assert plan.expected_trial_seconds <= plan.compute_budget_s
    assert _full_trial_cost(plan, COSTS, 300) <= LONGEST_TRIAL_SHARE * plan.compute_budget_s * 1.1
    assert plan.configs >= 9  # enough configs that some reach every rung
    assert plan.reaching[0] == plan.configs
    # as Ray's ASHA decides: more than the ideal configs / 9 train to the end, at least the first one
    assert plan.reaching == sorted(plan.reaching, reverse=True)
    assert max(1.0, plan.configs / 9) < plan.reaching[-1] < plan.configs / 2
    # its configs were planned from the budget, so more may start while the budget left pays
    assert plan.fill


def test_more_budget_buys_longer_trials_then_more_configs() -> None:
    def plan(budget: float, concurrency: int = 2) -> Plan:
        spec = _spec({"compute_budget_s": budget}, resources={"max_concurrent_trials": concurrency})
        return plan_search(spec, train_examples=3200, eval_examples=400, costs=COSTS)

    # below 3 epochs of one config per slot, a larger budget trains longer (nothing screened)
    short, longer = plan(150), plan(400)
    assert short.rungs == longer.rungs == [] and longer.max_steps > short.max_steps
    # once 3 epochs fit, a larger budget screens more configs
    small, large = plan(1800), plan(7200)
    assert small.rungs and large.configs > small.configs >= MIN_SCREENED_CONFIGS
    assert large.max_steps == small.max_steps <= math.ceil(TARGET_EPOCHS * 3200 / 16)  # rounded to rungs
    # trial-seconds do not depend on concurrency: the same compute budget plans the same screening
    one = plan(1800, concurrency=1)
    assert (one.configs, one.max_steps, one.rungs) == (small.configs, small.max_steps, small.rungs)


def test_slower_steps_plan_fewer_configs() -> None:
    fast = plan_search(_spec({"time_budget_s": 600}), train_examples=1000, eval_examples=300, costs=COSTS)
    slow_costs = Costs(step_s=1.5, eval_example_s=0.03, setup_s=3.0)
    slow = plan_search(
        _spec({"time_budget_s": 600}), train_examples=1000, eval_examples=300, costs=slow_costs
    )
    assert slow.configs < fast.configs


def test_explicit_settings_override_the_plan() -> None:
    spec = _spec(
        {"time_budget_s": 600, "num_trials": 5, "max_steps": 100, "eval_every_steps": 10},
        scheduler={"name": "asha", "grace_period_steps": 10, "reduction_factor": 2},
    )
    plan = plan_search(spec, train_examples=1000, eval_examples=300, costs=COSTS)
    assert (plan.configs, plan.max_steps, plan.eval_every_steps) == (5, 100, 10)
    assert plan.eval_at_steps is None  # an explicit spacing is kept
    assert plan.rungs == [10, 20, 40, 80] and plan.reduction_factor == 2
    assert plan.planned == []
    assert not plan.fill  # the spec's num_trials is what runs


def test_no_scheduler_plans_no_rungs() -> None:
    plan = plan_search(
        _spec({"compute_budget_s": 900}, scheduler={"name": "none"}),
        train_examples=1000,
        eval_examples=300,
        costs=COSTS,
    )
    assert plan.rungs == [] and plan.reaching == [plan.configs]


def test_a_budget_below_one_evaluation_of_one_config_is_refused_with_the_numbers() -> None:
    with pytest.raises(SpecError) as info:
        plan_search(_spec({"time_budget_s": 5}), train_examples=1000, eval_examples=300, costs=COSTS)
    message = str(info.value)
    assert message.startswith("budget.time_budget_s: 8 trial-seconds cannot finish one evaluation")
    assert "300 validation examples" in message
    with pytest.raises(SpecError, match=r"^budget\.compute_budget_s: 5 trial-seconds"):
        plan_search(_spec({"compute_budget_s": 5}), train_examples=1000, eval_examples=300, costs=COSTS)


def test_a_batch_larger_than_the_training_split_is_refused() -> None:
    with pytest.raises(SpecError, match=r"^budget\.batch_size: 16 exceeds the 10 training examples"):
        plan_search(_spec({"time_budget_s": 600}), train_examples=10, eval_examples=300, costs=COSTS)


def test_a_first_rung_beyond_the_planned_steps_is_refused() -> None:
    spec = _spec({"compute_budget_s": 300}, scheduler={"name": "asha", "grace_period_steps": 10_000})
    with pytest.raises(SpecError, match=r"^scheduler\.grace_period_steps: 10000 exceeds budget\.max_steps"):
        plan_search(spec, train_examples=1000, eval_examples=300, costs=COSTS)


def test_the_plan_round_trips_and_reads_as_text() -> None:
    plan = plan_search(_spec({"time_budget_s": 330}), train_examples=1000, eval_examples=300, costs=COSTS)
    again = Plan.from_dict(plan.to_dict())
    assert again == plan
    text = "\n".join(describe_plan(plan.to_dict()))
    assert f"plan: {plan.configs} configs" in text
    assert f"to {plan.max_steps} steps" in text and f"to {plan.rungs[0]} steps" in text
    assert f"expected {plan.expected_trial_seconds:,.0f} trial-s for the planned configs" in text
    assert "0.50 s/step" in text
    assert "then more configs while the budget left after the running trials pays for a first rung" in text
    # a plan stored before `fill` existed reads back without it (its job keeps running as planned)
    old = {k: v for k, v in plan.to_dict().items() if k != "fill"}
    old_text = "\n".join(describe_plan(old))
    assert (
        not Plan.from_dict(old).fill and "more configs" not in old_text and "planned configs" not in old_text
    )


def test_asha_cuts_exactly_at_the_planned_rungs() -> None:

    plan = plan_search(_spec({"time_budget_s": 330}), train_examples=1000, eval_examples=300, costs=COSTS)
    sched = make_scheduler(_spec({"time_budget_s": 330}), plan)
    rungs = sorted(m for m, _ in sched._brackets[0]._rungs)
    assert [r for r in rungs if r < plan.max_steps] == plan.rungs


def _sampled(spec: Any, count: int) -> list[dict[str, Any]]:
    """The first ``count`` trials' flat params as a job's searcher gives them: the warm-start configs
    enqueued in a fresh study, then the sampler's."""
    from promptsweep.search import sample_params
    from promptsweep.search._space import to_optuna_params, warm_start_params

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for params in warm_start_params(spec):
        study.enqueue_trial(to_optuna_params(params))
    return [sample_params(study.ask(), spec.space) for _ in range(count)]


def test_the_first_warm_start_config_is_not_cut_at_the_first_rung_only() -> None:
    """MiniLM seed 0's first rung, the order swapped: the prefix-tuning default (first in the warm-start
    order) read 0.68 at 22 steps, the prompt-tuning default 0.7325; had the latter arrived first, Ray's
    ASHA alone would have stopped the former."""
    from ray.tune.schedulers import TrialScheduler

    spec = _spec({"time_budget_s": 330})
    plan = plan_search(spec, train_examples=1000, eval_examples=300, costs=COSTS)
    first, second, third = _sampled(spec, 3)
    assert (first["method"], second["method"]) == ("prefix_tuning", "prompt_tuning")

    def run(sched: Any, events: list[tuple[str, dict[str, Any], int, float]]) -> list[str]:
        trials, actions = {}, []
        for name, params, step, value in events:
            if name not in trials:
                trials[name] = SimpleNamespace(trial_id=name, config={"params": params, "trial_number": 0})
                sched.on_trial_add(None, trials[name])
            actions.append(sched.on_trial_result(None, trials[name], {"step": step, "accuracy": value}))
        return actions

    rung, next_rung = plan.rungs[0], plan.rungs[1]
    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    events = [
        ("prefix", first, rung // 2, 0.60),  # before the rung: not judged
        ("prompt", second, rung, 0.7325),  # first to arrive: goes on
        ("prefix", first, rung, 0.68),  # below the cut: spared
        # the spared value is recorded: 0.72 is above the cut of [0.68, 0.7325] (0.715), not of [0.7325]
        ("later", third, rung, 0.72),
        ("same-as-prefix", dict(first), rung, 0.68),  # the same config drawn again: not spared
        ("prompt", second, next_rung, 0.75),
        ("prefix", first, next_rung, 0.70),  # from the second rung on, judged like any other
    ]
    assert run(make_scheduler(spec, plan), events) == [go, go, go, go, stop, go, stop]

    # a warm-start config that leaves keys to the sampler is matched on the keys it gives
    partial = parse_spec(
        {
            **spec.to_dict(),
            "warm_start": False,
            "warm_start_configs": [{"method": "prefix_tuning", "learning_rate": 0.01}],
        }
    )
    given, other = _sampled(partial, 2)
    assert given["learning_rate"] == 0.01 and len(given) > 2
    events = [("other", other, rung, 0.7325), ("given", given, rung, 0.68)]
    assert run(make_scheduler(partial, plan), events) == [go, go]
    # a first result past the second rung is judged there (eval spacing coarser than the rungs)
    events = [("prompt", second, next_rung, 0.75), ("prefix", first, next_rung, 0.70)]
    assert run(make_scheduler(spec, plan), events) == [go, stop]
    # without warm-start configs nothing is spared
    bare = parse_spec({**spec.to_dict(), "warm_start": False, "warm_start_configs": []})
    a, b = _sampled(bare, 2)
    assert run(make_scheduler(bare, plan), [("a", a, rung, 0.75), ("b", b, rung, 0.68)]) == [go, stop]


def _ray_asha_counts(values: list[float], rungs: list[int], max_steps: int) -> list[int]:
    """Configs training each segment when ``values`` go one at a time through Ray's own ASHA bracket."""
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.schedulers.async_hyperband import _Bracket

    bracket = _Bracket(min_t=rungs[0], max_t=max_steps, reduction_factor=3, s=0, stop_last_trials=False)
    counts = [0] * (len(rungs) + 1)

    class _Trial:
        def __init__(self, i: int) -> None:
            self.trial_id = str(i)

    for i, value in enumerate(values):
        trial = _Trial(i)
        for k, step in enumerate([*rungs, max_steps]):
            counts[k] += 1
            if step == max_steps or bracket.on_result(trial, step, value) == TrialScheduler.STOP:
                break
    return counts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_asha_replay_decides_as_ray_tune_does(seed: int) -> None:
    import random

    rng = random.Random(seed)
    values = [rng.random() for _ in range(40)]
    rungs, max_steps = [10, 30, 90], 270
    segments = [10.0, 20.0, 60.0, 180.0]  # a step costs 1 s; no evaluation or set-up cost
    cost, counts = replay_asha(values, 1, segments, 0.0, 3.0)
    assert counts == _ray_asha_counts(values, rungs, max_steps)
    assert cost == sum(c * s for c, s in zip(counts, segments, strict=True))
    assert counts[-1] > 40 / 27  # Ray lets more through than ideal successive halving


def test_the_first_config_trains_to_the_end_and_many_approach_the_ideal_shares() -> None:
    cost, shares = simulate_asha(1, 2, [1.0, 2.0, 6.0], 0.5, 3.0)
    assert (cost, shares) == (9.5, [1.0, 1.0, 1.0])
    _, shares = simulate_asha(2000, 4, [1.0, 2.0, 6.0], 0.5, 3.0)
    assert shares[1] == pytest.approx(1 / 3, abs=0.03) and shares[2] == pytest.approx(1 / 9, abs=0.03)
    # with few configs far more go on than 1/3 per rung
    _, few = simulate_asha(6, 2, [1.0, 2.0, 6.0], 0.5, 3.0)
    assert few[2] > 0.25


def test_the_plan_fits_the_budget_as_asha_spends_it() -> None:
    # 1,800 trial-s on the benchmark's MiniLM timing
    costs = Costs(step_s=0.738, eval_example_s=0.041, setup_s=4.0, precision="bf16")
    spec = _spec({"compute_budget_s": 1800})
    plan = plan_search(spec, train_examples=3200, eval_examples=400, costs=costs)
    assert plan.rungs and plan.configs >= MIN_SCREENED_CONFIGS and plan.note is None
    assert plan.expected_trial_seconds <= 1800
    bounds = [0, *plan.rungs, plan.max_steps]
    evaluation = 400 * costs.eval_example_s
    segments = [(hi - lo) * costs.step_s + evaluation for lo, hi in itertools.pairwise(bounds)]
    more, _ = simulate_asha(plan.configs + 1, 2, segments, costs.setup_s, plan.reduction_factor)
    assert more > 1800  # one config more would not fit
    # the warm-up (6 % of max_steps would outlast the first rung) ends by half the first rung, so the
    # rung judges each config at its own learning rate
    assert int(plan.max_steps * spec.budget.warmup_ratio) > plan.rungs[0]
    assert train_budget(spec, plan).warmup_steps == plan.rungs[0] // 2


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_budget_too_small_to_screen_trains_one_config_per_slot_on_its_share(concurrency: int) -> None:
    # 900 trial-s on the benchmark's MiniLM timing: successive halving would fit 2 configs, the
    # second stopped at the first rung with nothing to take its slot (docs/quality.md)
    costs = Costs(step_s=0.738, eval_example_s=0.041, setup_s=4.0, precision="bf16")
    spec = _spec({"compute_budget_s": 900}, resources={"max_concurrent_trials": concurrency})
    plan = plan_search(spec, train_examples=3200, eval_examples=400, costs=costs)
    assert plan.configs == concurrency and plan.rungs == [] and plan.reaching == [concurrency]
    assert plan.planned == ["configs", "max_steps", "eval_every_steps"]
    # validations at half and three quarters of the steps and at the end, the clearly best state kept;
    # the whole budget spent, a share per slot
    assert plan.eval_every_steps == plan.max_steps and plan.eval_at_steps is None
    assert plan.eval_fractions == [0.5, 0.75]
    validations = 3 * 400 * costs.eval_example_s
    share = 900 / concurrency
    one = costs.setup_s + plan.max_steps * costs.step_s + validations
    assert share - costs.step_s < one <= share
    assert plan.expected_trial_seconds == pytest.approx(concurrency * one, abs=0.1)
    assert "no screening" in plan.note and "2 configs" in plan.note and not plan.fill
    # each trial re-sizes its steps to its share's training time (what is left after set-up and the
    # validations), which the trials' budget carries
    step_time = share - costs.setup_s - validations
    assert plan.step_time_s == pytest.approx(step_time, abs=0.1)
    assert plan.max_steps == math.floor(step_time / costs.step_s)
    assert train_budget(spec, plan).step_time_s == plan.step_time_s
    assert train_budget(spec, plan).warmup_steps is None  # no rung: the spec's warm-up ratio
    trials = train_budget(spec, plan)
    assert trials.eval_fractions == (0.5, 0.75) and trials.keep_best == spec.objective.metric == "accuracy"
    assert Plan.from_dict(plan.to_dict()) == plan
    # a plan stored before validations along the way existed keeps its trials as they were
    old = Plan.from_dict({k: v for k, v in plan.to_dict().items() if k != "eval_fractions"})
    assert train_budget(spec, old).eval_fractions is None and train_budget(spec, old).keep_best is None
    assert f"re-sizes its steps to {step_time:,.0f} s" in plan.note
    text = "\n".join(describe_plan(plan.to_dict()))
    assert (
        f"plan: {concurrency} config" in text
        and "validation at 50%, 75% of the steps and the end, keeping the clearly best state" in text
        and "no screening" in text
    )
    assert make_scheduler(spec, plan) is None
    # a budget that screens 3 or more configs keeps the rungs, and its trials their planned steps
    spec = _spec({"compute_budget_s": 1800}, resources={"max_concurrent_trials": concurrency})
    screening = plan_search(spec, train_examples=3200, eval_examples=400, costs=costs)
    assert screening.rungs and screening.step_time_s is None
    assert train_budget(spec, screening).step_time_s is None


def test_explicit_settings_keep_screening_in_a_small_budget() -> None:
    costs = Costs(step_s=0.738, eval_example_s=0.041, setup_s=4.0, precision="bf16")
    for budget, scheduler in (
        ({"compute_budget_s": 900, "max_steps": 300}, {"name": "asha"}),
        ({"compute_budget_s": 900, "eval_every_steps": 50}, {"name": "asha"}),
        ({"compute_budget_s": 900}, {"name": "asha", "grace_period_steps": 30}),
    ):
        plan = plan_search(
            _spec(budget, scheduler=scheduler), train_examples=3200, eval_examples=400, costs=costs
        )
        assert plan.rungs and plan.note is None, (budget, scheduler)


def test_a_share_too_small_for_one_rung_runs_fewer_configs_than_slots() -> None:
    costs = Costs(step_s=0.738, eval_example_s=0.041, setup_s=4.0, precision="bf16")
    spec = _spec({"compute_budget_s": 60}, resources={"max_concurrent_trials": 4})
    plan = plan_search(spec, train_examples=3200, eval_examples=400, costs=costs)
    assert plan.rungs == [] and 1 <= plan.configs < 4
    assert plan.max_steps >= MIN_RUNG_STEPS
    assert plan.expected_trial_seconds <= 60


def test_a_wall_clock_budget_too_small_to_screen_gives_each_slot_the_whole_wall() -> None:
    # the demo's shape: 300 s of wall, 2 at a time, fp32 steps of ~2 s: one config per slot, each
    # running from the start to the cap (less its start), not the 85 % a screening plan can use
    costs = Costs(step_s=2.0, eval_example_s=0.05, setup_s=8.0, precision="fp32")
    plan = plan_search(_spec({"time_budget_s": 300}), train_examples=1000, eval_examples=300, costs=costs)
    assert plan.configs == 2 and plan.rungs == [] and plan.note
    step_time = 300 * SLOT_WALL_UTILIZATION - 8.0 - 300 * 0.05
    assert plan.step_time_s == pytest.approx(step_time, abs=0.1)
    assert plan.max_steps == math.floor(step_time / 2.0)
    assert plan.compute_budget_s == pytest.approx(2 * 300 * SLOT_WALL_UTILIZATION)
    assert plan.expected_trial_seconds <= plan.compute_budget_s
    # a wall too short for one rung in each slot keeps both slots: fewer would not lengthen either
    short = plan_search(_spec({"time_budget_s": 40}), train_examples=1000, eval_examples=300, costs=costs)
    assert short.configs == 2 and short.max_steps == math.floor((40 * SLOT_WALL_UTILIZATION - 23.0) / 2.0)
