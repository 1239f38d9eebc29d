"""Alembic environment of promptsweep's schema (run by :mod:`promptsweep.storage._migrations`).

promptsweep passes its own open connection in ``config.attributes["connection"]``, already inside a
transaction that holds the migration lock (PostgreSQL advisory lock, SQLite ``BEGIN IMMEDIATE``), so
Alembic runs every revision in that one transaction. Run by hand (``alembic -c
promptsweep/storage/alembic.ini ...``), it opens ``sqlalchemy.url`` itself.

``render_as_batch=True`` lets SQLite alter tables (Alembic's batch mode copies the table); Alembic's
revision is kept in ``promptsweep_alembic_version``, apart from Optuna's ``alembic_version``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from promptsweep.storage._models import VERSION_TABLE, Base

config = context.config
target_metadata = Base.metadata


def _include_object(obj, name, type_, reflected, compare_to):
    # Optuna's tables share the database: autogenerate must only look at ours.
    if type_ == "table":
        return str(name).startswith("promptsweep_")
    return True


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        version_table=VERSION_TABLE,
        include_object=_include_object,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(connection=conn)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
