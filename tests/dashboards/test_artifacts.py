"""Trial adapters attached to the job's Optuna study, served by optuna-dashboard for download."""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from pathlib import Path

import pytest

from promptsweep.dashboards import artifact_name, attach_adapter_artifacts, free_port, launch_dashboard
from promptsweep.storage import Storage
from tests.dashboards.seed import seed_job, tiny_peft_adapter


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_peft_adapter(tmp_path_factory.mktemp("peft") / "adapter")


def test_adapters_become_downloadable_study_artifacts(tmp_path: Path, adapter_dir: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job_id = seed_job(storage, adapter_dirs={0: adapter_dir, 1: adapter_dir})
    store = tmp_path / "artifacts"
    assert attach_adapter_artifacts(storage, job_id, store) == 2
    assert attach_adapter_artifacts(storage, job_id, store) == 0  # idempotent

    ostorage = storage.optuna_storage()
    study_id = ostorage.get_study_id_from_name(storage.get_job(job_id).study_name)
    attrs = ostorage.get_study_system_attrs(study_id)
    artifacts = {
        meta["filename"]: meta["artifact_id"]
        for key, value in attrs.items()
        if key.startswith("artifacts:")
        for meta in [json.loads(value) if isinstance(value, str) else value]
    }
    assert set(artifacts) == {artifact_name(0, "prompt_tuning"), artifact_name(1, "prefix_tuning")}

    with launch_dashboard(storage.url, port=free_port(), artifact_dir=store) as proc:
        proc.wait_ready(timeout_s=60)
        url = f"{proc.url}artifacts/{study_id}/{artifacts[artifact_name(1, 'prefix_tuning')]}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            data = resp.read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert (
            zf.read("adapter_model.safetensors") == (adapter_dir / "adapter_model.safetensors").read_bytes()
        )


def test_no_study_yet_attaches_nothing(tmp_path: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    job = storage.create_job("fresh", {"name": "fresh"})
    assert attach_adapter_artifacts(storage, job.id, tmp_path / "a") == 0
