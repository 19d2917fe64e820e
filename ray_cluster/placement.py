"""Placement: filter the data centers, score the eligible ones, pick one.

The pipeline of :meth:`Policy.place` is ``_evaluate`` (filter: liveness,
latency tier, accelerator compatibility, capacity, deadline; cost every eligible
DC) then ``_choose`` (the policy's ordering) then ``_explain`` (why every other
DC lost). Policies differ only in their sort key and in whether they respect
the latency tier; the baselines in :mod:`ray_cluster.policies` are peers of
:class:`WestflowPolicy`, not special cases.

Speed (issue 2): everything that depends only on the network (liveness and
latency rejections per origin, compatible pools per accelerator request,
accelerator rejections) is computed once per network in :class:`_Tables`.
The text of why each eligible DC lost to the winner, and the Ray request, are
built lazily on first read of ``Placement.rejected`` / ``Placement.ray``: a
caller that only needs the choice (the simulator) never pays for them, and a
caller that reads them gets exactly the text an eager build would give (the
capacity snapshot is copied at decision time).

Pure Python: no Ray or Dagster import.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar, overload

from ray_cluster.capacity import Capacity, static_capacity
from ray_cluster.errors import InfeasibleError
from ray_cluster.model import AcceleratorPool, DataCenter, Family, Network
from ray_cluster.spec import WorkloadSpec
from ray_cluster.tags import RayRequest, ray_request

__all__ = ["Reason", "Rejection", "Candidate", "Context", "Placement", "Policy", "WestflowPolicy"]

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


class _Deferred(Generic[T]):
    """A value computed on first read (see :class:`_Lazy`)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn


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
            v = d[self._slot] = v.fn()
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


def _want(spec: WorkloadSpec) -> str:
    a = spec.accelerator
    return a.model or a.family.value


_Row = tuple[Rejection | None, ...]
_Pools = tuple[tuple[AcceleratorPool, ...], ...]
# inventory index, DC, id, RTT to the origin, cpu_watts, PUE, price (read once per decision)
_Site = tuple[int, DataCenter, str, "float | None", float, float, float]


class _Tables:
    """Per-network facts a decision needs, computed once and memoised per key."""

    def __init__(self, network: Network) -> None:
        self.dcs = network.data_centers
        self.ids = tuple(d.id for d in self.dcs)
        self.cities = frozenset(network.city_ids)
        self.unavailable = tuple(
            Rejection(d.id, Reason.UNAVAILABLE, "no live Ray node for this DC") for d in self.dcs)
        self.static = static_capacity(network)  # the capacity used when the caller gives none
        self._network = network
        self._sites: dict[tuple[str | None, float | None], tuple[tuple[_Site, ...], tuple[_Ranked, ...]]] = {}
        self._pools: dict[tuple[Family, str | None], tuple[_Pools, _Row, str]] = {}
        self.region = tuple(d.region.value for d in self.dcs)

    def sites(self, origin: str | None, bound: float | None) -> tuple[tuple[_Site, ...], tuple[_Ranked, ...]]:
        """The DCs within ``bound`` of ``origin`` (with their RTT), and the latency rejections of the rest."""
        key = (origin, bound)
        got = self._sites.get(key)
        if got is None:
            ok: list[_Site] = []
            late: list[_Ranked] = []
            for i, d in enumerate(self.dcs):
                r = self._network.rtt_ms[(d.id, origin)] if origin else None
                if bound is not None and r is not None and r > bound:
                    late.append((i, Rejection(d.id, Reason.LATENCY, f"RTT {r:.1f} ms to {origin} > {bound:g} ms")))
                else:
                    ok.append((i, d, d.id, r, d.cpu_watts, d.pue, d.price_cny_kwh))
            got = self._sites[key] = (tuple(ok), tuple(late))
        return got

    def pools(self, spec: WorkloadSpec) -> tuple[_Pools, _Row, str]:
        """Per DC: compatible pools (cheapest power first, stable) and the rejection if none;
        and the request's name in rejection text."""
        fam, model = spec.accelerator.family, spec.accelerator.model
        got = self._pools.get((fam, model))
        if got is None:
            pools: list[tuple[AcceleratorPool, ...]] = []
            rej: list[Rejection | None] = []
            for dc in self.dcs:
                ok = [p for p in dc.pools
                      if (fam is Family.ANY or p.family is fam) and (model is None or p.model == model)]
                pools.append(tuple(sorted(ok, key=lambda p: p.watts)))
                have = ", ".join(f"{p.family.value} {p.model}" for p in dc.pools) or "CPUs only"
                rej.append(None if ok else
                           Rejection(dc.id, Reason.ACCELERATOR, f"no {_want(spec)} here (has {have})"))
            got = self._pools[(fam, model)] = (tuple(pools), tuple(rej), _want(spec))
        return got


# A rejection with its DC's inventory index (the output order). Capacity rejections, the
# common case under load, keep their numbers (dc, count, wanted, free) and are written on read.
_Ranked = tuple[int, "Rejection | tuple[str, int, str, int]"]


