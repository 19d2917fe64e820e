"""Why every other data center lost: the explanation a Placement carries.

Built on first read of ``Placement.rejected``, against the capacity copied at
decision time. Pure Python.
"""

from __future__ import annotations

from collections.abc import Callable

from westflow.capacity import Capacity
from westflow.inventory import PolicyWeights
from westflow.placement.filters import Evaluation, in_order
from westflow.placement.score import score
from westflow.placement.tables import NetworkTables
from westflow.placement.values import Candidate, DearerRejection, Rejection

__all__ = ["explain", "explain_dearer"]


def explain(ev: Evaluation, best: Candidate, caps: Capacity, tables: NetworkTables,
            lost: Callable[[Candidate], Rejection]) -> tuple[Rejection, ...]:
    """Every DC but the winner: those the filter rejected, in inventory order, then the losers."""
    filtered = in_order(ev.late, ev.rejected, caps, tables.unavailable)
    return filtered + tuple(lost(c) for c in ev.candidates if c is not best)


def explain_dearer(ev: Evaluation, best: Candidate, caps: Capacity, tables: NetworkTables,
                   weights: PolicyWeights) -> tuple[Rejection, ...]:
    """:func:`explain` for the westflow score: each loser is dearer by its score's gap to the winner's."""
    filtered = in_order(ev.late, ev.rejected, caps, tables.unavailable)
    best_s = score(best.energy_cost_cny, best.transfer_cost_cny, best.transfer_hours,
                   caps[best.dc.id].utilisation, best.dc.utilisation_target, weights)
    out: list[Rejection] = []
    add = out.append
    for c in ev.candidates:
        if c is best:
            continue
        dc = c.dc
        util = caps[dc.id].utilisation
        e, tc = c.energy_cost_cny, c.transfer_cost_cny
        gap = score(e, tc, c.transfer_hours, util, dc.utilisation_target, weights) - best_s
        add(DearerRejection(dc.id, gap, e, tc, util))
    return filtered + tuple(out)
