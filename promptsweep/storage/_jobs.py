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
        request=row.request,
        extra_trials=int(row.extra_trials or 0),
        extra_time_s=float(row.extra_time_s or 0.0),
    )


def spec_hash(spec: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a stored spec in canonical JSON: sorted keys, no spaces, UTF-8."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_CANCELLABLE = (
    JobStatus.QUEUED.value,
    JobStatus.RUNNING.value,
    JobStatus.INTERRUPTED.value,
    JobStatus.PAUSED.value,
)
_RETRYABLE = (JobStatus.FAILED.value, JobStatus.INTERRUPTED.value)
_EXTENDABLE = (
    JobStatus.QUEUED.value,
    JobStatus.RUNNING.value,
    JobStatus.PAUSED.value,
    JobStatus.INTERRUPTED.value,
    JobStatus.SUCCEEDED.value,
)
#: Statuses that end a pending stop / pause request (the job ended, paused or was interrupted).
_ENDS_REQUEST = (
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus.PAUSED,
    JobStatus.INTERRUPTED,
)
#: The newest events a job's history keeps (a job re-queued forever must not grow without bound).
MAX_HISTORY = 200


def add_event(row: JobModel, event: str, detail: str | None = None) -> None:
    """Append ``event`` (with the time, UTC, and an optional ``detail``) to the job row's history."""
    entry: dict[str, Any] = {"at": utcnow().isoformat(), "event": event}
    if detail:
        entry["detail"] = detail[:1000]
    row.history = [*(row.history or []), entry][-MAX_HISTORY:]


