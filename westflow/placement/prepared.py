"""Per-network tables of placement (:class:`_Tables`), the pruning bound, and text helpers.

Everything that depends only on the network is computed once per network here;
see :mod:`westflow.placement`. Pure Python and numpy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from westflow.capacity import Capacity, static_capacity
from westflow.inventory import AcceleratorPool, DataCenter, Family, Network, Region
from westflow.placement.values import Reason, Rejection
from westflow.spec import WorkloadSpec
from westflow.tags import RayRequest, ray_request


def _want(spec: WorkloadSpec) -> str:
    a = spec.accelerator
    return a.model or a.family.value


_Row = tuple[Rejection | None, ...]
_Pools = tuple[tuple[AcceleratorPool, ...], ...]
# inventory index, DC, id, RTT to the origin, cpu_watts, PUE, price (read once per decision)
_Site = tuple[int, DataCenter, str, "float | None", float, float, float]


class _Tables:
    """Per-network facts a decision needs, computed once and memoised per key."""

    def __init__(self, network: Network) -> None:
        self.dcs = network.data_centers
        self.ids = tuple(d.id for d in self.dcs)
        self.cities = frozenset(network.city_ids)
        self.unavailable = tuple(
            Rejection(d.id, Reason.UNAVAILABLE, "no live Ray node for this DC") for d in self.dcs)
        self.static = static_capacity(network)  # the capacity used when the caller gives none
        self._network = network
        self._sites: dict[tuple[str | None, float | None], tuple[tuple[_Site, ...], tuple[_Ranked, ...]]] = {}
        self._pools: dict[tuple[Family, str | None], tuple[_Pools, _Row, str]] = {}
        self.region = tuple(d.region.value for d in self.dcs)
        self._bounds: dict[tuple[str | None, float | None, Family, str | None], _Bound] = {}
        w = network.weights
        # The pruned search of WestflowPolicy (see _Bound) is exact only when every cost input is
        # finite and non-negative and the fill bonus is at most (a hair under) the energy cost.
        self.prune = len(self.dcs) >= _PRUNE_MIN_DCS and 0.0 <= w.fill_bonus <= 0.999 and _fine(
            w.hour_value_cny) and all(
            _fine(d.pue) and _fine(d.price_cny_kwh) and _fine(d.cpu_watts) and _fine(d.utilisation_target)
            and d.utilisation_target > 0.0 and all(_fine(p.watts) for p in d.pools) for d in self.dcs)
        self.static_util = min((c.utilisation for c in self.static.values()), default=0.0)

    def sites(self, origin: str | None, bound: float | None) -> tuple[tuple[_Site, ...], tuple[_Ranked, ...]]:
        """The DCs within ``bound`` of ``origin`` (with their RTT), and the latency rejections of the rest."""
        key = (origin, bound)
        got = self._sites.get(key)
        if got is None:
            ok: list[_Site] = []
            late: list[_Ranked] = []
            for i, d in enumerate(self.dcs):
                r = self._network.rtt_ms[(d.id, origin)] if origin else None
                if bound is not None and r is not None and r > bound:
                    late.append((i, Rejection(d.id, Reason.LATENCY, f"RTT {r:.1f} ms to {origin} > {bound:g} ms")))
                else:
                    ok.append((i, d, d.id, r, d.cpu_watts, d.pue, d.price_cny_kwh))
            got = self._sites[key] = (tuple(ok), tuple(late))
        return got

    def pools(self, spec: WorkloadSpec) -> tuple[_Pools, _Row, str]:
        """Per DC: compatible pools (cheapest power first, stable) and the rejection if none;
        and the request's name in rejection text."""
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
                           Rejection(dc.id, Reason.ACCELERATOR, f"no {_want(spec)} here (has {have})"))
            got = self._pools[(fam, model)] = (tuple(pools), tuple(rej), _want(spec))
        return got

    def bound(self, spec: WorkloadSpec, latency_bound: float | None) -> _Bound:
        """The DCs a spec may use before capacity is read (within the latency bound, with a
        compatible pool), with the per-DC factors of the lower bound on their westflow score."""
        acc = spec.accelerator
        key = (spec.origin, latency_bound, acc.family, acc.model)
        got = self._bounds.get(key)
        if got is None:
            sites, _ = self.sites(spec.origin, latency_bound)
            cpu_only = acc.family is Family.CPU
            all_pools = () if cpu_only else self.pools(spec)[0]
            sel = [s for s in sites if cpu_only or all_pools[s[0]]]
            pools = tuple(() if cpu_only else all_pools[s[0]] for s in sel)
            # watts x PUE x price of the least-power compatible pool, and of the CPUs
            acc_w = np.array([0.0 if cpu_only else min(p.watts for p in pl) for pl in pools], dtype=np.float64)
            pp = np.array([s[5] * s[6] for s in sel], dtype=np.float64)
            cpu_w = np.array([s[4] for s in sel], dtype=np.float64)
            east = np.array([s[1].region is Region.EAST for s in sel], dtype=np.bool_)
            arrays = (acc_w * pp, cpu_w * pp, east)
            for a in arrays:
                a.flags.writeable = False  # shared by every thread's decisions
            got = self._bounds[key] = _Bound(tuple(sel), pools, *arrays)
        return got


