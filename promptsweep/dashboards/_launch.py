"""Start optuna-dashboard on promptsweep's database (the optuna-dashboard CLI in a child process).

Optuna's tables live in the same database as promptsweep's jobs and trials (see
``promptsweep.storage.Storage.optuna_storage``), so the dashboard shows every job's study
(``promptsweep-job-<id>``). Trial adapters attached as Optuna artifacts (see
:func:`promptsweep.dashboards.attach_adapter_artifacts`) are served from ``artifact_dir``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from promptsweep._logging import get_logger
from promptsweep.exceptions import PromptsweepError

_log = get_logger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_DASHBOARD_PORT = 8080


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
        manager).
    """
    pipe = subprocess.PIPE if capture_output else None
    cmd = dashboard_command(db_url, host=host, port=port, artifact_dir=artifact_dir)
    if capture_output:
        cmd.append("--quiet")  # no per-request log lines, so the pipes cannot fill up
    _log.info("starting optuna-dashboard on %s:%d", host, port)
    process = subprocess.Popen(cmd, stdout=pipe, stderr=pipe)
    shown_host = LOOPBACK if host in ("0.0.0.0", "::") else host
    return DashboardProcess(process=process, url=f"http://{shown_host}:{port}/")
