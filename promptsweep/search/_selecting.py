"""Selecting a job's winner after its search, honestly and with its noise shown.

Trials rank on the validation split, capped at ``dataset.max_eval_examples`` reviews for speed; at
300-400 reviews the standard error of an accuracy is 0.02-0.025, as large as the gaps between good
configs. So :func:`select` re-scores the top ``selection.finalists`` complete trials on the *whole*
validation split (the capped one is a stratified subsample of it), shows each finalist's value with its
standard error, selects the best there, and says when the winner is not separated from the runner-up.
The test split is evaluated for the selected trial(s) only, and is never told to the sampler, the
pruner or the ranking.

The job's floors (majority class, head-only or zero-shot; scored on validation before the search)
are compared with the selected trial: a search whose winner is below a floor says so in the job's
summary (``floor_warning``), which ``run`` / ``show`` / the report print; one that beats a floor by
no more than the noise of the ranked split gets ``floor_separation``, printed beside it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from promptsweep import _faults
from promptsweep._logging import get_logger
from promptsweep.methods import (
    PER_CLASS_RECALL,
    discordant,
    paired_bound,
    per_class_values,
    standard_error,
    unpaired_bound,
)
from promptsweep.search._spec import JobSpec

_log = get_logger(__name__)

#: The head-only floor fits its head on at most this many training examples (a seeded subsample): the
#: frozen features cost one forward pass each, and the floor must stay cheap next to the search.
FLOOR_HEAD_TRAIN_EXAMPLES = 500

#: Summary keys holding one character per ranked validation review (the floors' and the selected
#: trial's outcomes, for paired tests): large for a big split, so a list of jobs leaves them out.
PER_REVIEW_KEYS = ("floor_outcomes", "selected_outcomes")

# why a finalist keeps the value it was ranked on (its ``kept``)
KEPT_WHOLE_SPLIT = "ranked on the whole split"
KEPT_SINGLE = "not re-scored: a single finalist"


def rescore_finalists(spec: JobSpec, storage: Any, job_id: int, inputs: Any) -> list[dict[str, Any]]:
    """Re-score the top ``spec.selection.finalists`` complete trials on the whole validation split.

    Returns one dict per finalist, best first by the whole-validation objective (ties: the leaderboard's
    order): ``number``, ``variant``, ``subsample`` (the ranked value) and its ``subsample_n`` and
    ``subsample_se``, ``value`` (whole validation) with ``n`` and ``se``, ``rescored`` and ``metrics``.
    A lone finalist, or a job whose validation split is not capped, keeps its ranked value
    (``rescored`` false; ``value`` is then the subsample's and ``n`` is ``subsample_n``; ``kept`` says
    why: ``ranked on the whole split`` or ``not re-scored: a single finalist``).
    """
    from promptsweep.methods import evaluate_adapter
    from promptsweep.search._runner import job_inputs

    metric = spec.objective.metric
    top = [r for r in storage.leaderboard(job_id, limit=spec.selection.finalists) if r.adapter_dir]
    if not top:
        return []
    sub_n = int(inputs.counts.get("validation", 0))
    capped = spec.dataset.max_eval_examples is not None
    # a lone finalist is not re-scored: there is nothing to choose between, and the selected trial's test
    # split gives its honest estimate (re-scoring SmolLM2's 800 reviews on an fp32 CPU took ~80 s)
    full = job_inputs(spec, capped=False) if len(top) > 1 and capped else inputs
    kept = None  # why a finalist keeps its ranked value
    if not capped:
        kept = KEPT_WHOLE_SPLIT
    elif full is inputs:
        kept = KEPT_SINGLE
    n = int(full.counts.get("validation", 0))
    out = []
    for rank, record in enumerate(top):
        if full is inputs:
            metrics = dict(record.metrics or {})
        else:
            metrics = {
                k: float(v) for k, v in evaluate_adapter(full, record.adapter_dir, split="validation").items()
            }
        value = metrics.get(metric, record.value)
        out.append(
            {
                "number": record.number,
                "variant": str(record.variant),
                "rank": rank,
                "subsample": record.value,
                "subsample_n": sub_n,
                "subsample_se": standard_error(metric, record.value, sub_n),
                "value": value,
                "n": n,
                "se": standard_error(metric, value, n),
                "rescored": full is not inputs,
                **({"kept": kept} if kept else {}),
                "metrics": metrics,
            }
        )
    sign = -1.0 if spec.objective.resolved_direction == "maximize" else 1.0
    out.sort(key=lambda f: (sign * f["value"], f["rank"]))
    return out


def separation(finalists: list[dict[str, Any]]) -> str | None:
    """A sentence saying the winner is not separated from the runner-up, or ``None`` when it is.

    Separated means the gap is more than twice the standard error of the difference (unpaired, so a
    conservative reading); without standard errors nothing is said.
    """
    if len(finalists) < 2:
        return None
    a, b = finalists[0], finalists[1]
    if a.get("se") is None or b.get("se") is None:
        return None
    gap = abs(a["value"] - b["value"])
    bound = unpaired_bound(a["se"], b["se"])
    if gap > bound:
        return None
    return (
        f"trial {a['number']} ({a['value']:.4f} +/- {a['se']:.4f}) is not separated from trial "
        f"{b['number']} ({b['value']:.4f} +/- {b['se']:.4f}) on the whole validation split "
        f"(n={a['n']}): the gap {gap:.4f} is within 2 standard errors ({bound:.4f})"
    )


def floor_warning(spec: JobSpec, value: float | None, floors: dict[str, Any]) -> str | None:
    """A sentence naming each floor the selected trial's validation ``value`` does not beat."""
    metric = spec.objective.metric
    if value is None or not floors:
        return None
    maximize = spec.objective.resolved_direction == "maximize"
    beaten_by = [
        (name, f[metric])
        for name, f in floors.items()
        if isinstance(f, dict)
        and isinstance(f.get(metric), int | float)
        and (value <= f[metric] if maximize else value >= f[metric])
    ]
    if not beaten_by:
        return None
    names = ", ".join(f"{name} {v:.4f}" for name, v in beaten_by)
    return (
        f"the selected trial's validation {metric} {value:.4f} does not beat the floor(s) {names}: "
        "the search did not pay for itself; raise the budget or widen the space"
    )


