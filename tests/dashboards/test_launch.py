"""optuna-dashboard started by promptsweep answers on a free loopback port, shows the study, and stops."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import optuna
import pytest

from promptsweep.dashboards import dashboard_command, free_port, launch_dashboard
from promptsweep.exceptions import PromptsweepError


def test_dashboard_serves_the_database_and_stops(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = optuna.create_study(study_name="promptsweep-job-1", storage=url, direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"num_virtual_tokens": 8},
            distributions={"num_virtual_tokens": optuna.distributions.IntDistribution(1, 64)},
            value=0.7,
        )
    )
    port = free_port()
    proc = launch_dashboard(url, port=port, artifact_dir=tmp_path / "artifacts")
    try:
        proc.wait_ready(timeout_s=60)
        assert proc.url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(proc.url, timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"{proc.url}api/studies", timeout=5) as resp:
            studies = json.load(resp)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["promptsweep-job-1"]
    finally:
        proc.stop()
    assert proc.process.poll() is not None  # the child is gone
    with pytest.raises(OSError):
        urllib.request.urlopen(proc.url, timeout=2)


def test_dashboard_binds_loopback_by_default() -> None:
    cmd = dashboard_command("sqlite:///x.db", port=1234)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "1234"


def test_dashboard_failure_is_reported(tmp_path: Path) -> None:
    # A URL optuna cannot open: the child exits and wait_ready says so instead of hanging.
    proc = launch_dashboard("nosuchdialect://nowhere", port=free_port())
    try:
        with pytest.raises(PromptsweepError, match="exited with code"):
            proc.wait_ready(timeout_s=60)
    finally:
        proc.stop()