def _text(r: Rejection | tuple[str, int, str, int]) -> Rejection:
    if isinstance(r, Rejection):
        return r
    dc_id, count, want, most = r
    return Rejection(dc_id, Reason.CAPACITY, f"{count} x {want} asked, {most} free")


def _in_order(late: Sequence[_Ranked], rest: Sequence[_Ranked], caps: Capacity,
              unavailable: Sequence[Rejection]) -> tuple[Rejection, ...]:
    """The latency and other rejections merged into inventory order.

    Liveness is checked before latency, so a DC beyond the bound that is also down
    reads "unavailable".
    """
    both: list[_Ranked] = []
    for i, r in late:
        cap = caps.get(r[0])
        both.append((i, r) if cap is not None and cap.alive else (i, unavailable[i]))
    if not both:
        return tuple(_text(r) for _, r in rest)
    if rest:
        both.extend(rest)
        both.sort(key=lambda x: x[0])
    return tuple(_text(r) for _, r in both)


def _ray_for(dc: DataCenter, family: Family, pool: AcceleratorPool | None, spec: WorkloadSpec,
             realtime: bool) -> RayRequest:
    return ray_request(
        dc, family=family, model=pool.model if pool else None, count=spec.accelerator.count,
        per_node=pool.per_node if pool else 1, cpus=spec.cpus, memory_gb=spec.memory_gb,
        realtime_origin=spec.origin if realtime else None,
    )


@functools.lru_cache(maxsize=32)
def _tables(network: Network) -> _Tables:
    return _Tables(network)


@dataclass(frozen=True, slots=True)
class Context:
    """What a policy's key may read besides the candidate."""

    network: Network
    capacity: Capacity


class Policy:
    """Base policy: ``place(spec, network, capacity) -> Placement``.

    Subclasses set ``name`` and ``respect_latency`` and implement :meth:`_key`
    (smaller wins); :meth:`_lost` says why a candidate lost to the winner.
    Policies keep no per-call state on ``self`` so one instance may serve
    many threads (round-robin's counter is the one, atomic, exception).
    """

    name = "base"
    respect_latency = True

    def __call__(self, spec: WorkloadSpec, network: Network, capacity: Capacity | None = None) -> Placement:
        return self.place(spec, network, capacity)

    def place(self, spec: WorkloadSpec, network: Network, capacity: Capacity | None = None) -> Placement:
        """Place ``spec``; raise InfeasibleError carrying every DC's reason if nothing fits."""
        t = _tables(network)
        if spec.tier not in network.tiers or (spec.origin is not None and spec.origin not in t.cities):
            spec.check_against(network)  # raises the SpecError naming the field
        ctx = Context(network, t.static if capacity is None else capacity)
        cands, late, rejected = self._evaluate(spec, ctx, t)
        if not cands:
            raise InfeasibleError(spec, _in_order(late, rejected, ctx.capacity, _tables(network).unavailable))
        best = self._choose(cands, ctx)
        # The losers' text is written on first read, against the capacity seen now.
        frozen = ctx if capacity is None else Context(network, dict(capacity))
        return self._placement(spec, ctx, best, _Deferred(
            functools.partial(self._explain, late, rejected, cands, best, frozen)))

    def _explain(self, late: Sequence[_Ranked], rejected: Sequence[_Ranked], cands: Sequence[Candidate],
                 best: Candidate, ctx: Context) -> tuple[Rejection, ...]:
        """Every DC but the winner, in inventory order of the filter, then the losers."""
        filtered = _in_order(late, rejected, ctx.capacity, _tables(ctx.network).unavailable)
        return filtered + tuple(self._lost(c, best, ctx) for c in cands if c is not best)

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        return min(cands, key=lambda c: self._key(c, ctx))

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        raise NotImplementedError

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        return Rejection(c.dc.id, Reason.DEARER, f"dearer by {c.cost_cny - best.cost_cny:.2f} CNY")

    def _evaluate(self, spec: WorkloadSpec, ctx: Context, t: _Tables | None = None
                  ) -> tuple[list[Candidate], tuple[_Ranked, ...], list[_Ranked]]:
        """Filter and cost: (candidates, latency rejections, other rejections), each in inventory order."""
        network, caps = ctx.network, ctx.capacity
        if t is None:
            t = _tables(network)
        bound = network.tiers[spec.tier].max_rtt_ms if self.respect_latency else None
        sites, late = t.sites(spec.origin, bound)
        acc = spec.accelerator
        count = acc.count
        cpu_only = acc.family is Family.CPU
        if cpu_only:
            all_pools: _Pools = ()
            no_acc: _Row = ()
            want = ""
        else:
            all_pools, no_acc, want = t.pools(spec)
        cpus, mem, hours = spec.cpus, spec.memory_gb, spec.duration_hours
        inputs, deadline = spec.inputs, spec.deadline_hours
        unavailable = t.unavailable
        new_cand = tuple.__new__  # Candidate(...) without the generated __new__'s call overhead
        cands: list[Candidate] = []
        add = cands.append
        rejected: list[_Ranked] = []
        for i, dc, dc_id, rtt, cpu_watts, pue, price in sites:
            cap = caps.get(dc_id)
            if cap is None or not cap.alive:
                rejected.append((i, unavailable[i]))
                continue
            pool: AcceleratorPool | None = None
            if not cpu_only:
                pools = all_pools[i]
                if not pools:
                    rejected.append((i, no_acc[i]))  # type: ignore[arg-type]
                    continue
                free = cap.free
                most: int | None = None
                for p in pools:
                    f = free.get(p.model, 0)
                    if f >= count:
                        pool = p
                        break
                    if most is None or f > most:
                        most = f
                else:
                    rejected.append((i, (dc_id, count, want, most)))  # type: ignore[arg-type]
                    continue
            if cap.free_cpus < cpus or cap.free_memory_gb < mem:
                rejected.append((i, Rejection(dc_id, Reason.CAPACITY,
                                              f"{cpus:g} CPUs / {mem:g} GB asked, {cap.free_cpus:g} / "
                                              f"{cap.free_memory_gb:g} free")))
                continue
            t_hours = t_cost = 0.0
            if inputs:
                for ds in inputs:
                    if ds.region is not dc.region:
                        link = network.transfer[(ds.region, dc.region)]
                        t_hours += ds.size_bytes * 8 / (link.bandwidth_gbps * 1e9) / 3600
                        t_cost += ds.size_bytes / 1e9 * link.cost_cny_per_gb
            if deadline is not None and t_hours + hours > deadline:
                rejected.append((i, Rejection(dc_id, Reason.DEADLINE,
                                              f"{t_hours:.2f} h transfer + {hours:g} h run > {deadline:g} h")))
                continue
            kw = ((pool.watts * count) if pool else 0.0) + cpu_watts * cpus
            kwh = kw / 1000 * hours * pue
            add(new_cand(Candidate, (i, dc, pool, rtt, kwh, kwh * price, t_hours, t_cost)))
        return cands, late, rejected

    def _placement(self, spec: WorkloadSpec, ctx: Context, c: Candidate,
                   rejected: _Deferred[tuple[Rejection, ...]]) -> Placement:
        dc, pool = c.dc, c.pool
        bound = ctx.network.tiers[spec.tier].max_rtt_ms
        rtt = c.rtt_ms
        fam = pool.family if pool else Family.CPU
        # Built without __init__ (a frozen dataclass sets 16 fields one object.__setattr__ at a
        # time); the result is the same object __init__ would give.
        out = object.__new__(Placement)
        out.__dict__.update(
            spec=spec, policy=self.name, data_center=dc.id, ray_cluster=dc.ray_cluster,
            region=_tables(ctx.network).region[c.index], rtt_ms=rtt,
            within_tier=bound is None or rtt is None or rtt <= bound,
            family=fam, accelerator_model=pool.model if pool else None, energy_kwh=c.energy_kwh,
            energy_cost_cny=c.energy_cost_cny, transfer_hours=c.transfer_hours,
            transfer_cost_cny=c.transfer_cost_cny, score=self._key(c, ctx)[0],
            _lazy_rejected=rejected,
            _lazy_ray=_Deferred(functools.partial(_ray_for, dc, fam, pool, spec, bound is not None)),
        )
        return out


