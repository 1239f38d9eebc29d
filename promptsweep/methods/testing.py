"""Test helpers: tiny models built from config with a real offline tokenizer (for every layer's tests).

``make_tiny_model(dir, kind)`` writes a randomly initialized, seeded model of ~1M parameters (mostly
the embedding of the MiniLM WordPiece vocabulary) plus the MiniLM tokenizer, loadable with
``from_pretrained`` and usable as ``prepare_inputs(model=str(dir), ...)``. Imports torch when called.
No checkpoint of these architectures ships here: the tokenizer is always MiniLM's WordPiece (a real
T5 / RoBERTa / DeBERTa tokenizer would need a download); the models only need its ids.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

TinyKind = Literal[
    "encoder", "decoder", "gpt2", "t5", "mt5", "roberta", "xlm-roberta", "distilbert", "deberta-v2"
]

#: The encoder kinds (classification), by architecture.
ENCODER_KINDS: tuple[str, ...] = ("encoder", "roberta", "xlm-roberta", "distilbert", "deberta-v2")


def make_tiny_model(directory: Path | str, kind: TinyKind = "encoder", *, seed: int = 0) -> Path:
    """Create a tiny model in ``directory`` (created; existing model files are overwritten).

    Args:
        directory: target directory.
        kind: ``"encoder"`` (BERT: hidden 32, 2 layers, with a pooler - for ``classification``),
            ``"roberta"``, ``"distilbert"``, ``"deberta-v2"`` (the same sizes, their own heads - for
            ``classification``), ``"decoder"`` (Llama: hidden 32, 2 layers, 4 heads with 2 KV heads -
            grouped-query attention - for ``verbalizer``/``generation``), ``"gpt2"`` (GPT-2: hidden 32,
            2 layers) or ``"t5"`` (T5 encoder-decoder: d_model 32, 4 heads of d_kv 16 - so the attention
            is 64 wide, not d_model, as in T5 v1.1 / Flan-T5 -, 2 encoder and 3 decoder layers, tied
            embeddings, decoder start = pad - for ``verbalizer``/``generation``) or ``"mt5"`` (the same
            sizes as mT5: gated-GELU, untied LM head).
        seed: seeds the weight init.

    Returns:
        the directory, as a :class:`~pathlib.Path`.

    Raises:
        ValueError: for an unknown ``kind``.
    """
    import torch
    import transformers

    from promptsweep.methods._models import _minilm_dir

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = _minilm_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tok_dir)
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    # the sizes every BERT-style encoder here shares (BERT, RoBERTa / XLM-R, DeBERTa-v2)
    bert_like = {
        "vocab_size": vocab,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if kind == "encoder":
        model = transformers.BertModel(transformers.BertConfig(**bert_like))
    elif kind == "decoder":
        config = transformers.LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            tie_word_embeddings=True,
        )
        model = transformers.LlamaForCausalLM(config)
    elif kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=vocab,
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=512,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )
        model = transformers.GPT2LMHeadModel(config)
    elif kind in ("t5", "mt5"):
        config_cls = transformers.T5Config if kind == "t5" else transformers.MT5Config
        config = config_cls(
            vocab_size=vocab,
            d_model=32,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=3,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.sep_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        model_cls = (
            transformers.T5ForConditionalGeneration
            if kind == "t5"
            else transformers.MT5ForConditionalGeneration
        )
        model = model_cls(config)
    elif kind in ("roberta", "xlm-roberta"):
        config_cls, model_cls = (
            (transformers.RobertaConfig, transformers.RobertaModel)
            if kind == "roberta"
            else (transformers.XLMRobertaConfig, transformers.XLMRobertaModel)
        )
        config = config_cls(
            **{**bert_like, "max_position_embeddings": 514},  # positions start after padding_idx
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )
        model = model_cls(config)
    elif kind == "distilbert":
        config = transformers.DistilBertConfig(
            vocab_size=vocab,
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = transformers.DistilBertModel(config)
    elif kind == "deberta-v2":
        config = transformers.DebertaV2Config(
            **bert_like, relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"]
        )
        model = transformers.DebertaV2Model(config)
    else:
        raise ValueError(
            f"kind={kind!r} must be one of 'encoder', 'decoder', 'gpt2', 't5', 'mt5', 'roberta', "
            "'xlm-roberta', 'distilbert', 'deberta-v2'"
        )
    model.save_pretrained(out, safe_serialization=True)
    for name in _TOKENIZER_FILES:
        if (tok_dir / name).is_file():
            shutil.copy(tok_dir / name, out / name)
    if kind in ("decoder", "gpt2", "t5", "mt5"):  # generative models: the tokenizer's [SEP] serves as EOS
        tokenizer = transformers.AutoTokenizer.from_pretrained(out)
        tokenizer.eos_token = tokenizer.sep_token
        tokenizer.bos_token = tokenizer.cls_token
        tokenizer.save_pretrained(out)
    return out
