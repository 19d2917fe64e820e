"""Placement: filter the data centers, score the eligible ones, pick one.

The pipeline of :meth:`Policy.place` is ``_evaluate`` (filter: liveness,
latency tier, accelerator compatibility, capacity, deadline; cost every eligible
DC) then ``_choose`` (the policy's ordering) then ``_explain`` (why every other
DC lost). Policies differ only in their sort key and in whether they respect
the latency tier; the baselines in :mod:`westflow.placement` are peers of
:class:`WestflowPolicy`, not special cases.

Speed (issue 2): everything that depends only on the network (liveness and
latency rejections per origin, compatible pools per accelerator request,
accelerator rejections) is computed once per network in
:class:`~westflow.placement.prepared._Tables`.
The text of why each eligible DC lost to the winner, and the Ray request, are
built lazily on first read of ``Placement.rejected`` / ``Placement.ray``: a
caller that only needs the choice (the simulator) never pays for them, and a
caller that reads them gets exactly the text an eager build would give (the
capacity snapshot is copied at decision time).

On a large network (>= 64 DCs) :class:`WestflowPolicy` does not cost every DC: it
visits them in increasing order of a per-DC lower bound on the score
(:class:`~westflow.placement.prepared._Bound`, numpy; the search is in
:mod:`westflow.placement.search`) and stops once the bound passes the best score
found; the winner, its numbers and (on read, from a full scan of the copied capacity)
every loser's text are those of the full scan. Decisions the bound does not cover fall
back to the full scan.

The value types (:class:`Placement`, :class:`Rejection`, ...) live in
:mod:`westflow.placement.values` and are re-exported here, the public module.

Pure Python: no Ray or Dagster import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from westflow.capacity import Capacity
from westflow.errors import InfeasibleError
from westflow.inventory import AcceleratorPool, Family, Network, Region
from westflow.placement.prepared import _in_order, _Pools, _Ranked, _ray_for, _Row, _Tables, _tables
from westflow.placement.search import _search as _pruned_search
from westflow.placement.values import Candidate, Context, Placement, Reason, Rejection, _Deferred
from westflow.spec import WorkloadSpec

__all__ = ["Reason", "Rejection", "Candidate", "Context", "Placement", "Policy", "WestflowPolicy"]

_UTIL = attrgetter("utilisation")


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

    # The pruned search itself (westflow.placement.search): a staticmethod, called as before.
    _search = staticmethod(_pruned_search)

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