class WestflowPolicy(Policy):
    """Cheapest total cost, with a bonus for DCs below their utilisation target.

    score = energy cost + transfer cost + hour_value x transfer hours
            - fill_bonus x energy cost x (target - utilisation) / target   (when below target)

    Sort key ``(score, rtt_ms, inventory order)``: ties go to the nearer DC, then
    to the one listed first.
    """

    name = "westflow"

    def _score(self, c: Candidate, ctx: Context) -> float:
        w = ctx.network.weights
        util = ctx.capacity[c.dc.id].utilisation
        target = c.dc.utilisation_target
        bonus = w.fill_bonus * c.energy_cost_cny * max(0.0, target - util) / target
        return c.cost_cny + w.hour_value_cny * c.transfer_hours - bonus

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        return (self._score(c, ctx), c.rtt_ms or 0.0, float(c.index))

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        # _key inlined (the hot loop of every decision); same arithmetic, same order.
        w = ctx.network.weights
        fill, hour = w.fill_bonus, w.hour_value_cny
        caps = ctx.capacity
        # Candidates come in inventory order, so the index tie-break is "keep the earlier one".
        best = cands[0]
        best_s = best_r = math.inf
        for c in cands:
            dc = c.dc
            target = dc.utilisation_target
            e = c.energy_cost_cny
            room = target - caps[dc.id].utilisation
            bonus = fill * e * (room if room > 0.0 else 0.0) / target
            score = (e + c.transfer_cost_cny) + hour * c.transfer_hours - bonus
            if score < best_s or (score == best_s and (c.rtt_ms or 0.0) < best_r):
                best, best_s, best_r = c, score, c.rtt_ms or 0.0
        return best

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        gap = self._score(c, ctx) - self._score(best, ctx)
        return Rejection(c.dc.id, Reason.DEARER,
                         f"dearer by {gap:.2f} CNY (energy {c.energy_cost_cny:.2f} + transfer "
                         f"{c.transfer_cost_cny:.2f}, {ctx.capacity[c.dc.id].utilisation:.0%} used)")
