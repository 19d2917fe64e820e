"""Alembic's environment for the admission store: runs on the connection :func:`admission.database.migrate` passes.

Online only, inside the caller's transaction (which holds the migration lock), so no ``alembic.ini``
and no engine of its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from admission.rows import Base


def run_migrations(conn: Connection) -> None:
    """Upgrade on ``conn`` (already in a transaction: Alembic commits nothing itself)."""
    context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=conn.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


_conn = context.config.attributes.get("connection")
if not isinstance(_conn, Connection):
    raise RuntimeError("admission migrations run from code only: admission.database.migrate(engine)")
run_migrations(_conn)
