"""Export: a trained trial → a directory that plain PEFT loads, reproducing the recorded metric."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from promptsweep.cli import app
from promptsweep.exceptions import ExportError, TrialNotFoundError
from promptsweep.export import MARKER, export_adapter, export_zip, model_card
from promptsweep.storage import Storage
from tests.dashboards.seed import seed_job, tiny_peft_adapter

PARAMS = {
    "method": "p_tuning",
    "num_virtual_tokens": 4,
    "learning_rate": 0.01,
    "encoder_type": "LSTM",
    "encoder_hidden_size": 16,
    "encoder_dropout": 0.0,
    "encoder_num_layers": 1,
    "pooling": "mean",
}


def _train_recorded_trial(
    root: Path, model_dir: Path, data: Any, job_spec: dict[str, Any], *, max_steps: int
) -> tuple[Storage, int, Any, Any]:
    """Train one real PARAMS trial on ``data`` and record it as trial 0 of a job with ``job_spec`` in
    a real SQLite database under ``root``; returns (storage, job id, inputs, result)."""
    from promptsweep.methods import TaskType, TrainBudget, prepare_inputs, train_trial

    inputs = prepare_inputs(
        str(model_dir), data, TaskType.CLASSIFICATION, max_length=24, cache_dir=root / "cache"
    )
    result = train_trial(
        inputs,
        PARAMS,
        budget=TrainBudget(max_steps=max_steps, eval_every_steps=max_steps // 2, batch_size=8),
        output_dir=root / "trial-0",
        seed=0,
        device="cpu",
    )
    storage = Storage(f"sqlite:///{root / 'db.sqlite'}")
    job = storage.create_job(job_spec["name"], job_spec, objective_metric="accuracy", direction="maximize")
    storage.record_trial(
        job.id,
        0,
        params=PARAMS,
        state="complete",
        value=result.metrics["accuracy"],
        metrics=result.metrics,
        trainable_params=result.trainable_params,
        total_params=result.total_params,
        train_seconds=result.train_seconds,
        steps=result.steps,
        epochs=result.epochs,
        adapter_dir=str(result.adapter_dir),
    )
    return storage, job.id, inputs, result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real P-tuning (LSTM) trial on a tiny encoder, recorded in a real SQLite database."""
    from promptsweep.methods import DataSpec
    from promptsweep.methods.testing import make_tiny_model

    root = tmp_path_factory.mktemp("export")
    model_dir = make_tiny_model(root / "tiny-bert", "encoder")
    rows = ["text,label"]
    for i in range(40):
        rows.append(f"the food was great and tasty number {i},great")
        rows.append(f"awful stale bland food number {i},other")
    (root / "reviews.csv").write_text("\n".join(rows) + "\n")
    storage, job_id, inputs, result = _train_recorded_trial(
        root,
        model_dir,
        DataSpec(source=str(root / "reviews.csv"), text_column="text", label_column="label"),
        {"name": "tiny", "model": str(model_dir), "task": "classification"},
        max_steps=12,
    )
    return {"storage": storage, "job_id": job_id, "inputs": inputs, "result": result, "root": root}


