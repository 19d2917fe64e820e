"""The federation a workload is for (``workloads.scope``): a controller admits only its own scope's work.

Revision ID: r0003
Revises: r0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "r0003"
down_revision: str | None = "r0002"
branch_labels: str | None = None
depends_on: str | None = None

NAME_MAX = 256  # as of this revision


def upgrade() -> None:
    op.add_column("workloads", sa.Column("scope", sa.String(NAME_MAX), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("workloads") as batch:
        batch.drop_column("scope")
