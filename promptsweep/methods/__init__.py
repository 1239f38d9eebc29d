"""promptsweep.methods: prompt methods on a frozen PLM (built on Hugging Face PEFT).

Prompt tuning (Lester et al. 2021), prefix tuning (Li & Liang 2021; P-tuning v2 without projection)
and P-tuning (Liu et al. 2021) for three tasks: encoder classification, causal-LM verbalizer
classification and causal-LM generation. See docs/architecture.md for the contract.

The light names (enums, registry, records) load no torch; ``prepare_inputs``, ``train_trial``,
``evaluate_adapter`` and ``load_adapter_model`` import torch/transformers/peft on first access
(PEP 562 ``__getattr__``), so ``import promptsweep.methods`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from promptsweep.methods._adapters import is_uri, local_adapter_dir
from promptsweep.methods._architectures import (
    ALIAS_CONFIGS,
    ModelFamily,
    ModelSupportError,
    check_model_support,
    model_config_if_known,
    read_model_config,
)
from promptsweep.methods._config import (
    DEFAULT_POOLING,
    METHOD_REGISTRY,
    METRICS,
    TASK_METRICS,
    EncoderType,
    MethodConfig,
    MethodEntry,
    ParamSpec,
    Pooling,
    PrefixTuningConfig,
    PromptInit,
    PromptMethod,
    PromptTuningConfig,
    PTuningConfig,
    TaskType,
    default_params,
    method_config_from_params,
    method_parameters,
    register_method,
)
from promptsweep.methods._labels import PER_CLASS_F1, PER_CLASS_RECALL, per_class_values
from promptsweep.methods._noise import (
    clearly_better,
    discordant,
    paired_bound,
    standard_error,
    unpaired_bound,
)
from promptsweep.methods._precision import PRECISIONS, cpu_bf16_supported
from promptsweep.methods._sources import DATA_ALIASES
from promptsweep.methods._types import DataSpec, PreparedInputs, TrainBudget, TrialResult

_LAZY = {
    "prepare_inputs": "promptsweep.methods._data",
    "check_data": "promptsweep.methods._data",
    "train_trial": "promptsweep.methods._train",
    "evaluate_adapter": "promptsweep.methods._train",
    "adapter_outcomes": "promptsweep.methods._train",
    "load_adapter_model": "promptsweep.methods._train",
    "read_adapter_meta": "promptsweep.methods._train",
    "bf16_supported": "promptsweep.methods._step",
    "resolve_precision": "promptsweep.methods._step",
    "measure_costs": "promptsweep.methods._costs",
    "score_floors": "promptsweep.methods._floors",
    "resolve_model_dir": "promptsweep.methods._models",
    "Floor": "promptsweep.methods._floors",
}

__all__ = [
    "ALIAS_CONFIGS",
    "DATA_ALIASES",
    "DEFAULT_POOLING",
    "METHOD_REGISTRY",
    "METRICS",
    "PER_CLASS_F1",
    "PER_CLASS_RECALL",
    "PRECISIONS",
    "TASK_METRICS",
    "DataSpec",
    "EncoderType",
    "Floor",
    "MethodConfig",
    "MethodEntry",
    "ModelFamily",
    "ModelSupportError",
    "PTuningConfig",
    "ParamSpec",
    "Pooling",
    "PrefixTuningConfig",
    "PreparedInputs",
    "PromptInit",
    "PromptMethod",
    "PromptTuningConfig",
    "TaskType",
    "TrainBudget",
    "TrialResult",
    "adapter_outcomes",
    "bf16_supported",
    "check_data",
    "check_model_support",
    "clearly_better",
    "cpu_bf16_supported",
    "default_params",
    "discordant",
    "evaluate_adapter",
    "is_uri",
    "load_adapter_model",
    "local_adapter_dir",
    "measure_costs",
    "method_config_from_params",
    "method_parameters",
    "model_config_if_known",
    "paired_bound",
    "per_class_values",
    "prepare_inputs",
    "read_adapter_meta",
    "read_model_config",
    "register_method",
    "resolve_model_dir",
    "resolve_precision",
    "score_floors",
    "standard_error",
    "train_trial",
    "unpaired_bound",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'promptsweep.methods' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
