"""Data: validate, split, tokenize once, cache on disk (``prepare_inputs``).

Where the rows come from is :mod:`._sources` (alias, files, ``save_to_disk`` folders, the hub cache);
how labels are checked, carved per class and scored is :mod:`._labels`. Every problem raises one
:class:`DataError` naming the source, split, column and (where it applies) the row or the spec field;
no row is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptsweep import _faults
from promptsweep._logging import get_logger
from promptsweep.exceptions import DataError, SpecError
from promptsweep.methods._config import TaskType
from promptsweep.methods._labels import (
    check_carve,
    check_classes,
    check_subsample,
    is_missing,
    read_labels,
    split_indices,
)
from promptsweep.methods._sources import (
    DATA_ALIASES,
    FINE_FOODS,
    FINE_FOODS_COLUMNS,
    load_raw,
    missing_column,
    source_fingerprint,
)
from promptsweep.methods._types import SPLIT_ROLES, DataSpec, PreparedInputs

log = get_logger(__name__)

_CACHE_VERSION = "tok-v2"
_DEFAULT_TEMPLATE = {TaskType.VERBALIZER: "{text}\nAnswer:", TaskType.GENERATION: "{text}\n"}
#: Examples tokenized per call (and per progress report).
_CHUNK = 2000

#: ``progress(stage, done, total)``: called as preparation advances (e.g. ``"tokenizing train"``).
ProgressFn = Callable[[str, int, int], None]

#: How many times this process tokenized a dataset (cache misses); tests use it to show the cache works.
TOKENIZATION_RUNS = {"count": 0}


# --------------------------------------------------------------------------------------------------
# Validation


def _columns(spec: DataSpec, task: TaskType) -> dict[str, str | None]:
    ff = spec.source == FINE_FOODS
    return {
        "text": spec.text_column or ("review" if ff else "text"),
        "text_pair": spec.text_pair_column,
        "label": None if task is TaskType.GENERATION else (spec.label_column or ("score" if ff else "label")),
        "target": (spec.target_column or "target") if task is TaskType.GENERATION else None,
    }


def _check_columns(raw: dict[str, tuple[Any, str]], spec: DataSpec, task: TaskType) -> dict[str, str | None]:
    """Every split has every column the task reads (else one error naming the field and the columns)."""
    cols = _columns(spec, task)
    for role, (df, origin) in raw.items():
        for kind, column in cols.items():
            if column is not None and column not in df.columns:
                raise missing_column(f"{kind}_column", column, origin, role, list(df.columns))
    return cols


def _check_text_column(df: Any, column: str, origin: str, role: str) -> list[str]:
    out, empty = [], []
    for row, value in enumerate(df[column].tolist()):
        if is_missing(value):
            raise DataError(f"{origin}: split {role!r}, column {column!r}, row {row}: missing text")
        if not isinstance(value, str):
            raise DataError(
                f"{origin}: split {role!r}, column {column!r}, row {row}: expected a string, got "
                f"{type(value).__name__} {value!r}"
            )
        if not value.strip():
            empty.append(row)
        out.append(value)
    if empty:
        more = f" ({len(empty)} empty texts in this split: rows {empty[:10]})" if len(empty) > 1 else ""
        raise DataError(
            f"{origin}: split {role!r}, column {column!r}, row {empty[0]}: empty text{more}; nothing is "
            "dropped silently: remove or fill them in the source"
        )
    return out


def _validate(
    raw: dict[str, tuple[Any, str]], spec: DataSpec, task: TaskType
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Return role -> {"text", "text_pair", "label", "target", "origin"} lists, validated, and the notes
    on what was cleaned (reported, never silent)."""
    cols = _check_columns(raw, spec, task)
    out: dict[str, dict[str, Any]] = {}
    for role, (df, origin) in raw.items():
        if len(df) == 0:
            raise DataError(f"{origin}: split {role!r} has no rows")
        rec: dict[str, Any] = {"origin": origin, "text": _check_text_column(df, cols["text"], origin, role)}
        rec["text_pair"] = (
            _check_text_column(df, cols["text_pair"], origin, role) if cols["text_pair"] else None
        )
        rec["label"] = None
        rec["target"] = _check_text_column(df, cols["target"], origin, role) if cols["target"] else None
        out[role] = rec
    notes: list[str] = []
    if cols["label"] is not None:
        labels, notes = read_labels(
            {role: (df[cols["label"]].tolist(), origin) for role, (df, origin) in raw.items()}, cols["label"]
        )
        check_classes(labels, {role: rec["origin"] for role, rec in out.items()}, cols["label"])
        for role, rec in out.items():
            rec["label"] = labels[role]
    return out, notes


