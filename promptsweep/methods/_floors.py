"""Floors: the cheap baselines a search's best trial must beat (imports torch; reached from functions).

A job scores them once, on the validation split, beside its leaderboard: a best trial below a floor
learned nothing the floor did not already know.

- ``majority``: always the train split's majority class (every labelled task).
- ``head_only``: the frozen encoder with the trials' pooling and the trials' classification head,
  the head trained alone (no prompt) on features computed once (encoder classification).
- ``zero_shot``: the frozen causal LM scoring each class by its label words, no adapter (verbalizer).

Generation has no floor. Only the ``train`` split (to fit the floor) and the evaluated split are read.
"""

from __future__ import annotations

import enum
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from promptsweep._logging import get_logger
from promptsweep.exceptions import MethodConfigError
from promptsweep.methods._batches import by_length
from promptsweep.methods._config import DEFAULT_POOLING, MethodConfig, Pooling, PromptMethod, TaskType
from promptsweep.methods._data import load_split
from promptsweep.methods._modeling import build_base_model, class_logits, collate
from promptsweep.methods._step import _autocast, _to
from promptsweep.methods._train import _examples, class_metrics, outcomes, predict_classes, resolve_device
from promptsweep.methods._types import PreparedInputs

log = get_logger(__name__)


class Floor(enum.StrEnum):
    """A cheap baseline scored beside a job's leaderboard."""

    MAJORITY = "majority"
    HEAD_ONLY = "head_only"
    ZERO_SHOT = "zero_shot"


#: The floors each task gets, in the order they are scored.
TASK_FLOORS: dict[TaskType, tuple[Floor, ...]] = {
    TaskType.CLASSIFICATION: (Floor.MAJORITY, Floor.HEAD_ONLY),
    TaskType.VERBALIZER: (Floor.MAJORITY, Floor.ZERO_SHOT),
    TaskType.GENERATION: (),
}


@dataclass(frozen=True)
class _Run:
    """What every floor gets: the inputs, the evaluated split and the settings of :func:`score_floors`."""

    inputs: PreparedInputs
    split: str
    train: list[dict[str, Any]]
    evaluated: list[dict[str, Any]]
    seed: int
    device: torch.device
    batch_size: int
    pooling: Pooling
    head_steps: int
    head_learning_rate: float
    head_batch_size: int
    head_train_examples: int | None


def _no_prompt_config(pooling: Pooling | None) -> MethodConfig:
    """A config that makes :func:`build_base_model` build the bare PLM as trials do: zero virtual
    positions (so ``mean`` pools over every real token), the given pooling."""
    return MethodConfig(
        method=PromptMethod.PROMPT_TUNING, num_virtual_tokens=0, learning_rate=0.0, pooling=pooling
    )


#: A floor's metrics and its per-example outcomes on the split (:func:`~._train.outcomes`).
_Scored = tuple[dict[str, float], str]


def _majority(run: _Run) -> _Scored:
    """The train majority class predicted for every example of the split; ``eval_loss`` is the
    cross-entropy of the train class frequencies (the best constant prediction)."""
    train = [e["label"] for e in run.train]
    golds = [e["label"] for e in run.evaluated]
    counts = Counter(train)
    major = counts.most_common(1)[0][0]
    preds = [major] * len(golds)
    loss = -sum(math.log(counts[g] / len(train)) for g in golds)
    return class_metrics(run.inputs, preds, golds, loss), outcomes(preds, golds)


def _evaluate(model: Any, run: _Run) -> _Scored:
    preds, golds, loss = predict_classes(
        model, run.inputs, run.evaluated, batch_size=run.batch_size, device=run.device
    )
    return class_metrics(run.inputs, preds, golds, loss), outcomes(preds, golds)


def _classifier(model: Any) -> nn.Module:
    """The module trials train as the head (peft's ``modules_to_save`` for sequence classification)."""
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise MethodConfigError(
        f"model type {model.config.model_type!r} has no 'classifier'/'score' head "
        "to train for the head_only floor"
    )


