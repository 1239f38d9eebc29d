"""promptsweep 0.1.0, first schema: jobs and trials.

Revision ID: 0001_jobs_trials
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_jobs_trials"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "promptsweep_jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("objective_metric", sa.String(64), nullable=True),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("secondary_objective", sa.String(64), nullable=True),
        sa.Column("model", sa.String(512), nullable=True),
        sa.Column("dataset", sa.String(512), nullable=True),
        sa.Column("task", sa.String(32), nullable=True),
        sa.Column("study_name", sa.String(255), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_promptsweep_jobs"),
        sa.UniqueConstraint("study_name", name="uq_promptsweep_jobs_study_name"),
    )
    op.create_index("ix_promptsweep_jobs_status", "promptsweep_jobs", ["status"])
    op.create_table(
        "promptsweep_trials",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("optuna_trial_id", sa.Integer(), nullable=True),
        sa.Column("ray_trial_id", sa.String(64), nullable=True),
        sa.Column("method", sa.String(32), nullable=True),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("values", _JSON, nullable=True),
        sa.Column("metrics", _JSON, nullable=False),
        sa.Column("test_metrics", _JSON, nullable=True),
        sa.Column("trainable_params", sa.BigInteger(), nullable=True),
        sa.Column("total_params", sa.BigInteger(), nullable=True),
        sa.Column("train_seconds", sa.Float(), nullable=True),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("steps", sa.Integer(), nullable=True),
        sa.Column("epochs", sa.Float(), nullable=True),
        sa.Column("adapter_dir", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_promptsweep_trials"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["promptsweep_jobs.id"],
            name="fk_promptsweep_trials_job_id_promptsweep_jobs",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("job_id", "number", name="uq_promptsweep_trials_job_id_number"),
    )
    op.create_index("ix_promptsweep_trials_job_id_state", "promptsweep_trials", ["job_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_promptsweep_trials_job_id_state", table_name="promptsweep_trials")
    op.drop_table("promptsweep_trials")
    op.drop_index("ix_promptsweep_jobs_status", table_name="promptsweep_jobs")
    op.drop_table("promptsweep_jobs")
