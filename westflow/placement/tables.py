"""Per-network tables of placement: everything a decision needs that depends only on the network.

:func:`tables_for` gives one :class:`NetworkTables` per network (memoised); its
methods memoise per key (origin and latency bound, accelerator request). For the
explanation of a large network it also holds numpy columns: per DC (inventory
order), per request (:class:`PoolColumns`) and of the last capacity snapshot
(:class:`CapacityColumns`, updated where a few DCs change). Pure Python and numpy.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from westflow.capacity import Capacity, DCCapacity, static_capacity
from westflow.inventory import AcceleratorPool, DataCenter, Family, Network, Region
from westflow.placement.values import Reason, Rejection
from westflow.spec import WorkloadSpec

__all__ = ["NetworkTables", "PruneBound", "Site", "Row", "Ranked", "PoolRow", "tables_for", "finite_non_negative",
           "wanted", "PRUNE_MIN_DCS", "PoolColumns", "CapacityColumns", "Snapshot", "Floats", "Flags", "Objects"]

PRUNE_MIN_DCS = 64  # below this a full scan is cheaper than the pruned search's numpy set-up

# inventory index, DC, id, RTT to the origin, cpu_watts, PUE, price (read once per decision)
Site = tuple[int, DataCenter, str, "float | None", float, float, float]
# A site with what one accelerator request reads of it: its compatible pools (least power first; None
# for a CPU-only request, empty where the DC has none), its utilisation target, and its accelerator
# rejection where it has no compatible pool (read once per decision).
Row = tuple[int, DataCenter, str, "float | None", float, float, float,
            "tuple[AcceleratorPool, ...] | None", float, "Rejection | None"]
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
    ``acc_wpp`` and ``cpu_wpp`` are those watts x PUE x price; ``east`` marks eastern DCs
    (``has_east``, ``has_west``: whether any is, any is not). Given a capacity snapshot, the
    bound tightens per DC (:func:`~westflow.placement.search.pruned_search`, over columns of
    every DC in inventory order): ``row`` maps a DC's inventory index to its position in ``rows``
    (-1: not a row) and ``mask`` marks the rows.
    """

    __slots__ = ("rows", "acc_wpp", "cpu_wpp", "east", "has_east", "has_west", "row", "mask")

    def __init__(self, rows: tuple[Row, ...], n: int) -> None:
        self.rows = rows
        pp = np.array([s[5] * s[6] for s in rows], dtype=np.float64)
        acc_w = np.array([min(p.watts for p in s[7]) if s[7] else 0.0 for s in rows], dtype=np.float64)
        self.acc_wpp = acc_w * pp
        self.cpu_wpp = np.array([s[4] for s in rows], dtype=np.float64) * pp
        self.east = np.array([s[1].region is Region.EAST for s in rows], dtype=np.bool_)
        self.row = np.full(n, -1, dtype=np.intp)
        self.row[[s[0] for s in rows]] = np.arange(len(rows), dtype=np.intp)
        self.mask = self.row >= 0
        for a in (self.acc_wpp, self.cpu_wpp, self.east, self.row, self.mask):
            a.flags.writeable = False  # shared by every thread's decisions
        self.has_east, self.has_west = bool(self.east.any()), not bool(self.east.all())


Floats = NDArray[np.float64]
Flags = NDArray[np.bool_]
Objects = NDArray[np.object_]

_ALIVE, _FREE, _FREE_CPUS = attrgetter("alive"), attrgetter("free"), attrgetter("free_cpus")
_FREE_MEMORY_GB, _UTILISATION = attrgetter("free_memory_gb"), attrgetter("utilisation")
_MISSING = DCCapacity({}, 0.0, 0.0, 0.0, alive=False)  # a DC the snapshot does not name: unavailable
_SNAPSHOTS = 32  # capacity snapshots whose columns are kept (by id() of their mapping)


A = TypeVar("A", bound=NDArray[Any])


def _frozen(a: A) -> A:
    a.flags.writeable = False  # shared by every thread's decisions
    return a


