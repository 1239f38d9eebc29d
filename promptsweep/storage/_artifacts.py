"""Trial adapters as Optuna artifacts of their trials (what optuna-dashboard offers on each trial).

Two writers, one layout:

- the search driver, while a trial is still RUNNING in Optuna (just before it tells Optuna the trial
  ended): ``optuna.artifacts.upload_artifact(study_or_trial=<the trial>)``, which records the
  artifact in the trial's system attributes (``artifacts:<id>``);
- ``promptsweep dashboard``, for trials that finished without one (an older promptsweep, a failed
  upload, another artifact store): Optuna refuses attributes on finished trials
  (``UpdateFinishedTrialError``), so the meta goes into the study's system attributes under
  optuna-dashboard's per-trial key ``dashboard:artifacts:<trial id>:<artifact id>`` (what its own
  upload button wrote before Optuna had trial artifacts; it still lists these on the trial).

Each artifact is one zip, ``trial-<number>-<variant>-adapter.zip``, in an Optuna
``FileSystemArtifactStore`` folder (:func:`default_artifact_dir`). Attaching is idempotent: a trial
that already lists that file name is skipped, and its file is copied into the given store under the
same artifact id when that store lacks it (a dashboard started with another ``--artifact-dir`` than
the driver used).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptsweep._logging import get_logger

if TYPE_CHECKING:
    from promptsweep.storage._storage import Storage

_log = get_logger(__name__)

#: optuna.artifacts._upload.ARTIFACTS_ATTR_PREFIX (trial and study system attributes).
ARTIFACTS_ATTR_PREFIX = "artifacts:"
#: optuna_dashboard.artifact._backend.DASHBOARD_ARTIFACTS_ATTR_PREFIX: a study system attribute
#: ``<prefix><trial id>:<artifact id>`` is listed on that trial by optuna-dashboard.
DASHBOARD_ARTIFACTS_ATTR_PREFIX = "dashboard:artifacts:"
ADAPTER_MIMETYPE = "application/zip"


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


def _meta(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


def trial_artifacts(storage: Storage, study_id: int, trial_id: int) -> dict[str, dict[str, Any]]:
    """The artifacts optuna-dashboard lists on Optuna trial ``trial_id`` of study ``study_id``: file name
    -> meta (``artifact_id``, ``filename``, ``mimetype``, ``encoding``), from both places (see the
    module)."""
    ostorage = storage.optuna_storage()
    found: dict[str, dict[str, Any]] = {}
    prefix = f"{DASHBOARD_ARTIFACTS_ATTR_PREFIX}{trial_id}:"
    for key, value in ostorage.get_study_system_attrs(study_id).items():
        if key.startswith(prefix):
            meta = _meta(value)
            found[meta["filename"]] = meta
    for key, value in ostorage.get_trial_system_attrs(trial_id).items():
        if key.startswith(ARTIFACTS_ATTR_PREFIX):
            meta = _meta(value)
            found[meta["filename"]] = meta
    return found


def study_artifacts(storage: Storage, study_id: int) -> dict[str, dict[str, Any]]:
    """The study-level artifacts (its *Artifacts* tab): file name -> meta. Earlier promptsweep
    versions attached trial adapters here."""
    attrs = storage.optuna_storage().get_study_system_attrs(study_id)
    metas = [_meta(v) for k, v in attrs.items() if k.startswith(ARTIFACTS_ATTR_PREFIX)]
    return {m["filename"]: m for m in metas}


def _zip_dir(src: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file() and not path.is_symlink():
                zf.write(path, arcname=path.relative_to(src).as_posix())


def _store_has(store: Any, artifact_id: str) -> bool:
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        store.open_reader(artifact_id).close()
    except ArtifactNotFound:
        return False
    return True


def attach_trial_artifact(
    storage: Storage,
    study_id: int,
    trial_id: int,
    folder: str | os.PathLike[str],
    name: str,
    artifact_dir: str | os.PathLike[str],
) -> str | None:
    """Zip ``folder`` as artifact ``name`` of Optuna trial ``trial_id`` (of study ``study_id``), stored
    in ``artifact_dir``.

    A RUNNING trial gets it through ``optuna.artifacts.upload_artifact``; a finished one through
    optuna-dashboard's per-trial study attribute (see the module). When the trial already lists
    ``name``, nothing is attached again: its file is copied into ``artifact_dir`` when missing there
    (replaced, for a trial still RUNNING: a re-run's adapter).
    When the study lists ``name`` itself (promptsweep before trial artifacts), the trial is linked to
    that same stored file.

    Returns:
        The new artifact's id, or ``None`` when the trial already had it.
    """
    import optuna
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    ostorage = storage.optuna_storage()
    store_dir = Path(artifact_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(store_dir))
    with tempfile.TemporaryDirectory(prefix="promptsweep-artifact-") as tmp:
        zip_path = Path(tmp) / name
        existing = trial_artifacts(storage, study_id, trial_id).get(name)
        frozen = ostorage.get_trial(trial_id)
        running = not frozen.state.is_finished()
        if existing is not None:
            # A RUNNING trial that lists it was re-run (its earlier run was killed after the upload):
            # its new adapter replaces the file. A finished one keeps its file; a store without it
            # gets a copy.
            if running or not _store_has(store, existing["artifact_id"]):
                _zip_dir(Path(folder), zip_path)
                with zip_path.open("rb") as handle:
                    store.write(existing["artifact_id"], handle)
            return None
        if running:
            _zip_dir(Path(folder), zip_path)
            try:
                return upload_artifact(
                    artifact_store=store,
                    file_path=str(zip_path),
                    study_or_trial=frozen,
                    storage=ostorage,
                    mimetype=ADAPTER_MIMETYPE,
                )
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it finished meanwhile: attached the other way below
        meta = study_artifacts(storage, study_id).get(name)
        if meta is None or not _store_has(store, meta["artifact_id"]):
            if not zip_path.is_file():
                _zip_dir(Path(folder), zip_path)
            meta = {"artifact_id": str(uuid.uuid4()), "filename": name, "mimetype": ADAPTER_MIMETYPE}
            meta["encoding"] = None  # the keys optuna.artifacts.ArtifactMeta has
            with zip_path.open("rb") as handle:
                store.write(meta["artifact_id"], handle)
        key = f"{DASHBOARD_ARTIFACTS_ATTR_PREFIX}{trial_id}:{meta['artifact_id']}"
        ostorage.set_study_system_attr(study_id, key, json.dumps(meta))
        return str(meta["artifact_id"])
