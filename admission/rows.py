"""The admission store's tables (SQLAlchemy 2 declarative) and the frozen rows that leave it.

Tables: ``workloads`` (one row per key, its state and what it holds), ``decisions`` (an
append-only log: one row per change, with the controller that made it) and ``leases`` (the
controller lease: holder, fencing epoch, expiry). Outside this package only the frozen
dataclasses are seen: :class:`WorkloadRow`, :class:`DecisionRow`, and what a controller hands to
``AdmissionQueue.apply`` (:class:`CycleWrite` of :class:`Admission`, :class:`Waiting`,
:class:`Preemption`). Times are floats, seconds since the epoch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import BigInteger, CheckConstraint, Double, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from westflow.errors import WestflowError, field_message
from westflow.tariffs import TZ_OFFSET_S

__all__ = [
    "STATES", "LIVE", "WAITING", "HOLDING", "FINAL", "FINISH_STATES", "KINDS", "QueueError",
    "Base", "WorkloadRecord", "DecisionRecord", "LeaseRecord", "WORKLOADS", "DECISIONS", "LEASES",
    "WorkloadRow", "DecisionRow", "Admission", "Waiting", "Preemption", "CycleWrite",
    "check_state", "check_kind", "check_key", "check_number", "exclude_json", "start_text",
]

STATES: Final = ("pending", "deferred", "admitted", "preempting", "finished", "failed", "expired", "cancelled",
                 "abandoned")
LIVE: Final = ("pending", "deferred", "admitted", "preempting")
WAITING: Final = ("pending", "deferred")  # states the cycle considers (deferred: placed to start later)
HOLDING: Final = ("admitted", "preempting")  # states that hold capacity
FINAL: Final = ("finished", "failed", "expired", "cancelled", "abandoned")
FINISH_STATES: Final = ("finished", "failed", "cancelled")  # what AdmissionQueue.finish may set
KINDS: Final = ("queued", "admitted", "waiting", "deferred", "preempting", "requeued", "resumed", "expired",
                "finished", "failed", "cancelled", "abandoned")
KEY_MAX: Final = 256
NAME_MAX: Final = 256


class QueueError(WestflowError):
    """A queue operation got a bad value or found a row in a state that does not allow it.

    Carries ``field``, ``value``, ``allowed`` and, when a row is concerned, its ``key`` and ``state``.
    """

    def __init__(self, field: str, value: Any, allowed: str | Sequence[str] | None = None, *,
                 key: str | None = None, state: str | None = None, problem: str = "Invalid",
                 message: str | None = None, fix: str | None = None) -> None:
        self.field, self.value, self.allowed, self.key, self.state = field, value, allowed, key, state
        super().__init__(field_message(field, value, allowed, problem=problem, message=message, fix=fix,
                                       where="admission queue"))


def check_state(state: str, allowed: Sequence[str] = STATES, *, field: str = "state") -> str:
    """``state`` if it is one of ``allowed``, else a :class:`QueueError` listing them."""
    if not isinstance(state, str) or state not in allowed:
        raise QueueError(field, state, allowed)
    return state


def check_kind(kind: str) -> str:
    """``kind`` if it is a decision kind, else a :class:`QueueError` listing them."""
    return check_state(kind, KINDS, field="decision kind")


def check_key(key: str, field: str = "key") -> str:
    """A non-empty printable key of at most :data:`KEY_MAX` characters."""
    if not isinstance(key, str) or not key or len(key) > KEY_MAX or not key.isprintable():
        raise QueueError(field, key, f"a non-empty printable string of at most {KEY_MAX} characters")
    return key


def check_number(field: str, value: Any, *, integer: bool = False, optional: bool = False) -> Any:
    """A finite number >= 0 (an int when ``integer``; None allowed when ``optional``)."""
    if value is None and optional:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int))
            or not math.isfinite(value) or value < 0):
        raise QueueError(field, value, ("an integer" if integer else "a finite number") + " >= 0"
                         + (" or None" if optional else ""))
    return value


def start_text(epoch_s: float) -> str:
    """A deferred step's start as the queue shows it: ``2026-11-30 09:00 Asia/Shanghai`` (the tariffs' clock)."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch_s + TZ_OFFSET_S)) + " Asia/Shanghai"


def exclude_json(names: Iterable[str]) -> str:
    """Excluded data centers as stored: a JSON list, order of first mention, no duplicates."""
    out: list[str] = []
    for n in names:
        check_key(n, "exclude")
        if n not in out:
            out.append(n)
    return json.dumps(out)


# -- tables ------------------------------------------------------------------------------------


