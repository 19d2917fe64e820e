"""Every placement policy behind one signature, and the registry the CLI uses.

``Policy.place`` is a pipeline: filter and cost (:func:`~westflow.placement.filters.evaluate`),
choose (the policy's ordering), explain (:mod:`westflow.placement.explain`, built on
first read of ``Placement.rejected``; the Ray request likewise on first read of
``Placement.ray``). Policies differ only in their ordering, in whether they respect
the latency tier, and in how a loser's text reads. Baselines, peers of
:class:`WestflowPolicy`:

- ``east-first``: eastern DCs first, nearest to the origin (what users do today);
- ``cheapest``: lowest energy + transfer cost, blind to latency (it may break tiers);
- ``round-robin``: the eligible DCs in turn;
- ``random``: a seeded draw among the eligible DCs.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Sequence

from westflow.capacity import Capacity, DCCapacity
from westflow.energy import energy_cost_cny
from westflow.errors import InfeasibleError, SpecError
from westflow.inventory import AcceleratorPool, DataCenter, Family, Network, Region
from westflow.placement.explain import explain, explain_dearer, explain_dearer_columns
from westflow.placement.filters import Evaluation, evaluate, in_order
from westflow.placement.score import score, westflow_key
from westflow.placement.search import pruned_search
from westflow.placement.tables import NetworkTables, Snapshot, tables_for
from westflow.placement.timing import Window, describe_start, window_of
from westflow.placement.values import (
    Candidate,
    Context,
    Deferred,
    Placement,
    Reason,
    Rejection,
    Rejections,
    candidate_of,
)
from westflow.spec import WorkloadSpec
from westflow.tags import RayRequest, ray_request

__all__ = ["Policy", "WestflowPolicy", "EastFirstPolicy", "CheapestPolicy", "RoundRobinPolicy", "RandomPolicy",
           "POLICY_NAMES", "get_policy"]


def _ray_for(dc: DataCenter, family: Family, pool: AcceleratorPool | None, spec: WorkloadSpec,
             realtime: bool) -> RayRequest:
    return ray_request(
        dc, family=family, model=pool.model if pool else None, count=spec.accelerator.count,
        per_node=pool.per_node if pool else 1, cpus=spec.cpus, memory_gb=spec.memory_gb,
        realtime_origin=spec.origin if realtime else None,
    )


class Policy:
    """Base policy: ``place(spec, network, capacity) -> Placement``.

    Subclasses set ``name`` and ``respect_latency`` and implement :meth:`_key`
    (smaller wins); :meth:`_lost` says why a candidate lost to the winner.
    Policies keep no per-call state on ``self`` so one instance may serve
    many threads (round-robin's counter and random's generator are the
    exceptions, each thread-safe).
    """

    name = "base"
    respect_latency = True
    scored = False  # the filter computes each candidate's westflow score (the westflow policy's key)
    defers = False  # a batch step with a deadline may start later, in cheaper hours (the westflow policy)

    def place(self, spec: WorkloadSpec, network: Network, capacity: Capacity | None = None, *,
              now: float | None = None) -> Placement:
        """Place ``spec``; raise InfeasibleError carrying every DC's reason if nothing fits.

        ``now`` (epoch s) places in time as well: each DC's energy is priced at the time-of-use
        prices of the hours the step would run, and a policy that defers may choose a later start
        (:mod:`westflow.placement.timing`). A spec with ``start_after`` or ``deadline`` is placed in
        time at the clock's now when none is given; any other at the flat prices (see :meth:`_timing`).
        """
        t = tables_for(network)
        if spec.tier not in network.tiers or (spec.origin is not None and spec.origin not in t.cities):
            spec.check_against(network)  # raises the SpecError naming the field
        caps = t.static if capacity is None else capacity
        tier = network.tiers[spec.tier]
        tier_bound = tier.max_rtt_ms
        bound = tier.limit_ms if self.respect_latency else None  # eligibility keeps the tier's guard band
        timing = self._timing(spec, network, now)
        found = self._search(spec, network, caps, t, bound) if timing is None else None
        start: float | None = None
        # The losers' text is written on first read, against the capacity seen now: a copy of the
        # mapping (or the search's), holding the snapshot's own DCCapacity objects.
        if found is not None:
            best, best_score, seen = found  # (not its columns: a Placement may be kept long, unread)
            why = Deferred(self._explain_seen, spec, network, seen[0], seen[1], bound, best.index, t)
        else:
            snap = caps if capacity is None else dict(capacity)
            ev = evaluate(spec, network, caps, t, bound, weights=network.weights if self.scored else None,
                          timing=timing)
            if not ev.eligible:
                raise InfeasibleError(spec, in_order(ev.late, ev.rejected, caps, t.unavailable))
            best, best_score, why = self._decide(ev, network, snap, t)
            start = ev.starts.get(best.index)
        p = self._placement(spec, tier_bound, best, best_score, why, t)
        if timing is None or start is None:
            return p
        return self._timed(p, best, timing, start)

    def _timing(self, spec: WorkloadSpec, network: Network, now: float | None) -> Window | None:
        """The spec's window at ``now``, or None: placed at the flat prices, at once.

        A spec without ``start_after`` or ``deadline`` is always placed at the flat (daily mean) prices,
        whatever ``now``: its DC must not depend on the hour it was submitted (the same step lands in
        the same place at 03:00 and at 15:00); metering bills the hours it really ran at their prices.
        """
        if spec.start_after is None and spec.deadline is None:
            return None
        if now is None:
            now = time.time()
        return window_of(spec, network, now, defers=self.defers)

    def _timed(self, p: Placement, c: Candidate, timing: Window, start: float) -> Placement:
        """``p`` starting at ``start``, saying why when that is not now."""
        note = ""
        if start > timing.now_s:
            dc, spec = c.dc, p.spec
            at_once = Window(timing.now_s, timing.earliest_s, None, False, 0.0, 0.0)
            _, price_then = at_once.start(dc.tariff, dc.price_cny_kwh, c.transfer_hours, spec.duration_hours) or (
                0.0, dc.price_cny_kwh)
            note = describe_start(timing, start, dc.id, dc.tariff, c.energy_cost_cny,
                                  energy_cost_cny(c.energy_kwh, price_then))
        return Placement(p.spec, p.policy, p.data_center, p.ray_cluster, p.region, p.rtt_ms, p.within_tier, p.family,
                         p.accelerator_model, p.energy_kwh, p.energy_cost_cny, p.transfer_hours, p.transfer_cost_cny,
                         p.score, p.__dict__["_lazy_rejected"], p.__dict__["_lazy_ray"], start, note, p.tariff)

    def _search(self, spec: WorkloadSpec, network: Network, caps: Capacity, t: NetworkTables,
                bound: float | None) -> tuple[Candidate, float, Snapshot] | None:
        """The winner, its score and the capacity as read, without the full scan, or None: the full scan
        decides (the default)."""
        return None

    def _explain_seen(self, spec: WorkloadSpec, network: Network, ids: tuple[str, ...], held: tuple[DCCapacity, ...],
                      bound: float | None, index: int, t: NetworkTables) -> Rejections:
        """:meth:`_explain_again` against the capacity as the search read it (its DC ids and entries)."""
        return self._explain_again(spec, Context(network, dict(zip(ids, held, strict=True))), bound, index, t)

    def _decide(self, ev: Evaluation, network: Network, snap: Capacity,
                t: NetworkTables) -> tuple[Candidate, float, Deferred[Rejections]]:
        """The full scan's winner, its ``Placement.score``, and the explanation to write on read."""
        ctx = Context(network, snap)
        best = self._choose(ev.candidates, ctx)
        return best, self._key(best, ctx)[0], Deferred(self._explain, ev, best, ctx, t)

    def _explain_again(self, spec: WorkloadSpec, ctx: Context, bound: float | None, index: int,
                       t: NetworkTables) -> Rejections:
        """The full scan's explanation of a decision whose winner is given by inventory index."""
        ev = evaluate(spec, ctx.network, ctx.capacity, t, bound)
        best = next(c for c in ev.candidates if c.index == index)
        return self._explain(ev, best, ctx, t)

    def _explain(self, ev: Evaluation, best: Candidate, ctx: Context, t: NetworkTables) -> Rejections:
        return explain(ev, best, ctx.capacity, t, lambda c: self._lost(c, best, ctx))

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        return min(cands, key=lambda c: self._key(c, ctx))

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        raise NotImplementedError

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        return Rejection(c.dc.id, Reason.DEARER, f"dearer by {c.cost_cny - best.cost_cny:.2f} CNY")

    def _placement(self, spec: WorkloadSpec, bound: float | None, c: Candidate, score_cny: float,
                   rejected: Deferred[Rejections], t: NetworkTables) -> Placement:
        """The Placement of candidate ``c``; ``bound``: the spec's tier's latency bound."""
        dc, pool = c.dc, c.pool
        rtt = c.rtt_ms
        fam = pool.family if pool else Family.CPU
        return Placement(
            spec, self.name, dc.id, dc.ray_cluster, t.region[c.index], rtt,
            bound is None or rtt is None or rtt <= bound, fam, pool.model if pool else None,
            c.energy_kwh, c.energy_cost_cny, c.transfer_hours, c.transfer_cost_cny, score_cny,
            rejected, Deferred(_ray_for, dc, fam, pool, spec, bound is not None), None, "", dc.tariff,
        )


