"""Prompt methods, tasks, metrics and the enum-keyed method registry (no torch here).

The registry follows peft's ``PeftType`` + ``register_peft_method``: each :class:`PromptMethod` maps to
one :class:`MethodEntry` holding its typed config class, its parameter specs (names, kinds, choices,
valid bounds, paper defaults, the condition under which a parameter is active) and its PEFT builder.
Everything that needs a method's parameters - validation here, the search space in
``promptsweep.search`` - reads them from the registry instead of matching strings.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from promptsweep.exceptions import MethodConfigError


class PromptMethod(enum.StrEnum):
    """The soft-prompt methods promptsweep searches over.

    - ``prompt_tuning``: Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"
      (trainable virtual-token embeddings prepended to the input embeddings).
    - ``prefix_tuning``: Li & Liang 2021, "Prefix-Tuning" (trainable key/value prefixes in every layer);
      without ``prefix_projection`` this is P-tuning v2's deep prompt tuning (Liu et al. 2022).
    - ``p_tuning``: Liu et al. 2021, "GPT Understands, Too" (virtual tokens produced by a prompt encoder,
      an LSTM or an MLP, prepended to the input embeddings).
    """

    PROMPT_TUNING = "prompt_tuning"
    PREFIX_TUNING = "prefix_tuning"
    P_TUNING = "p_tuning"


class TaskType(enum.StrEnum):
    """What a trial trains the soft prompt for.

    - ``classification``: an encoder (e.g. BERT) with a classification head (the head trains).
    - ``verbalizer``: a causal LM scores label words by its next-token logits (P-tuning's NLU setting);
      an encoder-decoder (T5) by its decoder's first-step logits.
    - ``generation``: a causal LM or an encoder-decoder maps input text to target text; loss on target
      tokens only.
    """

    CLASSIFICATION = "classification"
    VERBALIZER = "verbalizer"
    GENERATION = "generation"


class Pooling(enum.StrEnum):
    """How the classification head summarizes the encoder's last hidden states (batch, seq, hidden).

    - ``pooler``: the checkpoint's own pooler (BERT: dense + tanh over position 0; the HF default).
    - ``first_token``: the raw hidden state at position 0 (no dense/tanh).
    - ``mean``: the mean over real (non-padding) input tokens; virtual-token positions of prompt
      tuning / P-tuning are *excluded* (measured on MiniLM + Fine Foods, see docs/architecture.md).
    """

    POOLER = "pooler"
    FIRST_TOKEN = "first_token"
    MEAN = "mean"


class PromptInit(enum.StrEnum):
    """Prompt-tuning initialization (peft ``PromptTuningInit``): random, sampled vocabulary, or text."""

    RANDOM = "random"
    SAMPLE_VOCAB = "sample_vocab"
    TEXT = "text"


class EncoderType(enum.StrEnum):
    """P-tuning's prompt encoder (peft ``PromptEncoderReparameterizationType``)."""

    LSTM = "LSTM"
    MLP = "MLP"


#: Metric name -> direction. ``accuracy``/``macro_f1``/``exact_match`` are fractions in [0, 1];
#: ``eval_loss`` is the mean cross-entropy in nats per example (classification, verbalizer) or per
#: target token (generation); ``perplexity`` is ``exp(eval_loss)`` (generation only).
METRICS: dict[str, Literal["maximize", "minimize"]] = {
    "accuracy": "maximize",
    "macro_f1": "maximize",
    "eval_loss": "minimize",
    "perplexity": "minimize",
    "exact_match": "maximize",
}

#: The metrics each task reports at every evaluation.
TASK_METRICS: dict[TaskType, tuple[str, ...]] = {
    TaskType.CLASSIFICATION: ("accuracy", "macro_f1", "eval_loss"),
    TaskType.VERBALIZER: ("accuracy", "macro_f1", "eval_loss"),
    TaskType.GENERATION: ("eval_loss", "perplexity", "exact_match"),
}

#: The pooling a classification trial uses when ``pooling`` is not given (measured, not habit:
#: on MiniLM + Fine Foods the checkpoint's pooler output is nearly constant; see docs/architecture.md).
DEFAULT_POOLING = Pooling.MEAN


# --------------------------------------------------------------------------------------------------
# Parameter specs


@dataclass(frozen=True)
class ParamSpec:
    """One trial parameter: its name, kind, valid values and paper default.

    Attributes:
        name: the flat-dict key (e.g. ``"encoder_hidden_size"``).
        kind: ``"int"``, ``"float"``, ``"bool"``, ``"categorical"`` or ``"str"``.
        default: the paper/PEFT default used when the key is absent (``None``: no default / optional).
        choices: the allowed values for ``categorical`` and ``bool`` parameters.
        low, high: inclusive valid bounds for ``int``/``float`` (validity, not a search range).
        active_when: ``(other_key, value)``: the parameter belongs to the trial only when ``other_key``
            has that value (e.g. ``encoder_num_layers`` only when ``encoder_type == "LSTM"``).
        help: one line for docs and error messages.
    """

    name: str
    kind: Literal["int", "float", "bool", "categorical", "str"]
    default: Any = None
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    active_when: tuple[str, Any] | None = None
    help: str = ""

    def validate(self, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type.

        Raises:
            MethodConfigError: naming the key and the value when it is of the wrong type or out of range.
        """
        bad = f"parameter {self.name!r}={value!r}"
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise MethodConfigError(f"{bad} must be true or false")
            return value
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                raise MethodConfigError(f"{bad} must be an integer")
            value = int(value)
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise MethodConfigError(f"{bad} must be a finite number")
            value = float(value)
        elif self.kind == "str":
            if not isinstance(value, str) or not value.strip():
                raise MethodConfigError(f"{bad} must be a non-empty string")
            return value
        elif self.kind == "categorical":
            allowed = [c.value if isinstance(c, enum.Enum) else c for c in self.choices or ()]
            raw = value.value if isinstance(value, enum.Enum) else value
            if raw not in allowed:
                raise MethodConfigError(f"{bad} must be one of {allowed}")
            return raw
        if self.low is not None and value < self.low:
            raise MethodConfigError(f"{bad} must be >= {self.low}")
        if self.high is not None and value > self.high:
            raise MethodConfigError(f"{bad} must be <= {self.high}")
        return value


COMMON_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "num_virtual_tokens",
        "int",
        20,
        low=1,
        high=512,
        help="number of virtual tokens (soft-prompt length / prefix length)",
    ),
    ParamSpec(
        "learning_rate",
        "float",
        None,
        low=1e-7,
        high=10.0,
        help="AdamW peak learning rate (warm-up then linear decay)",
    ),
)

POOLING_PARAMETER = ParamSpec(
    "pooling",
    "categorical",
    DEFAULT_POOLING.value,
    choices=tuple(p.value for p in Pooling),
    help="classification head pooling: the model's pooler, the first token's state, or the mean",
)

#: Paper-default learning rates per method (warm-start configs; the search layer owns the ranges).
#: Prompt tuning: Lester et al. used 0.3 with Adafactor; with AdamW 3e-2 is PEFT's example value.
#: Prefix tuning / P-tuning v2: the released P-tuning v2 scripts use 5e-3 .. 6e-2 (1e-2 typical).
#: P-tuning: Liu et al. 2021 used 1e-5 for the PLM and larger rates for the prompt encoder (PEFT
#: examples use 1e-3 .. 1e-2).
DEFAULT_LEARNING_RATE: dict[PromptMethod, float] = {
    PromptMethod.PROMPT_TUNING: 3e-2,
    PromptMethod.PREFIX_TUNING: 1e-2,
    PromptMethod.P_TUNING: 3e-3,
}
#: The same on a causal LM (the verbalizer and generation tasks), measured on the frozen SmolLM2-135M
#: verbalizer (docs/quality.md, "Learning rates on a causal LM"): prompt tuning at 3e-2 stayed near the
#: majority class for 225 steps (0.675 validation accuracy) where 1e-2 reached 0.80.
CAUSAL_LM_DEFAULT_LEARNING_RATE: dict[PromptMethod, float] = {
    PromptMethod.PROMPT_TUNING: 1e-2,
    PromptMethod.PREFIX_TUNING: 1e-2,
    PromptMethod.P_TUNING: 3e-3,
}


# --------------------------------------------------------------------------------------------------
# Typed method configs


@dataclass(frozen=True)
class MethodConfig:
    """A validated trial configuration (base of the per-method configs).

    Attributes:
        method: the prompt method.
        num_virtual_tokens: soft-prompt / prefix length (tokens).
        learning_rate: AdamW peak learning rate.
        pooling: the classification head's pooling (``None`` for causal-LM tasks).
    """

    method: PromptMethod
    num_virtual_tokens: int
    learning_rate: float
    pooling: Pooling | None = None

    def to_params(self) -> dict[str, Any]:
        """Return the flat parameter dict (JSON-serializable; ``None`` values omitted)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = value.value if isinstance(value, enum.Enum) else value
        return out


@dataclass(frozen=True)
class PromptTuningConfig(MethodConfig):
    """Prompt tuning (Lester et al. 2021): ``prompt_init`` and, for ``text``, ``prompt_init_text``
    (when absent, the trainer builds it from the label words / label names)."""

    prompt_init: PromptInit = PromptInit.RANDOM
    prompt_init_text: str | None = None


@dataclass(frozen=True)
class PrefixTuningConfig(MethodConfig):
    """Prefix tuning (Li & Liang 2021). ``prefix_projection=False`` is P-tuning v2's deep prompt tuning;
    ``True`` adds the MLP reparameterization ``Embedding -> Linear(hidden, encoder_hidden_size) -> Tanh
    -> Linear(encoder_hidden_size, 2 * layers * hidden)`` (peft, after THUDM/P-tuning-v2)."""

    prefix_projection: bool = False
    encoder_hidden_size: int | None = None

    @property
    def is_p_tuning_v2(self) -> bool:
        """True when this is P-tuning v2's deep prompt tuning (no projection)."""
        return not self.prefix_projection


@dataclass(frozen=True)
class PTuningConfig(MethodConfig):
    """P-tuning (Liu et al. 2021): a prompt encoder (bidirectional LSTM + MLP head, or a 3-layer MLP)
    maps the virtual-token embeddings to the soft prompt. ``encoder_num_layers`` applies to LSTM only."""

    encoder_type: EncoderType = EncoderType.MLP
    encoder_hidden_size: int | None = None
    encoder_num_layers: int | None = None
    encoder_dropout: float = 0.0


@dataclass(frozen=True)
class MethodEntry:
    """One registry entry: a method's config class, its own parameters and its PEFT builder.

    Attributes:
        method: the registry key.
        config_cls: the typed config built by :func:`method_config_from_params`.
        parameters: the method's own parameters (besides :data:`COMMON_PARAMETERS` and ``pooling``).
        build_peft_config: ``(config, context) -> peft.PeftConfig``; ``context`` is a
            :class:`PeftContext` (imported lazily; peft is loaded only when called).
        paper: the paper the method follows.
    """

    method: PromptMethod
    config_cls: type[MethodConfig]
    parameters: tuple[ParamSpec, ...]
    build_peft_config: Callable[[Any, Any], Any]
    paper: str


_REGISTRY: dict[PromptMethod, MethodEntry] = {}

#: Read-only view of the registry: ``PromptMethod`` -> :class:`MethodEntry`.
METHOD_REGISTRY: Mapping[PromptMethod, MethodEntry] = _REGISTRY  # exposed read-only by convention


def register_method(entry: MethodEntry) -> None:
    """Add ``entry`` to the registry.

    Raises:
        MethodConfigError: if the method is already registered, or a parameter name repeats or collides
            with a common parameter.
    """
    names = [p.name for p in entry.parameters]
    common = {p.name for p in COMMON_PARAMETERS} | {"method", "pooling"}
    dup = {n for n in names if names.count(n) > 1 or n in common}
    if dup:
        raise MethodConfigError(
            f"prompt method {entry.method.value!r}: duplicate parameter names {sorted(dup)}"
        )
    if entry.method in _REGISTRY:
        raise MethodConfigError(f"prompt method {entry.method.value!r} is already registered")
    _REGISTRY[entry.method] = entry


def parse_method(value: Any) -> PromptMethod:
    """Return the :class:`PromptMethod` for ``value``.

    Raises:
        MethodConfigError: naming the value and the registered methods.
    """
    try:
        method = PromptMethod(value)
    except ValueError:
        raise MethodConfigError(
            f"parameter 'method'={value!r} must be one of {[m.value for m in _REGISTRY]}"
        ) from None
    if method not in _REGISTRY:
        raise MethodConfigError(f"parameter 'method'={value!r} is not registered")
    return method


def method_parameters(
    method: PromptMethod | str, task: TaskType | str | None = None
) -> tuple[ParamSpec, ...]:
    """Return every parameter a trial of ``method`` on ``task`` takes (common ones first).

    ``pooling`` is included only for ``classification`` (or when ``task`` is ``None``).
    The search layer builds its conditional space from this (names, kinds, choices, ``active_when``).
    """
    entry = _REGISTRY[parse_method(method)]
    pooling = (
        () if task is not None and TaskType(task) is not TaskType.CLASSIFICATION else (POOLING_PARAMETER,)
    )
    return COMMON_PARAMETERS + entry.parameters + pooling


def default_params(method: PromptMethod | str, task: TaskType | str) -> dict[str, Any]:
    """Return the paper-default flat params of ``method`` on ``task`` (for warm-starting a study); on a
    causal-LM task the learning rate is :data:`CAUSAL_LM_DEFAULT_LEARNING_RATE`'s."""
    m = parse_method(method)
    causal = TaskType(task) is not TaskType.CLASSIFICATION
    rates = CAUSAL_LM_DEFAULT_LEARNING_RATE if causal else DEFAULT_LEARNING_RATE
    out: dict[str, Any] = {"method": m.value}
    for spec in method_parameters(m, task):
        if spec.active_when is not None and out.get(spec.active_when[0]) != spec.active_when[1]:
            continue
        if spec.name == "learning_rate":
            out[spec.name] = rates[m]
        elif spec.default is not None:
            out[spec.name] = spec.default
    return out


def method_config_from_params(params: Mapping[str, Any], task: TaskType | str | None = None) -> MethodConfig:
    """Validate one trial's flat params and return the method's typed config.

    Args:
        params: the flat dict (``method``, ``num_virtual_tokens``, ``learning_rate``, the method's own
            keys, ``pooling`` for classification).
        task: the task; when given, ``pooling`` is required-or-defaulted for classification and refused
            for the causal-LM tasks.

    Raises:
        MethodConfigError: naming the key and value - unknown method, a key foreign to the method or
            task, a missing required key, a bad type or range, an inactive conditional key (e.g.
            ``encoder_num_layers`` with ``encoder_type='MLP'``, which PEFT would silently ignore).
    """
    if not isinstance(params, Mapping):
        raise MethodConfigError(f"trial parameters must be a mapping, got {type(params).__name__}")
    if "method" not in params:
        raise MethodConfigError("trial parameters need 'method'")
    method = parse_method(params["method"])
    entry = _REGISTRY[method]
    task_t = TaskType(task) if task is not None else None
    specs = {s.name: s for s in method_parameters(method, task_t)}
    foreign = sorted(set(params) - set(specs) - {"method"})
    if foreign:
        if "pooling" in foreign:
            raise MethodConfigError(
                f"parameter 'pooling'={params['pooling']!r} applies to the classification task only, "
                f"not {task_t.value if task_t else task!r}"
            )
        raise MethodConfigError(
            f"parameter(s) {', '.join(f'{k!r}={params[k]!r}' for k in foreign)} do not belong to method "
            f"{method.value!r} (its parameters: {sorted(specs)})"
        )
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name not in params:
            continue
        if spec.active_when is not None:
            other, needed = spec.active_when
            current = params.get(other, specs[other].default)
            if isinstance(current, enum.Enum):
                current = current.value
            if current != needed:
                raise MethodConfigError(
                    f"parameter {name!r}={params[name]!r} applies only when {other}={needed!r}, "
                    f"but {other}={current!r}"
                )
        values[name] = spec.validate(params[name])
    if "learning_rate" not in values:
        raise MethodConfigError(f"method {method.value!r} needs 'learning_rate'")
    values.setdefault("num_virtual_tokens", specs["num_virtual_tokens"].default)
    if task_t is TaskType.CLASSIFICATION:
        values.setdefault("pooling", DEFAULT_POOLING.value)
    for name, spec in specs.items():
        if name in values or spec.default is None or name in ("pooling",):
            continue
        if spec.active_when is not None:
            other, needed = spec.active_when
            if values.get(other, specs[other].default) != needed:
                continue
        values[name] = spec.default
    if "pooling" in values:
        values["pooling"] = Pooling(values["pooling"])
    return entry.config_cls(method=method, **_typed(entry.config_cls, values))


def _typed(cls: type[MethodConfig], values: dict[str, Any]) -> dict[str, Any]:
    enums = {"prompt_init": PromptInit, "encoder_type": EncoderType}
    return {k: (enums[k](v) if k in enums else v) for k, v in values.items()}


# --------------------------------------------------------------------------------------------------
# The registry's entries. Builders import peft lazily (``promptsweep.methods._peft``).


def _lazy_builder(name: str) -> Callable[[Any, Any], Any]:
    def build(config: Any, context: Any) -> Any:
        from promptsweep.methods import _peft

        return getattr(_peft, name)(config, context)

    build.__name__ = name
    build.__doc__ = f"Build the peft config (promptsweep.methods._peft.{name})."
    return build


register_method(
    MethodEntry(
        method=PromptMethod.PROMPT_TUNING,
        config_cls=PromptTuningConfig,
        parameters=(
            ParamSpec(
                "prompt_init",
                "categorical",
                PromptInit.RANDOM.value,
                choices=tuple(p.value for p in PromptInit),
                help="random | sample_vocab (embeddings of random vocabulary tokens) | text",
            ),
            ParamSpec(
                "prompt_init_text",
                "str",
                None,
                active_when=("prompt_init", PromptInit.TEXT.value),
                help="init text (cut or repeated to num_virtual_tokens); default: the label words",
            ),
        ),
        build_peft_config=_lazy_builder("build_prompt_tuning"),
        paper="Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning",
    )
)
register_method(
    MethodEntry(
        method=PromptMethod.PREFIX_TUNING,
        config_cls=PrefixTuningConfig,
        parameters=(
            ParamSpec(
                "prefix_projection",
                "bool",
                False,
                choices=(False, True),
                help="MLP reparameterization of the prefix; false = P-tuning v2 deep prompt tuning",
            ),
            ParamSpec(
                "encoder_hidden_size",
                "int",
                None,
                low=1,
                high=16384,
                active_when=("prefix_projection", True),
                help="hidden width of the prefix projection MLP (default: the model's hidden size)",
            ),
        ),
        build_peft_config=_lazy_builder("build_prefix_tuning"),
        paper="Li & Liang 2021, Prefix-Tuning; Liu et al. 2022, P-Tuning v2 (without projection)",
    )
)
register_method(
    MethodEntry(
        method=PromptMethod.P_TUNING,
        config_cls=PTuningConfig,
        parameters=(
            ParamSpec(
                "encoder_type",
                "categorical",
                EncoderType.MLP.value,
                choices=tuple(e.value for e in EncoderType),
                help="prompt encoder: LSTM or MLP",
            ),
            ParamSpec(
                "encoder_hidden_size",
                "int",
                None,
                low=1,
                high=16384,
                help="prompt encoder hidden width (default: the model's hidden size)",
            ),
            ParamSpec(
                "encoder_num_layers",
                "int",
                2,
                low=1,
                high=8,
                active_when=("encoder_type", "LSTM"),
                help="LSTM layers (LSTM only: PEFT's MLP is always 3 linear layers)",
            ),
            ParamSpec("encoder_dropout", "float", 0.0, low=0.0, high=0.9, help="prompt encoder dropout"),
        ),
        build_peft_config=_lazy_builder("build_p_tuning"),
        paper="Liu et al. 2021, GPT Understands, Too (P-tuning)",
    )
)
