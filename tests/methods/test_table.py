"""One table of (method, options) x task family on tiny models built from config (fast).

For every row: the loss falls, the outputs differ from the frozen base, every base parameter is frozen
and bit-identical after training, and the saved adapter reloaded with plain
``PeftModel.from_pretrained`` gives the same outputs and reproduces the recorded metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from promptsweep.methods import TaskType, TrainBudget, method_config_from_params, train_trial
from promptsweep.methods._data import load_split
from promptsweep.methods._modeling import build_base_model, build_peft_model, class_logits, collate
from promptsweep.methods._step import train_step_loss
from promptsweep.methods._train import _examples, evaluate_model, fit, load_adapter_model

#: (id, params) - each method and each of its options.
METHOD_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("prompt-random", {"method": "prompt_tuning", "prompt_init": "random", "learning_rate": 0.1}),
    ("prompt-vocab", {"method": "prompt_tuning", "prompt_init": "sample_vocab", "learning_rate": 0.1}),
    ("prompt-text", {"method": "prompt_tuning", "prompt_init": "text", "learning_rate": 0.1}),
    ("prefix-v2", {"method": "prefix_tuning", "prefix_projection": False, "learning_rate": 0.1}),
    (
        "prefix-mlp",
        {
            "method": "prefix_tuning",
            "prefix_projection": True,
            "encoder_hidden_size": 16,
            "learning_rate": 0.03,
        },
    ),
    (
        "ptuning-lstm",
        {
            "method": "p_tuning",
            "encoder_type": "LSTM",
            "encoder_hidden_size": 16,
            "encoder_num_layers": 1,
            "learning_rate": 0.03,
        },
    ),
    (
        "ptuning-mlp",
        {
            "method": "p_tuning",
            "encoder_type": "MLP",
            "encoder_hidden_size": 16,
            "encoder_dropout": 0.1,
            "learning_rate": 0.03,
        },
    ),
]
#: (task, tiny model kind)
TASK_ROWS = [
    (TaskType.CLASSIFICATION, "encoder"),
    (TaskType.VERBALIZER, "decoder"),
    (TaskType.GENERATION, "decoder"),
]
CASES = [
    pytest.param(task, kind, dict(params, num_virtual_tokens=4), id=f"{task.value}-{name}")
    for task, kind in TASK_ROWS
    for name, params in METHOD_ROWS
]
BUDGET = TrainBudget(max_steps=24, max_epochs=None, eval_every_steps=12, batch_size=8, eval_batch_size=32)


def _outputs(model: Any, inputs, examples, *, bare: bool = False) -> torch.Tensor:
    """What the method changes, for the first 8 examples.

    Classification: the pooled encoder features the head sees (batch, hidden). Verbalizer: class scores
    (batch, labels). Generation: logits over the real positions (batch, seq, vocab). ``bare``: the same
    from the frozen base model alone (no virtual tokens, no prefix).
    """
    batch = collate(examples[:8], inputs.task, inputs.pad_token_id)
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    model.eval()
    with torch.no_grad():
        if inputs.task is TaskType.CLASSIFICATION:
            encoder = model.get_base_model().base_model
            if bare:
                return encoder(**kwargs).pooler_output
            seen = []
            handle = encoder.pooler.register_forward_hook(lambda m, a, out: seen.append(out))
            try:
                model(**kwargs)
            finally:
                handle.remove()
            return seen[0]
        target = model.get_base_model() if bare else model
        if inputs.task is TaskType.GENERATION:
            return target(**kwargs).logits[:, -batch["input_ids"].shape[1] :]
        return class_logits(target, batch, inputs.task, inputs.label_word_ids)


def _train_loss(model: Any, inputs, examples) -> float:
    """Mean training loss over ``examples`` (eval mode, batches of 16): the quantity training minimizes."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(examples), 16):
            chunk = examples[start : start + 16]
            batch = collate(chunk, inputs.task, inputs.pad_token_id)
            total += train_step_loss(model, batch, inputs).item() * len(chunk)
    model.train()
    return total / len(examples)


