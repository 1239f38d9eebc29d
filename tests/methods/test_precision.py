"""Training precision: bf16 where the device computes it natively, else fp32.

bf16 covers the training steps' forward/backward through the frozen model; the trainable parameters,
the optimizer state, the saved adapter and the recorded validation metrics stay fp32. "Unsupported" is
simulated honestly: by the CPU flag set the check reads, never by a made-up device.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from promptsweep.exceptions import MethodConfigError, SpecError
from promptsweep.methods import (
    PRECISIONS,
    TaskType,
    TrainBudget,
    _precision,
    _step,
    cpu_bf16_supported,
    method_config_from_params,
    resolve_precision,
    train_trial,
)
from promptsweep.methods._data import load_split
from promptsweep.methods._modeling import build_peft_model, collate
from promptsweep.methods._step import train_step_loss
from promptsweep.methods._train import _examples, evaluate_model, fit, load_adapter_model, read_adapter_meta

BUDGET = TrainBudget(max_steps=12, max_epochs=None, eval_every_steps=6, batch_size=8, eval_batch_size=32)
PARAMS = {"method": "prompt_tuning", "num_virtual_tokens": 4, "learning_rate": 0.1}
CPU = torch.device("cpu")
NO_BF16_FLAGS = frozenset({"fpu", "sse2", "avx2", "avx512f", "avx512_vnni"})  # e.g. Ice Lake, Zen 3

needs_bf16 = pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no avx512_bf16 / amx_bf16")


def _budget(precision: str) -> TrainBudget:
    return dataclasses.replace(BUDGET, precision=precision)


def _adapter_tensors(adapter_dir: str) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("adapter_model.safetensors", "prompt_encoder_full.safetensors"):
        out.update({f"{name}:{k}": v for k, v in load_file(Path(adapter_dir) / name).items()})
    return out


def _train_loss(model: nn.Module, inputs, examples) -> float:
    """Mean training loss over ``examples`` in fp32 eval mode (the quantity training minimizes)."""
    model.eval()
    with torch.no_grad():
        batch = collate(examples, inputs.task, inputs.pad_token_id)
        loss = train_step_loss(model, batch, inputs).item()
    model.train()
    return loss


# --------------------------------------------------------------------------------------------------
# The setting and the support check


def test_budget_precision_defaults_to_auto_and_is_validated() -> None:
    assert TrainBudget().precision == "auto"
    assert {TrainBudget(precision=p).precision for p in PRECISIONS} == {"auto", "fp32", "bf16"}
    with pytest.raises(SpecError, match=r"budget\.precision='fp16'"):
        TrainBudget(precision="fp16")


def test_cpu_bf16_support_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    assert cpu_bf16_supported({"avx512f", "avx512_bf16"})  # Cooper Lake, Zen 4
    assert cpu_bf16_supported({"amx_tile", "amx_bf16"})  # Sapphire Rapids
    assert not cpu_bf16_supported(NO_BF16_FLAGS)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert _precision.read_cpu_flags(str(info)) == {"fpu", "sse2", "avx512_bf16"}
    assert _precision.read_cpu_flags(str(tmp_path / "absent")) == frozenset()  # macOS, Windows


def test_this_cpus_answer_agrees_with_torchs_own_detection() -> None:
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if None in probes:
        pytest.skip("this torch has no private CPU-capability probes")
    assert cpu_bf16_supported() == any(probe() for probe in probes)


def test_resolve_precision_names_precision_and_device() -> None:
    with_bf16 = {"avx512_bf16"}
    assert resolve_precision("auto", "cpu", cpu_flags=with_bf16) == "bf16"
    assert resolve_precision("auto", "cpu", cpu_flags=NO_BF16_FLAGS) == "fp32"
    assert resolve_precision("bf16", "cpu", cpu_flags=with_bf16) == "bf16"
    assert resolve_precision("fp32", "cpu", cpu_flags=with_bf16) == "fp32"
    with pytest.raises(MethodConfigError, match=r"precision='bf16' but device 'cpu'"):
        resolve_precision("bf16", "cpu", cpu_flags=NO_BF16_FLAGS)
    with pytest.raises(MethodConfigError, match=r"precision='half'"):
        resolve_precision("half", "cpu")


def test_train_trial_refuses_bf16_on_a_cpu_without_it(prepared, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_precision, "read_cpu_flags", lambda: NO_BF16_FLAGS)
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    with pytest.raises(MethodConfigError, match=r"precision='bf16' but device 'cpu'"):
        train_trial(inputs, PARAMS, budget=_budget("bf16"), output_dir=tmp_path / "bf16", seed=0)
    assert not (tmp_path / "bf16").exists()  # refused before anything was built
    auto = train_trial(inputs, PARAMS, budget=_budget("auto"), output_dir=tmp_path / "auto", seed=0)
    assert auto.precision == "fp32"


# --------------------------------------------------------------------------------------------------
# Training under each precision


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_bf16)])
@pytest.mark.parametrize(
    ("task", "kind", "params"),
    [
        (TaskType.CLASSIFICATION, "encoder", PARAMS),
        (TaskType.VERBALIZER, "decoder", {"method": "prefix_tuning", "learning_rate": 0.1}),
        (
            TaskType.GENERATION,
            "decoder",
            {"method": "p_tuning", "encoder_type": "MLP", "encoder_hidden_size": 16, "learning_rate": 0.03},
        ),
    ],
    ids=["classification-prompt", "verbalizer-prefix", "generation-ptuning"],
)
def test_training_steps_compute_in_the_precision_and_state_stays_fp32(
    prepared, monkeypatch, precision, task, kind, params
) -> None:
    inputs = prepared(task, kind)
    config = method_config_from_params(dict(params, num_virtual_tokens=4), task)
    model = build_peft_model(inputs, config, seed=0)
    train = _examples(load_split(inputs, "train"))
    loss_before = _train_loss(model, inputs, train)
    # the dtypes the base model's linear layers computed in, split by train (steps) / eval (validation)
    seen: dict[bool, set[torch.dtype]] = {True: set(), False: set()}
    for module in model.get_base_model().modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda m, _args, out: seen[m.training].add(out.dtype))
    optimizers = []
    make_optimizer = _step._optimizer
    monkeypatch.setattr(
        _step, "_optimizer", lambda *a, **k: optimizers.append(make_optimizer(*a, **k)) or optimizers[-1]
    )

    run = fit(model, inputs, config, budget=_budget(precision), seed=0, device=CPU)

    assert run["precision"] == precision
    assert seen[True] == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert seen[False] == {torch.float32}  # the validation evaluations
    assert all(p.dtype == torch.float32 for p in model.parameters())  # frozen fp32 weights are back
    state = [t for s in optimizers[0].state.values() for t in s.values() if t.is_floating_point()]
    assert state and all(t.dtype == torch.float32 for t in state)
    assert _train_loss(model, inputs, train) < loss_before - 1e-3


@needs_bf16
def test_a_bf16_trial_differs_slightly_from_fp32_and_saves_an_fp32_adapter(prepared, tmp_path: Path) -> None:
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    runs = {
        p: train_trial(inputs, PARAMS, budget=_budget(p), output_dir=tmp_path / p, seed=0)
        for p in ("fp32", "bf16")
    }
    assert {p: r.precision for p, r in runs.items()} == {"fp32": "fp32", "bf16": "bf16"}
    assert read_adapter_meta(runs["bf16"].adapter_dir)["precision"] == "bf16"
    saved = {p: _adapter_tensors(r.adapter_dir) for p, r in runs.items()}
    assert all(t.dtype == torch.float32 for t in saved["bf16"].values())
    # bf16 rounding changed the training (not a silent fp32 run), but not what it learned
    assert any(not torch.equal(saved["bf16"][k], saved["fp32"][k]) for k in saved["fp32"])
    assert runs["bf16"].metrics["eval_loss"] == pytest.approx(runs["fp32"].metrics["eval_loss"], rel=0.05)

    # the fp32 reload reproduces the recorded (fp32) validation metrics exactly
    reloaded = load_adapter_model(inputs, runs["bf16"].adapter_dir)
    assert all(p.dtype == torch.float32 for p in reloaded.parameters())
    val = _examples(load_split(inputs, "validation"))
    again = evaluate_model(reloaded, inputs, val, batch_size=32, device=CPU)
    assert again["accuracy"] == runs["bf16"].metrics["accuracy"]
    assert again["eval_loss"] == pytest.approx(runs["bf16"].metrics["eval_loss"], rel=1e-6)


def test_fp32_is_bit_identical_to_training_on_a_cpu_without_bf16(
    prepared, tmp_path: Path, monkeypatch
) -> None:
    # "fp32" on any CPU = what promptsweep did on every CPU before the setting existed (autocast off, fp32
    # weights), i.e. "auto" on a CPU without bf16. Together with the dtype test above (every op fp32).
    inputs = prepared(TaskType.CLASSIFICATION, "encoder")
    fp32 = train_trial(inputs, PARAMS, budget=_budget("fp32"), output_dir=tmp_path / "fp32", seed=0)
    monkeypatch.setattr(_precision, "read_cpu_flags", lambda: NO_BF16_FLAGS)
    auto = train_trial(inputs, PARAMS, budget=_budget("auto"), output_dir=tmp_path / "auto", seed=0)
    assert fp32.precision == auto.precision == "fp32"
    assert fp32.history == auto.history
    a, b = _adapter_tensors(fp32.adapter_dir), _adapter_tensors(auto.adapter_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
