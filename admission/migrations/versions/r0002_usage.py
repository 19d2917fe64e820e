"""Metering: the append-only ``usage`` table, one row per Ray job that ran (see admission.metering).

Revision ID: r0002
Revises: r0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "r0002"
down_revision: str | None = "r0001"
branch_labels: str | None = None
depends_on: str | None = None

# As of this revision (a migration is a snapshot: it does not follow later edits of admission.rows).
KEY_MAX = NAME_MAX = 256
STATUSES = ("SUCCEEDED", "FAILED", "STOPPED", "PREEMPTED", "LOST")


def _name() -> sa.String:
    return sa.String(NAME_MAX)


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("ray_job_id", sa.String(KEY_MAX), primary_key=True),
        sa.Column("cluster", _name(), nullable=False),
        sa.Column("data_center", _name(), nullable=False),
        sa.Column("region", _name(), nullable=False),
        sa.Column("tenant", _name(), nullable=False),
        sa.Column("run_id", _name(), nullable=True),
        sa.Column("step", sa.String(KEY_MAX), nullable=True),
        sa.Column("accelerator_model", _name(), nullable=True),
        sa.Column("accelerators", sa.Integer(), nullable=False),
        sa.Column("cpus", sa.Double(), nullable=False),
        sa.Column("memory_gb", sa.Double(), nullable=False),
        sa.Column("start_at", sa.Double(), nullable=False),
        sa.Column("end_at", sa.Double(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("accelerator_hours", sa.Double(), nullable=False),
        sa.Column("cpu_hours", sa.Double(), nullable=False),
        sa.Column("kwh", sa.Double(), nullable=False),
        sa.Column("cny", sa.Double(), nullable=False),
        sa.Column("transfer_gb", sa.Double(), nullable=False),
        sa.Column("transfer_cny", sa.Double(), nullable=False),
        sa.Column("preemptions", sa.Integer(), nullable=False),
        sa.Column("failovers", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.Double(), nullable=False),
        sa.Column("recorded_by", sa.String(16), nullable=False),
        sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="ck_usage_status"),
    )
    op.create_index("ix_usage_end", "usage", ["end_at"])
    op.create_index("ix_usage_tenant_end", "usage", ["tenant", "end_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_tenant_end", table_name="usage")
    op.drop_index("ix_usage_end", table_name="usage")
    op.drop_table("usage")
