"""promptsweep 0.1.0, sixth schema: where each trial ran.

- ``promptsweep_trials.node_id`` (nullable, 64 characters): the Ray node id of the node that ran the
  trial's last attempt (a trial re-run after its node was lost shows the node it finished on).
- ``promptsweep_trials.node_host`` (nullable, 255 characters): that node's host name and IP address.

Existing trials get neither (they ran before it was recorded).

Revision ID: 0006_trial_node
Revises: 0005_job_requests
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_trial_node"
down_revision = "0005_job_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promptsweep_trials") as batch:
        batch.add_column(sa.Column("node_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("node_host", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("promptsweep_trials") as batch:
        batch.drop_column("node_host")
        batch.drop_column("node_id")