def test_exported_adapter_reproduces_the_recorded_metric(trained: dict[str, Any], tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from promptsweep.methods import method_config_from_params
    from promptsweep.methods._data import load_split
    from promptsweep.methods._modeling import build_base_model
    from promptsweep.methods._train import _examples, evaluate_model

    storage, job_id, inputs, result = (
        trained["storage"],
        trained["job_id"],
        trained["inputs"],
        trained["result"],
    )
    out = export_adapter(storage, job_id, tmp_path / "best")
    names = {p.name for p in out.files}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "metrics.json", MARKER} <= names
    # plain PEFT: the frozen base (built as the trial built it) + PeftModel.from_pretrained(base, DIR)
    config = method_config_from_params(PARAMS, inputs.task)
    base = build_base_model(inputs, config, seed=0)
    model = PeftModel.from_pretrained(base, str(out.out_dir)).eval()
    examples = _examples(load_split(inputs, "validation"))
    metrics = evaluate_model(model, inputs, examples, batch_size=64, device=torch.device("cpu"))
    recorded = storage.get_trial(job_id, 0).metrics
    assert metrics["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)
    assert metrics["eval_loss"] == pytest.approx(recorded["eval_loss"], rel=1e-5)
    # the adapter matters: the bare frozen base (fresh head) scores a different loss
    bare = build_base_model(inputs, config, seed=1).eval()
    with torch.no_grad():
        batch = inputs_batch(inputs)
        assert not torch.allclose(bare(**batch).logits, model(**batch).logits)
    # the full prompt-encoder state (LSTM + MLP head of P-tuning) travels with it, for resuming training
    full = [p for p in out.files if p.suffix == ".safetensors" and p.name != "adapter_model.safetensors"]
    assert full, names
    assert any("lstm" in k for f in full for k in load_file(str(f)))
    # metrics.json and the model card carry the facts
    doc = json.loads((out.out_dir / "metrics.json").read_text())
    assert doc["params"] == PARAMS and doc["trainable_params"] == result.trainable_params
    assert doc["validation_metrics"]["accuracy"] == recorded["accuracy"]
    card = (out.out_dir / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and f"job {job_id} trial 0" in card
    assert f"{result.trainable_params:,}" in card and "encoder_type" in card
    assert doc["kept_step"] is None and "holds the state validated" not in card  # its last state
    kept = model_card({**doc, "kept_step": 6})  # an adapter that went back (TrainBudget.keep_best)
    assert (
        f"Training: {doc['steps']} steps" in kept
        and "The adapter holds the state validated at step 6" in kept
    )


def inputs_batch(inputs: Any) -> dict[str, Any]:
    from promptsweep.methods._data import load_split
    from promptsweep.methods._modeling import collate
    from promptsweep.methods._train import _examples

    examples = _examples(load_split(inputs, "validation"))[:8]
    batch = collate(examples, inputs.task, inputs.pad_token_id, with_targets=False)
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_peft_adapter(tmp_path_factory.mktemp("peft") / "adapter")


@pytest.fixture
def seeded(tmp_path: Path, adapter_dir: Path) -> tuple[Storage, int]:
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    return storage, seed_job(storage, adapter_dirs={1: adapter_dir, 2: adapter_dir})


def test_refuses_to_overwrite_without_force(seeded: tuple[Storage, int], tmp_path: Path) -> None:
    storage, job_id = seeded
    out = tmp_path / "out"
    first = export_adapter(storage, job_id, out)
    assert first.trial_number == 1  # the best trial
    with pytest.raises(ExportError, match="--force"):
        export_adapter(storage, job_id, out, trial_number=2)
    assert json.loads((out / "metrics.json").read_text())["trial_number"] == 1  # untouched
    again = export_adapter(storage, job_id, out, trial_number=2, force=True)
    assert json.loads((out / "metrics.json").read_text())["trial_number"] == 2 == again.trial_number
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left behind
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # as mkdir would make it, not mkdtemp's 0o700
    assert {p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()} == {0o666 & ~mask}


def test_force_never_replaces_a_foreign_directory(seeded: tuple[Storage, int], tmp_path: Path) -> None:
    storage, job_id = seeded
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(ExportError, match="not a promptsweep export"):
        export_adapter(storage, job_id, out, force=True)
    assert (out / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        export_adapter(storage, job_id, tmp_path / "file")


def test_refuses_to_write_outside_the_directory(
    seeded: tuple[Storage, int], tmp_path: Path, adapter_dir: Path
) -> None:
    storage, job_id = seeded
    # an adapter directory holding a symbolic link that points elsewhere is refused
    bad = tmp_path / "bad-adapter"
    bad.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (bad / name).write_bytes((adapter_dir / name).read_bytes())
    os.symlink(tmp_path / "elsewhere", bad / "escape")
    storage.record_trial(job_id, 0, adapter_dir=str(bad))
    with pytest.raises(ExportError, match="symbolic link"):
        export_adapter(storage, job_id, tmp_path / "out", trial_number=0)
    assert not (tmp_path / "out").exists()
    # the export target itself may not be a symbolic link
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(ExportError, match="symbolic link"):
        export_adapter(storage, job_id, tmp_path / "link")


def test_refuses_to_export_into_the_trial_itself(seeded: tuple[Storage, int], adapter_dir: Path) -> None:
    storage, job_id = seeded
    before = sorted(p.name for p in adapter_dir.iterdir())
    with pytest.raises(ExportError, match="overlaps"):
        export_adapter(storage, job_id, adapter_dir / "export")
    with pytest.raises(ExportError, match="overlaps"):
        export_adapter(storage, job_id, adapter_dir.parent, force=True)
    assert sorted(p.name for p in adapter_dir.iterdir()) == before


def test_unknown_trial_and_missing_adapter(seeded: tuple[Storage, int], tmp_path: Path) -> None:
    storage, job_id = seeded
    with pytest.raises(TrialNotFoundError):
        export_adapter(storage, job_id, tmp_path / "o", trial_number=9)
    with pytest.raises(ExportError, match="saved no adapter"):
        export_adapter(storage, job_id, tmp_path / "o", trial_number=3)
    empty = storage.create_job("empty", {"name": "empty"})
    with pytest.raises(ExportError, match="no finished trial"):
        export_adapter(storage, empty.id, tmp_path / "o")


def test_zip_and_cli(seeded: tuple[Storage, int], tmp_path: Path, adapter_dir: Path) -> None:
    import zipfile

    storage, job_id = seeded
    name, data = export_zip(storage, job_id)
    zip_path = tmp_path / name
    zip_path.write_bytes(data)
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.read("adapter_config.json") == (adapter_dir / "adapter_config.json").read_bytes()
    db = storage.url
    result = CliRunner().invoke(app, ["--db", db, "export", str(job_id), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "adapter_model.safetensors").is_file()
    result = CliRunner().invoke(app, ["--db", db, "export", str(job_id), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 1 and "--force" in result.output
    result = CliRunner().invoke(
        app, ["--db", db, "export", str(job_id), "--trial", "2", "--out", str(tmp_path / "cli"), "--force"]
    )
    assert result.exit_code == 0, result.output
    assert "trial 2" in result.output


def test_model_card_snippet_rebuilds_the_trials_splits(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card's code, run as printed, prepares the same validation split the trial was scored on
    (subsample, carve fraction and seed included) and so reproduces the recorded metric."""
    import re

    from promptsweep.methods import DataSpec, evaluate_adapter

    root = trained["root"]
    dataset = {
        "source": str(root / "reviews.csv"),
        "text_column": "text",
        "label_column": "label",
        "splits": {"train": "train", "validation": None, "test": None},
        "validation_fraction": 0.3,
        "max_train_examples": 40,
        "max_length": 24,
    }
    seed = 7
    data = DataSpec(
        source=dataset["source"],
        text_column="text",
        label_column="label",
        splits={"train": "train"},
        validation_fraction=0.3,
        max_train_examples=40,
        seed=seed,
    )
    monkeypatch.setenv("PROMPTSWEEP_CACHE_DIR", str(tmp_path / "card-cache"))  # the card's own cache
    model_dir = trained["storage"].get_job(trained["job_id"]).spec["model"]
    storage, job_id, inputs, result = _train_recorded_trial(
        tmp_path,
        Path(model_dir),
        data,
        {"name": "card", "model": model_dir, "task": "classification", "dataset": dataset, "seed": seed},
        max_steps=8,
    )
    out = export_adapter(storage, job_id, tmp_path / "export")
    card = (out.out_dir / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", card, re.S) if "prepare_inputs" in b)
    namespace: dict[str, Any] = {}
    exec(code.replace("path/to/this/directory", str(out.out_dir)), namespace)
    rebuilt = namespace["inputs"]
    assert rebuilt.counts == inputs.counts
    assert rebuilt.counts["validation"] != trained["inputs"].counts["validation"]  # the settings matter
    metrics = evaluate_adapter(rebuilt, out.out_dir, split="validation", device="cpu")
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-9)
    assert metrics["eval_loss"] == pytest.approx(result.metrics["eval_loss"], rel=1e-5)