_PRUNE_MIN_DCS = 64  # below this a full scan is cheaper than the numpy set-up


def _fine(x: float) -> bool:
    return math.isfinite(x) and x >= 0.0


_F64 = npt.NDArray[np.float64]


class _Bound(NamedTuple):
    """Per (origin, latency bound, accelerator request): the DCs that pass the static filters.

    For such a DC whose cheapest compatible pool draws ``w`` watts, any candidate there has
    ``energy >= (w x count + cpu_watts x cpus) / 1000 x hours x PUE x price`` (each float
    operation is monotone), and with utilisation >= 0 the fill bonus is at most
    ``fill_bonus x energy``; so ``score >= energy_min x (1 - fill_bonus) + transfer terms``.
    """

    sites: tuple[_Site, ...]
    pools: _Pools
    acc_wpp: _F64
    cpu_wpp: _F64
    east: npt.NDArray[np.bool_]


# A rejection with its DC's inventory index (the output order). Capacity rejections, the
# common case under load, keep their numbers (dc, count, wanted, free) and are written on read.
_Ranked = tuple[int, "Rejection | tuple[str, int, str, int]"]


def _text(r: Rejection | tuple[str, int, str, int]) -> Rejection:
    if isinstance(r, Rejection):
        return r
    dc_id, count, want, most = r
    return Rejection(dc_id, Reason.CAPACITY, f"{count} x {want} asked, {most} free")


def _in_order(late: Sequence[_Ranked], rest: Sequence[_Ranked], caps: Capacity,
              unavailable: Sequence[Rejection]) -> tuple[Rejection, ...]:
    """The latency and other rejections merged into inventory order.

    Liveness is checked before latency, so a DC beyond the bound that is also down
    reads "unavailable".
    """
    both: list[_Ranked] = []
    for i, r in late:
        cap = caps.get(r[0])
        both.append((i, r) if cap is not None and cap.alive else (i, unavailable[i]))
    if not both:
        return tuple(_text(r) for _, r in rest)
    if rest:
        both.extend(rest)
        both.sort(key=lambda x: x[0])
    return tuple(_text(r) for _, r in both)


def _ray_for(dc: DataCenter, family: Family, pool: AcceleratorPool | None, spec: WorkloadSpec,
             realtime: bool) -> RayRequest:
    return ray_request(
        dc, family=family, model=pool.model if pool else None, count=spec.accelerator.count,
        per_node=pool.per_node if pool else 1, cpus=spec.cpus, memory_gb=spec.memory_gb,
        realtime_origin=spec.origin if realtime else None,
    )


@functools.lru_cache(maxsize=32)
def _tables(network: Network) -> _Tables:
    return _Tables(network)