@torch.no_grad()
def head_features(
    model: Any,
    head: nn.Module,
    inputs: PreparedInputs,
    examples: list[dict[str, Any]],
    *,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """What ``head`` receives for each example, (n, hidden) fp32 - or (n, 1, hidden) for a head that takes
    the sequence and reads position 0 (RoBERTa, DeBERTa's ContextPooler) - : the frozen model's forward in
    eval mode (the trials' pooling, no dropout), captured by a forward pre-hook on the head."""
    captured: list[torch.Tensor] = []

    def _capture(_module: nn.Module, args: tuple) -> None:
        x = args[0].detach().float()
        captured.append(x[:, :1] if x.ndim == 3 else x)

    hook = head.register_forward_pre_hook(_capture)
    model.eval()
    try:
        for start in range(0, len(examples), batch_size):
            batch = _to(
                collate(examples[start : start + batch_size], inputs.task, inputs.pad_token_id), device
            )
            with _autocast(device):
                class_logits(model, batch, inputs.task, inputs.label_word_ids)
    finally:
        hook.remove()
    features = torch.cat(captured)
    if features.ndim != 2 and features.shape[1:2] != (1,):
        raise MethodConfigError(
            f"model type {model.config.model_type!r}: the head takes {tuple(features.shape[1:])} per "
            "example, not one pooled vector; the head_only floor needs a pooled head"
        )
    return features


def _trial_head(model: Any) -> tuple[nn.Module, nn.Module]:
    """(the module whose input is captured, the head trained on it): the modules trials train as the head
    (``_architectures`` ``head_modules`` + ``classifier``). DistilBERT: ``pre_classifier`` + ReLU +
    ``classifier``; DeBERTa-v2 with its ``ContextPooler``: pooler + ``classifier``; else ``classifier``."""
    from promptsweep.methods._modeling import MaskedPooling

    classifier = _classifier(model)
    if isinstance(getattr(model, "pre_classifier", None), nn.Module):  # DistilBERT
        return model.pre_classifier, nn.Sequential(model.pre_classifier, nn.ReLU(), model.dropout, classifier)
    pooler = getattr(
        model, "pooler", None
    )  # DeBERTa-v2's top-level ContextPooler (not a pooling we installed)
    if isinstance(pooler, nn.Module) and not isinstance(pooler, MaskedPooling):
        return pooler, nn.Sequential(pooler, model.dropout, classifier)
    return classifier, classifier


def _head_only(run: _Run) -> _Scored:
    """Train the trials' head (same init, same pooling) alone on cached frozen features, then evaluate
    the whole model on the split through the trials' evaluation."""
    model = build_base_model(run.inputs, _no_prompt_config(run.pooling), seed=run.seed).to(run.device)
    entry, head = _trial_head(model)
    train = run.train
    if run.head_train_examples is not None and len(train) > run.head_train_examples:
        # The frozen features cost a forward pass each; a seeded subsample keeps the floor cheap.
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(run.seed))
        train = [train[i] for i in sorted(pick[: run.head_train_examples].tolist())]
    train = by_length(train)  # the feature passes pad less; features and labels keep this one order
    features = head_features(model, entry, run.inputs, train, batch_size=run.batch_size, device=run.device)
    labels = torch.tensor([e["label"] for e in train], dtype=torch.long, device=features.device)
    head.requires_grad_(True)
    head.train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=run.head_learning_rate, weight_decay=0.0)
    gen = torch.Generator().manual_seed(run.seed)
    order: list[int] = []
    for _ in range(run.head_steps):
        if not order:
            order = torch.randperm(len(train), generator=gen).tolist()
        idx, order = order[: run.head_batch_size], order[run.head_batch_size :]
        loss = nn.functional.cross_entropy(head(features[idx]).float(), labels[idx])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    head.requires_grad_(False)
    return _evaluate(model, run)


def _zero_shot(run: _Run) -> _Scored:
    """The frozen causal LM's label-word scores (the trials' ``class_logits``), no adapter."""
    model = build_base_model(run.inputs, _no_prompt_config(None), seed=run.seed).to(run.device)
    return _evaluate(model, run)


_SCORERS: dict[Floor, Callable[[_Run], _Scored]] = {
    Floor.MAJORITY: _majority,
    Floor.HEAD_ONLY: _head_only,
    Floor.ZERO_SHOT: _zero_shot,
}


