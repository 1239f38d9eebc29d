"""What the methods layer guarantees beyond the table: pooling, generate() with a prefix, measured
parameter counts, the report callback, NaN handling, position limits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from promptsweep.exceptions import DataError, MethodConfigError, SpecError, TrainingError
from promptsweep.methods import (
    DataSpec,
    Pooling,
    PreparedInputs,
    TaskType,
    TrainBudget,
    TrialResult,
    evaluate_adapter,
    method_config_from_params,
    prepare_inputs,
    train_trial,
)
from promptsweep.methods._data import load_split
from promptsweep.methods._modeling import build_peft_model, collate
from promptsweep.methods._step import TrainStep
from promptsweep.methods._train import _examples, count_parameters

TINY = TrainBudget(max_steps=4, max_epochs=None, eval_every_steps=2, batch_size=8)


def _head_input_and_hidden(model, batch):
    """(what the classification head receives (batch, hidden), the encoder's last hidden states)."""
    encoder = model.get_base_model().base_model
    seen: dict[str, torch.Tensor] = {}
    h1 = model.get_base_model().classifier.register_forward_pre_hook(lambda m, a: seen.update(head=a[0]))
    h2 = encoder.encoder.register_forward_hook(lambda m, a, out: seen.update(hidden=out[0]))
    try:
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        h1.remove()
        h2.remove()
    return seen["head"], seen["hidden"]


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning", "p_tuning"])
def test_each_pooling_mode_changes_what_the_head_sees(prepared, method) -> None:
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    batch = collate(_examples(load_split(inputs, "train"))[:6], inputs.task, inputs.pad_token_id)
    mask = batch["attention_mask"].float()
    assert (mask == 0).any()  # padding present, so mean-over-real-tokens differs from a plain mean
    n = 4
    heads = {}
    for pooling in Pooling:
        params = {"method": method, "learning_rate": 0.1, "num_virtual_tokens": n, "pooling": pooling.value}
        model = build_peft_model(inputs, method_config_from_params(params, inputs.task), seed=0).eval()
        head, hidden = _head_input_and_hidden(model, batch)
        real = hidden[:, -mask.shape[1] :]  # prompt tuning / P-tuning prepend n virtual positions
        assert hidden.shape[1] == mask.shape[1] + (0 if method == "prefix_tuning" else n)
        expected = {
            Pooling.POOLER: lambda h=hidden, m=model: m.get_base_model().base_model.pooler(h),
            Pooling.FIRST_TOKEN: lambda h=hidden: h[:, 0],
            # mean over real tokens only: virtual positions and padding excluded
            Pooling.MEAN: lambda r=real: (r * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True),
        }[pooling]()
        torch.testing.assert_close(head, expected)
        heads[pooling] = head
    assert not torch.allclose(heads[Pooling.MEAN], heads[Pooling.FIRST_TOKEN])
    assert not torch.allclose(heads[Pooling.POOLER], heads[Pooling.FIRST_TOKEN])


@pytest.mark.parametrize("kind", ["decoder", "gpt2"])
def test_generate_with_a_prefix_differs_from_the_base_model(prepared, kind) -> None:
    # transformers 5.x was seen ignoring the prefix in generate(); 4.57 + peft 0.21 must not.
    inputs = prepared(TaskType.VERBALIZER, kind)
    config = method_config_from_params(
        {"method": "prefix_tuning", "learning_rate": 0.1, "num_virtual_tokens": 4}, inputs.task
    )
    model = build_peft_model(inputs, config, seed=0).eval()
    assert model.prompt_encoder["default"].embedding.weight.abs().sum() > 0  # a non-zero prefix
    ids = torch.tensor([load_split(inputs, "validation")["input_ids"][0]])
    kwargs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "max_new_tokens": 3,
        "do_sample": False,
        "output_scores": True,
        "return_dict_in_generate": True,
        "pad_token_id": inputs.pad_token_id,
    }
    with torch.no_grad():
        with_prefix = model.generate(**kwargs)
        bare = model.get_base_model().generate(**kwargs)
        forward = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1]
    assert not torch.allclose(with_prefix.scores[0], bare.scores[0], atol=1e-4)
    # generate() injects the same prefix as forward(): its first-step scores are forward's last logits
    torch.testing.assert_close(with_prefix.scores[0], forward, rtol=1e-4, atol=1e-4)


