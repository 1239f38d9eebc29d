"""Shared fixtures: database URLs for every storage backend (as optuna's ``STORAGE_MODES``).

``db_url`` is parametrized over ``sqlite`` (a fresh file under the test's ``tmp_path``) and
``postgresql`` (a fresh database, created for the test on the server named by
``PROMPTSWEEP_TEST_PG_URL`` and dropped after it). Without that variable the PostgreSQL cases skip;
``.ci/run`` starts a server and sets it, so CI runs both. Any layer's tests may use ``db_url`` or
``storage``; each test sees only its own rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_URL_ENV = "PROMPTSWEEP_TEST_PG_URL"
STORAGE_MODES = ("sqlite", "postgresql")


def _pg_admin_conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_pg_database(server_url: str) -> tuple[str, str]:
    """Create an empty database on ``server_url``'s server; return (its SQLAlchemy URL, its name)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"promptsweep_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_admin_conninfo(server_url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False), name


def drop_pg_database(server_url: str, name: str) -> None:
    """Drop a database made by :func:`create_pg_database` (closing its open connections)."""
    import psycopg

    with psycopg.connect(_pg_admin_conninfo(server_url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_db_url(tmp_path: Path) -> Iterator:
    """A factory of fresh, empty database URLs for one backend (``"sqlite"`` or ``"postgresql"``).

    PostgreSQL databases made through it are dropped after the test; the PostgreSQL case skips when
    ``PROMPTSWEEP_TEST_PG_URL`` is unset.
    """
    made: list[tuple[str, str]] = []
    counter = iter(range(1_000_000))

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'promptsweep-{next(counter)}.db'}"
        if backend == "postgresql":
            server = os.environ.get(PG_URL_ENV)
            if not server:
                pytest.skip(f"{PG_URL_ENV} is not set (.ci/run starts PostgreSQL and sets it)")
            url, name = create_pg_database(server)
            made.append((server, name))
            return url
        raise ValueError(f"backend must be one of {STORAGE_MODES}, got {backend!r}")

    yield make
    for server, name in made:
        drop_pg_database(server, name)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test: ``"sqlite"`` or ``"postgresql"``."""
    return request.param


@pytest.fixture
def db_url(db_backend: str, make_db_url) -> str:
    """A fresh, empty database URL, once per backend (SQLite file; PostgreSQL database)."""
    return make_db_url(db_backend)


@pytest.fixture
def storage(db_url: str) -> Iterator:
    """A :class:`promptsweep.storage.Storage` on ``db_url`` (schema at head), closed after the test."""
    from promptsweep.storage import Storage

    with Storage(db_url) as opened:
        yield opened