@pytest.mark.parametrize(("task", "kind", "params"), CASES)
def test_method_trains_and_round_trips(task, kind, params, prepared, tmp_path: Path) -> None:
    inputs = prepared(task, kind)
    config = method_config_from_params(params, task)
    train = _examples(load_split(inputs, "train"))

    # Frozen base: a copy of every base parameter before training (peft's trainable head copy excluded).
    model = build_peft_model(inputs, config, seed=0)
    base = model.get_base_model()
    before = {n: p.detach().clone() for n, p in base.named_parameters() if "modules_to_save" not in n}
    assert before and all(not base.get_parameter(n).requires_grad for n in before)
    loss_before = _train_loss(model, inputs, train)

    run = fit(model, inputs, config, budget=BUDGET, seed=0, device=torch.device("cpu"))
    assert run["steps"] == 24 and len(run["history"]) == 2

    # 1. the loss falls (on the training examples).
    loss_after = _train_loss(model, inputs, train)
    assert loss_after < loss_before - 1e-3, (loss_before, loss_after)

    # 2. every base parameter is bit-identical and still frozen.
    for name, value in before.items():
        p = base.get_parameter(name)
        assert not p.requires_grad, name
        assert torch.equal(p, value), f"base parameter {name} changed"

    # 3. outputs differ from the frozen base (the adapter disabled = the bare base model).
    trained = _outputs(model, inputs, train)
    bare = _outputs(model, inputs, train, bare=True)
    assert trained.shape == bare.shape
    assert not torch.allclose(trained, bare, atol=1e-4)

    # 4. train_trial saves an adapter that plain PeftModel.from_pretrained reloads to the same outputs
    #    and the same validation metric.
    result = train_trial(inputs, params, budget=BUDGET, output_dir=tmp_path, seed=0)
    adapter = Path(result.adapter_dir)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "prompt_encoder_full.safetensors").is_file()
    reloaded = load_adapter_model(inputs, adapter)
    assert type(reloaded).__name__.startswith("PeftModel")
    val = _examples(load_split(inputs, "validation"))
    again = evaluate_model(reloaded, inputs, val, batch_size=32, device=torch.device("cpu"))
    for key, value in result.metrics.items():
        if key != "train_loss":
            assert again[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    # the in-memory model of this fit and the trial's model followed the same seed: same outputs
    torch.testing.assert_close(_outputs(reloaded, inputs, train), trained, rtol=1e-4, atol=1e-4)
    assert result.trainable_params > 0 and result.total_params > result.trainable_params
    assert result.steps == 24 and result.examples_per_second > 0 and result.peak_memory_bytes > 0


def test_training_is_deterministic_on_cpu(prepared, tmp_path: Path) -> None:
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    params = {
        "method": "p_tuning",
        "encoder_type": "LSTM",
        "num_virtual_tokens": 4,
        "learning_rate": 0.01,
        "encoder_hidden_size": 16,
        "encoder_dropout": 0.2,
    }
    budget = TrainBudget(max_steps=6, max_epochs=None, eval_every_steps=3, batch_size=8)
    a = train_trial(inputs, params, budget=budget, output_dir=tmp_path / "a", seed=3)
    b = train_trial(inputs, params, budget=budget, output_dir=tmp_path / "b", seed=3)
    c = train_trial(inputs, params, budget=budget, output_dir=tmp_path / "c", seed=4)
    assert a.history == b.history
    assert a.history != c.history


def test_base_model_weights_match_the_checkpoint(prepared, tiny_models) -> None:
    # The frozen base inside a trial is the checkpoint on disk, not a re-initialized model.
    from transformers import AutoModel

    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    config = method_config_from_params({"method": "prefix_tuning", "learning_rate": 0.01}, inputs.task)
    base = build_base_model(inputs, config)
    disk = AutoModel.from_pretrained(tiny_models["encoder"])
    for name, value in disk.state_dict().items():
        if name.startswith("pooler"):
            continue  # replaced by the pooling module (mean by default)
        assert torch.equal(base.base_model.state_dict()[name], value), name