def _floor_class(floor: dict[str, Any]) -> str | None:
    """The class a floor is right on exactly (its recall 1, every other class's 0: the majority floor),
    or ``None``."""
    recalls = {
        label: v
        for label, v in per_class_values(floor, PER_CLASS_RECALL).items()
        if isinstance(v, int | float)
    }
    ones = [label for label, r in recalls.items() if r == 1.0]
    if len(ones) != 1 or any(r != 0.0 for label, r in recalls.items() if label != ones[0]):
        return None
    return ones[0]


def _whole(x: float) -> int | None:
    """``x`` as a count of reviews, or ``None`` when it is not one (not whole to 1e-6, or negative)."""
    near = round(x)
    return int(near) if near >= 0 and abs(x - near) < 1e-6 else None


def _mcnemar_bound(metrics: dict[str, Any], floor: dict[str, Any], n: int) -> float | None:
    """The accuracy gap a trial needs over the majority floor to be separated from it, paired review by
    review on the same ``n`` reviews (McNemar's test with continuity correction, at 2 standard
    errors); ``None`` when the counts are not known.

    The floor is right on exactly its class's reviews (``floor accuracy x n``), the trial on ``recall
    x`` that many of those; so the reviews only the trial gets right (``b``) and only the floor gets
    right (``c``) are known. Separated: ``b - c - 1 > 2 sqrt(b + c)``, i.e. a gap ``(b - c) / n`` above
    ``(2 sqrt(b + c) + 1) / n``. Counts that are not whole (a floor scored on other reviews than
    ``n``) give ``None``: the caller falls back to the unpaired rule.
    """
    label = _floor_class(floor)
    recall = metrics.get(PER_CLASS_RECALL.format(label)) if label is not None else None
    if not isinstance(recall, int | float) or not isinstance(metrics.get("accuracy"), int | float):
        return None
    on_class = _whole(float(floor["accuracy"]) * n)
    right = _whole(float(metrics["accuracy"]) * n)
    right_on_class = _whole(float(recall) * on_class) if on_class is not None else None
    if right is None or right_on_class is None or right_on_class > right:
        return None
    return paired_bound(right - right_on_class, on_class - right_on_class, n)


