"""The pruned search of :class:`~westflow.placement.WestflowPolicy` on a large network.

See :class:`~westflow.placement.prepared._Bound`. Pure Python and numpy.
"""

from __future__ import annotations

import math

import numpy as np

from westflow.capacity import Capacity
from westflow.inventory import AcceleratorPool, Family, Network, Region
from westflow.placement.prepared import _fine, _Tables
from westflow.placement.values import Candidate
from westflow.spec import WorkloadSpec


def _search(spec: WorkloadSpec, network: Network, caps: Capacity, t: _Tables) -> Candidate | None:
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
