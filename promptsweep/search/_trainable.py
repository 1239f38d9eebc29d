"""The function Ray Tune runs for one trial, in a Ray worker process (imports torch through methods).

It trains one prompt-method config with :func:`promptsweep.methods.train_trial` on the job's
:class:`~promptsweep.methods.PreparedInputs` (prepared once by the driver and passed by value: only
paths and metadata), reporting the validation metrics to Tune every ``eval_every_steps`` training
steps (key ``step``; the scheduler's rungs count these steps). The last evaluation is reported once,
together with the trial's counts and :data:`DONE_KEY`, so the driver can tell a trial that ran its
whole budget (COMPLETE) from one the scheduler stopped (PRUNED). A trial that went back to an earlier
validated state (``TrainBudget.keep_best``) reports its last evaluation as it happened, then the final
result with the kept state's metrics at the kept step (its ``steps`` count all it trained).

No disk is assumed shared with the driver: the trial trains in Tune's working directory for it, on
the node that runs it, and hands its adapter to the driver as a Tune checkpoint of that final result
(Ray persists it to the run's ``storage_path``: the job directory on one machine, an NFS path or a
bucket on a cluster). Every result carries the node's id (:data:`NODE_KEY`). The job directory gets
the trial's pid and error text only where it is visible from the node (the driver's machine or a
shared disk): diagnostics, never needed by the driver.

The worker never opens the database: the driver is the only writer.
"""

from __future__ import annotations

import os
import shutil
import traceback
from pathlib import Path
from typing import Any

#: Set (to 1) in the final result of a trial that trained its whole budget.
DONE_KEY = "promptsweep_done"
#: The training-step key in every reported result (the scheduler's ``time_attr``).
STEP_KEY = "step"
#: Written in the trial directory when training raises: the traceback (last 8,000 characters).
ERROR_FILE = "error.txt"
#: In the final result of a trial whose training raised: the error's last lines. Reported instead of
#: raising, so that Tune does not retry it (``max_failures`` is for a process that died).
ERROR_KEY = "promptsweep_error"
#: The config keys a Ray trial carries.
PARAMS_KEY = "params"
NUMBER_KEY = "trial_number"
#: Written in the trial directory when the trial starts: the process id of the Ray worker running it.
PID_FILE = "pid"
#: In every result: the Ray node id of the node running the trial.
NODE_KEY = "promptsweep_node_id"


def trial_dir(job_dir: str | Path, number: int) -> Path:
    """The output directory of trial ``number`` (adapter under ``adapter/``)."""
    return Path(job_dir) / "trials" / f"trial-{number:04d}"


