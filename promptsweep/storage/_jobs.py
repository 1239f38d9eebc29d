"""Job records: submit, read, list, change the status of, cancel and summarize search jobs.

:class:`JobsMixin` is the jobs part of :class:`~promptsweep.storage.Storage`; the job queue
(claims, heartbeats, re-queues) is in ``_queue.py``. :func:`job_record` turns a row into the frozen
:class:`JobRecord` every job method returns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from promptsweep._logging import get_logger
from promptsweep.exceptions import JobStateError
from promptsweep.storage._base import StorageBase
from promptsweep.storage._models import JobModel
from promptsweep.storage._records import Direction, JobRecord, JobStatus, as_utc, utcnow
from promptsweep.storage._validate import check_id, check_text, enum_value, json_field

_logger = get_logger(__name__)

STUDY_NAME_PREFIX = "promptsweep-job-"


def job_record(row: JobModel) -> JobRecord:
    """The frozen record of a job row (read inside the row's session)."""
    return JobRecord(
        id=row.id,
        name=row.name,
        spec=dict(row.spec or {}),
        status=JobStatus(row.status),
        objective_metric=row.objective_metric,
        direction=Direction(row.direction),
        secondary_objective=row.secondary_objective,
        model=row.model,
        dataset=row.dataset,
        task=row.task,
        study_name=row.study_name or f"{STUDY_NAME_PREFIX}{row.id}",
        created_at=as_utc(row.created_at),  # type: ignore[arg-type]
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at),
        error=row.error,
        worker_id=row.worker_id,
        heartbeat_at=as_utc(row.heartbeat_at),
        attempts=row.attempts or 0,
        summary=dict(row.summary or {}),
        history=list(row.history or []),
        spec_hash=row.spec_hash or spec_hash(row.spec or {}),
    )


