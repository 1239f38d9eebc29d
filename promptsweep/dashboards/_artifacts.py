"""Attach trial adapters to a job's Optuna study as artifacts, so optuna-dashboard offers them.

Optuna refuses to add attributes to a finished trial (``UpdateFinishedTrialError``), and promptsweep
trials finish under Ray Tune's ``OptunaSearch`` before anyone else can touch them; so each adapter is
attached to the job's **study**, as one zip per trial named ``trial-<number>-<variant>-adapter.zip``
(optuna-dashboard lists study artifacts in the study's "Artifacts" tab). Attaching is idempotent:
a trial whose zip is already attached is skipped.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from promptsweep._logging import get_logger
from promptsweep.exceptions import DataError
from promptsweep.methods import local_adapter_dir

if TYPE_CHECKING:
    from promptsweep.storage import Storage

_log = get_logger(__name__)

_ARTIFACTS_ATTR_PREFIX = "artifacts:"  # optuna.artifacts._upload.ARTIFACTS_ATTR_PREFIX


def default_artifact_dir(storage: Storage | None = None) -> Path:
    """Return the Optuna artifact store for trial adapters (created).

    ``$PROMPTSWEEP_ARTIFACT_DIR`` when set; else, for a SQLite database, the ``artifacts`` folder beside
    its file (so each database keeps its own adapters, e.g. ``demo-out/artifacts`` for the demo's);
    else (PostgreSQL, no storage given) ``$PROMPTSWEEP_HOME/artifacts``.
    """
    from promptsweep.paths import home_dir

    env = os.environ.get("PROMPTSWEEP_ARTIFACT_DIR")
    db_file = storage.sqlite_file if storage is not None else None
    if env:
        path = Path(env).expanduser()
    elif db_file is not None:
        path = Path(db_file).parent / "artifacts"
    else:
        path = home_dir() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_name(number: int, variant: str | None) -> str:
    """The artifact file name of trial ``number``'s adapter zip."""
    return f"trial-{number}-{variant or 'adapter'}-adapter.zip"


def _zip_dir(src: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file() and not path.is_symlink():
                zf.write(path, arcname=path.relative_to(src).as_posix())


def attach_adapter_artifacts(storage: Storage, job_id: int, artifact_dir: str | os.PathLike[str]) -> int:
    """Upload each finished trial's adapter directory (zipped) as an artifact of the job's Optuna study.

    Args:
        storage: the database holding the job and its Optuna study.
        job_id: the job's id.
        artifact_dir: an Optuna ``FileSystemArtifactStore`` directory; start optuna-dashboard with
            ``--artifact-dir`` pointing at it.

    Returns:
        How many adapters were attached now (0 when the study does not exist yet or all are attached).

    Raises:
        JobNotFoundError: no job ``job_id``.
    """
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact
    from optuna.study import Study

    job = storage.get_job(job_id)
    ostorage = storage.optuna_storage()
    try:
        study_id = ostorage.get_study_id_from_name(job.study_name)
    except KeyError:
        return 0
    study = Study(study_name=job.study_name, storage=ostorage)
    attached = {
        json.loads(value)["filename"] if isinstance(value, str) else value["filename"]
        for key, value in ostorage.get_study_system_attrs(study_id).items()
        if key.startswith(_ARTIFACTS_ATTR_PREFIX)
    }
    store_dir = Path(artifact_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(store_dir))
    added = 0
    for trial in storage.list_trials(job_id):
        if not trial.adapter_dir or not trial.state.is_finished:
            continue
        name = artifact_name(trial.number, trial.variant)
        if name in attached:
            continue
        try:
            adapter = local_adapter_dir(trial.adapter_dir)  # a bucket's adapter is fetched first
        except DataError as exc:
            _log.warning("trial %d: %s", trial.number, exc)
            continue
        if not (adapter / "adapter_config.json").is_file():
            continue
        with tempfile.TemporaryDirectory(prefix="promptsweep-artifact-") as tmp:
            zip_path = Path(tmp) / name
            _zip_dir(adapter, zip_path)
            upload_artifact(
                artifact_store=store,
                file_path=str(zip_path),
                study_or_trial=study,
                mimetype="application/zip",
            )
        added += 1
    if added:
        _log.info("attached %d adapter(s) of job %d to study %s", added, job_id, job.study_name)
    return added
