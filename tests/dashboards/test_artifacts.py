"""Trial adapters attached to their Optuna trials, served by optuna-dashboard for download; the studies'
objective names."""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

from promptsweep.dashboards import (
    artifact_name,
    attach_adapter_artifacts,
    free_port,
    launch_dashboard,
    prepare_studies,
)
from promptsweep.storage import Storage, attach_trial_artifact, trial_artifacts
from tests.dashboards.seed import seed_job, tiny_peft_adapter


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_peft_adapter(tmp_path_factory.mktemp("peft") / "adapter")


def _ids(storage: Storage, job_id: int, number: int) -> tuple[int, int]:
    """(Optuna study id, Optuna trial id) of trial ``number`` of job ``job_id``."""
    ostorage = storage.optuna_storage()
    study_id = ostorage.get_study_id_from_name(storage.get_job(job_id).study_name)
    return study_id, ostorage.get_trial_id_from_study_id_trial_number(study_id, number)


def test_finished_trials_get_their_adapters_downloadable(tmp_path: Path, adapter_dir: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job_id = seed_job(storage, adapter_dirs={0: adapter_dir, 1: adapter_dir})
    store = tmp_path / "artifacts"
    assert attach_adapter_artifacts(storage, job_id, store) == 2
    assert attach_adapter_artifacts(storage, job_id, store) == 0  # idempotent
    assert len(list(store.iterdir())) == 2

    study_id, trial1 = _ids(storage, job_id, 1)
    assert set(trial_artifacts(storage, study_id, trial1)) == {artifact_name(1, "prefix_tuning")}
    assert set(trial_artifacts(storage, study_id, _ids(storage, job_id, 2)[1])) == set()
    # nothing on the study's own Artifacts tab
    attrs = storage.optuna_storage().get_study_system_attrs(study_id)
    assert not [k for k in attrs if k.startswith("artifacts:")]

    meta = trial_artifacts(storage, study_id, trial1)[artifact_name(1, "prefix_tuning")]
    with launch_dashboard(storage.url, port=free_port(), artifact_dir=store) as proc:
        proc.wait_ready(timeout_s=60)
        with urllib.request.urlopen(f"{proc.url}api/studies/{study_id}?after=0", timeout=10) as resp:
            shown = {t["number"]: t["artifacts"] for t in json.load(resp)["trials"]}
        assert [a["filename"] for a in shown[1]] == [artifact_name(1, "prefix_tuning")]
        url = f"{proc.url}artifacts/{study_id}/{trial1}/{meta['artifact_id']}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            data = resp.read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert (
            zf.read("adapter_model.safetensors") == (adapter_dir / "adapter_model.safetensors").read_bytes()
        )


def test_a_running_trial_gets_an_optuna_trial_artifact(tmp_path: Path, adapter_dir: Path) -> None:
    # What the search driver does before it tells Optuna the trial ended.
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job = storage.create_job("live", {"name": "live", "objective": {"metric": "accuracy"}})
    storage.create_study(job.id)
    study = optuna.load_study(study_name=job.study_name, storage=storage.optuna_storage())
    trial = study.ask()
    store = tmp_path / "artifacts"
    name = artifact_name(trial.number, "prompt_tuning")
    artifact_id = attach_trial_artifact(storage, study._study_id, trial._trial_id, adapter_dir, name, store)
    study.tell(trial, 0.5)
    frozen = study.trials[0]
    (meta,) = get_all_artifact_meta(frozen, storage=storage.optuna_storage())  # Optuna's own record
    assert (meta.artifact_id, meta.filename, meta.mimetype) == (artifact_id, name, "application/zip")
    with zipfile.ZipFile(store / artifact_id) as zf:
        assert "adapter_config.json" in zf.namelist()
    # finished now: attaching again changes nothing
    assert attach_trial_artifact(storage, study._study_id, trial._trial_id, adapter_dir, name, store) is None
    assert len(list(store.iterdir())) == 1


