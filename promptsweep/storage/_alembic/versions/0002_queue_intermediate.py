"""promptsweep 0.1.0, second schema: job-queue heartbeats, method variants, intermediate metrics.

- ``promptsweep_jobs``: ``worker_id``, ``heartbeat_at``, ``attempts`` (the job queue).
- ``promptsweep_trials``: ``variant`` (backfilled from each trial's params) and ``updated_at``.
- ``promptsweep_intermediate_metrics``: every validation metric per trial and evaluation step.

Revision ID: 0002_queue_intermediate
Revises: 0001_jobs_trials
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002_queue_intermediate"
down_revision = "0001_jobs_trials"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("promptsweep_jobs") as batch:
        batch.add_column(sa.Column("worker_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", _TS, nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("promptsweep_trials") as batch:
        batch.add_column(sa.Column("variant", sa.String(64), nullable=True))
        batch.add_column(sa.Column("updated_at", _TS, nullable=True))
    op.create_table(
        "promptsweep_intermediate_metrics",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("metrics", _JSON, nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_promptsweep_intermediate_metrics"),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["promptsweep_trials.id"],
            name="fk_promptsweep_intermediate_metrics_trial_id_promptsweep_trials",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("trial_id", "step", name="uq_promptsweep_intermediate_metrics_trial_id_step"),
    )

    # Backfill, in SQL (so `alembic upgrade --sql` works too): jobs that ran before heartbeats count
    # one attempt; each trial's variant is derived from its params as method_variant() does.
    jobs = sa.table("promptsweep_jobs", sa.column("status", sa.String), sa.column("attempts", sa.Integer))
    op.execute(jobs.update().where(jobs.c.status != "queued").values(attempts=1))
    trials = sa.table("promptsweep_trials", sa.column("params", _JSON), sa.column("variant", sa.String))
    method = trials.c.params["method"].as_string()
    if op.get_context().dialect.name == "postgresql":
        projection = trials.c.params["prefix_projection"].as_string() == "true"
    else:  # SQLite's JSON_EXTRACT gives 1 / 0 for true / false
        projection = trials.c.params["prefix_projection"].as_integer() == 1
    encoder = sa.func.upper(sa.func.coalesce(trials.c.params["encoder_type"].as_string(), "MLP"))
    variant = sa.case(
        (
            method == "prefix_tuning",
            sa.case((projection, "prefix_tuning_projection"), else_="prefix_tuning"),
        ),
        (method == "p_tuning", sa.case((encoder == "LSTM", "p_tuning_lstm"), else_="p_tuning_mlp")),
        else_=method,
    )
    op.execute(trials.update().values(variant=variant))


def downgrade() -> None:
    op.drop_table("promptsweep_intermediate_metrics")
    with op.batch_alter_table("promptsweep_trials") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("variant")
    with op.batch_alter_table("promptsweep_jobs") as batch:
        batch.drop_column("attempts")
        batch.drop_column("heartbeat_at")
        batch.drop_column("worker_id")
