"""Placement in time: the ``deferred`` workload state and decision kind, and ``workloads.start_at``/``start_note``.

Revision ID: r0004
Revises: r0003

The CHECK constraints change, so on SQLite both tables are rebuilt (batch mode; Alembic copies the
rows). ``admission.database.migrate`` turns SQLite's foreign keys off around the upgrade and checks them
before committing: rebuilding ``workloads`` drops the table ``decisions`` refers to.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "r0004"
down_revision: str | None = "r0003"
branch_labels: str | None = None
depends_on: str | None = None

# As of this revision (a migration is a snapshot: it does not follow later edits of admission.rows).
STATES = ("pending", "deferred", "admitted", "preempting", "finished", "failed", "expired", "cancelled", "abandoned")
KINDS = ("queued", "admitted", "waiting", "deferred", "preempting", "requeued", "resumed", "expired", "finished",
         "failed", "cancelled", "abandoned")
OLD_STATES = tuple(s for s in STATES if s != "deferred")
OLD_KINDS = tuple(k for k in KINDS if k != "deferred")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("workloads") as batch:
        batch.add_column(sa.Column("start_at", sa.Double(), nullable=True))
        batch.add_column(sa.Column("start_note", sa.Text(), nullable=True))
        batch.drop_constraint("ck_workloads_state", type_="check")
        batch.create_check_constraint("ck_workloads_state", _in("state", STATES))
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint("ck_decisions_kind", type_="check")
        batch.create_check_constraint("ck_decisions_kind", _in("kind", KINDS))


def downgrade() -> None:
    # A deferred row goes back to pending (the cycle defers it again); its decisions read as waiting.
    op.execute("UPDATE workloads SET state = 'pending' WHERE state = 'deferred'")
    op.execute("UPDATE decisions SET kind = 'waiting' WHERE kind = 'deferred'")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint("ck_decisions_kind", type_="check")
        batch.create_check_constraint("ck_decisions_kind", _in("kind", OLD_KINDS))
    with op.batch_alter_table("workloads") as batch:
        batch.drop_constraint("ck_workloads_state", type_="check")
        batch.create_check_constraint("ck_workloads_state", _in("state", OLD_STATES))
        batch.drop_column("start_note")
        batch.drop_column("start_at")
