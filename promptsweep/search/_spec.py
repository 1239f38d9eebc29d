"""The job spec: a typed, validated description of one search job (pydantic, YAML or JSON).

Every check that can be made without running a trial is made here, and each failure is one
:class:`~promptsweep.exceptions.SpecError` whose message names the field (dotted path, e.g.
``space.prompt_tuning.learning_rate``) and what was expected. The spec is stored with the job
(``JobSpec.model_dump(mode="json")``), so a job's search space is serializable and reloadable.

Default ranges follow the papers (see :mod:`promptsweep.search._space` for the citations).
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from promptsweep.exceptions import SpecError
from promptsweep.methods import METHOD_REGISTRY, METRICS, TaskType, method_parameters
from promptsweep.methods import TASK_METRICS as _METHODS_TASK_METRICS

#: The prompt methods a spec may name: the methods registry's (``promptsweep.methods.METHOD_REGISTRY``).
METHOD_NAMES: tuple[str, ...] = tuple(m.value for m in METHOD_REGISTRY)
#: Tasks (values of ``promptsweep.methods.TaskType``).
TASK_NAMES: tuple[str, ...] = tuple(t.value for t in TaskType)
#: Metric -> direction (``promptsweep.methods.METRICS``).
METRIC_DIRECTIONS: dict[str, str] = dict(METRICS)
#: Metrics each task reports (``promptsweep.methods.TASK_METRICS``).
TASK_METRICS: dict[str, tuple[str, ...]] = {t.value: tuple(m) for t, m in _METHODS_TASK_METRICS.items()}
#: Model aliases whose architecture is known without loading them: alias -> "encoder" | "causal_lm".
KNOWN_MODELS: dict[str, str] = {"minilm": "encoder", "smollm2-135m": "causal_lm"}
#: Trial-parameter keys every method takes; the rest come from each method's registry entry.
_COMMON_KEYS = frozenset({"method", "num_virtual_tokens", "learning_rate", "pooling"})
#: The flat trial-parameter keys of each method (besides ``method``, ``num_virtual_tokens``,
#: ``learning_rate`` and, for classification, ``pooling``) - the keys the search space samples.
METHOD_KEYS: dict[str, tuple[str, ...]] = {
    m: tuple(p.name for p in method_parameters(m) if p.name not in _COMMON_KEYS) for m in METHOD_NAMES
}
#: The second objective of a multi-objective job (minimized).
SECOND_OBJECTIVES = ("trainable_params",)


class _FieldError(ValueError):
    """A cross-field error that names its own field (turned into :class:`SpecError`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatRange(_Model):
    """A float search range ``[low, high]``; ``log`` samples on a log scale (needs ``low > 0``)."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got low={self.low}")
        return self


class IntRange(_Model):
    """An integer search range ``[low, high]`` (inclusive); ``log`` samples on a log scale."""

    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got low={self.low}")
        return self


def _positive(rng: FloatRange | IntRange) -> FloatRange | IntRange:
    if rng.low <= 0:
        raise ValueError(f"must be positive, got low={rng.low}")
    return rng


#: Ranges of quantities that must be positive (learning rates, sizes, counts).
PositiveFloatRange = Annotated[FloatRange, AfterValidator(_positive)]
PositiveIntRange = Annotated[IntRange, AfterValidator(_positive)]


class PromptTuningSpace(_Model):
    """Prompt tuning (Lester et al. 2021): learning rate and init.

    Lester et al. trained with learning rate 0.3 (Adafactor); with AdamW the useful range is wider and
    lower, so the default is 1e-3 .. 3e-1 on a log scale. The PEFT benchmark shows accuracy moving
    from 0.057 to 0.343 on learning rate and init alone, hence both are searched.
    """

    learning_rate: PositiveFloatRange = FloatRange(low=1e-3, high=3e-1, log=True)
    prompt_init: list[Literal["random", "sample_vocab", "text"]] = ["random", "sample_vocab", "text"]
    prompt_init_text: str | None = Field(
        default=None, description="init text for prompt_init=text (default: built from the label words)"
    )

    @field_validator("prompt_init")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one init choice")
        return v


class PrefixTuningSpace(_Model):
    """Prefix tuning (Li & Liang 2021) / P-tuning v2 deep prompts (Liu et al. 2022).

    P-tuning v2's released scripts use learning rates 5e-3 .. 6e-2; Li & Liang used 5e-5 .. 8e-5 with a
    reparameterized prefix on GPT-2; the default 1e-4 .. 6e-2 covers both. ``encoder_hidden_size`` is
    searched only when ``prefix_projection`` is true (Li & Liang used 512 / 800).
    """

    learning_rate: PositiveFloatRange = FloatRange(low=1e-4, high=6e-2, log=True)
    prefix_projection: list[bool] = [False, True]
    encoder_hidden_size: PositiveIntRange = IntRange(low=64, high=512, log=True)

    @field_validator("prefix_projection")
    @classmethod
    def _non_empty(cls, v: list[bool]) -> list[bool]:
        if not v:
            raise ValueError("needs at least one of true/false")
        return v


class PTuningSpace(_Model):
    """P-tuning (Liu et al. 2021): prompt encoder type and size, dropout, LSTM depth.

    PEFT's P-tuning examples train with 1e-3 .. 1e-2; the default range is 1e-4 .. 3e-2 (log).
    ``encoder_num_layers`` is sampled only for the LSTM encoder (PEFT's MLP is always 3 layers).
    """

    learning_rate: PositiveFloatRange = FloatRange(low=1e-4, high=3e-2, log=True)
    encoder_type: list[Literal["LSTM", "MLP"]] = ["LSTM", "MLP"]
    encoder_hidden_size: PositiveIntRange = IntRange(low=32, high=512, log=True)
    encoder_dropout: FloatRange = FloatRange(low=0.0, high=0.3)
    encoder_num_layers: PositiveIntRange = IntRange(low=1, high=2)

    @field_validator("encoder_dropout")
    @classmethod
    def _dropout(cls, v: FloatRange) -> FloatRange:
        if v.low < 0 or v.high >= 1:
            raise ValueError(f"dropout must lie in [0, 1), got [{v.low}, {v.high}]")
        return v

    @field_validator("encoder_type")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one encoder type")
        return v


class SearchSpace(_Model):
    """The conditional search space: which methods, and each method's own ranges.

    ``num_virtual_tokens`` is shared (1 .. 128 on a log scale, after Lester et al.'s 1 .. 150 sweep);
    ``pooling`` is searched for the classification task only (``None`` otherwise).
    """

    methods: list[str] = list(METHOD_NAMES)
    num_virtual_tokens: PositiveIntRange = IntRange(low=1, high=128, log=True)
    pooling: list[Literal["pooler", "first_token", "mean"]] | None = ["mean", "first_token"]
    prompt_tuning: PromptTuningSpace = PromptTuningSpace()
    prefix_tuning: PrefixTuningSpace = PrefixTuningSpace()
    p_tuning: PTuningSpace = PTuningSpace()

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"the method list is empty; give one or more of {list(METHOD_NAMES)}")
        unknown = [m for m in v if m not in METHOD_NAMES]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; expected some of {list(METHOD_NAMES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"methods repeat: {v}")
        return v

    @field_validator("pooling")
    @classmethod
    def _pooling(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("needs at least one pooling mode (or null for non-classification tasks)")
        return v


class DatasetSpec(_Model):
    """The labelled data (maps onto ``promptsweep.methods.DataSpec``).

    ``source`` is an alias (``fine-foods``), a local csv/json/jsonl/parquet path or a hub name.
    ``splits`` names the train / validation / test splits in the source; a missing validation split
    is carved from train (``validation_fraction``, stratified). Trials rank on validation only.
    """

    source: str = "fine-foods"
    text_column: str = "review"
    text_pair_column: str | None = None
    label_column: str | None = "score"
    target_column: str | None = None
    label_words: dict[str, list[str]] | None = None
    splits: dict[Literal["train", "validation", "test"], str | None] = {"train": "train", "test": "test"}
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    max_train_examples: int | None = Field(default=None, gt=0)
    max_eval_examples: int | None = Field(default=None, gt=0)
    max_length: int = Field(default=128, gt=0, description="tokens per example, before virtual tokens")


class ObjectiveSpec(_Model):
    """What the search optimizes: a validation metric, optionally against ``trainable_params``."""

    metric: str = "accuracy"
    direction: Literal["maximize", "minimize"] | None = None
    secondary: Literal["trainable_params"] | None = Field(
        default=None, description="a second objective (minimized) for a multi-objective search"
    )

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRIC_DIRECTIONS:
            raise ValueError(f"unknown metric {v!r}; expected one of {sorted(METRIC_DIRECTIONS)}")
        return v

    @model_validator(mode="after")
    def _direction(self) -> ObjectiveSpec:
        expected = METRIC_DIRECTIONS[self.metric]
        if self.direction is not None and self.direction != expected:
            raise _FieldError(
                "direction", f"{self.direction!r} contradicts metric {self.metric!r} ({expected})"
            )
        return self

    @property
    def resolved_direction(self) -> str:
        """``maximize`` or ``minimize`` for :attr:`metric`."""
        return self.direction or METRIC_DIRECTIONS[self.metric]

    @property
    def is_multi_objective(self) -> bool:
        """True when :attr:`secondary` is set (the search returns a Pareto front)."""
        return self.secondary is not None


class BudgetSpec(_Model):
    """The job's total budget and each trial's fidelity.

    Total: ``num_trials`` (trials that finish: complete, pruned or failed) and/or ``time_budget_s``
    (wall-clock seconds of the search). Per trial: ``max_steps`` optimizer steps (or ``max_epochs``
    when ``max_steps`` is unset), validation every ``eval_every_steps`` steps - the ASHA rungs are
    counted in these training steps.
    """

    num_trials: int | None = Field(default=20, description="trials to finish; null: only the time budget")
    time_budget_s: float | None = Field(default=None, description="wall-clock seconds for the whole search")
    max_steps: int | None = 300
    max_epochs: float | None = None
    eval_every_steps: int = 50
    batch_size: int = 16
    eval_batch_size: int = 64
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float | None = 1.0

    @model_validator(mode="after")
    def _check(self) -> BudgetSpec:
        if self.num_trials is None and self.time_budget_s is None:
            raise _FieldError("num_trials", "give num_trials or time_budget_s (or both)")
        if self.num_trials is not None and self.num_trials <= 0:
            raise _FieldError("num_trials", f"must be positive, got {self.num_trials}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise _FieldError("time_budget_s", f"must be positive seconds, got {self.time_budget_s}")
        if self.max_steps is None and self.max_epochs is None:
            raise _FieldError("max_steps", "give max_steps or max_epochs per trial")
        if self.max_steps is not None and self.max_steps <= 0:
            raise _FieldError("max_steps", f"must be positive, got {self.max_steps}")
        if self.max_epochs is not None and self.max_epochs <= 0:
            raise _FieldError("max_epochs", f"must be positive, got {self.max_epochs}")
        for name in ("eval_every_steps", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise _FieldError(name, f"must be positive, got {getattr(self, name)}")
        if self.max_steps is not None and self.eval_every_steps > self.max_steps:
            raise _FieldError(
                "eval_every_steps", f"{self.eval_every_steps} exceeds max_steps ({self.max_steps})"
            )
        return self


class SamplerSpec(_Model):
    """The Optuna sampler: ``tpe`` (multivariate, grouped: for conditional spaces), ``random``, ``nsga2``."""

    name: Literal["tpe", "random", "nsga2"] = "tpe"
    n_startup_trials: int = Field(default=6, ge=0, description="TPE: random trials before modelling")


class SchedulerSpec(_Model):
    """Early stopping of weak trials on the validation metric, over training steps.

    ``asha`` (Li et al. 2020, asynchronous successive halving): rungs at ``grace_period_steps *
    reduction_factor**k`` steps; ``median``: the median stopping rule; ``none``: every trial runs its
    full budget.
    """

    name: Literal["asha", "median", "none"] = "asha"
    grace_period_steps: int | None = Field(default=None, description="first rung (default: eval_every_steps)")
    reduction_factor: float = Field(default=3.0, gt=1)

    @field_validator("grace_period_steps")
    @classmethod
    def _grace(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"must be positive, got {v}")
        return v


class ResourcesSpec(_Model):
    """The resource pool: per-trial CPUs and (fractional) GPUs, concurrency, and the embedded Ray's size.

    ``gpus_per_trial`` below 1 packs several trials on one GPU (0.25: four per GPU). ``num_cpus``
    caps the embedded local Ray (default: all cores); ignored when connecting to a cluster.
    """

    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0)
    max_concurrent_trials: int = Field(default=1, ge=1)
    num_cpus: int | None = Field(default=None, gt=0)
    object_store_memory_mb: int = Field(default=200, ge=75)
    torch_threads: int | None = Field(
        default=None, gt=0, description="torch threads per trial (default: cpus)"
    )

    @field_validator("gpus_per_trial")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"more than one GPU per trial must be a whole number, got {v}")
        return v


class JobSpec(_Model):
    """One search job, as written in YAML/JSON and stored with the job.

    Raises:
        SpecError: through :func:`parse_spec` / :func:`load_spec`, naming the field at fault.
    """

    name: str = Field(min_length=1, max_length=255)
    model: str = "minilm"
    task: Literal["classification", "verbalizer", "generation"] = "classification"
    dataset: DatasetSpec = DatasetSpec()
    objective: ObjectiveSpec = ObjectiveSpec()
    budget: BudgetSpec = BudgetSpec()
    space: SearchSpace = SearchSpace()
    sampler: SamplerSpec = SamplerSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    ray_address: str | None = Field(
        default=None, description="null: embedded local Ray; auto | ray://host:port"
    )
    seed: int = 0
    warm_start: bool = Field(default=True, description="enqueue each method's paper-default config first")
    warm_start_configs: list[dict[str, Any]] = Field(
        default_factory=list, description="extra known-good configs (flat params) enqueued after the defaults"
    )
    gradient_checkpointing: bool = False
    max_failures: int = Field(default=0, ge=0, description="retries of a crashing trial before it is FAIL")
    output_dir: str | None = Field(
        default=None, description="trial outputs (default: promptsweep.paths.runs_dir())"
    )

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        # Pooling is a classification-head option: other tasks default to no pooling dimension.
        if isinstance(data, dict) and data.get("task", "classification") != "classification":
            space = data.get("space")
            if space is None:
                data = {**data, "space": {"pooling": None}}
            elif isinstance(space, dict) and "pooling" not in space:
                data = {**data, "space": {**space, "pooling": None}}
        return data

    @model_validator(mode="after")
    def _cross_field(self) -> JobSpec:
        kind = KNOWN_MODELS.get(self.model)
        if kind == "encoder" and self.task != "classification":
            raise _FieldError(
                "task", f"model {self.model!r} is an encoder; task {self.task!r} needs a causal LM"
            )
        if self.task == "generation" and not self.dataset.target_column:
            raise _FieldError("dataset.target_column", "the generation task needs a target column")
        if self.task != "generation" and not self.dataset.label_column:
            raise _FieldError("dataset.label_column", f"the {self.task} task needs a label column")
        if self.objective.metric not in TASK_METRICS[self.task]:
            raise _FieldError(
                "objective.metric",
                f"metric {self.objective.metric!r} is not reported by task {self.task!r} "
                f"(it reports {list(TASK_METRICS[self.task])})",
            )
        if self.task != "classification" and self.space.pooling is not None:
            raise _FieldError("space.pooling", f"pooling applies to classification only, not {self.task!r}")
        if self.task == "classification" and self.space.pooling is None:
            raise _FieldError("space.pooling", "the classification task needs at least one pooling mode")
        if self.gradient_checkpointing and "prefix_tuning" in self.space.methods:
            raise _FieldError(
                "gradient_checkpointing",
                "prefix tuning cannot run with gradient checkpointing (peft issue #869); "
                "drop prefix_tuning from space.methods or set gradient_checkpointing: false",
            )
        if self.sampler.name == "nsga2" and not self.objective.is_multi_objective:
            raise _FieldError(
                "sampler.name", "nsga2 is for multi-objective searches; set objective.secondary"
            )
        grace = self.scheduler.grace_period_steps
        if grace is not None and self.budget.max_steps is not None and grace > self.budget.max_steps:
            raise _FieldError(
                "scheduler.grace_period_steps", f"{grace} exceeds budget.max_steps ({self.budget.max_steps})"
            )
        if self.ray_address is not None:
            addr = self.ray_address
            if not (addr == "auto" or addr.startswith("ray://") or ":" in addr):
                raise _FieldError(
                    "ray_address", f"expected null, 'auto', 'ray://host:port' or 'host:port', got {addr!r}"
                )
        for i, cfg in enumerate(self.warm_start_configs):
            method = cfg.get("method")
            if method not in self.space.methods:
                raise _FieldError(
                    f"warm_start_configs[{i}].method",
                    f"{method!r} is not one of space.methods {self.space.methods}",
                )
            allowed = {"method", "num_virtual_tokens", "learning_rate", *METHOD_KEYS[method]}
            if self.space.pooling is not None:
                allowed.add("pooling")
            foreign = sorted(set(cfg) - allowed)
            if foreign:
                raise _FieldError(
                    f"warm_start_configs[{i}]",
                    f"{foreign} are not parameters of {method} (its parameters: {sorted(allowed)})",
                )
        return self

    # -- helpers used by the orchestration -------------------------------------------------------
    @property
    def metric_names(self) -> list[str]:
        """The objective names in order (``[metric]`` or ``[metric, "trainable_params"]``)."""
        return [self.objective.metric] + ([self.objective.secondary] if self.objective.secondary else [])

    @property
    def directions(self) -> list[str]:
        """Optuna directions matching :attr:`metric_names`."""
        out = [self.objective.resolved_direction]
        if self.objective.secondary:
            out.append("minimize")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serializable form stored with the job (reload with :func:`parse_spec`)."""
        return self.model_dump(mode="json")


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _FieldError):
            lines.append(f"{'.'.join(p for p in (loc, ctx_err.field) if p)}: {ctx_err.message}")
            continue
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix) :]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{loc or '(spec)'}: {msg}")
    return f"invalid job spec {source}: " + "; ".join(lines)


