"""Frozen PLMs with their task heads, and the task forward passes (imports torch; reached from functions).

Classification: ``AutoModelForSequenceClassification`` (its head trains; peft keeps it through
``modules_to_save``) with the pooling of :class:`~promptsweep.methods.Pooling` installed in place of
the encoder's pooler. Verbalizer and generation: ``AutoModelForCausalLM``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from promptsweep.exceptions import MethodConfigError
from promptsweep.methods._config import MethodConfig, Pooling, PromptMethod, TaskType
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


def _install_pooling(model: Any, pooling: Pooling, num_virtual: int) -> None:
    encoder = model.base_model  # the PreTrainedModel's backbone (e.g. BertModel)
    if pooling is Pooling.POOLER:
        if getattr(encoder, "pooler", None) is None:
            raise MethodConfigError(
                f"parameter 'pooling'='pooler': model type {model.config.model_type!r} has no pooler"
            )
        return
    if not hasattr(encoder, "pooler"):
        raise MethodConfigError(
            f"parameter 'pooling'={pooling.value!r} needs a BERT-style encoder with a pooler slot; model "
            f"type {model.config.model_type!r} supports only 'pooler'"
        )
    pool = MaskedPooling(pooling, num_virtual, MEAN_INCLUDES_VIRTUAL_TOKENS)
    encoder.pooler = pool

    def _stash_mask(module: nn.Module, args: tuple, kwargs: dict) -> None:
        pool.attention_mask = kwargs.get("attention_mask")
        if pool.attention_mask is None and len(args) > 1:
            pool.attention_mask = args[1]

    encoder.register_forward_pre_hook(_stash_mask, with_kwargs=True)


def build_base_model(inputs: PreparedInputs, config: MethodConfig, *, seed: int = 0) -> Any:
    """Load the frozen PLM for ``inputs.task`` with its head; every parameter has ``requires_grad=False``.

    Classification: the head is initialized from ``seed`` (peft trains a copy of it); the pooling of
    ``config.pooling`` is installed. Causal tasks: the LM as saved (fp32).

    Raises:
        MethodConfigError: when the pooling is not available for the model type.
    """
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "some weights newly initialized" is expected for the head
    try:
        torch.manual_seed(seed)
        if inputs.task is TaskType.CLASSIFICATION:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                inputs.model_dir,
                num_labels=inputs.num_labels,
                id2label=dict(enumerate(inputs.label_names)),
                label2id={n: i for i, n in enumerate(inputs.label_names)},
                dtype=torch.float32,
            )
            _install_pooling(model, config.pooling or Pooling.POOLER, virtual_positions(config))
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(inputs.model_dir, dtype=torch.float32)
            if model.config.pad_token_id is None:
                model.config.pad_token_id = inputs.pad_token_id
    finally:
        transformers.logging.set_verbosity(verbosity)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_peft_model(inputs: PreparedInputs, config: MethodConfig, *, seed: int = 0) -> Any:
    """The frozen PLM wrapped by peft for ``config.method`` (dispatched through the registry)."""
    import peft

    from promptsweep.methods._peft import PeftContext, build_peft_config

    base = build_base_model(inputs, config, seed=seed)
    context = PeftContext(
        task=inputs.task, tokenizer_dir=inputs.model_dir, default_init_text=inputs.init_text
    )
    torch.manual_seed(seed)
    model = peft.get_peft_model(base, build_peft_config(config, context))
    return model


# --------------------------------------------------------------------------------------------------
# Batches and forward passes


def collate(
    examples: list[dict[str, Any]], task: TaskType, pad_id: int, *, with_targets: bool = True
) -> dict:
    """Right-pad a list of examples to the longest one.

    Returns ``input_ids``/``attention_mask`` (batch, seq) int64, ``token_type_ids`` when present,
    ``labels`` (batch,) class ids, or for generation ``labels`` (batch, seq) with -100 on prompt and
    padding positions (prompt + target concatenated) and ``lengths`` (batch,).
    """
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
    if "token_type_ids" in batch:
        kwargs["token_type_ids"] = batch["token_type_ids"]
    if task is TaskType.CLASSIFICATION:
        return model(**kwargs).logits
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
    labels = batch["labels"][:, 1:]  # labels[b, t] is predicted by the logits at position t
    rows_b, rows_t = (labels != -100).nonzero(as_tuple=True)
    pos = rows_t + _sequence_offset(model)
    keep = torch.unique(pos)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits[rows_b, torch.searchsorted(keep, pos)]  # (targets, vocab)
    loss = nn.functional.cross_entropy(logits.float(), labels[rows_b, rows_t], reduction="sum")
    return loss, torch.tensor(rows_b.numel())
