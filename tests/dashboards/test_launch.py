"""optuna-dashboard started by promptsweep answers on a free loopback port, shows the study, and stops;
`promptsweep dashboard` never leaves it behind (SIGTERM, SIGINT, even SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from promptsweep.dashboards import dashboard_command, free_port, launch_dashboard
from promptsweep.exceptions import PromptsweepError
from promptsweep.storage import Storage
from tests.dashboards.seed import seed_job


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


# -- `promptsweep dashboard` stops its optuna-dashboard child -------------------------------------------


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    """``(parent pid, state letter)`` of a process from ``/proc``; ``None`` when it does not exist."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[1]), fields[0]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _ppid_and_state(int(entry.name))
            if info is not None and info[0] == pid:
                found.append(int(entry.name))
    return found


def _port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port`` (a bind succeeds; SO_REUSEADDR so that the closed
    connections' TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_dashboard_command(db: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """Start the real ``promptsweep dashboard`` (a subprocess, this interpreter) and wait until it answers."""
    cmd = [sys.executable, "-m", "promptsweep", "--db", db, "dashboard", "--port", str(port), *extra]
    env = {k: v for k, v in os.environ.items() if k != "PROMPTSWEEP_ARTIFACT_DIR"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                assert resp.status == 200
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.communicate()[0].decode(errors="replace")
                raise AssertionError(
                    f"promptsweep dashboard did not start (code {proc.returncode}): {out}"
                ) from None
            time.sleep(0.3)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_dashboard_command_stops_its_child_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    # A service manager stops `promptsweep dashboard` with SIGTERM (Ctrl-C: SIGINT); optuna-dashboard,
    # its child, must not be left running and holding the port.
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    seed_job(Storage(db))
    port = free_port()
    proc = start_dashboard_command(db, port, "--no-attach")
    try:
        (child,) = _children(proc.pid)
        assert b"optuna_dashboard" in Path(f"/proc/{child}/cmdline").read_bytes()
        assert not _port_free(port)
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0].decode(errors="replace")
    assert code == 128 + sig, out
    assert _ppid_and_state(child) is None  # stopped and reaped by promptsweep before it exited
    assert _port_free(port)
    assert f"optuna-dashboard stopped ({sig.name})" in out
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_dashboard_child_ends_when_promptsweep_is_killed(tmp_path: Path) -> None:
    # SIGKILL cannot be handled: the kernel's parent-death signal stops the child instead.
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    seed_job(Storage(db))
    port = free_port()
    proc = start_dashboard_command(db, port, "--no-attach")
    child = None
    try:
        (child,) = _children(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while (info := _ppid_and_state(child)) is not None and info[1] != "Z":  # gone or a zombie
            assert time.monotonic() < deadline, f"optuna-dashboard (pid {child}) outlived promptsweep"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        if child is not None and _ppid_and_state(child) is not None:  # a failed run leaves no server
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    assert _port_free(port)
