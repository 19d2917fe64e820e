"""The controller lease: one holder at a time, with a fencing epoch.

One row per lease name in ``leases``: holder (``''`` when free), epoch, expiry and the ttl it is
renewed for. Every change locks that row first, inside a write transaction (PostgreSQL
``SELECT ... FOR UPDATE``; SQLite ``BEGIN IMMEDIATE``), so taking, renewing, releasing and
``AdmissionQueue.apply`` never interleave. The epoch grows on every take-over, and a writer
re-checks holder and epoch in its own transaction (:func:`fence`): a holder that lost the lease
(it paused past its ttl and another took over) writes nothing. A holder killed mid-transaction
wrote nothing either (the transaction rolls back) and is replaced once its ttl has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Row, bindparam, select, update

from admission.database import insert_or_ignore, read_transaction, run_write
from admission.rows import LEASES, QueueError, check_key, check_number

__all__ = ["Lease", "Leader", "fence", "DEFAULT_TTL_S"]

DEFAULT_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as its holder last saw it; ``epoch`` fences its writes."""

    name: str
    holder: str
    epoch: int
    expires_at: float


_READ = select(LEASES).where(LEASES.c.name == bindparam("p_name"))
_LOCK = _READ.with_for_update()
_SET = update(LEASES).where(LEASES.c.name == bindparam("p_name"))


class _HasEngine(Protocol):
    @property
    def engine(self) -> Engine: ...


def _locked(conn: Connection, name: str) -> Row[Any]:
    """The lease row, created free if missing, locked until the transaction ends."""
    insert_or_ignore(conn, LEASES, {"name": name, "holder": "", "epoch": 0, "expires_at": 0.0, "ttl_s": 0.0})
    return conn.execute(_LOCK, {"p_name": name}).one()


def _extend(conn: Connection, row: Row[Any], expires_at: float, **values: Any) -> None:
    conn.execute(_SET.values(expires_at=expires_at, **values), {"p_name": row.name})


def fence(conn: Connection, lease: Lease, clock: Callable[[], float]) -> Lease | None:
    """Inside a write transaction: renew ``lease`` if its holder still holds it at its epoch, else None.

    A lease past its expiry that nobody took over is still this holder's (nobody else wrote since).
    """
    row = _locked(conn, lease.name)
    if row.holder != lease.holder or row.epoch != lease.epoch or not lease.holder:
        return None
    expires_at = clock() + row.ttl_s  # read once the row is locked: waiting for the lock does not shorten it
    _extend(conn, row, expires_at)
    return Lease(lease.name, lease.holder, lease.epoch, expires_at)


class Leader:
    """Takes and keeps the lease ``name`` for ``holder`` (unique per process: host and pid, say).

    ``queue_or_engine``: an ``AdmissionQueue`` or a migrated engine. ``clock`` (epoch seconds) is
    for tests; processes sharing a lease must have clocks that agree to well within ``ttl_s``.
    """

    def __init__(self, queue_or_engine: _HasEngine | Engine, *, holder: str, name: str = "controller",
                 ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.time) -> None:
        self.engine: Engine = queue_or_engine if isinstance(queue_or_engine, Engine) else queue_or_engine.engine
        self.holder = check_key(holder, "holder")
        self.name = check_key(name, "lease name")
        check_number("ttl_s", ttl_s)
        if ttl_s <= 0:
            raise QueueError("ttl_s", ttl_s, "a number of seconds > 0")
        self.ttl_s = float(ttl_s)
        self._clock = clock

    def __repr__(self) -> str:
        return f"Leader({self.name!r}, holder={self.holder!r}, ttl_s={self.ttl_s})"

    def acquire(self) -> Lease | None:
        """The lease, if it is free, expired or already ours (renewed); None while another holds it.

        Taking it from anyone (or after a release) increments the epoch.
        """
        def take(conn: Connection) -> Lease | None:
            row = _locked(conn, self.name)
            now = self._clock()
            expires_at = now + self.ttl_s
            if row.holder == self.holder:
                _extend(conn, row, expires_at, ttl_s=self.ttl_s)
                return Lease(self.name, self.holder, row.epoch, expires_at)
            if row.holder and row.expires_at > now:
                return None
            _extend(conn, row, expires_at, holder=self.holder, epoch=row.epoch + 1, ttl_s=self.ttl_s)
            return Lease(self.name, self.holder, row.epoch + 1, expires_at)

        return run_write(self.engine, take)

    def renew(self, lease: Lease) -> Lease | None:
        """``lease`` extended by the ttl, or None if it was lost (another holder, or a later epoch)."""
        return run_write(self.engine, lambda conn: fence(conn, lease, self._clock))

    def release(self, lease: Lease) -> None:
        """Give ``lease`` up now (a no-op if it was lost already); the next taker increments the epoch."""
        def give(conn: Connection) -> None:
            row = _locked(conn, lease.name)
            if row.holder == lease.holder and row.epoch == lease.epoch:
                _extend(conn, row, 0.0, holder="")

        run_write(self.engine, give)

    def current(self) -> Lease | None:
        """Who holds the lease now (None when free or expired)."""
        with read_transaction(self.engine) as conn:
            row = conn.execute(_READ, {"p_name": self.name}).one_or_none()
        if row is None or not row.holder or row.expires_at <= self._clock():
            return None
        return Lease(row.name, row.holder, row.epoch, row.expires_at)
