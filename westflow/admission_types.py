"""What an admission cycle reads and decides: pending asks, held work, and its decisions.

Plain frozen values, shared by the cycle (:mod:`westflow.admission_cycle`), its preemption search
(:mod:`westflow.preemption`), the admission controller and the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from westflow.capacity import Resources
from westflow.placement import Placement
from westflow.spec import WorkloadSpec

__all__ = ["Ask", "Held", "Admit", "Wait", "Preempt", "CycleResult", "Try", "Shape", "Pool", "Blocks", "EPS",
           "QUOTA", "CONFIG", "PREEMPTION", "DEFERRED", "latest_start"]

QUOTA, CONFIG, PREEMPTION, DEFERRED = "quota", "config", "preemption", "deferred"  # the non-DC keys of a Wait's reasons
EPS = 1e-9

Shape = tuple[object, ...]
Pool = tuple[str, str] | None  # (family, model) an ask could run on; None: CPU only
Blocks = dict[tuple[str, str | None], str]  # (region or "*", model or None) -> why quota rules it out


def latest_start(deadline: datetime | None, duration_hours: float) -> float | None:
    """The latest start (epoch s) that still finishes ``duration_hours`` of work by ``deadline``; None
    without a deadline. Work with a deadline is due then in the admission order (else at submission)."""
    return None if deadline is None else deadline.timestamp() - duration_hours * 3600.0


@dataclass(frozen=True, slots=True)
class Ask:
    """One pending workload."""

    key: str
    spec: WorkloadSpec
    priority_class: str
    submitted_at: float
    exclude: frozenset[str] = frozenset()  # DCs it must not go to (failover)
    awaiting_preemption: bool = False  # victims already preempting for it: do not preempt more


@dataclass(frozen=True, slots=True)
class Held:
    """Admitted work holding capacity (``preempting``: asked to stop; it holds until it releases)."""

    key: str
    tenant: str
    priority_class: str
    data_center: str
    region: str
    family: str | None
    resources: Resources
    admitted_at: float
    preempting: bool = False


@dataclass(frozen=True, slots=True)
class Admit:
    key: str
    placement: Placement
    family: str | None
    borrowed: bool  # the admission puts its tenant over its nominal quota (it borrows from the cohort)


@dataclass(frozen=True, slots=True)
class Wait:
    key: str
    reasons: tuple[tuple[str, str], ...]  # (data center, or QUOTA / CONFIG / PREEMPTION / DEFERRED, reason text)
    start_at: float | None = None  # deferred: the placement's start (epoch s; its note is the DEFERRED reason)


@dataclass(frozen=True, slots=True)
class Preempt:
    key: str  # the preemptor
    data_center: str
    victims: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class CycleResult:
    admitted: tuple[Admit, ...]
    waiting: tuple[Wait, ...]
    preempt: tuple[Preempt, ...]


@dataclass(slots=True)
class Try:
    """One ask being decided: its tenant, its class's value, the pools it could use, and what it would
    charge its tenant's quota on each (filled as read)."""

    ask: Ask
    tenant: str
    value: int
    pools: tuple[Pool, ...]
    use: dict[Pool, dict[str, float]] = field(default_factory=dict)