def parse_spec(data: dict[str, Any] | JobSpec, *, source: str = "(dict)") -> JobSpec:
    """Validate a spec given as a mapping (parsed YAML/JSON or a stored job's spec).

    Raises:
        SpecError: naming each field at fault and what was expected.
    """
    if isinstance(data, JobSpec):
        return data
    if not isinstance(data, dict):
        raise SpecError(
            f"invalid job spec {source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(exc, source)) from None


def load_spec(path: str | os.PathLike[str]) -> JobSpec:
    """Load and validate a job spec from a ``.yaml``/``.yml`` or ``.json`` file.

    Raises:
        SpecError: the file is missing, does not parse, or a field is invalid (named in the message).
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"job spec file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"job spec file {str(p)!r} does not parse: {exc}") from None
    return parse_spec(data, source=repr(str(p)))


DEFAULT_SPEC_RESOURCE = "defaults/fine_foods_minilm.yaml"


def default_spec_path() -> Path:
    """Path of the embedded default spec (Fine Foods + MiniLM), shipped as package data."""
    return Path(str(resources.files("promptsweep.search").joinpath(DEFAULT_SPEC_RESOURCE)))


def default_spec() -> JobSpec:
    """The embedded default job: Fine Foods reviews (great/other) on the frozen all-MiniLM-L6-v2."""
    return load_spec(default_spec_path())


def local_gpu_count() -> int:
    """Number of NVIDIA GPUs visible on this machine, without importing torch or ray.

    Reads ``/proc/driver/nvidia/gpus`` and honours ``CUDA_VISIBLE_DEVICES``.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    proc = Path("/proc/driver/nvidia/gpus")
    found = len(list(proc.iterdir())) if proc.is_dir() else 0
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return min(found, len(ids))
    return found


def check_resources(spec: JobSpec, *, gpus_available: float, cpus_available: float | None = None) -> None:
    """Refuse a spec whose per-trial resources the pool cannot give.

    Args:
        gpus_available: GPUs in the pool (a Ray cluster's ``GPU`` resource, or the local count).
        cpus_available: CPUs in the pool, when known.

    Raises:
        SpecError: naming ``resources.gpus_per_trial`` / ``resources.cpus_per_trial``.
    """
    r = spec.resources
    if r.gpus_per_trial > 0 and gpus_available <= 0:
        raise SpecError(
            f"resources.gpus_per_trial: {r.gpus_per_trial} GPU(s) per trial requested, "
            "but no GPU exists in the resource pool; set gpus_per_trial: 0"
        )
    if r.gpus_per_trial > gpus_available:
        raise SpecError(
            f"resources.gpus_per_trial: {r.gpus_per_trial} GPU(s) per trial, the pool has {gpus_available}"
        )
    if cpus_available is not None and r.cpus_per_trial > cpus_available:
        raise SpecError(
            f"resources.cpus_per_trial: {r.cpus_per_trial} CPU(s) per trial, the pool has {cpus_available}"
        )
