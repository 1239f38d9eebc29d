"""Ray Tune's OptunaSearch, corrected for early stopping, resume and our define-by-run space.

Ray's ``OptunaSearch`` (ray 2.60) always runs Optuna with ``NopPruner`` and tells a trial that the
scheduler (ASHA) stopped early as COMPLETE with its last, truncated value; TPE then models those
values as if they were final, and optuna-dashboard shows them as finished. :class:`PromptsweepSearch`
decides the state from the trial's last result instead (:func:`end_state`):

- the final result carries :data:`~promptsweep.search._trainable.DONE_KEY` (the trial trained its
  whole budget) → COMPLETE with the objective values;
- the trial raised → FAIL;
- otherwise the trial was stopped early (scheduler, or the job's time budget) → PRUNED, with its last
  validation value reported as an intermediate value at its training step (Optuna keeps it as the
  pruned trial's value, as its own pruners do).

It also:

- reports intermediate values at the training *step* (not Tune's iteration count), single-objective
  only (Optuna cannot prune multi-objective trials);
- uses the study the driver created once before any trial (``_setup_study`` does not create it);
- re-runs the trials a killed process left RUNNING, under their own trial numbers and parameters
  (resume), before asking the sampler for new ones;
- calls ``before_tell(tune trial id, optuna trial)`` while the trial is still RUNNING in Optuna, just
  before it tells Optuna the end (the driver uploads the trial's adapter as an Optuna artifact there:
  Optuna refuses attributes on a finished trial);
- past a screening plan's configs, starts more only while its budget ledger says they fit
  (:mod:`promptsweep.search._fill`);
- hands Tune the config ``{"params": <flat params>, "trial_number": <n>}``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from promptsweep import _faults
from promptsweep._logging import get_logger
from promptsweep.search._fill import BudgetFill
from promptsweep.search._trainable import (
    DONE_KEY,
    ERROR_FILE,
    ERROR_KEY,
    NUMBER_KEY,
    PARAMS_KEY,
    STEP_KEY,
    trial_dir,
)

_log = get_logger(__name__)


def end_state(result: dict[str, Any] | None, error: bool) -> TrialState:
    """The Optuna state of a trial that ended with ``result`` (its last result) and ``error``."""
    if error or (result and result.get(ERROR_KEY)):
        return TrialState.FAIL
    if result and result.get(DONE_KEY):
        return TrialState.COMPLETE
    return TrialState.PRUNED


def trial_error_text(job_dir: str | Path | None, number: int) -> str | None:
    """The last lines of the traceback trial ``number`` wrote when it raised, if readable here."""
    if job_dir is None:
        return None
    path = trial_dir(job_dir, number) / ERROR_FILE
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return "\n".join(lines[-12:])


class PromptsweepSearch(OptunaSearch):
    """An ``OptunaSearch`` that records early-stopped trials as PRUNED (see the module docstring).

    Args:
        study: the job's study, created by the driver (``optuna.create_study(storage=RDBStorage(...))``).
        space_fn: ``trial -> flat params`` (:func:`promptsweep.search.sample_params` bound to the space).
        metrics: objective names in the study's order (``[metric]`` or ``[metric, "trainable_params"]``).
        modes: ``"max"``/``"min"`` per objective.
        resume_numbers: trial numbers left RUNNING by a killed process, re-run first.
        job_dir: the job's output directory; a failed trial's error text is read from it (when the
            driver shares the workers' filesystem) into the trial's Optuna user attr ``error``.
        before_tell: called with the Tune trial id and the Optuna trial before the trial's end is
            told to Optuna (what it raises is logged; the trial is told all the same).
        fill: the budget ledger of a screening plan (:class:`~promptsweep.search._fill.BudgetFill`):
            new configs past the planned ones start only while it says the budget pays for them.
    """

    def __init__(
        self,
        *,
        study: optuna.Study,
        space_fn: Callable[[optuna.Trial], dict[str, Any]],
        metrics: list[str],
        modes: list[str],
        resume_numbers: Iterable[int] = (),
        job_dir: str | Path | None = None,
        deadline: float | None = None,
        max_failed: int | None = None,
        before_tell: Callable[[str, optuna.Trial], None] | None = None,
        fill: BudgetFill | None = None,
    ) -> None:
        self._given_study = study
        #: A screening plan's budget ledger: after the planned configs, more only while it pays
        #: (``None``: the Tuner's ``num_samples`` alone decides).
        self._fill = fill
        self._before_tell = before_tell
        #: The job's wall-clock cap (``time.time()``): no trial starts after it.
        self._deadline = deadline
        #: The failure budget of this run: no trial starts once this many trials failed in it (a
        #: retried or resumed job gets a fresh one).
        self._max_failed = max_failed
        self._failed = 0
        #: Set by :meth:`halt` (a user's stop / pause): no trial starts any more.
        self._halted: str | None = None
        self._job_dir = job_dir
        self._space_fn = space_fn
        self._resume = deque(resume_numbers)
        multi = len(metrics) > 1
        super().__init__(
            space=space_fn,
            metric=list(metrics) if multi else metrics[0],
            mode=list(modes) if multi else modes[0],
            sampler=study.sampler,
            study_name=study.study_name,
            storage=study._storage,
        )
        #: Optuna trial number -> steps already reported to Optuna.
        self._steps: dict[int, set[int]] = {}

    # -- pickling ------------------------------------------------------------------------------
    # Tune pickles its search algorithm into the experiment directory (Tuner state, periodic
    # checkpoints). The study and its open trials live in the job's database, which is what resume
    # rebuilds from (ray#30861: Tuner.restore has dropped searcher state), so they are not pickled.
    _UNPICKLED = (
        "_given_study",
        "_ot_study",
        "_ot_trials",
        "_storage",
        "_sampler",
        "_space",
        "_space_fn",
        "_before_tell",
    )

    def __getstate__(self) -> dict[str, Any]:
        return {k: (None if k in self._UNPICKLED else v) for k, v in self.__dict__.items()}

    def save(self, checkpoint_path: str) -> None:
        """Write the picklable part of the state (the study itself is in the database)."""
        import pickle

        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__getstate__(), handle)

    def restore(self, checkpoint_path: str) -> None:
        """Not used: a job resumes from its Optuna study (see ``promptsweep.search.run_job``)."""
        raise NotImplementedError("resume a promptsweep job with run_job(job_id, storage)")

    # -- study ---------------------------------------------------------------------------------
    def _setup_study(self, mode: str | list[str]) -> None:
        # The driver created the study once, before any trial; never create (or race) it here.
        self._ot_study = self._given_study

    # -- asking ----------------------------------------------------------------------------------
    def halt(self, why: str) -> None:
        """Start no new trial from now on (``why``: a user's ``stop`` or ``pause``); running trials go
        on. Trials an earlier run left unfinished are still re-run after a ``stop`` (the job then
        ends with none RUNNING); after a ``pause`` they stay RUNNING for the resume."""
        self._halted = why

    def _resumed_trial(self) -> optuna.Trial | None:
        """The next trial an earlier run left RUNNING, taken from the resume queue; ``None``."""
        study = self._ot_study
        while self._resume:
            number = self._resume.popleft()
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
            if study._storage.get_trial(trial_id).state == TrialState.RUNNING:
                _log.info("re-running trial %d, left unfinished by an earlier run", number)
                return optuna.trial.Trial(study, trial_id)
        return None

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """Return ``{"params": ..., "trial_number": ...}`` for Tune trial ``trial_id``; ``FINISHED``
        (no new trial) once the job's wall-clock cap has passed or its failure budget is spent, and
        no interrupted trial waits; always after :meth:`halt`. Past the planned configs of a plan that
        fills its budget, ``None`` (ask again) or ``FINISHED`` as its ledger says."""
        if trial_id not in self._ot_trials and self._halted:
            resumed = self._resumed_trial() if self._halted == "stop" else None
            if resumed is None:
                return Searcher.FINISHED
            self._ot_trials[trial_id] = resumed
            if self._fill is not None:
                self._fill.started(trial_id, new=False)
        if trial_id not in self._ot_trials and self._completed_trials:
            _faults.hold("between_trials")  # the chaos tests kill a worker here
        if trial_id not in self._ot_trials and not self._resume:
            if self._deadline is not None and time.time() >= self._deadline:
                return Searcher.FINISHED
            if self._max_failed is not None and self._failed >= self._max_failed:
                return Searcher.FINISHED
        if trial_id not in self._ot_trials:
            resumed = self._resumed_trial()
            if resumed is None and self._fill is not None:
                go = self._fill_decides(self._fill)
                if go is not True:
                    return go
            self._ot_trials[trial_id] = resumed if resumed is not None else self._ot_study.ask()
            if self._fill is not None:
                self._fill.started(trial_id, new=resumed is None)
        ot_trial = self._ot_trials[trial_id]
        params = self._space_fn(ot_trial)
        return {PARAMS_KEY: params, NUMBER_KEY: ot_trial.number}

    @staticmethod
    def _fill_decides(fill: BudgetFill) -> bool | str | None:
        """Whether a new config starts: ``True``, ``None`` (not now) or ``FINISHED``, as the plan's
        budget ledger says (:meth:`BudgetFill.decide`)."""
        go = fill.decide()
        if go is None:
            return None  # a running trial stopped at a rung may free its share
        if not go:
            why = "the wall-clock cap comes first" if fill.too_late() else "the budget is short"
            _log.info(
                "no new config (%s): %.0f trial-s left of the budget, a first rung costs %.0f",
                why,
                fill.left(),
                fill.first_rung_s,
            )
            return Searcher.FINISHED
        if fill.new >= fill.planned:
            _log.info(
                "config %d past the %d planned: %.0f trial-s of the budget left after the running "
                "trials, a first rung costs %.0f",
                fill.filled + 1,
                fill.planned,
                fill.left(),
                fill.first_rung_s,
            )
        return True

    # -- results -------------------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Report the validation metric at the training step (single objective only)."""
        if self._fill is not None and STEP_KEY in result:
            self._fill.reported(trial_id, int(result[STEP_KEY]))
        if isinstance(self.metric, list) or trial_id in self._completed_trials:
            return
        value = result.get(self.metric)
        if value is None or STEP_KEY not in result:
            return
        ot_trial = self._ot_trials[trial_id]
        step = int(result[STEP_KEY])
        if step in self._reported_steps(ot_trial):
            return  # a re-run trial reaching a step its interrupted run already reported
        ot_trial.report(float(value), step)
        self._steps[ot_trial.number].add(step)

    def _reported_steps(self, ot_trial: optuna.Trial) -> set[int]:
        if ot_trial.number not in self._steps:
            frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
            self._steps[ot_trial.number] = set(frozen.intermediate_values)
        return self._steps[ot_trial.number]

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Tell Optuna COMPLETE, PRUNED or FAIL (see :func:`end_state`)."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if self._fill is not None:
            self._fill.ended(trial_id)
        ot_trial = self._ot_trials[trial_id]
        state = end_state(result, error)
        values: list[float] | float | None = None
        if state == TrialState.COMPLETE:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            vals = [result.get(m) if result else None for m in metrics]
            if any(v is None for v in vals):
                _log.warning("trial %d finished without %s; recorded FAIL", ot_trial.number, metrics)
                state = TrialState.FAIL
            else:
                values = [float(v) for v in vals]
        elif state == TrialState.PRUNED and result and not isinstance(self.metric, list):
            # The scheduler stopped it at this result: keep its last value at its step.
            value, step = result.get(self.metric), result.get(STEP_KEY)
            if value is not None and step is not None and int(step) not in self._reported_steps(ot_trial):
                ot_trial.report(float(value), int(step))
        if state == TrialState.FAIL:
            reason = (result or {}).get(ERROR_KEY) or (
                trial_error_text(self._job_dir, ot_trial.number) if error else None
            )
            reason = reason or "the trial ended without its objective values"
            try:
                self._ot_study._storage.set_trial_user_attr(ot_trial._trial_id, "error", reason[-1000:])
            except Exception:  # pragma: no cover - the reason is a courtesy for the dashboard
                _log.exception("could not store the error of trial %d", ot_trial.number)
        if state == TrialState.FAIL:
            self._failed += 1
        if self._before_tell is not None:
            try:
                self._before_tell(trial_id, ot_trial)
            except Exception:  # e.g. the artifact store is full: the trial's end is told all the same
                _log.exception("trial %d: before telling Optuna its end", ot_trial.number)
        try:
            self._ot_study.tell(ot_trial, values, state=state)
        except Exception as exc:  # e.g. a trial told already by an earlier process
            _log.warning("could not tell trial %d %s: %s", ot_trial.number, state.name, exc)
        self._completed_trials.add(trial_id)
