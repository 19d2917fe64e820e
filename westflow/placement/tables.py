"""Per-network tables of placement: everything a decision needs that depends only on the network.

:func:`tables_for` gives one :class:`NetworkTables` per network (memoised); its
methods memoise per key (origin and latency bound, accelerator request). Pure
Python and numpy.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from westflow.capacity import static_capacity
from westflow.inventory import AcceleratorPool, DataCenter, Family, Network, Region
from westflow.placement.values import Reason, Rejection
from westflow.spec import WorkloadSpec

__all__ = ["NetworkTables", "PruneBound", "Site", "Ranked", "PoolRow", "tables_for", "finite_non_negative", "wanted",
           "PRUNE_MIN_DCS"]

PRUNE_MIN_DCS = 64  # below this a full scan is cheaper than the pruned search's numpy set-up

# inventory index, DC, id, RTT to the origin, cpu_watts, PUE, price (read once per decision)
Site = tuple[int, DataCenter, str, "float | None", float, float, float]
# A rejection with its DC's inventory index (the output order).
Ranked = tuple[int, Rejection]
# Per DC: its compatible pools, least power first.
PoolRow = tuple[tuple[AcceleratorPool, ...], ...]


def finite_non_negative(x: float) -> bool:
    return math.isfinite(x) and x >= 0.0


def wanted(spec: WorkloadSpec) -> str:
    """The accelerator request as rejection text names it: the model, else the family."""
    a = spec.accelerator
    return a.model or a.family.value


class PruneBound:
    """Per (origin, latency bound, accelerator request): the DCs that pass the static filters.

    For such a DC whose cheapest compatible pool draws ``w`` watts, any candidate there has
    ``energy >= (w x count + cpu_watts x cpus) / 1000 x hours x PUE x price`` (each float
    operation is monotone), and with utilisation >= 0 the fill bonus is at most
    ``fill_bonus x energy``; so ``score >= energy_min x (1 - fill_bonus) + transfer terms``.
    ``acc_wpp`` and ``cpu_wpp`` are those watts x PUE x price; ``east`` marks eastern DCs.
    """

    __slots__ = ("sites", "pools", "acc_wpp", "cpu_wpp", "east")

    def __init__(self, sites: tuple[Site, ...], pools: PoolRow, cpu_only: bool) -> None:
        self.sites = sites
        self.pools = pools
        pp = np.array([s[5] * s[6] for s in sites], dtype=np.float64)
        acc_w = np.array([0.0 if cpu_only else min(p.watts for p in pl) for pl in pools], dtype=np.float64)
        self.acc_wpp = acc_w * pp
        self.cpu_wpp = np.array([s[4] for s in sites], dtype=np.float64) * pp
        self.east = np.array([s[1].region is Region.EAST for s in sites], dtype=np.bool_)
        for a in (self.acc_wpp, self.cpu_wpp, self.east):
            a.flags.writeable = False  # shared by every thread's decisions


class NetworkTables:
    """Per-network facts a decision needs, computed once and memoised per key."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.dcs = network.data_centers
        self.ids = tuple(d.id for d in self.dcs)
        self.region = tuple(d.region.value for d in self.dcs)
        self.cities = frozenset(network.city_ids)
        self.unavailable = tuple(
            Rejection(d.id, Reason.UNAVAILABLE, "no live Ray node for this DC") for d in self.dcs)
        self.static = static_capacity(network)  # the capacity used when the caller gives none
        self.static_util = min((c.utilisation for c in self.static.values()), default=0.0)
        w = network.weights
        # The pruned search is exact only when every cost input is finite and non-negative and
        # the fill bonus is at most (a hair under) the energy cost.
        self.prunable = 0.0 <= w.fill_bonus <= 0.999 and finite_non_negative(w.hour_value_cny) and all(
            finite_non_negative(d.pue) and finite_non_negative(d.price_cny_kwh)
            and finite_non_negative(d.cpu_watts) and finite_non_negative(d.utilisation_target)
            and d.utilisation_target > 0.0 and all(finite_non_negative(p.watts) for p in d.pools)
            for d in self.dcs)
        self.large = len(self.dcs) >= PRUNE_MIN_DCS
        self._sites: dict[tuple[str | None, float | None], tuple[tuple[Site, ...], tuple[Ranked, ...]]] = {}
        self._pools: dict[tuple[Family, str | None], tuple[PoolRow, tuple[Rejection | None, ...]]] = {}
        self._bounds: dict[tuple[str | None, float | None, Family, str | None], PruneBound] = {}

    def sites(self, origin: str | None, bound: float | None) -> tuple[tuple[Site, ...], tuple[Ranked, ...]]:
        """The DCs within ``bound`` of ``origin`` (with their RTT), and the latency rejections of the rest."""
        key = (origin, bound)
        got = self._sites.get(key)
        if got is None:
            ok: list[Site] = []
            late: list[Ranked] = []
            for i, d in enumerate(self.dcs):
                r = self.network.rtt_ms[(d.id, origin)] if origin else None
                if bound is not None and r is not None and r > bound:
                    late.append((i, Rejection(d.id, Reason.LATENCY, f"RTT {r:.1f} ms to {origin} > {bound:g} ms")))
                else:
                    ok.append((i, d, d.id, r, d.cpu_watts, d.pue, d.price_cny_kwh))
            got = self._sites[key] = (tuple(ok), tuple(late))
        return got

    def pools(self, spec: WorkloadSpec) -> tuple[PoolRow, tuple[Rejection | None, ...]]:
        """Per DC: compatible pools (least power first, stable), and the rejection if there is none."""
        fam, model = spec.accelerator.family, spec.accelerator.model
        got = self._pools.get((fam, model))
        if got is None:
            pools: list[tuple[AcceleratorPool, ...]] = []
            rej: list[Rejection | None] = []
            for dc in self.dcs:
                ok = [p for p in dc.pools
                      if (fam is Family.ANY or p.family is fam) and (model is None or p.model == model)]
                pools.append(tuple(sorted(ok, key=lambda p: p.watts)))
                have = ", ".join(f"{p.family.value} {p.model}" for p in dc.pools) or "CPUs only"
                rej.append(None if ok else
                           Rejection(dc.id, Reason.ACCELERATOR, f"no {wanted(spec)} here (has {have})"))
            got = self._pools[(fam, model)] = (tuple(pools), tuple(rej))
        return got

    def bound(self, spec: WorkloadSpec, latency_bound: float | None) -> PruneBound:
        """The DCs a spec may use before capacity is read (within the latency bound, with a
        compatible pool), with the per-DC factors of the lower bound on their westflow score."""
        acc = spec.accelerator
        key = (spec.origin, latency_bound, acc.family, acc.model)
        got = self._bounds.get(key)
        if got is None:
            sites, _ = self.sites(spec.origin, latency_bound)
            cpu_only = acc.family is Family.CPU
            all_pools = () if cpu_only else self.pools(spec)[0]
            sel = tuple(s for s in sites if cpu_only or all_pools[s[0]])
            got = self._bounds[key] = PruneBound(
                sel, tuple(() if cpu_only else all_pools[s[0]] for s in sel), cpu_only)
        return got


@functools.lru_cache(maxsize=32)
def tables_for(network: Network) -> NetworkTables:
    """The tables of ``network`` (memoised: a network is frozen)."""
    return NetworkTables(network)
