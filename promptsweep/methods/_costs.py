"""Timing what one trial costs on this machine, before a search plans its budget (imports torch).

:func:`measure_costs` builds one config the way :func:`~promptsweep.methods.train_trial` does, runs a
few training steps and one evaluation pass, and returns the seconds per step, per validation example
and for the set-up. The search layer plans how many configs and steps its budget pays for from these.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from promptsweep.methods._batches import example_length, sorted_pass_tokens, typical_batch
from promptsweep.methods._config import method_config_from_params
from promptsweep.methods._data import load_split
from promptsweep.methods._modeling import build_peft_model
from promptsweep.methods._step import TrainStep, resolve_precision
from promptsweep.methods._train import _examples, check_positions, evaluate_model, resolve_device
from promptsweep.methods._types import PreparedInputs, TrainBudget


def measure_costs(
    inputs: PreparedInputs,
    params: dict[str, Any],
    *,
    budget: TrainBudget,
    steps: int = 5,
    warmup_steps: int = 2,
    eval_examples: int = 64,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """Time one config of ``params``: set-up, training steps and validation examples.

    Args:
        inputs: from :func:`prepare_inputs`.
        params: flat trial params (validated like a trial's).
        budget: batch sizes, optimizer settings and ``precision`` as the trials will use them (the
            training steps run as in ``train_trial``; validation is fp32 there and here).
        steps: timed training steps (the median is returned), after ``warmup_steps`` untimed ones.
        eval_examples: validation examples timed (at most the split's size).
        device: as for ``train_trial``.

    Returns:
        ``{"step_s", "eval_example_s", "setup_s", "precision"}``: the median seconds of one training
        step on a batch as long as the trials' batches are on average (``typical_batch``), seconds per
        validation example at ``budget.eval_batch_size`` over the whole split (the timed sample's
        seconds scaled by the tokens a sorted pass computes per example there and in the sample),
        seconds to build the model, and the precision used.

    Raises:
        MethodConfigError: invalid params, or ``precision="bf16"`` on a device without native bf16.
    """
    config = method_config_from_params(params, inputs.task)
    dev = resolve_device(device)
    precision = resolve_precision(budget.precision, dev)  # bf16 refused here on a device without it
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = build_peft_model(inputs, config, seed=seed)
    check_positions(model.get_base_model(), inputs, config)
    model = model.to(dev)
    total = warmup_steps + steps
    train_step = TrainStep(
        model, inputs, config, budget=budget, total_steps=total, precision=precision, device=dev
    )
    setup_s = time.perf_counter() - started

    train = _examples(load_split(inputs, "train"))
    val_split = _examples(load_split(inputs, "validation"))
    val = val_split[: max(1, eval_examples)]
    gen = torch.Generator().manual_seed(seed)
    lengths = [example_length(e) for e in train]
    times: list[float] = []
    model.train()
    for i in range(total):
        idx = typical_batch(lengths, budget.batch_size, gen, grouped=budget.group_by_length)
        t0 = time.perf_counter()
        train_step([train[j] for j in idx])
        if i >= warmup_steps:
            times.append(time.perf_counter() - t0)
    warm = val[: budget.eval_batch_size]
    evaluate_model(model, inputs, warm, batch_size=budget.eval_batch_size, device=dev)
    t0 = time.perf_counter()
    evaluate_model(model, inputs, val, batch_size=budget.eval_batch_size, device=dev)
    eval_s = time.perf_counter() - t0
    # A validation pass runs sorted by length, so over the whole split its batches pad less than over
    # the timed sample (one batch at the default sizes): scale by the tokens each pass computes.
    timed, whole = (
        sorted_pass_tokens([example_length(e) for e in x], budget.eval_batch_size) for x in (val, val_split)
    )
    eval_example_s = eval_s * whole / timed / len(val_split)
    return {
        "step_s": statistics.median(times),
        "eval_example_s": eval_example_s,
        "setup_s": setup_s,
        "precision": precision,
    }
