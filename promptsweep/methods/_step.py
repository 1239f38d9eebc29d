"""One training step of a trial: the precision it computes in (bf16 where the device computes it natively),
AdamW with warm-up + linear decay, gradient clipping, and the loss (imports torch).

:class:`TrainStep` is the step :func:`~promptsweep.methods._train.fit` runs and the planner's timing
(:func:`~promptsweep.methods.measure_costs`) measures, so the two cannot drift apart. The torch-free side of
precision (the names, the CPU's bf16 flags) is ``_precision.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from promptsweep.exceptions import MethodConfigError, TrainingError
from promptsweep.methods._config import MethodConfig, TaskType
from promptsweep.methods._modeling import class_logits, collate, generation_loss, is_seq2seq
from promptsweep.methods._precision import PRECISIONS, cpu_bf16_supported
from promptsweep.methods._types import PreparedInputs, TrainBudget

# --------------------------------------------------------------------------------------------------
# Precision

#: The precision of the validation evaluations during training, whatever the training precision: fp32, so
#: the recorded metrics are the ones the saved (fp32) adapter reproduces when reloaded, and the same on
#: every device. Measured (docs/architecture.md, "Precision"): bf16 evaluation was faster but moved the
#: eval loss by more than the reload check allows and flipped predictions near the decision boundary.
VALIDATION_PRECISION = "fp32"

#: bf16 training: the frozen floating-point weights get a bf16 copy once, swapped in for each training
#: step, instead of autocast casting every fp32 weight at every op of every step (its cast cache keeps
#: only tensors that require grad). Measured against autocast alone (docs/architecture.md, "Precision").
CAST_FROZEN_WEIGHTS = True


def bf16_supported(device: torch.device | str, *, cpu_flags: Iterable[str] | None = None) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU with ``torch.cuda.is_bf16_supported()``, a
    CPU with AVX-512 BF16 or AMX-BF16 (:func:`~promptsweep.methods.cpu_bf16_supported`; ``cpu_flags``
    overrides this machine's flags). Other device types (mps, xpu, ...): not measured, so no."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return cpu_bf16_supported(cpu_flags)
    return False


def resolve_precision(
    precision: str, device: torch.device | str, *, cpu_flags: Iterable[str] | None = None
) -> str:
    """``"bf16"`` or ``"fp32"``: ``precision`` (``auto``/``fp32``/``bf16``) on ``device``.

    ``auto`` is bf16 where :func:`bf16_supported`, else fp32. ``cpu_flags`` as for :func:`bf16_supported`.

    Raises:
        MethodConfigError: naming ``precision`` and the device, for an unknown value or for ``bf16`` on a
            device without native bf16.
    """
    if precision not in PRECISIONS:
        raise MethodConfigError(f"precision={precision!r} must be one of {PRECISIONS}")
    if precision == "fp32":
        return "fp32"
    supported = bf16_supported(device, cpu_flags=cpu_flags)
    if precision == "bf16" and not supported:
        raise MethodConfigError(
            f"precision='bf16' but device {str(device)!r} does not compute bf16 natively (a CPU needs "
            "avx512_bf16 or amx_bf16, a GPU torch.cuda.is_bf16_supported()); use precision 'auto' or 'fp32'"
        )
    return "bf16" if supported else "fp32"


def _autocast(device: torch.device, precision: str = "fp32") -> Any:
    """bf16 autocast for ``precision="bf16"`` (already resolved), else autocast disabled."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


