"""The HTML report: self-contained, with its tables and plots, from a real database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from promptsweep.dashboards import leaderboard_rows, write_report
from promptsweep.exceptions import JobNotFoundError
from promptsweep.storage import Storage
from tests.dashboards.seed import seed_job


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_report_holds_tables_and_plots(storage: Storage, tmp_path: Path) -> None:
    job_id = seed_job(storage)
    path = write_report(storage, job_id, tmp_path / "out" / "report.html")
    text = path.read_text()
    # readable without a server: plotly.js is inlined once, nothing is fetched from a CDN
    # method comparison, Pareto front, history, learning curves, importances
    assert text.count("Plotly.newPlot") == 5
    assert not re.search(r"<script[^>]*src=", text)
    assert len(re.findall(r"plotly\.js v\d", text)) == 1
    assert text.index("plotly.js v") < text.index("Plotly.newPlot")  # defined before the first plot
    for heading in (
        "Leaderboard",
        "Best trial per method",
        "Method comparison",
        "Pareto front",
        "Optimization history",
        "Learning curves",
        "Parameter importances",
    ):
        assert f"<h2>{heading}" in text, heading
    assert "Not available" not in text
    # pruned and failed trials are listed apart, with their last validation value and the error
    unranked = text.split("<h2>Stopped early and failed trials")[1].split("<h2>")[0]
    assert "0.6100" in unranked and "TrainingError: loss became nan" in unranked
    # the leaderboard's order is the storage's ranking: trial 1 (0.76) before 0 (0.72) before 2 (0.70)
    board = text.split("<h2>Leaderboard")[1].split("<h2>")[0]
    cells = re.findall(r"<tr><td[^>]*>(\d+)</td><td[^>]*>(\d+)</td>", board)
    assert cells == [("1", "1"), ("2", "0"), ("3", "2")]
    # the Pareto figure draws every variant with a finished value, and the front
    for name in ("prefix_tuning", "prompt_tuning", "p_tuning_lstm", "Pareto front"):
        assert f'"name":"{name}"' in text


def test_report_of_a_job_without_trials_says_so(storage: Storage, tmp_path: Path) -> None:
    job = storage.create_job("empty", {"name": "empty", "objective": {"metric": "accuracy"}})
    text = write_report(storage, job.id, tmp_path / "r.html").read_text()
    assert "No finished trials yet." in text
    assert "No Optuna study" in text
    assert "Plotly.newPlot" not in text


def test_report_unknown_job(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(JobNotFoundError, match="42"):
        write_report(storage, 42, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_rows_follow_the_storage_ranking(storage: Storage) -> None:
    job_id = seed_job(storage)
    rows = leaderboard_rows(storage, job_id)
    assert [(r["rank"], r["trial"], r["method"], r["accuracy"]) for r in rows] == [
        (1, 1, "prefix_tuning", 0.76),
        (2, 0, "prompt_tuning", 0.72),
        (3, 2, "p_tuning_lstm", 0.70),
    ]
    assert [r["trial"] for r in leaderboard_rows(storage, job_id, pareto=True)] == [0, 1]
    assert [r["method"] for r in leaderboard_rows(storage, job_id, per_method=True)] == [
        "prefix_tuning",
        "prompt_tuning",
        "p_tuning_lstm",
    ]
