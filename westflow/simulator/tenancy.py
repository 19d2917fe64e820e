"""Who the simulated work belongs to, and how fairly it was served.

- :func:`whole_network`: one tenant (``default``) whose quota is more than the whole network (only
  capacity binds), the three priority classes: what the simulator runs when it is given no tenants.
- :func:`scaled_to`: a tenants file with its quotas scaled to a network, so the configured
  *shares* apply to a network of any size: one factor for accelerators (the network's
  accelerators over the sum of every tenant's nominal accelerator quotas), one for CPUs, one for
  memory; nominal quotas, borrowing limits and region quotas alike, accelerators rounded.
- :func:`assign_tenants`: the tenant of each batch job. A trace's ``tenant`` column when it has
  one (it must name a configured tenant); otherwise a stable hash (SHA-256) of the job's id (the
  ITP ``job_id``; for a generic trace without ids, its file and position), mapped onto the
  tenants in configuration order with probability proportional to their weights.
- :class:`TenantStats` and :func:`jain`: per tenant wait p50/p95, accelerator-hours, preemptions;
  Jain's fairness index of each tenant's share of the accelerator-hours over its weight.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from westflow.errors import SpecError
from westflow.inventory import Family, Network
from westflow.simulator.traces import BatchJob
from westflow.tenants import Quota, Tenants, parse_tenants

__all__ = ["whole_network", "scaled_to", "assign_tenants", "class_for", "TenantStats", "jain", "percentile",
           "REALTIME_CLASS", "BATCH_CLASS"]

REALTIME_CLASS = "realtime"
BATCH_CLASS = "best-effort"  # batch work may be preempted by real-time work


WHOLE = 4  # the one tenant's quota, in networks: never what binds (capacity is)


def whole_network(network: Network) -> Tenants:
    """One tenant, ``default``, whose quota is more than the whole network (no one to share with: only
    capacity binds, and its real-time work may preempt its best-effort batch)."""
    acc = {f.value: WHOLE * sum(p.count for d in network.data_centers for p in d.pools if p.family is f)
           for f in (Family.CUDA, Family.CANN)}
    cpus = float(WHOLE * sum(d.cpus for d in network.data_centers))
    mem = float(WHOLE * sum(d.memory_gb for d in network.data_centers))
    return parse_tenants({
        "priority_classes": [{"name": "realtime", "value": 1000}, {"name": "production", "value": 100},
                             {"name": "best-effort", "value": 0, "preemptible": True}],
        "tenants": [{"name": "default", "quota": {"accelerators": {k: v for k, v in acc.items() if v}, "cpus": cpus,
                                                  "memory_gb": mem},
                     "priority_classes": ["realtime", "production", "best-effort"]}],
        "default_tenant": "default"}, file="(the whole network, one tenant)")


def scaled_to(tenants: Tenants, network: Network) -> Tenants:
    """``tenants`` with every quota scaled so the nominal quotas add up to ``network`` (see the module doc)."""
    acc_total = sum(p.count for d in network.data_centers for p in d.pools)
    cpus_total = float(sum(d.cpus for d in network.data_centers))
    mem_total = float(sum(d.memory_gb for d in network.data_centers))
    nominal = [t.quota for t in tenants.tenants.values()]
    acc_sum = sum(sum(q.accelerators.values()) for q in nominal)
    cpus_sum = sum(q.cpus for q in nominal)
    mem_sum = sum(q.memory_gb for q in nominal)
    fa = acc_total / acc_sum if acc_sum else 1.0
    fc = cpus_total / cpus_sum if cpus_sum else 1.0
    fm = mem_total / mem_sum if mem_sum else 1.0

    def scale(q: Quota) -> Quota:
        return replace(q, accelerators={k: round(v * fa) for k, v in q.accelerators.items()}, cpus=q.cpus * fc,
                       memory_gb=q.memory_gb * fm)

    out = {name: replace(t, quota=scale(t.quota), borrowing_limit=scale(t.borrowing_limit),
                         regions={r: scale(q) for r, q in t.regions.items()})
           for name, t in tenants.tenants.items()}
    return replace(tenants, tenants=out)


def _unit(text: str) -> float:
    """A stable draw in [0, 1) from ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def assign_tenants(jobs: Sequence[BatchJob], tenants: Tenants) -> list[str]:
    """The tenant of each job: its trace column, else a weighted stable hash of its id (module doc)."""
    names = list(tenants.tenants)
    total = sum(t.weight for t in tenants.tenants.values())
    edges = []
    acc = 0.0
    for n in names:
        acc += tenants.tenants[n].weight / total
        edges.append(acc)
    out = []
    for i, j in enumerate(jobs):
        if j.tenant is not None:
            if j.tenant not in tenants.tenants:
                raise SpecError(f"trace {j.source}: tenant", j.tenant, names, problem="Unknown",
                                fix="name a tenant of tenants.yaml, or leave the column empty.")
            out.append(j.tenant)
            continue
        u = _unit(j.job_id or f"{j.source}#{i}")
        out.append(next((n for n, e in zip(names, edges, strict=True) if u < e), names[-1]))
    return out


def class_for(tenants: Tenants, tenant: str, wanted: str) -> str:
    """``wanted`` if the tenant may use it, else its lowest-valued class (the simulator's batch class)."""
    allowed = tenants.tenant(tenant).priority_classes
    if wanted in allowed:
        return wanted
    return min(allowed, key=lambda c: tenants.priority_classes[c].value)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    d = sorted(values)
    if not d:
        return 0.0
    return d[min(len(d) - 1, max(0, math.ceil(q * len(d)) - 1))]


@dataclass
class TenantStats:
    """What one tenant got: its jobs, their waits (first start - submit, s), accelerator-hours its
    batch work ran within the simulated window, how often its jobs were preempted."""

    weight: float
    jobs: int = 0
    started: int = 0
    wait_s: list[float] = field(default_factory=list)
    acc_hours: float = 0.0
    preempted: int = 0

    def wait(self, q: float) -> float:
        return percentile(self.wait_s, q)


def jain(stats: Mapping[str, TenantStats]) -> float:
    """Jain's fairness index of x_t = (tenant t's share of the accelerator-hours) / its weight, over the
    tenants that submitted work: 1 when every tenant got its weight's share, 1/n at worst."""
    total = sum(s.acc_hours for s in stats.values())
    xs = [s.acc_hours / total / s.weight for s in stats.values() if s.jobs] if total else []
    if not xs or not any(xs):
        return 1.0
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))
