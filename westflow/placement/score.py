"""The westflow score: written once, used by the full scan, the pruned search and the explanation.

    score = energy cost + transfer cost + hour_value x transfer hours
            - fill_bonus x energy cost x (target - utilisation) / target   (when below target)

Smaller wins. The sort key is ``(score, rtt_ms or 0, inventory index)``: ties go
to the nearer DC, then to the one listed first. :func:`score` takes floats (one DC)
or numpy arrays (every DC at once, for the explanation of a large network): the
same operations in the same order, so each array element is the float the scalar
call gives. Pure Python and numpy.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from westflow.inventory import PolicyWeights

__all__ = ["score", "westflow_key"]

F = TypeVar("F", float, NDArray[np.float64])


def score(energy_cost_cny: F, transfer_cost_cny: F | float, transfer_hours: F | float,
          utilisation: F, utilisation_target: F | float, weights: PolicyWeights) -> F:
    """The westflow score of running on one DC (CNY; smaller wins), or on each DC of arrays."""
    room = utilisation_target - utilisation
    if isinstance(room, np.ndarray):
        room = np.where(room > 0.0, room, 0.0)  # NaN room: no bonus, as below
    elif not room > 0.0:
        room = 0.0
    bonus = weights.fill_bonus * energy_cost_cny * room / utilisation_target
    return (energy_cost_cny + transfer_cost_cny) + weights.hour_value_cny * transfer_hours - bonus


def westflow_key(score_cny: float, rtt_ms: float | None, index: int) -> tuple[float, float, int]:
    """The sort key of a candidate with that score: ``(score, rtt_ms or 0, inventory index)``."""
    return (score_cny, rtt_ms or 0.0, index)
