"""promptsweep 0.1.0, third schema: a JSON summary per job.

- ``promptsweep_jobs``: ``summary`` (nullable JSON; JSONB on PostgreSQL), what the search layer
  records about the job as a whole. Existing jobs get NULL, read as an empty summary.

Revision ID: 0003_job_summary
Revises: 0002_queue_intermediate
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003_job_summary"
down_revision = "0002_queue_intermediate"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("promptsweep_jobs") as batch:
        batch.add_column(sa.Column("summary", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("promptsweep_jobs") as batch:
        batch.drop_column("summary")
