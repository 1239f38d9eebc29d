"""Frozen PLMs with their task heads, and the task forward passes (imports torch; reached from functions).

Classification: ``AutoModelForSequenceClassification`` (its head trains; peft keeps it through
``modules_to_save``) with the pooling of :class:`~promptsweep.methods.Pooling` installed where the
architecture's head reads its input (:mod:`~promptsweep.methods._architectures`). Verbalizer and
generation: ``AutoModelForCausalLM``, or ``AutoModelForSeq2SeqLM`` for an encoder-decoder (T5): the
prompt goes to the encoder, the label words / the target are scored by the decoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from promptsweep.methods._architectures import (
    Architecture,
    HeadInput,
    ModelFamily,
    check_model_support,
    read_model_config,
)
from promptsweep.methods._config import DEFAULT_POOLING, MethodConfig, Pooling, PromptMethod, TaskType
from promptsweep.methods._types import PreparedInputs

#: Whether virtual-token positions (prompt tuning, P-tuning) take part in ``mean`` pooling.
#: Decided by measurement on MiniLM + Fine Foods (docs/architecture.md): excluded.
MEAN_INCLUDES_VIRTUAL_TOKENS = False


def virtual_positions(config: MethodConfig) -> int:
    """Positions the method prepends to the encoder's sequence (prompt tuning / P-tuning: the virtual
    tokens; prefix tuning: 0, its prefix lives only in the attention keys/values)."""
    return 0 if config.method is PromptMethod.PREFIX_TUNING else config.num_virtual_tokens


class MaskedPooling(nn.Module):
    """Parameter-free pooling installed as the encoder's ``pooler``.

    Input: hidden states (batch, seq, hidden), where ``seq`` may start with ``num_virtual`` virtual-token
    positions (prompt tuning / P-tuning). The attention mask (batch, mask_len) is taken from the encoder
    call by a forward pre-hook; its last ``seq`` columns match the hidden states (prefix tuning passes
    a mask that also covers the prefix). Output: (batch, hidden).

    - ``first_token``: the state at position 0 (for prompt tuning / P-tuning the first virtual token).
    - ``mean``: mean over positions whose mask is 1, virtual positions excluded unless ``include_virtual``.
    """

    def __init__(self, mode: Pooling, num_virtual: int, include_virtual: bool) -> None:
        super().__init__()
        self.mode = mode
        self.num_virtual = num_virtual
        self.include_virtual = include_virtual
        self.attention_mask: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.mode is Pooling.FIRST_TOKEN:
            return hidden_states[:, 0]
        seq = hidden_states.shape[1]
        mask = self.attention_mask
        if mask is None:
            mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
        mask = mask[:, -seq:].to(hidden_states.dtype)
        if not self.include_virtual and self.num_virtual and seq > self.num_virtual:
            mask = mask.clone()
            mask[:, : self.num_virtual] = 0
        summed = (hidden_states * mask.unsqueeze(-1)).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


class SequencePooler(nn.Module):
    """A pooler slot for heads that read position 0 of a sequence (RoBERTa's): hidden states (batch, seq,
    hidden) -> the pooled vector as a one-position sequence (batch, 1, hidden).

    peft's prefix tuning for sequence classification calls the encoder itself and hands its *pooler output*
    to the head (``PeftModelForSequenceClassification._prefix_tuning_forward``); without a pooler RoBERTa
    hands over the cache instead and fails. With this slot the head reads the same vector on both paths.
    """

    def __init__(self, pool: MaskedPooling) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.pool(hidden_states).unsqueeze(1)


def _install_pooling(model: Any, arch: Architecture, pooling: Pooling, num_virtual: int) -> None:
    """Make ``model``'s classification head read ``pooling`` of the encoder's last hidden states.

    ``pooler`` keeps the model as built. Otherwise a :class:`MaskedPooling` gets the attention mask from a
    forward pre-hook on the encoder and either replaces the pooler module (``pooler_slot``: BERT,
    DeBERTa-v2) or, for ``mean``, writes the pooled vector at position 0 of the encoder's output, where the
    head reads (``first_position``: RoBERTa, DistilBERT; their ``first_token`` is the model as built).
    RoBERTa also gets a :class:`SequencePooler` in its empty pooler slot (peft's prefix-tuning path).
    """
    if pooling is Pooling.POOLER:
        return
    encoder = model.base_model  # the PreTrainedModel's backbone (e.g. BertModel)
    pool = MaskedPooling(pooling, num_virtual, MEAN_INCLUDES_VIRTUAL_TOKENS)

    def _stash_mask(module: nn.Module, args: tuple, kwargs: dict) -> None:
        pool.attention_mask = kwargs.get("attention_mask")
        if pool.attention_mask is None and len(args) > 1:
            pool.attention_mask = args[1]

    encoder.register_forward_pre_hook(_stash_mask, with_kwargs=True)
    if arch.pooler_slot is not None:
        parent, _, attr = arch.pooler_slot.rpartition(".")
        slot = pool if arch.head_input is HeadInput.POOLER_SLOT else SequencePooler(pool)
        setattr(model.get_submodule(parent) if parent else model, attr, slot)
    if arch.head_input is HeadInput.POOLER_SLOT or pooling is Pooling.FIRST_TOKEN:
        return

    def _write_pooled(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        hidden = output[0]
        new = torch.cat([pool(hidden).unsqueeze(1).to(hidden.dtype), hidden[:, 1:]], dim=1)
        if isinstance(output, tuple):
            return (new, *output[1:])
        output["last_hidden_state"] = new
        return output

    encoder.register_forward_hook(_write_pooled, with_kwargs=True)


def model_architecture(inputs: PreparedInputs, config: MethodConfig | None = None) -> Architecture:
    """The architecture of ``inputs.model_dir``, checked against the task and ``config``'s method and
    pooling (:func:`~promptsweep.methods._architectures.check_model_support`)."""
    methods = (config.method,) if config is not None else ()
    poolings = (config.pooling,) if config is not None else ()
    return check_model_support(
        read_model_config(inputs.model_dir),
        inputs.task,
        methods=methods,
        poolings=poolings,
        model=inputs.model,
    )


def _pooling(arch: Architecture, config: MethodConfig) -> Pooling:
    if config.pooling is not None:
        return config.pooling
    return Pooling.POOLER if Pooling.POOLER in arch.poolings else DEFAULT_POOLING


def build_base_model(inputs: PreparedInputs, config: MethodConfig, *, seed: int = 0) -> Any:
    """Load the frozen PLM for ``inputs.task`` with its head; every parameter has ``requires_grad=False``.

    Classification: the head is initialized from ``seed`` (peft trains a copy of it); the pooling of
    ``config.pooling`` is installed. Verbalizer / generation: the causal LM or the encoder-decoder as saved
    (fp32).

    Raises:
        ModelSupportError: (a ``MethodConfigError``) the architecture cannot do the task, the method or
            the pooling; names the job-spec field and the model type.
    """
    import transformers

    arch = model_architecture(inputs, config)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "some weights newly initialized" is expected for the head
    try:
        torch.manual_seed(seed)
        if arch.family is ModelFamily.ENCODER:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                inputs.model_dir,
                num_labels=inputs.num_labels,
                id2label=dict(enumerate(inputs.label_names)),
                label2id={n: i for i, n in enumerate(inputs.label_names)},
                dtype=torch.float32,
            )
            _install_pooling(model, arch, _pooling(arch, config), virtual_positions(config))
        else:
            auto = (
                transformers.AutoModelForSeq2SeqLM
                if arch.family is ModelFamily.SEQ2SEQ_LM
                else transformers.AutoModelForCausalLM
            )
            model = auto.from_pretrained(inputs.model_dir, dtype=torch.float32)
            if model.config.pad_token_id is None:
                model.config.pad_token_id = inputs.pad_token_id
            if arch.family is ModelFamily.SEQ2SEQ_LM and model.config.decoder_start_token_id is None:
                model.config.decoder_start_token_id = model.config.pad_token_id  # T5's convention
    finally:
        transformers.logging.set_verbosity(verbosity)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_peft_model(inputs: PreparedInputs, config: MethodConfig, *, seed: int = 0) -> Any:
    """The frozen PLM wrapped by peft for ``config.method`` (dispatched through the registry)."""
    import peft

    from promptsweep.methods._peft import PeftContext, build_peft_config

    arch = model_architecture(inputs, config)
    base = build_base_model(inputs, config, seed=seed)
    seq2seq = arch.family is ModelFamily.SEQ2SEQ_LM
    cfg = base.config
    prompt_shape: dict[str, int] = {}
    prefix_shape: dict[str, int] = {}
    if arch.family is ModelFamily.ENCODER:  # through the config's attribute map (DistilBERT: dim, n_heads)
        prompt_shape = {
            "num_layers": int(cfg.num_hidden_layers),
            "token_dim": int(cfg.hidden_size),
            "num_attention_heads": int(cfg.num_attention_heads),
        }
    if seq2seq:  # peft would take the encoder's layer count and d_model; the prefix feeds the decoder
        prefix_shape = {
            "num_layers": int(cfg.num_decoder_layers),
            "token_dim": int(cfg.num_heads * cfg.d_kv),
            "num_attention_heads": int(cfg.num_heads),
        }
    context = PeftContext(
        task=inputs.task,
        tokenizer_dir=inputs.model_dir,
        default_init_text=inputs.init_text,
        seq2seq=seq2seq,
        modules_to_save=tuple(arch.head_modules.get(_pooling(arch, config), ()))
        if arch.family is ModelFamily.ENCODER
        else (),
        prompt_shape=prompt_shape,
        prefix_shape=prefix_shape,
    )
    torch.manual_seed(seed)
    model = peft.get_peft_model(base, build_peft_config(config, context))
    return model


def is_seq2seq(model: Any) -> bool:
    """Whether ``model`` (a peft model or a bare one) is an encoder-decoder."""
    return bool(getattr(model.config, "is_encoder_decoder", False))


def generate_kwargs(model: Any) -> dict[str, Any]:
    """Extra ``generate()`` arguments ``model`` needs.

    Encoder-decoder: an empty cache that grows one layer at a time. transformers 4.57 otherwise sizes the
    decoder's cache from ``num_layers`` (the encoder's depth) and fails with an IndexError when
    ``num_decoder_layers`` is larger (seen on the bare T5 too). peft's prefix tuning replaces an empty cache
    with its prefix at the first step, as it does with none.
    """
    if not is_seq2seq(model):
        return {}
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    return {"past_key_values": EncoderDecoderCache(DynamicCache(), DynamicCache())}


def _decoder_start(model: Any) -> int:
    cfg = model.config
    start = cfg.decoder_start_token_id
    return int(start if start is not None else cfg.pad_token_id)


# --------------------------------------------------------------------------------------------------
# Batches and forward passes


def collate(
    examples: list[dict[str, Any]],
    task: TaskType,
    pad_id: int,
    *,
    with_targets: bool = True,
    seq2seq: bool = False,
) -> dict:
    """Right-pad a list of examples to the longest one.

    Returns ``input_ids``/``attention_mask`` (batch, seq) int64, ``token_type_ids`` when present,
    ``labels`` (batch,) class ids, or for generation ``labels`` (batch, seq) with -100 on prompt and
    padding positions (prompt + target concatenated) and ``lengths`` (batch,). Generation on an
    encoder-decoder (``seq2seq``): ``input_ids`` is the prompt (the encoder's input) and ``labels``
    (batch, target) the target tokens, -100 on padding.
    """
    if task is TaskType.GENERATION and with_targets and seq2seq:
        batch = collate(examples, task, pad_id, with_targets=False)
        width = max(len(e["target_ids"]) for e in examples)
        lab = torch.full((len(examples), width), -100, dtype=torch.long)
        for i, e in enumerate(examples):
            lab[i, : len(e["target_ids"])] = torch.tensor(e["target_ids"], dtype=torch.long)
        batch["labels"] = lab
        return batch
    if task is TaskType.GENERATION and with_targets:
        seqs = [e["input_ids"] + e["target_ids"] for e in examples]
        label_seqs = [[-100] * len(e["input_ids"]) + e["target_ids"] for e in examples]
    else:
        seqs = [e["input_ids"] for e in examples]
        label_seqs = None
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    batch: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
    batch["lengths"] = mask.sum(dim=1)
    if "token_type_ids" in examples[0]:
        tt = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, e in enumerate(examples):
            tt[i, : len(e["token_type_ids"])] = torch.tensor(e["token_type_ids"], dtype=torch.long)
        batch["token_type_ids"] = tt
    if label_seqs is not None:
        lab = torch.full((len(seqs), width), -100, dtype=torch.long)
        for i, s in enumerate(label_seqs):
            lab[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        batch["labels"] = lab
    elif "label" in examples[0]:
        batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=torch.long)
    return batch


def class_logits(model: Any, batch: dict, task: TaskType, label_word_ids: Any | None) -> torch.Tensor:
    """Class scores (batch, num_labels) for classification or the verbalizer.

    Verbalizer (P-tuning's NLU setting): the next-token logits after the last real prompt token,
    each class scored by the log-sum-exp of its label words' first-token logits. Only the needed
    positions go through the LM head (``logits_to_keep``), so the (batch, seq, vocab) tensor is never built.
    """
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if "token_type_ids" in batch and (getattr(model.config, "type_vocab_size", 0) or 0) >= 2:
        kwargs["token_type_ids"] = batch["token_type_ids"]  # models without segment embeddings: dropped
    if task is TaskType.CLASSIFICATION:
        return model(**kwargs).logits
    if is_seq2seq(model):  # the decoder's first prediction, from its start token
        start = torch.full_like(batch["input_ids"][:, :1], _decoder_start(model))
        last = model(**kwargs, decoder_input_ids=start).logits[:, 0]
        return torch.stack([torch.logsumexp(last[:, list(w)], dim=-1) for w in label_word_ids], dim=-1)
    offset = _sequence_offset(model)
    pos = batch["lengths"] - 1 + offset
    keep = torch.unique(pos)  # sorted
    out = model(**kwargs, logits_to_keep=keep)
    rows = torch.searchsorted(keep, pos)
    last = out.logits[torch.arange(pos.shape[0]), rows]  # (batch, vocab)
    scores = []
    for word_ids in label_word_ids:
        scores.append(torch.logsumexp(last[:, list(word_ids)], dim=-1))
    return torch.stack(scores, dim=-1)


def _sequence_offset(model: Any) -> int:
    """Positions peft prepends to the sequence (virtual tokens for prompt tuning / P-tuning; 0 for prefix
    tuning, or for a bare model)."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None or not getattr(cfg, "is_prompt_learning", False):
        return 0
    return 0 if cfg.peft_type.value == "PREFIX_TUNING" else cfg.num_virtual_tokens


def generation_loss(model: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed target-token cross-entropy (nats) and the number of target tokens, for one batch.

    Loss on target tokens only: prompt and padding positions carry label -100. Only the positions that
    predict a target token go through the LM head (``logits_to_keep``): the (batch, seq, vocab) logits
    are never built.
    """
    if is_seq2seq(model):
        return _seq2seq_generation_loss(model, batch)
    labels = batch["labels"][:, 1:]  # labels[b, t] is predicted by the logits at position t
    rows_b, rows_t = (labels != -100).nonzero(as_tuple=True)
    pos = rows_t + _sequence_offset(model)
    keep = torch.unique(pos)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits[rows_b, torch.searchsorted(keep, pos)]  # (targets, vocab)
    loss = nn.functional.cross_entropy(logits.float(), labels[rows_b, rows_t], reduction="sum")
    return loss, torch.tensor(rows_b.numel())


def _seq2seq_generation_loss(model: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`generation_loss` on an encoder-decoder: the prompt through the encoder, the target
    teacher-forced through the decoder (its input: the start token, then the target shifted right)."""
    labels = batch["labels"]
    start = torch.full_like(labels[:, :1], _decoder_start(model))
    decoder_input_ids = torch.cat([start, labels[:, :-1]], dim=1)
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == -100, model.config.pad_token_id)
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=decoder_input_ids,
    )
    rows_b, rows_t = (labels != -100).nonzero(as_tuple=True)
    logits = out.logits[rows_b, rows_t]  # (targets, vocab)
    loss = nn.functional.cross_entropy(logits.float(), labels[rows_b, rows_t], reduction="sum")
    return loss, torch.tensor(rows_b.numel())