def _paired_outcomes(metrics: dict[str, Any], n: int, outcomes: str | None, theirs: str | None) -> bool:
    """Whether the trial's ``outcomes`` and a floor's (``theirs``) can pair the ranked value: both on
    the ``n`` ranked reviews, and the trial's hits those its ranked accuracy counts (a reload that
    scored otherwise, e.g. on another device, is not paired with it)."""
    if outcomes is None or theirs is None or not len(outcomes) == len(theirs) == n:
        return False
    accuracy = metrics.get("accuracy")
    return isinstance(accuracy, int | float) and _whole(float(accuracy) * n) == outcomes.count("1")


def _beaten(metric: str, value: float, floors: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], float]]:
    """Each floor whose ``metric`` the selected trial's ``value`` beats: (name, its metrics, its value)."""
    for name, f in floors.items():
        floor = f.get(metric) if isinstance(f, dict) else None
        if isinstance(floor, int | float) and value > floor:
            yield name, f, float(floor)


def needs_outcomes(
    metric: str,
    maximize: bool,
    metrics: dict[str, Any],
    n: int,
    floors: dict[str, Any],
    stored: dict[str, str],
) -> bool:
    """Whether pairing the selected trial with a floor whose outcomes are ``stored`` could decide
    :func:`floor_separation`: a beaten floor other than the majority class (paired through the trial's
    recall without them) whose gap is within the largest paired bound the two accuracies allow (the
    reviews only one gets right are at most ``n x min(a + b, 2 - a - b)``). Otherwise the extra
    validation pass of the trial's adapter is not needed."""
    value = metrics.get(metric)
    if metric != "accuracy" or not maximize or not isinstance(value, int | float) or n <= 0:
        return False
    for name, _, floor in _beaten(metric, value, floors):
        if name not in stored or name == "majority":
            continue
        most = paired_bound(round(n * min(value + floor, 2 - value - floor)), 0, n)  # whole reviews
        if value - floor <= most:
            return True
    return False


def floor_separation(
    metric: str,
    maximize: bool,
    metrics: dict[str, Any],
    n: int,
    floors: dict[str, Any],
    *,
    outcomes: str | None = None,
    floor_outcomes: dict[str, str] | None = None,
) -> str | None:
    """A sentence naming each floor the selected trial beats by no more than its noise, or ``None``.

    ``metrics`` (the selected trial's, as ranked: on the same ``n`` validation reviews as the floors)
    decide. The accuracy gap is paired review by review (McNemar with continuity correction,
    :func:`~promptsweep.methods.paired_bound`) where the reviews each gets right are known: from
    ``outcomes`` (the trial's, ``methods.adapter_outcomes``) and ``floor_outcomes[name]`` (the floor's,
    stored with the floors) on the same ``n`` reviews, when they count the ranked accuracy's hits;
    against the majority floor, from the trial's recall of the majority class (:func:`_mcnemar_bound`).
    Otherwise it is unpaired, separated as in :func:`separation` (a gap of more than twice the
    standard error of the difference). Only proportions that are maximized (accuracy, exact match) are
    judged; for other objectives nothing is said. Floors the trial does not beat are
    :func:`floor_warning`'s.
    """
    value = metrics.get(metric)
    se = standard_error(metric, value, n)
    if se is None or value is None or not maximize:
        return None
    close = []
    for name, f, floor in _beaten(metric, value, floors):
        paired = None
        if metric == "accuracy":
            theirs = (floor_outcomes or {}).get(name)
            if _paired_outcomes(metrics, n, outcomes, theirs):
                paired = paired_bound(*discordant(outcomes, theirs), n)
            else:
                paired = _mcnemar_bound(metrics, f, n)
        if paired is None:
            bound = unpaired_bound(se, standard_error(metric, float(floor), n) or 0.0)
            how = "2 standard errors of the difference, unpaired"
        else:
            bound, how = paired, "paired review by review (McNemar)"
        if value - floor <= bound:
            close.append(f"{name} {floor:.4f} (gap {value - floor:.4f}, needed > {bound:.4f}: {how})")
    if not close:
        return None
    return (
        f"the selected trial's ranked validation {metric} {value:.4f} +/- {se:.4f} (n={n}) is not "
        f"separated from the floor(s) {', '.join(close)}: on these reviews its lead may be noise"
    )


