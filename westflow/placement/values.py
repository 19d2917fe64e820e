"""The values a placement decision is made of: :class:`Placement` and its parts.

Re-exported by :mod:`westflow.placement`, the public module. Pure Python.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar, overload

from westflow.capacity import Capacity
from westflow.inventory import AcceleratorPool, DataCenter, Family, Network
from westflow.spec import WorkloadSpec
from westflow.tags import RayRequest

__all__ = ["Reason", "Rejection", "Candidate", "Context", "Placement"]

T = TypeVar("T")


class Reason(StrEnum):
    """Why a data center lost."""

    UNAVAILABLE = "unavailable"
    LATENCY = "latency"
    ACCELERATOR = "accelerator"
    CAPACITY = "capacity"
    DEADLINE = "deadline"
    DEARER = "dearer"
    NOT_CHOSEN = "not-chosen"


class Rejection(NamedTuple):
    data_center: str
    reason: Reason
    detail: str


class Candidate(NamedTuple):
    """An eligible data center with the cost of running the spec there.

    A NamedTuple rather than a frozen dataclass: one is built per eligible DC per
    decision, and a tuple is four times cheaper to build.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index; the inventory position
    dc: DataCenter
    pool: AcceleratorPool | None
    rtt_ms: float | None
    energy_kwh: float
    energy_cost_cny: float
    transfer_hours: float
    transfer_cost_cny: float

    @property
    def cost_cny(self) -> float:
        return self.energy_cost_cny + self.transfer_cost_cny


class _Deferred(functools.partial[T]):
    """A value computed on first read (see :class:`_Lazy`): ``fn(*args)``.

    A :class:`functools.partial` subclass: built in C, one object per deferred value.
    """

    __slots__ = ()


class _Lazy(Generic[T]):
    """Data descriptor for a dataclass field that may be given as a :class:`_Deferred`.

    Reading the field computes the value once and stores it; the dataclass stays
    frozen for callers (its ``__setattr__`` still refuses writes).
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_lazy_" + name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Lazy[T]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> T | _Lazy[T]:
        if obj is None:
            raise AttributeError(self._slot)  # no class-level default: the field is required
        d = obj.__dict__
        v = d[self._slot]
        if type(v) is _Deferred:
            v = d[self._slot] = v()
        return v  # type: ignore[no-any-return]

    def __set__(self, obj: object, value: T | _Deferred[T]) -> None:
        obj.__dict__[self._slot] = value


@dataclass(frozen=True)
class Placement:
    """The decision: where the spec runs, what it costs, and why the others lost."""

    spec: WorkloadSpec
    policy: str
    data_center: str
    ray_cluster: str
    region: str
    rtt_ms: float | None
    within_tier: bool
    family: Family
    accelerator_model: str | None
    energy_kwh: float
    energy_cost_cny: float
    transfer_hours: float
    transfer_cost_cny: float
    score: float
    rejected: _Lazy[tuple[Rejection, ...]] = _Lazy()
    ray: _Lazy[RayRequest] = _Lazy()

    @property
    def cost_cny(self) -> float:
        return self.energy_cost_cny + self.transfer_cost_cny

    def __getstate__(self) -> dict[str, Any]:
        _ = self.rejected, self.ray  # materialise before pickling or copying
        return dict(self.__dict__)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (the ``westflow plan --json`` output)."""
        return {
            "spec": self.spec.name, "policy": self.policy, "data_center": self.data_center,
            "ray_cluster": self.ray_cluster, "region": self.region, "tier": self.spec.tier,
            "origin": self.spec.origin,
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
            "within_tier": self.within_tier, "accelerator_family": self.family.value,
            "accelerator_model": self.accelerator_model, "accelerator_count": self.spec.accelerator.count,
            "energy_kwh": round(self.energy_kwh, 6), "energy_cost_cny": round(self.energy_cost_cny, 6),
            "transfer_hours": round(self.transfer_hours, 6),
            "transfer_cost_cny": round(self.transfer_cost_cny, 6), "cost_cny": round(self.cost_cny, 6),
            "ray": self.ray.as_dict(), "ray_job_submit_flags": self.ray.submit_flags(),
            "rejected": [{"data_center": r.data_center, "reason": r.reason.value, "detail": r.detail}
                         for r in self.rejected],
        }


@dataclass(frozen=True, slots=True)
class Context:
    """What a policy's key may read besides the candidate."""

    network: Network
    capacity: Capacity

