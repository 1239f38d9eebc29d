"""promptsweep 0.1.0, fifth schema: the lifecycle verbs' state on a job.

- ``promptsweep_jobs.request`` (nullable, 16 characters): a user's pending request to a running job
  that its driver acts on at its next poll: ``stop`` (start no new trial, let the running ones
  finish, then select) or ``pause`` (the same, then leave the job ``paused``). Cleared when the job
  ends, pauses or is interrupted.
- ``promptsweep_jobs.extra_trials`` / ``extra_time_s`` (default 0): what ``extend`` added to the
  job's budget in all, in trials and in wall-clock seconds.

Existing jobs get no request and no extension. Revision 0005 also allows the job status ``paused``
(a value of the existing ``status`` column, no DDL).

Revision ID: 0005_job_requests
Revises: 0004_job_history
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_job_requests"
down_revision = "0004_job_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promptsweep_jobs") as batch:
        batch.add_column(sa.Column("request", sa.String(16), nullable=True))
        batch.add_column(sa.Column("extra_trials", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("extra_time_s", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("promptsweep_jobs") as batch:
        batch.drop_column("extra_time_s")
        batch.drop_column("extra_trials")
        batch.drop_column("request")
