"""The pruned search of the westflow policy on a large network.

The DCs that pass the static filters are visited in increasing order of a lower
bound on their score (:class:`~westflow.placement.tables.PruneBound`, numpy), a
few at a time, through the same filter (:func:`~westflow.placement.filters.evaluate`)
and the same score (:func:`~westflow.placement.score.score`) as the full scan; the
search stops once the next bound exceeds the best score found. The winner is the
minimum of ``(score, rtt_ms, inventory index)``, exactly the full scan's. Pure
Python and numpy.
"""

from __future__ import annotations

import math

import numpy as np

from westflow.capacity import Capacity
from westflow.inventory import Family, Network, Region
from westflow.placement.filters import evaluate, transfer
from westflow.placement.score import westflow_key
from westflow.placement.tables import NetworkTables, finite_non_negative
from westflow.placement.values import Candidate, CandidateFields, candidate_of
from westflow.spec import WorkloadSpec

__all__ = ["pruned_search", "FIRST_BATCH", "HEAD"]

FIRST_BATCH = 8  # DCs costed in the first step; each next step costs twice as many
HEAD = 64  # bounds put in order up front (a search rarely costs more DCs); the rest only when needed


def pruned_search(spec: WorkloadSpec, network: Network, caps: Capacity, tables: NetworkTables,
                  latency_bound: float | None) -> tuple[Candidate, float] | None:
    """The winner of the full scan and its score, visiting DCs by increasing score bound.

    None if no DC fits, or if a transfer figure is not finite and non-negative (the
    bound does not hold then): the caller then runs the full scan.
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
    scale = hours / 1000 * ((1.0 - w.fill_bonus) - 1e-9)
    lb = b.cpu_wpp * (spec.cpus * scale)
    if spec.accelerator.family is not Family.CPU:
        lb += b.acc_wpp * (spec.accelerator.count * scale)
    east, west = extra[Region.EAST], extra[Region.WEST]
    if east == west:
        if east != 0.0:
            lb += east
    else:
        lb += np.where(b.east, east, west)
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
    order_at: list[int] = head.tolist()
    all_rows = b.rows
    best: CandidateFields | None = None
    best_key = (math.inf, math.inf, -1)
    start, step = 0, FIRST_BATCH
    while True:
        if rest is not None and start + step > len(order_at):
            tail = np.flatnonzero(rest)
            tail = tail[np.argsort(lb[tail], kind="stable")]
            bounds += lb[tail].tolist()
            order_at += tail.tolist()
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
    return None if best is None else (candidate_of(best), best_key[0])
