"""End to end on the real packaged model (all-MiniLM-L6-v2) and real data (Fine Foods), tiny budgets:
``promptsweep run`` in a subprocess, then the read commands on its database; and the demo driver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from promptsweep.storage import Storage

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent

TINY_SPEC = """
name: tiny-e2e
model: minilm
task: classification
dataset:
  source: fine-foods
  text_column: review
  label_column: score
  max_train_examples: 64
  max_eval_examples: 48
  max_length: 32
budget: {{num_trials: 2, max_steps: 8, eval_every_steps: 4, batch_size: 8}}
space:
  methods: [prompt_tuning, p_tuning]
  num_virtual_tokens: {{low: 2, high: 4}}
  pooling: [mean]
scheduler: {{name: none}}
resources: {{cpus_per_trial: 1, max_concurrent_trials: 1, num_cpus: 2}}
output_dir: {runs}
"""


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promptsweep", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_run_end_to_end(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC.format(runs=tmp_path / "runs"))
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    out = _cli("--db", db, "run", str(spec), "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "leaderboard" in out.stdout and "selected trial" in out.stdout

    storage = Storage(db)
    (job,) = storage.list_jobs()
    assert job.status.value == "succeeded"
    trials = storage.list_trials(job.id)
    assert [t.state.value for t in trials] == ["complete", "complete"]
    assert {t.method for t in trials} == {"prompt_tuning", "p_tuning"}  # warm start: each method's default
    for t in trials:
        assert 0.0 <= t.metrics["accuracy"] <= 1.0 and t.value == t.metrics["accuracy"]
        assert 0 < t.trainable_params < t.total_params
        assert Path(t.adapter_dir, "adapter_config.json").is_file()
        assert [r.step for r in storage.list_intermediate(job.id, t.number)] == [4, 8]
    # the selected trial (the finalists re-scored on the whole validation split, which may reorder the
    # leaderboard's subsample ranking) and only it carries test metrics
    selected = storage.get_job(job.id).summary["selected_trial"]
    assert [t.number for t in trials if t.test_metrics] == [selected]
    best = next(t for t in trials if t.number == selected)
    assert set(best.test_metrics) >= {"accuracy", "macro_f1"}
    # the Optuna study in the same database agrees with promptsweep's records
    study = optuna.load_study(study_name=job.study_name, storage=storage.optuna_storage())
    assert sorted((t.number, t.value) for t in study.trials) == sorted((t.number, t.value) for t in trials)

    # the read commands on what the run wrote
    board = json.loads(_cli("--db", db, "leaderboard", str(job.id), "--json").stdout)
    assert [r["trial"] for r in board] == [t.number for t in storage.leaderboard(job.id)]
    exported = _cli("--db", db, "export", str(job.id), "--out", str(tmp_path / "best"))
    assert exported.returncode == 0, exported.stderr
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert metrics["trial_number"] == best.number and metrics["test_metrics"] == best.test_metrics
    report = _cli("--db", db, "report", str(job.id), "--out", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    # the report's figures, as tests/dashboards/test_report.py names them
    assert (tmp_path / "report.html").read_text().count("Plotly.newPlot") == 5


def test_demo_driver(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC.format(runs=tmp_path / "ignored"))
    out_dir = tmp_path / "demo-out"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "promptsweep.demo",
            "--out",
            str(out_dir),
            "--spec",
            str(spec),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["states"]["complete"] == 2
    # the export was reloaded and scored on the whole Fine Foods test split (1,000 reviews, 0.658 "other")
    assert summary["full_test_examples"] == 1000
    assert summary["full_test_majority"] == pytest.approx(0.658)
    assert 0.0 <= summary["full_test"]["accuracy"] <= 1.0
    assert (out_dir / "best-adapter" / "adapter_model.safetensors").is_file()
    assert (out_dir / "report.html").stat().st_size > 1_000_000  # plotly.js inlined
    assert Path(summary["export_dir"]).parent == out_dir
    assert (out_dir / "runs").is_dir()  # trial outputs live under --out
    assert "optuna-dashboard" in out.stdout and "majority-class baseline" in out.stdout
