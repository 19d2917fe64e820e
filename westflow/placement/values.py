"""The values a placement decision is made of: :class:`Placement` and its parts.

Re-exported by :mod:`westflow.placement`, the public module. Pure Python.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar, overload

from westflow.capacity import Capacity
from westflow.inventory import AcceleratorPool, DataCenter, Family, Network
from westflow.spec import WorkloadSpec
from westflow.tags import RayRequest
from westflow.tariffs import Tariff

__all__ = ["Reason", "Rejection", "ShortRejection", "DearerRejection", "Rejections", "Candidate", "CandidateFields",
           "Context", "Placement", "Deferred", "LazyField", "candidate_of", "dearer_of"]

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


class Rejection(tuple[Any, ...]):
    """Why one data center lost: ``Rejection(data_center, reason, detail)``; immutable (a tuple).

    Read it by its attributes. The two rejections every decision writes by the
    hundred on a large network, :class:`ShortRejection` and :class:`DearerRejection`,
    carry their numbers and render ``detail`` when it is read.
    """

    __slots__ = ()

    def __new__(cls, data_center: str, reason: Reason, detail: str) -> Rejection:
        return super().__new__(cls, (data_center, reason, detail))

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickle and copy
        return (self[0], self[1], self[2])

    @property
    def data_center(self) -> str:
        return self[0]  # type: ignore[no-any-return]

    @property
    def reason(self) -> Reason:
        return self[1]  # type: ignore[no-any-return]

    @property
    def detail(self) -> str:
        return self[2]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Rejection(data_center={self.data_center!r}, reason={self.reason!r}, detail={self.detail!r})"


class ShortRejection(Rejection):
    """Capacity: ``count`` x ``want`` accelerators asked, at most ``free`` free in one compatible pool."""

    __slots__ = ()

    def __new__(cls, data_center: str, count: int, want: str, free: int) -> ShortRejection:
        return tuple.__new__(cls, (data_center, Reason.CAPACITY, count, want, free))  # its own constructor

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self[0], self[2], self[3], self[4])

    @property
    def detail(self) -> str:
        return f"{self[2]} x {self[3]} asked, {self[4]} free"


class DearerRejection(Rejection):
    """Lost to the westflow winner by ``gap`` CNY of score (energy and transfer cost, utilisation)."""

    __slots__ = ()

    def __new__(cls, data_center: str, gap: float, energy_cost_cny: float,
                transfer_cost_cny: float, utilisation: float) -> DearerRejection:
        return tuple.__new__(cls, (data_center, Reason.DEARER, gap, energy_cost_cny, transfer_cost_cny, utilisation))

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self[0], *self[2:])

    @classmethod
    def many(cls, data_centers: Iterable[str], gaps: Iterable[float], energy_cost_cny: Iterable[float],
             transfer_cost_cny: Iterable[float], utilisation: Iterable[float]) -> list[DearerRejection]:
        """One rejection per DC, the iterables read in step (built in C: a large network's
        explanation writes them by the hundred)."""
        return list(map(dearer_of if cls is DearerRejection else functools.partial(tuple.__new__, cls),
                        zip(data_centers, itertools.repeat(Reason.DEARER), gaps, energy_cost_cny,
                            transfer_cost_cny, utilisation)))

    @property
    def detail(self) -> str:
        _, _, gap, e, tc, util = self
        return f"dearer by {gap:.2f} CNY (energy {e:.2f} + transfer {tc:.2f}, {util:.0%} used)"


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


CandidateFields = tuple[int, DataCenter, "AcceleratorPool | None", "float | None", float, float, float, float]
"""A :class:`Candidate`'s fields, in order, as a plain tuple: what the filter writes per eligible DC
(a plain tuple is built several times faster than a tuple subclass such as Candidate)."""
DearerFields = tuple[str, Reason, float, float, float, float]

candidate_of: Callable[[CandidateFields], Candidate] = functools.partial(tuple.__new__, Candidate)
"""A :class:`Candidate` from its fields, in order, as one tuple: the constructor without the
Python-level ``__new__`` (the filter builds one per eligible DC per decision)."""

dearer_of: Callable[[DearerFields], DearerRejection] = functools.partial(tuple.__new__, DearerRejection)
"""A :class:`DearerRejection` from its tuple ``(data_center, Reason.DEARER, gap, energy_cost_cny,
transfer_cost_cny, utilisation)``: the constructor without the Python-level ``__new__``."""


class Deferred(functools.partial[T]):
    """A value computed on first read of a :class:`LazyField`: ``fn(*args)``.

    A :class:`functools.partial` subclass: built in C, one object per deferred value.
    """

    __slots__ = ()


class Rejections(Sequence[Rejection]):
    """Why every other DC lost, in order: an immutable sequence of :class:`Rejection`, read as a tuple.

    ``head`` (the rejections the filters wrote) is kept as given; the ``n_dearer`` losers on
    score that follow it are built by ``dearer()`` on first read of an item, once (their
    numbers are computed already: on a large network a few hundred objects a decision is
    the cost of the explanation that a caller reading only the choice or the count never
    needs). It compares equal to the tuple of its items (and to another such sequence),
    hashes, prints, pickles and concatenates as that tuple does.
    """

    __slots__ = ("_head", "_n", "_dearer", "_items")

    def __init__(self, head: tuple[Rejection, ...],
                 dearer: Callable[[], Iterable[Rejection]] | None = None, n_dearer: int = 0) -> None:
        self._head = head
        self._n = len(head) + n_dearer
        self._dearer = dearer
        self._items = head if dearer is None else None

    def items(self) -> tuple[Rejection, ...]:
        """Every rejection, as a tuple (built on the first call)."""
        got = self._items
        if got is None:
            dearer = self._dearer
            got = self._head if dearer is None else self._head + tuple(dearer())
            self._items, self._dearer = got, None
        return got

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Rejection: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Rejection, ...]: ...
    def __getitem__(self, i: int | slice) -> Rejection | tuple[Rejection, ...]:
        return self.items()[i]

    def __iter__(self) -> Iterator[Rejection]:
        return iter(self.items())

    def __contains__(self, value: object) -> bool:
        return value in self.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Rejections):
            return self._n == other._n and self.items() == other.items()
        if isinstance(other, tuple):
            return self.items() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.items())

    def __add__(self, other: object) -> tuple[Rejection, ...]:
        if isinstance(other, Rejections | tuple):
            return self.items() + tuple(other)
        return NotImplemented

    def __radd__(self, other: object) -> tuple[Rejection, ...]:
        if isinstance(other, tuple):
            return other + self.items()
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self.items())

    def __reduce__(self) -> tuple[type[Rejections], tuple[tuple[Rejection, ...]]]:  # pickle and copy: built
        return (Rejections, (self.items(),))


class LazyField(Generic[T]):
    """Data descriptor for a dataclass field that may be given as a :class:`Deferred`.

    Reading the field computes the value once and memoises it in the instance (as
    :func:`functools.cached_property` does); the dataclass stays frozen for callers
    (its ``__setattr__`` still refuses writes).
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_lazy_" + name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> LazyField[T]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> T | LazyField[T]:
        if obj is None:
            raise AttributeError(self._slot)  # no class-level default: the field is required
        d = obj.__dict__
        v = d[self._slot]
        if type(v) is Deferred:
            v = d[self._slot] = v()
        return v  # type: ignore[no-any-return]

    def __set__(self, obj: object, value: T | Deferred[T]) -> None:
        obj.__dict__[self._slot] = value