class WestflowPolicy(Policy):
    """The lowest westflow score (:mod:`westflow.placement.score`): energy and transfer cost,
    with a bonus for DCs below their utilisation target.

    Sort key ``(score, rtt_ms, inventory order)``: ties go to the nearer DC, then to the
    one listed first. On a large network (``prune=None``: >= 64 DCs; ``True``: any size;
    ``False``: never) the winner comes from the pruned search
    (:mod:`westflow.placement.search`), which gives the full scan's Placement without
    costing every DC; decisions its bound does not cover (a negative utilisation, a
    non-finite cost input) take the full scan.
    """

    name = "westflow"
    scored = True
    defers = True

    def __init__(self, *, prune: bool | None = None) -> None:
        self.prune = prune

    def _search(self, spec: WorkloadSpec, network: Network, caps: Capacity, t: NetworkTables,
                bound: float | None) -> tuple[Candidate, float, Snapshot] | None:
        if not (t.prunable and (t.large if self.prune is None else self.prune)):
            return None
        return pruned_search(spec, network, caps, t, bound)

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        dc = c.dc
        return westflow_key(score(c.energy_cost_cny, c.transfer_cost_cny, c.transfer_hours,
                                  ctx.capacity[dc.id].utilisation, dc.utilisation_target, ctx.network.weights),
                            c.rtt_ms, c.index)

    def _decide(self, ev: Evaluation, network: Network, snap: Capacity,
                t: NetworkTables) -> tuple[Candidate, float, Deferred[Rejections]]:
        # min(candidates, key=_key) over the scores the filter computed, without a tuple per candidate:
        # they come in inventory order, so the index tie-break is "keep the earlier one". One lowest
        # score (the common case) is found in C; a tie on it, or a NaN first (min() is then NaN),
        # takes the loop, which skips NaN scores.
        eligible, scores = ev.eligible, ev.scores
        best_s = min(scores)
        if best_s == best_s and scores.count(best_s) == 1:
            at = scores.index(best_s)
        else:
            at = k = 0
            best_s = best_r = float("inf")
            for fields, s in zip(eligible, scores, strict=True):
                if s < best_s:
                    at, best_s, best_r = k, s, fields[3] or 0.0  # its rtt_ms
                elif s == best_s:
                    r = fields[3] or 0.0
                    if r < best_r:
                        at, best_r = k, r
                k += 1
            if at == 0:
                best_s = scores[0]  # also when no score beat infinity (NaN): Placement.score is its own
        best = candidate_of(eligible[at])
        return best, best_s, Deferred(explain_dearer, ev, best.index, snap, t, network.weights)

    def _explain_again(self, spec: WorkloadSpec, ctx: Context, bound: float | None, index: int,
                       t: NetworkTables) -> Rejections:
        # On a large network the columns answer at numpy speed; they give up (None) only where
        # the full scan must decide, which it then does.
        if t.large:
            why = explain_dearer_columns(spec, ctx.network, ctx.capacity, t, bound, index)
            if why is not None:
                return why
        return super()._explain_again(spec, ctx, bound, index, t)

    def _explain(self, ev: Evaluation, best: Candidate, ctx: Context, t: NetworkTables) -> Rejections:
        return explain_dearer(ev, best.index, ctx.capacity, t, ctx.network.weights)


