"""The :class:`Storage` façade: one database URL, its engine and sessions, the schema check and
upgrade, and Optuna's storage on the same database.

``Storage`` is assembled from one mixin per concept, each in its own module: job records
(``_jobs.py``), the job queue (``_queue.py``), trials, intermediate metrics and rankings
(``_trials.py``), all standing on :class:`~promptsweep.storage._base.StorageBase` (sessions, row
lookups, the heartbeat clock). This module holds what ties them to a database: opening it,
checking and upgrading its schema, closing and pickling, and the Optuna study of each job.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from typing import Any

from promptsweep.exceptions import StorageError
from promptsweep.storage import _migrations
from promptsweep.storage._engine import (
    SQLITE_BUSY_TIMEOUT_S,
    create_storage_engine,
    describe_error,
    is_sqlite,
    mask_url,
    parse_url,
    sqlite_path,
    write_engine,
)
from promptsweep.storage._jobs import STUDY_NAME_PREFIX, JobsMixin
from promptsweep.storage._queue import QueueMixin
from promptsweep.storage._trials import TRIAL_FIELDS, TrialsMixin

__all__ = ["STUDY_NAME_PREFIX", "TRIAL_FIELDS", "Storage", "upgrade_database"]


class Storage(JobsMixin, QueueMixin, TrialsMixin):
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
        self._engine = create_storage_engine(self._url)
        self._write = write_engine(self._engine)
        self._is_sqlite = is_sqlite(self._url)
        self._lock = threading.Lock()
        self._optuna: Any = None
        if check_schema:
            try:
                # Under the cross-process lock: a fresh SQLite file's first connection switches it to
                # WAL, which needs the file alone (a racing opener got "database is locked" without
                # waiting its busy timeout); and on both backends "no revision yet, but promptsweep's
                # tables" must not be judged while another process is creating them.
                with self._cross_process_lock():
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

    # -- Optuna -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _cross_process_lock(self) -> Iterator[None]:
        # Serializes the schema check on open, and Optuna table/study creation (optuna#5385: racing
        # create_study corrupted a SQLite file), across processes. PostgreSQL: a session advisory
        # lock; SQLite: flock on a side file (none when the folder cannot hold one: SQLite's own
        # error then names the database).
        path = sqlite_path(self._url)
        if self._is_sqlite and path is None:
            yield
            return
        if self._is_sqlite:
            try:
                handle = open(f"{path}.promptsweep-lock", "a+b")  # noqa: SIM115 - closed below
            except OSError:
                yield
                return
            with handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                except OSError:  # e.g. ENOLCK on a network file system: go on unlocked
                    yield
                    return
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        conn = None
        try:
            conn = self._engine.connect()
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _migrations._PG_LOCK_KEY + 1})
            conn.commit()
        except SQLAlchemyError as exc:
            if conn is not None:
                conn.close()
            raise StorageError(f"cannot open database {self.display_url!r}: {describe_error(exc)}") from exc
        with conn:
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
        (trainable parameters); so do its metric names (:meth:`name_study_metrics`). Idempotent;
        concurrent callers create it once. Raises JobNotFoundError.
        """
        job = self.get_job(job_id)
        storage = self.optuna_storage()
        import optuna

        with self._cross_process_lock():
            optuna.create_study(
                storage=storage, study_name=job.study_name, directions=job.directions, load_if_exists=True
            )
        self.name_study_metrics(job_id)
        return job.study_name

    def name_study_metrics(self, job_id: int) -> bool:
        """Give the job's Optuna study its objective names (``study.set_metric_names``, e.g.
        ``["accuracy"]``: what optuna-dashboard shows instead of "Objective 0"), unless it has them.

        Returns ``True`` when it set them, ``False`` when the study had them or does not exist yet.
        Raises JobNotFoundError.
        """
        import warnings

        import optuna

        job = self.get_job(job_id)
        try:
            study = optuna.load_study(study_name=job.study_name, storage=self.optuna_storage())
        except KeyError:
            return False
        if study.metric_names == job.metric_names:
            return False
        with warnings.catch_warnings():  # experimental since Optuna 3.2, unchanged since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(job.metric_names)
        return True


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
