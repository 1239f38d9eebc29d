"""Schema versions: Alembic migrations shipped in ``_alembic/`` (package data) and the version check.

Follows optuna's ``storages/_rdb`` (``_VersionManager``): readable revision ids, ``render_as_batch``
for SQLite, and a check whose error names the upgrade command. The head revision is a constant here
(so opening a database does not load Alembic); a test keeps it equal to the scripts' head.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from promptsweep._logging import get_logger
from promptsweep.exceptions import SchemaVersionError, StorageError
from promptsweep.storage._engine import describe_error, write_engine
from promptsweep.storage._models import VERSION_TABLE

_logger = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("_alembic")
#: The revision this promptsweep's models match (the newest file in ``_alembic/versions``).
HEAD_REVISION = "0006_trial_node"
#: The first revision (a database made by promptsweep 0.1.0's first schema).
BASE_REVISION = "0001_jobs_trials"
UPGRADE_COMMAND = "promptsweep db upgrade"
_JOBS_TABLE = "promptsweep_jobs"
# pg_advisory_xact_lock key: "promptsweep schema" (any constant 64-bit integer serializes migrations).
_PG_LOCK_KEY = 0x7073_7765_6570_3031


def _alembic_config(connection: Connection | None = None, url: str | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_revisions() -> list[str]:
    """All revision ids of the shipped migrations, newest first (loads Alembic)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    return [rev.revision for rev in script.walk_revisions()]


def script_head() -> str:
    """The head revision of the shipped migrations (loads Alembic)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise StorageError(f"no Alembic revisions found in {MIGRATIONS_DIR}")
    return head


def upgrade_command(display_url: str) -> str:
    """The shell command that upgrades the database at ``display_url``: ``--db`` is an option of
    ``promptsweep`` itself, so it goes before ``db upgrade``. A hidden password stays ``***``."""
    program, rest = UPGRADE_COMMAND.split(" ", 1)
    return f"{program} --db {shlex.quote(display_url)} {rest}"


def _read_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    row = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
    return None if row is None else str(row[0])


def current_revision(engine: Engine, display_url: str) -> str | None:
    """The schema revision stored in the database, or ``None`` for a database without our schema.

    Raises:
        StorageError: the database cannot be reached (names the URL without password).
    """
    try:
        with engine.connect() as conn:
            return _read_revision(conn)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot open database {display_url!r}: {describe_error(exc)}") from exc


def check_schema(engine: Engine, display_url: str) -> str:
    """Make sure the database has the head schema, creating it in a database that has none.

    A database without promptsweep's tables is migrated to the head revision (this is how a new
    database is made: by the migrations, not ``create_all``). Returns the revision.

    Raises:
        SchemaVersionError: the schema is older (run ``promptsweep db upgrade``), newer than this
            promptsweep, or has promptsweep tables without a recorded revision.
        StorageError: the database cannot be reached.
    """
    revision = current_revision(engine, display_url)
    if revision == HEAD_REVISION:
        return revision
    if revision is None:
        with engine.connect() as conn:
            has_jobs = inspect(conn).has_table(_JOBS_TABLE)
        if has_jobs:
            raise SchemaVersionError(
                f"database {display_url!r} has promptsweep tables but no schema revision in "
                f"{VERSION_TABLE!r}; it was not made by promptsweep's migrations"
            )
        upgrade(engine, display_url)
        return HEAD_REVISION
    if revision in script_revisions():
        raise SchemaVersionError(
            f"database {display_url!r} has promptsweep schema revision {revision!r}, but this promptsweep "
            f"needs {HEAD_REVISION!r}. Run `{UPGRADE_COMMAND}` on it: `{upgrade_command(display_url)}` "
            "(keeps every job and trial; back the database up first if you like). Nothing was changed."
        )
    raise SchemaVersionError(
        f"database {display_url!r} has promptsweep schema revision {revision!r}, which this promptsweep "
        f"does not know (its newest is {HEAD_REVISION!r}): it was made by a newer promptsweep; "
        "upgrade promptsweep (pip install -U promptsweep)."
    )


def upgrade(engine: Engine, display_url: str) -> tuple[str | None, str]:
    """Run the shipped Alembic migrations up to the head revision, in one transaction.

    Concurrent callers serialize on a lock (PostgreSQL ``pg_advisory_xact_lock``; SQLite ``BEGIN
    IMMEDIATE``), and the later ones find the schema at head and change nothing. Returns the
    revisions (before, after).

    Raises:
        SchemaVersionError: the database's revision is newer than this promptsweep's.
        StorageError: a migration failed; its transaction was rolled back.
    """
    from alembic import command
    from alembic.util.exc import CommandError

    sqlite = engine.dialect.name == "sqlite"
    try:
        with write_engine(engine).connect() as conn:
            if sqlite:
                # Batch mode may copy tables; SQLite ignores this pragma inside a transaction.
                conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
            try:
                with conn.begin():
                    if not sqlite:
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                    before = _read_revision(conn)
                    if before not in (None, *script_revisions()):
                        raise SchemaVersionError(
                            f"database {display_url!r} has schema revision {before!r}, newer than this "
                            f"promptsweep's {HEAD_REVISION!r}: upgrade promptsweep instead"
                        )
                    command.upgrade(_alembic_config(connection=conn), "head")
                    after = _read_revision(conn)
            finally:
                if sqlite:
                    conn.connection.driver_connection.execute("PRAGMA foreign_keys = ON")
    except CommandError as exc:
        raise StorageError(f"schema upgrade of {display_url!r} failed: {exc}") from exc
    except SQLAlchemyError as exc:
        raise StorageError(
            f"schema upgrade of {display_url!r} failed and was rolled back: {describe_error(exc)}"
        ) from exc
    if after is None:  # pragma: no cover - Alembic always stamps
        raise StorageError(f"schema upgrade of {display_url!r} left no revision in {VERSION_TABLE!r}")
    if before != after:
        _logger.info("Upgraded the promptsweep schema of %s from %s to %s.", display_url, before, after)
    return before, after


def upgrade_to(engine: Engine, revision: str) -> None:
    """Migrate a database to ``revision`` (not necessarily head). For tests of old schemas."""
    from alembic import command

    with write_engine(engine).connect() as conn, conn.begin():
        command.upgrade(_alembic_config(connection=conn), revision)
