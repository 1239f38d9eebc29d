"""Quality benchmark (issue 7): what a search reaches on Fine Foods at a fixed CPU-second budget.

For each model (``minilm``: the frozen all-MiniLM-L6-v2 with a mean-pooling classification head,
``benchmarks/specs/minilm.yaml``; ``smollm2``: the frozen SmolLM2-135M with a verbalizer,
``benchmarks/specs/smollm2.yaml``; both sized for quality rather than for the quick demo in
``examples/``, see their headers) and each seed it runs up to three jobs through the public API
(``promptsweep.search.submit`` + ``run_job``, each in its own SQLite database under ``--out``):

- **tpe**: the spec as is (TPE, ASHA, the paper defaults enqueued first), stopped by
  ``budget.time_budget_s``;
- **random**: the same spec and budget with ``sampler: random``;
- **defaults**: each method's paper-default config (``warm_start``, the same trials the search
  enqueues first), each trained for the full per-trial budget (``budget.max_steps``, no scheduler).

Every job ranks its trials on the validation split and evaluates only the selected trial on the test
split (``run_job`` does this on the spec's ``max_eval_examples`` subsample); the benchmark then scores
that same selected adapter on the whole 1,000-review test split (``promptsweep.demo.full_test_metrics``),
which is what the table reports. No other trial ever sees the test split. The majority-class row is
``PreparedInputs.majority_accuracy`` (always predicting the training majority class) on the same
split; its macro-F1 is that of a constant predictor.

**Budget in CPU-seconds.** The spec's budget is wall-clock seconds (Ray Tune's ``time_budget_s``);
the search uses ``cpus_per_trial * max_concurrent_trials`` cores (2 for both specs), so
``time_budget_s = cpu_budget / cores``. On a machine shared with other work a wall second gives a
trial less than one CPU-second per core, so the search gets *at most* the stated CPU-seconds; the
table also reports each arm's summed trial seconds x cpus_per_trial and the load average. The
defaults arm is not time-capped (it trains its few configs to the end).

Prints one table (mean over seeds, with min-max spread) and, with ``--markdown FILE``, writes it
as Markdown; ``--json FILE`` keeps every run's numbers. Nothing here asserts a target.

Usage (issue 7's budget: one CPU-hour per search = 1,800 wall s on 2 cores; a little over 1 h per
model and seed with the three arms):

    .venv/bin/python benchmarks/bench_quality.py --models minilm smollm2 --cpu-budget 3600 --seeds 0 1
    .venv/bin/python benchmarks/bench_quality.py --models minilm --cpu-budget 360 --seeds 0 1 \\
        --out /tmp/bq --markdown /tmp/bq/table.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPECS = {
    "minilm": ROOT / "benchmarks" / "specs" / "minilm.yaml",
    "smollm2": ROOT / "benchmarks" / "specs" / "smollm2.yaml",
}
ARMS = ("tpe", "random", "defaults")


def _spec(model: str, arm: str, seed: int, cpu_budget: float, root: Path, steps: int | None) -> Any:
    """The job spec of one arm: the example spec with the budget, sampler and output dir set."""
    from promptsweep.search import load_spec, parse_spec

    data = load_spec(SPECS[model]).to_dict()
    res = data["resources"]
    cores = int(res.get("cpus_per_trial") or 1) * int(res.get("max_concurrent_trials") or 1)
    res["num_cpus"] = cores
    data.update(name=f"quality-{model}-{arm}-{seed}", seed=seed, output_dir=str(root / "runs"))
    if steps is not None:
        data["budget"]["max_steps"] = steps
    if arm == "defaults":
        data["warm_start"] = True
        data["warm_start_configs"] = []
        data["budget"].update(num_trials=len(data["space"]["methods"]), time_budget_s=None)
        data["scheduler"] = {"name": "none"}
        data["sampler"] = {"name": "random"}  # never asked: every trial is an enqueued default
        spec = parse_spec(data)
        from promptsweep.search import warm_start_params

        n = len(warm_start_params(spec))
        data["budget"]["num_trials"] = n
        return parse_spec(data)
    # the budget is the time cap; num_trials only needs to be out of reach
    data["budget"].update(num_trials=10_000, time_budget_s=cpu_budget / cores)
    if arm == "random":
        data["sampler"] = {"name": "random"}
    return parse_spec(data)


def _majority(spec: Any) -> dict[str, float]:
    """Majority-class accuracy and macro-F1 on the whole test split (no ``max_eval_examples`` cap)."""
    from promptsweep.methods import TaskType, prepare_inputs
    from promptsweep.search import data_spec

    uncapped = spec.model_copy(
        update={"dataset": spec.dataset.model_copy(update={"max_eval_examples": None})}
    )
    inputs = prepare_inputs(
        spec.model, data_spec(uncapped), TaskType(spec.task), max_length=spec.dataset.max_length
    )
    p = inputs.majority_accuracy["test"]
    k = max(inputs.num_labels, 1)
    # a constant predictor: F1 of the predicted class is 2p/(1+p), every other class scores 0
    return {"split": f"test, {inputs.counts['test']}", "accuracy": p, "macro_f1": (2 * p / (1 + p)) / k}


def _run_arm(model: str, arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Submit and run one job; return its selected trial's numbers and its best per method."""
    from promptsweep.search import run_job, submit
    from promptsweep.storage import Storage

    root = Path(tempfile.mkdtemp(prefix=f"{model}-{arm}-{seed}-", dir=args.out))
    storage = Storage(f"sqlite:///{root / 'promptsweep.db'}")
    spec = _spec(model, arm, seed, args.cpu_budget, root, args.steps)
    job_id = submit(spec, storage)
    load_before = os.getloadavg()[0]
    t0 = time.time()
    outcome = run_job(job_id, storage, progress=not args.quiet)
    wall = time.time() - t0
    trials = storage.list_trials(job_id)
    trial_cpu_s = sum(
        (t.finished_at - t.started_at).total_seconds() * spec.resources.cpus_per_trial
        for t in trials
        if t.finished_at and t.started_at
    )
    best = outcome.best_trials[0] if outcome.best_trials else None
    test = outcome.test_metrics.get(best, {}) if best is not None else {}
    # the selected trial only (the one the job ranked first on validation), on the whole test split
    whole: dict[str, float] = {}
    if best is not None:
        from promptsweep.demo import full_test_metrics

        record = next(t for t in trials if t.number == best)
        if record.adapter_dir:
            whole, _, n_test = full_test_metrics(spec, Path(record.adapter_dir))
            whole = {**whole, "n": n_test}
    row = {
        "model": model,
        "arm": arm,
        "seed": seed,
        "db": str(root / "promptsweep.db"),
        "status": outcome.status,
        "error": outcome.error,
        "wall_s": round(wall, 1),
        "time_budget_s": spec.budget.time_budget_s,
        "trial_cpu_s": round(trial_cpu_s, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "counts": outcome.counts,
        "metric": spec.objective.metric,
        "best_trial": best,
        "best_params": outcome.best_params[0] if outcome.best_params else None,
        "best_val": outcome.best_values[0][0] if outcome.best_values else None,
        "job_test_accuracy": test.get("accuracy"),  # the job's own (max_eval_examples) test subsample
        "job_test_macro_f1": test.get("macro_f1"),
        "test_accuracy": whole.get("accuracy"),  # the whole test split
        "test_macro_f1": whole.get("macro_f1"),
        "test_examples": whole.get("n"),
        "best_per_method": {t.variant: t.value for t in storage.best_per_method(job_id)},
    }
    print(json.dumps(row, default=str), flush=True)
    return row


def _stat(values: list[float | None]) -> str:
    """``mean (min-max)`` over seeds, or ``mean`` for one, ``-`` for none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ({min(vals):.3f}-{max(vals):.3f})"


def table(rows: list[dict[str, Any]], majority: dict[str, dict[str, float]]) -> list[list[str]]:
    """The results table: one row per model and arm (mean and min-max over seeds), per-method rows
    for the TPE search, and the majority class."""
    out = [["model", "arm", "seeds", "best val", "test acc", "test macro-F1", "trials c/p/f", "wall s"]]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        for arm in ARMS:
            rs = [r for r in mine if r["arm"] == arm]
            if not rs:
                continue
            counts = "; ".join(
                "/".join(str(r["counts"].get(k, 0)) for k in ("complete", "pruned", "fail")) for r in rs
            )
            out.append(
                [
                    model,
                    arm,
                    ",".join(str(r["seed"]) for r in rs),
                    _stat([r["best_val"] for r in rs]),
                    _stat([r["test_accuracy"] for r in rs]),
                    _stat([r["test_macro_f1"] for r in rs]),
                    counts,
                    f"{statistics.mean(r['wall_s'] for r in rs):.0f}",
                ]
            )
        for arm in ("tpe", "random"):
            rs = [r for r in mine if r["arm"] == arm]
            variants = sorted({v for r in rs for v in r["best_per_method"]})
            for v in variants:
                out.append(
                    [
                        model,
                        f"{arm}: best {v}",
                        ",".join(str(r["seed"]) for r in rs if v in r["best_per_method"]),
                        _stat([r["best_per_method"].get(v) for r in rs]),
                        "",
                        "",
                        "",
                        "",
                    ]
                )
        if model in majority:
            m = majority[model]
            out.append(
                [
                    model,
                    f"majority class ({m['split']})",
                    "",
                    "",
                    f"{m['accuracy']:.3f}",
                    f"{m['macro_f1']:.3f}",
                    "",
                    "",
                ]
            )
    return out


def _print_table(cells: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for j, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _markdown(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table (and write it with ``--markdown``). Returns the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=sorted(SPECS), default=["minilm"])
    parser.add_argument(
        "--cpu-budget",
        type=float,
        default=3600.0,
        help="CPU-seconds per search (tpe and random each); default 3600",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per trial (default: the example spec's max_steps)",
    )
    parser.add_argument("--out", type=Path, default=None, help="directory for the runs' databases")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table as Markdown")
    parser.add_argument("--json", type=Path, default=None, help="write every run's numbers as JSON")
    parser.add_argument("--quiet", action="store_true", help="no live progress table")
    args = parser.parse_args(argv)
    if args.cpu_budget <= 0:
        parser.error("--cpu-budget: must be positive")
    args.out = Path(args.out or tempfile.mkdtemp(prefix="bench-quality-"))
    args.out.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    majority: dict[str, dict[str, float]] = {}
    cells: list[list[str]] = []
    for model in args.models:
        majority[model] = _majority(_spec(model, "tpe", args.seeds[0], args.cpu_budget, args.out, args.steps))
        for seed in args.seeds:
            for arm in args.arms:
                rows.append(_run_arm(model, arm, seed, args))
                # keep what is done so far, in case the run is cut short
                cells = table(rows, majority)
                if args.json:
                    args.json.write_text(
                        json.dumps(
                            {"args": vars(args), "rows": rows, "majority": majority}, indent=2, default=str
                        )
                    )
                if args.markdown:
                    args.markdown.write_text(_markdown(cells))
    print()
    _print_table(cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
