"""Labels: read and check a label column, carve and subsample splits per class, score classes.

Nothing is cleaned silently. Per label column (all splits together):

- a missing or empty label: :class:`DataError` naming the row;
- non-integer numbers (regression targets): :class:`DataError` - promptsweep classifies; bin the
  scores into classes in the source (integer-valued numbers such as ``1.0`` are class ids ``"1"``);
- labels that differ only by surrounding whitespace (``"great"`` and ``"great "``): :class:`DataError`
  listing each form and its count - they are not merged;
- a label with surrounding whitespace and no other form: stripped, and the cleaning is reported
  (a note with the count, kept in ``PreparedInputs.notes`` and shown by ``run``/``show``);
- a label of a validation or test split that train lacks: :class:`DataError` naming the label, the
  split, its count and first row - a classifier cannot predict a class it never saw.

Splits: the validation carve is stratified and keeps **every** class on both sides; a class with fewer
than 2 train examples cannot be carved (:class:`DataError` naming it and its count). Subsamples
(``max_train_examples``/``max_eval_examples``) keep every class of their split.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from promptsweep.exceptions import DataError

#: How a per-class F1 metric is named: ``f1[<label>]``.
PER_CLASS_F1 = "f1[{}]"
#: How a per-class recall is named: ``recall[<label>]`` (the share of that class predicted right; with
#: the class counts it gives the errors' split, which a paired comparison with a constant floor needs).
PER_CLASS_RECALL = "recall[{}]"


def per_class_values(metrics: dict[Any, Any], pattern: str) -> dict[str, Any]:
    """Label -> value of the per-class metrics named by ``pattern`` (:data:`PER_CLASS_F1`,
    :data:`PER_CLASS_RECALL`) in ``metrics``."""
    prefix, suffix = pattern.split("{}")
    return {
        k[len(prefix) : len(k) - len(suffix)]: v
        for k, v in metrics.items()
        if isinstance(k, str) and k.startswith(prefix) and k.endswith(suffix)
    }


def is_missing(value: Any) -> bool:
    """A missing cell: ``None`` or a float NaN (pandas' missing value)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _rows(rows: list[int]) -> str:
    return f"row {rows[0]}" if len(rows) == 1 else f"rows {rows[:5]}" + (" ..." if len(rows) > 5 else "")


def read_labels(
    splits: dict[str, tuple[list[Any], str]], column: str
) -> tuple[dict[str, list[str]], list[str]]:
    """Check the label column of every split; return role -> labels (str) and the cleaning notes.

    Args:
        splits: role -> (raw values of the label column, origin).
        column: the label column's name (for the messages).

    Raises:
        DataError: missing labels, non-integer numbers, labels differing only by whitespace.
    """
    raw: dict[str, list[str]] = {}
    forms: dict[str, Counter[str]] = defaultdict(Counter)
    for role, (values, origin) in splits.items():
        out, fractional = [], []
        for row, value in enumerate(values):
            if is_missing(value) or (isinstance(value, str) and not value.strip()):
                raise DataError(f"{origin}: split {role!r}, column {column!r}, row {row}: missing label")
            if isinstance(value, float) and not value.is_integer():
                fractional.append(row)
                continue
            if isinstance(value, float):
                value = int(value)
            out.append(str(value))
        if fractional:
            example = values[fractional[0]]
            raise DataError(
                f"dataset.label_column: {origin}: split {role!r}, column {column!r} holds "
                f"{len(fractional)} non-integer number(s) ({_rows(fractional)}, e.g. {example!r}): "
                "regression is not supported (promptsweep classifies); bin the scores into classes in "
                "the source (e.g. 'low'/'mid'/'high'), or round them if they are class ids"
            )
        raw[role] = out
        for label in out:
            forms[label.strip()][label] += 1
    clashes = {k: v for k, v in forms.items() if len(v) > 1}
    if clashes:
        shown = "; ".join(
            f"{k!r}: " + ", ".join(f"{form!r} x{n}" for form, n in sorted(v.items()))
            for k, v in sorted(clashes.items())
        )
        raise DataError(
            f"dataset.label_column: column {column!r} has labels that differ only by surrounding "
            f"whitespace ({shown}); they are not merged silently: make each one label in the source"
        )
    notes = []
    padded = {k: next(iter(v)) for k, v in forms.items() if next(iter(v)) != k}
    if padded:
        count = sum(sum(forms[k].values()) for k in padded)
        notes.append(
            f"label column {column!r}: surrounding whitespace stripped from {len(padded)} label(s) "
            f"({', '.join(f'{f!r} -> {k!r}' for k, f in sorted(padded.items()))}; {count} rows)"
        )
    return {role: [label.strip() for label in labels] for role, labels in raw.items()}, notes


def check_classes(labels: dict[str, list[str]], origins: dict[str, str], column: str) -> list[str]:
    """The train classes, sorted; every other split's labels must be among them.

    Raises:
        DataError: train has a single class; a split has labels train lacks (names them, the split,
            their counts and first rows).
    """
    classes = sorted(set(labels["train"]))
    if len(classes) < 2:
        raise DataError(
            f"{origins['train']}: split 'train', column {column!r} has a single class {classes!r}; "
            "classification needs at least two"
        )
    known = set(classes)
    for role, values in labels.items():
        unknown: dict[str, list[int]] = defaultdict(list)
        for row, label in enumerate(values):
            if label not in known:
                unknown[label].append(row)
        if unknown:
            shown = ", ".join(f"{k!r} ({len(r)} rows, first row {r[0]})" for k, r in sorted(unknown.items()))
            raise DataError(
                f"{origins[role]}: split {role!r}, column {column!r}: label(s) {shown} never appear in "
                f"split 'train' (train labels: {classes}); a classifier cannot predict a class it never "
                f"saw: drop those rows from {role!r} or add train examples of them"
            )
    return classes


# --------------------------------------------------------------------------------------------------
# Splits


def _ensure_every_class(keep: list[int], rest: list[int], labels: list[str], both: bool) -> None:
    """Swap examples (sizes unchanged, deterministic) until ``keep`` - and with ``both`` also ``rest`` -
    holds every class of ``labels[keep + rest]``. The callers guarantee each side is at least as large
    as the number of classes and (with ``both``) that every class has 2 examples."""
    classes = sorted({labels[i] for i in keep + rest})
    sides = [(keep, rest), (rest, keep)] if both else [(keep, rest)]
    for side, other in sides:
        for cls in classes:
            present = Counter(labels[i] for i in side)
            if present[cls]:
                continue
            give = next(i for i in sorted(other) if labels[i] == cls)
            big = max(sorted(present), key=lambda c: present[c])  # > 1: side is larger than its classes
            back = next(i for i in sorted(side) if labels[i] == big)
            side[side.index(back)], other[other.index(give)] = give, back


def split_indices(
    idx: list[int], labels: list[str] | None, n_first: int, seed: int, *, every_class: str = ""
) -> tuple[list[int], list[int]]:
    """Seeded split of ``idx`` into (``n_first`` indices, the rest), stratified on ``labels``.

    ``every_class``: ``"first"`` - the first part keeps every class; ``"both"`` - both parts do.
    """
    from sklearn.model_selection import train_test_split

    strat = None
    if labels is not None:
        sub = [labels[i] for i in idx]
        counts = Counter(sub)
        n_rest = len(idx) - n_first
        if min(counts.values()) >= 2 and n_first >= len(counts) and n_rest >= len(counts):
            strat = sub
    first, rest = train_test_split(idx, train_size=n_first, random_state=seed, shuffle=True, stratify=strat)
    first, rest = list(first), list(rest)
    if labels is not None and every_class:
        _ensure_every_class(first, rest, labels, both=every_class == "both")
    return first, rest


def check_carve(labels: list[str], n_val: int, origin: str) -> None:
    """Raise :class:`DataError` when a stratified carve of ``n_val`` validation examples cannot keep
    every class on both sides: a class with fewer than 2 examples (named, with its count), or fewer
    examples on a side than classes."""
    counts = Counter(labels)
    small = sorted((n, c) for c, n in counts.items() if n < 2)
    if small:
        shown = ", ".join(f"{c!r} has {n} example" for n, c in small)
        raise DataError(
            f"{origin}: split 'train': class {shown}; carving a stratified validation split needs at "
            "least 2 of each class (one for train, one for validation): add examples of it, drop it, "
            "or give a validation split (dataset.splits.validation)"
        )
    n = len(labels)
    if n_val < len(counts) or n - n_val < len(counts):
        raise DataError(
            f"{origin}: dataset.validation_fraction carves {n_val} of {n} train examples for validation; "
            f"both sides must hold each of the {len(counts)} classes: change validation_fraction or give "
            "a validation split (dataset.splits.validation)"
        )


def check_subsample(labels: list[str], n: int, field: str, role: str, origin: str) -> None:
    """Raise :class:`DataError` when a subsample of ``n`` cannot keep every class of the split."""
    classes = len(set(labels))
    if n < classes:
        raise DataError(
            f"dataset.{field}={n} is fewer than the {classes} classes of split {role!r} ({origin}); "
            "a subsample keeps every class: raise it"
        )


# --------------------------------------------------------------------------------------------------
# Metrics


def classification_metrics(
    golds: list[int], preds: list[int], label_names: tuple[str, ...]
) -> dict[str, float]:
    """``accuracy``, ``macro_f1`` (over all classes), each class's F1 as ``f1[<label>]`` and its recall
    as ``recall[<label>]`` (0 for a class absent from ``golds``)."""
    from sklearn.metrics import f1_score, recall_score

    labels = list(range(len(label_names)))
    per_class = f1_score(golds, preds, average=None, labels=labels, zero_division=0)
    recalls = recall_score(golds, preds, average=None, labels=labels, zero_division=0)
    out = {
        "accuracy": sum(int(p == g) for p, g in zip(preds, golds, strict=True)) / len(golds),
        "macro_f1": float(per_class.mean()),
    }
    out.update({PER_CLASS_F1.format(name): float(f) for name, f in zip(label_names, per_class, strict=True)})
    out.update(
        {PER_CLASS_RECALL.format(name): float(r) for name, r in zip(label_names, recalls, strict=True)}
    )
    return out


__all__ = [
    "PER_CLASS_F1",
    "PER_CLASS_RECALL",
    "check_carve",
    "check_classes",
    "check_subsample",
    "classification_metrics",
    "is_missing",
    "per_class_values",
    "read_labels",
    "split_indices",
]
