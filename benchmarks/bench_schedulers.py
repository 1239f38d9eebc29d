"""Scheduler benchmark (issue 11): ASHA as shipped against HyperBand with pause/resume, priced with a
search's own measured costs and judged on its recorded rung values.

A side-by-side run of Ray Tune's ``HyperBandScheduler`` needs a trainable that pauses at a rung and
resumes from a mid-trial checkpoint (adapter + optimizer + scheduler state), which promptsweep's does
not write (it trains each survivor on in the same process). So this script answers the question with
what the searches measured instead. For each searching row of ``bench_quality.py``'s JSON whose plan
screens (rungs, timed costs: ``step_s``, ``eval_example_s``, ``setup_s``):

- **ASHA, as run**: the configs the job ran, the trial-seconds it spent, the configs it trained to
  ``max_steps`` and its wall seconds (the job's database and the row).
- **Ray's HyperBandScheduler**: its brackets for the plan's ``max_steps`` and reduction factor, from
  Ray's own ``HyperBandScheduler`` (``_get_n0``, ``_get_r0``), filled in Ray's order (the bracket
  with ``s = 0`` first: ``n0`` configs each trained to ``max_t``, no halving), and what its first
  bracket costs at the measured costs; also with ``max_t`` counted in first rungs (``time_attr`` in
  units of ``rungs[0]`` steps), the most favourable setting.
- **One synchronous successive-halving bracket with pause/resume** over the plan's rungs (a bracket
  plan of our own over Tune): ``n`` configs to the first rung, then ``ceil(n_k / eta)`` resumed to
  the next (Ray's ``_Bracket`` count), each resume paying the measured set-up again (a new actor and
  model load; the checkpoint's few MB are not priced), each rung a barrier for the
  ``concurrency`` slots. It prints the most configs the budget pays for within the plan's wall-clock
  cap, their trial-seconds, the wall seconds, and the slots' busy share (trial-seconds over
  concurrency x wall).
- **The recorded first rung**: every config's value at ``rungs[0]`` (the job's database) and the
  selected trial's rank there; a synchronous rung keeps the top ``ceil(n / eta)``, so it says whether
  the selected trial would have gone on without promptsweep's sparing of the first warm-start config.

Prints a markdown table per row and nothing else; nothing here asserts a target.

Usage (no training, seconds):

    .venv/bin/python benchmarks/bench_schedulers.py /tmp/bf/q.json [--arms search random]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from itertools import pairwise
from pathlib import Path
from typing import Any


def segments(plan: dict[str, Any]) -> list[float]:
    """Seconds of each segment of a plan's trial (before the first rung, between rungs, after the last
    one), its validation included: ``(steps) x step_s + eval_examples x eval_example_s``."""
    costs = plan["costs"]
    eval_s = plan["eval_examples"] * costs["eval_example_s"]
    bounds = [0, *plan["rungs"], plan["max_steps"]]
    return [(hi - lo) * costs["step_s"] + eval_s for lo, hi in pairwise(bounds)]


def bracket_counts(configs: int, rungs: int, eta: float) -> list[int]:
    """Configs training each segment of one synchronous bracket: Ray's ``_Bracket`` keeps
    ``ceil(n / eta)`` at each rung."""
    counts = [configs]
    for _ in range(rungs):
        counts.append(math.ceil(counts[-1] / eta))
    return counts


def synchronous(plan: dict[str, Any], configs: int, setup: float) -> dict[str, Any]:
    """Trial-seconds, wall seconds and busy share of one synchronous bracket of ``configs`` configs,
    each start and every survivor's resume at a rung paying ``setup`` seconds, each rung a barrier."""
    segs = segments(plan)
    counts = bracket_counts(configs, len(plan["rungs"]), plan["reduction_factor"])
    slots = int(plan["concurrency"])
    trial_s = sum(n * (setup + s) for n, s in zip(counts, segs, strict=True))
    wall_s = sum(math.ceil(n / slots) * (setup + s) for n, s in zip(counts, segs, strict=True))
    return {
        "configs": configs,
        "counts": counts,
        "trial_s": trial_s,
        "resume_s": sum(counts[1:]) * setup,
        "wall_s": wall_s,
        "busy": trial_s / (slots * wall_s),
    }


def most_synchronous(plan: dict[str, Any], budget: float, setup: float) -> dict[str, Any] | None:
    """The largest synchronous bracket whose trial-seconds fit ``budget`` and whose wall seconds fit
    the plan's wall-clock cap (``time_budget_s``, when it has one)."""
    cap = plan.get("time_budget_s") or math.inf
    best = None
    for n in range(1, 1000):
        run = synchronous(plan, n, setup)
        if run["trial_s"] > budget:
            break
        if run["wall_s"] <= cap:
            best = run
    return best


def ray_hyperband(plan: dict[str, Any], max_t: int, unit_steps: int, setup: float) -> list[dict[str, Any]]:
    """Ray's ``HyperBandScheduler`` brackets for ``max_t`` (in units of ``unit_steps`` steps), in the
    order Ray fills them, each priced at the plan's measured costs (each start and resume paying
    ``setup``)."""
    from ray.tune.schedulers import HyperBandScheduler

    hb = HyperBandScheduler(max_t=max_t, reduction_factor=plan["reduction_factor"])
    costs = plan["costs"]
    eval_s = plan["eval_examples"] * costs["eval_example_s"]
    eta = plan["reduction_factor"]
    out = []
    for s in range(hb._s_max_1):
        n, r = hb._get_n0(s), hb._get_r0(s)
        if r == 0:
            continue
        counts, milestones = [n], [r]
        for _ in range(s):
            counts.append(math.ceil(counts[-1] / eta))
            milestones.append(min(int(milestones[-1] * eta), max_t))
        trial_s, done = 0.0, 0
        for count, milestone in zip(counts, milestones, strict=True):
            steps = (milestone - done) * unit_steps
            trial_s += count * (setup + steps * costs["step_s"] + eval_s)
            done = milestone
        out.append(
            {"s": s, "configs": n, "first_rung_steps": r * unit_steps, "counts": counts, "trial_s": trial_s}
        )
    return out


