"""Workers: claim queued jobs and run them, heartbeating while they run.

:func:`run_worker` loops: re-queue jobs whose worker stopped heartbeating (or fail them after
``max_job_attempts`` claims), claim the oldest queued job, run it with :func:`run_job` while a thread
heartbeats it (:func:`heartbeating`). A foreground ``run_job`` holds and heartbeats its job the same
way, so a worker re-queues it if that process dies.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from promptsweep._logging import get_logger
from promptsweep.exceptions import PromptsweepError, SpecError

_log = get_logger(__name__)

#: Seconds between a held job's heartbeats.
HEARTBEAT_S = 30.0
#: Seconds without a heartbeat after which a worker re-queues a running job (``PROMPTSWEEP_STALE_AFTER_S``).
STALE_AFTER_S = 300.0
#: Worker claims of a job after which a dead worker's job is failed, not re-queued (``--max-attempts``).
MAX_JOB_ATTEMPTS = 3


def process_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@contextlib.contextmanager
def heartbeating(storage: Any, job_id: int, worker_id: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Heartbeat ``job_id`` for ``worker_id`` from a thread while the block runs (stops by itself
    when the job is no longer held by ``worker_id``: ``run_job``'s stopper then ends the search)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                if not storage.heartbeat(job_id, worker_id):
                    _log.warning("job %d is no longer held by %s; stopping it", job_id, worker_id)
                    return
            except Exception:  # pragma: no cover - the next beat retries
                _log.exception("heartbeat failed for job %d", job_id)

    thread = threading.Thread(target=beat, daemon=True, name=f"promptsweep-heartbeat-{job_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def stale_default() -> float:
    """The stale-heartbeat timeout: ``$PROMPTSWEEP_STALE_AFTER_S`` seconds, else :data:`STALE_AFTER_S`.

    Raises:
        SpecError: the variable is not a positive number (names it).
    """
    raw = os.environ.get("PROMPTSWEEP_STALE_AFTER_S")
    if raw is None or not raw.strip():
        return STALE_AFTER_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SpecError(f"PROMPTSWEEP_STALE_AFTER_S: expected positive seconds, got {raw!r}")
    return value


def run_worker(
    storage: Any,
    once: bool = False,
    *,
    poll_s: float = 5.0,
    heartbeat_s: float = HEARTBEAT_S,
    stale_after_s: float | None = None,
    max_job_attempts: int = MAX_JOB_ATTEMPTS,
    progress: bool = False,
) -> int:
    """Run queued jobs from ``storage`` one after another; return how many jobs this worker ran.

    Each claimed job is heartbeated from a thread while it runs; jobs whose worker stopped
    heartbeating for ``stale_after_s`` seconds (default ``$PROMPTSWEEP_STALE_AFTER_S``, else 300)
    are re-queued and resumed by whoever claims them, or failed once taken ``max_job_attempts`` times.

    Args:
        once: run at most one job, then return (return 0 at once when the queue is empty).
        poll_s: seconds between polls of an empty queue.
    """
    stale_s = stale_default() if stale_after_s is None else float(stale_after_s)
    worker_id = f"{process_id()}-{uuid.uuid4().hex[:6]}"
    ran = 0
    while True:
        try:
            storage.requeue_stale(stale_s, max_attempts=max_job_attempts)
        except Exception:  # pragma: no cover - best effort
            _log.exception("requeue_stale failed")
        job = storage.claim_job(worker_id)
        if job is None:
            if once:
                return ran
            time.sleep(poll_s)
            continue
        try:
            with heartbeating(storage, int(job.id), worker_id, heartbeat_s):
                from promptsweep.search._runner import run_job

                run_job(int(job.id), storage, progress=progress, worker_id=worker_id)
        except KeyboardInterrupt:
            # SIGTERM / Ctrl-C: run_job hands the job back itself; one that came before run_job
            # started (or after it ended) is handed back here (a no-op once it is not ours).
            reason = "its worker was stopped (SIGTERM or Ctrl-C); the next worker resumes it"
            storage.set_job_status(int(job.id), "queued", error=reason, holder=worker_id)
            raise
        except SpecError as exc:
            _log.error("job %d refused: %s", job.id, exc)
        except PromptsweepError as exc:  # bad data, model, ...: the job is marked failed with the reason
            _log.error("job %d failed: %s", job.id, exc)
        except Exception:
            _log.exception("job %d failed", job.id)
        ran += 1
        if once:
            return ran
