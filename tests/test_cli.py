"""The ``promptsweep`` CLI through typer's runner, on a real SQLite database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from promptsweep._imports import HEAVY_MODULES
from promptsweep.cli import app
from promptsweep.storage import HEAD_REVISION, Storage
from tests.dashboards.seed import seed_job

runner = CliRunner()
EXAMPLE = Path(__file__).parent.parent / "examples" / "fine-foods-minilm.yaml"

COMMANDS = (
    "run",
    "submit",
    "worker",
    "jobs",
    "show",
    "leaderboard",
    "export",
    "report",
    "dashboard",
    "serve",
    "db",
    "cancel",
    "stop",
    "pause",
    "resume",
    "extend",
    "retry",
)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db.sqlite'}"


@pytest.fixture
def seeded(db: str) -> tuple[str, int]:
    return db, seed_job(Storage(db))


def _run(args: tuple[str, ...], env: dict[str, str] | None) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit code and what the user sees (stdout and stderr, where log records go)."""
    result = _run(args, env)
    return result.exit_code, result.output


def invoke_json(*args: str, env: dict[str, str] | None = None) -> Any:
    """A ``--json`` command's stdout, parsed (a log record on stderr must not break a script's parse)."""
    result = _run(args, env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_help_lists_every_command() -> None:
    code, out = invoke("--help")
    assert code == 0
    for name in COMMANDS:
        assert name in out, name
    assert "PROMPTSWEEP_DB" in out


def test_jobs_reads_the_db_option_and_the_environment(seeded: tuple[str, int], tmp_path: Path) -> None:
    db, job_id = seeded
    (job,) = invoke_json("--db", db, "jobs", "--json")
    assert (job["id"], job["status"], job["trials"], job["complete"], job["best"]) == (
        job_id,
        "succeeded",
        5,
        3,
        0.76,
    )
    # the environment variable names the same database; --db beats it
    assert invoke_json("jobs", "--json", env={"PROMPTSWEEP_DB": db})[0]["id"] == job_id
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    Storage(other)
    assert invoke_json("--db", other, "jobs", "--json", env={"PROMPTSWEEP_DB": db}) == []


def test_jobs_table(seeded: tuple[str, int]) -> None:
    db, _ = seeded
    code, out = invoke("--db", db, "jobs")
    assert code == 0, out
    assert "seeded" in out and "succeeded" in out and "prefix_tuning" in out


def test_leaderboard_views(seeded: tuple[str, int]) -> None:
    db, job_id = seeded
    board = invoke_json("--db", db, "leaderboard", str(job_id), "--json")
    assert [(r["rank"], r["trial"], r["accuracy"]) for r in board] == [
        (1, 1, 0.76),
        (2, 0, 0.72),
        (3, 2, 0.70),
    ]
    board = invoke_json("--db", db, "leaderboard", str(job_id), "--per-method", "--json")
    assert [r["method"] for r in board] == ["prefix_tuning", "prompt_tuning", "p_tuning_lstm"]
    board = invoke_json("--db", db, "leaderboard", str(job_id), "--pareto", "--json")
    assert [(r["trial"], r["trainable_params"]) for r in board] == [(0, 3_840), (1, 73_728)]
    code, out = invoke("--db", db, "leaderboard", str(job_id), "--limit", "1")
    assert code == 0 and "Pareto" not in out and "0.7600" in out and "0.7200" not in out
    code, out = invoke("--db", db, "leaderboard", str(job_id), "--per-method", "--pareto")
    assert code != 0 and "not both" in out


def test_show_prints_status_counts_and_leaderboard(seeded: tuple[str, int]) -> None:
    db, job_id = seeded
    code, out = invoke("--db", db, "show", str(job_id))
    assert code == 0, out
    assert "succeeded" in out and "accuracy (maximize)" in out
    assert "leaderboard (top 3)" in out and "p_tuning_lstm" in out
    assert "stopped early or failed (2" in out and "0.6100" in out and "loss became nan" in out


def test_show_prints_the_plan_floors_finalists_and_warnings(seeded: tuple[str, int], tmp_path: Path) -> None:
    from promptsweep.search import parse_spec
    from promptsweep.search._planning import Costs, plan_search

    db, job_id = seeded
    plan = plan_search(
        parse_spec(
            {"name": "p", "budget": {"time_budget_s": 300}, "resources": {"max_concurrent_trials": 2}}
        ),
        train_examples=1000,
        eval_examples=300,
        costs=Costs(step_s=0.5, eval_example_s=0.01, setup_s=3.0, precision="bf16"),
    )
    finalist = {
        "number": 1,
        "variant": "prefix_tuning",
        "subsample": 0.76,
        "subsample_n": 300,
        "subsample_se": 0.0247,
        "value": 0.79,
        "n": 800,
        "se": 0.0144,
    }
    Storage(db).update_job_summary(
        job_id,
        plan=plan.to_dict(),
        floors={"majority": {"accuracy": 0.65}, "head_only": {"accuracy": 0.8}},
        finalists=[finalist],
        selected_trial=1,
        floor_warning="the selected trial's validation accuracy 0.7600 does not beat the floor(s) head_only",
        floor_separation="the selected trial's validation accuracy 0.7600 +/- 0.0247 (n=300) is not "
        "separated from the floor(s) majority 0.6500",
        kept_state="trial 1 ends in its state validated at step 315",
    )
    code, out = invoke("--db", db, "show", str(job_id))
    assert code == 0, out
    assert f"plan: {plan.configs} configs" in out and f"to {plan.max_steps} steps" in out
    assert "expected" in out and "0.50 s/step" in out and "planned from the budget: configs" in out
    assert "floors (validation accuracy): majority 0.6500, head_only 0.8000" in out
    assert "0.7600 +/- 0.0247 (n=300) -> 0.7900 +/- 0.0144 (n=800)" in out
    assert "selected: trial 1" in out and "does not beat the floor(s) head_only" in out
    assert "not separated from the floor(s) majority" in out
    assert "trial 1 ends in its state validated at step 315" in out
    # and the report shows the same decisions
    code, _ = invoke("--db", db, "report", str(job_id), "--out", str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    assert code == 0 and "Budget plan" in html and "Floors (validation)" in html and "Finalists" in html
    assert "does not beat the floor" in html and "not separated from the floor(s) majority" in html
    assert "trial 1 ends in its state validated at step 315" in html


@pytest.mark.parametrize(
    "args",
    [
        ["show", "99"],
        ["leaderboard", "99"],
        ["report", "99", "--out", "r.html"],
        ["cancel", "99"],
        ["stop", "99"],
        ["pause", "99"],
        ["resume", "99"],
        ["extend", "99", "--trials", "2"],
        ["retry", "99"],
    ],
)
def test_unknown_job_is_one_clear_error(db: str, args: list[str], tmp_path: Path) -> None:
    Storage(db)  # an existing, empty database
    code, out = invoke("--db", db, *args)
    assert code == 1
    assert "error:" in out and "no job with id 99" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    "args", [["jobs"], ["show", "1"], ["leaderboard", "1"], ["report", "1", "--out", "r.html"]]
)
def test_read_only_commands_never_create_a_database(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = invoke("--db", "sqlite:///typo.db", *args)
    assert code == 1
    assert "no database at" in out and str(tmp_path / "typo.db") in out.replace("\n", "")
    assert not (tmp_path / "typo.db").exists()


def test_report_command_writes_the_file(seeded: tuple[str, int], tmp_path: Path) -> None:
    db, job_id = seeded
    out_file = tmp_path / "sub" / "report.html"
    code, out = invoke("--db", db, "report", str(job_id), "--out", str(out_file))
    assert code == 0, out
    text = out_file.read_text()
    assert text.count("Plotly.newPlot") == 5 and "Method comparison" in text  # as in test_report.py


def test_db_upgrade_creates_and_reports_the_schema(db: str) -> None:
    code, out = invoke("--db", db, "db", "upgrade")
    assert code == 0, out
    assert HEAD_REVISION in out
    assert Storage(db).schema_revision() == HEAD_REVISION
    code, out = invoke("--db", db, "db", "upgrade")
    assert code == 0 and "already at schema revision" in out


def test_bad_database_url_is_one_clear_error() -> None:
    code, out = invoke("--db", "nosuchdialect://x/y", "jobs")
    assert code == 1 and "error:" in out and "Traceback" not in out


def test_worker_without_a_reachable_database_names_the_url_with_its_password_masked() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://ps:s3cret-pw@127.0.0.1:{port}/promptsweep"
    code, out = invoke("--db", url, "worker", "--once")
    assert code == 1 and "Traceback" not in out, out
    assert f"cannot open database 'postgresql+psycopg://ps:***@127.0.0.1:{port}/promptsweep'" in out
    assert "s3cret-pw" not in out


def test_serve_refuses_a_public_address_without_token(db: str) -> None:
    code, out = invoke(
        "--db", db, "serve", "--host", "0.0.0.0", "--port", "1", env={"PROMPTSWEEP_API_TOKEN": ""}
    )
    assert code == 1
    assert "refusing to serve on 0.0.0.0" in out and "token" in out


def test_submit_rejects_an_invalid_spec_naming_the_field(db: str, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nbudget:\n  num_trials: 0\n")
    code, out = invoke("--db", db, "submit", str(spec))
    assert code == 1
    assert "budget.num_trials" in out
    assert Storage(db).list_jobs() == []  # nothing queued


def test_cancel_and_retry_change_the_state_or_name_why_not(db: str) -> None:
    storage = Storage(db)
    queued = storage.create_job("q", {}).id
    code, out = invoke("--db", db, "retry", str(queued))
    assert (
        code == 1 and f"error: job {queued} is queued: only a failed or interrupted job can be retried" in out
    )
    assert storage.get_job(queued).status.value == "queued"  # unchanged
    code, out = invoke("--db", db, "cancel", str(queued))
    assert code == 0 and f"job {queued} cancelled" in out
    code, out = invoke("--db", db, "cancel", str(queued))
    assert code == 1 and f"job {queued} is cancelled: only a queued, running, paused or interrupted" in out
    failed = storage.create_job("f", {}).id
    storage.set_job_status(failed, "failed", error="boom")
    code, out = invoke("--db", db, "retry", str(failed))
    assert code == 0 and f"job {failed} queued" in out
    assert storage.get_job(failed).status.value == "queued"
    code, out = invoke("--db", db, "show", str(failed))
    assert code == 0 and "spec hash" in out and storage.get_job(failed).spec_hash[:16] in out
    events = [line.split()[2] for line in out.split("history:")[1].strip().splitlines()]  # date time event
    assert events == ["submitted", "failed", "retried"] and "retried  was failed: boom" in out


def test_lifecycle_verbs_answer_the_new_state_or_name_why_not(db: str) -> None:
    storage = Storage(db)
    job = storage.create_job("j", {}).id
    code, out = invoke("--db", db, "stop", str(job))
    assert code == 1 and f"job {job} is queued and has never started" in out and "cancel it" in out
    code, out = invoke("--db", db, "pause", str(job))
    assert code == 0 and f"job {job} paused: no worker claims it until `promptsweep resume {job}`" in out
    code, out = invoke("--db", db, "pause", str(job))
    assert code == 1 and f"error: job {job} is paused: only a queued or running job can be paused" in out
    code, out = invoke("--db", db, "resume", str(job))
    assert code == 0 and f"job {job} queued: a `promptsweep worker` on" in out
    assert storage.claim_job("w").id == job
    code, out = invoke("--db", db, "pause", str(job))
    assert code == 0 and f"job {job} running: pausing" in out
    code, out = invoke("--db", db, "stop", str(job))
    assert code == 0 and f"job {job} running: stopping" in out
    code, out = invoke("--db", db, "show", str(job))
    assert code == 0 and "request  stop (pending)" in out
    assert "pause requested" in out and "stop requested" in out
    storage.set_job_status(job, "succeeded", error="stopped by the user after 2 of 6 planned trials")
    code, out = invoke("--db", db, "extend", str(job), "--trials", "3", "--time", "60")
    assert code == 0 and f"job {job} queued: +3 trials, +60 s (in all +3 trials, +60 s)" in out
    code, out = invoke("--db", db, "show", str(job))
    assert "extended  +3 trials, +60 s" in out and "reason" not in out  # the stop reason is gone


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([], "give --trials N and/or --time S"),
        (["--trials", "0"], "--trials"),
        (["--trials", "-3"], "--trials"),
        (["--time", "0"], "--time"),
        (["--time", "-5"], "--time"),
    ],
)
def test_extend_with_a_bad_amount_names_the_option_and_changes_nothing(
    db: str, args: list[str], named: str
) -> None:
    storage = Storage(db)
    job = storage.create_job("j", {}).id
    storage.set_job_status(job, "succeeded")
    before = storage.get_job(job)
    code, out = invoke("--db", db, "extend", str(job), *args)
    assert code == 2 and named in out
    assert storage.get_job(job) == before


def test_submit_queues_a_job(db: str) -> None:
    code, out = invoke("--db", db, "submit", str(EXAMPLE), "--name", "queued-one")
    assert code == 0, out
    job_id = int(out.strip().splitlines()[-1])
    job = Storage(db).get_job(job_id)
    assert (job.name, job.status.value, job.objective_metric) == ("queued-one", "queued", "accuracy")


_PROBE = """
import json, sys
from typer.testing import CliRunner
from promptsweep.cli import app
runner = CliRunner()
for args in {commands!r}:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def test_read_only_commands_load_no_heavy_module(db: str, tmp_path: Path) -> None:
    from tests.dashboards.seed import tiny_peft_adapter

    job_id = seed_job(Storage(db), adapter_dirs={1: tiny_peft_adapter(tmp_path / "adapter")})
    commands = [
        ["--db", db, "export", str(job_id), "--out", str(tmp_path / "export")],
        ["--db", db, "jobs"],
        ["--db", db, "show", str(job_id)],
        ["--db", db, "leaderboard", str(job_id), "--pareto"],
        ["--db", db, "report", str(job_id), "--out", str(tmp_path / "r.html")],
        ["--db", db, "db", "upgrade"],
        ["--db", db, "serve", "--help"],
        ["--db", db, "dashboard", "--help"],
    ]
    code = _PROBE.format(commands=commands, heavy=HEAVY_MODULES)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_dashboard_command_serves_and_attaches_adapters(tmp_path: Path) -> None:
    import time
    import urllib.request

    from promptsweep.dashboards import free_port
    from tests.dashboards.seed import tiny_peft_adapter

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    seed_job(Storage(db), adapter_dirs={1: tiny_peft_adapter(tmp_path / "adapter")})
    port = free_port()
    artifacts = tmp_path / "artifacts"  # the default store sits beside a SQLite database
    cmd = [sys.executable, "-m", "promptsweep", "--db", db, "dashboard", "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "PROMPTSWEEP_ARTIFACT_DIR"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "optuna-dashboard did not start"
                time.sleep(0.3)
        assert len([p for p in artifacts.rglob("*") if p.is_file()]) == 1  # trial 1's adapter zip
    finally:
        proc.terminate()  # SIGTERM: the CLI stops its optuna-dashboard child, then exits
        proc.wait(timeout=20)
        out = proc.stdout.read().decode() if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
    assert "attached 1 trial adapter" in out and f"http://127.0.0.1:{port}/" in out


def test_worker_once_on_an_empty_queue_says_so_and_names_what_runs(db: str) -> None:
    code, out = invoke("--db", db, "worker", "--once")
    assert code == 0, out
    assert "no queued job to claim" in out and "running:" not in out
    storage = Storage(db)
    job = storage.create_job("held", {})
    storage.claim_job("w-elsewhere")
    code, out = invoke("--db", db, "worker", "--once", "--stale-after", "600")
    assert code == 0, out
    assert f"no queued job to claim in {storage.display_url}; running: job {job.id} by w-elsewhere" in out
    assert "after 600 s without a heartbeat" in out
    assert storage.get_job(job.id).status.value == "running"  # alive: not re-queued
    code, out = invoke("--db", db, "worker", "--once", "--stale-after", "20")
    assert code == 2 and "--stale-after" in out and "at least 60 s" in out
    code, out = invoke("--db", db, "worker", "--once", env={"PROMPTSWEEP_MAX_JOB_ATTEMPTS": "0"})
    assert code == 2 and "--max-attempts" in out


def test_run_needs_exactly_one_of_spec_and_job(db: str) -> None:
    code, out = invoke("--db", db, "run")
    assert code == 2 and "SPEC file or --job" in out
    code, out = invoke("--db", db, "run", str(EXAMPLE), "--job", "1")
    assert code == 2


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "examples").glob("*.yaml")), ids=str)
def test_example_specs_are_valid(path: Path) -> None:
    from promptsweep.search import load_spec

    spec = load_spec(path)
    assert spec.dataset.source == "fine-foods"
    assert set(spec.space.methods) == {"prompt_tuning", "prefix_tuning", "p_tuning"}
    assert set(spec.space.p_tuning.encoder_type) == {"LSTM", "MLP"}  # both prompt encoders
    if spec.model == "minilm":  # the demo's spec: a budget the search is planned from, ASHA
        assert spec.task == "classification" and spec.scheduler.name == "asha"
        assert spec.budget.time_budget_s and spec.budget.num_trials is None and spec.budget.max_steps is None
    else:
        assert (spec.model, spec.task) == ("smollm2-135m", "verbalizer")
        assert set(spec.dataset.label_words) == {"great", "other"}
