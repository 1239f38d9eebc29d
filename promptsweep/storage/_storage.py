"""The :class:`Storage` façade: jobs, the job queue, trials, intermediate metrics and ranking."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from promptsweep._logging import get_logger
from promptsweep.exceptions import JobNotFoundError, StorageError, TrialNotFoundError
from promptsweep.storage import _migrations, _ranking
from promptsweep.storage._engine import (
    SQLITE_BUSY_TIMEOUT_S,
    create_storage_engine,
    is_sqlite,
    mask_url,
    parse_url,
    session_scope,
    sqlite_path,
    write_engine,
)
from promptsweep.storage._models import IntermediateMetricModel, JobModel, TrialModel
from promptsweep.storage._records import (
    BestResult,
    Direction,
    IntermediateRecord,
    JobRecord,
    JobStatus,
    TrialRecord,
    TrialState,
    as_utc,
    json_safe,
    method_variant,
    utcnow,
)

_logger = get_logger(__name__)

STUDY_NAME_PREFIX = "promptsweep-job-"

#: The keyword fields :meth:`Storage.record_trial` accepts, with the type each is stored as.
TRIAL_FIELDS: dict[str, Any] = {
    "optuna_trial_id": int,
    "ray_trial_id": str,
    "method": str,
    "params": dict,
    "state": TrialState,
    "value": float,
    "values": list,
    "metrics": dict,
    "test_metrics": dict,
    "trainable_params": int,
    "total_params": int,
    "train_seconds": float,
    "peak_memory_bytes": int,
    "steps": int,
    "epochs": float,
    "adapter_dir": str,
    "error": str,
    "started_at": datetime,
    "finished_at": datetime,
}


def _job_record(row: JobModel) -> JobRecord:
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
    )


def _trial_record(row: TrialModel) -> TrialRecord:
    return TrialRecord(
        job_id=row.job_id,
        number=row.number,
        optuna_trial_id=row.optuna_trial_id,
        ray_trial_id=row.ray_trial_id,
        method=row.method,
        variant=row.variant,
        params=dict(row.params or {}),
        state=TrialState(row.state),
        value=row.value,
        values=list(row.values) if row.values is not None else None,
        metrics=dict(row.metrics or {}),
        test_metrics=dict(row.test_metrics) if row.test_metrics is not None else None,
        trainable_params=row.trainable_params,
        total_params=row.total_params,
        train_seconds=row.train_seconds,
        peak_memory_bytes=row.peak_memory_bytes,
        steps=row.steps,
        epochs=row.epochs,
        adapter_dir=row.adapter_dir,
        error=row.error,
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at),
        updated_at=as_utc(row.updated_at),
    )


def _spec_dict(spec: Any) -> dict[str, Any]:
    if hasattr(spec, "model_dump"):  # a pydantic JobSpec
        spec = spec.model_dump(mode="json")
    if not isinstance(spec, Mapping):
        raise ValueError(f"spec must be a dict (the job spec), got {type(spec).__name__}")
    return _json_field("spec", dict(spec), finite_only=True)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _name_of(value: Any, *keys: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        for key in keys:
            if value.get(key) is not None:
                return str(value[key])
        return None
    return str(value)


def _enum(kind: type[Any], name: str, value: Any) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be one of {[m.value for m in kind]}, got {value!r}") from None


#: The largest id, trial number or step the INTEGER columns hold (PostgreSQL ``integer``).
_MAX_INT = 2**31 - 1


def _check_id(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise ValueError(f"{name} must be a non-negative integer (at most {_MAX_INT}), got {value!r}")
    return value


def _check_text(column: Any, name: str, value: str | None) -> str | None:
    """Refuse text that PostgreSQL would refuse (longer than its column, or with a NUL character), so
    that both backends accept the same input and the error names the field."""
    if value is None:
        return None
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL characters (\\x00), got {value[:80]!r}")
    length = getattr(column.type, "length", None)
    if length is not None and len(value) > length:
        raise ValueError(f"{name} must be at most {length} characters, got {len(value)}: {value[:80]!r}…")
    return value


def _json_field(name: str, value: Any, *, finite_only: bool = False) -> Any:
    """A JSON copy of ``value`` as both backends store it (tuples → lists, keys → strings).

    Non-finite numbers become ``None`` (:func:`json_safe`), or with ``finite_only`` are refused.

    Raises:
        ValueError: a value JSON cannot write (e.g. a ``Path`` or a set), a non-finite number with
            ``finite_only``, or a NUL character (PostgreSQL refuses it) - naming the field.
    """
    clean = value if finite_only else json_safe(value)
    try:
        text = json.dumps(clean, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serializable (finite numbers, str keys): {exc}") from None
    if _has_nul(clean):
        raise ValueError(f"{name} must not contain NUL characters (\\x00): PostgreSQL cannot store them")
    return json.loads(text)


def _coerce_trial_field(name: str, value: Any) -> Any:
    if value is None:
        return None
    kind = TRIAL_FIELDS[name]
    try:
        if kind is TrialState:
            return TrialState(value.value if isinstance(value, TrialState) else str(value).lower()).value
        if kind is dict:
            if not isinstance(value, Mapping):
                raise TypeError("expected a dict")
            return _json_field(name, value)
        if kind is list:
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise TypeError("expected a list of numbers")
            return [None if v is None else float(v) for v in value]
        if kind is datetime:
            if not isinstance(value, datetime):
                raise TypeError("expected a datetime")
            return as_utc(value)
        if kind is int:
            if isinstance(value, bool):
                raise TypeError("expected an integer")
            return int(value)
        if kind is float:
            return float(value)
        text = str(value)
        if name == "error":  # diagnostic text: keep it, minus what PostgreSQL cannot store
            return text.replace("\x00", "\ufffd")
        return _check_text(TrialModel.__table__.c[name], name, text)
    except (TypeError, ValueError) as exc:
        choices = f" (one of {[s.value for s in TrialState]})" if kind is TrialState else ""
        raise ValueError(f"record_trial field {name!r}={value!r} is invalid{choices}: {exc}") from exc


class Storage:
    """promptsweep's database: jobs, the job queue, trials and ranking, behind one URL.

    SQLite (the default, a file; WAL journal and a busy timeout so that the CLI and optuna-dashboard
    read while a worker writes) or PostgreSQL through psycopg 3 (``postgresql+psycopg://``, for many
    workers and machines). Optuna's tables live in the same database (:meth:`optuna_storage`).

    A database without promptsweep's schema is created at the head revision by the shipped Alembic
    migrations. All methods return frozen records (:class:`JobRecord`, :class:`TrialRecord`, …),
    never ORM rows; each runs in one transaction that commits or rolls back as a whole. A Storage is
    safe to share between threads.

    Args:
        url: the database URL; ``None`` → :func:`promptsweep.paths.default_db_url` (``$PROMPTSWEEP_DB``
            or ``sqlite:///$PROMPTSWEEP_HOME/promptsweep.db``, home defaulting to ``~/.promptsweep``).
        check_schema: check (and for a new database, create) the schema now. ``False`` only to call
            :meth:`upgrade` on an old database.
        must_exist: refuse a SQLite file that does not exist yet instead of creating it (for readers:
            a mistyped path must not leave an empty database behind).

    Raises:
        StorageError: malformed or unsupported URL, missing driver, unreachable database (the message
            names the URL without its password); no default URL given and ``$PROMPTSWEEP_HOME`` cannot
            be made; ``must_exist`` and no such SQLite file (the message names the file).
        SchemaVersionError: the schema is older than this promptsweep (names ``promptsweep db upgrade``)
            or newer.
    """

    def __init__(
        self, url: str | None = None, *, check_schema: bool = True, must_exist: bool = False
    ) -> None:
        if url is None:
            from promptsweep.paths import default_db_url

            try:
                url = default_db_url()  # creates $PROMPTSWEEP_HOME
            except OSError as exc:
                raise StorageError(
                    f"cannot make the default database's folder ($PROMPTSWEEP_HOME): {exc}. Set "
                    "PROMPTSWEEP_HOME to a writable folder, or PROMPTSWEEP_DB / --db to a database URL"
                ) from exc
        self._url = parse_url(url)
        self.display_url = mask_url(self._url)
        path = sqlite_path(self._url)
        if must_exist and path is not None and not os.path.exists(path):
            raise StorageError(
                f"no database at {os.path.abspath(path)!r} (a job's database is made by `promptsweep "
                "submit` or `run`); give the one you used with --db or PROMPTSWEEP_DB"
            )
        self._engine: Engine = create_storage_engine(self._url)
        self._write: Engine = write_engine(self._engine)
        self._is_sqlite = is_sqlite(self._url)
        self._lock = threading.Lock()
        self._optuna: Any = None
        if check_schema:
            try:
                _migrations.check_schema(self._engine, self.display_url)
            except BaseException:
                self._engine.dispose()
                raise

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The database URL, password included (give :attr:`display_url` to people)."""
        return self._url.render_as_string(hide_password=False)

    @property
    def sqlite_file(self) -> str | None:
        """The absolute path of a SQLite database's file (``None``: PostgreSQL or in-memory)."""
        path = sqlite_path(self._url)
        return os.path.abspath(path) if path is not None else None

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def close(self) -> None:
        """Close every pooled connection (the Storage can still be used: it reconnects)."""
        if self._optuna is not None:
            with contextlib.suppress(Exception):
                self._optuna.engine.dispose()
        self._engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Storage({self.display_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Pickled by URL (e.g. into a Ray task): the copy opens its own engine and connections.
        return {"url": self.url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], check_schema=False)  # type: ignore[misc]

    def _clock(self) -> Any:
        # The time heartbeats are written and judged by. PostgreSQL: the server's clock (now()), the
        # same for workers on every machine, so a machine whose clock is off neither re-queues live
        # jobs nor looks dead. SQLite: one machine, this process's clock.
        return utcnow() if self._is_sqlite else func.now()

    def _read(self, what: str) -> contextlib.AbstractContextManager[Session]:
        return session_scope(self._engine, self.display_url, what)

    def _writing(self, what: str) -> contextlib.AbstractContextManager[Session]:
        return session_scope(self._write, self.display_url, what)

    def _job_row(self, session: Session, job_id: int, *, for_update: bool = False) -> JobModel:
        # for_update: lock the row until commit (PostgreSQL ``FOR UPDATE``; SQLite's writers are
        # already serialized by ``BEGIN IMMEDIATE``), so a read-modify-write cannot lose a concurrent
        # change such as a cancel.
        _check_id("job_id", job_id)
        row = session.get(JobModel, job_id, with_for_update=for_update)
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id} in {self.display_url!r}")
        return row

    def _trial_row(self, session: Session, job_id: int, number: int) -> TrialModel:
        self._job_row(session, job_id)
        _check_id("number", number)
        row = session.scalars(
            select(TrialModel).where(TrialModel.job_id == job_id, TrialModel.number == number)
        ).first()
        if row is None:
            raise TrialNotFoundError(f"job {job_id} has no trial number {number} in {self.display_url!r}")
        return row

    # -- schema -----------------------------------------------------------------------------------
    def schema_revision(self) -> str | None:
        """The database's promptsweep schema revision (``None`` if it has none yet)."""
        return _migrations.current_revision(self._engine, self.display_url)

    def upgrade(self) -> tuple[str | None, str]:
        """Migrate the schema to this promptsweep's head revision (``promptsweep db upgrade``).

        Keeps every row; runs in one transaction (all or nothing). Returns (revision before, after).

        Raises:
            SchemaVersionError: the database was made by a newer promptsweep.
            StorageError: a migration failed (rolled back).
        """
        return _migrations.upgrade(self._engine, self.display_url)

    # -- jobs -------------------------------------------------------------------------------------
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
            _check_text(column, field, text)
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
            )
            session.add(row)
            session.flush()
            row.study_name = f"{STUDY_NAME_PREFIX}{row.id}"
            session.flush()
            record = _job_record(row)
        _logger.info("Job %d (%s) queued in %s.", record.id, record.name, self.display_url)
        return record

    def get_job(self, job_id: int) -> JobRecord:
        """Return one job. Raises :class:`JobNotFoundError` for an unknown id."""
        with self._read("get job") as session:
            return _job_record(self._job_row(session, job_id))

    def list_jobs(
        self, *, status: str | JobStatus | None = None, limit: int | None = None
    ) -> list[JobRecord]:
        """Jobs, newest first; only those with ``status`` if given, at most ``limit``.

        Raises:
            ValueError: an unknown ``status`` or a negative ``limit``.
        """
        query = select(JobModel).order_by(JobModel.id.desc())
        if status is not None:
            query = query.where(JobModel.status == _enum(JobStatus, "status", status).value)
        if limit is not None:
            query = query.limit(_check_id("limit", limit))
        with self._read("list jobs") as session:
            return [_job_record(r) for r in session.scalars(query)]

    def set_job_status(self, job_id: int, status: str | JobStatus, error: str | None = None) -> JobRecord:
        """Set a job's status (and error text); keeps the times true.

        ``running`` sets ``started_at`` (first time) and the heartbeat, and clears an earlier run's
        error; ``queued`` frees the job from its worker; ``succeeded``/``failed``/``cancelled`` set
        ``finished_at``. A ``cancelled`` job stays cancelled when a worker that was still running it
        reports ``succeeded`` or ``failed`` (the user's cancel wins; the record returned says
        ``cancelled``); ``running`` or ``queued`` re-open it.

        Raises:
            ValueError: unknown status. JobNotFoundError: unknown job.
        """
        new = _enum(JobStatus, "status", status)
        now = utcnow()
        with self._writing("set job status") as session:
            row = self._job_row(session, job_id, for_update=True)
            if row.status == JobStatus.CANCELLED.value and new in (JobStatus.SUCCEEDED, JobStatus.FAILED):
                _logger.info("Job %d was cancelled; not marking it %s.", job_id, new.value)
                return _job_record(row)
            row.status = new.value
            if error is not None:
                row.error = error
            if new is JobStatus.RUNNING:
                # A new run: the last run's error no longer describes the job.
                row.error = error
                row.started_at = row.started_at or now
                row.heartbeat_at = self._clock()
                row.finished_at = None
            elif new is JobStatus.QUEUED:
                row.worker_id = None
                row.heartbeat_at = None
                row.finished_at = None
            else:
                row.finished_at = now
            session.flush()
            return _job_record(row)

    def claim_job(self, worker_id: str) -> JobRecord | None:
        """Atomically take the oldest ``queued`` job for ``worker_id`` (→ ``running``), or ``None``.

        PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` then an update, so concurrent workers take
        different jobs without waiting. SQLite: one guarded ``UPDATE … WHERE id = (oldest queued) AND
        status = 'queued' RETURNING id`` under the write lock. Two workers never get the same job.

        Raises:
            ValueError: ``worker_id`` is empty, longer than 255 characters or holds a NUL character.
        """
        if not isinstance(worker_id, str) or not worker_id:
            raise ValueError(f"worker_id must be a non-empty string, got {worker_id!r}")
        _check_text(JobModel.__table__.c.worker_id, "worker_id", worker_id)
        now = utcnow()
        claimed = {
            "status": JobStatus.RUNNING.value,
            "worker_id": worker_id,
            "heartbeat_at": self._clock(),
            "started_at": func.coalesce(JobModel.started_at, now),
            "finished_at": None,
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
            record = _job_record(self._job_row(session, job_id))
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
                    JobModel.id == _check_id("job_id", job_id),
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

    def requeue_stale(self, timeout_s: float) -> list[int]:
        """Put back in the queue every ``running`` job whose worker's last heartbeat is older than
        ``timeout_s`` seconds (a dead worker; judged by the PostgreSQL server's clock, or on SQLite by
        this process's); its next claim resumes it. Returns their ids.

        Only jobs held by a worker (:meth:`claim_job`) are re-queued: a job run in the foreground
        (``set_job_status(id, "running")`` without a claim) sends no heartbeats and is left alone.

        Raises:
            ValueError: ``timeout_s`` is negative.
        """
        if not timeout_s >= 0:
            raise ValueError(f"timeout_s must be ≥ 0 seconds, got {timeout_s!r}")
        cutoff = self._clock() - timedelta(seconds=float(timeout_s))
        with self._writing("requeue stale jobs") as session:
            rows = session.execute(
                update(JobModel)
                .where(
                    JobModel.status == JobStatus.RUNNING.value,
                    JobModel.worker_id.is_not(None),
                    func.coalesce(JobModel.heartbeat_at, JobModel.started_at, JobModel.created_at) < cutoff,
                )
                .values(status=JobStatus.QUEUED.value, worker_id=None, heartbeat_at=None)
                .returning(JobModel.id)
                .execution_options(synchronize_session=False)
            ).all()
        ids = sorted(r[0] for r in rows)
        if ids:
            _logger.warning("Re-queued jobs %s: no heartbeat for %.0f s.", ids, timeout_s)
        return ids

    def cancel_job(self, job_id: int) -> JobRecord:
        """Cancel a ``queued`` or ``running`` job (a running job's worker sees it at its next
        :meth:`heartbeat`). A finished job is returned unchanged.

        Raises:
            JobNotFoundError: unknown job.
        """
        with self._writing("cancel job") as session:
            row = self._job_row(session, job_id, for_update=True)
            if row.status in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
                row.status = JobStatus.CANCELLED.value
                row.finished_at = utcnow()
                session.flush()
            return _job_record(row)

    # -- trials -----------------------------------------------------------------------------------
    def record_trial(self, job_id: int, number: int, **fields: Any) -> TrialRecord:
        """Insert or update trial ``number`` of ``job_id`` (an upsert: recording twice keeps one row).

        Only the given fields change (see :data:`TRIAL_FIELDS`): ``optuna_trial_id``,
        ``ray_trial_id``, ``method`` (default ``params["method"]``), ``params``, ``state``
        (``running``/``complete``/``pruned``/``fail``; a new trial starts ``running``), ``value`` and
        ``values`` (objective values; either one fills the other), ``metrics``, ``test_metrics``,
        ``trainable_params``, ``total_params``, ``train_seconds`` (s), ``peak_memory_bytes`` (bytes),
        ``steps``, ``epochs``, ``adapter_dir``, ``error``, ``started_at``, ``finished_at`` (aware
        datetimes; ``finished_at`` is set when a state other than running is first recorded). The
        method variant is derived from ``params``. Non-finite numbers are stored as NULL.

        Raises:
            ValueError: an unknown field or a value of the wrong type (names it).
            JobNotFoundError: unknown job.
        """
        _check_id("job_id", job_id)
        _check_id("number", number)
        unknown = sorted(set(fields) - set(TRIAL_FIELDS))
        if unknown:
            raise ValueError(f"record_trial got unknown field(s) {unknown}; known: {sorted(TRIAL_FIELDS)}")
        values = {k: _coerce_trial_field(k, v) for k, v in fields.items()}
        for key in ("params", "metrics", "state"):  # never NULL: None means "leave as is"
            if key in values and values[key] is None:
                del values[key]
        if "value" in values and "values" not in values and values["value"] is not None:
            values["values"] = [values["value"]]
        if "values" in values and "value" not in values:
            values["value"] = values["values"][0] if values["values"] else None
        for key in ("value", "train_seconds", "epochs"):
            if key in values:
                values[key] = json_safe(values[key])
        if values.get("values") is not None:
            values["values"] = json_safe(values["values"])
        if values.get("params") is not None:
            values["variant"] = method_variant(values["params"])
            if "method" not in values and values["params"].get("method") is not None:
                values["method"] = _coerce_trial_field("method", values["params"]["method"])
        now = utcnow()
        values["updated_at"] = now
        state = values.get("state")
        auto_finished = (
            state is not None and state != TrialState.RUNNING.value and "finished_at" not in values
        )
        insert_values = {
            "job_id": job_id,
            "number": number,
            "params": {},
            "metrics": {},
            "state": TrialState.RUNNING.value,
            "started_at": now,
            **values,
        }
        if auto_finished:
            insert_values["finished_at"] = now
        table = TrialModel.__table__
        insert = sqlite_insert if self._is_sqlite else pg_insert
        stmt = insert(table).values(**insert_values)
        set_ = {k: stmt.excluded[k] for k in values}
        if auto_finished:
            set_["finished_at"] = func.coalesce(table.c.finished_at, stmt.excluded.finished_at)
        elif state == TrialState.RUNNING.value and "finished_at" not in values:
            set_["finished_at"] = None  # running again (a retry): not finished
        stmt = stmt.on_conflict_do_update(index_elements=[table.c.job_id, table.c.number], set_=set_)
        with self._writing("record trial") as session:
            self._job_row(session, job_id)
            session.execute(stmt)
            row = self._trial_row(session, job_id, number)
            session.refresh(row)
            return _trial_record(row)

    def get_trial(self, job_id: int, number: int) -> TrialRecord:
        """Return one trial. Raises :class:`JobNotFoundError` / :class:`TrialNotFoundError`."""
        with self._read("get trial") as session:
            return _trial_record(self._trial_row(session, job_id, number))

    def list_trials(
        self, job_id: int, *, states: Iterable[str | TrialState] | None = None
    ) -> list[TrialRecord]:
        """A job's trials by number; only those in ``states`` if given. Raises JobNotFoundError."""
        query = select(TrialModel).where(TrialModel.job_id == job_id).order_by(TrialModel.number)
        if states is not None:
            query = query.where(TrialModel.state.in_([_enum(TrialState, "states", s).value for s in states]))
        with self._read("list trials") as session:
            self._job_row(session, job_id)
            return [_trial_record(r) for r in session.scalars(query)]

    def record_intermediate(
        self, job_id: int, number: int, step: int, metrics: Mapping[str, Any]
    ) -> IntermediateRecord:
        """Store trial ``number``'s validation ``metrics`` at evaluation ``step`` (an upsert on step).

        This table is the one source of truth for learning curves (see ``_models``). The trial must
        have been recorded first (:meth:`record_trial`).

        Raises:
            ValueError: negative step or non-dict metrics. JobNotFoundError / TrialNotFoundError.
        """
        _check_id("step", step)
        if not isinstance(metrics, Mapping):
            raise ValueError(f"metrics must be a dict of name → value, got {type(metrics).__name__}")
        clean = _json_field("metrics", metrics)
        now = utcnow()
        table = IntermediateMetricModel.__table__
        insert = sqlite_insert if self._is_sqlite else pg_insert
        with self._writing("record intermediate metrics") as session:
            trial = self._trial_row(session, job_id, number)
            stmt = insert(table).values(trial_id=trial.id, step=step, metrics=clean, recorded_at=now)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c.trial_id, table.c.step],
                set_={"metrics": stmt.excluded.metrics, "recorded_at": stmt.excluded.recorded_at},
            )
            session.execute(stmt)
            trial.updated_at = now
        return IntermediateRecord(job_id=job_id, number=number, step=step, metrics=clean, recorded_at=now)

    def list_intermediate(self, job_id: int, number: int) -> list[IntermediateRecord]:
        """Trial ``number``'s intermediate metrics by step. Raises JobNotFoundError / TrialNotFoundError."""
        with self._read("list intermediate metrics") as session:
            trial = self._trial_row(session, job_id, number)
            rows = session.scalars(
                select(IntermediateMetricModel)
                .where(IntermediateMetricModel.trial_id == trial.id)
                .order_by(IntermediateMetricModel.step)
            )
            return [
                IntermediateRecord(
                    job_id=job_id,
                    number=number,
                    step=r.step,
                    metrics=dict(r.metrics),
                    recorded_at=as_utc(r.recorded_at),  # type: ignore[arg-type]
                )
                for r in rows
            ]

    # -- ranking ----------------------------------------------------------------------------------
    def _ranking(self, job_id: int, what: str, build: Any) -> list[TrialRecord]:
        with self._read(what) as session:
            job = self._job_row(session, job_id)
            return [_trial_record(r) for r in session.scalars(build(Direction(job.direction)))]

    def leaderboard(self, job_id: int, *, limit: int | None = None) -> list[TrialRecord]:
        """A job's ``complete`` trials, best first: objective value in the job's direction, ties →
        fewer trainable parameters → shorter training time → lower trial number. Pruned and failed
        trials are not ranked (see :meth:`unranked_trials`). Raises JobNotFoundError."""
        if limit is not None:
            _check_id("limit", limit)
        return self._ranking(job_id, "leaderboard", lambda d: _ranking.leaderboard_query(job_id, d, limit))

    def unranked_trials(self, job_id: int) -> list[TrialRecord]:
        """A job's ``pruned`` and ``fail`` trials, by number (listed apart from the leaderboard)."""
        return self._ranking(job_id, "unranked trials", lambda _d: _ranking.unranked_query(job_id))

    def best_per_method(self, job_id: int) -> list[TrialRecord]:
        """The best ``complete`` trial of each :class:`MethodVariant` present in the job (same order
        and tie-breaks as :meth:`leaderboard`), best first. Raises JobNotFoundError."""
        return self._ranking(job_id, "best per method", lambda d: _ranking.best_per_method_query(job_id, d))

    def pareto_front(self, job_id: int) -> list[TrialRecord]:
        """The Pareto front of objective value vs trainable parameters over ``complete`` trials:
        those no other trial beats on one without losing on the other. Fewest parameters first.
        Raises JobNotFoundError."""
        return self._ranking(job_id, "Pareto front", lambda d: _ranking.pareto_front_query(job_id, d))

    def best_across_jobs(self) -> list[BestResult]:
        """The best ``complete`` trial per (model, dataset, task, objective metric, direction) over
        all jobs, compared in that direction (ties as in :meth:`leaderboard`, then the older job)."""
        with self._read("best across jobs") as session:
            counts = {tuple(r[:5]): r[5] for r in session.execute(_ranking.jobs_per_group_query())}
            out = []
            for trial, job in session.execute(_ranking.best_across_jobs_query()).tuples():
                key = (job.model, job.dataset, job.task, job.objective_metric, job.direction)
                out.append(
                    BestResult(
                        model=job.model,
                        dataset=job.dataset,
                        task=job.task,
                        objective_metric=job.objective_metric,
                        direction=Direction(job.direction),
                        job_id=job.id,
                        job_name=job.name,
                        trial=_trial_record(trial),
                        jobs=counts.get(key, 1),
                    )
                )
            return out

    # -- Optuna -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _cross_process_lock(self) -> Iterator[None]:
        # Serializes Optuna table/study creation across processes (optuna#5385: racing create_study
        # corrupted a SQLite file). PostgreSQL: a session advisory lock; SQLite: flock on a side file.
        path = sqlite_path(self._url)
        if self._is_sqlite and path is None:
            yield
            return
        if self._is_sqlite:
            with open(f"{path}.promptsweep-lock", "a+b") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        from sqlalchemy import text

        with self._engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _migrations._PG_LOCK_KEY + 1})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _migrations._PG_LOCK_KEY + 1})
                conn.commit()

    def optuna_storage(self) -> Any:
        """An ``optuna.storages.RDBStorage`` on this database (one per Storage, made on first call).

        Optuna's tables live beside promptsweep's, so ``optuna-dashboard <url>`` opens every job's
        study. On SQLite its connections get the same busy timeout (the file is already in WAL mode).

        Raises:
            StorageError: Optuna cannot open the database.
        """
        with self._lock:
            if self._optuna is None:
                import optuna

                if self._is_sqlite:
                    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
                else:
                    engine_kwargs = {"pool_pre_ping": True}
                try:
                    with self._cross_process_lock():
                        self._optuna = optuna.storages.RDBStorage(self.url, engine_kwargs=engine_kwargs)
                except Exception as exc:
                    raise StorageError(f"Optuna cannot open {self.display_url!r}: {exc}") from exc
            return self._optuna

    def create_study(self, job_id: int) -> str:
        """Create the job's Optuna study once (before its trials start) and return its name.

        Directions come from the job: its objective's, then ``minimize`` for a secondary objective
        (trainable parameters). Idempotent; concurrent callers create it once. Raises JobNotFoundError.
        """
        job = self.get_job(job_id)
        storage = self.optuna_storage()
        import optuna

        with self._cross_process_lock():
            optuna.create_study(
                storage=storage, study_name=job.study_name, directions=job.directions, load_if_exists=True
            )
        return job.study_name


def upgrade_database(url: str | None = None) -> tuple[str | None, str]:
    """Migrate the database at ``url`` (default: promptsweep's default) to the head schema.

    What ``promptsweep db upgrade`` runs. Returns (revision before, revision after); the former is
    ``None`` for a database that had no promptsweep schema (it is created).

    Raises:
        StorageError: bad URL, unreachable database, failed migration (rolled back).
        SchemaVersionError: the database was made by a newer promptsweep.
    """
    storage = Storage(url, check_schema=False)
    try:
        return storage.upgrade()
    finally:
        storage.close()
