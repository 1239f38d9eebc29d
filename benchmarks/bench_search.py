"""Search benchmarks (issues 5 and 7): orchestration overhead, and TPE vs random at equal trial count.

Prints what it measures, from one run; nothing here asserts a target.

1. **Orchestration overhead** (issue 5): one job through Ray Tune + Optuna + storage;
   ``overhead = search wall seconds / (sum of trial seconds / concurrency)``. Trial seconds are each
   trial's wall time from its start to its end as recorded in storage (model build, training,
   evaluations, adapter save). Goal: <= 1.05 for trials of >= 30 s. ``--overhead-steps`` sets the
   trial length.
2. **TPE vs random** (issue 7): the same job spec and trial count with ``sampler: tpe`` and
   ``sampler: random`` on the real Fine Foods + MiniLM task; prints the best validation metric of
   each, its test accuracy / macro-F1 (selected trial only), best per method, the majority class, and
   the best single default config (the warm-start trials' best), over ``--seeds`` seeds.

Usage (2 cores: the overhead part takes ~10 minutes with the defaults, the comparison hours):

    .venv/bin/python benchmarks/bench_search.py overhead --trials 4 --overhead-steps 150
    .venv/bin/python benchmarks/bench_search.py compare --trials 16 --seeds 0 1
    .venv/bin/python benchmarks/bench_search.py overhead --tiny        # seconds, tiny model (smoke)
    .venv/bin/python benchmarks/bench_search.py gpu-pool               # a GPU machine: 0.25 GPU/trial
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _storage(root: Path) -> Any:
    from promptsweep.storage import Storage

    return Storage(f"sqlite:///{root / 'bench.db'}")


def _fine_foods_spec(root: Path, *, trials: int, steps: int, sampler: str, seed: int, **extra: Any) -> Any:
    from promptsweep.search import default_spec

    spec = default_spec().to_dict()
    spec.update(
        name=f"bench-{sampler}-{seed}",
        seed=seed,
        output_dir=str(root / "runs"),
        sampler={"name": sampler, "n_startup_trials": 6},
    )
    spec["budget"].update(num_trials=trials, max_steps=steps, time_budget_s=None)
    spec.update(extra)
    from promptsweep.search import parse_spec

    return parse_spec(spec)


def _tiny_spec(root: Path, *, trials: int, steps: int) -> Any:
    """A seconds-long smoke run on a tiny random encoder (no real-model weights)."""
    import csv
    import random

    from promptsweep.methods.testing import make_tiny_model
    from promptsweep.search import parse_spec

    model = make_tiny_model(root / "tiny", "encoder")
    rng = random.Random(0)
    data = root / "data"
    data.mkdir()
    with open(data / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(200):
            good = rng.random() < 0.5
            writer.writerow(
                [("great tasty" if good else "awful stale") + " snack", "great" if good else "other"]
            )
    return parse_spec(
        {
            "name": "bench-tiny",
            "model": str(model),
            "dataset": {
                "source": str(data),
                "text_column": "text",
                "label_column": "label",
                "splits": {"train": "train"},
                "max_length": 32,
            },
            "objective": {"metric": "eval_loss"},
            "budget": {
                "num_trials": trials,
                "max_steps": steps,
                "eval_every_steps": max(1, steps // 4),
                "batch_size": 8,
            },
            "scheduler": {"name": "none"},
            "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "num_cpus": 2},
            "output_dir": str(root / "runs"),
        }
    )


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Search wall time over the sum of trial times divided by the concurrency."""
    from promptsweep.search import run_job, submit

    root = Path(tempfile.mkdtemp(prefix="bench-search-"))
    storage = _storage(root)
    if args.tiny:
        spec = _tiny_spec(root, trials=args.trials, steps=args.overhead_steps)
    else:
        spec = _fine_foods_spec(
            root,
            trials=args.trials,
            steps=args.overhead_steps,
            sampler="tpe",
            seed=0,
            scheduler={"name": "none"},
            warm_start=True,
        )
    job_id = submit(spec, storage)
    # prepare once outside the measured window (the cache makes run_job's own call cheap)
    from promptsweep.methods import TaskType, prepare_inputs
    from promptsweep.search import data_spec

    prepare_inputs(spec.model, data_spec(spec), TaskType(spec.task), max_length=spec.dataset.max_length)
    t0 = time.time()
    outcome = run_job(job_id, storage, progress=not args.quiet)
    wall = time.time() - t0
    t_end = t0 + wall
    trials = [t for t in storage.list_trials(job_id) if t.finished_at and t.started_at]
    trial_s = [(t.finished_at - t.started_at).total_seconds() for t in trials]
    conc = spec.resources.max_concurrent_trials
    ideal = sum(trial_s) / conc
    first = min(t.started_at for t in trials).timestamp()
    last = max(t.finished_at for t in trials).timestamp()
    out = {
        "trials": len(trials),
        "concurrency": conc,
        "steps_per_trial": args.overhead_steps,
        "mean_trial_s": statistics.mean(trial_s) if trial_s else None,
        "search_wall_s": wall,
        "sum_trial_s_over_concurrency": ideal,
        # run_job as a whole: Ray start + study + trials + the selected trial's test evaluation
        "overhead_ratio": wall / ideal if ideal else None,
        # the Tune window only (first trial start .. last trial end)
        "trial_window_s": last - first,
        "overhead_ratio_trial_window": (last - first) / ideal if ideal else None,
        "startup_s": first - t0,
        "selection_s": t_end - last,
        "states": outcome.counts,
    }
    print(json.dumps(out, indent=2))
    return out


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """TPE vs random at equal trial count on Fine Foods + MiniLM, over seeds."""
    from promptsweep.search import parse_spec, run_job, submit

    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for sampler in ("tpe", "random"):
            root = Path(tempfile.mkdtemp(prefix=f"bench-{sampler}-{seed}-"))
            storage = _storage(root)
            if args.tiny:
                spec = _tiny_spec(root, trials=args.trials, steps=args.steps)
                data = spec.to_dict()
                data.update(seed=seed, sampler={"name": sampler, "n_startup_trials": 3})
                spec = parse_spec(data)
            else:
                spec = _fine_foods_spec(
                    root, trials=args.trials, steps=args.steps, sampler=sampler, seed=seed
                )
            job_id = submit(spec, storage)
            t0 = time.time()
            outcome = run_job(job_id, storage, progress=not args.quiet)
            board = storage.leaderboard(job_id)
            best = board[0] if board else None
            n_defaults = len(spec.space.methods) if spec.warm_start else 0
            defaults = [t for t in board if t.number < n_defaults]
            rows.append(
                {
                    "seed": seed,
                    "sampler": sampler,
                    "wall_s": round(time.time() - t0, 1),
                    "best_trial": best.number if best else None,
                    "best_val": best.value if best else None,
                    "best_test": best.test_metrics if best else None,
                    "direction": spec.objective.resolved_direction,
                    # the leaderboard is ordered best first, so the first default in it is the best
                    "best_default_val": defaults[0].value if defaults else None,
                    "best_per_method": {t.variant: t.value for t in storage.best_per_method(job_id)},
                    "states": outcome.counts,
                }
            )
            print(json.dumps(rows[-1], default=str))
    summary: dict[str, Any] = {"rows": rows}
    for sampler in ("tpe", "random"):
        vals = [r["best_val"] for r in rows if r["sampler"] == sampler and r["best_val"] is not None]
        if vals:
            summary[f"{sampler}_best_val_mean"] = statistics.mean(vals)
            summary[f"{sampler}_best_val_spread"] = (min(vals), max(vals))
    if "tpe_best_val_mean" in summary and "random_best_val_mean" in summary:
        sign = 1.0 if rows[0]["direction"] == "maximize" else -1.0
        # > 0: TPE's best validation metric is better than random's (in the objective's direction)
        summary["tpe_advantage"] = sign * (summary["tpe_best_val_mean"] - summary["random_best_val_mean"])
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2, default=str))
    return summary