def run_trial(
    config: dict[str, Any],
    *,
    inputs: Any,
    budget: Any,
    job_dir: str,
    seed: int,
    total_steps: int,
    torch_threads: int | None = None,
) -> None:
    """Train one trial and report to Ray Tune (the Tune function trainable).

    Args:
        config: ``{"params": <flat trial params>, "trial_number": <Optuna trial number>}``.
        inputs: the job's ``PreparedInputs``.
        budget: the job's ``TrainBudget``.
        job_dir: the job's directory on the driver's machine; where it is visible from this node, the
            trial's pid (and error text) go to ``trials/trial-NNNN/`` there. The adapter goes to the
            driver as the final result's checkpoint.
        seed: the job seed; the trial trains with ``seed + trial_number``.
        total_steps: the step at which the trial's budget ends (its last evaluation is held back
            and reported with the final result).
        torch_threads: intra-op threads for torch (default: Ray's CPU share of the trial).

    A Python exception from training (``TrainingError`` on a NaN/inf loss, an invalid config, a data
    error) is not raised: the trial ends with a result carrying :data:`ERROR_KEY` (the traceback's
    last lines) and the driver records it FAIL at once. Tune retries (``max_failures``) only a trial
    whose process died: killed, out of memory, or its node lost.
    """
    import torch
    from ray import tune

    from promptsweep.methods import train_trial

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    number = int(config[NUMBER_KEY])
    params = dict(config[PARAMS_KEY])
    # Tune runs each trial in its own working directory on the node (RAY_CHDIR_TO_TRIAL_DIR); the
    # subdirectory, named by the Tune trial id too, keeps trials apart where a user turned that off.
    out = Path.cwd() / f"trial-{number:04d}-{tune.get_context().get_trial_id()}"
    if out.exists():  # a re-run of an interrupted trial starts clean
        shutil.rmtree(out)
    out.mkdir(parents=True)
    seen = trial_dir(job_dir, number) if Path(job_dir).is_dir() else None
    if seen is not None:  # the job directory is visible from this node: leave the diagnostics there
        if seen.exists():
            shutil.rmtree(seen, ignore_errors=True)
        seen.mkdir(parents=True, exist_ok=True)
        (seen / PID_FILE).write_text(str(os.getpid()), encoding="utf-8")  # whoever must kill it (chaos)
    where = node_info()
    last_step = 0
    held: dict[str, Any] | None = None  # the latest validation not yet reported

    def report(step: int, metrics: dict[str, float]) -> None:
        nonlocal last_step, held
        last_step = max(last_step, int(step))
        result = {STEP_KEY: int(step), **where, **{k: float(v) for k, v in metrics.items()}}
        if budget.step_time_s is not None:
            # A trial re-sized to its time share knows its last validation only once it has run:
            # each validation goes out when the next one comes, the last with the final result.
            if held is not None:
                tune.report(held)
            held = result
        elif step >= total_steps or budget.past_deadline():
            # The final evaluation (the budget's end, or the job's wall-clock cap) goes out with the
            # final result below, so that the scheduler never stops a trial at its last evaluation.
            held = result
        else:
            tune.report(result)

    try:
        result = train_trial(inputs, params, budget=budget, output_dir=out, seed=seed + number, report=report)
    except Exception as exc:
        if held is not None and budget.step_time_s is not None:
            tune.report(held)  # a time share's last validation before the error
        # The driver copies the reason into the Optuna study (user attr "error") and our tables.
        text = "".join(traceback.format_exception(exc))
        if seen is not None:
            (seen / ERROR_FILE).write_text(text[-8000:], encoding="utf-8")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        tune.report({STEP_KEY: last_step, **where, ERROR_KEY: "\n".join(lines[-12:])[-2000:]})
        shutil.rmtree(out, ignore_errors=True)
        return
    kept = result.kept_step  # the trial went back to the state validated at this step (keep_best)
    if kept is not None and held is not None and budget.step_time_s is not None:
        # its last validation, as it happened (no scheduler judges a time share: a plan without
        # screening has none); the final result is the kept state's, at the kept step
        tune.report(held)
    final: dict[str, Any] = {STEP_KEY: int(kept or max(result.steps, 1)), DONE_KEY: 1, **where}
    final.update({k: float(v) for k, v in result.metrics.items()})
    final.update(
        trainable_params=int(result.trainable_params),
        total_params=int(result.total_params),
        train_seconds=float(result.train_seconds),
        examples_per_second=float(result.examples_per_second),
        peak_memory_bytes=int(result.peak_memory_bytes or 0),
        steps=int(result.steps),
        epochs=float(result.epochs),
    )
    if not result.adapter_dir:
        tune.report(final)
    else:  # the adapter travels to the driver as this result's checkpoint
        try:
            tune.report(final, checkpoint=tune.Checkpoint.from_directory(str(result.adapter_dir)))
        except Exception as exc:  # the run's storage is out of reach: FAIL now, with the reason
            why = f"the adapter could not be saved to the run's storage (ray_storage_path): {exc}"
            tune.report({STEP_KEY: int(max(result.steps, 1)), **where, ERROR_KEY: why[-2000:]})
    # `report` persisted the checkpoint before it returned: the node keeps no copy (a trial the
    # scheduler stops at this result ends inside `report`, and Ray's session dir keeps its copy).
    shutil.rmtree(out, ignore_errors=True)


def node_info() -> dict[str, str]:
    """The Ray node id of this process (the result key :data:`NODE_KEY`)."""
    import ray

    return {NODE_KEY: str(ray.get_runtime_context().get_node_id())}
