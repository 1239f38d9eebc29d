"""Batches grouped by length against random batches (a script, not a timed test).

Trials pad each batch to its longest example. ``TrainBudget.group_by_length`` (the default) draws each
training batch from examples of similar length (``promptsweep.methods._batches``); evaluation runs
sorted by length. This measures, on the benchmark specs' data (Fine Foods, every training review or
``--train`` of them):

(a) padding: the tokens a batch computes over the tokens of its examples, random vs grouped (one
    epoch's batches at each seed), and how often two examples batched together in one epoch are
    batched together again in the next (grouping's cost in randomness); ``--steps 0``: only this;
(b) training: ``train_trial`` of one config for ``--steps`` steps with random batches and with grouped
    ones, at each of ``--seeds`` (the two alternate which runs first, seed by seed: the machine is
    shared and noisy): seconds per step, their paired ratio, and the validation accuracy (MiniLM: the
    whole split, 800 reviews; SmolLM2: 200) after the same number of steps (the same examples seen),
    mean and min-max per arm; ``--eval-at`` adds validations at earlier steps (each run's learning
    curve, with the mean training loss since the previous validation);
(c) evaluation: one pass over the validation split in random order and sorted by length (the
    metrics are equal up to float rounding), seconds and ratio.

Configs: MiniLM (classification, 128 tokens, batch 16) - prefix tuning without projection, 20 virtual
tokens, lr 1e-2, mean pooling (the issue's hand config); SmolLM2 (verbalizer, 96 tokens, batch 8) -
prompt tuning from the text init, 20 virtual tokens, lr 1e-2 (the search's first config).

Usage:
    .venv/bin/python benchmarks/bench_batching.py [--models minilm smollm2] [--seeds 0 1 2]
        [--steps 100] [--eval-at 80 160 240] [--data-seed 0] [--train N] [--threads 2] [--precision auto]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS: dict[str, dict[str, Any]] = {
    "minilm": {
        "model": "minilm",
        "task": "classification",
        "max_length": 128,
        "batch_size": 16,
        "data": {"max_eval_examples": None},  # the whole validation split, 800 reviews
        "params": {
            "method": "prefix_tuning",
            "prefix_projection": False,
            "num_virtual_tokens": 20,
            "learning_rate": 1e-2,
            "pooling": "mean",
        },
    },
    "smollm2": {
        "model": "smollm2-135m",
        "task": "verbalizer",
        "max_length": 96,
        "batch_size": 8,
        # 200 validation reviews, as its benchmark spec: a pass over 800 takes ~4 min on 2 fp32 cores
        "data": {
            "max_eval_examples": 200,
            "label_words": {"great": [" great", " excellent"], "other": [" bad", " okay"]},
        },
        "params": {
            "method": "prompt_tuning",
            "prompt_init": "text",
            "prompt_init_text": "Is this food review great or bad?",
            "num_virtual_tokens": 20,
            "learning_rate": 1e-2,
        },
    },
}


def _spread(values: list[float], fmt: str) -> str:
    return f"{statistics.mean(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def _padding(lengths: list[int], batch_size: int, seeds: list[int]) -> dict[str, list[float]]:
    """Per seed and arm: tokens computed / tokens of the examples over one epoch, and the share of the
    pairs of examples batched together in that epoch that are batched together again in the next."""
    from itertools import combinations

    import torch

    from promptsweep.methods._batches import epoch_batches, padded_length

    out: dict[str, list[float]] = {}
    for grouped, arm in ((False, "random"), (True, "grouped")):
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            first, second = (epoch_batches(lengths, batch_size, gen, grouped=grouped) for _ in range(2))
            computed = sum(padded_length(lengths, b) * len(b) for b in first)
            out.setdefault(f"{arm} tokens", []).append(computed / sum(lengths))
            pairs = [{p for b in e for p in combinations(sorted(b), 2)} for e in (first, second)]
            out.setdefault(f"{arm} pairs again", []).append(len(pairs[0] & pairs[1]) / len(pairs[0]))
    return out


def _eval_pass(
    model: Any, inputs: Any, examples: list[dict[str, Any]], batch_size: int
) -> tuple[float, float]:
    """Seconds and accuracy of one validation pass over ``examples`` in the order given."""
    import torch

    from promptsweep.methods._modeling import class_logits, collate

    model.eval()
    hits, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], inputs.task, inputs.pad_token_id)
            logits = class_logits(model, batch, inputs.task, inputs.label_word_ids)
            hits += int((logits.argmax(-1) == batch["labels"]).sum())
    return time.perf_counter() - t0, hits / len(examples)


def run_model(name: str, args: argparse.Namespace, tmp: Path) -> None:
    import torch

    from promptsweep.methods import DataSpec, TrainBudget, prepare_inputs, train_trial
    from promptsweep.methods._batches import by_length, example_length
    from promptsweep.methods._data import load_split
    from promptsweep.methods._train import _examples, load_adapter_model

    cfg = MODELS[name]
    data = DataSpec(
        source="fine-foods",
        text_column="review",
        label_column="score",
        splits={"train": "train", "test": "test"},
        validation_fraction=0.2,
        max_train_examples=args.train,
        seed=args.data_seed,
        **cfg["data"],
    )
    inputs = prepare_inputs(cfg["model"], data, cfg["task"], max_length=cfg["max_length"])
    train = _examples(load_split(inputs, "train"))
    val = _examples(load_split(inputs, "validation"))
    lengths = [example_length(e) for e in train]
    bs = cfg["batch_size"]
    pad = _padding(lengths, bs, args.seeds)
    print(
        f"\n## {name}: {len(train)} train / {len(val)} validation reviews, max_length {cfg['max_length']}, "
        f"batch {bs}, {args.steps} steps, data seed {args.data_seed}, "
        f"{torch.get_num_threads()} torch threads, params {cfg['params']}"
    )
    print(
        "(a) tokens computed / tokens of the examples, one epoch per seed: random "
        f"{_spread(pad['random tokens'], '.2f')}, grouped {_spread(pad['grouped tokens'], '.2f')}; "
        f"pairs batched together again the next epoch: random {_spread(pad['random pairs again'], '.3f')}, "
        f"grouped {_spread(pad['grouped pairs again'], '.3f')}"
    )
    if not args.steps:
        return
    rows: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    evals: list[tuple[float, float, float, float]] = []
    for k, seed in enumerate(args.seeds):
        for grouped in (False, True) if k % 2 == 0 else (True, False):
            budget = TrainBudget(
                max_steps=args.steps,
                max_epochs=None,
                eval_at_steps=tuple(sorted({*args.eval_at, args.steps})),
                batch_size=bs,
                eval_batch_size=64 if name == "minilm" else 32,
                precision=args.precision,
                group_by_length=grouped,
            )
            out = tmp / f"{name}-{seed}-{int(grouped)}"
            curve: list[str] = []

            def report(step: int, metrics: dict[str, float], curve: list[str] = curve) -> None:
                curve.append(f"{step}: {metrics['accuracy']:.3f} (train loss {metrics['train_loss']:.3f})")

            res = train_trial(inputs, cfg["params"], budget=budget, output_dir=out, seed=seed, report=report)
            step_s, acc = res.train_seconds / res.steps, res.metrics["accuracy"]
            rows[grouped].append({"seed": seed, "step_s": step_s, "acc": acc})
            arm = "grouped" if grouped else "random "
            print(f"  seed {seed} {arm}: {step_s:.2f} s/step, validation accuracy {acc:.3f}", flush=True)
            if len(curve) > 1:
                print(f"    validation accuracy by step: {'; '.join(curve)}", flush=True)
            if grouped:
                model = load_adapter_model(inputs, res.adapter_dir)
                gen = torch.Generator().manual_seed(seed)
                shuffled = [val[i] for i in torch.randperm(len(val), generator=gen).tolist()]
                eb = budget.eval_batch_size
                first = [(False, shuffled), (True, by_length(shuffled))][:: 1 if k % 2 == 0 else -1]
                timed = {s: _eval_pass(model, inputs, ex, eb) for s, ex in first}
                evals.append((timed[False][0], timed[True][0], timed[False][1], timed[True][1]))
    step_s = {g: [r["step_s"] for r in rows[g]] for g in rows}
    accs = {g: [r["acc"] for r in rows[g]] for g in rows}
    ratio = [r / g for r, g in zip(step_s[False], step_s[True], strict=True)]
    diffs = [round(g - r, 3) for r, g in zip(accs[False], accs[True], strict=True)]
    print(
        f"(b) s/step random {_spread(step_s[False], '.2f')}, grouped {_spread(step_s[True], '.2f')}; "
        f"speed-up (paired) {_spread(ratio, '.2f')}\n"
        f"    validation accuracy after {args.steps} steps: random {_spread(accs[False], '.3f')}, "
        f"grouped {_spread(accs[True], '.3f')}; grouped - random by seed {diffs}"
    )
    drift = max(abs(e[2] - e[3]) for e in evals)
    print(
        f"(c) validation pass: random order {_spread([e[0] for e in evals], '.1f')} s, sorted "
        f"{_spread([e[1] for e in evals], '.1f')} s; speed-up "
        f"{_spread([e[0] / e[1] for e in evals], '.2f')}; |accuracy change| max {drift:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["minilm", "smollm2"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--eval-at", type=int, nargs="*", default=[], help="also validate at these steps (a learning curve)"
    )
    parser.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="the data's seed (validation split and subsample), as a job's seed sets it (default 0)",
    )
    parser.add_argument("--train", type=int, default=None, help="training reviews (default: all 3,200)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            run_model(name, args, Path(tmp))


if __name__ == "__main__":
    main()
