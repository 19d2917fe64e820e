"""The westflow score: written once, used by the full scan, the pruned search and the explanation.

    score = energy cost + transfer cost + hour_value x transfer hours
            - fill_bonus x energy cost x (target - utilisation) / target   (when below target)

Smaller wins. The sort key is ``(score, rtt_ms or 0, inventory index)``: ties go
to the nearer DC, then to the one listed first. Pure Python.
"""

from __future__ import annotations

from westflow.inventory import PolicyWeights

__all__ = ["score", "westflow_key"]


def score(energy_cost_cny: float, transfer_cost_cny: float, transfer_hours: float,
          utilisation: float, utilisation_target: float, weights: PolicyWeights) -> float:
    """The westflow score of running on one DC (CNY; smaller wins)."""
    room = utilisation_target - utilisation
    bonus = weights.fill_bonus * energy_cost_cny * (room if room > 0.0 else 0.0) / utilisation_target
    return (energy_cost_cny + transfer_cost_cny) + weights.hour_value_cny * transfer_hours - bonus


def westflow_key(score_cny: float, rtt_ms: float | None, index: int) -> tuple[float, float, int]:
    """The sort key of a candidate with that score: ``(score, rtt_ms or 0, inventory index)``."""
    return (score_cny, rtt_ms or 0.0, index)