def _objects(items: Sequence[object]) -> Objects:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return _frozen(out)


class PoolColumns:
    """Per accelerator request, one entry per DC (inventory order): ``none`` marks DCs without a
    compatible pool and ``none_why`` holds their rejection; slot ``j`` is each DC's ``j``-th compatible
    pool (least power first): ``model[j]`` its row in :class:`CapacityColumns` ``free`` (the last row,
    all NaN, where the DC has fewer pools) and ``watts[j]`` its power draw."""

    __slots__ = ("none", "none_why", "model", "watts")

    def __init__(self, pools: PoolRow, why: tuple[Rejection | None, ...], models: dict[str, int]) -> None:
        k = max((len(p) for p in pools), default=0)
        self.none: Flags = _frozen(np.array([not p for p in pools], dtype=np.bool_))
        self.none_why = _objects(list(why))
        self.model = tuple(_frozen(np.array([models[p[j].model] if j < len(p) else len(models) for p in pools],
                                            dtype=np.intp)) for j in range(k))
        self.watts = tuple(_frozen(np.array([p[j].watts if j < len(p) else math.nan for p in pools],
                                            dtype=np.float64)) for j in range(k))


class CapacityColumns:
    """A capacity snapshot as columns, one entry per DC (inventory order); a DC the snapshot does not
    name reads dead. ``free`` has one row per accelerator model of the network and a last row of NaN;
    ``utilisation_values`` holds the snapshot's own utilisation objects (for rejections to carry);
    ``held`` the snapshot's DCCapacity per DC."""

    __slots__ = ("held", "alive", "free", "free_cpus", "free_memory_gb", "utilisation", "_values",
                 "_fits", "_base")

    def __init__(self, held: tuple[DCCapacity, ...], alive: Flags, free: Floats, free_cpus: Floats,
                 free_memory_gb: Floats, utilisation: Floats) -> None:
        self.held = held
        self.alive = _frozen(alive)
        self.free = _frozen(free)
        self.free_cpus = _frozen(free_cpus)
        self.free_memory_gb = _frozen(free_memory_gb)
        self.utilisation = _frozen(utilisation)
        self._values: Objects | None = None
        self._fits: dict[tuple[int, int], tuple[Flags, Floats]] = {}
        # Columns updated from others: those columns' fits and the DCs that changed (no chain kept).
        self._base: tuple[dict[tuple[int, int], tuple[Flags, Floats]], NDArray[np.intp]] | None = None

    @property
    def utilisation_values(self) -> Objects:
        """The snapshot's own utilisation objects, per DC (built on first read: the explanation's)."""
        if self._values is None:
            self._values = _objects(list(map(_UTILISATION, self.held)))
        return self._values

    @classmethod
    def of(cls, held: tuple[DCCapacity, ...], models: tuple[str, ...]) -> CapacityColumns:
        """The columns of ``held`` (one DCCapacity per DC, inventory order)."""
        n = len(held)
        free = np.full((len(models) + 1, n), math.nan)
        frees = list(map(_FREE, held))
        for row, m in enumerate(models):
            free[row] = [f.get(m, 0) for f in frees]
        return cls(held, np.array(list(map(_ALIVE, held)), dtype=np.bool_), free,
                   np.array(list(map(_FREE_CPUS, held)), dtype=np.float64),
                   np.array(list(map(_FREE_MEMORY_GB, held)), dtype=np.float64),
                   np.array(list(map(_UTILISATION, held)), dtype=np.float64))

    def changed(self, held: tuple[DCCapacity, ...], at: Sequence[int], models: tuple[str, ...]) -> CapacityColumns:
        """These columns with the DCs at ``at`` read from ``held`` (a snapshot that differs only there)."""
        alive, free, cpus, mem = self.alive.copy(), self.free.copy(), self.free_cpus.copy(), self.free_memory_gb.copy()
        util = self.utilisation.copy()
        where = np.array(at, dtype=np.intp)
        if len(at) <= 4:  # the common case: a DC or two (element by element is cheaper than by index arrays)
            for i in at:
                c = held[i]
                alive[i], cpus[i], mem[i], util[i] = c.alive, c.free_cpus, c.free_memory_gb, c.utilisation
                f = c.free
                for row, m in enumerate(models):
                    free[row, i] = f.get(m, 0)
        else:
            now = [held[i] for i in at]
            alive[where] = list(map(_ALIVE, now))
            cpus[where] = list(map(_FREE_CPUS, now))
            mem[where] = list(map(_FREE_MEMORY_GB, now))
            util[where] = list(map(_UTILISATION, now))
            frees = list(map(_FREE, now))
            for row, m in enumerate(models):
                free[row, where] = [f.get(m, 0) for f in frees]
        out = CapacityColumns(held, alive, free, cpus, mem, util)
        out._base = (self._fits, where)
        return out

    def _fit_at(self, pools: PoolColumns, count: int, at: NDArray[np.intp]) -> tuple[Flags, Floats]:
        """:meth:`fit` for the DCs at ``at``."""
        if len(at) <= 4:  # a DC or two: element by element (the same comparisons and products)
            few = at.tolist()
            fit_few, kw_few = [False] * len(few), [math.nan] * len(few)
            for k, i in enumerate(few):
                for model, watts in zip(pools.model, pools.watts, strict=True):  # least power first
                    if self.free[model[i], i] >= count:
                        fit_few[k], kw_few[k] = True, watts[i] * count
                        break
            return np.array(fit_few, dtype=np.bool_), np.array(kw_few, dtype=np.float64)
        fits = np.zeros(len(at), dtype=np.bool_)
        kw = np.full(len(at), math.nan)
        for model, watts in zip(reversed(pools.model), reversed(pools.watts), strict=True):
            ok = self.free[model[at], at] >= count  # NaN (no such pool) never fits
            fits |= ok
            kw = np.where(ok, watts[at] * count, kw)
        return fits, kw

    def fit(self, pools: PoolColumns, count: int) -> tuple[Flags, Floats]:
        """Per DC: has a compatible pool with ``count`` free, and that pool's ``watts x count``
        (the first such pool, least power first, as the filter takes it; NaN where none).
        Memoised per request for the snapshot's life."""
        key = (id(pools), count)  # PoolColumns live as long as their NetworkTables
        got = self._fits.get(key)
        if got is None:
            base = self._base
            had = None if base is None else base[0].get(key)
            if had is not None and base is not None:  # the columns updated from: patch the DCs that changed
                fits, kw = had[0].copy(), had[1].copy()
                fits[base[1]], kw[base[1]] = self._fit_at(pools, count, base[1])
            else:
                fits, kw = self._fit_at(pools, count, np.arange(len(self.alive)))
            if len(self._fits) >= 256:
                self._fits.clear()
            got = self._fits[key] = (_frozen(fits), _frozen(kw))
        return got


