"""Encoder architectures beyond BERT: every pooling takes effect or is refused, every method runs or is
refused, on tiny BERT, RoBERTa, DistilBERT and DeBERTa-v2 models built from config (MiniLM's tokenizer).

What the classification head receives is read with hooks and compared with the pooling computed by hand
from the encoder's last hidden states; changing the pooling must change the head's input and the logits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from promptsweep.methods import (
    DataSpec,
    ModelSupportError,
    Pooling,
    TaskType,
    TrainBudget,
    evaluate_adapter,
    method_config_from_params,
    prepare_inputs,
    train_trial,
)
from promptsweep.methods._architectures import ENCODERS
from promptsweep.methods._data import load_split
from promptsweep.methods._modeling import build_base_model, build_peft_model, collate
from promptsweep.methods._train import _examples, count_parameters

KINDS = {
    "bert": "encoder",
    "roberta": "roberta",
    "xlm-roberta": "xlm-roberta",
    "distilbert": "distilbert",
    "deberta-v2": "deberta-v2",
}
#: model_type -> (the module whose input is the head's input, the encoder stack inside the backbone)
HOOKS = {
    "bert": ("classifier", "encoder"),
    "deberta-v2": ("classifier", "encoder"),
    "roberta": ("classifier", "encoder"),  # takes (batch, seq, hidden) and reads position 0
    "xlm-roberta": ("classifier", "encoder"),
    "distilbert": ("pre_classifier", "transformer"),
}
METHODS = ("prompt_tuning", "prefix_tuning", "p_tuning")
N = 4
BUDGET = TrainBudget(max_steps=3, max_epochs=None, eval_every_steps=3, batch_size=8, eval_batch_size=16)


@pytest.fixture(scope="module")
def encoder_inputs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    from promptsweep.methods.testing import make_tiny_model

    root = tmp_path_factory.mktemp("tiny-encoders")
    spec = DataSpec(max_train_examples=32, max_eval_examples=16)
    return {
        model_type: prepare_inputs(
            str(make_tiny_model(root / kind, kind)),
            spec,
            "classification",
            max_length=40,
            cache_dir=cache_dir,
        )
        for model_type, kind in KINDS.items()
    }


def _config(method: str, pooling: Pooling | str, **extra):
    params = {
        "method": method,
        "learning_rate": 3e-2,
        "num_virtual_tokens": N,
        "pooling": str(pooling),
        **extra,
    }
    return method_config_from_params(params, TaskType.CLASSIFICATION)


def _batch(inputs) -> dict:
    """The 3 shortest and the 3 longest train examples (padding in the batch)."""
    examples = sorted(_examples(load_split(inputs, "train")), key=lambda e: len(e["input_ids"]))
    return collate(examples[:3] + examples[-3:], inputs.task, inputs.pad_token_id)


def _head_input_hidden_logits(model, model_type: str, batch: dict):
    """(the vector the head pools from (batch, hidden), the encoder's last hidden states, the logits)."""
    head_name, stack_name = HOOKS[model_type]
    task_model = model.get_base_model()
    seen: dict[str, torch.Tensor] = {}
    h1 = task_model.get_submodule(head_name).register_forward_pre_hook(lambda m, a: seen.update(head=a[0]))
    h2 = task_model.base_model.get_submodule(stack_name).register_forward_hook(
        lambda m, a, out: seen.update(hidden=out[0])
    )
    try:
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        h1.remove()
        h2.remove()
    head = seen["head"][:, 0] if seen["head"].dim() == 3 else seen["head"]
    return head, seen["hidden"], logits


CASES = [(t, m) for t in KINDS for m in METHODS if m in [x.value for x in ENCODERS[t].methods]]


@pytest.mark.parametrize(("model_type", "method"), CASES)
def test_every_pooling_takes_effect(encoder_inputs, model_type: str, method: str) -> None:
    inputs = encoder_inputs[model_type]
    batch = _batch(inputs)
    mask = batch["attention_mask"].float()
    assert (mask == 0).any()  # padding present: the mean over real tokens differs from a plain mean
    heads, logits = {}, {}
    for pooling in ENCODERS[model_type].poolings:
        model = build_peft_model(inputs, _config(method, pooling), seed=0).eval()
        head, hidden, logits[pooling] = _head_input_hidden_logits(model, model_type, batch)
        virtual = 0 if method == "prefix_tuning" else N
        assert hidden.shape[1] == mask.shape[1] + virtual
        real = hidden[:, virtual:]
        if pooling is Pooling.FIRST_TOKEN:  # the raw state at position 0 (the first virtual token, if any)
            torch.testing.assert_close(head, hidden[:, 0])
        elif pooling is Pooling.MEAN:  # real tokens only: virtual positions and padding excluded
            torch.testing.assert_close(head, (real * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))
        else:  # the checkpoint's / architecture's pooler: neither the raw first state nor the mean
            assert not torch.allclose(head, hidden[:, 0])
        heads[pooling] = head
    pairs = [(a, b) for a in heads for b in heads if a < b]
    assert pairs
    for a, b in pairs:  # the same seed builds the same head: only the pooling differs
        assert not torch.allclose(heads[a], heads[b]), (a, b)
        assert not torch.allclose(logits[a], logits[b]), (a, b)


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_pooler_is_refused_where_the_head_has_none(encoder_inputs, model_type: str) -> None:
    with pytest.raises(
        ModelSupportError, match=rf"^space\.pooling: pooling 'pooler' .*'{model_type}'.*first_token"
    ):
        build_base_model(encoder_inputs[model_type], _config("prompt_tuning", "pooler"))


@pytest.mark.parametrize("model_type", ["distilbert", "deberta-v2"])
def test_prefix_tuning_is_refused_without_past_key_values(encoder_inputs, model_type: str) -> None:
    with pytest.raises(
        ModelSupportError, match=rf"^space\.methods: method 'prefix_tuning' .*'{model_type}'.*past_key_values"
    ):
        build_peft_model(encoder_inputs[model_type], _config("prefix_tuning", "mean"))


@pytest.mark.parametrize(
    ("model_type", "method", "pooling", "head_modules"),
    [
        ("bert", "prefix_tuning", "mean", ("classifier",)),
        ("roberta", "prefix_tuning", "mean", ("classifier",)),
        ("distilbert", "p_tuning", "first_token", ("pre_classifier", "classifier")),
        ("deberta-v2", "prompt_tuning", "pooler", ("pooler", "classifier")),
    ],
)
def test_trial_trains_the_whole_head_and_reloads(
    encoder_inputs, tmp_path: Path, model_type: str, method: str, pooling: str, head_modules
) -> None:
    inputs = encoder_inputs[model_type]
    config = _config(method, pooling)
    model = build_peft_model(inputs, config, seed=0)
    task_model = model.get_base_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head_params = 0
    for name in head_modules:  # the head's newly initialized modules train (peft modules_to_save)
        wrapped = task_model.get_submodule(name)
        assert any(n.startswith(f"base_model.{name}.modules_to_save") for n in trainable), name
        head_params += sum(p.numel() for p in wrapped.original_module.parameters())
    prompt = sum(p.numel() for p in model.prompt_encoder.parameters())
    assert count_parameters(model)[0] == prompt + head_params == model.get_nb_trainable_parameters()[0]
    before = {
        name: [p.clone() for p in task_model.get_submodule(name).original_module.parameters()]
        for name in head_modules
    }

    result = train_trial(inputs, config.to_params(), budget=BUDGET, output_dir=tmp_path, seed=0, device="cpu")
    assert result.trainable_params == prompt + head_params
    from peft import PeftModel

    base = build_base_model(inputs, config, seed=0)
    reloaded = PeftModel.from_pretrained(base, result.adapter_dir).eval()
    for name, init in before.items():  # the trained head came back, not the init
        trained = list(reloaded.get_base_model().get_submodule(name).modules_to_save["default"].parameters())
        assert any(not torch.allclose(a, b) for a, b in zip(trained, init, strict=True)), name
    again = evaluate_adapter(inputs, result.adapter_dir, split="validation", device="cpu")
    assert again["eval_loss"] == pytest.approx(result.metrics["eval_loss"], rel=1e-5)
    assert again["accuracy"] == result.metrics["accuracy"]


@pytest.mark.parametrize("model_type", ["roberta", "distilbert", "deberta-v2"])
def test_soft_prompt_changes_the_logits(encoder_inputs, model_type: str) -> None:
    inputs = encoder_inputs[model_type]
    batch = _batch(inputs)
    outs = []
    for method in ("prompt_tuning", "p_tuning", "prefix_tuning"):
        if method not in [m.value for m in ENCODERS[model_type].methods]:
            continue
        model = build_peft_model(inputs, _config(method, "mean"), seed=0).eval()
        # the same head with the prompt encoder's output zeroed out vs as initialized
        with torch.no_grad():
            with_prompt = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            for p in model.prompt_encoder.parameters():
                p.mul_(0.0)
            zeroed = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert not torch.allclose(with_prompt, zeroed), method
        outs.append(method)
    assert outs


@pytest.mark.parametrize(
    ("model_type", "pooling"), [("roberta", "mean"), ("distilbert", "first_token"), ("deberta-v2", "pooler")]
)
def test_head_only_floor_trains_the_architectures_head(encoder_inputs, model_type: str, pooling: str) -> None:
    # RoBERTa's head takes the sequence (the floor caches position 0), DistilBERT's starts at
    # pre_classifier, DeBERTa's at its ContextPooler: the floor trains what trials train as the head.
    from promptsweep.methods import score_floors
    from promptsweep.methods._train import evaluate_model

    inputs = encoder_inputs[model_type]
    floor = score_floors(inputs, floors=["head_only"], pooling=Pooling(pooling), head_steps=20, device="cpu")
    untrained = evaluate_model(
        build_base_model(inputs, _config("prompt_tuning", pooling), seed=0),
        inputs,
        _examples(load_split(inputs, "validation")),
        batch_size=16,
        device=torch.device("cpu"),
    )
    assert floor["head_only"]["eval_loss"] != pytest.approx(untrained["eval_loss"], rel=1e-6)
    # the floor's head starts where the trials' head does (what it trains: that module on)
    from promptsweep.methods._floors import _trial_head

    model = build_base_model(inputs, _config("prompt_tuning", pooling), seed=0)
    entry, _ = _trial_head(model)
    first = {"roberta": "classifier", "distilbert": "pre_classifier", "deberta-v2": "pooler"}[model_type]
    assert entry is model.get_submodule(first)
