"""The Tune scheduler of a plan (:func:`make_scheduler`): Ray's ASHA with the job's first warm-start
config spared at the first rung (:class:`FirstConfigGraceASHA`), or the median stopping rule.

The plan (:func:`~promptsweep.search._asha.simulate_asha`) prices the first config as arriving first
at every rung, where Ray's ASHA always lets a trial go on (nothing recorded to compare it with). With
trials side by side, which reaches the first rung first is a race. On MiniLM the prefix-tuning
default (the most reliable config on an encoder, first in the warm-start order) read 0.650 at 22 steps
in two runs where the prompt-tuning default read 0.680 and 0.745; in one it reached the rung 2.6 s
after it and was cut (0.815 on the test split; 0.839-0.842 in the seeds where it went on). With the
warm-up ended by half the rung it read 0.68 against 0.7325 and went on only by arriving first
(docs/quality.md). So the first warm-start config always goes on at the first rung, as the plan
priced it; from the second rung on it is judged like any other (there, who arrives first is still a
race the replay does not see). Its value is still recorded at the first rung, so the configs after
it are judged against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from promptsweep._logging import get_logger
from promptsweep.search._space import to_optuna_params
from promptsweep.search._trainable import NUMBER_KEY, PARAMS_KEY, STEP_KEY

if TYPE_CHECKING:
    from promptsweep.search._planning import Plan
    from promptsweep.search._spec import JobSpec

_log = get_logger(__name__)


class FirstConfigGraceASHA(AsyncHyperBandScheduler):
    """ASHA (``time_attr`` = training steps) that does not stop the trial of ``spared`` (flat params:
    the job's first warm-start config) at the first rung (``grace_period``).

    The spared trial is the first one added whose params hold every key of ``spared`` with its value
    (a warm-start config may leave keys to the sampler); a later trial that draws the same config is
    judged like any other. It is spared at the first rung only: on its first result with the metric at
    or past ``grace_period`` and before the second rung (``grace_period * reduction_factor``); a result
    that first lands past the second rung is judged there as Ray judges it.
    """

    def __init__(self, *, spared: dict[str, Any] | None, **kwargs: Any) -> None:
        super().__init__(time_attr=STEP_KEY, **kwargs)
        self._spared = to_optuna_params(spared) if spared else None
        self._first_rung = (kwargs["grace_period"], kwargs["grace_period"] * kwargs["reduction_factor"])
        self._spared_id: str | None = None
        self._judged = False

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        params = (trial.config or {}).get(PARAMS_KEY)
        if self._spared_id is None and self._spared is not None and params is not None:
            given = to_optuna_params(params)
            if all(k in given and given[k] == v for k, v in self._spared.items()):
                self._spared_id = trial.trial_id
                _log.info(
                    "trial %s (the first warm-start config) is not stopped at the first rung (%s steps)",
                    trial.config.get(NUMBER_KEY),
                    self._first_rung[0],
                )

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Ray's decision (which records the value at the rung), except a stop of the spared trial at
        its first-rung result, which goes on."""
        action = super().on_trial_result(tune_controller, trial, result)
        if trial.trial_id != self._spared_id or self._judged or self._metric not in result:
            return action
        step = result.get(STEP_KEY, 0)
        if step < self._first_rung[0]:
            return action
        self._judged = True
        if action == TrialScheduler.STOP and step < self._first_rung[1]:
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action


def make_scheduler(spec: JobSpec, plan: Plan) -> Any:
    """The Tune scheduler of ``spec`` over training steps, at the plan's rungs (``None``: no cut).

    ASHA (``stop_last_trials=False``: a trial ends by its own budget): rungs at ``plan.rungs``
    (``grace * reduction_factor**k`` below ``max_steps``); a trial that passes a rung keeps running.
    The first warm-start config is not stopped at the first rung (:class:`FirstConfigGraceASHA`), as
    the plan priced it.
    """
    from ray.tune.schedulers import MedianStoppingRule

    from promptsweep.search._space import warm_start_params

    sched = spec.scheduler
    mode = "max" if spec.objective.resolved_direction == "maximize" else "min"
    if sched.name == "asha":
        if not plan.rungs:
            return None
        first = warm_start_params(spec)
        return FirstConfigGraceASHA(
            spared=first[0] if first else None,
            metric=spec.objective.metric,
            mode=mode,
            max_t=plan.max_steps,
            grace_period=plan.rungs[0],
            reduction_factor=plan.reduction_factor,
            stop_last_trials=False,
        )
    if sched.name == "median":
        return MedianStoppingRule(
            time_attr=STEP_KEY,
            metric=spec.objective.metric,
            mode=mode,
            grace_period=min(sched.grace_period_steps or plan.eval_every_steps, plan.max_steps),
            min_samples_required=3,
        )
    return None