def check_data(data: DataSpec, task: TaskType | str) -> list[str]:
    """Load and validate ``data`` for ``task`` without a model: the checks :func:`prepare_inputs` makes
    before it splits and tokenizes (splits, columns, texts, labels). Returns the cleaning notes.

    The search layer calls it at submit time, so bad data is refused before a job is stored.

    Raises:
        DataError: as :func:`prepare_inputs`.
    """
    task = TaskType(task)
    if data.source == FINE_FOODS:  # packaged and known good: only the column names are checked
        cols = _columns(data, task)
        for kind, column in cols.items():
            if column is not None and column not in FINE_FOODS_COLUMNS:
                raise missing_column(f"{kind}_column", column, FINE_FOODS, "train", list(FINE_FOODS_COLUMNS))
        return []
    return _validate(load_raw(data), data, task)[1]


# --------------------------------------------------------------------------------------------------
# Splits


def _subsample(
    rec: dict[str, Any], n: int, seed: int, stratify: bool, field: str, role: str
) -> dict[str, Any]:
    size = len(rec["text"])
    if n >= size:
        return rec
    if stratify:
        check_subsample(rec["label"], n, field, role, rec["origin"])
    idx = list(range(size))
    keep = split_indices(idx, rec["label"] if stratify else None, n, seed, every_class="first")[0]
    return _take(rec, sorted(keep))


def _take(rec: dict[str, Any], idx: list[int]) -> dict[str, Any]:
    return {k: ([v[i] for i in idx] if isinstance(v, list) else v) for k, v in rec.items()}


def _make_splits(
    data: dict[str, dict[str, Any]], spec: DataSpec, task: TaskType
) -> dict[str, dict[str, Any]]:
    stratify = task is not TaskType.GENERATION
    out = dict(data)
    if "validation" not in out:
        train = out["train"]
        n = len(train["text"])
        n_val = max(2, round(n * spec.validation_fraction))
        if n - n_val < 2:
            raise DataError(
                f"{train['origin']}: split 'train' has {n} rows, too few to carve a validation split"
            )
        labels = train["label"] if stratify else None
        if labels is not None:
            check_carve(labels, n_val, train["origin"])
        rest, val = split_indices(list(range(n)), labels, n - n_val, spec.seed, every_class="both")
        out["train"] = _take(train, sorted(rest))
        out["validation"] = {**_take(train, sorted(val)), "origin": train["origin"] + " (carved validation)"}
    if spec.max_train_examples is not None:
        out["train"] = _subsample(
            out["train"], spec.max_train_examples, spec.seed, stratify, "max_train_examples", "train"
        )
    if spec.max_eval_examples is not None:
        for role in ("validation", "test"):
            if role in out:
                out[role] = _subsample(
                    out[role], spec.max_eval_examples, spec.seed, stratify, "max_eval_examples", role
                )
    return out


# --------------------------------------------------------------------------------------------------
# Tokenization


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before / after one sequence (e.g. [CLS] / [SEP], or BOS)."""
    wrapped = tokenizer.build_inputs_with_special_tokens([-1])
    cut = wrapped.index(-1)
    return list(wrapped[:cut]), list(wrapped[cut + 1 :])


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _causal_prompts(
    tokenizer: Any, rec: dict[str, Any], template: str, budget: int, closing: list[int]
) -> tuple[list[list[int]], int]:
    """Token ids of the templated prompts; the text (never the template) is truncated to fit ``budget``.

    ``closing`` ends every prompt: an encoder-decoder's encoder reads a whole sequence (T5: ``</s>``);
    a causal LM's prompt runs on into the answer, so it gets none."""
    head_t, tail_t = template.split("{text}", 1)
    prefix, _ = _special_affixes(tokenizer)
    texts = rec["text"]
    pairs = rec["text_pair"]
    heads = [head_t.format(text_pair=p) if pairs else head_t for p in (pairs or [None] * len(texts))]
    tails = [tail_t.format(text_pair=p) if pairs else tail_t for p in (pairs or [None] * len(texts))]
    head_ids = _encode(tokenizer, heads) if head_t else [[] for _ in texts]
    tail_ids = _encode(tokenizer, tails) if tail_t else [[] for _ in texts]
    text_ids = _encode(tokenizer, texts)
    out, truncated = [], 0
    for h, t, x in zip(head_ids, text_ids, tail_ids, strict=True):
        room = budget - len(prefix) - len(h) - len(x) - len(closing)
        if room < 1:
            raise DataError(
                f"dataset.template={template!r} leaves no room for the text within max_length={budget}"
            )
        if len(t) > room:
            truncated += 1
            t = t[:room]
        out.append(prefix + h + t + x + closing)
    return out, truncated


