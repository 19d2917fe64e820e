"""The admission store: workloads, decisions, leases.

Revision ID: r0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "r0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# As of this revision (a migration is a snapshot: it does not follow later edits of admission.rows).
KEY_MAX = NAME_MAX = 256
STATES = ("pending", "admitted", "preempting", "finished", "failed", "expired", "cancelled", "abandoned")
KINDS = ("queued", "admitted", "waiting", "preempting", "requeued", "resumed", "expired", "finished", "failed",
         "cancelled", "abandoned")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _name() -> sa.String:
    return sa.String(NAME_MAX)


def upgrade() -> None:
    op.create_table(
        "workloads",
        sa.Column("key", sa.String(KEY_MAX), primary_key=True),
        sa.Column("tenant", _name(), nullable=False),
        sa.Column("priority_class", _name(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("spec_name", _name(), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("submitted_at", sa.Double(), nullable=False),
        sa.Column("max_wait_s", sa.Double(), nullable=True),
        sa.Column("exclude", sa.Text(), nullable=False),
        sa.Column("owner", _name(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.Column("admitted_at", sa.Double(), nullable=True),
        sa.Column("data_center", _name(), nullable=True),
        sa.Column("ray_cluster", _name(), nullable=True),
        sa.Column("region", _name(), nullable=True),
        sa.Column("family", _name(), nullable=True),
        sa.Column("accelerator_model", _name(), nullable=True),
        sa.Column("accelerators", sa.Integer(), nullable=False),
        sa.Column("cpus", sa.Double(), nullable=False),
        sa.Column("memory_gb", sa.Double(), nullable=False),
        sa.Column("placement", sa.Text(), nullable=True),
        sa.Column("reasons", sa.Text(), nullable=True),
        sa.Column("preempted_by", sa.String(KEY_MAX), nullable=True),
        sa.Column("preemptions", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(_in("state", STATES), name="ck_workloads_state"),
    )
    op.create_index("ix_workloads_state_submitted", "workloads", ["state", "submitted_at"])
    op.create_index("ix_workloads_owner", "workloads", ["owner"])
    op.create_table(
        "decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("key", sa.String(KEY_MAX), sa.ForeignKey("workloads.key"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data_center", _name(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("controller", _name(), nullable=False),
        sa.CheckConstraint(_in("kind", KINDS), name="ck_decisions_kind"),
    )
    op.create_index("ix_decisions_key", "decisions", ["key"])
    op.create_table(
        "leases",
        sa.Column("name", _name(), primary_key=True),
        sa.Column("holder", _name(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("ttl_s", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_decisions_key", table_name="decisions")
    op.drop_table("decisions")
    op.drop_index("ix_workloads_owner", table_name="workloads")
    op.drop_index("ix_workloads_state_submitted", table_name="workloads")
    op.drop_table("workloads")
