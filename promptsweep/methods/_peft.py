"""PEFT builders for the registry's methods (imports peft; reached only from functions)."""

from __future__ import annotations

from dataclasses import dataclass

import peft

from promptsweep.methods._config import (
    EncoderType,
    MethodConfig,
    PrefixTuningConfig,
    PromptInit,
    PromptTuningConfig,
    PTuningConfig,
    TaskType,
)

_PEFT_TASK = {
    TaskType.CLASSIFICATION: peft.TaskType.SEQ_CLS,
    TaskType.VERBALIZER: peft.TaskType.CAUSAL_LM,
    TaskType.GENERATION: peft.TaskType.CAUSAL_LM,
}


@dataclass(frozen=True)
class PeftContext:
    """What a builder needs besides the method config.

    Attributes:
        task: the trial's task (picks peft's task type).
        tokenizer_dir: the tokenizer's local directory (prompt-tuning ``text`` init).
        default_init_text: init text for ``prompt_init='text'`` when the params give none
            (the label words, or the label names).
    """

    task: TaskType
    tokenizer_dir: str
    default_init_text: str


def build_prompt_tuning(config: PromptTuningConfig, context: PeftContext) -> peft.PromptTuningConfig:
    """peft ``PromptTuningConfig`` (Lester et al. 2021) for ``config``."""
    init = {
        PromptInit.RANDOM: peft.PromptTuningInit.RANDOM,
        PromptInit.SAMPLE_VOCAB: peft.PromptTuningInit.SAMPLE_VOCAB,
        PromptInit.TEXT: peft.PromptTuningInit.TEXT,
    }[config.prompt_init]
    kwargs = {}
    if config.prompt_init is PromptInit.TEXT:
        kwargs = {
            "prompt_tuning_init_text": config.prompt_init_text or context.default_init_text,
            "tokenizer_name_or_path": context.tokenizer_dir,
        }
    return peft.PromptTuningConfig(
        task_type=_PEFT_TASK[context.task],
        num_virtual_tokens=config.num_virtual_tokens,
        prompt_tuning_init=init,
        **kwargs,
    )


def build_prefix_tuning(config: PrefixTuningConfig, context: PeftContext) -> peft.PrefixTuningConfig:
    """peft ``PrefixTuningConfig`` (Li & Liang 2021; P-tuning v2 without projection)."""
    kwargs = {}
    if config.prefix_projection and config.encoder_hidden_size is not None:
        kwargs["encoder_hidden_size"] = config.encoder_hidden_size
    return peft.PrefixTuningConfig(
        task_type=_PEFT_TASK[context.task],
        num_virtual_tokens=config.num_virtual_tokens,
        prefix_projection=config.prefix_projection,
        **kwargs,
    )


def build_p_tuning(config: PTuningConfig, context: PeftContext) -> peft.PromptEncoderConfig:
    """peft ``PromptEncoderConfig`` (P-tuning, Liu et al. 2021)."""
    kwargs = {}
    if config.encoder_hidden_size is not None:
        kwargs["encoder_hidden_size"] = config.encoder_hidden_size
    if config.encoder_type is EncoderType.LSTM and config.encoder_num_layers is not None:
        kwargs["encoder_num_layers"] = config.encoder_num_layers
    return peft.PromptEncoderConfig(
        task_type=_PEFT_TASK[context.task],
        num_virtual_tokens=config.num_virtual_tokens,
        encoder_reparameterization_type=(
            peft.PromptEncoderReparameterizationType.LSTM
            if config.encoder_type is EncoderType.LSTM
            else peft.PromptEncoderReparameterizationType.MLP
        ),
        encoder_dropout=config.encoder_dropout,
        **kwargs,
    )


def build_peft_config(config: MethodConfig, context: PeftContext) -> peft.PeftConfig:
    """Dispatch through the registry to the method's builder."""
    from promptsweep.methods._config import METHOD_REGISTRY

    return METHOD_REGISTRY[config.method].build_peft_config(config, context)
