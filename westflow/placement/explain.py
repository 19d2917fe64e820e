"""Why every other data center lost: the explanation a Placement carries.

Built on first read of ``Placement.rejected``, against the capacity copied at
decision time. :func:`explain` and :func:`explain_dearer` read the full scan's
:class:`~westflow.placement.filters.Evaluation`; :func:`explain_dearer_columns`
gives :func:`explain_dearer`'s answer for a large network without one: the
filter's arithmetic and the one score run over numpy columns of every DC, and
only the DCs that capacity or a deadline rejects go through
:func:`~westflow.placement.filters.evaluate` for their text. Pure Python and numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from westflow.capacity import Capacity
from westflow.energy import energy_cost_cny, energy_kwh
from westflow.inventory import Family, Network, PolicyWeights, Region
from westflow.placement.filters import Evaluation, down, evaluate, in_order, transfer
from westflow.placement.score import score
from westflow.placement.tables import Floats, NetworkTables, Objects
from westflow.placement.values import (
    Candidate,
    CandidateFields,
    DearerRejection,
    Deferred,
    Reason,
    Rejection,
    Rejections,
    dearer_of,
)
from westflow.spec import WorkloadSpec

__all__ = ["explain", "explain_dearer", "explain_dearer_columns"]


def explain(ev: Evaluation, best: Candidate, caps: Capacity, tables: NetworkTables,
            lost: Callable[[Candidate], Rejection]) -> Rejections:
    """Every DC but the winner: those the filter rejected, in inventory order, then the losers."""
    filtered = in_order(ev.late, ev.rejected, caps, tables.unavailable)
    return Rejections(filtered + tuple(lost(c) for c in ev.candidates if c.index != best.index))


def explain_dearer(ev: Evaluation, best_index: int, caps: Capacity, tables: NetworkTables,
                   weights: PolicyWeights) -> Rejections:
    """:func:`explain` for the westflow score, whose winner is DC ``best_index``: each loser is dearer
    by its score's gap to the winner's (the scores the filter computed, where it was asked to). The
    losers' rejections are built on first read of an item (:class:`~westflow.placement.values.Rejections`)."""
    filtered = in_order(ev.late, ev.rejected, caps, tables.unavailable)
    eligible = ev.eligible
    scores: Sequence[float] = ev.scores
    if len(scores) != len(eligible):
        scores = [score(cost, t_cost, t_hours, caps[dc.id].utilisation, dc.utilisation_target, weights)
                  for _, dc, _, _, _, cost, t_hours, t_cost in eligible]
    if len(eligible) == 1:
        return Rejections(filtered)
    return Rejections(filtered, Deferred(_dearer, eligible, scores, best_index, caps), len(eligible) - 1)


def _dearer(eligible: Sequence[CandidateFields], scores: Sequence[float], best_index: int,
            caps: Capacity) -> list[DearerRejection]:
    """The losers of :func:`explain_dearer`, in inventory order."""
    best_s = next(s for fields, s in zip(eligible, scores, strict=True) if fields[0] == best_index)
    dearer = Reason.DEARER
    return [dearer_of((dc.id, dearer, s - best_s, cost, t_cost, caps[dc.id].utilisation))
            for (i, dc, _, _, _, cost, _, t_cost), s in zip(eligible, scores, strict=True) if i != best_index]


def _dearer_columns(ids: Objects, gaps: Floats, energy_cost_cny: Floats, transfer_cost_cny: Floats | float,
                    utilisation: Objects) -> list[DearerRejection]:
    """The losers of :func:`explain_dearer_columns`, from their columns (Python floats, as the filter's)."""
    t_cost: list[float]
    if isinstance(transfer_cost_cny, np.ndarray):
        t_cost = transfer_cost_cny.tolist()
    else:
        t_cost = [transfer_cost_cny] * len(ids)
    return DearerRejection.many(ids.tolist(), gaps.tolist(), energy_cost_cny.tolist(), t_cost, utilisation.tolist())


