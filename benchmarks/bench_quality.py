"""Quality benchmark: does the search pay for itself?

For each model (``minilm``: the frozen all-MiniLM-L6-v2 with a mean-pooling classification head,
``benchmarks/specs/minilm.yaml``; ``smollm2``: the frozen SmolLM2-135M-Instruct with a verbalizer,
``benchmarks/specs/smollm2.yaml``) and each seed, every arm gets the same budget, ``--cpu-budget``
trial-seconds (the sum of the trials' running times, whatever the concurrency: the spec's
``budget.compute_budget_s``), and the same seed (which also re-draws the validation carve). Arms run
one after another, each a normal job (``promptsweep.search.submit`` + ``run_job``, its own SQLite
database under ``--out``, its own embedded Ray):

- **search**: the spec as shipped: ``compute_budget_s = cpu_budget`` and a wall cap
  ``time_budget_s = cpu_budget / max_concurrent_trials * 1.15``; promptsweep times a step and plans
  the configs, the ASHA rungs, the survivors' steps (the job summary's ``plan``); TPE, the paper
  defaults enqueued first; the finalists re-scored on the whole validation split.
- **random**: the same job with ``sampler: random``, given the search arm's plan of the same seed (stored
  with the job before it runs, as a resumed job keeps its plan: the same configs, rungs and steps, and
  the same filling of the budget past the planned configs), so that only the sampler differs.
- **defaults**: the paper defaults sharing the budget: ``warm_start: true``, ``num_trials`` = the number
  of warm-start configs (one per method), the same budget, wall cap and plan (ASHA on), best picked on
  validation: what a careful user does without promptsweep. Where the search arm's plan does not
  screen (one config per slot, no rungs; SmolLM2 at 900 trial-s), the planner plans steps and rungs
  for those configs instead.
- **best_default**: one trial of the first warm-start config (the most reliable paper default,
  ``promptsweep.search._space.warm_start_order``), ``num_trials: 1``, ``scheduler: none``, trained for
  as many steps as the whole budget pays for. Skipped where that config is the hand config (it is for
  both specs: MiniLM's first default is prefix tuning without projection at lr 1e-2, SmolLM2's is
  prompt tuning with the spec's init text at the causal-LM default lr 1e-2, both 20 virtual tokens).
- **hand**: the hand config, enqueued with ``warm_start: false`` + ``warm_start_configs: [config]``,
  ``num_trials: 1``, ``scheduler: none``, trained as long as the budget pays for. MiniLM: prefix
  tuning, no projection, lr 1e-2, mean pooling; SmolLM2: prompt tuning, text init (the spec's
  ``prompt_init_text``), lr 1e-2; 20 virtual tokens. The config is fitted into the spec's space (a
  value outside a range is clipped to it), so it must lie inside the ranges to mean what it says.
- floors, one cheap run per seed (``promptsweep.methods.score_floors`` on the test split): **majority**
  (always the training majority class), **head_only** (MiniLM: the trials' head trained alone on the
  frozen encoder's features) and **zero_shot** (SmolLM2: the frozen LM's label-word scores).

**Sizing a single trial** (best_default, hand). A trial that a wall cap cuts is recorded stopped early
(pruned) without an adapter, so these arms get no wall cap; their ``max_steps`` is sized from the
timed costs (``costs.step_s``, ``eval_example_s``, ``setup_s``) in the search arm's plan of the same
model and seed (timed here with the same function when the search arm did not run):
``max_steps = (cpu_budget - setup_s - validation examples * eval_example_s) / step_s``, one validation
at the end, the spec's ``cpus_per_trial`` (so the trial spends the budget's trial-seconds, on fewer
cores than a search running ``max_concurrent_trials`` trials at a time, hence a longer wall time).

**What the table shows.** Every job ranks its trials on the validation subsample
(``dataset.max_eval_examples``) and evaluates only the selected trial on the test split; the benchmark
then scores that selected adapter on the whole 1,000-review test split
(``promptsweep.demo.full_test_metrics``, plain ``PeftModel.from_pretrained``). The floors are scored
on the same whole test split. Columns: ``best val (subsample)``, the selected trial's ranked
validation value (floors: the search job's own floors on the same subsample); ``test acc (1,000)``;
``test macro-F1``; ``trials c/p/f`` (complete / pruned or stopped / failed, per seed); ``trial-s used``
(the sum of the trials' wall durations, set-up, steps and evaluations; a floor's seconds on one
trial's threads); ``wall s`` (the ``run_job`` call, Ray start, timing, floors and selection
included; the benchmark's own whole-test scoring is not). Mean over seeds with (min-max).

Under the table, a verdict per model: the search's mean test accuracy minus each other arm's, each
arm's seed spread (max - min), whether the search is ahead of random and of defaults by more than the
larger of the two spreads, and whether it is within 0.005 of the hand config.

``--json FILE`` keeps every run's numbers (plans, finalists, selected params, errors), ``--markdown
FILE`` the table and verdicts; both are rewritten after every arm. Nothing here asserts a target.

Usage:

    .venv/bin/python benchmarks/bench_quality.py --models minilm smollm2 --cpu-budget 900 \\
        --seeds 0 1 2 --out /tmp/bq --json /tmp/bq/results.json --markdown /tmp/bq/table.md --quiet

``--precision fp32`` (or ``bf16``) overrides the specs' ``precision: auto`` for every arm: on a bf16
CPU, runs with and without it compare the two precisions at the same trial-second budget.

A run cut short (or run in parts) goes on with ``--resume /tmp/bq/results.json`` (and a new
``--json``): its succeeded runs are kept and the rest run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPECS = {
    "minilm": ROOT / "benchmarks" / "specs" / "minilm.yaml",
    "smollm2": ROOT / "benchmarks" / "specs" / "smollm2.yaml",
}
JOB_ARMS = ("search", "random", "defaults")
SINGLE_ARMS = ("best_default", "hand")
FLOOR_ARMS = ("majority", "head_only", "zero_shot")
ARMS = JOB_ARMS + SINGLE_ARMS + FLOOR_ARMS
#: The hand config per model (flat trial params; 20 virtual tokens).
HAND = {
    "minilm": {
        "method": "prefix_tuning",
        "num_virtual_tokens": 20,
        "learning_rate": 1e-2,
        "prefix_projection": False,
        "pooling": "mean",
    },
    # the init text is the spec's space.prompt_tuning.prompt_init_text (a fixed value of the space)
    "smollm2": {  # lr 1e-2, not PEFT's 3e-2: docs/quality.md, "Learning rates on a causal LM"
        "method": "prompt_tuning",
        "num_virtual_tokens": 20,
        "learning_rate": 1e-2,
        "prompt_init": "text",
    },
}
#: The wall cap of a searching arm: the wall time its trial-seconds need at the spec's concurrency,
#: plus 15% (Ray start, timing, set-up, the tails of the last trials).
WALL_FACTOR = 1.15
#: "within this of hand" in the verdict (test accuracy).
HAND_TOLERANCE = 0.005


# ------------------------------------------------------------------------------------------------
# specs


def _base(model: str, arm: str, seed: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The benchmark spec of ``model`` as a dict, with this arm's name, seed, output dir and budget."""
    from promptsweep.search import load_spec

    data = load_spec(SPECS[model]).to_dict()
    res = data["resources"]
    res["num_cpus"] = max(1, math.ceil(float(res["cpus_per_trial"]) * int(res["max_concurrent_trials"])))
    data.update(name=f"quality-{model}-{arm}-{seed}", seed=seed, output_dir=str(root / "runs"))
    if args.precision:
        data["precision"] = args.precision
    data["budget"].update(
        compute_budget_s=float(args.cpu_budget),
        time_budget_s=round(args.cpu_budget / int(res["max_concurrent_trials"]) * WALL_FACTOR, 1),
    )
    return data


