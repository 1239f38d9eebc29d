"""Encoder-decoder (T5 family) for every method, on the verbalizer and the generation task: a tiny T5 built
from config (MiniLM's tokenizer; no T5 checkpoint ships here). Each test shows an effect on outputs: the
adapter changes the decoder's scores against the bare model, training lowers the loss, the adapter
reloaded with plain ``PeftModel.from_pretrained`` reproduces the recorded metrics, and the trainable
parameters are the ones the method uses and peft reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from promptsweep.exceptions import MethodConfigError
from promptsweep.methods import (
    DataSpec,
    ModelSupportError,
    TaskType,
    TrainBudget,
    check_model_support,
    evaluate_adapter,
    load_adapter_model,
    method_config_from_params,
    prepare_inputs,
    train_trial,
)
from promptsweep.methods._architectures import read_model_config
from promptsweep.methods._data import load_split
from promptsweep.methods._modeling import (
    build_base_model,
    build_peft_model,
    class_logits,
    collate,
    generate_kwargs,
    generation_loss,
)
from promptsweep.methods._step import TrainStep
from promptsweep.methods._train import _examples, count_parameters

N = 4  # virtual tokens
#: method params -> the trainable parameter count on the tiny T5 (d_model 32, 4 heads x d_kv 16 = 64 wide
#: attention, 3 decoder layers), worked out by hand from peft's modules.
CASES = {
    "prompt_tuning": ({"method": "prompt_tuning"}, N * 32),  # one set of virtual tokens, not peft's two
    # the prefix: keys + values of the 3 *decoder* layers, 64 wide (num_heads * d_kv, not d_model)
    "prefix_tuning": ({"method": "prefix_tuning"}, N * 3 * 2 * 64),
    "prefix_projection": (
        {"method": "prefix_tuning", "prefix_projection": True, "encoder_hidden_size": 16},
        N * 64 + (64 * 16 + 16) + (16 * 3 * 2 * 64 + 3 * 2 * 64),
    ),
    "p_tuning_mlp": (
        {"method": "p_tuning", "encoder_type": "MLP", "encoder_hidden_size": 16},
        N * 32 + (32 * 16 + 16) + (16 * 16 + 16) + (16 * 32 + 32),
    ),
    "p_tuning_lstm": (
        {"method": "p_tuning", "encoder_type": "LSTM", "encoder_hidden_size": 16, "encoder_num_layers": 1},
        # embedding + bidirectional LSTM(32 -> 16) + MLP head (32 -> 32 -> 32)
        N * 32 + 2 * (4 * 16 * 32 + 4 * 16 * 16 + 2 * 4 * 16) + 2 * (32 * 32 + 32),
    ),
}
BUDGET = TrainBudget(max_steps=3, max_epochs=None, eval_every_steps=3, batch_size=8, eval_batch_size=16)


def _params(case: str, lr: float = 3e-2) -> dict:
    return {**CASES[case][0], "learning_rate": lr, "num_virtual_tokens": N}


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from promptsweep.methods.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-t5") / "t5", "t5")


@pytest.fixture(scope="module")
def t5_inputs(t5_dir: Path, cache_dir: Path, generation_file: Path):
    small = DataSpec(max_train_examples=32, max_eval_examples=16)
    gen = DataSpec(source=str(generation_file), max_train_examples=32, max_eval_examples=8)
    return {
        TaskType.VERBALIZER: prepare_inputs(
            str(t5_dir), small, "verbalizer", max_length=48, cache_dir=cache_dir
        ),
        TaskType.GENERATION: prepare_inputs(
            str(t5_dir), gen, "generation", max_length=48, cache_dir=cache_dir
        ),
    }


def _batch(inputs, n: int = 8) -> dict:
    return collate(_examples(load_split(inputs, "train"))[:n], inputs.task, inputs.pad_token_id, seq2seq=True)


def _loss(model, inputs, batch) -> torch.Tensor:
    if inputs.task is TaskType.GENERATION:
        loss, n = generation_loss(model, batch)
        return loss / n
    return torch.nn.functional.cross_entropy(
        class_logits(model, batch, inputs.task, inputs.label_word_ids), batch["labels"]
    )


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("task", [TaskType.VERBALIZER, TaskType.GENERATION])
def test_each_method_changes_the_decoder_and_trains(t5_inputs, case: str, task: TaskType) -> None:
    inputs = t5_inputs[task]
    config = method_config_from_params(_params(case), task)
    base = build_base_model(inputs, config, seed=0).eval()
    model = build_peft_model(inputs, config, seed=0).eval()
    assert model.active_peft_config.task_type == "SEQ_2_SEQ_LM"
    trainable, _ = count_parameters(model)
    assert trainable == CASES[case][1] == model.get_nb_trainable_parameters()[0]
    batch = _batch(inputs)
    with torch.no_grad():
        bare, adapted = _loss(base, inputs, batch), _loss(model, inputs, batch)
    assert not torch.isclose(bare, adapted, rtol=1e-4), "the soft prompt / prefix did not reach the decoder"
    step = TrainStep(
        model, inputs, config, budget=BUDGET, total_steps=100, precision="fp32", device=torch.device("cpu")
    )
    examples = _examples(load_split(inputs, "train"))[:8]
    losses = [step(examples) for _ in range(8)]  # the same batch: the loss must fall
    assert losses[-1] < losses[0] - 1e-3, losses


@pytest.mark.parametrize("case", ["prompt_tuning", "prefix_projection", "p_tuning_lstm"])
@pytest.mark.parametrize("task", [TaskType.VERBALIZER, TaskType.GENERATION])
def test_trial_adapter_reloads_with_plain_peft(t5_inputs, tmp_path: Path, case: str, task: TaskType) -> None:
    inputs = t5_inputs[task]
    result = train_trial(inputs, _params(case), budget=BUDGET, output_dir=tmp_path, seed=0, device="cpu")
    again = evaluate_adapter(inputs, result.adapter_dir, split="validation", device="cpu")
    for name, value in result.metrics.items():
        if name != "train_loss":
            assert again[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    # the reloaded model is the trained one, not the bare model
    reloaded = load_adapter_model(inputs, result.adapter_dir, device="cpu")
    base = build_base_model(inputs, method_config_from_params(_params(case), task)).eval()
    batch = _batch(inputs)
    with torch.no_grad():
        assert not torch.isclose(_loss(base, inputs, batch), _loss(reloaded, inputs, batch), rtol=1e-4)
    assert result.trainable_params == CASES[case][1]


@pytest.mark.parametrize("case", ["prompt_tuning", "prefix_tuning", "p_tuning_mlp"])
def test_generate_uses_the_prompt(t5_inputs, case: str) -> None:
    # peft's generate() for encoder-decoders takes separate paths per method (inputs_embeds for virtual
    # tokens, past_key_values at prefill for the prefix): the first decoding step's scores must differ.
    inputs = t5_inputs[TaskType.GENERATION]
    config = method_config_from_params(_params(case), TaskType.GENERATION)
    ids = torch.tensor([load_split(inputs, "validation")["input_ids"][0]])
    scores = []
    for model in (build_base_model(inputs, config).eval(), build_peft_model(inputs, config).eval()):
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=2,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                **generate_kwargs(model),
            )
        scores.append(out.scores[0])
    assert not torch.allclose(scores[0], scores[1], atol=1e-4)


def test_generate_on_a_decoder_deeper_than_its_encoder(t5_inputs) -> None:
    # transformers 4.57 sizes T5's generation cache from the encoder's depth; the tiny T5 has 2 encoder and
    # 3 decoder layers, so a bare generate() fails and ours (generate_kwargs) must not.
    inputs = t5_inputs[TaskType.GENERATION]
    model = build_base_model(inputs, method_config_from_params(_params("prompt_tuning"), inputs.task)).eval()
    ids = torch.tensor([load_split(inputs, "validation")["input_ids"][0]])
    with pytest.raises(IndexError):
        model.generate(input_ids=ids, max_new_tokens=2, do_sample=False)
    out = model.generate(input_ids=ids, max_new_tokens=2, do_sample=False, **generate_kwargs(model))
    assert out.shape == (1, 3)  # the start token + 2


def test_t5_refuses_classification(t5_dir: Path, cache_dir: Path) -> None:
    with pytest.raises(
        ModelSupportError,
        match=r"^task: model .* is an encoder-decoder \(model_type 't5'\).*'classification'",
    ) as err:
        check_model_support(read_model_config(t5_dir), "classification", model=str(t5_dir))
    assert err.value.field == "task"
    # and the trainer refuses it before building anything, the same way
    inputs = prepare_inputs(
        str(t5_dir),
        DataSpec(max_train_examples=32, max_eval_examples=16),
        "classification",
        max_length=32,
        cache_dir=cache_dir,
    )
    with pytest.raises(MethodConfigError, match="'t5'"):
        build_base_model(inputs, method_config_from_params(_params("prompt_tuning"), "classification"))


@pytest.mark.parametrize("case", ["prefix_tuning", "p_tuning_mlp"])
def test_mt5_runs_each_method_and_reloads(tmp_path: Path, cache_dir: Path, case: str) -> None:
    from promptsweep.methods.testing import make_tiny_model

    model_dir = make_tiny_model(tmp_path / "mt5", "mt5")
    inputs = prepare_inputs(
        str(model_dir),
        DataSpec(max_train_examples=32, max_eval_examples=16),
        "verbalizer",
        max_length=48,
        cache_dir=cache_dir,
    )
    assert read_model_config(model_dir)["model_type"] == "mt5"
    result = train_trial(
        inputs, _params(case), budget=BUDGET, output_dir=tmp_path / "trial", seed=0, device="cpu"
    )
    assert result.trainable_params == CASES[case][1]  # the same shapes as the tiny T5
    again = evaluate_adapter(inputs, result.adapter_dir, split="validation", device="cpu")
    assert again["eval_loss"] == pytest.approx(result.metrics["eval_loss"], rel=1e-5)


def test_zero_shot_floor_scores_label_words_with_the_decoder(t5_inputs) -> None:
    from promptsweep.methods import score_floors
    from promptsweep.methods._train import evaluate_model

    inputs = t5_inputs[TaskType.VERBALIZER]
    floor = score_floors(inputs, floors=["zero_shot"], device="cpu")["zero_shot"]
    bare = build_base_model(inputs, method_config_from_params(_params("prompt_tuning"), inputs.task))
    val = _examples(load_split(inputs, "validation"))
    expected = evaluate_model(bare, inputs, val, batch_size=64, device=torch.device("cpu"))
    assert floor["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-6)
    assert floor["accuracy"] == expected["accuracy"]


def test_the_encoder_reads_whole_sequences_ending_with_the_closing_token(t5_inputs, t5_dir: Path) -> None:
    from promptsweep.methods._data import _special_affixes
    from promptsweep.methods._models import load_tokenizer

    _, closing = _special_affixes(load_tokenizer(t5_dir))
    assert closing  # the tiny T5's tokenizer closes a sequence ([SEP]; a real T5's is </s>)
    for inputs in t5_inputs.values():
        for split in ("train", "validation"):
            ids = load_split(inputs, split)["input_ids"]
            assert ids and all(list(x[-len(closing) :]) == closing for x in ids), (inputs.task, split)
            assert max(len(x) for x in ids) <= 48  # the closing token fits inside max_length
