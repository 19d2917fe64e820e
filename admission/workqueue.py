"""The durable admission queue: work waits here until the leading controller admits it.

A step's process submits, heartbeats, requeues and finishes its own workload; the controller reads
the queue and writes a whole cycle with :meth:`AdmissionQueue.apply`, in one transaction fenced
by its lease. Every change records one decision row in the same transaction (``controller``: the
lease holder for ``apply``, the row's owner otherwise). States::

    pending | deferred --apply.admitted--> admitted --apply.preempt--> preempting
    pending | deferred --apply.waiting--> deferred        (placed to start later: start_at, start_note)
    deferred --apply.waiting--> pending                   (its start came; it waits for quota or capacity)
    admitted | preempting --requeue--> pending           (age kept, attempts + 1)
    pending | deferred --apply.expire--> expired
    pending | deferred | admitted | preempting --apply.abandon--> abandoned
    pending | deferred | admitted | preempting --finish--> finished | failed | cancelled

Only ``admitted`` and ``preempting`` hold capacity (:data:`~admission.rows.HOLDING`); ``pending`` and
``deferred`` wait (:data:`~admission.rows.WAITING`): both are the cycle's candidates, in one age order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import BindParameter, Connection, Engine, Row, bindparam, func, insert, select, update

from admission.database import (
    DatabaseError,
    canonical_url,
    insert_or_ignore,
    masked,
    migrate,
    open_engine,
    read_transaction,
    run_write,
    sqlite_url,
)
from admission.lease import Lease, fence
from admission.rows import (
    DECISIONS,
    FINAL,
    FINISH_STATES,
    HOLDING,
    LIVE,
    WAITING,
    WORKLOADS,
    CycleWrite,
    DecisionRow,
    QueueError,
    WorkloadRow,
    check_key,
    check_number,
    check_state,
    exclude_json,
    start_text,
)

__all__ = ["AdmissionQueue", "QueueError", "DatabaseError"]

_CHUNK: Final = 500  # keys per IN (...) list
W = WORKLOADS.c
D = DECISIONS.c
_RELEASED: Final[dict[str, Any]] = {
    "admitted_at": None, "data_center": None, "ray_cluster": None, "region": None, "family": None,
    "accelerator_model": None, "accelerators": 0, "cpus": 0.0, "memory_gb": 0.0, "placement": None,
    "preempted_by": None}


@dataclass(frozen=True, slots=True)
class _Decision:
    key: str
    kind: str
    data_center: str | None
    detail: str
    controller: str


def _chunks(keys: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(keys), _CHUNK):
        yield keys[i:i + _CHUNK]


def _p(name: str) -> BindParameter[Any]:
    return bindparam(f"p_{name}")


# Built once (compiled once per dialect): a cycle runs one of these per workload it changes.
_ROW = select(WORKLOADS).where(W.key == _p("key"))
_ROW_LOCKED = _ROW.with_for_update()
_BEAT = update(WORKLOADS).where(W.key == _p("key"), W.state.in_(LIVE)).values(heartbeat_at=_p("now"))
_ADMIT = (update(WORKLOADS).where(W.key == _p("key"), W.state.in_(WAITING))
          .values(state="admitted", admitted_at=_p("now"), data_center=_p("data_center"),
                  ray_cluster=_p("ray_cluster"), region=_p("region"), family=_p("family"),
                  accelerator_model=_p("accelerator_model"), accelerators=_p("accelerators"), cpus=_p("cpus"),
                  memory_gb=_p("memory_gb"), placement=_p("placement"), reasons=_p("none"), preempted_by=_p("none"))
          .returning(W.attempts))
_REASONS_NOW = (select(W.key, W.reasons, W.state, W.start_at, W.start_note)
                .where(W.key.in_(bindparam("p_keys", expanding=True)), W.state.in_(WAITING)))
_REASONS = (update(WORKLOADS).where(W.key == _p("key"), W.state.in_(WAITING))
            .values(reasons=_p("reasons"), state=_p("state")).returning(W.key))
_DEFER = (update(WORKLOADS).where(W.key == _p("key"), W.state.in_(WAITING))
          .values(reasons=_p("reasons"), state="deferred", start_at=_p("start_at"), start_note=_p("start_note"))
          .returning(W.key))
_PREEMPT = (update(WORKLOADS).where(W.key == _p("key"), W.state == "admitted")
            .values(state="preempting", preempted_by=_p("by")).returning(W.data_center))
_EXPIRE = (update(WORKLOADS).where(W.key == _p("key"), W.state.in_(WAITING))
           .values(state="expired", finished_at=_p("now"), detail=W.reasons).returning(W.reasons))
_ABANDON = (update(WORKLOADS).where(W.key == _p("key"), W.state.in_(LIVE))
            .values(state="abandoned", finished_at=_p("now"), detail="no heartbeat").returning(W.data_center))
_RECORD = insert(DECISIONS)


class AdmissionQueue:
    """The admission queue at ``url`` (SQLite or PostgreSQL; see :data:`admission.database.ALLOWED_URLS`).

    Opening it migrates the schema to head. ``clock`` (epoch seconds) stamps every time written.
    """

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.url: str = canonical_url(url).render_as_string(hide_password=False)
        self.engine: Engine = open_engine(self.url)
        self._clock = clock
        try:
            migrate(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def local(cls, state_dir: Path | str, *, clock: Callable[[], float] = time.time) -> AdmissionQueue:
        """The embedded queue: SQLite at ``<state_dir>/admission.db``."""
        return cls(sqlite_url(state_dir), clock=clock)

    def __repr__(self) -> str:
        return f"AdmissionQueue({masked(self.url)!r})"

    def __enter__(self) -> AdmissionQueue:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection (the queue can be opened again by URL)."""
        self.engine.dispose()

    # -- a step's own workload -------------------------------------------------------------------
    def submit(self, key: str, *, tenant: str, priority_class: str, priority: int, spec_name: str, spec_json: str,
               max_wait_s: float | None, owner: str, exclude: Iterable[str] = (), scope: str = "") -> WorkloadRow:
        """Queue ``key`` as pending and record ``queued``; idempotent while the key is live.

        A second submit of a live key (pending, deferred, admitted, preempting) returns its row unchanged; a key in
        a final state is a :class:`QueueError` (keys are never reused).
        """
        check_key(key)
        for field, value in (("tenant", tenant), ("priority_class", priority_class), ("spec_name", spec_name),
                             ("owner", owner)):
            check_key(value, field)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise QueueError("priority", priority, "an integer")
        if not isinstance(spec_json, str):
            raise QueueError("spec_json", type(spec_json).__name__, "JSON text (str)")
        check_number("max_wait_s", max_wait_s, optional=True)
        if scope:
            check_key(scope, "scope")
        excluded = exclude_json(exclude)

        def write(conn: Connection) -> WorkloadRow:
            now = self._clock()
            values = dict(_RELEASED, key=key, tenant=tenant, priority_class=priority_class, priority=priority,
                          spec_name=spec_name, spec_json=spec_json, state="pending", submitted_at=now,
                          max_wait_s=None if max_wait_s is None else float(max_wait_s), exclude=excluded,
                          owner=owner, heartbeat_at=now, reasons=None, preemptions=0, attempts=0,
                          finished_at=None, detail=None, scope=scope, start_at=None, start_note=None)
            if insert_or_ignore(conn, WORKLOADS, values):
                self._record(conn, now, [_Decision(key, "queued", None, f"{tenant}/{priority_class}", owner)])
            row = self._locked_row(conn, key)
            if row.state in FINAL:
                raise QueueError("key", key, "a key not used before (or one still pending, deferred, admitted or "
                                 "preempting)",
                                 key=key, state=row.state, problem="Already",
                                 message=f"Workload key {key!r} is already {row.state}",
                                 fix="submit under a new key (one per step run).")
            return row

        return run_write(self.engine, write)

    def heartbeat(self, key: str) -> WorkloadRow | None:
        """Mark ``key`` alive now (if live) and return its row (None if unknown): one call per poll."""
        check_key(key)

        def write(conn: Connection) -> WorkloadRow | None:
            conn.execute(_BEAT, {"p_key": key, "p_now": self._clock()})
            return self._row(conn, key)

        return run_write(self.engine, write)

    def finish(self, key: str, state: str = "finished", detail: str = "") -> bool:
        """End ``key`` as finished, failed or cancelled, freeing what it held; False if it had ended already."""
        check_key(key)
        check_state(state, FINISH_STATES)

        def write(conn: Connection) -> bool:
            row = self._locked_row(conn, key)
            if row.state in FINAL:
                return False
            now = self._clock()
            conn.execute(update(WORKLOADS).where(W.key == key).values(state=state, finished_at=now, detail=detail))
            self._record(conn, now, [_Decision(key, state, row.data_center, detail, row.owner)])
            return True

        return run_write(self.engine, write)

    def requeue(self, key: str, *, exclude: Iterable[str] = (), reason: str, preempted: bool = False) -> WorkloadRow:
        """Put holding ``key`` back to pending (its DC failed, or it was preempted): age kept, attempts + 1.

        ``exclude`` adds data centres not to place it on again; what it held is released.
        """
        check_key(key)
        more = list(exclude)

        def write(conn: Connection) -> WorkloadRow:
            row = self._locked_row(conn, key)
            if row.state not in HOLDING:
                raise QueueError("state", row.state, HOLDING, key=key, state=row.state,
                                 message=f"Workload {key!r} is {row.state}, not holding: it cannot be requeued")
            now = self._clock()
            conn.execute(update(WORKLOADS).where(W.key == key).values({
                **_RELEASED, "state": "pending", "exclude": exclude_json([*row.exclude, *more]), "reasons": None,
                "attempts": W.attempts + 1, "preemptions": W.preemptions + (1 if preempted else 0),
                "heartbeat_at": now, "detail": reason}))
            why = f"preempted by {row.preempted_by}: {reason}" if preempted and row.preempted_by else reason
            self._record(conn, now, [_Decision(key, "requeued", row.data_center, why, row.owner)])
            return self._locked_row(conn, key)

        return run_write(self.engine, write)

    def cancel_owner(self, owner: str, detail: str = "") -> tuple[str, ...]:
        """Cancel every live workload of ``owner`` (a run that died); the keys cancelled."""
        check_key(owner, "owner")

        def write(conn: Connection) -> tuple[str, ...]:
            now = self._clock()
            live = conn.execute(select(W.key, W.data_center).where(W.owner == owner, W.state.in_(LIVE))
                                .order_by(W.key).with_for_update()).all()
            conn.execute(update(WORKLOADS).where(W.owner == owner, W.state.in_(LIVE))
                         .values(state="cancelled", finished_at=now, detail=detail))
            self._record(conn, now, [_Decision(r.key, "cancelled", r.data_center, detail, owner) for r in live])
            return tuple(r.key for r in live)

        return run_write(self.engine, write)

    # -- reading -------------------------------------------------------------------------------
    def get(self, key: str) -> WorkloadRow | None:
        """The row of ``key`` (None if never submitted)."""
        with read_transaction(self.engine) as conn:
            return self._row(conn, key)

    def rows(self, states: Iterable[str] | None = None, *, scope: str | None = None) -> list[WorkloadRow]:
        """Every workload (or those in ``states``, of ``scope``), oldest first (submitted_at, then key)."""
        query = select(WORKLOADS).order_by(W.submitted_at, W.key)
        if states is not None:
            wanted = [check_state(s) for s in states]
            query = query.where(W.state.in_(wanted))
        if scope is not None:
            query = query.where(W.scope == scope)
        with read_transaction(self.engine) as conn:
            return [WorkloadRow.of(r) for r in conn.execute(query)]

    def pending(self, scope: str | None = None) -> list[WorkloadRow]:
        """Waiting workloads, pending and deferred (of ``scope``), oldest first: the cycle's candidates."""
        return self.rows(WAITING, scope=scope)

    def holding(self, scope: str | None = None) -> list[WorkloadRow]:
        """Admitted and preempting workloads (they hold capacity; of ``scope``), oldest first."""
        return self.rows(HOLDING, scope=scope)

    def decisions(self, key: str | None = None, limit: int = 1000) -> list[DecisionRow]:
        """The latest ``limit`` decisions (of ``key``, or all), oldest first."""
        check_number("limit", limit, integer=True)
        query = select(DECISIONS).order_by(D.id.desc()).limit(limit)
        if key is not None:
            query = query.where(D.key == key)
        with read_transaction(self.engine) as conn:
            got = conn.execute(query).all()
        return [DecisionRow(r.id, r.at, r.key, r.kind, r.data_center, r.detail, r.controller) for r in reversed(got)]

    def counts(self) -> dict[str, int]:
        """How many workloads are in each state (states with none are left out)."""
        with read_transaction(self.engine) as conn:
            return {s: n for s, n in conn.execute(select(W.state, func.count()).group_by(W.state))}

    def tally(self) -> dict[tuple[str, str, str], int]:
        """Live workloads per ``(tenant, priority class, state)`` (pending, deferred, admitted, preempting)."""
        with read_transaction(self.engine) as conn:
            got = conn.execute(select(W.tenant, W.priority_class, W.state, func.count())
                               .where(W.state.in_(LIVE)).group_by(W.tenant, W.priority_class, W.state))
            return {(t, c, st): n for t, c, st, n in got}

    def decision_tally(self) -> dict[tuple[str, str], int]:
        """Every decision ever recorded per ``(tenant, kind)`` (the source of the exporter's counters)."""
        with read_transaction(self.engine) as conn:
            got = conn.execute(select(W.tenant, D.kind, func.count()).select_from(DECISIONS.join(
                WORKLOADS, D.key == W.key)).group_by(W.tenant, D.kind))
            return {(t, k): n for t, k, n in got}

    # -- the controller's cycle ------------------------------------------------------------------
    def apply(self, write: CycleWrite, lease: Lease) -> bool:
        """Write one cycle's decisions in one transaction if ``lease`` still holds (renewing it).

        Fencing: the lease row is locked and checked (holder and epoch) first; a lost lease writes
        nothing and returns False. Each change applies only from the state it expects (an admission
        only to a still-waiting row, pending or deferred, so a row cancelled meanwhile is skipped and
        none is admitted twice); a row admitted again after a requeue records ``resumed``. ``waiting``
        records a decision only when something changed: ``waiting`` when a pending row's reasons
        changed (or a deferred one's start came), ``deferred`` when a row is deferred or its start moved.
        """
        def cycle(conn: Connection) -> bool:
            if fence(conn, lease, self._clock) is None:
                return False
            now = self._clock()
            by = lease.holder
            out: list[_Decision] = []
            for a in write.admitted:
                admitted = conn.execute(_ADMIT, {
                    "p_key": a.key, "p_now": now, "p_data_center": a.data_center, "p_ray_cluster": a.ray_cluster,
                    "p_region": a.region, "p_family": a.family, "p_accelerator_model": a.accelerator_model,
                    "p_accelerators": a.accelerators, "p_cpus": float(a.cpus), "p_memory_gb": float(a.memory_gb),
                    "p_placement": a.placement, "p_none": None}).first()
                if admitted is not None:
                    kind = "resumed" if admitted.attempts else "admitted"
                    out.append(_Decision(a.key, kind, a.data_center, a.detail, by))
            out += self._waiting(conn, write, by)
            for p in write.preempt:
                victim = conn.execute(_PREEMPT, {"p_key": p.victim, "p_by": p.by}).first()
                if victim is not None:
                    detail = f"preempted by {p.by}" + (f": {p.detail}" if p.detail else "")
                    out.append(_Decision(p.victim, "preempting", victim.data_center, detail, by))
            for key in write.expire:
                expired = conn.execute(_EXPIRE, {"p_key": key, "p_now": now}).first()
                if expired is not None:
                    out.append(_Decision(key, "expired", None, expired.reasons or "", by))
            for key in write.abandon:
                gone = conn.execute(_ABANDON, {"p_key": key, "p_now": now}).first()
                if gone is not None:
                    out.append(_Decision(key, "abandoned", gone.data_center, "no heartbeat from its owner", by))
            self._record(conn, now, out)
            return True

        return run_write(self.engine, cycle)

    def _waiting(self, conn: Connection, write: CycleWrite, by: str) -> list[_Decision]:
        """Set the reasons (and state: deferred or pending) of still-waiting rows where they changed (read
        first: most did not). A deferred row keeps ``start_at`` once its start came (``max_wait`` counts
        from it)."""
        wanted = {w.key: w for w in write.waiting}
        keys = sorted(wanted)
        now: dict[str, Any] = {}  # key: its row (key, reasons, state, start_at, start_note)
        for chunk in _chunks(keys):
            now.update((r.key, r) for r in conn.execute(_REASONS_NOW, {"p_keys": list(chunk)}))
        out = []
        for key in keys:
            w, row = wanted[key], now.get(key)
            if row is None:
                continue
            if w.start_at is not None:
                moved = row.state != "deferred" or row.start_at != w.start_at  # a decision only when this changed
                if not moved and row.reasons == w.reasons and row.start_note == w.start_note:
                    continue
                done = conn.execute(_DEFER, {"p_key": key, "p_reasons": w.reasons, "p_start_at": float(w.start_at),
                                             "p_start_note": w.start_note}).first() is not None
                if done and moved:
                    out.append(_Decision(key, "deferred", None, f"starts {start_text(w.start_at)}"
                                         + (f": {w.start_note}" if w.start_note else ""), by))
            elif row.state != "pending" or row.reasons != w.reasons:
                if conn.execute(_REASONS, {"p_key": key, "p_reasons": w.reasons, "p_state": "pending"}
                                ).first() is not None:
                    out.append(_Decision(key, "waiting", None, w.reasons, by))
        return out

    # -- inside a transaction ----------------------------------------------------------------------
    @staticmethod
    def _row(conn: Connection, key: str) -> WorkloadRow | None:
        got: Row[Any] | None = conn.execute(_ROW, {"p_key": key}).one_or_none()
        return None if got is None else WorkloadRow.of(got)

    @staticmethod
    def _locked_row(conn: Connection, key: str) -> WorkloadRow:
        got = conn.execute(_ROW_LOCKED, {"p_key": key}).one_or_none()
        if got is None:
            raise QueueError("key", key, "a submitted workload key", key=key, problem="Unknown")
        return WorkloadRow.of(got)

    @staticmethod
    def _record(conn: Connection, now: float, decisions: Sequence[_Decision]) -> None:
        if decisions:
            conn.execute(_RECORD, [{"at": now, "key": d.key, "kind": d.kind, "data_center": d.data_center,
                                      "detail": d.detail, "controller": d.controller} for d in decisions])