def gpu_pool(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 5's device check: 4 concurrent trials at ``gpus_per_trial: 0.25`` on one GPU, then the
    same trials one at a time on the whole GPU; per-trial throughput and peak GPU memory of each."""
    from promptsweep.search import run_job, submit
    from promptsweep.search._spec import local_gpu_count

    if local_gpu_count() < 1:
        print(json.dumps({"skipped": "no GPU on this machine"}))
        return {}
    out: dict[str, Any] = {}
    for label, gpus, conc in (("packed_0.25", 0.25, 4), ("whole_gpu", 1.0, 1)):
        root = Path(tempfile.mkdtemp(prefix=f"bench-gpu-{label}-"))
        storage = _storage(root)
        spec = _fine_foods_spec(
            root,
            trials=4,
            steps=args.steps,
            sampler="tpe",
            seed=0,
            scheduler={"name": "none"},
            resources={"cpus_per_trial": 2, "gpus_per_trial": gpus, "max_concurrent_trials": conc},
        )
        job_id = submit(spec, storage)
        t0 = time.time()
        run_job(job_id, storage, progress=False)
        wall = time.time() - t0
        rows = []
        for t in storage.list_trials(job_id):
            eps = (t.steps or 0) * spec.budget.batch_size / t.train_seconds if t.train_seconds else None
            rows.append(
                {
                    "trial": t.number,
                    "method": t.variant,
                    "state": t.state.value,
                    "examples_per_s": eps,
                    "peak_gpu_mib": (t.peak_memory_bytes or 0) / 2**20,
                }
            )
        out[label] = {
            "wall_s": wall,
            "trials": rows,
            "sum_examples_per_s": sum(r["examples_per_s"] or 0 for r in rows),
        }
        print(json.dumps({label: out[label]}, indent=2, default=str))
    if out.get("whole_gpu", {}).get("wall_s"):
        out["packed_speedup_wall"] = out["whole_gpu"]["wall_s"] / out["packed_0.25"]["wall_s"]
        print(json.dumps({"packed_speedup_wall": out["packed_speedup_wall"]}))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p1 = sub.add_parser("overhead", help="orchestration overhead ratio")
    p1.add_argument("--trials", type=int, default=4)
    p1.add_argument("--overhead-steps", type=int, default=150, help="training steps per trial")
    p1.add_argument("--tiny", action="store_true", help="tiny random encoder instead of MiniLM (smoke)")
    p1.add_argument("--quiet", action="store_true")
    p2 = sub.add_parser("compare", help="TPE vs random at equal trial count")
    p2.add_argument("--trials", type=int, default=16)
    p2.add_argument("--steps", type=int, default=300)
    p2.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p2.add_argument("--tiny", action="store_true", help="tiny random encoder (smoke test of this script)")
    p2.add_argument("--quiet", action="store_true")
    p3 = sub.add_parser("gpu-pool", help="4 trials at 0.25 GPU each vs one at a time (needs a GPU)")
    p3.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    {"overhead": overhead, "compare": compare, "gpu-pool": gpu_pool}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