def test_parameter_counts_are_measured_on_the_built_model(prepared, tmp_path: Path) -> None:
    inputs = prepared(TaskType.VERBALIZER, "decoder")
    counts = {}
    for name, params in {
        "prompt": {"method": "prompt_tuning"},
        "prefix": {"method": "prefix_tuning"},
        "prefix_mlp": {"method": "prefix_tuning", "prefix_projection": True, "encoder_hidden_size": 64},
        "lstm": {"method": "p_tuning", "encoder_type": "LSTM"},
        "mlp": {"method": "p_tuning", "encoder_type": "MLP"},
    }.items():
        full = dict(params, learning_rate=0.01, num_virtual_tokens=8)
        result = train_trial(
            inputs, full, budget=TrainBudget(max_steps=1, max_epochs=None), output_dir=tmp_path / name, seed=0
        )
        model = build_peft_model(inputs, method_config_from_params(full, inputs.task))
        assert (result.trainable_params, result.total_params) == count_parameters(model)
        counts[name] = result.trainable_params
    hidden, layers = 32, 2
    assert counts["prompt"] == 8 * hidden
    assert counts["prefix"] == 8 * 2 * layers * 16  # GQA: keys/values are head_dim * kv_heads = 16 wide
    # the reparameterizations dominate: counted, not derived from the token count
    assert counts["lstm"] > counts["mlp"] > counts["prompt"]
    assert counts["prefix_mlp"] > 10 * counts["prefix"]


def test_a_time_share_resizes_the_trial_to_what_its_steps_show_fits(prepared, tmp_path: Path) -> None:
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    params = {"method": "prompt_tuning", "learning_rate": 0.1, "num_virtual_tokens": 4}
    planned = TrainBudget(max_steps=20, max_epochs=None, eval_every_steps=5, batch_size=8)
    # no time for its steps: it ends at a quarter of them; all the time in the world: at twice them.
    # Either way it validates once, at its end (it cannot know its end in advance)
    for share, ends in ((1e-6, 5), (1e6, 40)):
        steps: list[int] = []
        result = train_trial(
            inputs,
            params,
            budget=dataclasses.replace(planned, step_time_s=share),
            output_dir=tmp_path / str(share),
            seed=0,
            report=lambda s, m, steps=steps: steps.append(s),
        )
        assert result.steps == ends and steps == [ends] and [s for s, _ in result.history] == [ends]
    # without a share: the planned steps, validated every 5
    steps = []
    train_trial(
        inputs,
        params,
        budget=planned,
        output_dir=tmp_path / "planned",
        seed=0,
        report=lambda s, m: steps.append(s),
    )
    assert steps == [5, 10, 15, 20]
    with pytest.raises(SpecError, match="step_time_s"):
        dataclasses.replace(planned, step_time_s=0.0)
    # validations at fractions of the steps as re-sized (a plan without screening: keep_best's states)
    for share, validated in ((1e-6, [2, 4, 5]), (1e6, [20, 30, 40])):
        result = train_trial(
            inputs,
            params,
            budget=dataclasses.replace(planned, step_time_s=share, eval_fractions=(0.75, 0.5)),
            output_dir=tmp_path / f"fractions-{share}",
            seed=0,
        )
        assert [s for s, _ in result.history] == validated
    with pytest.raises(SpecError, match="eval_fractions"):
        dataclasses.replace(planned, eval_fractions=(0.5, 1.0))
    with pytest.raises(SpecError, match="keep_best"):
        dataclasses.replace(planned, keep_best="f1")


