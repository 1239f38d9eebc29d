"""Training batches grouped by length, evaluation sorted by it (promptsweep.methods._batches)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from promptsweep.methods import TaskType, TrainBudget, train_trial
from promptsweep.methods._batches import (
    by_length,
    epoch_batches,
    example_length,
    sorted_pass_tokens,
    typical_batch,
)
from promptsweep.methods._data import load_split
from promptsweep.methods._train import _examples, evaluate_model, load_adapter_model

#: review-like lengths: many short, a long tail cut at 128 tokens
LENGTHS = [min(128, 8 + int(random.Random(i).expovariate(1 / 60))) for i in range(1000)]


def _computed(lengths: list[int], batches: list[list[int]]) -> int:
    """Tokens the batches compute: each pads to its longest example."""
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("batch_size", [16, 7])
def test_an_epoch_holds_every_example_once(grouped: bool, batch_size: int) -> None:
    batches = epoch_batches(LENGTHS, batch_size, torch.Generator().manual_seed(0), grouped=grouped)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert len(batches) == math.ceil(len(LENGTHS) / batch_size)
    assert all(1 <= len(b) <= batch_size for b in batches)


def test_grouped_batches_pad_less_and_stay_random() -> None:
    bs = 16
    for seed in range(3):
        grouped = epoch_batches(LENGTHS, bs, torch.Generator().manual_seed(seed))
        shuffled = epoch_batches(LENGTHS, bs, torch.Generator().manual_seed(seed), grouped=False)
        assert _computed(LENGTHS, grouped) < 0.75 * _computed(LENGTHS, shuffled)
        assert _computed(LENGTHS, grouped) < 1.1 * sum(LENGTHS)
    # seeded: the same seed draws the same epoch, another seed other batches in another order
    a, b = (epoch_batches(LENGTHS, bs, torch.Generator().manual_seed(s)) for s in (0, 0))
    c = epoch_batches(LENGTHS, bs, torch.Generator().manual_seed(1))
    assert a == b
    assert {tuple(x) for x in a} != {tuple(x) for x in c}
    # the batches of an epoch are not in length order (a long batch can come first or last)
    padded = [max(LENGTHS[i] for i in x) for x in a]
    assert padded != sorted(padded) and padded != sorted(padded, reverse=True)


def test_a_typical_batch_is_as_long_as_the_mean_batch() -> None:
    for grouped in (True, False):
        for seed in range(3):
            batches = epoch_batches(LENGTHS, 16, torch.Generator().manual_seed(seed), grouped=grouped)
            mean = sum(max(LENGTHS[i] for i in b) for b in batches) / len(batches)  # padded length
            batch = typical_batch(LENGTHS, 16, torch.Generator().manual_seed(seed), grouped=grouped)
            assert len(batch) == 16
            assert 0.9 * mean <= max(LENGTHS[i] for i in batch) <= mean
    # a split smaller than a batch: drawn with replacement, still a full batch
    assert len(typical_batch([5, 9, 30], 8, torch.Generator().manual_seed(0))) == 8


def test_a_sorted_pass_computes_the_tokens_of_its_sorted_batches() -> None:
    for bs in (1, 7, 64):
        ordered = sorted(range(len(LENGTHS)), key=LENGTHS.__getitem__)
        batches = [ordered[i : i + bs] for i in range(0, len(ordered), bs)]
        assert sorted_pass_tokens(LENGTHS, bs) == _computed(LENGTHS, batches)
    assert sorted_pass_tokens(LENGTHS, 1) == sum(LENGTHS)
    assert sorted_pass_tokens([3, 10, 5], 8) == 30


def test_the_longest_batch_comes_first() -> None:
    for seed in range(3):
        batches = epoch_batches(LENGTHS, 16, torch.Generator().manual_seed(seed))
        padded = [max(LENGTHS[i] for i in b) for b in batches]
        assert padded[0] == max(padded)


def test_by_length_sorts_and_keeps_examples(prepared) -> None:
    val = _examples(load_split(prepared(TaskType.CLASSIFICATION, "encoder"), "validation"))
    ordered = by_length(val)
    assert [example_length(e) for e in ordered] == sorted(example_length(e) for e in val)
    assert sorted(map(id, ordered)) == sorted(map(id, val))


@pytest.mark.parametrize(
    ("task", "kind"), [(TaskType.CLASSIFICATION, "encoder"), (TaskType.VERBALIZER, "decoder")]
)
def test_sorted_evaluation_scores_each_example_as_unbatched(prepared, task, kind, tmp_path: Path) -> None:
    """Evaluation sorts by length: each prediction must still be scored against its own label, and
    padding must not change it - the metrics equal one example per batch (no padding at all)."""
    inputs = prepared(task, kind)
    params = {"method": "prompt_tuning", "num_virtual_tokens": 4, "learning_rate": 0.3}
    budget = TrainBudget(max_steps=6, max_epochs=None, eval_every_steps=6, batch_size=8)
    result = train_trial(inputs, params, budget=budget, output_dir=tmp_path / "t", seed=0)
    model = load_adapter_model(inputs, result.adapter_dir)
    val = _examples(load_split(inputs, "validation"))
    assert len({example_length(e) for e in val}) > 1  # the sort has something to reorder
    batched = evaluate_model(model, inputs, val, batch_size=16, device=torch.device("cpu"))
    single = evaluate_model(model, inputs, val, batch_size=1, device=torch.device("cpu"))
    assert batched["accuracy"] == single["accuracy"]
    assert batched["macro_f1"] == single["macro_f1"]
    assert batched["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-4)


def test_trials_train_on_the_batches_the_budget_asks_for(prepared, tmp_path: Path, monkeypatch) -> None:
    """``group_by_length`` reaches each epoch's draw, and the trial takes the batches in the drawn order:
    random batches (``group_by_length=False``) are a shuffled order cut into batches, the partial one
    last, as before batches were grouped."""
    import promptsweep.methods._train as train_mod

    drawn: list[tuple[bool, list[list[int]]]] = []
    real = train_mod.epoch_batches

    def spy(lengths, batch_size, generator, *, grouped=True):
        drawn.append((grouped, real(lengths, batch_size, generator, grouped=grouped)))
        return list(drawn[-1][1])

    monkeypatch.setattr(train_mod, "epoch_batches", spy)
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    n_train, bs = inputs.counts["train"], 7
    assert n_train % bs  # a partial batch
    per_epoch = math.ceil(n_train / bs)
    params = {"method": "prompt_tuning", "num_virtual_tokens": 4, "learning_rate": 0.1}
    for grouped in (True, False):
        drawn.clear()
        budget = TrainBudget(
            max_steps=per_epoch + 1,
            max_epochs=None,
            eval_every_steps=100,
            batch_size=bs,
            group_by_length=grouped,
        )
        result = train_trial(inputs, params, budget=budget, output_dir=tmp_path / str(grouped), seed=0)
        assert [g for g, _ in drawn] == [grouped, grouped]  # one draw per epoch
        first_epoch = drawn[0][1]
        # every example once in the first epoch, then the second epoch's first batch
        assert result.epochs == pytest.approx((n_train + len(drawn[1][1][0])) / n_train)
        if not grouped:
            order = torch.randperm(n_train, generator=torch.Generator().manual_seed(0)).tolist()
            assert first_epoch == [order[i : i + bs] for i in range(0, n_train, bs)]
