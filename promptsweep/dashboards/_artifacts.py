"""Ready a database's studies for optuna-dashboard: trial adapters as artifacts, objective names.

The search driver uploads each trial's adapter as an Optuna artifact **of that trial** before it tells
Optuna the trial ended (``promptsweep.search``); :func:`attach_adapter_artifacts` covers the trials that
finished without one (jobs run by an older promptsweep, an upload that failed, another artifact store),
and :func:`prepare_studies` also names every study's objectives, as ``promptsweep dashboard`` does
before it starts optuna-dashboard. The layout is ``promptsweep.storage.attach_trial_artifact``'s: one
zip per trial, ``trial-<number>-<variant>-adapter.zip``, listed on the trial (its *Artifacts* card).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from promptsweep._logging import get_logger
from promptsweep.exceptions import DataError
from promptsweep.methods import local_adapter_dir
from promptsweep.storage import artifact_name, attach_trial_artifact

if TYPE_CHECKING:
    from promptsweep.storage import Storage

_log = get_logger(__name__)


def attach_adapter_artifacts(storage: Storage, job_id: int, artifact_dir: str | os.PathLike[str]) -> int:
    """Attach each finished trial's adapter directory (zipped) as an artifact of its Optuna trial.

    Args:
        storage: the database holding the job and its Optuna study.
        job_id: the job's id.
        artifact_dir: an Optuna ``FileSystemArtifactStore`` directory; start optuna-dashboard with
            ``--artifact-dir`` pointing at it.

    Returns:
        How many adapters were attached now (0 when the study does not exist yet or all are attached;
        a file copied into ``artifact_dir`` for an attached one is not counted).

    Raises:
        JobNotFoundError: no job ``job_id``.
    """
    job = storage.get_job(job_id)
    try:
        study_id = storage.optuna_storage().get_study_id_from_name(job.study_name)
    except KeyError:
        return 0
    added = 0
    for trial in storage.list_trials(job_id):
        if not trial.adapter_dir or not trial.state.is_finished or trial.optuna_trial_id is None:
            continue
        try:
            adapter = local_adapter_dir(trial.adapter_dir)  # a bucket's adapter is fetched first
        except DataError as exc:
            _log.warning("trial %d: %s", trial.number, exc)
            continue
        if not (adapter / "adapter_config.json").is_file():
            continue
        name = artifact_name(trial.number, trial.variant)
        if attach_trial_artifact(storage, study_id, trial.optuna_trial_id, adapter, name, Path(artifact_dir)):
            added += 1
    if added:
        _log.info("attached %d adapter(s) of job %d to their trials", added, job_id)
    return added


def prepare_studies(
    storage: Storage, artifact_dir: str | os.PathLike[str], *, attach: bool = True
) -> tuple[int, int]:
    """Ready every job's study for optuna-dashboard: name its objectives (``accuracy``, not "Objective
    0"; ``Storage.name_study_metrics``) and, with ``attach``, attach the adapters of trials that lack
    theirs (:func:`attach_adapter_artifacts`). A job whose study cannot be prepared is logged and skipped.

    Returns:
        ``(studies named now, adapters attached now)``.
    """
    named = attached = 0
    for job in storage.list_jobs():
        try:
            named += int(storage.name_study_metrics(job.id))
            if attach:
                attached += attach_adapter_artifacts(storage, job.id, artifact_dir)
        except Exception as exc:  # one broken job must not keep the dashboard from starting
            _log.warning("job %d: its study was not prepared for the dashboard: %s", job.id, exc)
    return named, attached
