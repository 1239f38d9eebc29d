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
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from promptsweep.exceptions import SpecError
from promptsweep.methods import (
    ALIAS_CONFIGS,
    METRICS,
    ModelSupportError,
    TaskType,
    check_model_support,
    is_uri,
    method_parameters,
    model_config_if_known,
)
from promptsweep.methods import TASK_METRICS as _METHODS_TASK_METRICS
from promptsweep.search._spec_space import (
    METHOD_NAMES,
    SearchSpace,
    _Model,
    with_task_learning_rates,
)

#: Tasks (values of ``promptsweep.methods.TaskType``).
TASK_NAMES: tuple[str, ...] = tuple(t.value for t in TaskType)
#: Metric -> direction (``promptsweep.methods.METRICS``).
METRIC_DIRECTIONS: dict[str, str] = dict(METRICS)
#: Metrics each task reports (``promptsweep.methods.TASK_METRICS``).
TASK_METRICS: dict[str, tuple[str, ...]] = {t.value: tuple(m) for t, m in _METHODS_TASK_METRICS.items()}
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


class DatasetSpec(_Model):
    """The labelled data (maps onto ``promptsweep.methods.DataSpec``).

    ``source`` is an alias (``fine-foods``), a local csv/json/jsonl/parquet path (or a folder of one
    file per split), a ``datasets`` ``save_to_disk`` folder, or a hub name (offline: from the local
    datasets cache with ``HF_DATASETS_OFFLINE=1``). ``splits`` names the train / validation / test
    splits in the source; a missing validation split is carved from train (``validation_fraction``,
    stratified, every class on both sides). Trials rank on validation only. ``submit`` loads and
    checks the data (``_submitting.check_dataset``).
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


#: Trial-seconds a job may spend when its spec names no budget at all (half a CPU-hour).
DEFAULT_COMPUTE_BUDGET_S = 1800.0


class BudgetSpec(_Model):
    """The job's budget: the one knob a user needs; promptsweep plans the rest.

    Give how much compute the search may spend: ``compute_budget_s`` (trial-seconds: the sum of the
    trials' running times, whatever the concurrency) and/or ``time_budget_s`` (wall-clock seconds of
    the search, a hard cap). From it promptsweep plans (``promptsweep.search._planning``) how many
    configs to screen, the successive-halving rungs, and how long the survivors train. Anything given
    here explicitly is kept and overrides the plan: ``num_trials`` (configs), ``max_steps`` /
    ``max_epochs`` (steps of a trial never stopped; both: the smaller), ``eval_every_steps``. A spec
    without any of ``num_trials``, ``time_budget_s`` and ``compute_budget_s`` gets
    ``compute_budget_s = 1800``.
    """

    num_trials: int | None = Field(default=None, description="configs to run; null: planned from the budget")
    time_budget_s: float | None = Field(default=None, description="wall-clock seconds for the whole search")
    compute_budget_s: float | None = Field(
        default=None, description="trial-seconds for the whole search (independent of concurrency)"
    )
    max_steps: int | None = Field(default=None, description="steps of an unstopped trial; null: planned")
    max_epochs: float | None = None
    eval_every_steps: int | None = Field(default=None, description="null: at the first rung's spacing")
    batch_size: int = 16
    eval_batch_size: int = 64
    warmup_ratio: float = Field(
        default=0.06,
        ge=0,
        lt=1,
        description="fraction of max_steps with linear learning-rate warm-up; a plan that screens ends "
        "it by half its first rung",
    )
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float | None = 1.0
    max_failed_trials: int | None = Field(
        default=None,
        description="failed trials after which the job stops and ends failed; null: half the planned "
        "configs, at least 3",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_budget(cls, data: Any) -> Any:
        if isinstance(data, dict) and all(
            data.get(k) is None for k in ("num_trials", "time_budget_s", "compute_budget_s")
        ):
            data = {**data, "compute_budget_s": DEFAULT_COMPUTE_BUDGET_S}
        return data

    @model_validator(mode="after")
    def _check(self) -> BudgetSpec:
        if self.num_trials is not None and self.num_trials <= 0:
            raise _FieldError("num_trials", f"must be positive, got {self.num_trials}")
        for name in ("time_budget_s", "compute_budget_s"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise _FieldError(name, f"must be positive seconds, got {value}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise _FieldError("max_steps", f"must be positive, got {self.max_steps}")
        if self.max_epochs is not None and self.max_epochs <= 0:
            raise _FieldError("max_epochs", f"must be positive, got {self.max_epochs}")
        for name in ("eval_every_steps", "batch_size", "eval_batch_size", "max_failed_trials"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise _FieldError(name, f"must be positive, got {value}")
        if (
            self.max_steps is not None
            and self.eval_every_steps is not None
            and self.eval_every_steps > self.max_steps
        ):
            raise _FieldError(
                "eval_every_steps", f"{self.eval_every_steps} exceeds max_steps ({self.max_steps})"
            )
        return self


class SamplerSpec(_Model):
    """The Optuna sampler: ``tpe`` (multivariate, grouped: for conditional spaces), ``random``, ``nsga2``."""

    name: Literal["tpe", "random", "nsga2"] = "tpe"
    n_startup_trials: int | None = Field(
        default=None, ge=0, description="TPE: random trials before modelling (null: a third of the configs)"
    )


class SchedulerSpec(_Model):
    """Early stopping of weak trials on the validation metric, over training steps.

    ``asha`` (Li et al. 2020, asynchronous successive halving): rungs at ``grace_period_steps *
    reduction_factor**k`` steps; survivors keep training in the same process. ``median``: the median
    stopping rule; ``none``: every trial runs its full budget. Left null, the first rung and the
    reduction factor (3) are planned from the budget.
    """

    name: Literal["asha", "median", "none"] = "asha"
    grace_period_steps: int | None = Field(default=None, description="first rung (default: planned)")
    reduction_factor: float | None = Field(default=None, gt=1, description="default: planned (3)")

    @field_validator("grace_period_steps")
    @classmethod
    def _grace(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"must be positive, got {v}")
        return v


class SelectionSpec(_Model):
    """How the winner is picked after the search (never on the test split).

    Trials rank on the (capped) validation subsample; its standard error (0.02-0.025 at 300-400
    reviews) is as large as the gaps between good configs. So the top ``finalists`` complete trials are
    re-scored on the *whole* validation split, and the best there is selected (1: no re-scoring).
    """

    finalists: int = Field(
        default=3,
        ge=1,
        description="the top complete trials, re-scored on the whole validation split when the trials were "
        "ranked on a subsample (max_eval_examples) and there are 2 or more",
    )


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
    ray_storage_path: str | None = Field(
        default=None,
        description="where Ray Tune persists the trials' checkpoints (their adapters), for the driver to "
        "fetch: an absolute path every node mounts (NFS) or a pyarrow URI (s3://bucket/prefix, gs://...); "
        "null: the job's directory on the driver's machine, right for one machine only",
    )
    seed: int = 0
    warm_start: bool = Field(default=True, description="enqueue each method's paper-default config first")
    warm_start_configs: list[dict[str, Any]] = Field(
        default_factory=list, description="extra known-good configs (flat params) enqueued after the defaults"
    )
    gradient_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="training precision; auto: bf16 where the CPU/GPU supports it"
    )
    floors: bool = Field(
        default=True, description="score the cheap baselines (majority, head-only / zero-shot) on validation"
    )
    selection: SelectionSpec = SelectionSpec()
    max_failures: int = Field(
        default=1,
        ge=0,
        description="retries of a trial whose process died (killed, out of memory, node lost); an "
        "exception raised by training (NaN loss, invalid config, bad data) is FAIL at once",
    )
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
        # A causal LM's own default learning-rate ranges where the spec gives none (the stored spec then
        # holds them, so a job reloads with the ranges it ran with).
        object.__setattr__(self, "space", with_task_learning_rates(self.space, self.task))
        # An alias's architecture against the task, methods and poolings (a local folder's is checked
        # by `check_model` at submit: a stored job re-parses without reading the model's files).
        if self.model in ALIAS_CONFIGS:
            try:
                _check_model_support(self, ALIAS_CONFIGS[self.model])
            except ModelSupportError as exc:
                raise _FieldError(exc.field, exc.message) from None
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
        if self.ray_storage_path is not None:
            where = self.ray_storage_path
            if not is_uri(where) and not Path(where).is_absolute():  # Ray expands no `~`
                raise _FieldError(
                    "ray_storage_path",
                    f"expected an absolute path every Ray node mounts (NFS) or a URI such as "
                    f"s3://bucket/prefix, got {where!r}",
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


def _check_model_support(spec: JobSpec, model_config: dict[str, Any]) -> None:
    check_model_support(
        model_config,
        spec.task,
        methods=spec.space.methods,
        poolings=spec.space.pooling or (),
        model=spec.model,
    )


def check_model(spec: JobSpec, *, model_config: dict[str, Any] | None = None) -> None:
    """The model's architecture against the job's task, methods and poolings. Run by ``submit``, before
    the job is stored, where it is known without the network (an alias or a local folder's
    ``config.json``; a hub name is let through), and again by the job's run before its data is prepared,
    with ``model_config`` read where the job runs (``search._runner.check_job_model``).

    Raises:
        SpecError: what the model cannot do, naming the field (``model``, ``task``, ``space.methods``
            or ``space.pooling``).
    """
    if model_config is None:
        model_config = model_config_if_known(spec.model)
    if model_config is None:
        return
    try:
        _check_model_support(spec, model_config)
    except ModelSupportError as exc:
        raise SpecError(f"{exc.field}: {exc.message}") from None


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


def check_resources(
    spec: JobSpec, *, gpus_available: float, cpus_available: float | None = None, pool: str = "the pool"
) -> None:
    """Refuse a spec whose per-trial resources the pool cannot give.

    Args:
        gpus_available: GPUs one trial can get (the local count, or the most any Ray node has).
        cpus_available: CPUs one trial can get, when known.
        pool: what the numbers describe, for the message (e.g. the cluster's largest node).

    Raises:
        SpecError: naming ``resources.gpus_per_trial`` / ``resources.cpus_per_trial``.
    """
    r = spec.resources
    if r.gpus_per_trial > 0 and gpus_available <= 0:
        raise SpecError(
            f"resources.gpus_per_trial: {r.gpus_per_trial:g} GPU(s) per trial requested, "
            f"but {pool} has no GPU; set gpus_per_trial: 0"
        )
    if r.gpus_per_trial > gpus_available:
        raise SpecError(
            f"resources.gpus_per_trial: {r.gpus_per_trial:g} GPU(s) per trial, {pool} has {gpus_available:g}"
        )
    if cpus_available is not None and r.cpus_per_trial > cpus_available:
        raise SpecError(
            f"resources.cpus_per_trial: {r.cpus_per_trial:g} CPU(s) per trial, {pool} has {cpus_available:g}"
        )


def check_cpu_precision(spec: JobSpec, *, cpu_flags: Any = None) -> None:
    """Refuse ``precision: bf16`` for trials on this machine's CPU when it has no native bf16
    (AVX-512 BF16 or AMX), without loading torch (``promptsweep.methods.cpu_bf16_supported``).

    Raises:
        SpecError: naming ``precision`` and what the CPU lacks.
    """
    from promptsweep.methods import cpu_bf16_supported
    from promptsweep.methods._precision import CPU_BF16_FLAGS

    if spec.precision == "bf16" and not cpu_bf16_supported(cpu_flags):
        raise SpecError(
            f"precision: 'bf16' needs a CPU with native bf16 ({' or '.join(sorted(CPU_BF16_FLAGS))}), "
            "and this machine's CPU has neither; use precision 'auto' (bf16 only where supported) or 'fp32'"
        )