# A capacity snapshot's DC ids and entries, its columns, and each entry's inventory index (-1: none).
Snapshot = tuple[tuple[str, ...], tuple[DCCapacity, ...], CapacityColumns, tuple[int, ...]]


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
        w = network.weights
        # The pruned search is exact only when every cost input is finite and non-negative and
        # the fill bonus is at most (a hair under) the energy cost.
        self.prunable = 0.0 <= w.fill_bonus <= 0.999 and finite_non_negative(w.hour_value_cny) and all(
            finite_non_negative(d.pue) and finite_non_negative(d.price_cny_kwh)
            and finite_non_negative(d.cpu_watts) and finite_non_negative(d.utilisation_target)
            and d.utilisation_target > 0.0 and all(finite_non_negative(p.watts) for p in d.pools)
            for d in self.dcs)
        self.large = len(self.dcs) >= PRUNE_MIN_DCS
        # Columns (numpy, inventory order) for the explanation of large networks.
        self.models = tuple(sorted({p.model for d in self.dcs for p in d.pools}))
        self.ids_column = _objects(list(self.ids))
        self.unavailable_column = _objects(list(self.unavailable))
        self.cpu_watts = _frozen(np.array([d.cpu_watts for d in self.dcs], dtype=np.float64))
        self.pue = _frozen(np.array([d.pue for d in self.dcs], dtype=np.float64))
        self.price = _frozen(np.array([d.price_cny_kwh for d in self.dcs], dtype=np.float64))
        self.target = _frozen(np.array([d.utilisation_target for d in self.dcs], dtype=np.float64))
        self.pp = _frozen(self.pue * self.price)  # PUE x price, and with CPU watts: the pruned search's bound
        self.cpu_wpp = _frozen(self.cpu_watts * self.pp)
        self.east = _frozen(np.array([d.region is Region.EAST for d in self.dcs], dtype=np.bool_))
        self._late: dict[tuple[str | None, float | None], tuple[Flags, Objects]] = {}
        self._pool_columns: dict[tuple[Family, str | None], PoolColumns] = {}
        self._snapshot: Snapshot | None = None  # the last snapshot's columns
        self._snapshots: dict[int, Snapshot] = {}  # recent ones' by id() of their mapping
        self._index = {dc_id: i for i, dc_id in enumerate(self.ids)}
        # Per eligibility limit (a tier's bound less its guard band): how a latency rejection names it.
        self._guard: dict[float, str] = {}
        for tier in network.tiers.values():
            if tier.max_rtt_ms is not None and tier.limit_ms is not None:
                why = (f" ({tier.max_rtt_ms:g} ms bound less {tier.guard_band_ms:g} ms guard band)"
                       if tier.guard_band_ms else "")
                self._guard[tier.limit_ms] = why if self._guard.get(tier.limit_ms, why) == why else ""
        self._sites: dict[tuple[str | None, float | None], tuple[tuple[Site, ...], tuple[Ranked, ...]]] = {}
        self._pools: dict[tuple[Family, str | None], tuple[PoolRow, tuple[Rejection | None, ...]]] = {}
        self._rows: dict[tuple[str | None, float | None, Family, str | None],
                         tuple[tuple[Row, ...], tuple[Ranked, ...]]] = {}
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
                    why = f"RTT {r:.1f} ms to {origin} > {bound:g} ms{self._guard.get(bound, '')}"
                    late.append((i, Rejection(d.id, Reason.LATENCY, why)))
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

    def rows(self, spec: WorkloadSpec, bound: float | None) -> tuple[tuple[Row, ...], tuple[Ranked, ...]]:
        """:meth:`sites` with what the spec's accelerator request reads of each: its compatible pools
        (None for a CPU-only spec) and utilisation target; and the latency rejections of the rest."""
        acc = spec.accelerator
        key = (spec.origin, bound, acc.family, acc.model)
        got = self._rows.get(key)
        if got is None:
            sites, late = self.sites(spec.origin, bound)
            cpu_only = acc.family is Family.CPU
            all_pools, why = ((), ()) if cpu_only else self.pools(spec)
            got = self._rows[key] = (tuple(
                (*s, None, s[1].utilisation_target, None) if cpu_only else
                (*s, all_pools[s[0]], s[1].utilisation_target, why[s[0]]) for s in sites), late)
        return got

    def bound(self, spec: WorkloadSpec, latency_bound: float | None) -> PruneBound:
        """The DCs a spec may use before capacity is read (within the latency bound, with a
        compatible pool), with the per-DC factors of the lower bound on their westflow score."""
        acc = spec.accelerator
        key = (spec.origin, latency_bound, acc.family, acc.model)
        got = self._bounds.get(key)
        if got is None:
            rows, _ = self.rows(spec, latency_bound)
            got = self._bounds[key] = PruneBound(tuple(r for r in rows if r[7] is None or r[7]), len(self.dcs))
        return got

    def late(self, origin: str | None, bound: float | None) -> tuple[Flags, Objects]:
        """Per DC: beyond ``bound`` of ``origin``, and that latency rejection (None where within)."""
        key = (origin, bound)
        got = self._late.get(key)
        if got is None:
            why: list[Rejection | None] = [None] * len(self.dcs)
            for i, r in self.sites(origin, bound)[1]:
                why[i] = r
            got = self._late[key] = (_frozen(np.array([r is not None for r in why], dtype=np.bool_)),
                                     _objects(why))
        return got

    def pool_columns(self, spec: WorkloadSpec) -> PoolColumns:
        """:meth:`pools` as columns (for an accelerator request; not for CPU-only specs)."""
        key = (spec.accelerator.family, spec.accelerator.model)
        got = self._pool_columns.get(key)
        if got is None:
            pools, why = self.pools(spec)
            got = self._pool_columns[key] = PoolColumns(pools, why, {m: i for i, m in enumerate(self.models)})
        return got

    def capacity_columns(self, caps: Capacity) -> CapacityColumns:
        """``caps`` as columns. Recent snapshots' are kept: reused while ``caps`` names the same
        :class:`~westflow.capacity.DCCapacity` objects (or equal ones) in the same order, and
        updated where a few DCs changed (a snapshot is a value: placement already reads it after
        the decision, for the explanation). The columns are found by the mapping's identity (a
        caller that keeps several snapshots, changing each in place, as the admission cycle's views
        do) or else are the last ones built; either is checked entry by entry against ``caps``."""
        return self.snapshot(caps)[2]

    def snapshot(self, caps: Capacity) -> Snapshot:
        """``caps`` as read now: its DC ids and entries (tuples), their columns (see
        :meth:`capacity_columns`) and each entry's inventory index (-1: none)."""
        keys, values = tuple(caps), tuple(caps.values())
        seen = self._snapshots
        last = self._snapshot
        mine = seen.get(id(caps), last)
        got = self._columns_from(mine, keys, values)
        if got is None and mine is not last:
            got = self._columns_from(last, keys, values)
        if got is None:
            cols = CapacityColumns.of(tuple(map(caps.get, self.ids, itertools.repeat(_MISSING))), self.models)
            got = (keys, values, cols, tuple(self._index.get(k, -1) for k in keys))
        if len(seen) >= _SNAPSHOTS:
            seen = self._snapshots = {}  # (replaced, not cleared: another thread may be reading it)
        seen[id(caps)] = self._snapshot = got
        return got

    def _columns_from(self, old: Snapshot | None, keys: tuple[str, ...],
                      values: tuple[DCCapacity, ...]) -> Snapshot | None:
        """The snapshot ``(keys, values)`` from ``old``'s columns: the same, or updated where a few
        DCs changed; None if it names other DCs (or in another order) or too many changed."""
        if old is None or keys != old[0]:
            return None
        if values == old[1]:
            return old
        # The same DCs, named in the same order: find the entries that changed.
        changed = _differ(values, old[1])
        if len(changed) > len(self.ids) // 2:
            return None
        held, at = list(old[2].held), []
        for k in changed:
            i = old[3][k]
            if i >= 0:  # a name outside the inventory is not read
                held[i] = values[k]
                at.append(i)
        return keys, values, old[2].changed(tuple(held), at, self.models), old[3]


def _differ(a: tuple[object, ...], b: tuple[object, ...]) -> list[int]:
    """The positions where ``a`` and ``b`` (of one length) hold neither the same object nor equal ones,
    in order. Runs of 64 that compare equal (in C, the same object first) are skipped whole: a few
    changes among many entries cost a few comparisons of slices."""
    out: list[int] = []
    n = len(a)
    for lo in range(0, n, 64):
        if a[lo:lo + 64] != b[lo:lo + 64]:
            out.extend(i for i in range(lo, min(lo + 64, n)) if not (a[i] is b[i] or a[i] == b[i]))
    return out


@functools.lru_cache(maxsize=32)
def tables_for(network: Network) -> NetworkTables:
    """The tables of ``network`` (memoised: a network is frozen)."""
    return NetworkTables(network)