@pytest.mark.parametrize("keep_best", ["eval_loss", None])
def test_keep_best_goes_back_to_an_earlier_state_that_validated_clearly_better(prepared, keep_best) -> None:
    """A trial whose last validation fell well below an earlier one ends in that earlier state: its
    parameters, its metrics and its outputs (the head is ruined after the validation at step 4, at a
    learning rate too small to repair it)."""
    from promptsweep.methods._train import evaluate_model, fit

    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    config = method_config_from_params(
        {"method": "prompt_tuning", "learning_rate": 1e-6, "num_virtual_tokens": 4}, inputs.task
    )
    model = build_peft_model(inputs, config, seed=0)
    head = dict(
        (n.rsplit(".", 1)[-1], p)
        for n, p in model.named_parameters()
        if n.startswith("base_model.classifier")
    )
    labels = load_split(inputs, "validation")["labels"]
    rarest = min(set(labels), key=labels.count)
    seen: dict[int, torch.Tensor] = {}

    def ruin_after_step_4(step: int, metrics: dict[str, float]) -> None:
        seen[step] = head["weight"].detach().clone()
        if step == 4:  # every review confidently the rarest class: a far larger validation loss
            with torch.no_grad():
                head["weight"].zero_()
                head["bias"].fill_(-50.0)[rarest] = 50.0

    budget = TrainBudget(
        max_steps=8, max_epochs=None, eval_fractions=(0.5,), keep_best=keep_best, batch_size=8
    )
    run = fit(
        model, inputs, config, budget=budget, seed=0, device=torch.device("cpu"), report=ruin_after_step_4
    )
    (at4, before), (at8, last) = run["history"]
    assert (at4, at8) == (4, 8) and last["eval_loss"] > 2 * before["eval_loss"]
    if keep_best is None:
        assert run["kept_step"] is None and run["metrics"] == last
        assert torch.equal(head["weight"], seen[8])
        return
    assert run["kept_step"] == 4 and run["metrics"] == before
    assert torch.equal(head["weight"], seen[4])  # the parameters validated at step 4, not those of step 8
    again = evaluate_model(
        model, inputs, _examples(load_split(inputs, "validation")), batch_size=64, device=torch.device("cpu")
    )
    assert again["eval_loss"] == pytest.approx(before["eval_loss"], rel=1e-4)


def test_clearly_better_allows_for_the_noise_of_the_validation_split() -> None:
    from promptsweep.methods import clearly_better

    # 200 validation reviews: the fall to the majority class (docs/quality.md) against a swing
    assert clearly_better("accuracy", 0.80, 0.665, 200)
    assert not clearly_better("accuracy", 0.795, 0.71, 200)
    assert clearly_better("accuracy", 0.795, 0.71, 2000)
    assert not clearly_better("accuracy", 0.71, 0.795, 2000)  # it must be better, not just different
    # macro-F1 is taken as a proportion; a loss (a mean over every example) counts by any margin
    assert clearly_better("macro_f1", 0.78, 0.52, 200) and not clearly_better("macro_f1", 0.78, 0.72, 200)
    assert clearly_better("eval_loss", 0.30, 0.31, 200) and not clearly_better("eval_loss", 0.31, 0.30, 200)


def test_discordant_counts_the_reviews_only_one_side_gets_right() -> None:
    from promptsweep.methods import discordant, paired_bound

    assert discordant("110100", "011100") == (1, 1)
    assert discordant("1111", "0011") == (2, 0) and discordant("0011", "1111") == (0, 2)  # the order holds
    with pytest.raises(ValueError, match="outcomes of 3 and 4 examples cannot be paired"):
        discordant("101", "1010")
    # McNemar with continuity correction at 2 standard errors: (2 sqrt(b + c) + 1) / n
    assert paired_bound(16, 4, 200) == pytest.approx((2 * 20**0.5 + 1) / 200)


def test_resizing_a_step_moves_the_end_of_the_learning_rate_decay(prepared) -> None:
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    config = method_config_from_params(
        {"method": "prompt_tuning", "learning_rate": 0.1, "num_virtual_tokens": 4}, inputs.task
    )
    model = build_peft_model(inputs, config, seed=0)
    budget = TrainBudget(max_steps=20, max_epochs=None, batch_size=8, warmup_ratio=0.1)  # 2 warm-up steps
    step = TrainStep(
        model, inputs, config, budget=budget, total_steps=20, precision="fp32", device=torch.device("cpu")
    )
    batch = _examples(load_split(inputs, "train"))[:8]
    lrs = []
    for _ in range(4):
        step(batch)
        lrs.append(step.optimizer.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(0.1 * (20 - 4) / (20 - 2))  # decaying towards step 20
    step.resize(8)
    assert step.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (8 - 4) / (8 - 2))  # at once
    for _ in range(4):
        step(batch)
    assert step.optimizer.param_groups[0]["lr"] == 0.0  # decayed to 0 at the new end


