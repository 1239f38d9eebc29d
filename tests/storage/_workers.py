"""Worker processes for the job-queue tests (module-level functions, so ``spawn`` can import them)."""

from __future__ import annotations

import time
from typing import Any


def claim_all(url: str, worker_id: str, start: Any, out: Any) -> None:
    """Claim jobs until none is left; put the claimed ids on ``out``."""
    from promptsweep.storage import Storage

    with Storage(url) as storage:
        start.wait(60)
        claimed = []
        while (job := storage.claim_job(worker_id)) is not None:
            claimed.append(job.id)
        out.put((worker_id, claimed))


def claim_and_heartbeat(url: str, worker_id: str, interval_s: float, claimed: Any) -> None:
    """Claim one job, report its id, then heartbeat it forever (until killed)."""
    from promptsweep.storage import Storage

    with Storage(url) as storage:
        job = storage.claim_job(worker_id)
        claimed.put(None if job is None else job.id)
        while job is not None and storage.heartbeat(job.id, worker_id):
            time.sleep(interval_s)