class Base(DeclarativeBase):
    """The admission store's metadata (the migrations in ``admission/migrations`` create the same)."""


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class WorkloadRecord(Base):
    """One workload: who asked, its spec, its state and, while holding, what and where it holds."""

    __tablename__ = "workloads"
    __table_args__ = (
        CheckConstraint(_in("state", STATES), name="ck_workloads_state"),
        Index("ix_workloads_state_submitted", "state", "submitted_at"),
        Index("ix_workloads_owner", "owner"),
    )

    key: Mapped[str] = mapped_column(String(KEY_MAX), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(NAME_MAX))
    priority_class: Mapped[str] = mapped_column(String(NAME_MAX))
    priority: Mapped[int] = mapped_column(Integer)
    spec_name: Mapped[str] = mapped_column(String(NAME_MAX))
    spec_json: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    submitted_at: Mapped[float] = mapped_column(Double)
    max_wait_s: Mapped[float | None] = mapped_column(Double)
    exclude: Mapped[str] = mapped_column(Text)  # JSON list of data-centre names
    owner: Mapped[str] = mapped_column(String(NAME_MAX))
    heartbeat_at: Mapped[float] = mapped_column(Double)
    admitted_at: Mapped[float | None] = mapped_column(Double)
    data_center: Mapped[str | None] = mapped_column(String(NAME_MAX))
    ray_cluster: Mapped[str | None] = mapped_column(String(NAME_MAX))
    region: Mapped[str | None] = mapped_column(String(NAME_MAX))
    family: Mapped[str | None] = mapped_column(String(NAME_MAX))
    accelerator_model: Mapped[str | None] = mapped_column(String(NAME_MAX))
    accelerators: Mapped[int] = mapped_column(Integer)
    cpus: Mapped[float] = mapped_column(Double)
    memory_gb: Mapped[float] = mapped_column(Double)
    placement: Mapped[str | None] = mapped_column(Text)
    reasons: Mapped[str | None] = mapped_column(Text)
    preempted_by: Mapped[str | None] = mapped_column(String(KEY_MAX))
    preemptions: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    finished_at: Mapped[float | None] = mapped_column(Double)
    detail: Mapped[str | None] = mapped_column(Text)
    # The federation (set of Ray clusters) the workload is for: a controller admits only its own scope's work
    # on its own capacity read, so two federations sharing one database never admit each other's steps.
    scope: Mapped[str] = mapped_column(String(NAME_MAX), server_default="")
    # Placed in time (migration r0004): when the step is to start (epoch s) and why then. Set while ``deferred``
    # and kept after (the wait for capacity past ``max_wait`` is counted from it); None: never deferred.
    start_at: Mapped[float | None] = mapped_column(Double)
    start_note: Mapped[str | None] = mapped_column(Text)


