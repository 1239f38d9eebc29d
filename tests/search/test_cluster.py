"""A real multi-node Ray cluster with PostgreSQL: two ``promptsweep worker`` processes, two jobs, two
nodes, no shared disk for the trials' outputs, and a node lost mid-trial.

The cluster is started with the Ray CLI on this machine, as on a real one: a head node
(``127.0.0.1``, 1 CPU) and a second node (``127.0.0.2``, another loopback address, 1 CPU), each with
its own ``--temp-dir`` (its "local disk": Tune's working directory for a trial lies there) and its own
process group, so that the fixture kills exactly this cluster, also when a test fails. Token
authentication is on (Ray 2.60's default for ``ray start``), with a token made for the test.

The drivers are ``promptsweep worker`` subprocesses on the head's machine, each with its own
``PROMPTSWEEP_HOME``; the jobs set ``ray_address`` to the head and ``ray_storage_path`` to a folder
standing for an NFS mount, or the same as a ``file://`` URI standing for a bucket (Ray Tune persists
each trial's adapter there as a checkpoint, and that is where the trial records it). The nodes' temp
dirs and the drivers' homes are deleted before the adapters are exported, so an adapter left only on
a node's or a driver's disk fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from promptsweep.export import export_adapter
from promptsweep.methods import evaluate_adapter
from promptsweep.search import job_inputs, parse_spec, submit
from promptsweep.storage import Storage
from tests.search.conftest import tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
NUM_TRIALS = 4


@dataclass
class Cluster:
    """A Ray cluster of a head and a second node on this machine (see the module docstring)."""

    address: str
    env: dict[str, str]
    temp_dirs: dict[str, Path]
    groups: dict[str, int] = field(default_factory=dict)
    node_ids: dict[str, str] = field(default_factory=dict)
    node_ips: dict[str, str] = field(default_factory=dict)

    def start_node(self, name: str, args: list[str]) -> None:
        self.temp_dirs[name].mkdir(parents=True, exist_ok=True)
        log = self.temp_dirs[name].with_suffix(".log")
        proc = subprocess.Popen(  # its daemons stay in this process's group after it returns
            [
                RAY,
                "start",
                *args,
                "--num-cpus",
                "1",
                "--num-gpus",
                "0",
                "--disable-usage-stats",
                "--temp-dir",
                str(self.temp_dirs[name]),
                "--object-store-memory",
                str(80 * 1024 * 1024),
            ],
            env=self.env,
            start_new_session=True,
            stdout=open(log, "w"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
        )
        self.groups[name] = proc.pid
        if proc.wait(timeout=120) != 0:
            pytest.fail(f"`ray start` of the {name} node failed:\n{log.read_text()[-3000:]}")

    def nodes(self) -> list[dict[str, Any]]:
        """The live nodes as the cluster reports them (asked from a fresh driver process)."""
        code = (
            f"import json, ray; ray.init(address={self.address!r}, log_to_driver=False); "
            "print(json.dumps([{'id': n['NodeID'], 'ip': n['NodeManagerAddress'], "
            "'store': n['ObjectStoreSocketName']} for n in ray.nodes() if n['Alive']]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def kill(self, name: str) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.groups.pop(name), signal.SIGKILL)

    def raylet_pid(self, name: str) -> int:
        import psutil

        for proc in psutil.process_iter(["pid", "name", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "raylet" and str(self.temp_dirs[name]) in cmd:
                return int(proc.info["pid"])
        raise AssertionError(f"no raylet of the {name} node")

    def shutdown(self) -> None:
        import psutil

        for name in list(self.groups):
            self.kill(name)
        # Processes the raylets started in sessions of their own (none expected): by their temp dir.
        roots = [str(d) for d in self.temp_dirs.values()]
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if any(root in cmd for root in roots):
                with contextlib.suppress(psutil.Error):
                    proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_worker_niceness="0",
        PYTHONPATH=str(REPO),
    )
    port = _free_port()
    short = Path(tempfile.mkdtemp(prefix="psray-", dir="/tmp"))  # Ray's sockets: at most 107 bytes
    c = Cluster(
        address=f"127.0.0.1:{port}",
        env=env,
        temp_dirs={"head": short / "head", "second": short / "second"},
    )
    try:
        c.start_node("head", ["--head", "--port", str(port), "--node-ip-address", "127.0.0.1"])
        c.start_node("second", ["--address", c.address, "--node-ip-address", "127.0.0.2"])
        deadline = time.time() + 60
        while True:
            nodes = c.nodes()
            if len(nodes) == 2 or time.time() > deadline:
                break
            time.sleep(1)
        assert len(nodes) == 2, nodes
        for name, root in c.temp_dirs.items():
            node = next(n for n in nodes if n["store"].startswith(str(root)))
            c.node_ids[name], c.node_ips[name] = node["id"], node["ip"]
        yield c
    finally:
        c.shutdown()
        shutil.rmtree(short, ignore_errors=True)


def _spec(
    model: Path, data: Path, cluster: Cluster, shared: str | Path, name: str, **budget: Any
) -> dict[str, Any]:
    spec = tiny_spec(
        model,
        data,
        Path("unused"),
        name=name,
        ray_address=cluster.address,
        ray_storage_path=str(shared),
        scheduler={"name": "none"},
        budget={"num_trials": NUM_TRIALS, "max_steps": 60, "eval_every_steps": 20, **budget},
        resources={"cpus_per_trial": 1, "max_concurrent_trials": 2},
        precision="fp32",
        floors=False,
    )
    spec.pop("output_dir")  # each driver writes under its own PROMPTSWEEP_HOME
    return spec


def _start_worker(url: str, cluster: Cluster, home: Path, **env: str) -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptsweep", "--db", url, "worker", "--once"],
        env={**cluster.env, "PROMPTSWEEP_HOME": str(home), **env},
        cwd=home,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "worker.log", "w"),  # noqa: SIM115 - closed with the process
    )
    proc.cwd = home  # type: ignore[attr-defined]
    return proc


def _wait(what: str, ready: Any, workers: list[subprocess.Popen], timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if ready():
            return
        for w in workers:
            if w.poll() is not None:
                log = Path(w.cwd, "worker.log").read_text()[-3000:]  # type: ignore[attr-defined]
                pytest.fail(f"a worker ended (code {w.returncode}) before {what}:\n{log}")
        time.sleep(0.2)
    pytest.fail(f"no {what} within {timeout_s:.0f} s")


def _stop(workers: list[subprocess.Popen]) -> None:
    for w in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(w.pid, signal.SIGKILL)
        w.wait(timeout=60)


def _ended_exactly(storage: Storage, job_id: int, num_trials: int) -> list[Any]:
    """The job succeeded with exactly ``num_trials`` complete trials, none twice, Optuna agreeing."""
    job = storage.get_job(job_id)
    assert (job.status.value, job.error) == ("succeeded", None), job.history
    rows = storage.list_trials(job_id)
    assert [r.number for r in rows] == list(range(num_trials))
    assert [r.state.value for r in rows] == ["complete"] * num_trials
    study = optuna.load_study(study_name=job.study_name, storage=storage.optuna_storage())
    states = [(t.number, t.state) for t in study.trials]
    assert states == [(n, TrialState.COMPLETE) for n in range(num_trials)]
    assert [t.values for t in study.trials] == [r.values for r in rows]
    return rows


def test_two_workers_run_two_jobs_on_both_nodes_without_a_shared_disk(
    cluster: Cluster, tiny_encoder: Path, reviews_dir: Path, make_db_url: Any, tmp_path: Path
) -> None:
    url = make_db_url("postgresql")
    storage = Storage(url)
    # Tune's storage_path: job 1 a folder every node mounts (NFS); job 2 the same given as a URI, as a
    # bucket is (s3://...): its adapters are recorded as URIs and fetched by whoever reads them.
    shared = {1: str(tmp_path / "nfs"), 2: f"file://{tmp_path / 'bucket'}"}
    homes = {1: tmp_path / "driver-1", 2: tmp_path / "driver-2"}
    specs = {n: _spec(tiny_encoder, reviews_dir, cluster, shared[n], f"cluster-{n}") for n in (1, 2)}
    specs[2]["ray_address"] = "auto"  # worker 2 finds the cluster through RAY_ADDRESS
    workers: list[subprocess.Popen] = []
    try:
        first = submit(specs[1], storage)
        workers.append(_start_worker(url, cluster, homes[1]))
        # Job 1 alone on the cluster: its two concurrent trials cannot share a 1-CPU node.
        _wait(
            "job 1 on both nodes",
            lambda: len({t.node_id for t in storage.list_trials(first) if t.node_id}) == 2,
            workers,
        )
        second = submit(specs[2], storage)
        workers.append(_start_worker(url, cluster, homes[2], RAY_ADDRESS=cluster.address))
        for w in workers:
            w.wait(timeout=400)
        logs = {n: (homes[n] / "worker.log").read_text()[-3000:] for n in homes}
        assert [w.returncode for w in workers] == [0, 0], logs
    finally:
        _stop(workers)
    history = [h for j in (first, second) for h in storage.get_job(j).history]
    claims = [h["detail"].split()[2] for h in history if h["event"] == "claimed"]
    assert len(claims) == 2 and len(set(claims)) == 2, claims  # two workers, one job each, claimed once

    ids = set(cluster.node_ids.values())
    jobs = {1: first, 2: second}
    for n, job_id in jobs.items():
        rows = _ended_exactly(storage, job_id, NUM_TRIALS)
        assert {r.node_id for r in rows} == ids, [(r.number, r.node_id) for r in rows]  # both nodes
        assert {r.node_host.split(" (")[1].rstrip(")") for r in rows} == set(cluster.node_ips.values())
        for r in rows:  # each adapter where Ray persisted it: the shared storage, not a node's disk
            assert r.adapter_dir.startswith(shared[n]), r.adapter_dir
    # The API and `show` say where each trial ran.
    from fastapi.testclient import TestClient

    from promptsweep.api import create_app

    with TestClient(create_app(storage=storage)) as client:
        listed = client.get(f"/jobs/{first}/trials").json()
    assert {t["node_id"] for t in listed} == ids
    shown = subprocess.run(
        [sys.executable, "-m", "promptsweep", "--db", url, "show", str(first)],
        env={**cluster.env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert all(node[:8] in shown.stdout for node in ids), shown.stdout

    # The nodes' and the drivers' disks are gone; each job's best adapter still exports (here, another
    # machine reaching the database and the storage) and reloads with its recorded metric.
    cluster.shutdown()
    for root in [*cluster.temp_dirs.values(), *homes.values()]:
        shutil.rmtree(root, ignore_errors=True)
    for n, job_id in jobs.items():
        out = export_adapter(storage, job_id, tmp_path / f"export-{n}")
        best = storage.get_trial(job_id, out.trial_number)
        inputs = job_inputs(parse_spec(specs[n]))
        # plain PeftModel.from_pretrained on the exported folder
        reloaded = evaluate_adapter(inputs, out.out_dir, split="validation")
        assert reloaded["eval_loss"] == pytest.approx(best.value, rel=1e-4)
        assert reloaded["accuracy"] == pytest.approx(best.metrics["accuracy"], abs=1e-9)


def test_a_lost_node_reruns_its_trial_on_the_other(
    cluster: Cluster, tiny_encoder: Path, reviews_dir: Path, make_db_url: Any, tmp_path: Path
) -> None:
    url = make_db_url("postgresql")
    storage = Storage(url)
    spec = _spec(
        tiny_encoder, reviews_dir, cluster, tmp_path / "nfs", "lose-a-node", num_trials=3, max_steps=600
    )
    job_id = submit(spec, storage)
    second = cluster.node_ids["second"]
    workers = [_start_worker(url, cluster, tmp_path / "driver")]
    try:

        def running_on_second() -> Any:
            return next(
                (
                    t
                    for t in storage.list_trials(job_id)
                    if t.node_id == second and t.state.value == "running"
                ),
                None,
            )

        _wait("a trial running on the second node", lambda: running_on_second() is not None, workers)
        lost = running_on_second().number
        os.kill(cluster.raylet_pid("second"), signal.SIGKILL)  # the node is gone, its trial with it
        workers[0].wait(timeout=400)
        log = (tmp_path / "driver" / "worker.log").read_text()[-3000:]
        assert workers[0].returncode == 0, log
    finally:
        _stop(workers)
    rows = _ended_exactly(storage, job_id, 3)
    rerun = rows[lost]
    assert rerun.node_id == cluster.node_ids["head"]  # re-run on the node that was left
    assert "restarted 1 time(s)" in (rerun.error or ""), rerun.error  # an infrastructure failure, noted
    assert rerun.steps == 600 and (Path(rerun.adapter_dir) / "adapter_config.json").is_file()


def test_refused_before_any_trial_with_the_clusters_numbers(
    cluster: Cluster, tiny_encoder: Path, reviews_dir: Path, make_db_url: Any, tmp_path: Path
) -> None:
    url = make_db_url("postgresql")
    storage = Storage(url)
    too_big = _spec(tiny_encoder, reviews_dir, cluster, tmp_path / "nfs", "too-big")
    too_big["resources"] = {"cpus_per_trial": 2, "max_concurrent_trials": 1}  # each node has 1 CPU
    silent = _spec(tiny_encoder, reviews_dir, cluster, tmp_path / "nfs", "nobody-home")
    silent["ray_address"] = f"127.0.0.1:{_free_port()}"  # nothing listens there
    jobs = [submit(too_big, storage), submit(silent, storage)]
    for n in range(2):
        worker = _start_worker(url, cluster, tmp_path / f"driver-{n}")
        try:
            worker.wait(timeout=120)  # a silent address is refused in seconds, not after Ray's retries
        finally:
            _stop([worker])
    big, nobody = (storage.get_job(j) for j in jobs)
    assert big.status.value == "failed" and storage.list_trials(big.id) == []
    assert "resources.cpus_per_trial: 2 CPU(s) per trial" in big.error, big.error
    assert "2 live node(s)" in big.error and "CPUs per node [1, 1]" in big.error, big.error
    assert nobody.status.value == "failed" and storage.list_trials(nobody.id) == []
    assert f"ray_address: no Ray cluster accepted this driver at {silent['ray_address']}" in nobody.error
    assert "ray start --head" in nobody.error, nobody.error
