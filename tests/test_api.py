"""The REST API: FastAPI's test client on SQLite and PostgreSQL, and one real uvicorn server on loopback."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from promptsweep.api import create_app, is_loopback, serve
from promptsweep.dashboards import free_port
from promptsweep.exceptions import PromptsweepError
from promptsweep.storage import Storage
from tests.dashboards.seed import seed_job, tiny_peft_adapter

EXAMPLE = Path(__file__).parent.parent / "examples" / "fine-foods-minilm.yaml"


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_peft_adapter(tmp_path_factory.mktemp("adapter") / "adapter")


@pytest.fixture
def db(db_url: str) -> str:
    """A fresh database: every API test runs on SQLite and on PostgreSQL (tests/conftest.py)."""
    return db_url


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    """A fresh SQLite database (for the tests that start processes)."""
    return f"sqlite:///{tmp_path / 'db.sqlite'}"


@pytest.fixture
def client(db: str) -> TestClient:
    return TestClient(create_app(db))


def _spec() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def test_post_job_queues_it(client: TestClient, db: str) -> None:
    resp = client.post("/jobs", json=_spec())
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["status"] == "queued" and body["study_name"] == f"promptsweep-job-{body['id']}"
    job = Storage(db).get_job(body["id"])
    assert job.spec["space"]["methods"] == ["prompt_tuning", "prefix_tuning", "p_tuning"]
    listed = client.get("/jobs").json()
    assert [(j["id"], j["status"], j["name"]) for j in listed] == [
        (body["id"], "queued", "fine-foods-minilm")
    ]


@pytest.mark.parametrize(
    ("patch", "loc"),
    [
        ({"budget": {"num_trials": 0}}, ["body", "budget", "num_trials"]),
        ({"budget": {"batch_size": "many"}}, ["body", "budget", "batch_size"]),
        ({"bogus": 1}, ["body", "bogus"]),
        ({"space": {"methods": ["lora"]}}, ["body", "space", "methods"]),
        ({"objective": {"metric": "perplexity"}}, ["body", "objective", "metric"]),
    ],
)
def test_invalid_spec_is_422_with_the_field_path(client: TestClient, db: str, patch: dict, loc: list) -> None:
    spec = {**_spec(), **patch}
    resp = client.post("/jobs", json=spec)
    assert resp.status_code == 422, resp.text
    locs = [d["loc"] for d in resp.json()["detail"]]
    assert loc in locs, locs
    assert Storage(db).list_jobs() == []


def test_job_trials_and_leaderboard(db: str, client: TestClient) -> None:
    job_id = seed_job(Storage(db))
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert job["trial_counts"] == {"complete": 3, "pruned": 1, "fail": 1}
    assert (job["best_trial"]["number"], job["best_trial"]["value"]) == (1, 0.76)
    trials = client.get(f"/jobs/{job_id}/trials").json()
    assert [(t["number"], t["state"]) for t in trials] == [
        (0, "complete"),
        (1, "complete"),
        (2, "complete"),
        (3, "pruned"),
        (4, "fail"),
    ]
    assert trials[4]["error"].startswith("TrainingError")
    board = client.get(f"/jobs/{job_id}/leaderboard").json()
    assert [(t["rank"], t["number"], t["variant"]) for t in board] == [
        (1, 1, "prefix_tuning"),
        (2, 0, "prompt_tuning"),
        (3, 2, "p_tuning_lstm"),
    ]
    pareto = client.get(f"/jobs/{job_id}/leaderboard", params={"pareto": True}).json()
    assert [t["number"] for t in pareto] == [0, 1]


def test_job_shows_its_summary(db: str, client: TestClient) -> None:
    """What the search decided (plan, floors, selection) is part of the job's answer."""
    storage = Storage(db)
    job_id = seed_job(storage)
    assert client.get(f"/jobs/{job_id}").json()["summary"] == {}
    plan = {"configs": 9, "max_steps": 189, "rungs": [21, 63]}
    storage.update_job_summary(job_id, plan=plan, floors={"majority": {"accuracy": 0.65}}, selected_trial=1)
    summary = client.get(f"/jobs/{job_id}").json()["summary"]
    assert summary == {"plan": plan, "floors": {"majority": {"accuracy": 0.65}}, "selected_trial": 1}
    # the per-review outcomes (one character per ranked review) are on the job, not in the list
    storage.update_job_summary(job_id, floor_outcomes={"majority": "0110"}, selected_outcomes="1110")
    summary = client.get(f"/jobs/{job_id}").json()["summary"]
    assert summary["floor_outcomes"] == {"majority": "0110"} and summary["selected_outcomes"] == "1110"
    (listed,) = [j for j in client.get("/jobs").json() if j["id"] == job_id]
    assert listed["summary"] == {
        "plan": plan,
        "floors": {"majority": {"accuracy": 0.65}},
        "selected_trial": 1,
    }
    assert "summary" in client.get("/openapi.json").json()["components"]["schemas"]["Job"]["properties"]


