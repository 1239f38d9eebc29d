"""The search-space section of a job spec: typed ranges and each method's sub-space (pydantic).

``SearchSpace`` is the ``space`` of :class:`~promptsweep.search.JobSpec`; :mod:`promptsweep.search._space`
samples it. Default ranges follow the papers, with learning-rate floors measured for the short budgets
a search's first rung gives a trial (docs/quality.md). Errors name the field (dotted path) through
:func:`promptsweep.search.parse_spec`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from promptsweep.methods import METHOD_REGISTRY

#: The prompt methods a spec may name: the methods registry's (``promptsweep.methods.METHOD_REGISTRY``).
METHOD_NAMES: tuple[str, ...] = tuple(m.value for m in METHOD_REGISTRY)


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

    Lester et al. trained with learning rate 0.3 (Adafactor) for 30,000 steps. A search's trials are
    judged after ~20 steps: on frozen MiniLM 1e-2 reached 0.72 there and 3e-1 0.68 (rising to 0.74 by
    step 60; docs/quality.md, ``benchmarks/bench_lr.py``), so the default is 1e-2 .. 3e-1 on a log scale. The
    PEFT benchmark shows accuracy moving from 0.057 to 0.343 on learning rate and init alone, hence
    both are searched.
    """

    learning_rate: PositiveFloatRange = FloatRange(low=1e-2, high=3e-1, log=True)
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
    reparameterized prefix on GPT-2 over many epochs. On frozen MiniLM, 3e-3 stayed at the majority class
    for 60 steps, 1e-2 and 6e-2 moved it within the first ~20, 2e-1 diverged (docs/quality.md,
    ``benchmarks/bench_lr.py``), so the default is 1e-2 .. 8e-2. ``encoder_hidden_size`` is searched
    only when ``prefix_projection`` is true (Li & Liang used 512 / 800).
    """

    learning_rate: PositiveFloatRange = FloatRange(low=1e-2, high=8e-2, log=True)
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

    PEFT's P-tuning examples train with 1e-3 .. 1e-2; on frozen MiniLM 3e-3 barely left the majority
    class in 60 steps while 1e-2 and 3e-2 reached 0.74-0.75 by step 40 (docs/quality.md,
    ``benchmarks/bench_lr.py``), so the default range is 1e-2 .. 5e-2 (log).
    ``encoder_num_layers`` is sampled only for the LSTM encoder (PEFT's MLP is always 3 layers).
    """

    learning_rate: PositiveFloatRange = FloatRange(low=1e-2, high=5e-2, log=True)
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


#: The default learning-rate ranges on a causal LM (the ``verbalizer`` and ``generation`` tasks), in place
#: of the encoder ranges in each method's space above, where a spec gives none. Measured on the frozen
#: SmolLM2-135M verbalizer (docs/quality.md, "Learning rates on a causal LM"): the encoder ranges' lower
#: ends are where a causal LM learns, and their upper parts keep it at or below the majority class
#: (prompt tuning at 3e-2: 0.675 validation accuracy after 225 steps, against 0.80 at 1e-2).
CAUSAL_LM_LEARNING_RATES: dict[str, FloatRange] = {
    "prompt_tuning": FloatRange(low=3e-3, high=1e-2, log=True),
    "prefix_tuning": FloatRange(low=3e-3, high=1e-2, log=True),
    "p_tuning": FloatRange(low=1e-3, high=1e-2, log=True),
}


def with_task_learning_rates(space: SearchSpace, task: str) -> SearchSpace:
    """``space`` with the default learning-rate range of ``task`` for each method whose space was given
    none (``learning_rate`` not in its ``model_fields_set``): :data:`CAUSAL_LM_LEARNING_RATES` for the
    causal-LM tasks; unchanged for ``classification`` (the encoder ranges are the fields' defaults)."""
    if task == "classification":
        return space
    update = {
        method: getattr(space, method).model_copy(update={"learning_rate": rng})
        for method, rng in CAUSAL_LM_LEARNING_RATES.items()
        if "learning_rate" not in getattr(space, method).model_fields_set
    }
    return space.model_copy(update=update) if update else space


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
