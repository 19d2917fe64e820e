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

On a large network (>= 64 DCs) :class:`WestflowPolicy` does not cost every DC: it
visits them in increasing order of a per-DC lower bound on the score (:class:`_Bound`,
numpy) and stops once the bound passes the best score found; the winner, its numbers
and (on read, from a full scan of the copied capacity) every loser's text are those of
the full scan. Decisions the bound does not cover fall back to the full scan.

Pure Python: no Ray or Dagster import.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter
from typing import Any, Generic, NamedTuple, TypeVar, overload

import numpy as np
import numpy.typing as npt

from ray_cluster.capacity import Capacity, static_capacity
from ray_cluster.errors import InfeasibleError
from ray_cluster.model import AcceleratorPool, DataCenter, Family, Network, Region
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
        self._bounds: dict[tuple[str | None, float | None, Family, str | None], _Bound] = {}
        w = network.weights
        # The pruned search of WestflowPolicy (see _Bound) is exact only when every cost input is
        # finite and non-negative and the fill bonus is at most (a hair under) the energy cost.
        self.prune = len(self.dcs) >= _PRUNE_MIN_DCS and 0.0 <= w.fill_bonus <= 0.999 and _fine(
            w.hour_value_cny) and all(
            _fine(d.pue) and _fine(d.price_cny_kwh) and _fine(d.cpu_watts) and _fine(d.utilisation_target)
            and d.utilisation_target > 0.0 and all(_fine(p.watts) for p in d.pools) for d in self.dcs)
        self.static_util = min((c.utilisation for c in self.static.values()), default=0.0)

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

    def bound(self, spec: WorkloadSpec, latency_bound: float | None) -> _Bound:
        """The DCs a spec may use before capacity is read (within the latency bound, with a
        compatible pool), with the per-DC factors of the lower bound on their westflow score."""
        acc = spec.accelerator
        key = (spec.origin, latency_bound, acc.family, acc.model)
        got = self._bounds.get(key)
        if got is None:
            sites, _ = self.sites(spec.origin, latency_bound)
            cpu_only = acc.family is Family.CPU
            all_pools = () if cpu_only else self.pools(spec)[0]
            sel = [s for s in sites if cpu_only or all_pools[s[0]]]
            pools = tuple(() if cpu_only else all_pools[s[0]] for s in sel)
            # watts x PUE x price of the least-power compatible pool, and of the CPUs
            acc_w = np.array([0.0 if cpu_only else min(p.watts for p in pl) for pl in pools], dtype=np.float64)
            pp = np.array([s[5] * s[6] for s in sel], dtype=np.float64)
            cpu_w = np.array([s[4] for s in sel], dtype=np.float64)
            east = np.array([s[1].region is Region.EAST for s in sel], dtype=np.bool_)
            arrays = (acc_w * pp, cpu_w * pp, east)
            for a in arrays:
                a.flags.writeable = False  # shared by every thread's decisions
            got = self._bounds[key] = _Bound(tuple(sel), pools, *arrays)
        return got


_PRUNE_MIN_DCS = 64  # below this a full scan is cheaper than the numpy set-up


def _fine(x: float) -> bool:
    return math.isfinite(x) and x >= 0.0


_F64 = npt.NDArray[np.float64]


class _Bound(NamedTuple):
    """Per (origin, latency bound, accelerator request): the DCs that pass the static filters.

    For such a DC whose cheapest compatible pool draws ``w`` watts, any candidate there has
    ``energy >= (w x count + cpu_watts x cpus) / 1000 x hours x PUE x price`` (each float
    operation is monotone), and with utilisation >= 0 the fill bonus is at most
    ``fill_bonus x energy``; so ``score >= energy_min x (1 - fill_bonus) + transfer terms``.
    """

    sites: tuple[_Site, ...]
    pools: _Pools
    acc_wpp: _F64
    cpu_wpp: _F64
    east: npt.NDArray[np.bool_]