def _pin(data: dict[str, Any], plan: dict[str, Any] | None, *, configs: int) -> None:
    """Give ``data`` ``configs`` trials and the search arm's steps and rungs explicitly (so the planner
    keeps them and times nothing). A search plan without rungs (no screening: one config per slot on
    its share) is not pinned: its steps are one config's share, so the planner plans ``configs``."""
    data["budget"]["num_trials"] = configs
    if not plan or not plan.get("rungs"):
        return
    data["budget"].update(
        num_trials=configs,
        max_steps=int(plan["max_steps"]),
        eval_every_steps=int(plan["eval_every_steps"]),
    )
    if plan.get("rungs"):
        data["scheduler"].update(
            grace_period_steps=int(plan["rungs"][0]), reduction_factor=plan["reduction_factor"]
        )


def _job_spec(model: str, arm: str, seed: int, args: argparse.Namespace, root: Path, ctx: dict) -> Any:
    """The job spec of a searching arm (search, random, defaults)."""
    from promptsweep.search import parse_spec, warm_start_params

    data = _base(model, arm, seed, args, root)
    if arm != "search":
        data["floors"] = False  # scored once per seed by the search job (validation) and here (test)
    if arm == "random":  # the search arm's plan is stored with the job (_run_job)
        data["sampler"] = {"name": "random"}
    elif arm == "defaults":
        data["warm_start"] = True
        data["warm_start_configs"] = []
        _pin(data, ctx.get("plan"), configs=len(warm_start_params(parse_spec(data))))
    return parse_spec(data)