def first_rung_values(row: dict[str, Any]) -> dict[int, float]:
    """Each trial's objective value at the plan's first rung, from the job's database."""
    from promptsweep.storage import Storage

    plan = row["plan"]
    metric = "accuracy"
    storage = Storage(f"sqlite:///{row['db']}")
    try:
        out = {}
        for trial in storage.list_trials(row["job_id"]):
            for point in storage.list_intermediate(row["job_id"], trial.number):
                if point.step == plan["rungs"][0] and metric in point.metrics:
                    out[trial.number] = float(point.metrics[metric])
        return out
    finally:
        storage.close()


def setup_as_run(row: dict[str, Any]) -> float | None:
    """The median set-up of the row's trials that stopped at the first rung, as run: a trial's seconds
    less its steps at the timed step time and one validation (Ray's actor start or reuse, the model
    build, the data). ``None`` without such trials."""
    plan = row["plan"]
    costs = plan["costs"]
    eval_s = plan["eval_examples"] * costs["eval_example_s"]
    first = [
        t["seconds"] - t["steps"] * costs["step_s"] - eval_s
        for t in row.get("trials") or []
        if t.get("steps") == plan["rungs"][0] and t.get("seconds")
    ]
    return statistics.median(first) if first else None


def report(row: dict[str, Any]) -> list[str]:
    plan = row["plan"]
    budget = float(plan["compute_budget_s"])
    timed = float(plan["costs"]["setup_s"])
    as_run = setup_as_run(row)
    setup = as_run if as_run is not None else timed
    lines = [
        f"### {row['model']} {row['arm']}, seed {row['seed']}",
        "",
        f"Set-up per start or resume: {setup:.1f} s ("
        + (
            f"median of the trials stopped at the first rung, as run; timed by the plan: {timed:.2f} s"
            if as_run is not None
            else "timed by the plan"
        )
        + f"); step {plan['costs']['step_s']:.3f} s; one validation "
        f"{plan['eval_examples'] * plan['costs']['eval_example_s']:.1f} s; budget {budget:.0f} trial-s, "
        f"wall-clock cap {plan.get('time_budget_s')} s.",
        "",
    ]
    trials = row.get("trials") or []
    at_end = sum(1 for t in trials if (t.get("steps") or 0) >= plan["max_steps"])
    lines += [
        "| schedule | configs | configs per segment | trial-s | wall s | slots busy | fits the budget |",
        "|---|---|---|---|---|---|---|",
        f"| ASHA, as run | {len(trials)} | {at_end} to {plan['max_steps']} steps | {row['trial_s']:.0f} | "
        f"{row['wall_s']:.0f} (the job) | | yes (planned {plan['configs']}) |",
    ]
    sync = most_synchronous(plan, budget, setup)
    if sync:
        lines.append(
            f"| one synchronous bracket, pause/resume | {sync['configs']} | "
            f"{' / '.join(map(str, sync['counts']))} | "
            f"{sync['trial_s']:.0f} ({sync['resume_s']:.0f} of resumes) | {sync['wall_s']:.0f} | "
            f"{sync['busy']:.2f} | yes |"
        )
    unit = int(plan["rungs"][0])
    for label, max_t, unit_steps in (
        ("steps", int(plan["max_steps"]), 1),
        (f"units of {unit} steps", math.ceil(plan["max_steps"] / unit), unit),
    ):
        brackets = ray_hyperband(plan, max_t, unit_steps, setup)
        first = brackets[0]
        lines.append(
            f"| Ray HyperBand, max_t in {label}: first bracket (s={first['s']}) | {first['configs']} | "
            f"{' / '.join(map(str, first['counts']))} from {first['first_rung_steps']} steps | "
            f"{first['trial_s']:.0f} | | | {'yes' if first['trial_s'] <= budget else 'no'} "
            f"({len(brackets)} brackets, {sum(b['trial_s'] for b in brackets):.0f} trial-s in all) |"
        )
    values = first_rung_values(row)
    if values:
        chosen = row.get("best_trial")
        ranked = sorted(values, key=values.get, reverse=True)
        keep = math.ceil(len(values) / plan["reduction_factor"])
        if chosen in values:
            rank = ranked.index(chosen) + 1
            verdict = "kept" if rank <= keep else "cut"
            lines += [
                "",
                f"First rung ({unit} steps), recorded: {len(values)} configs, the selected trial {chosen} "
                f"read {values[chosen]:.4f}, rank {rank}; a synchronous rung keeps the top {keep}: "
                f"**{verdict}**"
                f" (top values {', '.join(f'{values[n]:.4f}' for n in ranked[:keep])}).",
            ]
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path, help="bench_quality.py --json output(s)")
    parser.add_argument("--arms", nargs="+", default=["search", "random"])
    args = parser.parse_args()
    for path in args.json:
        for row in json.loads(path.read_text())["rows"]:
            plan = row.get("plan") or {}
            if row.get("arm") in args.arms and plan.get("rungs") and plan.get("costs") and row.get("db"):
                print("\n".join(report(row)))


if __name__ == "__main__":
    main()
