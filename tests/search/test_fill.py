"""Filling a screening plan's budget: the ledger that lets more configs start (no Ray, no torch)."""

from __future__ import annotations

import pytest

from promptsweep.search._fill import BudgetFill


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fill(clock: Clock, *, budget_s: float, planned: int) -> BudgetFill:
    # a trial: 1 s set-up, 1 s a step to 90 steps, validation (1 s) at rungs 10 and 30 and at its end
    return BudgetFill(
        budget_s=budget_s, planned=planned, max_steps=90, step_s=1.0, eval_s=1.0, setup_s=1.0, rungs=[10, 30],
        clock=clock,
    )  # fmt: skip


def test_planned_configs_start_whatever_the_budget_then_nothing_once_it_is_spent() -> None:
    clock = Clock()
    fill = _fill(clock, budget_s=10, planned=2)
    assert fill.first_rung_s == 12  # set-up, 10 steps, one validation
    assert fill.decide() is True
    fill.started("a", new=True)
    assert fill.decide() is True  # the plan's second config, though one trial's worst case is 94 s
    fill.started("b", new=True)
    assert fill.decide() is None  # nothing left while they run; they may still be stopped
    clock.now = 12
    fill.reported("a", 10)
    fill.ended("a")
    fill.reported("b", 10)
    fill.ended("b")
    assert fill.spent == 24 and fill.left() == -14
    assert fill.decide() is False and fill.filled == 0


def test_more_configs_start_while_the_budget_left_after_running_trials_pays_for_a_first_rung() -> None:
    clock = Clock()
    fill = _fill(clock, budget_s=300, planned=1)
    fill.started("a", new=True)
    # a's worst case from now: its set-up, 90 steps, 3 validations
    assert fill.left() == pytest.approx(300 - 94)
    started = []
    while fill.decide():
        started.append(f"fill-{len(started)}")
        fill.started(started[-1], new=True)
    assert len(started) == 3 and fill.filled == 3  # with 3 running, 300 - 3 x 94 = 18 >= 12
    assert fill.decide() is None  # running trials may free their share
    # 12 s on: all four reached the first rung; the filled ones are stopped there
    clock.now = 12
    for trial in ("a", *started):
        fill.reported(trial, 10)
    for trial in started:
        fill.ended(trial)
    # spent 3 x 12; a: 12 s so far, then 80 steps and 2 validations
    assert fill.left() == pytest.approx(300 - 36 - 12 - 82)
    assert fill.decide() is True


def test_a_running_trial_is_judged_by_its_time_as_well_as_its_reports() -> None:
    clock = Clock()
    fill = _fill(clock, budget_s=1000, planned=0)
    fill.started("a", new=False)  # a resumed trial is not a new config
    assert fill.new == 0 and fill.filled == 0
    clock.now = 21  # no report yet: set-up, then about 20 steps; 70 left, validations at 30 and 90
    assert fill.left() == pytest.approx(1000 - 21 - (70 + 2))
    fill.reported("a", 10)  # slower than timed: the report says where it is
    clock.now = 31  # 10 s after the report at 10: about 20 steps done
    assert fill.left() == pytest.approx(1000 - 31 - (70 + 2))
    clock.now = 500  # slower than timed: its real seconds count, its worst case no longer
    assert fill.left() == pytest.approx(1000 - 500 - 1)
    fill.ended("a")
    assert fill.spent == 500 and fill.left() == 500


def test_a_trial_restarted_after_its_worker_died_counts_its_steps_from_the_restart() -> None:
    clock = Clock()
    fill = _fill(clock, budget_s=1000, planned=1)
    fill.started("a", new=True)
    clock.now = 31
    fill.reported("a", 30)
    clock.now = 40
    fill.reported("a", 10)  # Tune re-ran it from step 0 in a new worker
    assert fill.left() == pytest.approx(1000 - 40 - (80 + 2))
    fill.ended("a")
    assert fill.spent == 40


def test_no_config_past_the_plan_starts_when_the_wall_clock_cap_comes_before_its_first_rung() -> None:
    clock = Clock()
    fill = _fill(clock, budget_s=1000, planned=1)
    fill.deadline = 30.0
    assert fill.decide() is True  # the planned config starts whatever the cap
    fill.started("a", new=True)
    clock.now = 17
    assert fill.decide() is True  # 13 s to the cap: a first rung (12 s) fits
    clock.now = 19
    assert fill.too_late() and fill.decide() is False  # 11 s: it would be cut by the cap before its rung
