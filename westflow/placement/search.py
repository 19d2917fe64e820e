"""The pruned search of the westflow policy on a large network.

The DCs that pass the static filters, and that the capacity snapshot lets take the
spec (alive, a compatible pool with the count free, CPUs and memory: read from the
snapshot's columns, :meth:`~westflow.placement.tables.NetworkTables.snapshot`), are
visited in increasing order of a lower bound on their score (the energy of the pool
the filter takes there, less the fill bonus at the DC's own utilisation, plus the
transfer terms; :class:`~westflow.placement.tables.PruneBound`, numpy), a
few at a time, through the same filter (:func:`~westflow.placement.filters.evaluate`)
and the same score (:func:`~westflow.placement.score.score`) as the full scan; the
search stops once the next bound exceeds the best score found. The winner is the
minimum of ``(score, rtt_ms, inventory index)``, exactly the full scan's. Pure
Python and numpy.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from westflow.capacity import Capacity
from westflow.inventory import Family, Network, Region
from westflow.placement.filters import evaluate, transfer
from westflow.placement.score import westflow_key
from westflow.placement.tables import (
    CapacityColumns,
    Floats,
    NetworkTables,
    PruneBound,
    Snapshot,
    finite_non_negative,
)
from westflow.placement.values import Candidate, CandidateFields, candidate_of
from westflow.spec import WorkloadSpec

__all__ = ["pruned_search", "FIRST_BATCH", "HEAD"]

FIRST_BATCH = 8  # DCs costed in the first step; each next step costs twice as many
HEAD = 64  # bounds put in order up front (a search rarely costs more DCs); the rest only when needed


def pruned_search(spec: WorkloadSpec, network: Network, caps: Capacity, tables: NetworkTables,
                  latency_bound: float | None) -> tuple[Candidate, float, Snapshot] | None:
    """The winner of the full scan, its score, and ``caps`` as the search read it (for the
    explanation), visiting DCs by increasing score bound.

    None if no DC fits, or if a bound does not hold (a transfer figure not finite and
    non-negative, a negative utilisation): the caller then runs the full scan.
    """
    w = network.weights
    b = tables.bound(spec, latency_bound)
    if not b.rows:
        return None
    hours, deadline = spec.duration_hours, spec.deadline_hours
    moves: dict[Region, tuple[float, float]] = {}
    extra: dict[Region, float] = {}
    for reg, present in ((Region.EAST, b.has_east), (Region.WEST, b.has_west)):
        if not present:
            extra[reg] = 0.0
            continue
        t_hours, t_cost = moves[reg] = transfer(spec, network, reg)
        if not (finite_non_negative(t_hours) and finite_non_negative(t_cost)):
            return None
        x = t_cost + w.hour_value_cny * t_hours
        extra[reg] = math.inf if deadline is not None and t_hours + hours > deadline else x - 1e-9 * x
    snap = tables.snapshot(caps)
    got = _bounds(spec, snap[2], tables, b, w.fill_bonus)
    if got is None:
        return None
    lb, usable = got
    east, west = extra[Region.EAST], extra[Region.WEST]
    if east == west:
        if east != 0.0:
            lb += east
    else:
        lb += np.where(tables.east[usable], east, west)
    # The HEAD smallest bounds in order (a partition, then a sort of those); the rest sorted only if
    # the search gets that far. Every bound of the rest is >= every bound of the head, so the
    # visiting order is non-decreasing in the bound, as a full sort's.
    rest = None
    if len(lb) > 2 * HEAD:
        head = np.argpartition(lb, HEAD - 1)[:HEAD]
        rest = np.ones(len(lb), dtype=np.bool_)
        rest[head] = False
    else:
        head = np.arange(len(lb))
    head = head[np.argsort(lb[head], kind="stable")]
    bounds: list[float] = lb[head].tolist()
    row = b.row
    order_at: list[int] = row[usable[head]].tolist()  # positions in b.rows
    all_rows = b.rows
    best: CandidateFields | None = None
    best_key = (math.inf, math.inf, -1)
    start, step = 0, FIRST_BATCH
    while True:
        if rest is not None and start + step > len(order_at):
            tail = np.flatnonzero(rest)
            tail = tail[np.argsort(lb[tail], kind="stable")]
            bounds += lb[tail].tolist()
            order_at += row[usable[tail]].tolist()
            rest = None
        if not (start < len(bounds) and bounds[start] <= best_key[0]):
            break
        rows = [all_rows[k] for k in order_at[start:start + step]]
        ev = evaluate(spec, network, caps, tables, latency_bound, rows, moves, w)
        for fields, s in zip(ev.eligible, ev.scores, strict=True):
            key = westflow_key(s, fields[3], fields[0])  # its rtt_ms, inventory index
            if key < best_key:
                best, best_key = fields, key
        start += step
        step *= 2
    return None if best is None else (candidate_of(best), best_key[0], snap)


def _bounds(spec: WorkloadSpec, cols: CapacityColumns, tables: NetworkTables, b: PruneBound,
            fill_bonus: float) -> tuple[Floats, NDArray[np.intp]] | None:
    """The DCs of ``b.rows`` that may take the spec on the capacity ``cols`` (alive, a compatible pool with the
    count free, enough CPUs and memory: as the filter checks, on the snapshot's columns), by
    inventory index, and for each a lower bound on its energy cost less its fill bonus: the energy
    of the pool the filter takes there, and the bonus at the DC's own utilisation (with a 1e-9
    margin for rounding: the filter's operations come in another order). None (the caller takes
    the full scan) if no DC may, or if one's utilisation is negative (a bonus above the energy
    cost breaks the bound; a NaN one gives no bonus, as in the score).
    """
    ok = cols.alive & b.mask & ~((cols.free_cpus < spec.cpus) | (cols.free_memory_gb < spec.memory_gb))
    acc = spec.accelerator
    scale = spec.duration_hours / 1000
    if acc.family is Family.CPU:
        energy = tables.cpu_wpp * (spec.cpus * scale)
    else:
        fits, kw = cols.fit(tables.pool_columns(spec), acc.count)
        ok &= fits
        energy = (kw * tables.pp + tables.cpu_wpp * spec.cpus) * scale
    at = np.flatnonzero(ok)
    if not len(at):
        return None
    util = cols.utilisation[at]
    if (util < 0.0).any():
        return None
    target = tables.target[at]
    room = target - util
    room = np.where(room > 0.0, room, 0.0)  # NaN too: no bonus
    return energy[at] * ((1.0 - 1e-9) - fill_bonus * room / target), at
