"""Planning a search from its budget: how many configs, how long the longest trial, where the rungs are.

A job may say only how much compute it may spend (``budget.compute_budget_s`` in trial-seconds, or
``budget.time_budget_s`` of wall clock, which at ``max_concurrent_trials`` trials at a time is worth
about that many trial-seconds each). :func:`plan_search` turns it into a successive-halving plan over
Ray Tune's ASHA:

- the longest trial (``max_steps``) trains :data:`TARGET_EPOCHS` epochs, or less when one such trial
  would take more than :data:`LONGEST_TRIAL_SHARE` (60 %) of the budget;
- rungs at ``max_steps / reduction_factor**k`` steps, down to no fewer than :data:`MIN_RUNG_STEPS`;
  a trial that passes a rung keeps training in the same process (ASHA only stops trials), with the
  learning-rate schedule of the whole ``max_steps``: survivors never restart;
- as many configs as the budget pays for, at their expected cost under Ray Tune's ASHA as it really
  decides (:func:`simulate_asha`: the first trial to reach a rung always goes on, so with few configs
  many more than ``1 / reduction_factor**k`` of them reach rung ``k``; the ideal count planned 11
  configs for 900 trial-s where 4 ran and the wall cap ended the job), their evaluations and set-up;
  then, past them, more while the budget left pays for a first rung (``Plan.fill``,
  :mod:`promptsweep.search._fill`: fewer configs go on than the replay expects);
- when that buys fewer than :data:`MIN_SCREENED_CONFIGS` configs, no screening at all: each of the
  trials at a time trains one config (warm-start order) on its equal share of the budget (a stopped
  trial's slot would only idle, and the first config would lose the steps the screening took); each
  such trial re-sizes its steps to its share from its own step time, validates at
  :data:`KEEP_BEST_FRACTIONS` of them and at its end, and ends in an earlier validated state where that
  one validated clearly better than its last (``TrainBudget.keep_best``).

The costs come from :class:`Costs`, timed on this job's model and data before any trial
(``promptsweep.methods.measure_costs``). Whatever the spec gives explicitly (``num_trials``,
``max_steps`` / ``max_epochs``, ``eval_every_steps``, ``scheduler.grace_period_steps`` /
``reduction_factor``) is kept, and the rest is planned around it. The plan is stored with the job
(its summary's ``plan``) and printed by ``promptsweep run`` and ``show`` before trials start.

Every constant here was chosen from a measurement on this project's machines (docs/quality.md).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from promptsweep.exceptions import SpecError
from promptsweep.search._asha import simulate_asha
from promptsweep.search._spec import JobSpec

#: Epochs the longest trial trains when the spec does not say: one hand-picked config (prefix tuning,
#: lr 1e-2) reached 0.828 test accuracy after 3 epochs of 1,000 reviews, 0.77 after one.
TARGET_EPOCHS = 3.0
#: The fewest steps at which a rung judges a config: after 20 steps of 16 reviews a config whose
#: learning rate moves the frozen model has left the majority class (benchmarks/bench_lr.py).
MIN_RUNG_STEPS = 20
#: At most this share of the budget goes to one trial trained to ``max_steps``; the rest screens other
#: configs. Measured (docs/quality.md, bench_quality.py at 900 trial-s on MiniLM, seed 0): with a third,
#: the search's survivors trained 177 steps and its winner scored 0.812 on the test split, while the
#: hand config (the first paper default) trained on the whole budget, 675 steps, scored 0.848: long
#: training of a good config is worth more than screening many. ASHA trains the first warm-start config
#: (the most reliable default) to the end anyway.
LONGEST_TRIAL_SHARE = 0.6
#: The fewest configs worth screening. When the budget, with the longest trial at its share, buys
#: fewer, the plan screens nothing: each of the trials at a time trains one config (the warm-start
#: order: the most reliable paper default first) on its equal share of the budget, validated at its
#: end (and at :data:`KEEP_BEST_FRACTIONS`). Measured at 900 trial-s (docs/quality.md): SmolLM2, 1
#: trial at a time, 2 configs planned: the first default trained 306 steps and scored 0.790, the
#: second was stopped at the first rung and 160 trial-s went unspent, while the same default on the
#: whole budget (632 steps) scored 0.818; MiniLM, 2 at a time, 2 configs planned: the second slot
#: idled after the first rung and 300-370 of the 900 trial-s went unspent. A stopped trial only pays
#: when something waits for its slot.
MIN_SCREENED_CONFIGS = 3
#: Cut rungs at most (ASHA's brackets; more rungs screen more configs for fewer steps each).
MAX_RUNGS = 3
#: Reduction factor when the spec gives none (keep the best third at each rung; Li et al. 2020).
DEFAULT_REDUCTION_FACTOR = 3.0
#: Share of a wall-clock budget that trials can use (Ray start, trial set-up, tails of the last trials).
WALL_UTILIZATION = 0.85
#: The same for a plan without screening, whose slots each run one config from the start to the cap:
#: only the trial's start after the cap is set is lost (6-8 s in the demo, docs/quality.md); its set-up
#: and validation are priced in. With 0.85 the demo's two re-sized trials ended 44 s before its 300 s.
SLOT_WALL_UTILIZATION = 0.95
#: A plan without screening also validates each trial at these fractions of its steps, and the trial
#: ends in the best of those states where it validated clearly better than the last (beyond twice the
#: standard error of the difference). Its one config is the whole search: validated once, at its end,
#: the SmolLM2 trial ended at about the majority class in 2 of 6 fp32 searches at 900 trial-s
#: (validation 0.655 and 0.665 against a majority of 0.650), while the same trials retrained outside
#: the search never fell (0.67-0.84 from half their steps on); the verbalizer's validation accuracy
#: swings by up to 0.1 between validations (docs/quality.md). Each costs one validation: ~20 s of
#: SmolLM2's 900 trial-s.
KEEP_BEST_FRACTIONS = (0.5, 0.75)
#: ... but only where those validations cost at most this share of a trial's share of the budget
#: (a budget of a minute would otherwise spend most of it validating).
KEEP_BEST_MAX_SHARE = 0.1


@dataclass(frozen=True)
class Costs:
    """What one trial costs on this pool, timed before the search (one trial's CPU/GPU share).

    Attributes:
        step_s: seconds per training step (one batch, forward + backward + optimizer).
        eval_example_s: seconds per validation example evaluated.
        setup_s: seconds to build a trial's model before its first step.
        precision: the precision the steps ran in (``fp32`` / ``bf16``).
        config: the trial params that were timed.
    """

    step_s: float
    eval_example_s: float
    setup_s: float
    precision: str = "fp32"
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A job's search plan (stored as its summary's ``plan``; see :func:`plan_search`).

    Attributes:
        configs: trials to run (``None``: as many as the wall-clock budget allows).
        max_steps: steps of a trial that is never stopped.
        epochs: ``max_steps`` in epochs of the training split.
        rungs: steps at which ASHA stops the weaker configs (ascending; empty: no cut).
        reduction_factor: keep ``1 / reduction_factor`` of the configs at each rung.
        eval_every_steps: validation every N steps (a rung is judged on the first evaluation at or
            after it), unless ``eval_at_steps``.
        eval_at_steps: validation only at these steps and at the end (the rungs, when the spacing is
            planned: a rung is all a screening evaluation is for).
        eval_examples: validation examples per evaluation.
        reaching: expected configs reaching each rung, then ``max_steps`` (one more entry than rungs).
        expected_trial_seconds: what the planned trials are expected to cost in all.
        compute_budget_s: the trial-seconds planned for (``None``: no compute budget).
        time_budget_s: the wall-clock cap (``None``: none).
        concurrency: trials at a time.
        planned: the settings planned here (the rest came from the spec).
        costs: the timing the plan is based on (``None``: nothing was timed).
        note: why the plan departs from successive halving (e.g. too few configs fit to screen any).
        step_time_s: seconds of training steps each trial may spend (a plan without screening): a
            trial re-sizes its steps to fit them from the time its own steps take
            (``TrainBudget.step_time_s``), so ``max_steps`` is where it starts, not where it ends.
        fill: after the planned configs, more start while the compute budget left pays for their
            first rung (a screening plan whose configs were planned here; ``promptsweep.search._fill``).
        eval_fractions: each trial also validates at these fractions of its steps and ends in the best
            validated state (a plan without screening: :data:`KEEP_BEST_FRACTIONS`; ``None``: not).
    """

    configs: int | None
    max_steps: int
    epochs: float
    rungs: list[int]
    reduction_factor: float
    eval_every_steps: int
    reaching: list[float]
    expected_trial_seconds: float | None
    compute_budget_s: float | None
    time_budget_s: float | None
    concurrency: int
    planned: list[str]
    costs: Costs | None = None
    eval_at_steps: list[int] | None = None
    eval_examples: int | None = None
    note: str | None = None
    step_time_s: float | None = None
    fill: bool = False
    eval_fractions: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored with the job; :meth:`from_dict` reloads it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """The plan stored by :meth:`to_dict`."""
        costs = data.get("costs")
        return cls(**{**data, "costs": Costs(**costs) if costs else None})


def describe_plan(plan: dict[str, Any]) -> list[str]:
    """Human-readable lines for a stored plan (``promptsweep run`` / ``show``)."""
    rungs = plan.get("rungs") or []
    reaching = plan.get("reaching") or []
    configs = plan.get("configs")
    steps = [*rungs, plan["max_steps"]]
    stages = ", ".join(
        f"{_count(n)} to {s} steps" for n, s in zip(reaching or [None] * len(steps), steps, strict=False)
    )
    if plan.get("eval_at_steps"):
        evaluation = "validation at each rung and the end"
    elif plan.get("eval_fractions"):
        at = ", ".join(f"{f:.0%}" for f in plan["eval_fractions"])
        evaluation = f"validation at {at} of the steps and the end, keeping the clearly best state"
    elif plan["eval_every_steps"] >= plan["max_steps"]:
        evaluation = "validation at the end"
    else:
        evaluation = f"validation every {plan['eval_every_steps']} steps"
    lines = [
        f"plan: {'as many configs as time allows' if configs is None else _plural(configs, 'config')}; "
        f"{stages} ({plan['epochs']:.1f} epochs at most), "
        + evaluation
        + (f", keep 1/{plan['reduction_factor']:g} at each rung" if rungs else "")
    ]
    budget = []
    if plan.get("compute_budget_s"):
        budget.append(f"budget {plan['compute_budget_s']:,.0f} trial-s")
    if plan.get("expected_trial_seconds"):
        budget.append(
            f"expected {plan['expected_trial_seconds']:,.0f} trial-s"
            + (" for the planned configs" if plan.get("fill") else "")
        )
    if plan.get("time_budget_s"):
        budget.append(f"wall cap {plan['time_budget_s']:,.0f} s")
    budget.append(f"{plan['concurrency']} at a time")
    costs = plan.get("costs")
    if costs:
        budget.append(
            f"timed {costs['step_s']:.2f} s/step, {costs['eval_example_s'] * 1000:.1f} ms per validation "
            f"example, {costs['setup_s']:.1f} s set-up ({costs['precision']})"
        )
    lines.append("      " + "; ".join(budget))
    if plan.get("planned"):
        lines.append(f"      planned from the budget: {', '.join(plan['planned'])}")
    if plan.get("fill"):
        lines.append(
            "      then more configs while the budget left after the running trials pays for a first rung"
        )
    if plan.get("note"):
        lines.append(f"      {plan['note']}")
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _count(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n:.0f}" if n >= 10 or n == int(n) else f"{n:.1f}"


def compute_budget(spec: JobSpec) -> float | None:
    """The trial-seconds a job may spend: ``compute_budget_s``, else ``time_budget_s`` times the
    trials at a time (times :data:`WALL_UTILIZATION`), else ``None``."""
    b = spec.budget
    if b.compute_budget_s is not None:
        return float(b.compute_budget_s)
    if b.time_budget_s is not None:
        return float(b.time_budget_s) * spec.resources.max_concurrent_trials * WALL_UTILIZATION
    return None


def _rungs(spec: JobSpec, max_steps: int, eta: float) -> tuple[list[int], bool]:
    """ASHA's cut rungs below ``max_steps`` and whether they were planned here."""
    s = spec.scheduler
    if s.name != "asha":
        return [], False
    if s.grace_period_steps is not None:
        rungs, r = [], float(s.grace_period_steps)
        while round(r) < max_steps and len(rungs) < 32:
            rungs.append(round(r))
            r *= eta
        return rungs, False
    k = 0
    while k < MAX_RUNGS and max_steps / eta ** (k + 1) >= MIN_RUNG_STEPS:
        k += 1
    grace = max_steps / eta**k
    return [round(grace * eta**i) for i in range(k)], True


def _steps_cost(lo: int, hi: int, eval_every: int, eval_s: float, step_s: float) -> float:
    """Seconds of training steps ``lo+1 .. hi`` with a validation every ``eval_every`` steps and one
    at ``hi`` (a rung is judged, or the trial ends, there)."""
    evals = hi // eval_every - lo // eval_every + (1 if hi % eval_every else 0)
    return (hi - lo) * step_s + evals * eval_s


def plan_search(spec: JobSpec, *, train_examples: int, eval_examples: int, costs: Costs | None) -> Plan:
    """Plan a job's successive-halving search from its budget (see the module docstring).

    Args:
        spec: the job spec; its explicit settings are kept.
        train_examples: examples in the training split.
        eval_examples: examples in the validation split (what each evaluation scores).
        costs: the timed costs of a trial (``None``: nothing timed; then only explicit settings and
            the epoch target are used).

    Raises:
        SpecError: the budget cannot pay for one evaluation of one config, or the training split is
            smaller than a batch (names the field and the numbers).
    """
    b = spec.budget
    if train_examples < b.batch_size:
        raise SpecError(
            f"budget.batch_size: {b.batch_size} exceeds the {train_examples} training examples; "
            "lower batch_size or give more data"
        )
    planned: list[str] = []
    eta = spec.scheduler.reduction_factor or DEFAULT_REDUCTION_FACTOR
    per_epoch = math.ceil(train_examples / b.batch_size)
    compute = compute_budget(spec)
    eval_s = eval_examples * costs.eval_example_s if costs else 0.0
    step_s = costs.step_s if costs else 0.0

    def layout(max_steps: int) -> tuple[list[int], int, list[float], list[float]]:
        """Rungs, evaluation spacing, share of configs reaching each segment, each segment's cost."""
        rungs, _ = _rungs(spec, max_steps, eta)
        every = b.eval_every_steps or (rungs[0] if rungs else min(max_steps, MIN_RUNG_STEPS))
        at_rungs = b.eval_every_steps is None and bool(rungs)
        bounds = [0, *rungs, max_steps]
        reaching = [eta**-k for k in range(len(bounds) - 1)]
        segments = [
            (hi - lo) * step_s + eval_s if at_rungs else _steps_cost(lo, hi, every, eval_s, step_s)
            for lo, hi in itertools.pairwise(bounds)
        ]
        return rungs, every, reaching, segments

    setup_s = costs.setup_s if costs else 0.0

    if b.max_steps is not None or b.max_epochs is not None:
        by_epochs = math.ceil(b.max_epochs * per_epoch) if b.max_epochs else None
        max_steps = max(1, min(s for s in (b.max_steps, by_epochs) if s))
    else:
        planned.append("max_steps")
        max_steps = max(MIN_RUNG_STEPS, math.ceil(TARGET_EPOCHS * per_epoch))
        if compute is not None and costs is not None:
            # Shrink until one trial trained to the end fits its share of the budget.
            while max_steps > MIN_RUNG_STEPS:
                if setup_s + sum(layout(max_steps)[3]) <= LONGEST_TRIAL_SHARE * compute:
                    break
                max_steps = max(MIN_RUNG_STEPS, math.floor(max_steps * 0.95))
        # Rungs that land on whole evaluation steps: max_steps = grace * eta**k.
        rungs, _ = _rungs(spec, max_steps, eta)
        if rungs and float(eta).is_integer() and spec.scheduler.grace_period_steps is None:
            max_steps = rungs[0] * int(eta) ** len(rungs)
    grace = spec.scheduler.grace_period_steps
    if grace is not None and grace > max_steps:
        raise SpecError(
            f"scheduler.grace_period_steps: {grace} exceeds budget.max_steps ({max_steps}"
            f"{', planned' if 'max_steps' in planned else ''}); lower it or leave it out to plan the rungs"
        )
    rungs, rungs_planned = _rungs(spec, max_steps, eta)
    if rungs_planned:
        planned.append("rungs")
    if b.eval_every_steps is None:
        planned.append("eval_every_steps")
    rungs, every, reaching, segments = layout(max_steps)
    concurrency = spec.resources.max_concurrent_trials

    def expected_cost(n: int) -> tuple[float, list[float]]:
        """Trial-seconds of ``n`` configs and the share of them reaching each segment."""
        if not rungs:
            return n * (setup_s + sum(segments)), [1.0]
        return simulate_asha(n, concurrency, segments, setup_s, eta)

    eval_at_steps = rungs if b.eval_every_steps is None and rungs else None

    configs = b.num_trials
    expected = None
    if costs is not None and compute is not None:
        first_eval = rungs[0] if eval_at_steps else min(every, max_steps)
        first = setup_s + first_eval * step_s + eval_s
        if first > compute:
            field_name = "compute_budget_s" if b.compute_budget_s is not None else "time_budget_s"
            raise SpecError(
                f"budget.{field_name}: {compute:,.0f} trial-seconds cannot finish one evaluation of one "
                f"config (set-up {costs.setup_s:.1f} s + {first_eval} steps x "
                f"{step_s:.2f} s + {eval_examples} validation examples = {first:,.0f} s); raise the budget"
            )
        if configs is None:
            planned.insert(0, "configs")
            configs = _most_configs(compute, expected_cost, setup_s + segments[0])
            screenable = "max_steps" in planned and rungs_planned and b.eval_every_steps is None
            if configs < MIN_SCREENED_CONFIGS and screenable:
                return _plan_without_screening(
                    spec, costs, compute, eval_examples=eval_examples, per_epoch=per_epoch, screened=configs
                )
    if configs is not None and costs is not None:
        expected, reaching = expected_cost(configs)
    elif configs is not None and rungs:
        reaching = simulate_asha(configs, concurrency, [1.0] * len(segments), 0.0, eta)[1]
    counts = [configs * f if configs is not None else f for f in reaching] if reaching else []
    return Plan(
        configs=configs,
        max_steps=max_steps,
        epochs=round(max_steps / per_epoch, 2),
        rungs=rungs,
        reduction_factor=eta,
        eval_every_steps=every,
        eval_at_steps=eval_at_steps,
        eval_examples=eval_examples,
        reaching=[round(c, 2) for c in counts],
        expected_trial_seconds=round(expected, 1) if expected is not None else None,
        compute_budget_s=round(compute, 1) if compute is not None else None,
        time_budget_s=b.time_budget_s,
        concurrency=spec.resources.max_concurrent_trials,
        planned=planned,
        costs=costs,
        fill="configs" in planned and bool(eval_at_steps) and costs is not None and compute is not None,
    )


def _plan_without_screening(
    spec: JobSpec, costs: Costs, compute: float, *, eval_examples: int, per_epoch: int, screened: int
) -> Plan:
    """The plan when successive halving would screen fewer than :data:`MIN_SCREENED_CONFIGS`
    configs: each of the trials at a time trains one config on an equal share of the budget (set-up,
    steps, validations at :data:`KEEP_BEST_FRACTIONS` of the steps where they cost at most
    :data:`KEEP_BEST_MAX_SHARE` of the share, and at the end; the trial keeps its clearly best
    validated state), with no rungs; a wall-clock budget alone gives each slot
    :data:`SLOT_WALL_UTILIZATION` of it. Fewer configs than trials at a time when a share of a compute
    budget could not train :data:`MIN_RUNG_STEPS` steps."""
    b = spec.budget
    if b.compute_budget_s is None and b.time_budget_s is not None:
        # a slot runs one config for the whole wall-clock budget, re-sized to it as it trains
        compute = b.time_budget_s * spec.resources.max_concurrent_trials * SLOT_WALL_UTILIZATION

    def share(configs: int) -> float:  # one slot's trial-seconds; no more than the wall-clock cap
        wall = b.time_budget_s * SLOT_WALL_UTILIZATION if b.time_budget_s is not None else math.inf
        return min(compute / configs, wall)

    one_eval_s = eval_examples * costs.eval_example_s
    fractions = list(KEEP_BEST_FRACTIONS)  # priced against the smallest share (every slot busy)
    if len(fractions) * one_eval_s > KEEP_BEST_MAX_SHARE * share(spec.resources.max_concurrent_trials):
        fractions = []
    eval_s = one_eval_s * (1 + len(fractions))

    def step_time(configs: int) -> float:  # one slot's seconds of training steps
        return share(configs) - costs.setup_s - eval_s

    def steps(configs: int) -> int:
        return math.floor(step_time(configs) / costs.step_s)

    configs = spec.resources.max_concurrent_trials
    while configs > 1 and steps(configs) < MIN_RUNG_STEPS and steps(configs - 1) > steps(configs):
        configs -= 1
    max_steps = max(1, steps(configs))
    seconds = step_time(configs)
    expected = configs * (costs.setup_s + max_steps * costs.step_s + eval_s)
    return Plan(
        configs=configs,
        max_steps=max_steps,
        epochs=round(max_steps / per_epoch, 2),
        rungs=[],
        reduction_factor=spec.scheduler.reduction_factor or DEFAULT_REDUCTION_FACTOR,
        eval_every_steps=max_steps,
        eval_examples=eval_examples,
        reaching=[float(configs)],
        expected_trial_seconds=round(expected, 1),
        compute_budget_s=round(compute, 1),
        time_budget_s=spec.budget.time_budget_s,
        concurrency=spec.resources.max_concurrent_trials,
        planned=["configs", "max_steps", "eval_every_steps"],
        costs=costs,
        step_time_s=round(seconds, 1) if seconds > 0 else None,
        eval_fractions=fractions or None,
        note=(
            f"no screening: successive halving would fit only {_plural(screened, 'config')} in this "
            "budget, so "
            + (
                "one config trains on the whole budget"
                if configs == 1
                else f"each of the {configs} trials at a time trains one config on its share of the budget"
            )
            + f" (fewer than {MIN_SCREENED_CONFIGS} configs are not worth screening); each trial "
            f"re-sizes its steps to {seconds:,.0f} s of training from the time its own steps take"
        ),
    )


def _most_configs(compute: float, cost: Any, least_per_config: float) -> int:
    """The most configs whose expected cost (``cost(n)[0]``, rising with ``n``) fits ``compute``
    (at least one): a binary search up to what the first rung alone would allow."""
    lo, hi = 1, max(1, math.floor(compute / least_per_config))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid)[0] <= compute:
            lo = mid
        else:
            hi = mid - 1
    return lo