def test_warmup_steps_replace_the_warmup_ratio(prepared) -> None:
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    config = method_config_from_params(
        {"method": "prompt_tuning", "learning_rate": 0.1, "num_virtual_tokens": 4}, inputs.task
    )
    batch = _examples(load_split(inputs, "train"))[:8]
    lrs = {}
    for warmup_steps in (None, 3):  # the ratio's 10 warm-up steps, or 3
        budget = TrainBudget(
            max_steps=20, max_epochs=None, batch_size=8, warmup_ratio=0.5, warmup_steps=warmup_steps
        )
        step = TrainStep(
            build_peft_model(inputs, config, seed=0),
            inputs,
            config,
            budget=budget,
            total_steps=20,
            precision="fp32",
            device=torch.device("cpu"),
        )
        lrs[warmup_steps] = []
        for _ in range(4):
            step(batch)
            lrs[warmup_steps].append(step.optimizer.param_groups[0]["lr"])
    assert lrs[None] == pytest.approx([0.1 * k / 11 for k in (2, 3, 4, 5)])  # still warming up
    assert lrs[3] == pytest.approx([0.1 * 2 / 4, 0.1 * 3 / 4, 0.1, 0.1 * 16 / 17])  # warmed up at step 3
    with pytest.raises(SpecError, match="warmup_steps"):
        dataclasses.replace(budget, warmup_steps=-1)


def test_report_callback_can_stop_or_prune(prepared, tmp_path: Path) -> None:
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    params = {"method": "prompt_tuning", "learning_rate": 0.1, "num_virtual_tokens": 4}
    calls = []
    result = train_trial(
        inputs,
        params,
        budget=TINY,
        output_dir=tmp_path / "all",
        seed=0,
        report=lambda step, m: calls.append((step, m)),
    )
    assert [s for s, _ in calls] == [2, 4] and result.history == [(s, m) for s, m in calls]
    per_class = {"f1[great]", "f1[other]", "recall[great]", "recall[other]"}  # each class's F1 and recall
    assert set(calls[0][1]) == {"accuracy", "macro_f1", "eval_loss", "train_loss"} | per_class

    # evaluations at given steps only (a successive-halving plan's rungs), and always at the end
    at = dataclasses.replace(TINY, max_steps=7, eval_at_steps=(3, 5, 99))
    steps: list[int] = []
    ran = train_trial(
        inputs, params, budget=at, output_dir=tmp_path / "at", seed=0, report=lambda s, m: steps.append(s)
    )
    assert steps == [3, 5, 7] and [s for s, _ in ran.history] == steps and ran.steps == 7

    stopped = train_trial(
        inputs, params, budget=TINY, output_dir=tmp_path / "stop", seed=0, report=lambda step, m: True
    )
    assert stopped.steps == 2 and Path(stopped.adapter_dir, "adapter_config.json").is_file()

    class Pruned(Exception):
        pass

    def prune(step, metrics):
        raise Pruned(step)

    with pytest.raises(Pruned):
        train_trial(inputs, params, budget=TINY, output_dir=tmp_path / "pruned", seed=0, report=prune)
    assert not (tmp_path / "pruned" / "adapter").exists()


