"""promptsweep 0.1.0, fourth schema: a job's history and its spec's hash.

- ``promptsweep_jobs.history`` (nullable JSON; JSONB on PostgreSQL): what happened to the job and when
  (submitted, claimed, interrupted, cancelled, retried, ...), a list of ``{"at", "event", "detail"}``.
  Existing jobs get NULL, read as an empty history.
- ``promptsweep_jobs.spec_hash`` (64 hex characters): the SHA-256 of the stored spec in canonical JSON
  (``promptsweep.storage.spec_hash``); existing jobs get theirs computed here (not in offline SQL,
  where a NULL hash is computed from the spec when the job is read).

Revision ID: 0004_job_history
Revises: 0003_job_summary
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004_job_history"
down_revision = "0003_job_summary"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _hash(spec: object) -> str:
    # The same canonical form as promptsweep.storage._jobs.spec_hash (kept here so that this
    # migration stays what it was when later code changes).
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("promptsweep_jobs") as batch:
        batch.add_column(sa.Column("history", _JSON, nullable=True))
        batch.add_column(sa.Column("spec_hash", sa.String(64), nullable=True))
    if op.get_context().as_sql:  # offline SQL (`alembic upgrade --sql`): no rows to read; a NULL hash
        return  # is computed from the spec when the job is read
    jobs = sa.table("promptsweep_jobs", sa.column("id", sa.Integer), sa.column("spec", _JSON))
    hashes = sa.table("promptsweep_jobs", sa.column("id", sa.Integer), sa.column("spec_hash", sa.String))
    conn = op.get_bind()
    for job_id, spec in conn.execute(sa.select(jobs.c.id, jobs.c.spec)).all():
        conn.execute(sa.update(hashes).where(hashes.c.id == job_id).values(spec_hash=_hash(spec or {})))


def downgrade() -> None:
    with op.batch_alter_table("promptsweep_jobs") as batch:
        batch.drop_column("spec_hash")
        batch.drop_column("history")
