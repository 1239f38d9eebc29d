"""Start optuna-dashboard on promptsweep's database (the optuna-dashboard CLI in a child process).

Optuna's tables live in the same database as promptsweep's jobs and trials (see
``promptsweep.storage.Storage.optuna_storage``), so the dashboard shows every job's study
(``promptsweep-job-<id>``). Trial adapters attached as Optuna artifacts (see
:func:`promptsweep.dashboards.attach_adapter_artifacts`) are served from ``artifact_dir``.

The child never outlives promptsweep: :func:`run_dashboard` (``promptsweep dashboard``) stops it on
SIGTERM (a service manager, ``kill``) and SIGINT (Ctrl-C), and on Linux the child also gets SIGTERM
from the kernel when its parent dies any other way (``PR_SET_PDEATHSIG``, e.g. after ``kill -9``).
It runs in its own process group, so a terminal's Ctrl-C reaches promptsweep only, which then stops
it (no second traceback from the child).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptsweep._logging import get_logger
from promptsweep.exceptions import PromptsweepError

_log = get_logger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_DASHBOARD_PORT = 8080
#: The signals :func:`run_dashboard` stops its child on.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def dashboard_command(
    db_url: str, *, host: str = LOOPBACK, port: int = DEFAULT_DASHBOARD_PORT, artifact_dir: Path | None = None
) -> list[str]:
    """Return the argv that starts optuna-dashboard on ``db_url`` (``python -m optuna_dashboard._cli``).

    The same interpreter is used, so the dashboard sees the same optuna and database drivers.
    """
    cmd = [sys.executable, "-m", "optuna_dashboard._cli", db_url, "--host", host, "--port", str(port)]
    if artifact_dir is not None:
        cmd += ["--artifact-dir", str(artifact_dir)]
    return cmd


@dataclass
class DashboardProcess:
    """A running optuna-dashboard child process.

    Attributes:
        process: the child process.
        url: the address it serves, e.g. ``http://127.0.0.1:8080/``.
    """

    process: subprocess.Popen[bytes]
    url: str

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the dashboard answers HTTP 200 on ``url`` (polls every 0.2 s).

        Raises:
            PromptsweepError: if the process exits, or nothing answers within ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise PromptsweepError(
                    f"optuna-dashboard exited with code {self.process.returncode} before serving "
                    f"{self.url}: {err.strip()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise PromptsweepError(f"optuna-dashboard did not answer on {self.url} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 10.0) -> int:
        """Terminate the dashboard (SIGTERM, then SIGKILL after ``timeout_s`` seconds); return its code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return int(self.process.returncode)

    def __enter__(self) -> DashboardProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_dashboard(
    db_url: str,
    *,
    host: str = LOOPBACK,
    port: int = DEFAULT_DASHBOARD_PORT,
    artifact_dir: Path | None = None,
    capture_output: bool = True,
) -> DashboardProcess:
    """Start optuna-dashboard on ``db_url`` in a child process and return at once.

    Args:
        db_url: the promptsweep database URL (SQLite or PostgreSQL); Optuna's studies live there.
        host: the interface to bind; ``127.0.0.1`` by default, so only this machine can reach it.
        port: the TCP port.
        artifact_dir: the Optuna file-system artifact store holding trial adapters, if any.
        capture_output: pipe the child's stdout/stderr (tests) instead of inheriting them (CLI).

    Returns:
        A :class:`DashboardProcess`; call ``wait_ready()`` then ``stop()`` (or use it as a context
        manager). On Linux the child gets SIGTERM when the thread that called this exits (the
        kernel's parent-death signal follows the forking thread): call it from a thread that outlives
        the dashboard, e.g. the main thread.
    """
    pipe = subprocess.PIPE if capture_output else None
    cmd = dashboard_command(db_url, host=host, port=port, artifact_dir=artifact_dir)
    if capture_output:
        cmd.append("--quiet")  # no per-request log lines, so the pipes cannot fill up
    _log.info("starting optuna-dashboard on %s:%d", host, port)
    process = subprocess.Popen(
        cmd, stdout=pipe, stderr=pipe, process_group=0, preexec_fn=_child_setup(os.getpid())
    )
    shown_host = LOOPBACK if host in ("0.0.0.0", "::") else host
    return DashboardProcess(process=process, url=f"http://{shown_host}:{port}/")


def _child_setup(parent_pid: int) -> Any:
    """The child's set-up between fork and exec: the stop signals unblocked (:func:`run_dashboard`
    blocks them around the fork) and, on Linux, SIGTERM when the parent dies."""
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
            prctl = None

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before the prctl
                os._exit(1)

    return setup


def run_dashboard(
    db_url: str,
    *,
    host: str = LOOPBACK,
    port: int = DEFAULT_DASHBOARD_PORT,
    artifact_dir: Path | None = None,
    kill_after_s: float = 10.0,
) -> int:
    """Run optuna-dashboard on ``db_url`` in a child process until it exits or a stop signal comes.

    Call it from the main thread (``promptsweep dashboard``). SIGTERM and SIGINT are passed on to the
    child as SIGTERM (SIGKILL if it still runs ``kill_after_s`` seconds later), and this returns once
    the child is gone and reaped, so its port is free; the handlers in place before are put back. The
    child's output goes to this process's stdout / stderr.

    Returns:
        ``128 + signal number`` after a stop signal (143 for SIGTERM, 130 for SIGINT, as ``promptsweep
        run`` and ``worker`` exit), else the child's exit code.
    """
    received: list[int] = []
    child: dict[str, Any] = {}

    def stop(signum: int, frame: Any) -> None:
        # Only passes the signal on (raising here could leave the child behind); the wait below ends
        # when the child does.
        received.append(signum)
        proc = child.get("proc")
        if proc is not None and proc.process.returncode is None:
            _log.info("%s: stopping optuna-dashboard (pid %d)", signal.Signals(signum).name, proc.process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.process.pid, signal.SIGTERM)
            child.setdefault("kill_at", time.monotonic() + kill_after_s)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        # Blocked across the fork: a signal that comes meanwhile is handled once `proc` is known.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            proc = launch_dashboard(
                db_url, host=host, port=port, artifact_dir=artifact_dir, capture_output=False
            )
            child["proc"] = proc
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        while True:
            try:
                code = proc.process.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if "kill_at" in child and time.monotonic() >= child["kill_at"]:
                    _log.warning("optuna-dashboard (pid %d) ignored SIGTERM: killing it", proc.process.pid)
                    proc.process.kill()
        proc.stop()  # closes what is left (it has exited)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + received[0] if received else int(code)