def test_a_rerun_trial_replaces_its_earlier_upload(tmp_path: Path, adapter_dir: Path) -> None:
    # A run killed between the upload and Optuna's tell: the re-run (same trial) uploads its own adapter.
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job = storage.create_job("live", {"name": "live", "objective": {"metric": "accuracy"}})
    storage.create_study(job.id)
    study = optuna.load_study(study_name=job.study_name, storage=storage.optuna_storage())
    trial = study.ask()
    store, name = tmp_path / "artifacts", artifact_name(0, "prompt_tuning")
    first = attach_trial_artifact(storage, study._study_id, trial._trial_id, adapter_dir, name, store)
    rerun = tiny_peft_adapter(tmp_path / "rerun", seed=1)
    assert attach_trial_artifact(storage, study._study_id, trial._trial_id, rerun, name, store) is None
    (meta,) = trial_artifacts(storage, study._study_id, trial._trial_id).values()
    assert meta["artifact_id"] == first and len(list(store.iterdir())) == 1
    with zipfile.ZipFile(store / first) as zf:
        assert zf.read("adapter_model.safetensors") == (rerun / "adapter_model.safetensors").read_bytes()


def test_another_store_gets_the_file_under_the_same_id(tmp_path: Path, adapter_dir: Path) -> None:
    # The driver uploaded to its store; a dashboard started with another --artifact-dir serves it too.
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job_id = seed_job(storage, adapter_dirs={0: adapter_dir})
    assert attach_adapter_artifacts(storage, job_id, tmp_path / "driver-store") == 1
    assert attach_adapter_artifacts(storage, job_id, tmp_path / "other-store") == 0  # not attached twice
    study_id, trial0 = _ids(storage, job_id, 0)
    (meta,) = trial_artifacts(storage, study_id, trial0).values()
    assert (tmp_path / "other-store" / meta["artifact_id"]).read_bytes() == (
        tmp_path / "driver-store" / meta["artifact_id"]
    ).read_bytes()


def test_adapters_attached_to_the_study_by_an_older_promptsweep_are_linked(
    tmp_path: Path, adapter_dir: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job_id = seed_job(storage, adapter_dirs={0: adapter_dir})
    study = optuna.load_study(study_name=storage.get_job(job_id).study_name, storage=storage.optuna_storage())
    store = tmp_path / "artifacts"
    store.mkdir()
    old = tmp_path / artifact_name(0, "prompt_tuning")
    old.write_bytes(b"an old zip")
    old_id = upload_artifact(
        artifact_store=FileSystemArtifactStore(store), file_path=str(old), study_or_trial=study
    )
    assert attach_adapter_artifacts(storage, job_id, store) == 1
    study_id, trial0 = _ids(storage, job_id, 0)
    assert trial_artifacts(storage, study_id, trial0)[old.name]["artifact_id"] == old_id  # no second copy
    assert len(list(store.iterdir())) == 1


def test_no_study_yet_attaches_nothing(tmp_path: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job = storage.create_job("fresh", {"name": "fresh"})
    assert attach_adapter_artifacts(storage, job.id, tmp_path / "a") == 0


def test_studies_get_their_objective_names(tmp_path: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    old = seed_job(storage, name="old", metric_names=False)  # stored before names were set
    new = seed_job(storage, name="new")  # Storage.create_study names them
    multi = storage.create_job(
        "multi", {"name": "multi", "objective": {"metric": "eval_loss", "secondary": "trainable_params"}}
    )
    storage.create_study(multi.id)
    storage.create_job("queued", {"name": "queued"})  # no study: left alone

    def names(job_id: int) -> list[str] | None:
        job = storage.get_job(job_id)
        return optuna.load_study(study_name=job.study_name, storage=storage.optuna_storage()).metric_names

    assert names(old) is None
    assert names(new) == ["accuracy"]
    assert names(multi.id) == ["eval_loss", "trainable_params"]
    assert prepare_studies(storage, tmp_path / "artifacts") == (1, 0)  # the old one only
    assert names(old) == ["accuracy"]
    assert prepare_studies(storage, tmp_path / "artifacts") == (0, 0)
