"""What every part of :class:`~promptsweep.storage.Storage` stands on.

:class:`StorageBase` declares the connection state ``Storage.__init__`` sets up (``_storage.py``) and
holds the helpers the jobs, queue and trials mixins share: the read and write sessions (each one
transaction, through :func:`session_scope`), the job-row lookup that can lock the row, and the clock
heartbeats are written and judged by.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from promptsweep.exceptions import JobNotFoundError
from promptsweep.storage._engine import session_scope
from promptsweep.storage._models import JobModel
from promptsweep.storage._records import utcnow
from promptsweep.storage._validate import check_id


class StorageBase:
    """The connection state and session helpers of :class:`~promptsweep.storage.Storage`."""

    _url: URL
    #: The database URL without its password (named in every error).
    display_url: str
    _engine: Engine
    #: The same pool as ``_engine``, for write transactions (SQLite ``BEGIN IMMEDIATE``).
    _write: Engine
    _is_sqlite: bool

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
        check_id("job_id", job_id)
        row = session.get(JobModel, job_id, with_for_update=for_update)
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id} in {self.display_url!r}")
        return row