def _first_default(model: str) -> dict[str, Any]:
    from promptsweep.search import load_spec, warm_start_params

    return warm_start_params(load_spec(SPECS[model]))[0]


def _hand_fitted(model: str) -> dict[str, Any]:
    """The hand config as the job will enqueue it (fitted into the spec's space)."""
    from promptsweep.search import load_spec, parse_spec, warm_start_params

    data = load_spec(SPECS[model]).to_dict()
    data.update(warm_start=False, warm_start_configs=[HAND[model]])
    return warm_start_params(parse_spec(data))[0]


def _inputs(spec: Any, *, capped: bool = True) -> Any:
    """The job's prepared inputs (cached on disk); ``capped=False``: whole validation and test splits."""
    from promptsweep.search import job_inputs

    return job_inputs(spec, capped=capped)


def _single_spec(
    model: str, arm: str, seed: int, args: argparse.Namespace, root: Path, ctx: dict
) -> tuple[Any, dict[str, Any]]:
    """The job spec of a one-trial arm (best_default, hand) and how its steps were sized."""
    from promptsweep.search import parse_spec

    data = _base(model, arm, seed, args, root)
    if "costs" not in ctx:
        costs = (ctx.get("plan") or {}).get("costs")
        source = "the search arm's plan"
        if not costs:
            from dataclasses import asdict

            from promptsweep.search._planning import time_costs

            spec0 = parse_spec(data)
            costs = asdict(time_costs(spec0, _inputs(spec0)))
            source = "timed by the benchmark"
        ctx["costs"], ctx["costs_source"] = costs, source
    costs = ctx["costs"]
    n_val = ctx.get("n_val")
    if n_val is None:
        n_val = ctx["n_val"] = int(_inputs(parse_spec(data)).counts["validation"])
    left = args.cpu_budget - costs["setup_s"] - n_val * costs["eval_example_s"]
    steps = math.floor(left / costs["step_s"])
    if steps < 1:
        raise RuntimeError(
            f"{arm}: {args.cpu_budget} trial-s cannot pay for one step (set-up {costs['setup_s']} s, "
            f"{n_val} validation examples x {costs['eval_example_s']} s, {costs['step_s']} s/step)"
        )
    if arm == "best_default":
        data.update(warm_start=True, warm_start_configs=[])
    else:
        data.update(warm_start=False, warm_start_configs=[HAND[model]])
    data["budget"].update(num_trials=1, max_steps=steps, eval_every_steps=steps, time_budget_s=None)
    data["scheduler"] = {"name": "none"}
    data["floors"] = False
    sizing = {
        "max_steps": steps,
        "costs": costs,
        "costs_source": ctx["costs_source"],
        "validation_examples": n_val,
        "expected_trial_s": round(
            costs["setup_s"] + steps * costs["step_s"] + n_val * costs["eval_example_s"], 1
        ),
    }
    return parse_spec(data), sizing