def _label_word_ids(
    tokenizer: Any, spec: DataSpec, label_names: tuple[str, ...]
) -> tuple[tuple[int, ...], ...]:
    words = spec.label_words or {name: (" " + name,) for name in label_names}
    missing = [n for n in label_names if n not in words]
    extra = [w for w in words if w not in label_names]
    if missing or extra:
        raise DataError(
            f"dataset.label_words must give words for exactly the labels {list(label_names)}; "
            f"missing {missing}, unknown {extra}"
        )
    ids, owner = [], {}
    for name in label_names:
        row = []
        for word in words[name]:
            toks = tokenizer.encode(word, add_special_tokens=False)
            if not toks:
                raise DataError(f"dataset.label_words[{name!r}]: {word!r} tokenizes to nothing")
            if toks[0] in owner and owner[toks[0]] != name:
                raise DataError(
                    f"dataset.label_words: {word!r} ({name!r}) starts with the same token as a word of "
                    f"{owner[toks[0]]!r}; label words must differ in their first token"
                )
            owner[toks[0]] = name
            row.append(int(toks[0]))
        ids.append(tuple(row))
    return tuple(ids)


def _tokenize_part(
    tokenizer: Any,
    rec: dict[str, Any],
    task: TaskType,
    template: str,
    max_length: int,
    label_index: dict[str, int],
    closing: list[int],
) -> tuple[dict[str, Any], int]:
    """Token ids of one chunk of a classification / verbalizer split, and how many were truncated."""
    if task is TaskType.CLASSIFICATION:
        kwargs = {"text_pair": rec["text_pair"]} if rec["text_pair"] else {}
        full = tokenizer(rec["text"], add_special_tokens=True, truncation=False, verbose=False, **kwargs)
        truncated = sum(len(ids) > max_length for ids in full["input_ids"])
        enc = tokenizer(
            rec["text"], add_special_tokens=True, truncation=True, max_length=max_length, **kwargs
        )
        out: dict[str, Any] = {"input_ids": enc["input_ids"]}
        if "token_type_ids" in enc and rec["text_pair"]:
            out["token_type_ids"] = enc["token_type_ids"]
        out["labels"] = [label_index[label] for label in rec["label"]]
        return out, truncated
    ids, truncated = _causal_prompts(tokenizer, rec, template, max_length, closing)
    return {"input_ids": ids, "labels": [label_index[label] for label in rec["label"]]}, truncated