def score_floors(
    inputs: PreparedInputs,
    *,
    split: str = "validation",
    floors: Iterable[Floor | str] | None = None,
    seed: int = 0,
    device: str | None = None,
    batch_size: int = 64,
    pooling: Pooling | str = DEFAULT_POOLING,
    head_steps: int = 300,
    head_learning_rate: float = 1e-2,
    head_batch_size: int = 32,
    head_train_examples: int | None = None,
    with_outcomes: bool = False,
) -> dict[str, dict[str, Any]]:
    """Score the task's floors on one split: floor name -> the task's metrics plus ``seconds``.

    Classification: ``majority`` and ``head_only``; verbalizer: ``majority`` and ``zero_shot``;
    generation: none (an empty dict). Metrics are those of :data:`TASK_METRICS` (``accuracy``,
    ``macro_f1``, ``eval_loss``) with each class's ``f1[<label>]`` and ``recall[<label>]`` (the majority
    floor's recall is 1 for its class, 0 for the others), ``seconds`` the wall-clock time of that floor
    (model loading included); with ``with_outcomes``, also ``outcomes``: the floor's outcome on each
    example of the split, in its order (``"1"`` right, ``"0"`` wrong), for a paired test against a
    trial scored on the same examples (``methods.adapter_outcomes``, ``methods.discordant``).
    Reads the ``train`` split and ``split`` only; the test split only when ``split="test"``.

    Args:
        inputs: from :func:`prepare_inputs`.
        split: the split scored (``validation`` for a search; ``test`` only when asked).
        floors: a subset of the task's floors (default: all of :data:`TASK_FLOORS` ``[inputs.task]``).
        seed: the head's init and the order of its training batches.
        device: ``"cpu"``, ``"cuda"``, ...; default cuda when available.
        batch_size: examples per forward pass of the frozen model.
        pooling: ``head_only``: the pooling the head reads (the trials' default ``mean``).
        head_steps, head_learning_rate, head_batch_size: ``head_only``: AdamW steps over the cached
            train features, its learning rate (no weight decay) and the examples per step.
        head_train_examples: ``head_only``: fit the head on a seeded subsample of at most this many
            training examples (``None``: all); their frozen features are most of the floor's cost.

    Raises:
        ValueError: a floor the task does not have, or a non-positive head setting / batch size.
        DataError: ``split`` is absent from ``inputs``.
        MethodConfigError: the pooling or the head is not available for the model type.
    """
    allowed = TASK_FLOORS[inputs.task]
    chosen = allowed if floors is None else tuple(dict.fromkeys(Floor(f) for f in floors))
    wrong = [f.value for f in chosen if f not in allowed]
    if wrong:
        raise ValueError(
            f"floors={wrong} not scored for task {inputs.task.value!r} "
            f"(its floors: {[f.value for f in allowed]})"
        )
    for name, value in {
        "batch_size": batch_size,
        "head_steps": head_steps,
        "head_batch_size": head_batch_size,
        "head_train_examples": 1 if head_train_examples is None else head_train_examples,
    }.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")
    if not head_learning_rate > 0:
        raise ValueError(f"head_learning_rate={head_learning_rate!r} must be > 0")
    if not chosen:
        return {}
    run = _Run(
        inputs=inputs,
        split=split,
        train=_examples(load_split(inputs, "train")),
        evaluated=_examples(load_split(inputs, split)),  # a missing split fails before any model is built
        seed=seed,
        device=resolve_device(device),
        batch_size=batch_size,
        pooling=Pooling(pooling),
        head_steps=head_steps,
        head_learning_rate=head_learning_rate,
        head_batch_size=head_batch_size,
        head_train_examples=head_train_examples,
    )
    out: dict[str, dict[str, Any]] = {}
    for floor in chosen:
        started = time.perf_counter()
        metrics, right = _SCORERS[floor](run)
        out[floor.value] = {**metrics, "seconds": time.perf_counter() - started}
        log.info("floor %s on %s: %s", floor.value, split, out[floor.value])
        if with_outcomes:
            out[floor.value]["outcomes"] = right
    return out


__all__ = ["TASK_FLOORS", "Floor", "score_floors"]