def test_cancel(client: TestClient) -> None:
    job_id = client.post("/jobs", json=_spec()).json()["id"]
    resp = client.post(f"/jobs/{job_id}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_cancel_a_finished_job_and_retry_a_queued_one_are_409_naming_the_state(
    client: TestClient, db: str
) -> None:
    job_id = client.post("/jobs", json=_spec()).json()["id"]
    resp = client.post(f"/jobs/{job_id}/retry")
    assert resp.status_code == 409 and resp.json()["detail"].startswith(f"job {job_id} is queued:")
    client.post(f"/jobs/{job_id}/cancel")
    resp = client.post(f"/jobs/{job_id}/cancel")
    assert resp.status_code == 409 and resp.json()["detail"].startswith(f"job {job_id} is cancelled:")
    with Storage(db) as storage:
        failed = storage.create_job("f", _spec()).id
        storage.set_job_status(failed, "failed", error="boom")
    resp = client.post(f"/jobs/{failed}/retry")
    assert resp.status_code == 200 and resp.json()["status"] == "queued"
    job = client.get(f"/jobs/{failed}").json()
    assert [e["event"] for e in job["history"]] == ["submitted", "failed", "retried"]
    assert len(job["spec_hash"]) == 64
    paths = client.get("/openapi.json").json()["paths"]
    assert "409" in paths["/jobs/{job_id}/retry"]["post"]["responses"]


def test_stop_pause_resume_extend(client: TestClient, db: str) -> None:
    job_id = client.post("/jobs", json=_spec()).json()["id"]
    resp = client.post(f"/jobs/{job_id}/stop")
    assert resp.status_code == 409 and "never started" in resp.json()["detail"]
    resp = client.post(f"/jobs/{job_id}/pause")
    assert resp.status_code == 200 and resp.json()["status"] == "paused"
    resp = client.post(f"/jobs/{job_id}/pause")
    assert resp.status_code == 409 and resp.json()["detail"].startswith(f"job {job_id} is paused:")
    assert client.post(f"/jobs/{job_id}/resume").json()["status"] == "queued"
    with Storage(db) as storage:
        storage.claim_job("w")
    job = client.post(f"/jobs/{job_id}/stop").json()
    assert (job["status"], job["request"]) == ("running", "stop")
    with Storage(db) as storage:
        storage.set_job_status(job_id, "succeeded", error="stopped by the user after 1 of 6 planned trials")
    job = client.post(f"/jobs/{job_id}/extend", json={"trials": 2, "time_s": 30}).json()
    assert (job["status"], job["extra_trials"], job["extra_time_s"], job["error"]) == (
        "queued",
        2,
        30.0,
        None,
    )
    assert [e["event"] for e in job["history"]][-2:] == ["succeeded", "extended"]
    schemas = client.get("/openapi.json").json()
    assert {"request", "extra_trials", "extra_time_s"} <= set(
        schemas["components"]["schemas"]["Job"]["properties"]
    )
    for verb in ("stop", "pause", "resume", "extend"):
        assert "409" in schemas["paths"][f"/jobs/{{job_id}}/{verb}"]["post"]["responses"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "give trials and/or time_s"),
        ({"trials": 0}, "trials"),
        ({"time_s": -1}, "time_s"),
        ({"trials": 1.5}, "trials"),
    ],
)
def test_extend_with_a_bad_amount_is_422_naming_the_field(
    client: TestClient, db: str, body: dict, named: str
) -> None:
    job_id = client.post("/jobs", json=_spec()).json()["id"]
    before = client.get(f"/jobs/{job_id}").json()
    resp = client.post(f"/jobs/{job_id}/extend", json=body)
    assert resp.status_code == 422 and named in str(resp.json()["detail"])
    assert client.get(f"/jobs/{job_id}").json() == before
    assert client.post("/jobs/99/extend", json={"trials": 1}).status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/jobs/99"),
        ("post", "/jobs/99/retry"),
        ("get", "/jobs/99/trials"),
        ("get", "/jobs/99/leaderboard"),
        ("get", "/jobs/99/adapter"),
        ("post", "/jobs/99/cancel"),
        ("post", "/jobs/99/stop"),
        ("post", "/jobs/99/pause"),
        ("post", "/jobs/99/resume"),
    ],
)
def test_unknown_job_is_404(client: TestClient, method: str, path: str) -> None:
    resp = getattr(client, method)(path)
    assert resp.status_code == 404
    assert resp.json()["detail"] == "no job with id 99"  # not the server's database path