def _tokenize_split(
    tokenizer: Any,
    rec: dict[str, Any],
    task: TaskType,
    spec: DataSpec,
    max_length: int,
    label_index: dict[str, int],
    report: Callable[[int], None],
    closing: list[int],
) -> tuple[dict[str, Any], int]:
    """Token ids of one split (in chunks of ``_CHUNK``, ``report(done)`` after each) and how many
    examples were truncated to ``max_length``; ``closing`` ends each prompt (see :func:`_causal_prompts`)."""
    template = spec.template or _DEFAULT_TEMPLATE.get(task, "")
    n = len(rec["text"])
    out: dict[str, Any] = {}
    truncated = 0
    if task is TaskType.GENERATION:
        # the target keeps up to half the budget (then EOS), the prompt takes the rest.
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        targets = _encode(tokenizer, rec["target"])
        cap = max(1, max_length // 2 - 1)
        t_trunc = sum(len(t) > cap for t in targets)
        out["target_ids"] = [t[:cap] + ([eos] if eos is not None else []) for t in targets]
        out["target_text"] = rec["target"]
        budget = max_length - max(len(t) for t in out["target_ids"])
        prompts: list[list[int]] = []
        for start in range(0, n, _CHUNK):
            part = _take(rec, list(range(start, min(n, start + _CHUNK))))
            ids, cut = _causal_prompts(tokenizer, part, template, budget, closing)
            prompts.extend(ids)
            truncated += cut
            report(min(n, start + _CHUNK))
        return {"input_ids": prompts, **out}, max(t_trunc, truncated)
    for start in range(0, n, _CHUNK):
        part = _take(rec, list(range(start, min(n, start + _CHUNK))))
        enc, cut = _tokenize_part(tokenizer, part, task, template, max_length, label_index, closing)
        for key, values in enc.items():
            out.setdefault(key, []).extend(values)
        truncated += cut
        report(min(n, start + _CHUNK))
    return out, truncated


def _is_encoder_decoder(model_dir: Path) -> bool:
    from promptsweep.methods._architectures import read_model_config

    config_file = Path(model_dir) / "config.json"
    return config_file.is_file() and bool(read_model_config(model_dir).get("is_encoder_decoder"))


def cache_key(model_dir: Path, spec: DataSpec, task: TaskType, max_length: int) -> str:
    """The tokenized-data cache key: a hash of (model files, data spec + source files, task, max_length)."""
    from promptsweep.methods._models import model_fingerprint

    blob = json.dumps(
        {
            "v": _CACHE_VERSION,
            "model_dir": str(model_dir),
            "model": model_fingerprint(model_dir),
            "data": spec.to_dict(),
            "source": source_fingerprint(spec),
            "task": task.value,
            "max_length": max_length,
            # an encoder-decoder's prompts end with its closing tokens (other models' keys unchanged)
            **({"closing": True} if _is_encoder_decoder(model_dir) else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def prepare_inputs(
    model: str,
    data: DataSpec,
    task: TaskType | str,
    *,
    max_length: int,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> PreparedInputs:
    """Resolve the model, load + validate + split the data, tokenize once, cache on disk.

    Done once per job: trials load the cached token ids (``PreparedInputs.data_dir``) and never
    tokenize again. The cache is keyed by (model files, data spec and source files, task, max_length);
    a second call with the same inputs reads ``meta.json`` and tokenizes nothing.

    Args:
        model: ``"minilm"``, ``"smollm2-135m"``, a local model directory or a hub name.
        data: the :class:`DataSpec`.
        task: ``classification`` (encoder + head), ``verbalizer`` or ``generation`` (causal LM).
        max_length: tokens per example (input + target for generation), >= 8.
        cache_dir: cache root (default :func:`promptsweep.paths.cache_dir`).
        progress: ``progress(stage, done, total)`` as preparation advances: a model conversion
            (SmolLM2's GGUF, once: 0 then 1 of 1), then tokenization (``"tokenizing <role>"``,
            examples done of the split's total, after every chunk of 2,000); not called on a cache hit.

    Raises:
        DataError: naming the file/split, column and row of bad data (a split or column the source
            lacks - naming the spec field and what it has -, empty split, a single class, non-string or
            empty text, missing, non-integer or whitespace-variant labels, a label train lacks, a class
            too small to carve, bad label words). Cleanings that are made (stripped label whitespace) are
            reported in ``PreparedInputs.notes``.
        SpecError: bad model name, task or max_length.
    """
    from promptsweep import paths
    from promptsweep.methods._models import load_tokenizer, resolve_model_dir

    try:
        task = TaskType(task)
    except ValueError:
        raise SpecError(f"task={task!r} must be one of {[t.value for t in TaskType]}") from None
    if not isinstance(max_length, int) or max_length < 8:
        raise SpecError(f"max_length={max_length!r} must be an integer >= 8")
    if not isinstance(data, DataSpec):
        raise SpecError(f"data must be a DataSpec, got {type(data).__name__}")
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    model_dir = resolve_model_dir(model, root, progress)
    key = cache_key(model_dir, data, task, max_length)
    data_dir = root / "tokenized" / key
    meta_path = data_dir / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        log.debug("tokenized cache hit %s", data_dir)
        return _inputs_from_meta(meta, model, model_dir, data_dir)

    validated, notes = _validate(load_raw(data), data, task)
    for note in notes:
        log.warning("data: %s", note)
    splits = _make_splits(validated, data, task)
    tokenizer = load_tokenizer(model_dir)
    TOKENIZATION_RUNS["count"] += 1
    closing = _special_affixes(tokenizer)[1] if _is_encoder_decoder(model_dir) else []
    label_names: tuple[str, ...] = ()
    label_word_ids = None
    if task is not TaskType.GENERATION:
        label_names = tuple(sorted(set(splits["train"]["label"])))
    if task is TaskType.VERBALIZER:
        label_word_ids = _label_word_ids(tokenizer, data, label_names)
    label_index = {name: i for i, name in enumerate(label_names)}
    if data.label_words:
        init_text = " ".join(w.strip() for name in label_names for w in data.label_words[name])
    elif label_names:
        init_text = " ".join(label_names)
    else:
        init_text = "Write the target text for the input."

    import torch

    tmp = data_dir.with_name(data_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts, truncated, majority = {}, {}, {}
    train_major = Counter(splits["train"]["label"]).most_common(1)[0][0] if label_names else None
    for role in SPLIT_ROLES:
        if role not in splits:
            continue
        total = len(splits[role]["text"])
        stage = f"tokenizing {role}"

        def report(done: int, stage: str = stage, total: int = total) -> None:
            if progress is not None:
                progress(stage, done, total)

        report(0)
        enc, n_trunc = _tokenize_split(
            tokenizer, splits[role], task, data, max_length, label_index, report, closing
        )
        torch.save(enc, tmp / f"{role}.pt")
        _faults.hold("prepare")  # the chaos tests kill a worker here (mid-preparation)
        counts[role] = len(enc["input_ids"])
        truncated[role] = n_trunc
        if train_major is not None:
            labels = splits[role]["label"]
            majority[role] = sum(lab == train_major for lab in labels) / len(labels)
    meta = {
        "task": task.value,
        "max_length": max_length,
        "label_names": list(label_names),
        "label_word_ids": [list(r) for r in label_word_ids] if label_word_ids else None,
        "init_text": init_text,
        "counts": counts,
        "rows_filtered": dict.fromkeys(counts, 0),
        "truncated": truncated,
        "majority_accuracy": majority,
        "pad_token_id": int(tokenizer.pad_token_id),
        "cache_key": key,
        "data": data.to_dict(),
        "notes": notes,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        os.replace(tmp, data_dir)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    if any(truncated.values()):
        log.info("examples truncated to max_length=%d per split: %s", max_length, truncated)
    return _inputs_from_meta(meta, model, model_dir, data_dir)


def _inputs_from_meta(meta: dict[str, Any], model: str, model_dir: Path, data_dir: Path) -> PreparedInputs:
    return PreparedInputs(
        model=model,
        model_dir=str(model_dir),
        data_dir=str(data_dir),
        task=TaskType(meta["task"]),
        max_length=meta["max_length"],
        label_names=tuple(meta["label_names"]),
        label_word_ids=tuple(tuple(r) for r in meta["label_word_ids"]) if meta["label_word_ids"] else None,
        init_text=meta["init_text"],
        counts=dict(meta["counts"]),
        rows_filtered=dict(meta["rows_filtered"]),
        truncated=dict(meta["truncated"]),
        majority_accuracy=dict(meta["majority_accuracy"]),
        pad_token_id=meta["pad_token_id"],
        cache_key=meta["cache_key"],
        data=meta["data"],
        notes=tuple(meta.get("notes", ())),
    )


def load_split(inputs: PreparedInputs, role: str) -> dict[str, Any]:
    """Load the cached token ids of split ``role`` (``input_ids`` lists, ``labels``/``target_ids``).

    Raises:
        DataError: when the split does not exist (e.g. ``test`` for a source without one).
    """
    import torch

    path = inputs.split_path(role)
    if not path.is_file():
        raise DataError(
            f"prepared data {inputs.data_dir!r} has no split {role!r} (has {sorted(inputs.counts)})"
        )
    return torch.load(path, weights_only=True)


__all__ = ["DATA_ALIASES", "TOKENIZATION_RUNS", "ProgressFn", "check_data", "load_split", "prepare_inputs"]