def spec_hash(spec: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a stored spec in canonical JSON: sorted keys, no spaces, UTF-8."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_CANCELLABLE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value, JobStatus.INTERRUPTED.value)
_RETRYABLE = (JobStatus.FAILED.value, JobStatus.INTERRUPTED.value)
#: The newest events a job's history keeps (a job re-queued forever must not grow without bound).
MAX_HISTORY = 200


def add_event(row: JobModel, event: str, detail: str | None = None) -> None:
    """Append ``event`` (with the time, UTC, and an optional ``detail``) to the job row's history."""
    entry: dict[str, Any] = {"at": utcnow().isoformat(), "event": event}
    if detail:
        entry["detail"] = detail[:1000]
    row.history = [*(row.history or []), entry][-MAX_HISTORY:]


def _spec_dict(spec: Any) -> dict[str, Any]:
    if hasattr(spec, "model_dump"):  # a pydantic JobSpec
        spec = spec.model_dump(mode="json")
    if not isinstance(spec, Mapping):
        raise ValueError(f"spec must be a dict (the job spec), got {type(spec).__name__}")
    return json_field("spec", dict(spec), finite_only=True)


def _name_of(value: Any, *keys: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        for key in keys:
            if value.get(key) is not None:
                return str(value[key])
        return None
    return str(value)


class JobsMixin(StorageBase):
    """Job records: :meth:`create_job`, :meth:`get_job`, :meth:`list_jobs`, :meth:`set_job_status`,
    :meth:`cancel_job`, :meth:`update_job_summary`."""

    def create_job(
        self,
        name: str,
        spec: Mapping[str, Any] | Any,
        *,
        objective_metric: str | None = None,
        direction: str | Direction | None = None,
        secondary_objective: str | None = None,
        model: str | None = None,
        dataset: str | None = None,
        task: str | None = None,
    ) -> JobRecord:
        """Submit a job: stored ``queued`` with its spec, study name ``promptsweep-job-<id>``.

        Keyword arguments win; missing ones are read from the spec: ``objective.metric``,
        ``objective.direction`` (default ``maximize``), ``objective.secondary`` (e.g.
        ``trainable_params``), ``model`` (or ``model.name``), ``dataset``/``data`` (or their
        ``source``/``name``), ``task``.

        Args:
            name: the job's name (non-empty, ≤ 255 characters).
            spec: the job spec as a JSON-able dict (or a pydantic model, dumped in JSON mode).

        Raises:
            ValueError: empty name, a spec that is not JSON-serializable, an unknown direction.
            StorageError: the write failed (nothing is stored).
        """
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise ValueError(f"job name must be a non-empty string of at most 255 characters, got {name!r}")
        spec_dict = _spec_dict(spec)
        objective = spec_dict.get("objective")
        objective = objective if isinstance(objective, Mapping) else {"metric": objective}
        metric = objective_metric or _name_of(objective, "metric", "name")
        raw_direction = direction or objective.get("direction") or Direction.MAXIMIZE.value
        try:
            direction_value = Direction(getattr(raw_direction, "value", raw_direction)).value
        except ValueError:
            raise ValueError(
                f"objective direction must be 'maximize' or 'minimize', got {raw_direction!r}"
            ) from None
        secondary = secondary_objective or _name_of(objective.get("secondary"), "metric", "name")
        model_name = model or _name_of(spec_dict.get("model"), "name", "path")
        dataset_name = dataset or _name_of(
            spec_dict.get("dataset", spec_dict.get("data")), "source", "name", "path"
        )
        task_name = task or _name_of(spec_dict.get("task"), "type", "name")
        columns = JobModel.__table__.c
        for column, field, text in (
            (columns.name, "job name", name),
            (columns.objective_metric, "objective metric", metric),
            (columns.secondary_objective, "secondary objective", secondary),
            (columns.model, "model", model_name),
            (columns.dataset, "dataset", dataset_name),
            (columns.task, "task", task_name),
        ):
            check_text(column, field, text)
        with self._writing("create job") as session:
            row = JobModel(
                name=name.strip(),
                spec=spec_dict,
                status=JobStatus.QUEUED.value,
                objective_metric=metric,
                direction=direction_value,
                secondary_objective=secondary,
                model=model_name,
                dataset=dataset_name,
                task=task_name,
                created_at=utcnow(),
                attempts=0,
                spec_hash=spec_hash(spec_dict),
            )
            add_event(row, "submitted")
            session.add(row)
            session.flush()
            row.study_name = f"{STUDY_NAME_PREFIX}{row.id}"
            session.flush()
            record = job_record(row)
        _logger.info("Job %d (%s) queued in %s.", record.id, record.name, self.display_url)
        return record

    def get_job(self, job_id: int) -> JobRecord:
        """Return one job. Raises :class:`JobNotFoundError` for an unknown id."""
        with self._read("get job") as session:
            return job_record(self._job_row(session, job_id))

    def list_jobs(
        self, *, status: str | JobStatus | None = None, limit: int | None = None
    ) -> list[JobRecord]:
        """Jobs, newest first; only those with ``status`` if given, at most ``limit``.

        Raises:
            ValueError: an unknown ``status`` or a negative ``limit``.
        """
        query = select(JobModel).order_by(JobModel.id.desc())
        if status is not None:
            query = query.where(JobModel.status == enum_value(JobStatus, "status", status).value)
        if limit is not None:
            query = query.limit(check_id("limit", limit))
        with self._read("list jobs") as session:
            return [job_record(r) for r in session.scalars(query)]

    def set_job_status(
        self, job_id: int, status: str | JobStatus, error: str | None = None, *, holder: str | None = None
    ) -> JobRecord:
        """Set a job's status (and error text); keeps the times true.

        ``running`` sets ``started_at`` (first time) and the heartbeat, and clears an earlier run's
        error; ``queued`` and ``interrupted`` free the job from its worker; ``succeeded``/``failed``/
        ``cancelled`` set ``finished_at``. A ``cancelled`` job stays cancelled when a worker that was
        still running it reports ``succeeded``, ``failed`` or ``interrupted`` (the user's cancel wins;
        the record returned says ``cancelled``); ``running`` or ``queued`` re-open it. With
        ``holder``, the change is made only while the job is ``running`` under that holder (a run
        whose job was re-queued or taken over writes nothing over the new holder's status).

        Raises:
            ValueError: unknown status. JobNotFoundError: unknown job.
        """
        new = enum_value(JobStatus, "status", status)
        now = utcnow()
        with self._writing("set job status") as session:
            row = self._job_row(session, job_id, for_update=True)
            if row.status == JobStatus.CANCELLED.value and new in (
                JobStatus.SUCCEEDED,
                JobStatus.FAILED,
                JobStatus.INTERRUPTED,
            ):
                _logger.info("Job %d was cancelled; not marking it %s.", job_id, new.value)
                return job_record(row)
            if holder is not None and (row.status != JobStatus.RUNNING.value or row.worker_id != holder):
                _logger.info("Job %d is no longer held by %s; not marking it %s.", job_id, holder, new.value)
                return job_record(row)
            row.status = new.value
            add_event(row, new.value, error)
            if error is not None:
                row.error = error
            if new is JobStatus.RUNNING:
                # A new run: the last run's error no longer describes the job.
                row.error = error
                row.started_at = row.started_at or now
                row.heartbeat_at = self._clock()
                row.finished_at = None
            elif new in (JobStatus.QUEUED, JobStatus.INTERRUPTED):
                row.worker_id = None
                row.heartbeat_at = None
                row.finished_at = None
            else:
                row.finished_at = now
            session.flush()
            return job_record(row)

    def cancel_job(self, job_id: int) -> JobRecord:
        """Cancel a ``queued``, ``running`` or ``interrupted`` job (a running job's worker sees it at
        its next :meth:`heartbeat`).

        Raises:
            JobNotFoundError: unknown job. JobStateError: the job has finished (names its status).
        """
        with self._writing("cancel job") as session:
            row = self._job_row(session, job_id, for_update=True)
            if row.status not in _CANCELLABLE:
                raise JobStateError(
                    f"job {job_id} is {row.status}: only a queued, running or interrupted job can be "
                    "cancelled"
                )
            row.status = JobStatus.CANCELLED.value
            row.finished_at = utcnow()
            add_event(row, "cancelled", "by the user")
            session.flush()
            return job_record(row)

    def retry_job(self, job_id: int) -> JobRecord:
        """Put a ``failed`` or ``interrupted`` job back in the queue (``queued``): the next worker
        that claims it resumes it (its finished trials are kept; unfinished ones re-run).

        Raises:
            JobNotFoundError: unknown job. JobStateError: the job is in another state (names it).
        """
        with self._writing("retry job") as session:
            row = self._job_row(session, job_id, for_update=True)
            if row.status not in _RETRYABLE:
                raise JobStateError(
                    f"job {job_id} is {row.status}: only a failed or interrupted job can be retried"
                )
            add_event(row, "retried", f"was {row.status}" + (f": {row.error}" if row.error else ""))
            row.status = JobStatus.QUEUED.value
            row.error = None
            row.worker_id = None
            row.heartbeat_at = None
            row.finished_at = None
            row.attempts = 0  # a fresh allowance of worker deaths (max_job_attempts)
            session.flush()
            return job_record(row)

    def update_job_summary(self, job_id: int, **parts: Any) -> JobRecord:
        """Merge ``parts`` into the job's JSON summary (:attr:`JobRecord.summary`) and return the job.

        Each keyword is one top-level key of the summary: it replaces that key's value, other keys
        are kept, and a key given as ``None`` is removed. Values are stored as JSON like the trial
        fields: NumPy scalars become plain numbers, NaN and ±inf are stored as ``null``. Storage does
        not interpret the keys (the search layer keeps its plan, floors, finalists and selected trial
        there). One write transaction that locks the job row (PostgreSQL ``FOR UPDATE``), so
        concurrent updates of different keys all survive.

        Raises:
            ValueError: a value JSON cannot write, or a NUL character (names the key).
            JobNotFoundError: unknown job.
        """
        # Checked before the transaction opens; {key: value} so that a NUL in the key is refused too.
        # A top-level NaN is stored as null: only a value given as None removes its key.
        given = {
            key: json_field(f"summary key {key!r}", {key: value})[key]
            for key, value in parts.items()
            if value is not None
        }
        removed = [key for key, value in parts.items() if value is None]
        with self._writing("update job summary") as session:
            row = self._job_row(session, job_id, for_update=True)
            summary = {**(row.summary or {}), **given}
            for key in removed:
                summary.pop(key, None)
            row.summary = summary or None
            session.flush()
            return job_record(row)
