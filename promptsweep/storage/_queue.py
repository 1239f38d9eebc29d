"""The job queue: workers claim queued jobs, heartbeat while they run them, and dead workers' jobs
go back to the queue.

:class:`QueueMixin` is the queue part of :class:`~promptsweep.storage.Storage`. Heartbeats are
written and judged by :meth:`StorageBase._clock` (on PostgreSQL the server's clock).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from promptsweep._logging import get_logger
from promptsweep.exceptions import JobStateError
from promptsweep.storage._base import StorageBase
from promptsweep.storage._jobs import add_event, job_record
from promptsweep.storage._models import JobModel
from promptsweep.storage._records import JobRecord, JobStatus, utcnow
from promptsweep.storage._validate import check_id, check_text

_logger = get_logger(__name__)


class QueueMixin(StorageBase):
    """The job queue: :meth:`claim_job`, :meth:`heartbeat`, :meth:`requeue_stale`."""

    def claim_job(self, worker_id: str) -> JobRecord | None:
        """Atomically take the oldest ``queued`` job for ``worker_id`` (→ ``running``, its error cleared), or
        ``None``.

        PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` then an update, so concurrent workers take
        different jobs without waiting. SQLite: one guarded ``UPDATE … WHERE id = (oldest queued) AND
        status = 'queued' RETURNING id`` under the write lock. Two workers never get the same job.

        Raises:
            ValueError: ``worker_id`` is empty, longer than 255 characters or holds a NUL character.
        """
        if not isinstance(worker_id, str) or not worker_id:
            raise ValueError(f"worker_id must be a non-empty string, got {worker_id!r}")
        check_text(JobModel.__table__.c.worker_id, "worker_id", worker_id)
        now = utcnow()
        claimed = {
            "status": JobStatus.RUNNING.value,
            "worker_id": worker_id,
            "heartbeat_at": self._clock(),
            "started_at": func.coalesce(JobModel.started_at, now),
            "finished_at": None,
            "error": None,  # a new run: the last run's error (or re-queue reason) no longer applies
            "attempts": JobModel.attempts + 1,
        }
        queued = JobModel.status == JobStatus.QUEUED.value
        oldest = select(JobModel.id).where(queued).order_by(JobModel.id).limit(1)
        with self._writing("claim job") as session:
            if self._is_sqlite:
                stmt = (
                    update(JobModel)
                    .where(JobModel.id == oldest.scalar_subquery(), JobModel.status == JobStatus.QUEUED.value)
                    .values(**claimed)
                    .returning(JobModel.id)
                    .execution_options(synchronize_session=False)
                )
                job_id = session.execute(stmt).scalar()
            else:
                job_id = session.execute(oldest.with_for_update(skip_locked=True)).scalar()
                if job_id is not None:
                    session.execute(
                        update(JobModel)
                        .where(JobModel.id == job_id)
                        .values(**claimed)
                        .execution_options(synchronize_session=False)
                    )
            if job_id is None:
                return None
            row = self._job_row(session, job_id)
            add_event(row, "claimed", f"by worker {worker_id}, attempt {row.attempts}")
            session.flush()
            record = job_record(row)
        _logger.info("Worker %s claimed job %d.", worker_id, record.id)
        return record

    def heartbeat(self, job_id: int, worker_id: str) -> bool:
        """Record that ``worker_id`` still runs ``job_id``.

        Returns ``True`` while the job is ``running`` under this worker; ``False`` when it was
        cancelled, re-queued or taken by another worker - the worker should then stop. On PostgreSQL
        the heartbeat time is the server's (``now()``), on SQLite this process's.

        Raises:
            ValueError: a negative or non-integer ``job_id``. JobNotFoundError: unknown job.
        """
        with self._writing("heartbeat") as session:
            result = session.execute(
                update(JobModel)
                .where(
                    JobModel.id == check_id("job_id", job_id),
                    JobModel.worker_id == worker_id,
                    JobModel.status == JobStatus.RUNNING.value,
                )
                .values(heartbeat_at=self._clock())
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                return True
            self._job_row(session, job_id)
            return False

    def requeue_stale(self, timeout_s: float, *, max_attempts: int | None = None) -> list[int]:
        """Put back in the queue every ``running`` job whose worker's last heartbeat is older than
        ``timeout_s`` seconds (a dead worker; judged by the PostgreSQL server's clock, or on SQLite by
        this process's); its next claim resumes it. Returns their ids.

        Only jobs held by a worker (:meth:`claim_job`, :meth:`hold_job`) are re-queued. A job that
        was already taken ``max_attempts`` times is marked ``failed`` instead ("gave up after N
        attempts"), so that a job that kills its workers is not re-queued forever.

        Raises:
            ValueError: ``timeout_s`` is negative, ``max_attempts`` below 1.
        """
        if not timeout_s >= 0:
            raise ValueError(f"timeout_s must be ≥ 0 seconds, got {timeout_s!r}")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
        cutoff = self._clock() - timedelta(seconds=float(timeout_s))
        stale = (
            JobModel.status == JobStatus.RUNNING.value,
            JobModel.worker_id.is_not(None),
            func.coalesce(JobModel.heartbeat_at, JobModel.started_at, JobModel.created_at) < cutoff,
        )
        gave_up: list[int] = []
        with self._writing("requeue stale jobs") as session:
            if max_attempts is not None:
                doomed = select(JobModel).where(*stale, JobModel.attempts >= max_attempts)
                for row in session.scalars(doomed.with_for_update(skip_locked=True)):
                    row.status = JobStatus.FAILED.value
                    row.error = (
                        f"gave up after {row.attempts} attempts (--max-attempts {max_attempts}): "
                        f"its worker stopped heartbeating each time, the last one ({row.worker_id}) "
                        f"for over {timeout_s:g} s; `promptsweep retry {row.id}` queues it again"
                    )
                    row.worker_id = None
                    row.heartbeat_at = None
                    row.finished_at = utcnow()
                    add_event(row, "failed", row.error)
                    gave_up.append(row.id)
                session.flush()
            # A job being paused when its worker died is paused (no trial of it runs any more).
            paused = session.execute(
                update(JobModel)
                .where(*stale, JobModel.request == "pause")
                .values(status=JobStatus.PAUSED.value, worker_id=None, heartbeat_at=None, request=None)
                .returning(JobModel.id)
                .execution_options(synchronize_session=False)
            ).all()
            for (job_id,) in paused:
                add_event(
                    self._job_row(session, job_id), "paused", f"by the user; no heartbeat for {timeout_s:g} s"
                )
            rows = session.execute(
                update(JobModel)
                .where(*stale)
                .values(status=JobStatus.QUEUED.value, worker_id=None, heartbeat_at=None)
                .returning(JobModel.id)
                .execution_options(synchronize_session=False)
            ).all()
            ids = sorted(r[0] for r in rows)
            for job_id in ids:
                add_event(self._job_row(session, job_id), "requeued", f"no heartbeat for {timeout_s:g} s")
            session.flush()
        if gave_up:
            _logger.warning("Jobs %s failed: their workers died %d times.", gave_up, max_attempts)
        if ids:
            _logger.warning("Re-queued jobs %s: no heartbeat for %.0f s.", ids, timeout_s)
        return ids

    def hold_job(self, job_id: int, worker_id: str, *, live_within_s: float | None = None) -> JobRecord:
        """Take job ``job_id`` for ``worker_id`` (``promptsweep run`` in the foreground): ``running``,
        held and heartbeated like a claimed job, so that a worker re-queues it if this process dies.
        Not counted as an attempt (attempts count worker claims).

        Raises:
            ValueError: bad ``worker_id``. JobNotFoundError: unknown job.
            JobStateError: the job is finished, or running under another holder whose last heartbeat
                is younger than ``live_within_s`` seconds (names the holder).
        """
        if not isinstance(worker_id, str) or not worker_id:
            raise ValueError(f"worker_id must be a non-empty string, got {worker_id!r}")
        check_text(JobModel.__table__.c.worker_id, "worker_id", worker_id)
        with self._writing("hold job") as session:
            row = self._job_row(session, job_id, for_update=True)
            if row.status in (JobStatus.SUCCEEDED.value, JobStatus.CANCELLED.value):
                raise JobStateError(f"job {job_id} is {row.status}: there is nothing left to run")
            if (
                live_within_s is not None
                and row.status == JobStatus.RUNNING.value
                and row.worker_id not in (None, worker_id)
                and row.heartbeat_at is not None
            ):
                fresh = session.scalar(
                    select(JobModel.id).where(
                        JobModel.id == job_id,
                        JobModel.heartbeat_at >= self._clock() - timedelta(seconds=float(live_within_s)),
                    )
                )
                if fresh is not None:
                    raise JobStateError(
                        f"job {job_id} is running under {row.worker_id} (it heartbeated within "
                        f"{live_within_s:g} s); cancel it, or wait until that worker stops"
                    )
            row.status = JobStatus.RUNNING.value
            row.worker_id = worker_id
            row.heartbeat_at = self._clock()
            row.started_at = row.started_at or utcnow()
            row.finished_at = None
            row.error = None
            add_event(row, "running", f"in the foreground as {worker_id}")
            session.flush()
            return job_record(row)