def test_adapter_zip(db: str, client: TestClient, adapter_dir: Path) -> None:
    job_id = seed_job(Storage(db), adapter_dirs={1: adapter_dir})
    resp = client.get(f"/jobs/{job_id}/adapter")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/zip"
    assert f"promptsweep-job{job_id}-trial1-adapter.zip" in resp.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        names = set(zf.namelist())
        metrics = json.loads(zf.read("metrics.json"))
        assert (
            zf.read("adapter_model.safetensors") == (adapter_dir / "adapter_model.safetensors").read_bytes()
        )
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "metrics.json"} <= names
    assert (metrics["job_id"], metrics["trial_number"], metrics["validation_metrics"]["accuracy"]) == (
        job_id,
        1,
        0.76,
    )
    # a trial that saved no adapter: a conflict, not a crash; an unknown trial: 404
    assert client.get(f"/jobs/{job_id}/adapter", params={"trial": 0}).status_code == 409
    resp = client.get(f"/jobs/{job_id}/adapter", params={"trial": 9})
    assert resp.status_code == 404 and resp.json()["detail"] == f"job {job_id} has no trial number 9"


def test_token_is_required_when_set(db: str) -> None:
    client = TestClient(create_app(db, token="s3cret"))
    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/jobs", json=_spec()).status_code == 401
    assert client.get("/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/adapter", "/jobs/{job_id}/cancel"} <= set(paths)
    # the job spec's schema is documented, so clients see the fields a 422 names
    assert "JobSpec" in json.dumps(schema.json()["components"])


def test_loopback_detection_and_refusal(sqlite_db: str) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    with pytest.raises(PromptsweepError, match="needs a bearer token"):
        serve(sqlite_db, host="0.0.0.0", port=free_port(), token=None)


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_real_server_on_loopback(sqlite_db: str) -> None:
    seed_job(Storage(sqlite_db))
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "promptsweep",
        "--db",
        sqlite_db,
        "serve",
        "--port",
        str(port),
        "--token",
        "t0k",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = _get(f"{base}/openapi.json")
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        assert status == 200
        assert _get(f"{base}/jobs")[0] == 401
        status, jobs = _get(f"{base}/jobs", token="t0k")
        assert status == 200 and [j["name"] for j in jobs] == ["seeded"]
        assert _get(f"{base}/jobs/7", token="t0k")[0] == 404
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()


def test_real_server_refuses_public_bind_without_token(sqlite_db: str) -> None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "promptsweep",
        "--db",
        sqlite_db,
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PROMPTSWEEP_API_TOKEN"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1
    assert "needs a bearer token" in out.stderr + out.stdout


def test_the_app_loads_no_heavy_module(sqlite_db: str) -> None:
    from promptsweep._imports import HEAVY_MODULES

    code = (
        "import json, sys\n"
        "from promptsweep.api import create_app\n"
        f"create_app({sqlite_db!r})\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_spec_refused_by_submit_is_422_with_the_field_path(client: TestClient, db: str) -> None:
    from promptsweep.search._spec import local_gpu_count

    if local_gpu_count() > 0:
        pytest.skip("this machine has a GPU: a GPU request is valid here")
    spec = {**_spec(), "resources": {"gpus_per_trial": 1}}
    resp = client.post("/jobs", json=spec)
    assert resp.status_code == 422, resp.text
    (detail,) = resp.json()["detail"]
    assert detail["loc"] == ["body", "resources", "gpus_per_trial"]
    assert "no GPU" in detail["msg"]
    assert Storage(db).list_jobs() == []
