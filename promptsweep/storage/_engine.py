"""Engines and the one session context of promptsweep's storage.

- :func:`create_storage_engine` parses and checks the database URL (errors name it without its
  password), sets SQLite up for one writer and many readers (WAL journal, a busy timeout, foreign
  keys, ``BEGIN IMMEDIATE`` for write transactions) and PostgreSQL through psycopg 3.
- :func:`session_scope` is the only way promptsweep opens a session (as optuna's
  ``_create_scoped_session``): it commits, or rolls back and turns any ``SQLAlchemyError`` into a
  :class:`~promptsweep.exceptions.StorageError` naming the URL - so nothing is written half.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from promptsweep._logging import get_logger
from promptsweep.exceptions import StorageError

_logger = get_logger(__name__)

#: How long (seconds) a SQLite connection waits for another writer before "database is locked".
SQLITE_BUSY_TIMEOUT_S = 60.0

_WRITE_OPTION = "promptsweep_write"
_PASSWORD_RE = re.compile(r"(://[^:/@]*:)[^@]*@")
_QUERY_PASSWORD_RE = re.compile(r"([?&](?:ssl)?password=)[^&]*", re.IGNORECASE)


def mask_url(url: str | URL) -> str:
    """Return ``url`` with its password replaced by ``***`` (also for URLs SQLAlchemy cannot parse).

    Both places a password can hide are masked: ``user:PASSWORD@host`` and a ``password=`` query
    parameter (which psycopg also accepts).
    """
    if isinstance(url, URL):
        shown = url.render_as_string(hide_password=True)
    else:
        try:
            shown = make_url(url).render_as_string(hide_password=True)
        except Exception:  # malformed: mask by pattern
            shown = _PASSWORD_RE.sub(r"\1***@", str(url))
    return _QUERY_PASSWORD_RE.sub(r"\1***", shown)


def parse_url(url: str) -> URL:
    """Parse a database URL; ``postgresql://`` and ``postgres://`` mean psycopg 3; a SQLite path may
    start with ``~`` (the home directory).

    Raises:
        StorageError: the URL is malformed or names a backend other than SQLite or PostgreSQL
            (the message names the URL without its password).
    """
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"database URL must be a non-empty string like 'sqlite:///path.db', got {url!r}")
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is not a number
        raise StorageError(
            f"malformed database URL {mask_url(url)!r}: expected 'sqlite:///PATH' or "
            "'postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB'"
        ) from exc
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database.startswith("~"):
        parsed = parsed.set(database=os.path.expanduser(parsed.database))
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StorageError(
            f"unsupported database URL {mask_url(parsed)!r}: promptsweep stores jobs in SQLite "
            "('sqlite:///PATH') or PostgreSQL ('postgresql+psycopg://…')"
        )
    return parsed


def is_sqlite(url: URL) -> bool:
    """True when ``url`` is a SQLite URL."""
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: URL) -> str | None:
    """The file of a SQLite URL, or ``None`` for an in-memory database."""
    if not is_sqlite(url):
        return None
    db = url.database
    if not db or db == ":memory:" or db.startswith("file::memory:"):
        return None
    return db


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own transaction handling is off).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() not in ("wal", "memory"):
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
    finally:
        cur.close()


def _sqlite_on_begin(conn: Any) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE): a deferred transaction that reads and
    # then writes can fail at once with "database is locked" instead of waiting its busy timeout.
    if conn.get_execution_options().get(_WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def create_storage_engine(url: URL) -> Engine:
    """Create the engine for ``url`` (see the module docstring).

    Raises:
        StorageError: the driver is missing (e.g. psycopg for PostgreSQL).
    """
    kwargs: dict[str, Any] = {"future": True}
    if is_sqlite(url):
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        if sqlite_path(url) is None:
            kwargs["poolclass"] = StaticPool
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(url, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        hint = " (install it: pip install 'promptsweep[postgres]')" if not is_sqlite(url) else ""
        raise StorageError(f"no database driver for {mask_url(url)!r}{hint}: {exc}") from exc
    if is_sqlite(url):
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def write_engine(engine: Engine) -> Engine:
    """A view of ``engine`` (same pool) whose transactions are write transactions."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def describe_error(exc: BaseException) -> str:
    """One line from a SQLAlchemy error: the driver's own message when there is one."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def session_scope(engine: Engine, display_url: str, what: str) -> Iterator[Session]:
    """Open a session on ``engine``; commit at the end, roll back on any error.

    Args:
        engine: the engine (a :func:`write_engine` for writes).
        display_url: the URL without password, named in errors.
        what: what the session does ("create job", …), named in errors.

    Raises:
        StorageError: any ``SQLAlchemyError`` (the original is chained as ``__cause__``).
    """
    session = Session(bind=engine, expire_on_commit=False, autoflush=False)
    try:
        yield session
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise StorageError(f"{what} on {display_url!r} violates a constraint: {describe_error(exc)}") from exc
    except SQLAlchemyError as exc:
        session.rollback()
        raise StorageError(f"{what} failed on {display_url!r}: {describe_error(exc)}") from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