def explain_dearer_columns(spec: WorkloadSpec, network: Network, caps: Capacity, tables: NetworkTables,
                           bound: float | None, best_index: int) -> Rejections | None:
    """:func:`explain_dearer` of the full scan whose winner is DC ``best_index``, over columns.

    The filter's checks and costs are the same operations in the same order as
    :func:`~westflow.placement.filters.evaluate`'s, so every number (and so every
    text) is the full scan's. None if DC ``best_index`` is not a candidate here, or
    if :func:`evaluate` disagrees on a DC: the caller then takes the full scan.
    """
    cols = tables.capacity_columns(caps)
    late, late_why = tables.late(spec.origin, bound)
    alive = cols.alive
    dead = ~alive
    open_ = alive & ~late
    acc = spec.accelerator
    count, cpus, mem, hours, deadline = acc.count, spec.cpus, spec.memory_gb, spec.duration_hours, spec.deadline_hours
    no_pool = None
    if acc.family is Family.CPU:
        fits = open_.copy()
        acc_kw: np.ndarray | float = 0.0
    else:
        pc = tables.pool_columns(spec)
        no_pool = open_ & pc.none
        fits, acc_kw = cols.fit(pc, count)
        fits = fits & open_
    fits &= ~((cols.free_cpus < cpus) | (cols.free_memory_gb < mem))
    moves = {reg: (transfer(spec, network, reg) if spec.inputs else (0.0, 0.0)) for reg in (Region.EAST, Region.WEST)}
    (te_h, te_c), (tw_h, tw_c) = moves[Region.EAST], moves[Region.WEST]
    if deadline is not None:
        late_e, late_w = te_h + hours > deadline, tw_h + hours > deadline
        if late_e or late_w:
            fits &= ~tables.east if late_e else tables.east
            if late_e and late_w:
                fits[:] = False
    if not fits[best_index]:
        return None
    out = np.empty(len(alive), dtype=object)
    out[dead] = tables.unavailable_column[dead]
    for i in np.flatnonzero(dead).tolist():  # a DC out with a reason (its cluster unreachable) says so
        cap = caps.get(tables.ids[i])
        if cap is not None and cap.why:
            out[i] = down(tables.unavailable[i], cap)
    late_alive = late & alive
    out[late_alive] = late_why[late_alive]
    checked = open_ & ~fits
    if no_pool is not None:
        out[no_pool] = pc.none_why[no_pool]
        checked &= ~no_pool
    where = np.flatnonzero(checked).tolist()
    if where:
        everyone, _ = tables.rows(spec, None)
        ev = evaluate(spec, network, caps, tables, bound, [everyone[i] for i in where], moves)
        if ev.eligible or len(ev.rejected) != len(where):
            return None
        for i, r in ev.rejected:
            out[i] = r
    kwh = energy_kwh(acc_kw, tables.cpu_watts, cpus, hours, tables.pue)
    energy = energy_cost_cny(kwh, tables.price)
    east = tables.east
    same = te_h == tw_h and te_c == tw_c  # no data to move, or as dear both ways: one figure for all
    t_hours: Floats | float = te_h if same else np.where(east, te_h, tw_h)
    t_cost: Floats | float = te_c if same else np.where(east, te_c, tw_c)
    scores = score(energy, t_cost, t_hours, cols.utilisation, tables.target, network.weights)
    best_s = float(scores[best_index])
    losers = fits.copy()
    losers[best_index] = False
    costs: Floats | float = te_c if te_c == tw_c else np.where(east[losers], te_c, tw_c)
    ids = tables.ids_column[losers]
    head: tuple[Rejection, ...] = tuple(out[~fits].tolist())
    if not len(ids):
        return Rejections(head)
    return Rejections(head, Deferred(_dearer_columns, ids, scores[losers] - best_s, energy[losers], costs,
                                     cols.utilisation_values[losers]), len(ids))