class DecisionRecord(Base):
    """One change to a workload (``id`` grows with each insert), with the controller (or caller) that made it."""

    __tablename__ = "decisions"
    __table_args__ = (CheckConstraint(_in("kind", KINDS), name="ck_decisions_kind"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    at: Mapped[float] = mapped_column(Double)
    key: Mapped[str] = mapped_column(String(KEY_MAX), ForeignKey("workloads.key"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    data_center: Mapped[str | None] = mapped_column(String(NAME_MAX))
    detail: Mapped[str] = mapped_column(Text)
    controller: Mapped[str] = mapped_column(String(NAME_MAX))


class LeaseRecord(Base):
    """A named lease: its holder ('' when free), fencing epoch, expiry and the ttl it is renewed for."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(NAME_MAX), primary_key=True)
    holder: Mapped[str] = mapped_column(String(NAME_MAX))
    epoch: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[float] = mapped_column(Double)
    ttl_s: Mapped[float] = mapped_column(Double)


WORKLOADS: Final = Base.metadata.tables["workloads"]
DECISIONS: Final = Base.metadata.tables["decisions"]
LEASES: Final = Base.metadata.tables["leases"]


# -- what crosses the boundary -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkloadRow:
    """A workload as read from the queue (see :class:`WorkloadRecord` for the columns)."""

    key: str
    tenant: str
    priority_class: str
    priority: int
    spec_name: str
    spec_json: str
    state: str
    submitted_at: float
    max_wait_s: float | None
    exclude: tuple[str, ...]
    owner: str
    heartbeat_at: float
    admitted_at: float | None
    data_center: str | None
    ray_cluster: str | None
    region: str | None
    family: str | None
    accelerator_model: str | None
    accelerators: int
    cpus: float
    memory_gb: float
    placement: str | None  # JSON summary written by the controller
    reasons: str | None  # JSON: last reason per DC while pending
    preempted_by: str | None
    preemptions: int
    attempts: int
    finished_at: float | None
    detail: str | None
    scope: str = ""
    start_at: float | None = None  # deferred: when it is to start (epoch s); kept once it waits past it
    start_note: str | None = None  # why then ("deferred 14 h to the 09:00 valley band in helinger: ...")

    def wait_from(self) -> float:
        """Where its ``max_wait`` counts from: its submission, or its planned start when deferred past it."""
        return self.submitted_at if self.start_at is None else max(self.submitted_at, self.start_at)

    @classmethod
    def of(cls, r: WorkloadRecord | Any) -> WorkloadRow:
        """From a mapped record or a selected row with the same column names."""
        exclude = () if r.exclude == "[]" else tuple(json.loads(r.exclude))
        return cls(r.key, r.tenant, r.priority_class, r.priority, r.spec_name, r.spec_json, r.state,
                   r.submitted_at, r.max_wait_s, exclude, r.owner, r.heartbeat_at, r.admitted_at, r.data_center,
                   r.ray_cluster, r.region, r.family, r.accelerator_model,
                   r.accelerators, r.cpus, r.memory_gb, r.placement, r.reasons, r.preempted_by, r.preemptions,
                   r.attempts, r.finished_at, r.detail, getattr(r, "scope", "") or "", getattr(r, "start_at", None),
                   getattr(r, "start_note", None))


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One recorded change (``kind`` is one of :data:`KINDS`)."""

    id: int
    at: float
    key: str
    kind: str
    data_center: str | None
    detail: str
    controller: str


@dataclass(frozen=True, slots=True)
class Admission:
    """Admit pending workload ``key`` at ``data_center``, holding these resources."""

    key: str
    data_center: str
    ray_cluster: str
    region: str
    family: str | None
    accelerator_model: str | None
    accelerators: int
    cpus: float
    memory_gb: float
    placement: str
    detail: str

    def __post_init__(self) -> None:
        check_key(self.key)
        check_key(self.data_center, "data_center")
        check_number("accelerators", self.accelerators, integer=True)
        check_number("cpus", self.cpus)
        check_number("memory_gb", self.memory_gb)


@dataclass(frozen=True, slots=True)
class Waiting:
    """Waiting workload ``key`` still waits; ``reasons`` is JSON text (last reason per DC).

    ``start_at`` (epoch s): the cycle placed it to start then (state ``deferred``, ``start_note`` says why);
    None: it waits for quota or capacity (state ``pending``).
    """

    key: str
    reasons: str
    start_at: float | None = None
    start_note: str = ""

    def __post_init__(self) -> None:
        check_key(self.key)
        check_number("start_at", self.start_at, optional=True)


@dataclass(frozen=True, slots=True)
class Preemption:
    """Ask admitted workload ``victim`` to give way to ``by``."""

    victim: str
    by: str
    detail: str

    def __post_init__(self) -> None:
        check_key(self.victim, "victim")
        check_key(self.by, "by")


@dataclass(frozen=True, slots=True)
class CycleWrite:
    """Everything one admission cycle writes, applied in one transaction under the lease."""

    admitted: tuple[Admission, ...] = ()
    waiting: tuple[Waiting, ...] = ()
    preempt: tuple[Preemption, ...] = ()
    expire: tuple[str, ...] = ()
    abandon: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in (*self.expire, *self.abandon):
            check_key(key)


# -- metering (admission.metering reads and writes it; migration r0002) ------------------------------

USAGE_STATUSES: Final = ("SUCCEEDED", "FAILED", "STOPPED", "PREEMPTED", "LOST")


class UsageEntry(Base):
    """One Ray job that ran: append-only, one row per ``ray_job_id`` (the key that makes writes idempotent)."""

    __tablename__ = "usage"
    __table_args__ = (
        CheckConstraint(_in("status", USAGE_STATUSES), name="ck_usage_status"),
        Index("ix_usage_end", "end_at"),
        Index("ix_usage_tenant_end", "tenant", "end_at"),
    )

    ray_job_id: Mapped[str] = mapped_column(String(KEY_MAX), primary_key=True)
    cluster: Mapped[str] = mapped_column(String(NAME_MAX))
    data_center: Mapped[str] = mapped_column(String(NAME_MAX))
    region: Mapped[str] = mapped_column(String(NAME_MAX))
    tenant: Mapped[str] = mapped_column(String(NAME_MAX))
    run_id: Mapped[str | None] = mapped_column(String(NAME_MAX))
    step: Mapped[str | None] = mapped_column(String(KEY_MAX))
    accelerator_model: Mapped[str | None] = mapped_column(String(NAME_MAX))
    accelerators: Mapped[int] = mapped_column(Integer)
    cpus: Mapped[float] = mapped_column(Double)
    memory_gb: Mapped[float] = mapped_column(Double)
    start_at: Mapped[float] = mapped_column(Double)
    end_at: Mapped[float] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(16))
    accelerator_hours: Mapped[float] = mapped_column(Double)
    cpu_hours: Mapped[float] = mapped_column(Double)
    kwh: Mapped[float] = mapped_column(Double)
    cny: Mapped[float] = mapped_column(Double)
    transfer_gb: Mapped[float] = mapped_column(Double)
    transfer_cny: Mapped[float] = mapped_column(Double)
    preemptions: Mapped[int] = mapped_column(Integer)
    failovers: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[float] = mapped_column(Double)
    recorded_by: Mapped[str] = mapped_column(String(16))