class StepPrecision:
    """How one model's training steps compute, for a resolved ``precision`` (``"bf16"``/``"fp32"``)::

        with sp.weights():
            with sp.autocast():
                loss = train_step_loss(model, batch, inputs)
            loss.backward()

    bf16: :meth:`weights` swaps in bf16 copies of the frozen floating-point weights (made once, when
    :data:`CAST_FROZEN_WEIGHTS`) around forward *and* backward (autograd keeps references to them), and
    :meth:`autocast` runs the forward under bf16 autocast, which also puts the fp32 trainable parameters'
    uses into bf16. The trainable parameters, their gradients and the optimizer state stay fp32; outside
    :meth:`weights` the model is exactly the fp32 model (evaluation, saving). fp32: both do nothing.
    """

    def __init__(self, model: nn.Module, precision: str, device: torch.device) -> None:
        self.precision = precision
        self.device = device
        cast = precision == "bf16" and CAST_FROZEN_WEIGHTS
        frozen = [p for p in model.parameters() if not p.requires_grad and p.is_floating_point()]
        self._frozen = frozen if cast else []
        self._fp32 = [p.data for p in self._frozen]
        self._bf16 = [d.to(torch.bfloat16) for d in self._fp32]

    @contextlib.contextmanager
    def weights(self) -> Iterator[None]:
        """The frozen weights in the training precision inside, the fp32 originals after."""
        for p, d in zip(self._frozen, self._bf16, strict=True):
            p.data = d
        try:
            yield
        finally:
            for p, d in zip(self._frozen, self._fp32, strict=True):
                p.data = d

    def autocast(self) -> Any:
        """The forward pass's autocast context."""
        return _autocast(self.device, self.precision)


# --------------------------------------------------------------------------------------------------
# The step


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() or name.endswith("bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


class _WarmupLinear:
    """The learning-rate factor: linear warm-up over the first ``warmup`` steps, then linear decay to 0
    at :attr:`total_steps`, which a re-sized trial moves (the warm-up stays)."""

    def __init__(self, total_steps: int, warmup: int) -> None:
        self.total_steps = total_steps
        self.warmup = min(warmup, total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup))


def train_step_loss(model: Any, batch: dict, inputs: PreparedInputs) -> torch.Tensor:
    """The mean training loss of one batch (cross-entropy over classes, or per target token)."""
    if inputs.task is TaskType.GENERATION:
        loss, n = generation_loss(model, batch)
        return loss / n.clamp(min=1)
    logits = class_logits(model, batch, inputs.task, inputs.label_word_ids)
    return nn.functional.cross_entropy(logits.float(), batch["labels"])


class TrainStep:
    """One optimizer step of a trial, as :func:`fit` and the planner's timing
    (:func:`~promptsweep.methods.measure_costs`) both run it: AdamW over the trainable parameters,
    warm-up + linear decay over ``total_steps``, the frozen model's forward/backward in ``precision``
    (:class:`StepPrecision`), gradient clipping at ``budget.max_grad_norm``.
    """

    def __init__(
        self,
        model: Any,
        inputs: PreparedInputs,
        config: MethodConfig,
        *,
        budget: TrainBudget,
        total_steps: int,
        precision: str,
        device: torch.device,
    ) -> None:
        self.model, self.inputs, self.config, self.device = model, inputs, config, device
        self.max_grad_norm = budget.max_grad_norm
        self.optimizer = _optimizer(model, config.learning_rate, budget.weight_decay)
        warmup = budget.warmup_steps
        if warmup is None:
            warmup = int(total_steps * budget.warmup_ratio)
        self._factor = _WarmupLinear(total_steps, warmup)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._factor)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.precision = StepPrecision(model, precision, device)
        self.seq2seq = is_seq2seq(model)
        self.done = 0

    def __call__(self, examples: list[dict[str, Any]]) -> float:
        """Train on ``examples`` (one batch); return its loss.

        Raises:
            TrainingError: a NaN/inf loss (names the step and the params); nothing is updated.
        """
        batch = _to(
            collate(examples, self.inputs.task, self.inputs.pad_token_id, seq2seq=self.seq2seq), self.device
        )
        with self.precision.weights():
            with self.precision.autocast():
                loss = train_step_loss(self.model, batch, self.inputs)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at step {self.done + 1} (params {self.config.to_params()}); "
                    "lower learning_rate or check the data"
                )
            loss.backward()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.done += 1
        return float(loss.item())

    def resize(self, total_steps: int) -> None:
        """Move the end of the learning-rate decay to ``total_steps`` (a trial re-sized to its time
        share, see :attr:`~promptsweep.methods.TrainBudget.step_time_s`); the next step already uses it."""
        self._factor.total_steps = total_steps
        step = self.scheduler.last_epoch
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * self._factor(step)