class EastFirstPolicy(Policy):
    """Key ``(not east, RTT to origin, inventory order)``."""

    name = "east-first"

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        return (float(c.dc.region is not Region.EAST), c.rtt_ms or 0.0, float(c.index))

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        if c.dc.region is not best.dc.region:
            return Rejection(c.dc.id, Reason.NOT_CHOSEN, "not in the east")
        return Rejection(c.dc.id, Reason.NOT_CHOSEN,
                         f"farther: RTT {c.rtt_ms or 0:.1f} ms vs {best.rtt_ms or 0:.1f} ms")


class CheapestPolicy(Policy):
    """Key ``(energy + transfer cost, inventory order)``; ignores the latency tier."""

    name = "cheapest"
    respect_latency = False

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        return (c.energy_cost_cny + c.transfer_cost_cny, float(c.index))


class RoundRobinPolicy(Policy):
    """The eligible DCs in turn (one shared, thread-safe counter)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        return cands[next(self._turn) % len(cands)]

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        return (float(c.index),)

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        return Rejection(c.dc.id, Reason.NOT_CHOSEN, f"round-robin turn went to {best.dc.id}")


class RandomPolicy(Policy):
    """A seeded uniform draw among the eligible DCs."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        with self._lock:
            return self._rng.choice(list(cands))

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        return (float(c.index),)

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        return Rejection(c.dc.id, Reason.NOT_CHOSEN, f"random draw went to {best.dc.id}")


_FACTORIES: dict[str, type[Policy]] = {
    "westflow": WestflowPolicy,
    "east-first": EastFirstPolicy,
    "cheapest": CheapestPolicy,
    "round-robin": RoundRobinPolicy,
    "random": RandomPolicy,
}
POLICY_NAMES = tuple(_FACTORIES)


def get_policy(name: str, *, seed: int = 0) -> Policy:
    """A fresh policy instance by name."""
    if name not in _FACTORIES:
        raise SpecError("policy", name, POLICY_NAMES, problem="Unknown")
    if name == "random":
        return RandomPolicy(seed)
    return _FACTORIES[name]()
