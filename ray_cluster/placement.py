"""Placement: filter the data centers, score the eligible ones, pick one.

The pipeline of :meth:`Policy.place` is ``_evaluate`` (filter: liveness,
latency tier, accelerator compatibility, capacity, deadline; cost every eligible
DC) then ``_choose`` (the policy's ordering) then ``_explain`` (why every other
DC lost). Policies differ only in their sort key and in whether they respect
the latency tier; the baselines in :mod:`ray_cluster.policies` are peers of
:class:`WestflowPolicy`, not special cases.

Pure Python: no Ray or Dagster import.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from ray_cluster.capacity import Capacity, DCCapacity, static_capacity
from ray_cluster.errors import InfeasibleError
from ray_cluster.model import AcceleratorPool, DataCenter, Family, Network
from ray_cluster.spec import WorkloadSpec
from ray_cluster.tags import RayRequest, ray_request

__all__ = ["Reason", "Rejection", "Candidate", "Context", "Placement", "Policy", "WestflowPolicy"]


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


@dataclass(frozen=True, slots=True)
class Candidate:
    """An eligible data center with the cost of running the spec there."""

    index: int
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


@dataclass(frozen=True, slots=True)
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
    rejected: tuple[Rejection, ...]
    ray: RayRequest

    @property
    def cost_cny(self) -> float:
        return self.energy_cost_cny + self.transfer_cost_cny

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


@functools.lru_cache(maxsize=32)
def _static(network: Network) -> dict[str, DCCapacity]:
    return static_capacity(network)


def _want(spec: WorkloadSpec) -> str:
    a = spec.accelerator
    return a.model or a.family.value


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
        spec.check_against(network)
        ctx = Context(network, _static(network) if capacity is None else capacity)
        cands, rejected = self._evaluate(spec, ctx)
        if not cands:
            raise InfeasibleError(spec, rejected)
        best = self._choose(cands, ctx)
        rejected.extend(self._lost(c, best, ctx) for c in cands if c is not best)
        return self._placement(spec, ctx, best, rejected)

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        return min(cands, key=lambda c: self._key(c, ctx))

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        raise NotImplementedError

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        return Rejection(c.dc.id, Reason.DEARER, f"dearer by {c.cost_cny - best.cost_cny:.2f} CNY")

    def _evaluate(self, spec: WorkloadSpec, ctx: Context) -> tuple[list[Candidate], list[Rejection]]:
        network, caps = ctx.network, ctx.capacity
        bound = network.tiers[spec.tier].max_rtt_ms if self.respect_latency else None
        origin = spec.origin
        acc = spec.accelerator
        fam, count, model = acc.family, acc.count, acc.model
        cpus, mem, hours = spec.cpus, spec.memory_gb, spec.duration_hours
        rtts = network.rtt_ms
        cands: list[Candidate] = []
        rejected: list[Rejection] = []
        for i, dc in enumerate(network.data_centers):
            cap = caps.get(dc.id)
            if cap is None or not cap.alive:
                rejected.append(Rejection(dc.id, Reason.UNAVAILABLE, "no live Ray node for this DC"))
                continue
            rtt = rtts[(dc.id, origin)] if origin else None
            if bound is not None and rtt is not None and rtt > bound:
                rejected.append(Rejection(dc.id, Reason.LATENCY, f"RTT {rtt:.1f} ms to {origin} > {bound:g} ms"))
                continue
            if fam is Family.CPU:
                pools: list[AcceleratorPool | None] = [None]
            else:
                pools = [p for p in dc.pools if (fam is Family.ANY or p.family is fam)
                         and (model is None or p.model == model)]
                if not pools:
                    have = ", ".join(f"{p.family.value} {p.model}" for p in dc.pools) or "CPUs only"
                    rejected.append(Rejection(dc.id, Reason.ACCELERATOR, f"no {_want(spec)} here (has {have})"))
                    continue
                fits = [p for p in pools if p is not None and cap.free.get(p.model, 0) >= count]
                if not fits:
                    free = max(cap.free.get(p.model, 0) for p in pools if p is not None)
                    rejected.append(Rejection(dc.id, Reason.CAPACITY,
                                              f"{count} x {_want(spec)} asked, {free} free"))
                    continue
                pools = list(fits)
            if cap.free_cpus < cpus or cap.free_memory_gb < mem:
                rejected.append(Rejection(dc.id, Reason.CAPACITY,
                                          f"{cpus:g} CPUs / {mem:g} GB asked, {cap.free_cpus:g} / "
                                          f"{cap.free_memory_gb:g} free"))
                continue
            t_hours = t_cost = 0.0
            for ds in spec.inputs:
                if ds.region is not dc.region:
                    link = network.transfer[(ds.region, dc.region)]
                    t_hours += ds.size_bytes * 8 / (link.bandwidth_gbps * 1e9) / 3600
                    t_cost += ds.size_bytes / 1e9 * link.cost_cny_per_gb
            if spec.deadline_hours is not None and t_hours + hours > spec.deadline_hours:
                rejected.append(Rejection(dc.id, Reason.DEADLINE,
                                          f"{t_hours:.2f} h transfer + {hours:g} h run > {spec.deadline_hours:g} h"))
                continue
            pool = min(pools, key=lambda p: p.watts if p else 0.0)
            kw = ((pool.watts * count) if pool else 0.0) + dc.cpu_watts * cpus
            kwh = kw / 1000 * hours * dc.pue
            cands.append(Candidate(i, dc, pool, rtt, kwh, kwh * dc.price_cny_kwh, t_hours, t_cost))
        return cands, rejected

    def _placement(self, spec: WorkloadSpec, ctx: Context, c: Candidate, rejected: list[Rejection]) -> Placement:
        network = ctx.network
        dc, pool = c.dc, c.pool
        bound = network.tiers[spec.tier].max_rtt_ms
        within = bound is None or c.rtt_ms is None or c.rtt_ms <= bound
        fam = pool.family if pool else Family.CPU
        ray = ray_request(
            dc, family=fam, model=pool.model if pool else None, count=spec.accelerator.count,
            per_node=pool.per_node if pool else 1, cpus=spec.cpus, memory_gb=spec.memory_gb,
            realtime_origin=spec.origin if bound is not None else None,
        )
        return Placement(
            spec=spec, policy=self.name, data_center=dc.id, ray_cluster=dc.ray_cluster,
            region=dc.region.value, rtt_ms=c.rtt_ms, within_tier=within, family=fam,
            accelerator_model=pool.model if pool else None, energy_kwh=c.energy_kwh,
            energy_cost_cny=c.energy_cost_cny, transfer_hours=c.transfer_hours,
            transfer_cost_cny=c.transfer_cost_cny, score=self._key(c, ctx)[0],
            rejected=tuple(rejected), ray=ray,
        )


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

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        gap = self._score(c, ctx) - self._score(best, ctx)
        return Rejection(c.dc.id, Reason.DEARER,
                         f"dearer by {gap:.2f} CNY (energy {c.energy_cost_cny:.2f} + transfer "
                         f"{c.transfer_cost_cny:.2f}, {ctx.capacity[c.dc.id].utilisation:.0%} used)")
