"""Sharing the network: a durable admission queue, its controller lease, and the controller.

The store (SQLite under the state dir, or PostgreSQL by URL; Alembic migrations run from code):
:class:`~admission.workqueue.AdmissionQueue` (submit, heartbeat, requeue, finish; a cycle's
writes in one fenced transaction with ``apply``), :class:`~admission.lease.Leader` (one controller
at a time), and the rows that cross the boundary (:mod:`admission.rows`). Errors:
:class:`~admission.rows.QueueError` (a bad value or a row in the wrong state) and
:class:`~admission.database.DatabaseError` (a bad URL, or the database unreachable), both
:class:`~westflow.errors.WestflowError`.
"""

from admission.database import DatabaseError, migrate, open_engine, sqlite_url
from admission.lease import Leader, Lease
from admission.rows import (
    FINAL,
    HOLDING,
    KINDS,
    LIVE,
    STATES,
    WAITING,
    Admission,
    CycleWrite,
    DecisionRow,
    Preemption,
    QueueError,
    Waiting,
    WorkloadRow,
)
from admission.workqueue import AdmissionQueue

__all__ = ["AdmissionQueue", "Leader", "Lease", "WorkloadRow", "DecisionRow", "Admission", "Waiting", "Preemption",
           "CycleWrite", "QueueError", "DatabaseError", "STATES", "LIVE", "WAITING", "HOLDING", "FINAL", "KINDS",
           "sqlite_url", "open_engine", "migrate"]
