"""Learning-rate ranges for short budgets (a script, not a timed test).

A search stops most trials at its first successive-halving rung (~20 steps of batch 16); a sampled
learning rate too low to move the frozen model in those steps leaves the trial at the majority class,
and one too high diverges or degrades. This script measures where those bounds lie on the real
frozen MiniLM with the demo's data (Fine Foods reviews, 1,000 training / 300 validation reviews):
each (method, learning rate, seed) trains ``--steps`` steps (default 60) at batch 16 and records the
validation accuracy every ``--eval-every`` steps (default 20, i.e. at 20, 40 and 60).

A trial's warm-up + linear decay runs over its own ``max_steps``, so the first 20 steps of a 60-step
trial do not see the learning rates that the first 20 steps of a long trial (the one ASHA judges at
its first rung) see. With ``--long-steps N`` (default 200; 0: off) the script also trains each point
of ``--long-methods`` under an N-step schedule and stops it at its first evaluation (the report
callback returns True), recording that accuracy as well.

Methods (flat params as ``train_trial`` takes them, 20 virtual tokens, mean pooling):
    prompt_tuning  prompt_init random
    prefix_tuning  prefix_projection False (P-tuning v2's deep prompts)
    p_tuning       encoder_type MLP, encoder_hidden_size 128

``--model smollm2`` measures the causal LM instead: the frozen SmolLM2-135M-Instruct verbalizer of
``benchmarks/specs/smollm2.yaml`` (every training review, 200 validation reviews, 96 tokens, batch 8;
prompt tuning from the spec's init text, no pooling). Its ranges: docs/quality.md, "Learning rates on
a causal LM".

Usage:
    nice -n 5 .venv/bin/python benchmarks/bench_lr.py [--seeds 0] [--json out.json]
    # a second seed for chosen points only (METHOD=LR, repeatable):
    nice -n 5 .venv/bin/python benchmarks/bench_lr.py --seeds 1 --points prefix_tuning=3e-3 p_tuning=3e-3
    # another grid for one method:
    .venv/bin/python benchmarks/bench_lr.py --methods prompt_tuning --lrs prompt_tuning=1e-2,3e-2
    # only the long schedule's first rung, for any method:
    nice -n 5 .venv/bin/python benchmarks/bench_lr.py --long-only --points p_tuning=1e-2,3e-2 --json long.json
    # the causal LM: the 225-step trial a 900 trial-s SmolLM2 search gives its first config
    .venv/bin/python benchmarks/bench_lr.py --model smollm2 --threads 2 --long-steps 0 --steps 225 \
        --eval-every 75 --points prompt_tuning=3e-2,1e-2,3e-3
    # one table from several runs (a point's short and --long-only rows merge):
    .venv/bin/python benchmarks/bench_lr.py --from-json a.json b.json long.json

Prints one Markdown table (per method, learning rate and seed: validation accuracy at each evaluation,
validation loss, the last interval's training loss, the long schedule's first-rung accuracy, wall
seconds; ``NaN`` when the loss diverged) and the validation split's majority-class accuracy. ``--json``
is rewritten after every point, so an interrupted run keeps what it measured. One torch thread by
default (``--threads``). Results and recommended ranges: docs/quality.md, "Learning-rate ranges for
short budgets (bench_lr.py)".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

METHOD_PARAMS: dict[str, dict[str, Any]] = {
    "prompt_tuning": {
        "method": "prompt_tuning",
        "num_virtual_tokens": 20,
        "prompt_init": "random",
        "pooling": "mean",
    },
    "prefix_tuning": {
        "method": "prefix_tuning",
        "num_virtual_tokens": 20,
        "prefix_projection": False,
        "pooling": "mean",
    },
    "p_tuning": {
        "method": "p_tuning",
        "num_virtual_tokens": 20,
        "encoder_type": "MLP",
        "encoder_hidden_size": 128,
        "pooling": "mean",
    },
}

#: ``--model smollm2``: the frozen SmolLM2-135M-Instruct verbalizer of ``benchmarks/specs/smollm2.yaml``
#: (label words " great"/" excellent" vs " bad"/" okay", every training review, 200 validation reviews,
#: 96 tokens, batch 8); prompt tuning starts from the spec's init text, as the search's warm start does
#: on a causal LM.
SMOLLM2_PARAMS: dict[str, dict[str, Any]] = {
    "prompt_tuning": {
        "method": "prompt_tuning",
        "num_virtual_tokens": 20,
        "prompt_init": "text",
        "prompt_init_text": "Is this food review great or bad?",
    },
    "prefix_tuning": {"method": "prefix_tuning", "num_virtual_tokens": 20, "prefix_projection": False},
    "p_tuning": {
        "method": "p_tuning",
        "num_virtual_tokens": 20,
        "encoder_type": "MLP",
        "encoder_hidden_size": 128,
    },
}
#: Per model: the method params, and the defaults of --train, --eval, --max-length, --batch-size.
MODELS: dict[str, dict[str, Any]] = {
    "minilm": {"params": METHOD_PARAMS, "train": 1000, "eval": 300, "max_length": 128, "batch_size": 16},
    "smollm2": {"params": SMOLLM2_PARAMS, "train": None, "eval": 200, "max_length": 96, "batch_size": 8},
}

DEFAULT_LRS: dict[str, list[float]] = {
    "prompt_tuning": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
    "prefix_tuning": [1e-3, 3e-3, 1e-2, 3e-2, 6e-2],
    "p_tuning": [1e-3, 3e-3, 1e-2, 3e-2],
}


def _method_lrs(text: str) -> tuple[str, list[float]]:
    method, _, values = text.partition("=")
    if method not in METHOD_PARAMS or not values:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected METHOD=LR[,LR...] with METHOD in {list(METHOD_PARAMS)}"
        )
    try:
        return method, [float(v) for v in values.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: learning rates must be numbers") from None


def _run(
    inputs: Any,
    method: str,
    lr: float,
    seed: int,
    *,
    max_steps: int,
    eval_every: int,
    batch_size: int,
    stop_after: int | None,
    out_dir: Path,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Train one point; return its per-evaluation metrics (stopped after ``stop_after`` steps if given)."""
    from promptsweep.exceptions import TrainingError
    from promptsweep.methods import TrainBudget, train_trial

    budget = TrainBudget(
        max_steps=max_steps,
        max_epochs=None,  # the step count alone decides (1,000 reviews / 16 = 63 steps per epoch)
        eval_every_steps=eval_every,
        batch_size=batch_size,
        eval_batch_size=64,
    )
    evals: dict[int, dict[str, float]] = {}

    def report(step: int, metrics: dict[str, float]) -> bool:
        evals[step] = {k: float(v) for k, v in metrics.items()}
        return stop_after is not None and step >= stop_after

    params = dict(params, learning_rate=lr)
    started = time.perf_counter()
    error = None
    try:
        train_trial(inputs, params, budget=budget, output_dir=out_dir, seed=seed, report=report)
    except TrainingError as exc:  # a NaN/inf loss: the learning rate diverged
        error = str(exc)
    return {
        "method": method,
        "learning_rate": lr,
        "seed": seed,
        "max_steps": max_steps,
        "stopped_after": stop_after,
        "evals": {str(k): v for k, v in sorted(evals.items())},
        "diverged": error,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _fmt(x: float | None) -> str:
    return "" if x is None else ("NaN" if math.isnan(x) else f"{x:.3f}")


def _table(rows: list[dict[str, Any]], steps: list[int], long_steps: int, first: int) -> str:
    """One Markdown row per (method, lr, seed): validation accuracy at each evaluation, validation loss
    at each evaluation, the mean train loss since the previous evaluation, and (with ``long_steps``) the
    accuracy at the first evaluation of a ``long_steps``-step schedule."""
    prev = steps[-2] if len(steps) > 1 else 0
    head = ["method", "lr", "seed", *(f"acc@{s}" for s in steps)]
    head += ["val loss @" + "/".join(map(str, steps)), f"train loss {prev + 1}-{steps[-1]}"]
    if long_steps:
        head.append(f"acc@{first} ({long_steps}-step schedule)")
    head.append("s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        short = r.get("short") or {"evals": {}, "diverged": None, "seconds": 0.0}  # --long-only rows
        evals = [short["evals"].get(str(s)) for s in steps]
        diverged = "NaN" if short["diverged"] else ""
        acc = [_fmt(e["accuracy"]) if e else diverged for e in evals]
        vloss = "/".join(_fmt(e["eval_loss"]) if e else diverged for e in evals)
        last = evals[-1]
        cells = [r["method"], f"{r['learning_rate']:g}", str(r["seed"]), *acc, vloss]
        cells.append(_fmt(last["train_loss"]) if last else diverged)
        seconds = short["seconds"]
        if long_steps:
            lg = r.get("long")
            if lg is None:
                cells.append("")
            else:
                e = lg["evals"].get(str(first))
                cells.append(_fmt(e["accuracy"]) if e else ("NaN" if lg["diverged"] else ""))
                seconds += lg["seconds"]
        cells.append(f"{seconds:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_json(args: argparse.Namespace, majority: float, rows: list[dict[str, Any]]) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": " ".join(sys.argv),
        "majority": majority,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "long_steps": args.long_steps,
        "long_only": args.long_only,
        "threads": args.threads,
        "model": args.model,
        "rows": rows,
    }
    args.json.write_text(json.dumps(doc, indent=1))


def _print_saved(paths: list[Path]) -> None:
    docs = [json.loads(p.read_text()) for p in paths]
    merged: dict[tuple[str, float, int], dict[str, Any]] = {}
    for r in (r for d in docs for r in d["rows"]):  # a short run and a --long-only run of a point merge
        key = (r["method"], r["learning_rate"], r["seed"])
        merged.setdefault(key, {"method": key[0], "learning_rate": key[1], "seed": key[2]}).update(
            {k: v for k, v in r.items() if k in ("short", "long")}
        )
    rows = [merged[k] for k in sorted(merged, key=lambda k: (list(METHOD_PARAMS).index(k[0]), k[1], k[2]))]
    d0 = next((d for d in docs if not d.get("long_only")), docs[0])
    steps = list(range(d0["eval_every"], d0["steps"] + 1, d0["eval_every"]))
    if not steps or steps[-1] != d0["steps"]:
        steps.append(d0["steps"])
    long_steps = max((d["long_steps"] for d in docs if any("long" in r for r in d["rows"])), default=0)
    print(_table(rows, steps, long_steps, min(d0["eval_every"], d0["steps"])))
    print(f"\nvalidation majority class: {d0['majority']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", choices=list(METHOD_PARAMS), default=list(METHOD_PARAMS))
    parser.add_argument(
        "--lrs",
        type=_method_lrs,
        nargs="+",
        default=[],
        metavar="METHOD=LR[,LR]",
        help="replace a method's grid",
    )
    parser.add_argument(
        "--points",
        type=_method_lrs,
        nargs="+",
        default=None,
        metavar="METHOD=LR[,LR]",
        help="run only these (method, lr) points (overrides --methods/--lrs)",
    )
    parser.add_argument(
        "--model",
        choices=list(MODELS),
        default="minilm",
        help="minilm: classification head, mean pooling; smollm2: benchmarks/specs/smollm2.yaml's verbalizer",
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 (minilm), 8 (smollm2)")
    parser.add_argument("--max-length", type=int, default=None, help="default: 128 (minilm), 96 (smollm2)")
    parser.add_argument(
        "--train",
        type=int,
        default=None,
        help="max_train_examples (default: 1000 for minilm, all for smollm2)",
    )
    parser.add_argument(
        "--eval",
        type=int,
        default=None,
        help="max_eval_examples, validation (default: 300 minilm, 200 smollm2)",
    )
    parser.add_argument(
        "--long-steps",
        type=int,
        default=200,
        help="also run an N-step schedule stopped at its first evaluation (0: off)",
    )
    parser.add_argument(
        "--long-methods", nargs="+", choices=list(METHOD_PARAMS), default=["prompt_tuning", "prefix_tuning"]
    )
    parser.add_argument(
        "--long-only",
        action="store_true",
        help="run only the --long-steps schedule of each point (all methods)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="prepared-data cache (default: a temp dir)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write all rows and evaluations here")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="train nothing: print one table of the rows in these --json files (e.g. two seeds' runs)",
    )
    args = parser.parse_args()
    model = MODELS[args.model]
    for key in ("train", "eval", "max_length", "batch_size"):
        if getattr(args, key) is None:
            setattr(args, key, model[key])
    if args.from_json:
        _print_saved(args.from_json)
        return

    import torch

    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()  # "classifier newly initialized" is expected
    from promptsweep.methods import DataSpec, TaskType, prepare_inputs
    from promptsweep.methods._data import load_split

    if args.points:
        points = [(m, lr) for m, lrs in args.points for lr in lrs]
    else:
        grid = dict(DEFAULT_LRS)
        grid.update(dict(args.lrs))
        points = [(m, lr) for m in args.methods for lr in grid[m]]
    steps = list(range(args.eval_every, args.steps + 1, args.eval_every))
    if not steps or steps[-1] != args.steps:
        steps.append(args.steps)
    first = min(args.eval_every, args.steps)

    with tempfile.TemporaryDirectory() as tmp:
        data: dict[str, Any] = {}
        if args.model == "smollm2":  # the bench spec's verbalizer data
            label_words = {"great": [" great", " excellent"], "other": [" bad", " okay"]}
            data = {"label_words": label_words, "splits": {"train": "train", "test": "test"}}
        spec = DataSpec(
            source="fine-foods",
            text_column="review",
            label_column="score",
            max_train_examples=args.train,
            max_eval_examples=args.eval,
            seed=0,
            **data,
        )
        cache = args.cache_dir or Path(tmp) / "cache"
        task = TaskType.VERBALIZER if args.model == "smollm2" else TaskType.CLASSIFICATION
        model_name = "smollm2-135m" if args.model == "smollm2" else "minilm"
        inputs = prepare_inputs(model_name, spec, task, max_length=args.max_length, cache_dir=cache)
        labels = [int(x) for x in load_split(inputs, "validation")["labels"]]
        majority = max(labels.count(v) for v in set(labels)) / len(labels)
        print(
            f"{model_name} ({task.value}), fine-foods: {inputs.counts.get('train')} train / "
            f"{len(labels)} validation reviews, "
            f"max_length {args.max_length}, batch {args.batch_size}, {args.steps} steps, evaluation every "
            f"{args.eval_every}; validation majority class {majority:.3f}; "
            f"torch threads {torch.get_num_threads()}",
            flush=True,
        )
        rows: list[dict[str, Any]] = []
        started = time.perf_counter()
        for seed in args.seeds:
            for method, lr in points:
                row: dict[str, Any] = {"method": method, "learning_rate": lr, "seed": seed}
                common = dict(
                    eval_every=args.eval_every, batch_size=args.batch_size, params=model["params"][method]
                )
                msg = f"  {method:<14} lr {lr:<7g} seed {seed}"
                if not args.long_only:
                    row["short"] = _run(
                        inputs,
                        method,
                        lr,
                        seed,
                        max_steps=args.steps,
                        stop_after=None,
                        out_dir=Path(tmp) / f"{method}-{lr:g}-{seed}",
                        **common,
                    )
                    accs = " ".join(f"{k}:{_fmt(v['accuracy'])}" for k, v in row["short"]["evals"].items())
                    msg += "  " + (accs or "-") + ("  (diverged)" if row["short"]["diverged"] else "")
                if args.long_steps and (args.long_only or method in args.long_methods):
                    row["long"] = _run(
                        inputs,
                        method,
                        lr,
                        seed,
                        max_steps=args.long_steps,
                        stop_after=first,
                        out_dir=Path(tmp) / f"{method}-{lr:g}-{seed}-long",
                        **common,
                    )
                    e = row["long"]["evals"].get(str(first))
                    msg += (
                        f"  | {args.long_steps}-step schedule {first}:{_fmt(e['accuracy']) if e else 'NaN'}"
                    )
                print(f"{msg}  ({time.perf_counter() - started:.0f} s)", flush=True)
                rows.append(row)
                if args.json:  # after every point, so an interrupted run keeps what it measured
                    _write_json(args, majority, rows)

    print()
    print(_table(rows, steps, args.long_steps if any("long" in r for r in rows) else 0, first))
    print(f"\nvalidation majority class: {majority:.3f}")


if __name__ == "__main__":
    main()
