"""Filling a screening plan's budget: more configs while the trial-seconds left pay for a first rung.

The plan counts configs at their expected cost under Ray's ASHA (:func:`~promptsweep.search._asha.
simulate_asha` draws the configs' values at random). A job's configs are not random: the warm-start
paper defaults come first and are good, so the sampled configs mostly stop at the first rung and fewer
train on than the replay expected. On MiniLM at 900 trial-s the plan expected 2.7 configs to reach
``max_steps``; one did, the slot beside it idled for its last ~190 s, and the jobs spent 553-646 of the
900 trial-s (docs/quality.md).

So once the planned configs have started, :class:`BudgetFill` lets the searcher start another config in
a free slot while the budget left pays for one more config's first rung, the budget left being the
job's trial-seconds less what its trials spent and less what every running trial would still spend if
it trained on to ``max_steps`` (its worst case). When it does not, the searcher waits while trials run
(a trial stopped at a rung frees its share) and ends the search when none does, or when the wall-clock
cap comes before one more first rung. A filled config that keeps passing rungs trains on like any
other, so the job may end past its compute budget by what that config spends after its first rung,
and by what running trials slower than the timed step spend past their estimated worst case; the
wall-clock cap (``budget.time_budget_s``) bounds that where the spec sets one (with
``compute_budget_s`` alone, only ``max_steps`` does). Measured (the same benchmark): 848-871
of the 900 trial-s spent, 11-15 configs screened instead of 6-7, the same config selected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class _Running:
    started: float  # when the trial was started (its set-up counts)
    step: int = 0  # the last training step it reported
    at: float | None = None  # when it reported that step


class BudgetFill:
    """The trial-seconds ledger of one run of a screening plan, and whether another config fits.

    Args:
        budget_s: the trial-seconds this run may spend (the job's budget less what earlier runs spent).
        planned: new configs this run starts in any case (the plan's); fill comes after them.
        max_steps: steps of a trial that is never stopped.
        step_s: seconds per training step (timed before the search).
        eval_s: seconds per validation.
        setup_s: seconds to build a trial's model.
        rungs: the plan's rungs (a running trial validates at each one above its step, then at its end).
        clock: ``time.time`` (tests pass their own).

    Attributes:
        deadline: the run's wall-clock cap (a ``clock()`` time; ``None``: none): no config past the
            planned ones starts when it would reach the cap before its first rung (set by the run).
    """

    def __init__(
        self,
        *,
        budget_s: float,
        planned: int,
        max_steps: int,
        step_s: float,
        eval_s: float,
        setup_s: float,
        rungs: list[int],
        clock: Any = time.time,
    ) -> None:
        self.budget_s = float(budget_s)
        self.planned = int(planned)
        self.max_steps = int(max_steps)
        self.step_s = float(step_s)
        self.eval_s = float(eval_s)
        self.setup_s = float(setup_s)
        self.rungs = sorted(int(r) for r in rungs)
        self._clock = clock
        self.deadline: float | None = None
        self.new = 0  # new configs started in this run (resumed trials are not new)
        self.spent = 0.0  # seconds of the trials that ended
        self._running: dict[str, _Running] = {}

    @property
    def filled(self) -> int:
        """New configs started past the planned ones."""
        return max(0, self.new - self.planned)

    @property
    def first_rung_s(self) -> float:
        """What one more config costs up to its first rung: set-up, steps, one validation."""
        first = self.rungs[0] if self.rungs else self.max_steps
        return self.setup_s + first * self.step_s + self.eval_s

    def started(self, trial_id: str, *, new: bool) -> None:
        """Trial ``trial_id`` starts now (``new``: a config of this run, not a resumed trial)."""
        self._running[trial_id] = _Running(started=self._clock())
        if new:
            self.new += 1

    def reported(self, trial_id: str, step: int) -> None:
        """Trial ``trial_id`` reported a result at training step ``step``."""
        run = self._running.get(trial_id)
        if run is not None:  # a lower step: Tune restarted the trial after its worker died
            run.step, run.at = int(step), self._clock()

    def ended(self, trial_id: str) -> None:
        """Trial ``trial_id`` ended (completed, stopped at a rung, failed): its seconds are spent."""
        run = self._running.pop(trial_id, None)
        if run is not None:
            self.spent += max(0.0, self._clock() - run.started)

    def _still_to_spend(self, run: _Running, now: float) -> float:
        """What a running trial would spend from ``now`` if it trained on to ``max_steps``."""
        # steps run since its last report (or since its set-up, before its first report)
        since = run.at if run.at is not None else run.started + self.setup_s
        setup_left = max(0.0, since - now)  # before the first report only: a report is never ahead of now
        ran = int(max(0.0, now - since) / self.step_s) if self.step_s > 0 else 0
        step = min(self.max_steps, run.step + ran)
        evaluations = sum(1 for r in self.rungs if r > step) + 1
        return setup_left + (self.max_steps - step) * self.step_s + evaluations * self.eval_s

    def left(self) -> float:
        """Trial-seconds left once every running trial trained on to ``max_steps``."""
        now = self._clock()
        running = sum(
            max(0.0, now - r.started) + self._still_to_spend(r, now) for r in self._running.values()
        )
        return self.budget_s - self.spent - running

    def too_late(self) -> bool:
        """Whether the wall-clock cap comes before one more config's first rung."""
        return self.deadline is not None and self.deadline - self._clock() < self.first_rung_s

    def decide(self) -> bool | None:
        """Whether a free slot starts a new config now: ``True`` (a planned one, or the budget left pays
        for one more first rung), ``None`` (not now: running trials may still be stopped and free their
        share) or ``False`` (never: nothing runs and the budget left is short, or the wall-clock cap
        comes before a first rung)."""
        if self.new < self.planned:
            return True
        if self.too_late():
            return False
        if self.left() >= self.first_rung_s:
            return True
        return None if self._running else False


def spent_trial_seconds(study: Any) -> float:
    """Seconds the study's ended trials ran (start to end; a trial left running by a killed process
    is not counted)."""
    total = 0.0
    for t in study.get_trials(deepcopy=False):
        if t.datetime_start is not None and t.datetime_complete is not None:
            total += max(0.0, (t.datetime_complete - t.datetime_start).total_seconds())
    return total


def budget_fill(plan: Any, study: Any, trials: int, stale: int) -> BudgetFill | None:
    """The ledger of a run of the plan's trials (``trials`` to start, ``stale`` of them re-runs of
    unfinished ones), its budget less what the study's ended trials spent; ``None`` when the plan
    does not fill (``Plan.fill``)."""
    costs = plan.costs
    if not plan.fill or costs is None or plan.compute_budget_s is None:
        return None
    return BudgetFill(
        budget_s=float(plan.compute_budget_s) - spent_trial_seconds(study),
        planned=max(0, trials - stale),
        max_steps=plan.max_steps,
        step_s=costs.step_s,
        eval_s=(plan.eval_examples or 0) * costs.eval_example_s,
        setup_s=costs.setup_s,
        rungs=plan.rungs,
    )


def fill_pays(plan: Any, study: Any) -> bool:
    """Whether ``plan`` fills its budget and what the study's ended trials left of it pays for one more
    first rung (a run of the plan's batch would start a config)."""
    ledger = budget_fill(plan, study, 0, 0)
    return ledger is not None and ledger.left() >= ledger.first_rung_s