def score_job_floors(spec: JobSpec, storage: Any, job_id: int, inputs: Any) -> dict[str, Any]:
    """Score the job's floors on validation once and return them. The job's summary keeps them
    (``floors``: name -> metrics) and each floor's outcome on every ranked review (``floor_outcomes``:
    name -> ``"1"``/``"0"`` per review in the split's order), for the paired test of
    :func:`floor_separation`."""
    from promptsweep.methods import score_floors

    job = storage.get_job(job_id)
    if "floors" in (job.summary or {}):
        return dict(job.summary["floors"])
    if not spec.floors:
        return {}
    started = time.perf_counter()
    floors = score_floors(
        inputs,
        split="validation",
        seed=spec.seed,
        head_train_examples=FLOOR_HEAD_TRAIN_EXAMPLES,
        with_outcomes=True,
    )
    outcomes = {name: f.pop("outcomes") for name, f in floors.items() if "outcomes" in f}
    storage.update_job_summary(job_id, floors=floors, floor_outcomes=outcomes or None)
    _log.info("job %d: floors %s (%.1f s)", job_id, floors, time.perf_counter() - started)
    return floors


def select(spec: JobSpec, storage: Any, job_id: int, inputs: Any) -> dict[str, Any]:
    """Pick the job's trial(s) on validation and evaluate the test split for those only.

    Single objective: the finalists re-scored on the whole validation split decide. Multi-objective:
    the Pareto front (validation metric against trainable parameters), no re-scoring.

    Returns:
        ``{"selected": [TrialRecord ...], "test_metrics": {number: metrics}, "finalists": [...]}``;
        ``selected`` is empty when no trial completed. The job's summary gets ``selected_trial``,
        ``finalists``, ``separation``, ``floor_warning``, ``floor_separation``, ``selected_outcomes``
        (when the trial was paired with a floor review by review) and ``kept_state``.
    """
    from promptsweep.methods import evaluate_adapter

    multi = len(spec.directions) > 1
    finalists: list[dict[str, Any]] = []
    if multi:
        selected = sorted(storage.pareto_front(job_id), key=lambda r: r.number)
    else:
        finalists = rescore_finalists(spec, storage, job_id, inputs)
        selected = [storage.get_trial(job_id, finalists[0]["number"])] if finalists else []
        if not selected:
            selected = storage.leaderboard(job_id, limit=1)
    if not selected:
        return {"selected": [], "test_metrics": {}, "finalists": []}
    has_test = int(inputs.counts.get("test", 0)) > 0
    test_metrics: dict[int, dict[str, float]] = {}
    for record in selected:
        if has_test and record.adapter_dir:
            metrics = {
                k: float(v) for k, v in evaluate_adapter(inputs, record.adapter_dir, split="test").items()
            }
            storage.record_trial(job_id, record.number, test_metrics=metrics)
            test_metrics[record.number] = metrics
    _faults.hold("select")  # the chaos tests kill a worker here
    stored = storage.get_job(job_id).summary or {}
    floors, floor_outcomes = stored.get("floors") or {}, stored.get("floor_outcomes") or {}
    warning = None if multi else floor_warning(spec, selected[0].value, floors)
    near = outcomes = None
    if not multi:
        maximize = spec.objective.resolved_direction == "maximize"
        n = int(inputs.counts.get("validation", 0))
        ranked = {**(selected[0].metrics or {}), spec.objective.metric: selected[0].value}
        metric = spec.objective.metric
        if selected[0].adapter_dir and needs_outcomes(metric, maximize, ranked, n, floors, floor_outcomes):
            outcomes = _selected_outcomes(spec, job_id, selected[0], inputs)
        near = floor_separation(
            metric, maximize, ranked, n, floors, outcomes=outcomes, floor_outcomes=floor_outcomes
        )
    if warning:
        _log.warning("job %d: %s", job_id, warning)
    if near:
        _log.info("job %d: %s", job_id, near)
    storage.update_job_summary(
        job_id,
        selected_trial=None if multi else selected[0].number,
        finalists=finalists or None,
        separation=separation(finalists),
        floor_warning=warning,
        floor_separation=near,
        selected_outcomes=outcomes,
        kept_state=None if multi else kept_state(storage, job_id, selected[0], spec.objective.metric),
    )
    return {"selected": selected, "test_metrics": test_metrics, "finalists": finalists}


