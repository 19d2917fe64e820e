"""How much a latency tier's eligibility leans on the RTT model.

Most RTTs are modelled (:mod:`westflow.latency`: route inflation x great circle +
equipment overhead); the inflation is an assumption. :func:`sensitivity` lists the
(DC, city) pairs whose eligibility changes as the inflation ranges over
``INFLATIONS`` (``westflow network --sensitivity``); :func:`realtime_margin` is the
RTT distribution of placements already made and how many would break the bound at
a pessimistic inflation (for the simulator's report). Measured RTTs
(``latency.measured``) do not move with the inflation. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from westflow.inventory import REALTIME, Network, Tier
from westflow.latency import great_circle_km, modelled_ms

__all__ = ["INFLATIONS", "STRESS_INFLATION", "PairSensitivity", "RttBin", "RttMargin", "rtt_at", "sensitivity",
           "realtime_margin"]

INFLATIONS = (1.3, 1.5, 2.1)  # optimistic, the default model, pessimistic (fibre routes vs great circle)
STRESS_INFLATION = INFLATIONS[-1]


@dataclass(frozen=True, slots=True)
class PairSensitivity:
    """One (DC, city) pair: its RTT and eligibility at each of ``inflations``."""

    dc: str
    city: str
    measured: bool
    inflations: tuple[float, ...]
    rtt_ms: tuple[float, ...]
    eligible: tuple[bool, ...]

    @property
    def changes(self) -> bool:
        """Whether eligibility differs between any two of the inflations."""
        return len(set(self.eligible)) > 1


@dataclass(frozen=True, slots=True)
class RttBin:
    """Placements with an RTT in ``(low_ms, high_ms]`` (``low_ms`` None: from 0; ``high_ms`` None: no top)."""

    low_ms: float | None
    high_ms: float | None
    weight: float

    @property
    def label(self) -> str:
        if self.low_ms is None:
            return f"<= {self.high_ms:g} ms"
        if self.high_ms is None:
            return f"> {self.low_ms:g} ms"
        return f"{self.low_ms:g}-{self.high_ms:g} ms"


@dataclass(frozen=True, slots=True)
class RttMargin:
    """The RTT distribution of a tier's placements (weighted: requests, or accelerator-seconds) and what a
    pessimistic route inflation does to it.

    ``bins``: by RTT as the network has it (modelled or measured); ``in_guard_band``: weight above
    the tier's limit but within its bound (possible only for a policy that ignores the guard band);
    ``beyond_bound``: weight over the bound as placed; ``beyond_bound_at_stress``: weight over the
    bound at ``stress_inflation``, and ``stressed_pairs`` the (DC, city, weight) pairs that make it.
    Percentiles are None when nothing was placed.
    """

    tier: str
    bound_ms: float | None
    limit_ms: float | None
    total: float
    bins: tuple[RttBin, ...]
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    in_guard_band: float
    beyond_bound: float
    stress_inflation: float
    beyond_bound_at_stress: float
    stressed_pairs: tuple[tuple[str, str, float], ...]

    @property
    def share_beyond_bound_at_stress(self) -> float:
        return self.beyond_bound_at_stress / self.total if self.total else 0.0


def rtt_at(network: Network, dc_id: str, city_id: str, route_inflation: float) -> float:
    """The RTT of (DC, city) had the model used ``route_inflation``: the measured RTT where there is one."""
    if (dc_id, city_id) in network.latency.measured:
        return network.rtt_ms[(dc_id, city_id)]
    d, c = network.dc(dc_id), network.city(city_id)
    return modelled_ms(great_circle_km(d.lat, d.lon, c.lat, c.lon), route_inflation,
                       network.latency.equipment_overhead_ms)


def sensitivity(network: Network, tier: str = REALTIME, inflations: Sequence[float] = INFLATIONS,
                *, changing_only: bool = True) -> tuple[PairSensitivity, ...]:
    """Every (DC, city) pair (inventory order) whose eligibility in ``tier`` changes over ``inflations``
    (all pairs with ``changing_only=False``). A tier with no bound changes nothing."""
    t = network.tiers[tier]
    out: list[PairSensitivity] = []
    for d in network.data_centers:
        for c in network.cities:
            rtts = tuple(rtt_at(network, d.id, c.id, f) for f in inflations)
            row = PairSensitivity(d.id, c.id, (d.id, c.id) in network.latency.measured, tuple(inflations), rtts,
                                  tuple(map(t.admits, rtts)))
            if row.changes or not changing_only:
                out.append(row)
    return tuple(out)


def _percentile(ordered: Sequence[tuple[float, float]], total: float, q: float) -> float:
    """The weighted ``q`` quantile (lower) of ``ordered`` (rtt, weight) pairs sorted by RTT."""
    at, seen = q * total, 0.0
    for rtt, w in ordered:
        seen += w
        if seen >= at:
            return rtt
    return ordered[-1][0]


def _edges(t: Tier) -> tuple[float, ...]:
    if t.max_rtt_ms is None or t.limit_ms is None:
        return (5.0, 10.0, 20.0, 50.0)
    b = t.max_rtt_ms
    return tuple(sorted({b * 0.25, b * 0.5, b * 0.75, t.limit_ms, b}))


def realtime_margin(network: Network, placed: Mapping[tuple[str, str], float], tier: str = REALTIME, *,
                    stress_inflation: float = STRESS_INFLATION,
                    edges_ms: Sequence[float] | None = None) -> RttMargin:
    """The RTT distribution of ``placed`` (weight per (DC id, origin city id): a count of requests, or
    accelerator-seconds) and how much of it would exceed ``tier``'s bound at ``stress_inflation``.

    Bins are right-closed at ``edges_ms`` (default: a quarter, half and three quarters of the bound,
    its limit, the bound itself) with one open bin above. Raises KeyError on a DC or city the
    network does not have, ValueError on a negative or non-finite weight.
    """
    t = network.tiers[tier]
    edges = tuple(sorted(set(edges_ms))) if edges_ms is not None else _edges(t)
    weights = [0.0] * (len(edges) + 1)
    pairs: list[tuple[float, float]] = []
    stressed: list[tuple[str, str, float]] = []
    total = in_guard = beyond = beyond_stress = 0.0
    bound = t.max_rtt_ms
    for (dc_id, city_id), w in placed.items():
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"weight of {dc_id}->{city_id} must be finite and >= 0, not {w!r}")
        if not w:
            continue
        rtt = network.rtt_ms[(dc_id, city_id)]
        total += w
        pairs.append((rtt, w))
        k = next((i for i, e in enumerate(edges) if rtt <= e), len(edges))
        weights[k] += w
        if bound is None:
            continue
        if rtt > bound:
            beyond += w
        elif not t.admits(rtt):
            in_guard += w
        if rtt_at(network, dc_id, city_id, stress_inflation) > bound:
            beyond_stress += w
            stressed.append((dc_id, city_id, w))
    pairs.sort()
    lows: tuple[float | None, ...] = (None, *edges)
    highs: tuple[float | None, ...] = (*edges, None)
    bins = tuple(RttBin(lo, hi, w) for lo, hi, w in zip(lows, highs, weights, strict=True))
    p50 = _percentile(pairs, total, 0.5) if pairs else None
    p95 = _percentile(pairs, total, 0.95) if pairs else None
    stressed.sort(key=lambda s: (-s[2], s[0], s[1]))
    return RttMargin(tier, bound, t.limit_ms, total, bins, p50, p95, pairs[-1][0] if pairs else None,
                     in_guard, beyond, stress_inflation, beyond_stress, tuple(stressed))