def test_nan_loss_stops_the_trial(tiny_models, tmp_path: Path, cache_dir: Path) -> None:
    from safetensors.torch import load_file, save_file

    from promptsweep.methods.testing import make_tiny_model

    broken = make_tiny_model(tmp_path / "broken", "encoder")
    state = load_file(broken / "model.safetensors")
    key = next(k for k in state if k.endswith("LayerNorm.weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    inputs = prepare_inputs(
        str(broken),
        DataSpec(max_train_examples=16, max_eval_examples=8),
        "classification",
        max_length=32,
        cache_dir=cache_dir,
    )
    with pytest.raises(TrainingError, match=r"loss became nan at step 1 \(params .*'method': 'p_tuning'"):
        train_trial(
            inputs,
            {"method": "p_tuning", "learning_rate": 0.01},
            budget=TINY,
            output_dir=tmp_path / "t",
            seed=0,
        )


def test_too_many_virtual_tokens_for_the_positions(prepared, tmp_path: Path) -> None:
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")  # max_length 48, 512 positions
    with pytest.raises(MethodConfigError, match=r"'num_virtual_tokens'=480 plus max_length=48 = 528"):
        train_trial(
            inputs,
            {"method": "prompt_tuning", "learning_rate": 0.1, "num_virtual_tokens": 480},
            budget=TINY,
            output_dir=tmp_path,
            seed=0,
        )


def _tiny_adapter(inputs: PreparedInputs, output_dir: Path, *, learning_rate: float) -> TrialResult:
    """A saved prompt-tuning adapter (2 virtual tokens) after :data:`TINY`'s 4 steps."""
    return train_trial(
        inputs,
        {"method": "prompt_tuning", "learning_rate": learning_rate, "num_virtual_tokens": 2},
        budget=TINY,
        output_dir=output_dir,
        seed=0,
    )


def test_evaluate_adapter_errors(prepared, tmp_path: Path) -> None:
    inputs = prepared(TaskType.GENERATION, "decoder")
    with pytest.raises(DataError, match="not a promptsweep adapter"):
        evaluate_adapter(inputs, tmp_path)
    result = _tiny_adapter(inputs, tmp_path / "t", learning_rate=0.1)
    with pytest.raises(DataError, match="no split 'test'"):  # a single local file: train + carved validation
        evaluate_adapter(inputs, result.adapter_dir, split="test")
    metrics = evaluate_adapter(inputs, result.adapter_dir, split="validation")
    assert set(metrics) == {"eval_loss", "perplexity", "exact_match"}
    assert metrics["perplexity"] == pytest.approx(torch.tensor(metrics["eval_loss"]).exp().item(), rel=1e-5)


@pytest.mark.parametrize("task", [TaskType.CLASSIFICATION, TaskType.VERBALIZER])
def test_adapter_outcomes_name_each_review_right_or_wrong_in_the_split_order(
    prepared, tmp_path: Path, task: TaskType
) -> None:
    """``adapter_outcomes`` (the selected trial's side of a paired test against a floor): one
    character per validation review, in the split's order, equal to the reloaded adapter's prediction
    on that review alone; its share of hits is ``evaluate_adapter``'s accuracy."""
    from promptsweep.methods import adapter_outcomes
    from promptsweep.methods._modeling import class_logits
    from promptsweep.methods._train import load_adapter_model

    inputs = prepared(task, "encoder" if task is TaskType.CLASSIFICATION else "decoder")
    result = _tiny_adapter(inputs, tmp_path / "t", learning_rate=0.3)
    got = adapter_outcomes(inputs, result.adapter_dir)
    examples = _examples(load_split(inputs, "validation"))
    model = load_adapter_model(inputs, result.adapter_dir, device="cpu").eval()
    by_hand = ""
    with torch.no_grad():
        for example in examples:  # one at a time: no padding, the split's order
            batch = collate([example], inputs.task, inputs.pad_token_id)
            pred = class_logits(model, batch, inputs.task, inputs.label_word_ids).argmax(dim=-1).item()
            by_hand += "1" if pred == example["label"] else "0"
    assert got == by_hand and len(got) == len(examples)
    accuracy = evaluate_adapter(inputs, result.adapter_dir, split="validation")["accuracy"]
    assert got.count("1") / len(got) == pytest.approx(accuracy)


def test_adapter_outcomes_are_refused_for_generation(prepared, tmp_path: Path) -> None:
    from promptsweep.methods import adapter_outcomes

    inputs = prepared(TaskType.GENERATION, "decoder")
    result = _tiny_adapter(inputs, tmp_path / "t", learning_rate=0.1)
    with pytest.raises(MethodConfigError, match="classification and verbalizer"):
        adapter_outcomes(inputs, result.adapter_dir)


@pytest.mark.parametrize(
    "params",
    [
        {"method": "p_tuning", "encoder_type": "LSTM", "encoder_hidden_size": 16},
        {"method": "prefix_tuning", "prefix_projection": True, "encoder_hidden_size": 16},
    ],
    ids=["p_tuning_lstm", "prefix_projection"],
)
def test_full_encoder_state_is_saved_for_resuming(prepared, tmp_path: Path, params) -> None:
    # PEFT saves only the encoder's output; the full LSTM/MLP state beside it lets training resume.
    from safetensors.torch import load_file

    from promptsweep.methods._train import load_adapter_model

    inputs = prepared(TaskType.VERBALIZER, "decoder")
    full = dict(params, learning_rate=0.05, num_virtual_tokens=4)
    result = train_trial(inputs, full, budget=TINY, output_dir=tmp_path, seed=0)
    state = load_file(Path(result.adapter_dir) / "prompt_encoder_full.safetensors")
    assert any(k.startswith(("lstm_head", "mlp_head", "transform")) for k in state), sorted(state)
    fresh = build_peft_model(inputs, method_config_from_params(full, inputs.task), seed=1)  # another init
    fresh.prompt_encoder["default"].load_state_dict(state)  # strict: every tensor present
    batch = collate(_examples(load_split(inputs, "validation"))[:4], inputs.task, inputs.pad_token_id)
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        resumed = fresh.eval()(**kwargs).logits
        saved = load_adapter_model(inputs, result.adapter_dir)(**kwargs).logits
    torch.testing.assert_close(resumed, saved, rtol=1e-4, atol=1e-5)
    assert any(p.requires_grad for p in fresh.prompt_encoder["default"].parameters())  # trainable again
