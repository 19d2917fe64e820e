"""Round-trip time between a data center and a city.

Measured where the config gives it, else modelled::

    rtt = 2 * d_km * route_inflation / C_FIBRE + equipment_overhead_ms

The physical floor ``2 * d_km / C_FIBRE`` bounds every RTT from below: a
measured RTT under it is a config error. A latency tier's guard band
(``DEFAULT_GUARD_BAND`` of its bound unless ``tiers.yaml`` says otherwise) keeps
placements off the edge of the bound, since the model's route inflation is a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["C_FIBRE_KM_PER_MS", "EARTH_RADIUS_KM", "DEFAULT_GUARD_BAND", "LatencyModel", "great_circle_km",
           "floor_ms", "modelled_ms"]

C_FIBRE_KM_PER_MS = 200.0  # light in fibre: ~200,000 km/s
EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
DEFAULT_GUARD_BAND = 0.10  # of a tier's bound: a 20 ms tier places at <= 18 ms modelled RTT


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """How the RTT matrix was made: the model's parameters, and the (DC, city) pairs measured
    instead (``latency.measured``: those RTTs do not move with the route inflation)."""

    route_inflation: float = 1.5
    equipment_overhead_ms: float = 1.0
    measured: frozenset[tuple[str, str]] = frozenset()


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def floor_ms(distance_km: float) -> float:
    """The physical lower bound of the RTT over ``distance_km``."""
    return 2 * distance_km / C_FIBRE_KM_PER_MS


def modelled_ms(distance_km: float, route_inflation: float, overhead_ms: float) -> float:
    """Modelled RTT: fibre path longer than the great circle, plus equipment."""
    return floor_ms(distance_km) * route_inflation + overhead_ms