def _selected_outcomes(spec: JobSpec, job_id: int, record: Any, inputs: Any) -> str | None:
    """The selected trial's outcome on each ranked validation review (its adapter reloaded, one
    validation pass at the trials' evaluation batch size), or ``None`` when that fails: the pairing
    only sharpens a note, so the job does not fail for it."""
    from promptsweep.methods import adapter_outcomes

    try:
        return adapter_outcomes(
            inputs, record.adapter_dir, split="validation", batch_size=spec.budget.eval_batch_size
        )
    except Exception as exc:  # the note falls back to the unpaired rule
        _log.warning("job %d: trial %d not paired with the floors: %s", job_id, record.number, exc)
        return None


def kept_state(storage: Any, job_id: int, record: Any, metric: str) -> str | None:
    """A sentence when trial ``record``'s adapter holds an earlier validated state than its last
    (``TrainBudget.keep_best``; the adapter's ``kept_step``), with the last validation's value from its
    recorded learning curve; else ``None``."""
    from promptsweep.methods import local_adapter_dir, read_adapter_meta

    if not record.adapter_dir or record.value is None:
        return None
    meta = read_adapter_meta(local_adapter_dir(record.adapter_dir))
    kept, last = meta.get("kept_step"), meta.get("steps")
    if kept is None:
        return None
    curve = {p.step: p.metrics for p in storage.list_intermediate(job_id, record.number)}
    lost = (curve.get(last) or {}).get(metric)
    return (
        f"trial {record.number} ends in its state validated at step {kept} ({metric} {record.value:.4f}), "
        f"not in its last, at step {last}"
        + (f" ({lost:.4f})" if lost is not None else "")
        + ", which validated clearly worse: its adapter and value are the earlier state's"
    )


def describe_floors(floors: dict[str, Any], metric: str) -> str:
    """One line with each floor's validation ``metric`` (``run`` / ``show``)."""
    parts = [
        f"{name} {f[metric]:.4f}"
        for name, f in floors.items()
        if isinstance(f, dict) and isinstance(f.get(metric), int | float)
    ]
    return f"floors (validation {metric}): " + (", ".join(parts) if parts else "none")


def describe_finalists(finalists: list[dict[str, Any]], metric: str) -> list[str]:
    """Lines with each finalist's value and standard error, subsample and whole validation split."""
    if not finalists:
        return []

    def pm(value: float | None, se: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" + (f" +/- {se:.4f}" if se is not None else "")

    lines = [f"finalists (validation {metric}: ranked subsample -> whole split, +/- one standard error):"]
    for f in finalists:
        ranked = f"  trial {f['number']} ({f['variant']}): {pm(f['subsample'], f.get('subsample_se'))} "
        if f.get("rescored", True) or f["n"] != f["subsample_n"]:
            lines.append(ranked + f"(n={f['subsample_n']}) -> {pm(f['value'], f.get('se'))} (n={f['n']})")
        else:
            alone = len(finalists) == 1  # a summary stored before ``kept`` existed: infer the reason
            reason = f.get("kept") or (KEPT_SINGLE if alone else KEPT_WHOLE_SPLIT)
            lines.append(ranked + f"(n={f['n']}; {reason})")
    return lines