_UTIL = attrgetter("utilisation")


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
    # Whether :meth:`_place_pruned` may answer instead of the full scan (WestflowPolicy only).
    _pruned = False

    def __call__(self, spec: WorkloadSpec, network: Network, capacity: Capacity | None = None) -> Placement:
        return self.place(spec, network, capacity)

    def place(self, spec: WorkloadSpec, network: Network, capacity: Capacity | None = None) -> Placement:
        """Place ``spec``; raise InfeasibleError carrying every DC's reason if nothing fits."""
        t = _tables(network)
        if spec.tier not in network.tiers or (spec.origin is not None and spec.origin not in t.cities):
            spec.check_against(network)  # raises the SpecError naming the field
        if self._pruned and t.prune:
            placed = self._place_pruned(spec, network, capacity, t)
            if placed is not None:
                return placed
        ctx = Context(network, t.static if capacity is None else capacity)
        cands, late, rejected = self._evaluate(spec, ctx, t)
        if not cands:
            raise InfeasibleError(spec, _in_order(late, rejected, ctx.capacity, t.unavailable))
        best = self._choose(cands, ctx)
        # The losers' text is written on first read, against the capacity seen now.
        frozen = ctx if capacity is None else Context(network, dict(capacity))
        return self._placement(spec, ctx, best, _Deferred(self._explain, late, rejected, cands, best, frozen), t)

    def _place_pruned(self, spec: WorkloadSpec, network: Network, capacity: Capacity | None,
                      t: _Tables) -> Placement | None:
        """The same Placement as the full scan without costing every DC; None: use the full scan."""
        return None

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
        moves: dict[Region, tuple[float, float]] = {}
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
                # The same per DC region: computed at the first DC of the region that gets here.
                move = moves.get(dc.region)
                if move is None:
                    for ds in inputs:
                        if ds.region is not dc.region:
                            link = network.transfer[(ds.region, dc.region)]
                            t_hours += ds.size_bytes * 8 / (link.bandwidth_gbps * 1e9) / 3600
                            t_cost += ds.size_bytes / 1e9 * link.cost_cny_per_gb
                    moves[dc.region] = (t_hours, t_cost)
                else:
                    t_hours, t_cost = move
            if deadline is not None and t_hours + hours > deadline:
                rejected.append((i, Rejection(dc_id, Reason.DEADLINE,
                                              f"{t_hours:.2f} h transfer + {hours:g} h run > {deadline:g} h")))
                continue
            kw = ((pool.watts * count) if pool else 0.0) + cpu_watts * cpus
            kwh = kw / 1000 * hours * pue
            add(new_cand(Candidate, (i, dc, pool, rtt, kwh, kwh * price, t_hours, t_cost)))
        return cands, late, rejected

    def _placed_score(self, c: Candidate, ctx: Context) -> float:
        """``Placement.score``: the first element of the winner's key."""
        return self._key(c, ctx)[0]

    def _placement(self, spec: WorkloadSpec, ctx: Context, c: Candidate,
                   rejected: _Deferred[tuple[Rejection, ...]], t: _Tables | None = None) -> Placement:
        dc, pool = c.dc, c.pool
        bound = ctx.network.tiers[spec.tier].max_rtt_ms
        rtt = c.rtt_ms
        fam = pool.family if pool else Family.CPU
        # Built without __init__ (a frozen dataclass sets 16 fields one object.__setattr__ at a
        # time); the result is the same object __init__ would give.
        out = object.__new__(Placement)
        out.__dict__.update(
            spec=spec, policy=self.name, data_center=dc.id, ray_cluster=dc.ray_cluster,
            region=(t or _tables(ctx.network)).region[c.index], rtt_ms=rtt,
            within_tier=bound is None or rtt is None or rtt <= bound,
            family=fam, accelerator_model=pool.model if pool else None, energy_kwh=c.energy_kwh,
            energy_cost_cny=c.energy_cost_cny, transfer_hours=c.transfer_hours,
            transfer_cost_cny=c.transfer_cost_cny, score=self._placed_score(c, ctx),
            _lazy_rejected=rejected,
            _lazy_ray=_Deferred(_ray_for, dc, fam, pool, spec, bound is not None),
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
    _pruned = True

    def _score(self, c: Candidate, ctx: Context) -> float:
        w = ctx.network.weights
        util = ctx.capacity[c.dc.id].utilisation
        target = c.dc.utilisation_target
        bonus = w.fill_bonus * c.energy_cost_cny * max(0.0, target - util) / target
        return (c.energy_cost_cny + c.transfer_cost_cny) + w.hour_value_cny * c.transfer_hours - bonus

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        return (self._score(c, ctx), c.rtt_ms or 0.0, float(c.index))

    def _placed_score(self, c: Candidate, ctx: Context) -> float:
        return self._score(c, ctx) if self._pruned else self._key(c, ctx)[0]

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        # _key inlined (the hot loop of every decision); same arithmetic, same order.
        w = ctx.network.weights
        fill, hour = w.fill_bonus, w.hour_value_cny
        caps = ctx.capacity
        # Candidates come in inventory order, so the index tie-break is "keep the earlier one".
        best = k = 0
        best_s = best_r = math.inf
        for _, dc, _, rtt, _, e, t_hours, t_cost in cands:
            target = dc.utilisation_target
            room = target - caps[dc.id].utilisation
            bonus = fill * e * (room if room > 0.0 else 0.0) / target
            score = (e + t_cost) + hour * t_hours - bonus
            if score < best_s or (score == best_s and (rtt or 0.0) < best_r):
                best, best_s, best_r = k, score, rtt or 0.0
            k += 1
        return cands[best]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that changes the filter, the score or the text gets the plain full scan.
        cls._pruned = cls._pruned and all(
            getattr(cls, n) is getattr(WestflowPolicy, n)
            for n in ("_evaluate", "_score", "_key", "_choose", "_lost", "_explain", "_placement"))

    def _place_pruned(self, spec: WorkloadSpec, network: Network, capacity: Capacity | None,
                      t: _Tables) -> Placement | None:
        """On a large network, the full scan's Placement from a pruned search.

        The DCs are visited in increasing order of a lower bound on their score (see
        :class:`_Bound`) and the search stops once the bound exceeds the best score found, so
        most DCs are never costed. The winner is the minimum of ``(score, rtt_ms, inventory
        order)``, exactly as the full scan's. The losers' text is written on first read by
        the full scan over the capacity copied now. Anything the bound does not cover (a
        negative utilisation, no candidate at all, an error) returns None: the full scan
        then decides, raises or fails exactly as before.
        """
        try:
            if capacity is None:
                caps: Capacity = t.static
                low = t.static_util
            else:
                caps = capacity
                low = min(map(_UTIL, capacity.values()), default=0.0)
            if not low >= 0.0:  # NaN too
                return None
            best = self._search(spec, network, caps, t)
        except Exception:  # noqa: BLE001 - the full scan raises (or not) exactly as before
            return None
        if best is None:
            return None
        ctx = Context(network, caps)
        frozen = ctx if capacity is None else Context(network, dict(capacity))
        return self._placement(spec, ctx, best, _Deferred(self._explain_again, spec, frozen, best.index), t)

    def _explain_again(self, spec: WorkloadSpec, ctx: Context, index: int) -> tuple[Rejection, ...]:
        """The full scan's explanation of a pruned decision (the winner given by inventory index)."""
        cands, late, rejected = self._evaluate(spec, ctx)
        best = next(c for c in cands if c.index == index)
        return self._explain(late, rejected, cands, best, ctx)

    def _search(self, spec: WorkloadSpec, network: Network, caps: Capacity, t: _Tables) -> Candidate | None:
        """The winner of the full scan, visiting DCs by increasing score bound; None if none fits."""
        w = network.weights
        fill, hour = w.fill_bonus, w.hour_value_cny
        b = t.bound(spec, network.tiers[spec.tier].max_rtt_ms)
        if not b.sites:
            return None
        acc = spec.accelerator
        count = acc.count
        cpu_only = acc.family is Family.CPU
        cpus, mem, hours = spec.cpus, spec.memory_gb, spec.duration_hours
        inputs, deadline = spec.inputs, spec.deadline_hours
        # Transfer per DC region: the same loop, so the same floats, as Policy._evaluate.
        moves: dict[Region, tuple[float, float, float]] = {}
        for reg in Region:
            t_hours = t_cost = 0.0
            if inputs:
                for ds in inputs:
                    if ds.region is not reg:
                        link = network.transfer[(ds.region, reg)]
                        t_hours += ds.size_bytes * 8 / (link.bandwidth_gbps * 1e9) / 3600
                        t_cost += ds.size_bytes / 1e9 * link.cost_cny_per_gb
            extra = t_cost + hour * t_hours
            if not (_fine(t_hours) and _fine(t_cost)):
                return None
            late = deadline is not None and t_hours + hours > deadline
            moves[reg] = (t_hours, t_cost, math.inf if late else extra - 1e-9 * extra)
        scale = hours / 1000 * ((1.0 - fill) - 1e-9)
        lb = b.cpu_wpp * (cpus * scale)
        if not cpu_only:
            lb += b.acc_wpp * (count * scale)
        east, west = moves[Region.EAST][2], moves[Region.WEST][2]
        if east == west:
            if east != 0.0:
                lb += east
        else:
            lb += np.where(b.east, east, west)
        order = np.argsort(lb)
        bounds = lb[order].tolist()
        sites, all_pools = b.sites, b.pools
        best: Candidate | None = None
        best_s = best_r = math.inf
        best_i = -1
        for k, low in zip(order.tolist(), bounds, strict=True):
            if low > best_s:
                break
            i, dc, dc_id, rtt, cpu_watts, pue, price = sites[k]
            cap = caps.get(dc_id)
            if cap is None or not cap.alive:
                continue
            pool: AcceleratorPool | None = None
            if not cpu_only:
                free = cap.free
                for p in all_pools[k]:
                    if free.get(p.model, 0) >= count:
                        pool = p
                        break
                else:
                    continue
            if cap.free_cpus < cpus or cap.free_memory_gb < mem:
                continue
            t_hours, t_cost, _ = moves[dc.region]
            if deadline is not None and t_hours + hours > deadline:
                continue
            kw = ((pool.watts * count) if pool else 0.0) + cpu_watts * cpus
            kwh = kw / 1000 * hours * pue
            e = kwh * price
            # WestflowPolicy._choose's arithmetic
            target = dc.utilisation_target
            room = target - cap.utilisation
            bonus = fill * e * (room if room > 0.0 else 0.0) / target
            score = (e + t_cost) + hour * t_hours - bonus
            r = rtt or 0.0
            if score < best_s or (score == best_s and (r < best_r or (r == best_r and i < best_i))):
                best = Candidate(i, dc, pool, rtt, kwh, e, t_hours, t_cost)
                best_s, best_r, best_i = score, r, i
        return best

    def _explain(self, late: Sequence[_Ranked], rejected: Sequence[_Ranked], cands: Sequence[Candidate],
                 best: Candidate, ctx: Context) -> tuple[Rejection, ...]:
        if not self._pruned:
            return super()._explain(late, rejected, cands, best, ctx)
        # _lost inlined, the winner's score computed once; same arithmetic, same text.
        filtered = _in_order(late, rejected, ctx.capacity, _tables(ctx.network).unavailable)
        w = ctx.network.weights
        fill, hour = w.fill_bonus, w.hour_value_cny
        caps = ctx.capacity
        best_s = self._score(best, ctx)
        new = tuple.__new__
        dearer = Reason.DEARER
        out: list[Rejection] = []
        add = out.append
        for c in cands:
            if c is best:
                continue
            dc = c.dc
            util = caps[dc.id].utilisation
            target = dc.utilisation_target
            e, tc = c.energy_cost_cny, c.transfer_cost_cny
            room = target - util
            bonus = fill * e * (room if room > 0.0 else 0.0) / target
            gap = ((e + tc) + hour * c.transfer_hours - bonus) - best_s
            add(new(Rejection, (dc.id, dearer, f"dearer by {gap:.2f} CNY (energy {e:.2f} + transfer "
                                               f"{tc:.2f}, {util:.0%} used)")))
        return filtered + tuple(out)

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        gap = self._score(c, ctx) - self._score(best, ctx)
        return Rejection(c.dc.id, Reason.DEARER,
                         f"dearer by {gap:.2f} CNY (energy {c.energy_cost_cny:.2f} + transfer "
                         f"{c.transfer_cost_cny:.2f}, {ctx.capacity[c.dc.id].utilisation:.0%} used)")