def _queue_again(row: JobModel) -> None:
    """Put the job row back in the queue as a fresh claim would find it: ``queued``, no error, no
    holder, heartbeat or finish time (``started_at`` and the history are kept)."""
    row.status = JobStatus.QUEUED.value
    row.error = None
    row.worker_id = None
    row.heartbeat_at = None
    row.finished_at = None


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
    :meth:`update_job_summary`; the lifecycle verbs :meth:`cancel_job`, :meth:`stop_job`,
    :meth:`pause_job`, :meth:`resume_job`, :meth:`extend_job`, :meth:`retry_job`."""

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
        self,
        job_id: int,
        status: str | JobStatus,
        error: str | None = None,
        *,
        holder: str | None = None,
        requeue_beyond: tuple[int, float] | None = None,
    ) -> JobRecord:
        """Set a job's status (and error text); keeps the times true.

        ``running`` sets ``started_at`` (first time) and the heartbeat, and clears an earlier run's
        error; ``queued``, ``paused`` and ``interrupted`` free the job from its worker;
        ``succeeded``/``failed``/``cancelled`` set ``finished_at``. Every status but ``running`` and
        ``queued`` ends a pending stop / pause request. A ``cancelled`` job stays cancelled when a
        worker that was still running it reports ``succeeded``, ``failed`` or ``interrupted`` (the
        user's cancel wins; the record returned says ``cancelled``); ``running`` or ``queued``
        re-open it. With
        ``holder``, the change is made only while the job is ``running`` under that holder (a run
        whose job was re-queued or taken over writes nothing over the new holder's status); a holder
        that hands its job back (``queued``: the worker was stopped) does not use up one of its
        attempts, and a job with a pending pause is ``paused`` instead; a holder pausing a job whose
        pause was withdrawn meanwhile (``resume``) queues it instead.

        ``requeue_beyond`` (with ``succeeded``): the extensions (trials, seconds) the run saw through.
        A job extended beyond them meanwhile is recorded succeeded and queued again in the same
        transaction, so that the next worker runs the extension (and a cancel in between wins).

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
            if new is JobStatus.PAUSED and holder is not None and row.request != "pause":
                # `resume` withdrew the pause after the run acted on it: queued, a worker continues
                new, error = JobStatus.QUEUED, "the pause was withdrawn as the run paused: queued to continue"
            if new is JobStatus.QUEUED and holder is not None:
                row.attempts = max(0, int(row.attempts or 0) - 1)  # handed back, not died
                if row.request == "pause":
                    new, error = JobStatus.PAUSED, f"paused by the user (its worker stopped: {error})"
            row.status = new.value
            add_event(row, new.value, error)
            if error is not None:
                row.error = error
            if new is JobStatus.SUCCEEDED and requeue_beyond is not None:
                trials, time_s = requeue_beyond
                if int(row.extra_trials or 0) > int(trials or 0) or float(row.extra_time_s or 0.0) > float(
                    time_s or 0.0
                ):
                    new = JobStatus.QUEUED
                    row.status = new.value
                    row.request = None
                    add_event(row, "queued", "extended while it finished: the next worker runs the extension")
            if new in _ENDS_REQUEST:
                row.request = None
            if new is JobStatus.RUNNING:
                # A new run: the last run's error no longer describes the job.
                row.error = error
                row.started_at = row.started_at or now
                row.heartbeat_at = self._clock()
                row.finished_at = None
            elif new in (JobStatus.QUEUED, JobStatus.INTERRUPTED, JobStatus.PAUSED):
                row.worker_id = None
                row.heartbeat_at = None
                row.finished_at = None
            else:
                row.finished_at = now
            session.flush()
            return job_record(row)

    def cancel_job(self, job_id: int) -> JobRecord:
        """Cancel a ``queued``, ``running``, ``paused`` or ``interrupted`` job: it ends now. A running
        job's driver sees it within seconds and kills its running trials (recorded ``cancelled``).

        Raises:
            JobNotFoundError: unknown job. JobStateError: the job has finished (names its status).
        """
        with self._writing("cancel job") as session:
            row = self._job_row(session, job_id, for_update=True)
            if row.status not in _CANCELLABLE:
                raise JobStateError(
                    f"job {job_id} is {row.status}: only a queued, running, paused or interrupted job "
                    "can be cancelled"
                )
            row.status = JobStatus.CANCELLED.value
            row.finished_at = utcnow()
            row.request = None
            add_event(row, "cancelled", "by the user")
            session.flush()
            return job_record(row)

    def stop_job(self, job_id: int) -> JobRecord:
        """Stop a job that has run: it starts no new trial, lets its running trials finish and count,
        then selects and exports as usual and ends ``succeeded`` ("stopped by the user").

        A ``running`` job gets the request (``request = "stop"``), which its driver sees within
        seconds. A ``paused`` or ``interrupted`` job, or a ``queued`` one that has run before (re-queued
        or resumed), is queued with the request: the worker that claims it starts no trial and selects
        from the finished ones. Asking again is a no-op.

        Raises:
            JobNotFoundError: unknown job. JobStateError: the job has finished, or has never started
                (cancel it instead); names its status.
        """
        with self._writing("stop job") as session:
            row = self._job_row(session, job_id, for_update=True)
            status = row.status
            if status in (JobStatus.QUEUED.value, JobStatus.PAUSED.value) and row.started_at is None:
                raise JobStateError(
                    f"job {job_id} is {status} and has never started: nothing to select from; cancel it"
                )
            if status not in (
                JobStatus.RUNNING.value,
                JobStatus.QUEUED.value,
                JobStatus.PAUSED.value,
                JobStatus.INTERRUPTED.value,
            ):
                raise JobStateError(
                    f"job {job_id} is {status}: only a running, queued, paused or interrupted job can "
                    "be stopped"
                )
            if row.request == "stop":
                return job_record(row)
            row.request = "stop"
            detail = "by the user: no new trial; running trials finish, then the selection"
            if status in (JobStatus.PAUSED.value, JobStatus.INTERRUPTED.value):
                row.status = JobStatus.QUEUED.value
                row.error = None
                detail = f"by the user (was {status}): queued to select from its finished trials"
            add_event(row, "stop requested", detail)
            session.flush()
            return job_record(row)

    def pause_job(self, job_id: int) -> JobRecord:
        """Pause a job. A ``queued`` one is ``paused`` at once (no worker claims it). A ``running`` one
        gets the request (``request = "pause"``): its driver starts no new trial, lets the running
        ones finish and count, and leaves the job ``paused`` with its study; :meth:`resume_job`
        queues it again. Asking again is a no-op.

        Raises:
            JobNotFoundError: unknown job. JobStateError: the job is not queued or running (names its
                status), or a stop is pending.
        """
        with self._writing("pause job") as session:
            row = self._job_row(session, job_id, for_update=True)
            if row.request == "stop":
                raise JobStateError(f"job {job_id} is {row.status} and being stopped: it cannot be paused")
            if row.status == JobStatus.QUEUED.value:
                row.status = JobStatus.PAUSED.value
                row.request = None
                add_event(row, "paused", "by the user, while queued")
            elif row.status == JobStatus.RUNNING.value:
                if row.request == "pause":
                    return job_record(row)
                row.request = "pause"
                add_event(row, "pause requested", "by the user: no new trial; running trials finish")
            else:
                raise JobStateError(
                    f"job {job_id} is {row.status}: only a queued or running job can be paused"
                )
            session.flush()
            return job_record(row)

    def resume_job(self, job_id: int) -> JobRecord:
        """Queue a ``paused`` or ``interrupted`` job again: the next worker that claims it continues
        its study (sampler history kept, trial numbers continue). On a ``running`` job with a
        pending pause, withdraws the pause.

        Raises:
            JobNotFoundError: unknown job. JobStateError: any other state (names it).
        """
        with self._writing("resume job") as session:
            row = self._job_row(session, job_id, for_update=True)
            if row.status == JobStatus.RUNNING.value and row.request == "pause":
                row.request = None
                add_event(row, "resumed", "the pending pause was withdrawn")
            elif row.status in (JobStatus.PAUSED.value, JobStatus.INTERRUPTED.value):
                add_event(row, "resumed", f"was {row.status}; queued")
                _queue_again(row)
            else:
                raise JobStateError(
                    f"job {job_id} is {row.status}: only a paused or interrupted job (or a running one "
                    "being paused) can be resumed"
                )
            session.flush()
            return job_record(row)

    def extend_job(self, job_id: int, *, trials: int | None = None, time_s: float | None = None) -> JobRecord:
        """Add ``trials`` trials and/or ``time_s`` wall-clock seconds to a job's budget.

        The job's study is continued, never restarted: a ``running`` job's driver runs them after
        its current trials; a ``queued``, ``paused`` or ``interrupted`` job runs them when it is
        next run; a ``succeeded`` job (stopped ones included) is ``queued`` again and the worker that
        claims it runs exactly ``trials`` more trials (and/or new trials for ``time_s`` seconds) in
        the same study, then selects again. Adds to :attr:`JobRecord.extra_trials` /
        :attr:`JobRecord.extra_time_s`.

        Raises:
            ValueError: neither given, or a non-positive (or non-integer) ``trials``, a ``time_s``
                under 1 s (names it).
            JobNotFoundError: unknown job. JobStateError: a failed or cancelled job (names its
                status; retry a failed job instead), or a running job being stopped.
        """
        if trials is None and time_s is None:
            raise ValueError("extend needs trials and/or time_s")
        if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
            raise ValueError(f"trials must be a positive whole number, got {trials!r}")
        if time_s is not None and (
            isinstance(time_s, bool) or not isinstance(time_s, int | float) or not 1 <= time_s < float("inf")
        ):
            raise ValueError(f"time_s must be a number of seconds, at least 1, got {time_s!r}")
        with self._writing("extend job") as session:
            row = self._job_row(session, job_id, for_update=True)
            if row.status not in _EXTENDABLE:
                hint = "; `promptsweep retry` queues a failed job again" if row.status == "failed" else ""
                raise JobStateError(
                    f"job {job_id} is {row.status}: only a queued, running, paused, interrupted or "
                    f"succeeded job can be extended{hint}"
                )
            if row.request == "stop":
                raise JobStateError(
                    f"job {job_id} is {row.status} and being stopped: extend it once it has succeeded"
                )
            row.extra_trials = int(row.extra_trials or 0) + int(trials or 0)
            row.extra_time_s = float(row.extra_time_s or 0.0) + float(time_s or 0.0)
            parts = [f"+{trials} trials" if trials else "", f"+{time_s:g} s" if time_s else ""]
            detail = ", ".join(p for p in parts if p)
            if row.status == JobStatus.SUCCEEDED.value:
                _queue_again(row)
                row.request = None
                detail += "; was succeeded: queued to continue its study"
            add_event(row, "extended", detail)
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
            _queue_again(row)
            row.request = None
            row.attempts = 0  # a fresh allowance of worker deaths (max_job_attempts)
            session.flush()
            return job_record(row)

    def update_job_summary(self, job_id: int, *, holder: str | None = None, **parts: Any) -> JobRecord:
        """Merge ``parts`` into the job's JSON summary (:attr:`JobRecord.summary`) and return the job.

        Each keyword is one top-level key of the summary: it replaces that key's value, other keys
        are kept, and a key given as ``None`` is removed. Values are stored as JSON like the trial
        fields: NumPy scalars become plain numbers, NaN and ±inf are stored as ``null``. Storage does
        not interpret the keys (the search layer keeps its plan, floors, finalists and selected trial
        there). One write transaction that locks the job row (PostgreSQL ``FOR UPDATE``), so
        concurrent updates of different keys all survive. With ``holder``, written only while the
        job runs under that holder (else nothing is written; the record returned shows who holds it).

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
            if holder is not None and (row.status != JobStatus.RUNNING.value or row.worker_id != holder):
                return job_record(row)
            summary = {**(row.summary or {}), **given}
            for key in removed:
                summary.pop(key, None)
            row.summary = summary or None
            session.flush()
            return job_record(row)
