"""Pricing a successive-halving plan as Ray Tune's ASHA really spends it (no Ray, no torch).

:func:`simulate_asha` replays the rule of ``ray.tune.schedulers.async_hyperband._Bracket`` over random
config values, so that :func:`~promptsweep.search._planning.plan_search` counts the configs a budget
pays for at their real cost: the first trial to reach a rung always goes on, so with few configs far
more than ``1 / reduction_factor**k`` of them reach rung ``k``.
"""

from __future__ import annotations

import math

#: Seeded draws :func:`simulate_asha` averages a plan's cost over (fewer for many configs, so that a
#: draw times configs stays under ``ASHA_EVENTS``; at least 4).
ASHA_RUNS = 64
ASHA_EVENTS = 4096


def simulate_asha(
    configs: int,
    concurrency: int,
    segments: list[float],
    setup_s: float,
    reduction_factor: float,
    *,
    runs: int = ASHA_RUNS,
) -> tuple[float, list[float]]:
    """Expected trial-seconds of ``configs`` configs under Ray Tune's ASHA, and the share of configs
    that train each segment (before the first rung, between rungs, after the last one).

    Ray's ASHA (``ray.tune.schedulers.async_hyperband._Bracket``) stops a trial at a rung when its
    value is below the ``1 - 1/reduction_factor`` percentile of the values *already recorded* there,
    so the first trial to reach a rung always continues, and the next few are judged against one or
    two values: with few configs far more than ``1/reduction_factor`` of them go on, and the ideal
    successive-halving count (``configs / reduction_factor**k``) under-counts the cost. This replays
    that rule: ``concurrency`` trials at a time, each taking ``setup_s`` and then ``segments[k]``
    seconds per segment (its evaluation included), values drawn at random (a config's rank is the same
    at every rung), averaged over ``runs`` seeded draws, so a plan is reproducible.
    """
    import random

    rng = random.Random(0)
    total, reached = 0.0, [0] * len(segments)
    runs = max(4, min(runs, ASHA_EVENTS // configs))  # many configs average out in fewer draws
    for _ in range(runs):
        cost, counts = replay_asha(
            [rng.random() for _ in range(configs)], concurrency, segments, setup_s, reduction_factor
        )
        total += cost
        reached = [a + b for a, b in zip(reached, counts, strict=True)]
    return total / runs, [r / (runs * configs) for r in reached]


def replay_asha(
    values: list[float], concurrency: int, segments: list[float], setup_s: float, reduction_factor: float
) -> tuple[float, list[int]]:
    """One run of :func:`simulate_asha` with the configs' values given (higher is better; started in
    this order): its trial-seconds and how many configs trained each segment."""
    import bisect
    import heapq

    last = len(segments) - 1
    share = 1 - 1 / reduction_factor
    total, reached = 0.0, [0] * len(segments)
    recorded: list[list[float]] = [[] for _ in range(last)]  # each rung's values so far, ascending
    # (time trial i ends its segment k, i, k); a slot freed by a stop or an end starts the next trial
    events = [(setup_s + segments[0], i, 0) for i in range(min(concurrency, len(values)))]
    heapq.heapify(events)
    started = len(events)
    while events:
        now, i, k = heapq.heappop(events)
        reached[k] += 1
        total += segments[k] + (setup_s if k == 0 else 0.0)
        go_on = k < last
        if go_on:
            if recorded[k]:
                go_on = values[i] >= _percentile(recorded[k], share)
            bisect.insort(recorded[k], values[i])
        if go_on:
            heapq.heappush(events, (now + segments[k + 1], i, k + 1))
        elif started < len(values):
            heapq.heappush(events, (now + setup_s + segments[0], started, 0))
            started += 1
    return total, reached


def _percentile(ordered: list[float], q: float) -> float:
    """``numpy.percentile(ordered, 100 * q)`` (linear interpolation) of an ascending list."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