# ------------------------------------------------------------------------------------------------
# running


def _trial_seconds(trials: list[Any]) -> float:
    """The trial-seconds the trials spent: each trial's wall duration (set-up, steps, evaluations)."""
    total = 0.0
    for t in trials:
        if t.started_at and t.finished_at:
            total += (t.finished_at - t.started_at).total_seconds()
        elif t.train_seconds:
            total += float(t.train_seconds)
    return total


def _whole_validation_value(finalist: dict[str, Any]) -> float | None:
    """The selected finalist's value on the whole validation split, or ``None`` where it has none (a lone
    finalist keeps the subsample value it was ranked on)."""
    from promptsweep.search._selecting import KEPT_WHOLE_SPLIT

    if finalist.get("rescored") or finalist.get("kept") == KEPT_WHOLE_SPLIT:
        return finalist.get("value")
    return None


def _run_job(
    model: str, arm: str, seed: int, spec: Any, root: Path, args: argparse.Namespace, plan: dict | None = None
) -> dict[str, Any]:
    """Submit and run one job (``plan``: stored with it first, so it runs that plan); score its selected
    trial on the whole test split."""
    from promptsweep.search import run_job, submit
    from promptsweep.storage import Storage

    storage = Storage(f"sqlite:///{root / 'promptsweep.db'}")
    row: dict[str, Any] = {
        "model": model,
        "arm": arm,
        "seed": seed,
        "db": str(root / "promptsweep.db"),
        "compute_budget_s": spec.budget.compute_budget_s,
        "time_budget_s": spec.budget.time_budget_s,
        "load_before": round(os.getloadavg()[0], 2),
    }
    t0 = time.time()
    job_id = submit(spec, storage)
    if plan:
        storage.update_job_summary(job_id, plan=plan)
    try:
        outcome = run_job(job_id, storage, progress=not args.quiet)
    except Exception as exc:
        row.update(status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        print(row["traceback"], file=sys.stderr, flush=True)
        outcome = None
    row["wall_s"] = round(time.time() - t0, 1)
    row["load_after"] = round(os.getloadavg()[0], 2)
    job = storage.get_job(job_id)
    summary = dict(job.summary or {})
    trials = storage.list_trials(job_id)
    row.update(
        job_id=job_id,
        plan=summary.get("plan"),
        val_floors=summary.get("floors"),
        finalists=summary.get("finalists"),
        separation=summary.get("separation"),
        floor_warning=summary.get("floor_warning"),
        floor_separation=summary.get("floor_separation"),
        kept_state=summary.get("kept_state"),
        trial_s=round(_trial_seconds(trials), 1),
        trials=[
            {
                "number": t.number,
                "variant": t.variant,
                "state": str(t.state),
                "value": t.value,
                "steps": t.steps,
                "curve": [
                    (p.step, p.metrics.get(spec.objective.metric))
                    for p in storage.list_intermediate(job_id, t.number)
                ],
                "seconds": round((t.finished_at - t.started_at).total_seconds(), 1)
                if t.started_at and t.finished_at
                else None,
            }
            for t in trials
        ],
        best_per_method={t.variant: t.value for t in storage.best_per_method(job_id)},
    )
    if outcome is None:
        return row
    row.update(status=outcome.status, error=outcome.error, counts=outcome.counts)
    best = outcome.best_trials[0] if outcome.best_trials else None
    row.update(
        best_trial=best,
        best_params=outcome.best_params[0] if outcome.best_params else None,
        best_val=outcome.best_values[0][0] if outcome.best_values else None,
        best_val_whole=_whole_validation_value((summary.get("finalists") or [{}])[0]),
        job_test=outcome.test_metrics.get(best) if best is not None else None,
    )
    if best is not None:
        from promptsweep.demo import full_test_metrics

        record = next(t for t in trials if t.number == best)
        if record.adapter_dir:
            t1 = time.time()
            whole, _, n_test = full_test_metrics(spec, record.adapter_dir)
            row.update(
                test_accuracy=float(whole["accuracy"]),
                test_macro_f1=float(whole["macro_f1"]),
                test_examples=n_test,
                test_scoring_s=round(time.time() - t1, 1),
            )
    return row


def _run_floors(
    model: str, seed: int, wanted: list[str], args: argparse.Namespace, ctx: dict
) -> list[dict[str, Any]]:
    """Score the floors on the whole test split, on one trial's threads."""
    import torch

    from promptsweep.methods import score_floors
    from promptsweep.search import parse_spec

    spec = parse_spec(_base(model, "floors", seed, args, args.out))
    inputs = _inputs(spec, capped=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.resources.torch_threads or max(1, int(spec.resources.cpus_per_trial)))
    try:
        scores = score_floors(inputs, split="test", seed=seed, floors=wanted)
    finally:
        torch.set_num_threads(threads)
    val = ctx.get("val_floors") or {}
    rows = []
    for name in wanted:
        s = scores[name]
        rows.append(
            {
                "model": model,
                "arm": name,
                "seed": seed,
                "status": "succeeded",
                "best_val": (val.get(name) or {}).get(spec.objective.metric),
                "test_accuracy": float(s["accuracy"]),
                "test_macro_f1": float(s["macro_f1"]),
                "test_examples": int(inputs.counts["test"]),
                "trial_s": round(float(s["seconds"]), 1),
                "wall_s": round(float(s["seconds"]), 1),
                "counts": None,
            }
        )
    return rows


def _model_floors(model: str) -> tuple[str, ...]:
    from promptsweep.methods import TaskType
    from promptsweep.methods._floors import TASK_FLOORS
    from promptsweep.search import load_spec

    return tuple(f.value for f in TASK_FLOORS[TaskType(load_spec(SPECS[model]).task)])


def run_seed(
    model: str, seed: int, args: argparse.Namespace, rows: list[dict[str, Any]], notes: list[str]
) -> None:
    """Every requested arm of one model and seed, one after another (search first: the others use its
    plan and timing); each row is appended to ``rows`` and written out as soon as it is done."""

    def keep(row: dict[str, Any]) -> None:
        rows.append(row)
        _say(row)
        _write(args, rows, notes)  # keep what is done so far, in case the run is cut short

    def failed(arm: str) -> dict[str, Any]:
        exc = sys.exc_info()[1]
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        return {
            "model": model,
            "arm": arm,
            "seed": seed,
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": text,
        }

    ctx: dict[str, Any] = {}
    done = {r["arm"]: r for r in args.done if r["model"] == model and r["seed"] == seed}
    for arm in [a for a in ARMS if a in args.arms and a not in FLOOR_ARMS]:
        if arm in done:  # --resume: kept from the earlier run
            row = done[arm]
            if arm == "search":
                ctx["plan"], ctx["val_floors"] = row.get("plan"), row.get("val_floors")
            keep(row)
            continue
        if arm == "best_default" and "hand" in args.arms and _first_default(model) == _hand_fitted(model):
            note = f"{model}: best_default is the hand config ({_hand_fitted(model)}): skipped, see hand"
            if note not in notes:
                notes.append(note)
            continue
        root = Path(tempfile.mkdtemp(prefix=f"{model}-{arm}-{seed}-", dir=args.out))
        sizing = None
        try:
            if arm in JOB_ARMS:
                spec = _job_spec(model, arm, seed, args, root, ctx)
            else:
                spec, sizing = _single_spec(model, arm, seed, args, root, ctx)
            plan = ctx.get("plan") if arm == "random" else None
            row = _run_job(model, arm, seed, spec, root, args, plan=plan)
        except Exception:  # a broken arm must not lose the others
            row = failed(arm)
        if sizing:
            row["sizing"] = sizing
        if arm == "search":
            ctx["plan"] = row.get("plan")
            ctx["val_floors"] = row.get("val_floors")
        keep(row)
    wanted = [f for f in FLOOR_ARMS if f in args.arms and f in _model_floors(model)]
    for name in [f for f in wanted if f in done]:
        keep(done[name])
    wanted = [f for f in wanted if f not in done]
    if wanted:
        try:
            floor_rows = _run_floors(model, seed, wanted, args, ctx)
        except Exception:
            floor_rows = [failed("+".join(wanted))]
        for row in floor_rows:
            keep(row)


def _say(row: dict[str, Any]) -> None:
    def f(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    plan = row.get("plan") or {}
    extra = (
        f" plan {plan.get('configs')} configs x <= {plan.get('max_steps')} steps, rungs {plan.get('rungs')}"
        if plan
        else ""
    )
    if row.get("sizing"):
        extra += f" max_steps {row['sizing']['max_steps']} ({row['sizing']['costs_source']})"
    print(
        f"[{row['model']} {row['arm']} seed {row['seed']}] {row.get('status')}: "
        f"val {f(row.get('best_val'))}, "
        f"test {f(row.get('test_accuracy'))} / F1 {f(row.get('test_macro_f1'))}, counts {row.get('counts')}, "
        f"trial-s {row.get('trial_s')}, wall {row.get('wall_s')}{extra}"
        + (f"; error: {row['error']}" if row.get("error") else ""),
        flush=True,
    )


# ------------------------------------------------------------------------------------------------
# reporting


def _vals(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]


def _stat(values: list[float], digits: int = 3) -> str:
    """``mean (min-max)`` over seeds, ``mean`` for one value, ``-`` for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One row per model and arm: mean (min-max) over seeds."""
    out = [
        [
            "model",
            "arm",
            "seeds",
            "best val (subsample)",
            "test acc (1,000)",
            "test macro-F1",
            "trials c/p/f",
            "trial-s used",
            "wall s",
        ]
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        for arm in ARMS:
            rs = [r for r in rows if r["model"] == model and r["arm"] == arm]
            if not rs:
                continue
            counts = "; ".join(
                "/".join(str((r.get("counts") or {}).get(k, 0)) for k in ("complete", "pruned", "fail"))
                if r.get("counts") is not None
                else ("error" if r.get("status") == "error" else "-")
                for r in rs
            )
            trial_s, wall = _vals(rs, "trial_s"), _vals(rs, "wall_s")
            out.append(
                [
                    model,
                    arm,
                    ",".join(str(r["seed"]) for r in rs),
                    _stat(_vals(rs, "best_val")),
                    _stat(_vals(rs, "test_accuracy")),
                    _stat(_vals(rs, "test_macro_f1")),
                    counts,
                    f"{statistics.mean(trial_s):.0f}" if trial_s else "-",
                    f"{statistics.mean(wall):.0f}" if wall else "-",
                ]
            )
    return out


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per model: search minus each other arm (mean test accuracy), spreads, and the three questions."""
    lines: list[str] = []
    for model in dict.fromkeys(r["model"] for r in rows):
        acc = {
            arm: _vals([r for r in rows if r["model"] == model and r["arm"] == arm], "test_accuracy")
            for arm in ARMS
        }
        acc = {a: v for a, v in acc.items() if v}
        if "search" not in acc:
            lines.append(f"verdict {model}: no search result")
            continue
        s = acc["search"]
        s_mean, s_spread = statistics.mean(s), max(s) - min(s)
        lines.append(
            f"verdict {model} (test accuracy, 1,000 reviews; mean over {len(s)} seed(s)): "
            f"search {s_mean:.3f}, seed spread {s_spread:.3f}"
        )
        for arm, v in acc.items():
            if arm == "search":
                continue
            mean, spread = statistics.mean(v), max(v) - min(v)
            diff = s_mean - mean
            line = f"  search - {arm:<12} = {diff:+.3f} ({arm} {mean:.3f}, spread {spread:.3f}, n={len(v)})"
            if arm in ("random", "defaults"):
                bar = max(s_spread, spread)
                line += f": ahead by more than the seed spread ({bar:.3f})? {'YES' if diff > bar else 'no'}"
                if len(s) < 2 or len(v) < 2:
                    line += " (one seed: no spread to compare with)"
            elif arm == "hand":
                within = abs(diff) <= HAND_TOLERANCE
                line += f": within {HAND_TOLERANCE} of hand? {'YES' if within else 'no'}"
                if not within:
                    line += " (search ahead)" if diff > 0 else " (search behind)"
            lines.append(line)
    return lines


def _print_table(cells: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for j, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _markdown(cells: list[list[str]], lines: list[str], notes: list[str]) -> str:
    out = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    out += ["", "```text", *lines, *notes, "```"]
    return "\n".join(out) + "\n"


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], notes: list[str]) -> None:
    if args.json:
        kept = {k: v for k, v in vars(args).items() if k != "done"}
        args.json.write_text(json.dumps({"args": kept, "rows": rows, "notes": notes}, indent=2, default=str))
    if args.markdown:
        args.markdown.write_text(_markdown(table(rows), verdicts(rows), notes))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and the verdicts. Returns the exit code (1: an arm failed)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=sorted(SPECS), default=list(SPECS))
    parser.add_argument(
        "--cpu-budget",
        type=float,
        default=900.0,
        help="trial-seconds per arm (budget.compute_budget_s); default 900",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--out", type=Path, default=None, help="directory for the runs' databases")
    parser.add_argument(
        "--markdown", type=Path, default=None, help="write the table and verdicts as Markdown"
    )
    parser.add_argument("--json", type=Path, default=None, help="write every run's numbers as JSON")
    parser.add_argument("--quiet", action="store_true", help="no live progress table")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default=None,
        help="every arm's training precision (default: the spec's, auto); e.g. fp32 on a bf16 CPU to "
        "compare the two at the same budget",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        nargs="+",
        default=[],
        help="earlier --json files: their succeeded runs (model, seed, arm) are kept, not re-run "
        "(the last file wins); a kept search run's plan still pins random and defaults",
    )
    args = parser.parse_args(argv)
    if args.cpu_budget <= 0:
        parser.error("--cpu-budget: must be positive")
    args.out = Path(args.out or tempfile.mkdtemp(prefix="bench-quality-")).absolute()
    args.out.mkdir(parents=True, exist_ok=True)
    done: dict[tuple, dict[str, Any]] = {}
    for path in args.resume:
        earlier = json.loads(path.read_text())
        budget = earlier.get("args", {}).get("cpu_budget")
        if budget is not None and float(budget) != float(args.cpu_budget):
            parser.error(f"--resume {path}: its runs had --cpu-budget {budget}, not {args.cpu_budget}")
        for row in earlier["rows"]:
            if row.get("status") == "succeeded":
                done[(row["model"], row["seed"], row["arm"])] = dict(row, resumed_from=str(path))
    args.done = list(done.values())

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for model in args.models:
        for seed in args.seeds:
            run_seed(model, seed, args, rows, notes)
    print()
    _print_table(table(rows))
    print()
    for line in verdicts(rows) + notes:
        print(line)
    _write(args, rows, notes)
    return 1 if any(r.get("status") != "succeeded" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
