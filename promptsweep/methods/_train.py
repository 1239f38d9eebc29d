"""The training loop, evaluation and adapter saving/reloading (imports torch; reached from functions).

A plain PyTorch loop rather than HF ``Trainer``: :class:`~promptsweep.methods._step.TrainStep` (AdamW
over the trainable parameters only, linear warm-up then linear decay, gradient clipping, bf16 where the
device computes it natively: ``TrainBudget.precision``), evaluation every N steps with a ``report``
callback, dynamic padding per batch.
"""

from __future__ import annotations

import json
import math
import resource
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from promptsweep._logging import get_logger
from promptsweep.exceptions import DataError, MethodConfigError
from promptsweep.methods import _modeling
from promptsweep.methods._adapters import local_adapter_dir
from promptsweep.methods._batches import by_length, epoch_batches, example_length, length_order
from promptsweep.methods._config import MethodConfig, TaskType, method_config_from_params
from promptsweep.methods._data import load_split
from promptsweep.methods._modeling import (
    build_base_model,
    build_peft_model,
    class_logits,
    collate,
    generate_kwargs,
    generation_loss,
    is_seq2seq,
)
from promptsweep.methods._noise import clearly_better, gain
from promptsweep.methods._step import (
    VALIDATION_PRECISION,
    TrainStep,
    _autocast,
    _to,
    resolve_precision,
)
from promptsweep.methods._types import PreparedInputs, TrainBudget, TrialResult

log = get_logger(__name__)

ADAPTER_META = "promptsweep_adapter.json"
#: A trial with a time share (``TrainBudget.step_time_s``) re-sizes its steps after every tenth of them,
#: from the mean time of its own steps so far (the first step, which allocates, left out). The plan's
#: 5-step timing before the search was off by -25 % to +10 % against the steps that then ran on SmolLM2,
#: and two MiniLM trials side by side ran ~20 % slower than one timed alone (docs/quality.md).
RESIZE_EVERY = 0.1
#: A re-sized trial keeps between these multiples of its planned steps (a burst of load or of speed
#: early on does not move it further; later re-sizes correct it).
RESIZE_BOUNDS = (0.25, 2.0)
ENCODER_STATE = "prompt_encoder_full.safetensors"
ReportFn = Callable[[int, dict[str, float]], Any]


def resolve_device(device: str | None) -> torch.device:
    """``device`` as given, else ``cuda`` when available, else ``cpu``."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _examples(split: dict[str, Any]) -> list[dict[str, Any]]:
    n = len(split["input_ids"])
    out = []
    for i in range(n):
        ex: dict[str, Any] = {"input_ids": split["input_ids"][i]}
        if "token_type_ids" in split:
            ex["token_type_ids"] = split["token_type_ids"][i]
        if "labels" in split:
            ex["label"] = split["labels"][i]
        if "target_ids" in split:
            ex["target_ids"] = split["target_ids"][i]
            ex["target_text"] = split["target_text"][i]
        out.append(ex)
    return out


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters of the built model, counted (shared tensors once)."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


# --------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate_model(
    model: Any,
    inputs: PreparedInputs,
    examples: list[dict[str, Any]],
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
) -> dict[str, float]:
    """Metrics of ``model`` on ``examples`` (see :data:`~promptsweep.methods.TASK_METRICS`).

    Classification / verbalizer: ``accuracy``, ``macro_f1`` (sklearn, over all classes), each class's
    F1 as ``f1[<label>]`` and recall as ``recall[<label>]``, ``eval_loss`` (mean cross-entropy per
    example, nats). Generation: ``eval_loss`` (mean per target token, nats), ``perplexity`` =
    exp(eval_loss), ``exact_match`` (greedy decoding, stripped text equality).
    ``precision``: a resolved ``"fp32"`` (default) or ``"bf16"`` (autocast).
    """
    if inputs.task is TaskType.GENERATION:
        with _evaluating(model):
            return _evaluate_generation(
                model, inputs, by_length(examples), batch_size=batch_size, device=device, precision=precision
            )
    preds, golds, loss = predict_classes(
        model, inputs, examples, batch_size=batch_size, device=device, precision=precision
    )
    return class_metrics(inputs, preds, golds, loss)


def class_metrics(
    inputs: PreparedInputs, preds: list[int], golds: list[int], loss: float
) -> dict[str, float]:
    """:func:`evaluate_model`'s classification metrics from :func:`predict_classes`' output."""
    from promptsweep.methods._labels import classification_metrics

    return {**classification_metrics(golds, preds, inputs.label_names), "eval_loss": loss / len(golds)}


@torch.no_grad()
def predict_classes(
    model: Any,
    inputs: PreparedInputs,
    examples: list[dict[str, Any]],
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[list[int], list[int], float]:
    """The predicted and the gold class of each of ``examples``, in their order, and the summed
    cross-entropy (nats): classification and verbalizer tasks. The passes run sorted by length (less
    padding), as :func:`evaluate_model`'s."""
    order = length_order(examples)
    preds, golds, loss = [0] * len(examples), [0] * len(examples), 0.0
    with _evaluating(model):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = _to(collate([examples[i] for i in idx], inputs.task, inputs.pad_token_id), device)
            with _autocast(device, precision):
                logits = class_logits(model, batch, inputs.task, inputs.label_word_ids).float()
            loss += nn.functional.cross_entropy(logits, batch["labels"], reduction="sum").item()
            chunk = zip(idx, logits.argmax(dim=-1).tolist(), batch["labels"].tolist(), strict=True)
            for i, pred, gold in chunk:
                preds[i], golds[i] = pred, gold
    return preds, golds, loss


@contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """``model`` in eval mode for the block, back in the mode it was in after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def outcomes(preds: list[int], golds: list[int]) -> str:
    """Per-example outcomes as one string, ``"1"`` right and ``"0"`` wrong, in the examples' order:
    what a paired test of two models on the same examples needs (``methods.paired_bound``)."""
    return "".join("1" if p == g else "0" for p, g in zip(preds, golds, strict=True))


def _evaluate_generation(
    model: Any,
    inputs: PreparedInputs,
    examples: list[dict[str, Any]],
    *,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> dict[str, float]:
    from promptsweep.methods._models import load_tokenizer

    seq2seq = is_seq2seq(model)
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = _to(collate(chunk, inputs.task, inputs.pad_token_id, seq2seq=seq2seq), device)
        with _autocast(device, precision):
            loss, n = generation_loss(model, batch)
        total += loss.float().item()
        tokens += int(n)
    eval_loss = total / max(tokens, 1)
    tokenizer = load_tokenizer(inputs.model_dir)
    hits = 0
    # Batches of equal prompt length: no padding, so positions match training (peft ignores position_ids
    # for prompt methods, which left padding would need). An encoder-decoder returns the decoder's tokens
    # only (from its start token); a causal LM returns the prompt too.
    by_length: dict[int, list[dict[str, Any]]] = {}
    for e in examples:
        by_length.setdefault(len(e["input_ids"]), []).append(e)
    for _, group in sorted(by_length.items()):
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            ids = torch.tensor([e["input_ids"] for e in chunk], dtype=torch.long, device=device)
            max_new = max(len(e["target_ids"]) for e in chunk)
            with _autocast(device, precision), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new,
                    do_sample=False,
                    pad_token_id=inputs.pad_token_id,
                    eos_token_id=chunk[0]["target_ids"][-1],
                    **generate_kwargs(model),
                )
            generated = out if seq2seq else out[:, ids.shape[1] :]
            for row, e in zip(generated.tolist(), chunk, strict=True):
                text = tokenizer.decode(row, skip_special_tokens=True).strip()
                hits += int(text == e["target_text"].strip())
    return {
        "eval_loss": eval_loss,
        "perplexity": math.exp(min(eval_loss, 50.0)),
        "exact_match": hits / len(examples),
    }


# --------------------------------------------------------------------------------------------------
# Adapters


def save_adapter(model: Any, adapter_dir: Path, meta: dict[str, Any]) -> None:
    """Save ``model``'s adapter in PEFT format plus the full prompt-encoder / prefix-projection state.

    ``adapter_dir`` gets ``adapter_config.json`` + ``adapter_model.safetensors`` (peft: the soft prompt
    as the encoder's *output*, and the classification head for classification), ``prompt_encoder_full.
    safetensors`` (every tensor of the prompt encoder: embedding, LSTM/MLP or projection weights - what
    peft drops on save, issues #1247/#1607) and ``promptsweep_adapter.json`` (params, task, model).
    """
    from safetensors.torch import save_file

    adapter_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(adapter_dir))
    encoder = model.prompt_encoder[model.active_adapter]
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(adapter_dir / ENCODER_STATE))
    (adapter_dir / ADAPTER_META).write_text(json.dumps(meta, indent=1, sort_keys=True))


def read_adapter_meta(adapter_dir: Path | str) -> dict[str, Any]:
    """The ``promptsweep_adapter.json`` beside an adapter.

    Raises:
        DataError: naming the directory when it is not a promptsweep adapter.
    """
    path = Path(adapter_dir) / ADAPTER_META
    if not path.is_file() or not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise DataError(
            f"{str(adapter_dir)!r} is not a promptsweep adapter (no {ADAPTER_META} / adapter_config.json)"
        )
    return json.loads(path.read_text())


def load_adapter_model(inputs: PreparedInputs, adapter_dir: Path | str, *, device: str | None = None) -> Any:
    """Rebuild the frozen base (with the adapter's pooling) and load the adapter with plain
    ``peft.PeftModel.from_pretrained(base, adapter_dir)`` (inference mode). Every weight is fp32, however
    the adapter was trained. ``adapter_dir`` may also be a storage URI (``s3://...``): fetched first
    (:func:`~promptsweep.methods.local_adapter_dir`)."""
    from peft import PeftModel

    adapter_dir = local_adapter_dir(adapter_dir)
    meta = read_adapter_meta(adapter_dir)
    config = method_config_from_params(meta["params"], inputs.task)
    base = build_base_model(inputs, config, seed=meta.get("seed", 0))
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    return model.to(resolve_device(device)).eval()


def evaluate_adapter(
    inputs: PreparedInputs,
    adapter_dir: Path | str,
    split: str = "test",
    *,
    device: str | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
) -> dict[str, float]:
    """Reload a saved adapter with plain ``PeftModel.from_pretrained`` and evaluate one split.

    Used for the selected trial's test metric only (ranking uses validation). ``precision``: ``"fp32"``
    (default: the precision of the recorded validation metrics), ``"bf16"`` or ``"auto"`` (bf16 autocast
    where the device supports it).

    Raises:
        DataError: when ``split`` is absent from ``inputs`` or the directory is not an adapter.
        MethodConfigError: ``precision="bf16"`` on a device without native bf16.
    """
    dev = resolve_device(device)
    resolved = resolve_precision(precision, dev)
    model = load_adapter_model(inputs, adapter_dir, device=str(dev))
    examples = _examples(load_split(inputs, split))
    return evaluate_model(model, inputs, examples, batch_size=batch_size, device=dev, precision=resolved)


def adapter_outcomes(
    inputs: PreparedInputs,
    adapter_dir: Path | str,
    split: str = "validation",
    *,
    device: str | None = None,
    batch_size: int = 64,
) -> str:
    """Reload a saved adapter as :func:`evaluate_adapter` does (fp32) and give its outcome on each
    example of ``split``, in the split's order (:func:`outcomes`): classification and verbalizer
    tasks, for a paired test against a floor scored on the same examples.

    Raises:
        DataError: as :func:`evaluate_adapter`.
        MethodConfigError: a generation task (it has no per-example class).
    """
    if inputs.task is TaskType.GENERATION:
        raise MethodConfigError("per-example outcomes are for classification and verbalizer tasks")
    dev = resolve_device(device)
    model = load_adapter_model(inputs, adapter_dir, device=str(dev))
    examples = _examples(load_split(inputs, split))
    preds, golds, _ = predict_classes(model, inputs, examples, batch_size=batch_size, device=dev)
    return outcomes(preds, golds)


# --------------------------------------------------------------------------------------------------
# Training


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def check_positions(model: Any, inputs: PreparedInputs, config: MethodConfig) -> None:
    """Raise :class:`MethodConfigError` when ``max_length`` plus the virtual tokens exceed the model's
    position embeddings (prompt tuning / P-tuning put the virtual tokens into the sequence; prefix
    tuning's prefix also counts for causal LMs, whose positions start after it)."""
    cfg = model.config
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if limit is None:  # e.g. T5: relative position buckets, no limit
        return
    if cfg.model_type in ("roberta", "xlm-roberta", "camembert"):  # positions start after padding_idx
        limit -= int(cfg.pad_token_id or 0) + 1
    need = inputs.max_length + config.num_virtual_tokens
    if need > limit:
        raise MethodConfigError(
            f"parameter 'num_virtual_tokens'={config.num_virtual_tokens} plus max_length={inputs.max_length} "
            f"= {need} exceeds the model's {limit} positions"
        )


def fit(
    model: Any,
    inputs: PreparedInputs,
    config: MethodConfig,
    *,
    budget: TrainBudget,
    seed: int,
    device: torch.device,
    report: ReportFn | None = None,
) -> dict[str, Any]:
    """Train ``model`` (a peft model on the frozen PLM) in place; the loop of :func:`train_trial`.

    The training steps run in ``budget.precision`` resolved on ``device`` (:class:`StepPrecision`), the
    validation evaluations in :data:`VALIDATION_PRECISION`.

    Returns a dict with ``history`` (list of (step, metrics)), ``train_seconds``, ``seen`` (train
    examples processed), ``steps``, ``precision`` (the resolved one), ``metrics`` (those of the state
    the model ends in) and ``kept_step`` (the earlier validated step the model went back to,
    ``budget.keep_best``; ``None``: it ends in its last state).

    Raises:
        TrainingError: on a NaN/inf loss (names the step and the params).
    """
    train = _examples(load_split(inputs, "train"))
    val = _examples(load_split(inputs, "validation"))
    steps_per_epoch = math.ceil(len(train) / budget.batch_size)
    total_steps = budget.max_steps or 10**12
    if budget.max_epochs is not None:
        total_steps = min(total_steps, max(1, math.ceil(budget.max_epochs * steps_per_epoch)))
    precision = resolve_precision(budget.precision, device)
    train_step = TrainStep(
        model, inputs, config, budget=budget, total_steps=total_steps, precision=precision, device=device
    )
    gen = torch.Generator().manual_seed(seed)
    lengths = [example_length(e) for e in train]
    history: list[tuple[int, dict[str, float]]] = []
    train_seconds, seen, step, stop = 0.0, 0, 0, False
    first_step_s, resize_at = 0.0, _next_resize(0, total_steps, budget)
    loss_sum, loss_n = 0.0, 0
    batches: list[list[int]] = []
    fractions_due = list(budget.eval_fractions or ())
    best = _BestState(budget.keep_best, len(val))
    model.train()
    while step < total_steps and not stop:
        if not batches:
            batches = epoch_batches(lengths, budget.batch_size, gen, grouped=budget.group_by_length)
        idx = batches.pop(0)
        started = time.perf_counter()
        loss = train_step([train[i] for i in idx])
        train_seconds += time.perf_counter() - started
        step += 1
        seen += len(idx)
        first_step_s = first_step_s or train_seconds
        loss_sum, loss_n = loss_sum + loss, loss_n + 1
        if step == resize_at:  # a time share: fit the rest of the steps to the time left
            total_steps = _resized(step, (train_seconds - first_step_s) / (step - 1), train_seconds, budget)
            train_step.resize(total_steps)
            resize_at = _next_resize(step, total_steps, budget)
        past_deadline = budget.past_deadline()
        periodic = budget.step_time_s is None and budget.evaluates_at(step)
        at_fraction = False  # budget.eval_fractions: of the steps as they stand (a time share re-sizes)
        while fractions_due and step >= round(fractions_due[0] * total_steps):
            fractions_due.pop(0)
            at_fraction = True
        if periodic or at_fraction or step == total_steps or past_deadline:
            metrics = evaluate_model(
                model,
                inputs,
                val,
                batch_size=budget.eval_batch_size,
                device=device,
                precision=VALIDATION_PRECISION,
            )
            metrics["train_loss"] = loss_sum / loss_n  # mean over the steps since the last evaluation
            loss_sum, loss_n = 0.0, 0
            history.append((step, metrics))
            if step < total_steps and not past_deadline:  # the state validated, before `report` runs
                best.offer(model, step, metrics)
            if report is not None and report(step, dict(metrics)) is True:
                stop = True
            stop = stop or past_deadline  # the job's wall-clock cap: end here, adapter saved
    kept_step = best.restore_if_better(model, history[-1][1]) if history else None
    return {
        "metrics": dict(best.metrics if kept_step is not None else history[-1][1]) if history else {},
        "kept_step": kept_step,
        "history": history,
        "train_seconds": train_seconds,
        "seen": seen,
        "steps": step,
        "n_train": len(train),
        "precision": precision,
    }


class _BestState:
    """The best validated state of a trial before its last validation (``TrainBudget.keep_best``):
    a copy of its trainable parameters in CPU memory - a soft prompt, its encoder or projection, a
    head (a few MB for the models here; a prefix projection on a large model can be far more)."""

    def __init__(self, metric: str | None, n: int) -> None:
        self.metric, self.n = metric, n
        self.step: int | None = None
        self.metrics: dict[str, float] = {}
        self._state: dict[str, torch.Tensor] = {}

    def offer(self, model: Any, step: int, metrics: dict[str, float]) -> None:
        """Keep ``model``'s state validated at ``step`` when it is the best so far."""
        if self.metric is None or metrics.get(self.metric) is None:
            return
        value = metrics[self.metric]
        if self.step is not None and not gain(self.metric, value, self.metrics[self.metric]) > 0:
            return
        self.step, self.metrics = step, dict(metrics)
        self._state = {
            n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad
        }

    def restore_if_better(self, model: Any, last: dict[str, float]) -> int | None:
        """Put the kept state back into ``model`` when it beats the ``last`` validation clearly
        (:func:`~promptsweep.methods.clearly_better`); returns its step, else ``None``."""
        if self.step is None or self.metric is None or last.get(self.metric) is None:
            return None
        if not clearly_better(self.metric, self.metrics[self.metric], last[self.metric], self.n):
            return None
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in self._state:
                    p.copy_(self._state[name])
        return self.step


def _next_resize(step: int, total_steps: int, budget: TrainBudget) -> int | None:
    """The step at which a trial with a time share re-sizes next (``None``: never)."""
    if budget.step_time_s is None or budget.max_steps is None:
        return None
    at = step + max(2, math.ceil(RESIZE_EVERY * budget.max_steps))
    return at if at < total_steps else None


def _resized(step: int, step_s: float, spent_s: float, budget: TrainBudget) -> int:
    """The trial's steps when ``step`` steps took ``spent_s`` seconds, at ``step_s`` per step from
    here on, for ``budget.step_time_s`` in all (within :data:`RESIZE_BOUNDS` of the planned steps)."""
    assert budget.step_time_s is not None and budget.max_steps is not None
    left = max(0, math.floor((budget.step_time_s - spent_s) / max(step_s, 1e-9)))
    lo, hi = (max(1, round(f * budget.max_steps)) for f in RESIZE_BOUNDS)
    return max(step, min(max(step + left, lo), hi))


def train_trial(
    inputs: PreparedInputs,
    params: dict[str, Any],
    *,
    budget: TrainBudget,
    output_dir: Path | str,
    seed: int,
    report: ReportFn | None = None,
    device: str | None = None,
) -> TrialResult:
    """Train one soft-prompt adapter on the frozen PLM and evaluate it on the validation split.

    Builds the frozen PLM + the method's PEFT adapter (dispatched through the registry), trains with
    AdamW over the trainable parameters only (warm-up + linear decay, gradient clipping), evaluates the
    validation split every ``budget.eval_every_steps`` steps (or at ``budget.eval_at_steps``; a time
    share only at ``budget.eval_fractions`` of its steps), and at the end, calling
    ``report(step, metrics)`` each time (``metrics`` also holds ``train_loss``, the mean over the steps
    since the last evaluation). ``report`` may raise (e.g. ``optuna.TrialPruned``) to
    stop the trial - the exception propagates and no adapter is saved - or return ``True`` to stop early
    gracefully (the adapter is saved). The adapter goes to ``output_dir/adapter``. With
    ``budget.keep_best``, the adapter and ``TrialResult.metrics`` are those of the best earlier
    validated state where it beats the last clearly (``TrialResult.kept_step``); ``history`` keeps
    every validation as it happened.

    Args:
        inputs: from :func:`prepare_inputs`.
        params: the flat trial parameters (validated by :func:`method_config_from_params`).
        budget: steps/epochs, batch sizes, evaluation interval, optimizer settings.
        output_dir: the trial's directory (created).
        seed: seeds the head init, the prompt init, dropout and the data order (deterministic on CPU).
        report: callback ``(step, metrics) -> None | bool``.
        device: ``"cpu"``, ``"cuda"``, ...; default cuda when available.

    ``budget.precision`` is resolved on the device (:func:`resolve_precision`) before anything is built;
    ``TrialResult.precision`` and the adapter's ``promptsweep_adapter.json`` record the result.

    Raises:
        MethodConfigError: invalid params (before anything is built), ``budget.precision="bf16"`` on a
            device without native bf16, or virtual tokens + max_length beyond the model's positions.
        TrainingError: a NaN/inf loss (names the step and the params).
    """
    config: MethodConfig = method_config_from_params(params, inputs.task)
    dev = resolve_device(device)
    resolve_precision(budget.precision, dev)  # refuse bf16 on a device without it before building anything
    out_dir = Path(output_dir)
    torch.manual_seed(seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    model = build_peft_model(inputs, config, seed=seed)
    check_positions(model.get_base_model(), inputs, config)
    model = model.to(dev)
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise MethodConfigError(f"method {config.method.value!r} built no trainable parameters")
    run = fit(model, inputs, config, budget=budget, seed=seed, device=dev, report=report)
    history = run["history"]
    final = run["metrics"]
    adapter_dir = out_dir / "adapter"
    save_adapter(
        model,
        adapter_dir,
        {
            "params": config.to_params(),
            "task": inputs.task.value,
            "model": inputs.model,
            "model_dir": inputs.model_dir,
            "label_names": list(inputs.label_names),
            "seed": seed,
            "precision": run["precision"],
            "mean_includes_virtual_tokens": _modeling.MEAN_INCLUDES_VIRTUAL_TOKENS,
            "validation_metrics": final,
            "steps": run["steps"],
            "kept_step": run["kept_step"],
        },
    )
    seconds = run["train_seconds"]
    return TrialResult(
        metrics=final,
        history=history,
        trainable_params=trainable,
        total_params=total,
        train_seconds=seconds,
        examples_per_second=run["seen"] / seconds if seconds > 0 else 0.0,
        peak_memory_bytes=_peak_memory(dev),
        steps=run["steps"],
        epochs=run["seen"] / run["n_train"],
        adapter_dir=str(adapter_dir),
        params=config.to_params(),
        precision=run["precision"],
        kept_step=run["kept_step"],
    )
