"""PEFT builders for the registry's methods (imports peft; reached only from functions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
        task: the trial's task (picks peft's task type with ``seq2seq``).
        tokenizer_dir: the tokenizer's local directory (prompt-tuning ``text`` init).
        default_init_text: init text for ``prompt_init='text'`` when the params give none
            (the label words, or the label names).
        seq2seq: the model is an encoder-decoder (peft ``SEQ_2_SEQ_LM``).
        modules_to_save: task-model modules trained with the head besides ``classifier`` (e.g.
            DistilBERT's ``pre_classifier``); saved in the adapter by peft.
        prompt_shape: peft's model dimensions (``num_layers``, ``token_dim``, ``num_attention_heads``) where
            peft cannot read them from the config dict (DistilBERT names them ``n_layers``/``dim``/
            ``n_heads``); empty: peft's own guess.
        prefix_shape: the same for prefix tuning only, over ``prompt_shape`` (T5: the decoder's layers,
            ``num_heads * d_kv`` wide, where the virtual tokens stay ``d_model`` wide).
    """

    task: TaskType
    tokenizer_dir: str
    default_init_text: str
    seq2seq: bool = False
    modules_to_save: tuple[str, ...] = ()
    prompt_shape: dict[str, int] = field(default_factory=dict)
    prefix_shape: dict[str, int] = field(default_factory=dict)

    @property
    def peft_task(self) -> peft.TaskType:
        """peft's task type for this trial."""
        return peft.TaskType.SEQ_2_SEQ_LM if self.seq2seq else _PEFT_TASK[self.task]

    def common(self) -> dict[str, Any]:
        """Keyword arguments every prompt-learning config of this trial takes."""
        out: dict[str, Any] = {"task_type": self.peft_task, **self.prompt_shape}
        if self.modules_to_save:
            out["modules_to_save"] = list(self.modules_to_save)
        return out

    def virtual_token_kwargs(self) -> dict[str, Any]:
        """Prompt tuning / P-tuning: on an encoder-decoder, one set of virtual tokens. peft's default for
        ``SEQ_2_SEQ_LM`` is two (``num_transformer_submodules=2``), but its forward and ``generate`` prepend
        only the first set, to the encoder input: the second set would be trained-parameter count without
        effect."""
        return {"num_transformer_submodules": 1} if self.seq2seq else {}


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
        **context.common(),
        **context.virtual_token_kwargs(),
        num_virtual_tokens=config.num_virtual_tokens,
        prompt_tuning_init=init,
        **kwargs,
    )


def build_prefix_tuning(config: PrefixTuningConfig, context: PeftContext) -> peft.PrefixTuningConfig:
    """peft ``PrefixTuningConfig`` (Li & Liang 2021; P-tuning v2 without projection).

    On an encoder-decoder peft passes the prefix as the decoder's ``past_key_values``: it reaches the
    decoder's self-attention (the cross-attention cache is reset; the encoder takes no prefix).
    """
    kwargs: dict[str, Any] = {**context.common(), **context.prefix_shape}
    if config.prefix_projection and config.encoder_hidden_size is not None:
        kwargs["encoder_hidden_size"] = config.encoder_hidden_size
    return peft.PrefixTuningConfig(
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
        **context.common(),
        **context.virtual_token_kwargs(),
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