@dataclass(frozen=True, init=False)
class Placement:
    """The decision: where the spec runs, what it costs, and why the others lost.

    ``rejected`` and ``ray`` may be given as :class:`Deferred`: they are built on
    first read (a caller that needs only the choice never pays for them). ``rejected``
    reads as a tuple of :class:`Rejection` (policies give a :class:`Rejections`, whose
    losers on score become objects on first read of an item).
    """

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
    rejected: LazyField[Sequence[Rejection]] = LazyField()
    ray: LazyField[RayRequest] = LazyField()
    start_at: float | None = None  # epoch s the step is to start (placed in time), None: at once
    start_note: str = ""  # why it starts then ("deferred 5 h to the 00:00 valley band in ..."), "" at once
    tariff: Tariff | None = None  # the DC's time-of-use prices (metering prices the hours run at them)

    def __init__(self, spec: WorkloadSpec, policy: str, data_center: str, ray_cluster: str, region: str,
                 rtt_ms: float | None, within_tier: bool, family: Family, accelerator_model: str | None,
                 energy_kwh: float, energy_cost_cny: float, transfer_hours: float, transfer_cost_cny: float,
                 score: float, rejected: Sequence[Rejection] | Deferred[Rejections],
                 ray: RayRequest | Deferred[RayRequest], start_at: float | None = None,
                 start_note: str = "", tariff: Tariff | None = None) -> None:
        # The dataclass's own __init__ written out, fields in declaration order: stores into the
        # instance dict where the generated one makes an object.__setattr__ call per field (it runs
        # once per decision, by the thousand per second). The lazy fields go where LazyField keeps them.
        d = self.__dict__
        d["spec"] = spec
        d["policy"] = policy
        d["data_center"] = data_center
        d["ray_cluster"] = ray_cluster
        d["region"] = region
        d["rtt_ms"] = rtt_ms
        d["within_tier"] = within_tier
        d["family"] = family
        d["accelerator_model"] = accelerator_model
        d["energy_kwh"] = energy_kwh
        d["energy_cost_cny"] = energy_cost_cny
        d["transfer_hours"] = transfer_hours
        d["transfer_cost_cny"] = transfer_cost_cny
        d["score"] = score
        d["_lazy_rejected"] = rejected
        d["_lazy_ray"] = ray
        d["start_at"] = start_at
        d["start_note"] = start_note
        d["tariff"] = tariff

    @property
    def cost_cny(self) -> float:
        return self.energy_cost_cny + self.transfer_cost_cny

    def deferred(self, now_s: float) -> bool:
        """Whether the step is to start later than ``now_s`` (it waits in the queue, state ``deferred``)."""
        return self.start_at is not None and self.start_at > now_s

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
            "start_at": None if self.start_at is None else round(self.start_at, 3), "start_note": self.start_note,
        }


@dataclass(frozen=True, slots=True)
class Context:
    """What a policy's key may read besides the candidate."""

    network: Network
    capacity: Capacity