def screening_warmup(plan: Plan, warmup_ratio: float) -> int | None:
    """Warm-up steps of a plan's trials when it screens: ``warmup_ratio`` of ``max_steps``, ended by
    half the first rung, so the rung judges each config at its own learning rate rather than at a
    fraction of it (``None`` without rungs: the ratio's)."""
    if not plan.rungs:
        return None
    return min(int(plan.max_steps * warmup_ratio), plan.rungs[0] // 2)


def train_budget(spec: JobSpec, plan: Plan | None = None) -> Any:
    """The methods layer's ``TrainBudget`` of the job's trials (steps and evaluations as planned)."""
    from promptsweep.methods import TrainBudget

    b = spec.budget
    if plan is not None:
        max_steps, max_epochs = plan.max_steps, None
    else:  # unplanned (e.g. for timing): the spec's own, or one rung
        max_steps, max_epochs = b.max_steps, b.max_epochs
        if max_steps is None and max_epochs is None:
            max_steps = MIN_RUNG_STEPS
    return TrainBudget(
        max_steps=max_steps,
        max_epochs=max_epochs,
        warmup_steps=screening_warmup(plan, b.warmup_ratio) if plan else None,
        eval_every_steps=plan.eval_every_steps if plan else (b.eval_every_steps or 50),
        eval_at_steps=tuple(plan.eval_at_steps) if plan and plan.eval_at_steps else None,
        step_time_s=plan.step_time_s if plan else None,
        eval_fractions=tuple(plan.eval_fractions) if plan and plan.eval_fractions else None,
        keep_best=spec.objective.metric if plan and plan.eval_fractions else None,
        batch_size=b.batch_size,
        eval_batch_size=b.eval_batch_size,
        warmup_ratio=b.warmup_ratio,
        weight_decay=b.weight_decay,
        max_grad_norm=b.max_grad_norm,
        precision=spec.precision,
    )


def deadline_grace(plan: Plan) -> float:
    """Seconds after a job's wall-clock cap before Ray Tune's own time budget kills what still runs:
    a running trial ends at its next step with one validation and a save (``TrainBudget.deadline``),
    so three times that, plus 30 s, at least 60 s."""
    costs = plan.costs
    if costs is None:
        return 60.0
    per_trial = costs.step_s + costs.eval_example_s * (plan.eval_examples or 2000) + costs.setup_s
    return max(60.0, 3 * per_trial + 30.0)


def needs_timing(spec: JobSpec) -> bool:
    """Whether planning ``spec`` needs the trial costs timed (the configs or the steps are planned)."""
    b = spec.budget
    return b.num_trials is None or (b.max_steps is None and b.max_epochs is None)


def time_costs(spec: JobSpec, inputs: Any) -> Costs:
    """Time one config of the job on its model and data, in this process, with one trial's threads.

    The config is the first warm-start config (the job's most reliable paper default).
    """
    import torch

    from promptsweep.methods import measure_costs
    from promptsweep.search._space import paper_default_params, warm_start_order

    params = paper_default_params(warm_start_order(spec)[0], spec)
    threads = torch.get_num_threads()
    r = spec.resources
    torch.set_num_threads(r.torch_threads or max(1, int(r.cpus_per_trial)))
    try:
        timed = measure_costs(inputs, params, budget=train_budget(spec), seed=spec.seed)
    finally:
        torch.set_num_threads(threads)
    return Costs(
        step_s=round(float(timed["step_s"]), 4),
        eval_example_s=round(float(timed["eval_example_s"]), 5),
        setup_s=round(float(timed["setup_s"]), 2),
        precision=str(timed["precision"]),
        config=params,
    )


def job_plan(spec: JobSpec, storage: Any, job: Any, inputs: Any) -> Plan:
    """The job's plan: the one stored with it (a resumed job keeps its plan), else made now
    (timing the costs when something is planned) and stored in the job's summary."""
    stored = (getattr(job, "summary", None) or {}).get("plan")
    if stored:
        return Plan.from_dict(stored)
    costs = time_costs(spec, inputs) if needs_timing(spec) else None
    plan = plan_search(
        spec,
        train_examples=int(inputs.counts.get("train", 0)),
        eval_examples=int(inputs.counts.get("validation", 0)),
        costs=costs,
    )
    storage.update_job_summary(int(job.id), plan=plan.to_dict())
    return plan
