"""How far apart two validation values must be before they tell two states apart.

A validation split of a few hundred examples measures accuracy with a standard error of 0.02-0.03:
as large as the gaps between good configs, or between one trial's validations a few steps apart
(docs/quality.md). Selection (``promptsweep.search._selecting``) and a trial that may go back to an
earlier state (``TrainBudget.keep_best``) judge gaps with these.
"""

from __future__ import annotations

import math

from promptsweep.methods._config import METRICS

#: Metrics that are proportions of examples (their standard error is sqrt(p(1-p)/n)).
PROPORTIONS = ("accuracy", "exact_match")


def standard_error(metric: str, value: float | None, n: int) -> float | None:
    """The standard error of a proportion ``metric`` measured on ``n`` examples (``None`` otherwise)."""
    if metric not in PROPORTIONS or value is None or n <= 0:
        return None
    return math.sqrt(max(value * (1 - value), 0.0) / n)


def unpaired_bound(se_a: float, se_b: float) -> float:
    """The gap two values with standard errors ``se_a`` and ``se_b`` must exceed to be separated:
    twice the standard error of their difference, unpaired (so a conservative reading)."""
    return 2 * math.sqrt(se_a**2 + se_b**2)


def paired_bound(only_a: int, only_b: int, n: int) -> float:
    """The accuracy gap two models scored on the same ``n`` examples must exceed to be separated,
    paired example by example: McNemar's test with continuity correction at 2 standard errors, from
    the examples only ``a`` gets right (``only_a``) and only ``b`` gets right (``only_b``). Separated
    when ``only_a - only_b - 1 > 2 sqrt(only_a + only_b)``, i.e. a gap ``(only_a - only_b) / n``
    above ``(2 sqrt(only_a + only_b) + 1) / n``."""
    return (2 * math.sqrt(only_a + only_b) + 1) / n


def discordant(a: str, b: str) -> tuple[int, int]:
    """The examples only ``a`` gets right and only ``b`` gets right, from two per-example outcome
    strings of equal length (``"1"`` right, ``"0"`` wrong; ``methods._train.outcomes``)."""
    if len(a) != len(b):
        raise ValueError(f"outcomes of {len(a)} and {len(b)} examples cannot be paired")
    return (
        sum(x == "1" and y == "0" for x, y in zip(a, b, strict=True)),
        sum(x == "0" and y == "1" for x, y in zip(a, b, strict=True)),
    )


def gain(metric: str, a: float, b: float) -> float:
    """How much value ``a`` of ``metric`` improves on ``b``, in the metric's direction (``METRICS``)."""
    return a - b if METRICS[metric] == "maximize" else b - a


def clearly_better(metric: str, a: float, b: float, n: int) -> bool:
    """Whether value ``a`` of ``metric`` beats ``b``, both measured on the same ``n`` examples, by more
    than noise: for a proportion, and for macro-F1 (a mean of per-class F1s, about as noisy as accuracy
    on the same examples; taken as a proportion here), by more than :func:`unpaired_bound`; for a loss
    or perplexity (a mean over every example, far less noisy than a count of hits), by any margin, as
    HF ``Trainer``'s ``load_best_model_at_end`` does."""
    as_proportion = "accuracy" if metric == "macro_f1" else metric
    se_a, se_b = standard_error(as_proportion, a, n), standard_error(as_proportion, b, n)
    if se_a is None or se_b is None:
        return gain(metric, a, b) > 0
    return gain(metric, a, b) > unpaired_bound(se_a, se_b)
