"""Preemption's search: which held work an ask that failed on capacity may displace, and where.

:class:`VictimIndex` holds the held rows as the search reads them (per DC, buckets of (tenant,
class) with bounds on what they hold); :class:`Victims` is one cycle's search over it (the index
is never changed: the DCs a cycle picks victims in get copies). The rules are
:mod:`westflow.admission_cycle`'s (step 4, *preempt*); the cycle calls :meth:`Victims.choose`.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from westflow.admission_types import EPS, Blocks, Held, Pool, Preempt, Try
from westflow.capacity import DCCapacity
from westflow.tenants import CPUS, MEMORY_GB, Ledger, Tenants, charges

__all__ = ["VictimIndex", "Victims", "CycleView"]


class CycleView(Protocol):
    """What the search reads of the cycle deciding: capacity left, DC regions, quota and use."""

    free: dict[str, DCCapacity]
    region: dict[str, str]

    def quota_why(self, blocks: Blocks, model: str | None, region: str) -> str: ...

    def use(self, t: Try, pool: Pool) -> dict[str, float]: ...


def _rows_for(need: float, per_row: float) -> int:
    """At least how many rows of at most ``per_row`` each cover ``need``."""
    if need <= EPS:
        return 0
    return math.ceil(need / per_row - EPS) if per_row > 0 else 1 << 30


def _victim_order(r: _Row) -> tuple[int, float, str]:
    """Lowest class first, then the newest (least work lost), then by key."""
    return (r.value, -r.held.admitted_at, r.held.key)


def _ordered(buckets: Sequence[_Bucket]) -> Iterable[_Row]:
    """The rows of ``buckets`` in victim order (each bucket sorted once, then merged lazily: a pick
    usually reads only the first few)."""
    for b in buckets:
        if not b.ordered:
            b.rows.sort(key=_victim_order)
            b.ordered = True
    return heapq.merge(*(b.rows for b in buckets), key=_victim_order)


class _Row(NamedTuple):
    """A held row as preemption reads it."""

    held: Held
    value: int  # its class's value


class _Bucket:
    """The rows of one (DC, tenant, class), and what those not yet chosen hold (a bound read before
    any row is: most asks find too little to preempt, and learn it here). ``least``/``most`` are exact
    for the rows it was built with; a row taken out by :meth:`VictimIndex.remove` marks them stale
    (recomputed on next read), one a cycle picks leaves them as they were (bounds for that cycle)."""

    __slots__ = ("tenant", "cohort", "value", "preemptible", "rows", "ordered", "acc", "_least", "_most", "cpus",
                 "memory_gb", "stale")

    def __init__(self, tenant: str, cohort: str | None, value: int, preemptible: bool) -> None:
        self.tenant, self.cohort, self.value, self.preemptible = tenant, cohort, value, preemptible
        self.rows: list[_Row] = []
        self.ordered = False  # rows sorted in victim order (on first need)
        self.acc: dict[str, float] = {}
        self._least: dict[str, float] = {}  # per model, the fewest accelerators one row holds
        self._most: dict[str | None, float] = {}  # per model (None: CPUs), the most one row holds
        self.cpus = self.memory_gb = 0.0
        self.stale = False

    def count(self, h: Held, sign: int = 1) -> None:
        r = h.resources
        for m, n in r.accelerators.items():
            self.acc[m] = self.acc.get(m, 0.0) + sign * n
        self.cpus += sign * r.cpus
        self.memory_gb += sign * r.memory_gb
        if sign > 0 and not self.stale:
            self._bounds(h)

    def _bounds(self, h: Held) -> None:
        r = h.resources
        for m, n in r.accelerators.items():
            self._least[m] = min(self._least.get(m, math.inf), n)
            self._most[m] = max(self._most.get(m, 0.0), n)
        self._most[None] = max(self._most.get(None, 0.0), r.cpus)
        self._most[MEMORY_GB] = max(self._most.get(MEMORY_GB, 0.0), r.memory_gb)

    def _fresh(self) -> None:
        if self.stale:
            self.stale = False
            self._least, self._most = {}, {}
            for r in self.rows:
                self._bounds(r.held)

    @property
    def least(self) -> dict[str, float]:
        self._fresh()
        return self._least

    @property
    def most(self) -> dict[str | None, float]:
        self._fresh()
        return self._most

    def clone(self) -> _Bucket:
        """A copy a cycle may change (the index's buckets are kept across cycles)."""
        self._fresh()
        b = _Bucket(self.tenant, self.cohort, self.value, self.preemptible)
        b.rows, b.ordered, b.acc = list(self.rows), self.ordered, dict(self.acc)
        b._least, b._most, b.cpus, b.memory_gb = self._least, self._most, self.cpus, self.memory_gb
        return b


class VictimIndex:
    """Held rows as preemption reads them: per DC, buckets of (tenant, class) with their bounds; rows
    already preempting apart. A cycle builds one from ``held`` when it first looks for victims; a caller
    that keeps its held rows (the simulator) may keep one too, updated by :meth:`add` and :meth:`remove`
    as rows come and go, and pass it as the cycle's ``victims`` (a cycle never changes it)."""

    def __init__(self, tenants: Tenants, held: Iterable[Held] = ()) -> None:
        self.tenants = tenants
        self.buckets: dict[str, dict[tuple[str, str], _Bucket]] = {}
        self.bucket_of: dict[str, _Bucket] = {}
        self.preempting: dict[str, Held] = {}
        self._most: dict[str, dict[str | None, float]] = {}
        for h in held:
            self.add(h)

    def add(self, h: Held) -> None:
        if h.preempting:
            self.preempting[h.key] = h
            return
        here = self.buckets.setdefault(h.data_center, {})
        b = here.get((h.tenant, h.priority_class))
        if b is None:
            pc, t = self.tenants.priority_classes.get(h.priority_class), self.tenants.tenants.get(h.tenant)
            b = here[(h.tenant, h.priority_class)] = _Bucket(
                h.tenant, t.cohort if t is not None else None, pc.value if pc is not None else 0,
                pc is not None and pc.preemptible)
        b.rows.append(_Row(h, b.value))
        b.ordered = False
        b.count(h)
        self.bucket_of[h.key] = b
        self._most.pop(h.data_center, None)

    def remove(self, key: str) -> None:
        if self.preempting.pop(key, None) is not None:
            return
        b = self.bucket_of.pop(key, None)
        if b is None:
            return
        i = next(i for i, r in enumerate(b.rows) if r.held.key == key)
        h = b.rows.pop(i).held
        b.count(h, -1)
        b.stale = True
        dc = h.data_center
        if not b.rows:
            here = self.buckets[dc]
            del here[(h.tenant, h.priority_class)]
            if not here:
                del self.buckets[dc]
        self._most.pop(dc, None)

    def most(self, dc: str) -> dict[str | None, float]:
        """Per model (None: CPUs), the most one row of ``dc`` holds."""
        got = self._most.get(dc)
        if got is None:
            got = {}
            for b in self.buckets.get(dc, {}).values():
                for k, n in b.most.items():
                    got[k] = max(got.get(k, 0.0), n)
            self._most[dc] = got
        return got


_Bound = tuple[float, float, float, list[_Bucket], list[_Bucket]]


class Victims:
    """The held work preemption may pick from (a :class:`VictimIndex`, never changed: the DCs where this
    cycle picks victims get copies of their buckets), and what each tenant gives back this cycle (its
    rows already preempting, and the victims picked so far)."""

    def __init__(self, index: VictimIndex, ledger: Ledger) -> None:
        self.ledger = ledger
        self.index = index
        self.taken: dict[str, dict[str, float]] = {}
        # per tenant, (family, model) -> (its ledger version, :meth:`_room` then); dropped when it gives back
        self.rooms: dict[str, dict[tuple[str | None, str], tuple[int, float]]] = {}
        self.buckets: dict[str, dict[tuple[str, str], _Bucket]] = dict(index.buckets)
        self.copied: dict[str, _Bucket] = {}  # key -> its bucket's copy, in the DCs this cycle picked in
        for h in index.preempting.values():
            self._give(h.tenant, charges(h.family, h.resources))
        self.most: dict[str, dict[str | None, float]] = {}  # per DC, as the cycle began (bounds)
        self.budgets: dict[str, dict[str, float] | None] = {}
        self.borrowed: dict[str, tuple[int, dict[str, float]]] = {}  # tenant -> (ledger version, borrowed)
        # per DC, (model, tenant, class value, reclaim) -> what such an ask may preempt there at most.
        # Kept for the cycle (dropped for a DC whose victims are picked): borrowing that grows within
        # the cycle is seen by the next one.
        self.bounds: dict[str, dict[tuple[str | None, str, int, bool], _Bound]] = {}

    def _most(self, dc: str) -> dict[str | None, float]:
        got = self.most.get(dc)
        if got is None:
            got = self.most[dc] = self.index.most(dc)
        return got

    def _bucket(self, key: str) -> _Bucket:
        b = self.copied.get(key)
        return b if b is not None else self.index.bucket_of[key]

    def _own(self, dc: str) -> None:
        """Copy ``dc``'s buckets before this cycle changes them (once)."""
        if self.buckets.get(dc) is not self.index.buckets.get(dc):
            return
        here = {k: b.clone() for k, b in self.buckets[dc].items()}
        self.buckets[dc] = here
        for b in here.values():
            for r in b.rows:
                self.copied[r.held.key] = b

    def _give(self, tenant: str, use: dict[str, float]) -> None:
        self.rooms.pop(tenant, None)  # (what it has left to give back changed)
        mine = self.taken.setdefault(tenant, {})
        for k, n in use.items():
            mine[k] = mine.get(k, 0.0) + n

    def _budget(self, h: Held) -> dict[str, float] | None:
        """What taking ``h`` (another tenant's) counts against what its tenant borrows: its accelerators
        on the dimensions the tenant's quota names (its CPUs for CPU-only work); None: not bounded
        (a tenant no longer configured: all it holds is borrowed)."""
        if h.key in self.budgets:
            return self.budgets[h.key]
        terms = self.ledger.terms.get(h.tenant)
        got: dict[str, float] | None = None
        if terms is not None:
            use = charges(h.family, h.resources)
            got = {k: n for k, n in use.items() if k in terms.named and k not in (CPUS, MEMORY_GB)} \
                if h.resources.accelerators else {CPUS: use[CPUS]}
        self.budgets[h.key] = got
        return got

    def _left(self, tenant: str) -> tuple[dict[str, float], dict[str, float]]:
        """What ``tenant`` borrows now, and what it has given back this cycle."""
        version = self.ledger.version.get(tenant, 0)
        got = self.borrowed.get(tenant)
        if got is None or got[0] != version:
            got = self.borrowed[tenant] = (version, self.ledger.borrowed(tenant))
        return got[1], self.taken.get(tenant, {})

    def _room(self, tenant: str, family: str | None, model: str | None) -> float:
        """At most how many ``model`` accelerators ``tenant``'s work can give back before it has given
        back all it borrows (infinite where not bounded)."""
        terms = self.ledger.terms.get(tenant)
        if terms is None or model is None:
            return math.inf
        version = self.ledger.version.get(tenant, 0)
        mine = self.rooms.get(tenant)
        if mine is None:
            mine = self.rooms[tenant] = {}
        got = mine.get((family, model))
        if got is None or got[0] != version:
            borrowed, taken = self._left(tenant)
            dims = [k for k in (family, model) if k in terms.named]
            got = mine[(family, model)] = (
                version, min([math.inf, *(borrowed.get(k, 0.0) - taken.get(k, 0.0) for k in dims)]))
        return got[1]

    def _bound(self, buckets: dict[tuple[str, str], _Bucket], pool: Pool, tenant: str, value: int,
               cohort: str | None, reclaim: bool, rooms: dict[tuple[str, str | None], float]) -> _Bound:
        """What an ask (of ``tenant``, class ``value``, on ``pool``) may preempt in one DC, at most:
        accelerators of the pool's model, CPUs, memory; and the buckets it may take from."""
        model = pool[1] if pool else None
        mine: list[_Bucket] = []
        theirs: list[_Bucket] = []
        acc = cpus = mem = 0.0
        for b in buckets.values():
            if not b.rows:
                continue
            lower = b.preemptible and b.value < value
            if b.tenant == tenant:
                if not lower:
                    continue
                mine.append(b)
                acc += b.acc.get(model, 0.0) if model else 0.0
            elif lower or (reclaim and b.value <= value and b.cohort == cohort):
                if model is not None:  # a tenant with nothing left of what it borrows gives nothing
                    room = rooms.get((b.tenant, model))  # (this search's; :meth:`_room` keeps them longer)
                    if room is None:
                        room = rooms[(b.tenant, model)] = self._room(b.tenant, pool[0] if pool else None, model)
                    if room < b.least.get(model, math.inf) - EPS:
                        continue
                    acc += min(room, b.acc.get(model, 0.0))  # (a row is taken whole)
                theirs.append(b)
            else:
                continue
            cpus += b.cpus
            mem += b.memory_gb
        return acc, cpus, mem, theirs, mine

    def choose(self, cycle: CycleView, t: Try, dcs: Sequence[str], blocks: Blocks) -> Preempt | None:
        """The victims in the DC needing the fewest; None if no DC has enough this ask may preempt. Each
        (DC, pool) gets a lower bound on its victims first (what it could give at most, the largest row
        there); they are tried by (bound, order in ``dcs``) until none left could need fewer."""
        cohort = self.ledger.terms[t.tenant].cohort
        spec, value, tenant = t.ask.spec, t.value, t.tenant
        rooms: dict[tuple[str, str | None], float] = {}
        reclaims: dict[Pool, bool] = {}  # per pool: the ask is within its tenant's nominal quota there
        options: list[tuple[int, int, str, str | None, DCCapacity, list[_Bucket], list[_Bucket]]] = []
        count, cpus_asked, mem_asked = spec.accelerator.count, spec.cpus, spec.memory_gb
        free_of, buckets_of, region_of, bounds = cycle.free, self.buckets, cycle.region, self.bounds
        for rank, dc in enumerate(dcs):
            cap, buckets = free_of.get(dc), buckets_of.get(dc)
            if cap is None or not buckets:
                continue
            region = region_of.get(dc, "")
            short_cpus, short_mem = cpus_asked - cap.free_cpus, mem_asked - cap.free_memory_gb
            most = self._most(dc)
            for pool in t.pools:
                model = pool[1] if pool else None
                if model is None:
                    short = 0.0
                else:
                    have = cap.free.get(model)
                    if have is None:
                        continue
                    short = count - have
                if blocks and cycle.quota_why(blocks, model, region):
                    continue
                reclaim = reclaims.get(pool)
                if reclaim is None:
                    reclaim = reclaims[pool] = cohort is not None and self.ledger.within_nominal(
                        tenant, cycle.use(t, pool))
                memo = (model, tenant, value, reclaim)
                here = bounds.get(dc)
                if here is None:
                    here = bounds[dc] = {}
                got = here.get(memo)
                if got is None:
                    got = here[memo] = self._bound(buckets, pool, tenant, value, cohort, reclaim, rooms)
                acc, cpus, mem, theirs, mine = got
                if acc < short - EPS or cpus < short_cpus - EPS or mem < short_mem - EPS:
                    continue  # not enough to preempt here, whichever rows
                least = 1
                if short > EPS:
                    least = max(least, _rows_for(short, most.get(model, 0.0)))
                if short_cpus > EPS:
                    least = max(least, _rows_for(short_cpus, most.get(None, 0.0)))
                if short_mem > EPS:
                    least = max(least, _rows_for(short_mem, most.get(MEMORY_GB, 0.0)))
                options.append((least, rank, dc, model, cap, theirs, mine))
        options.sort(key=lambda o: (o[0], o[1]))
        afters: dict[str | None, float] = {}  # per model: the ask's tenant's weighted share once admitted
        best: tuple[int, str, list[Held]] | None = None
        for least, _, dc, model, cap, theirs, mine in options:
            if best is not None and least >= best[0]:
                break  # no DC left can need fewer victims
            after = afters.get(model)
            if after is None:
                pool = next(p for p in t.pools if (p[1] if p else None) == model)
                after = afters[model] = self.ledger.share(tenant, cycle.use(t, pool))
            picked = self._fit(cap, model, t, itertools.chain(_ordered(theirs), _ordered(mine)), after)
            if picked is not None and (best is None or len(picked) < best[0]):
                best = (len(picked), dc, picked)
        if best is None:
            return None
        _, dc, picked = best
        self.bounds.pop(dc, None)  # what is left there changed
        self._own(dc)
        for h in picked:
            b = self.copied[h.key]
            b.count(h, -1)
            b.rows = [r for r in b.rows if r.held.key != h.key]
            if h.tenant != tenant:
                self._give(h.tenant, self._budget(h) or {})
        whose = sorted({"own best-effort" if h.tenant == tenant else f"borrowed by {h.tenant}" for h in picked})
        return Preempt(t.ask.key, dc, tuple(h.key for h in picked),
                       f"{t.ask.priority_class} work preempts {len(picked)} workload(s) in {dc} "
                       f"({', '.join(whose)}): {', '.join(h.key for h in picked)}")

    def _fit(self, cap: DCCapacity, model: str | None, t: Try, cands: Iterable[_Row],
             after: float) -> list[Held] | None:
        """Victims (in ``cands`` order; another tenant's only within what it borrows, and, taken to
        reclaim, only while the ask's tenant would not end with a larger weighted share than the
        victim's (``after``: its share once the ask is admitted), as Kueue's fair sharing reclaims)
        whose release makes the ask fit ``cap`` on ``model``, those not needed put back; None if all
        would not do."""
        spec = t.ask.spec
        left = [spec.accelerator.count - cap.free.get(model, 0) if model else 0,
                spec.cpus - cap.free_cpus, spec.memory_gb - cap.free_memory_gb]

        def gives(h: Held) -> tuple[float, float, float]:
            r = h.resources
            return (r.accelerators.get(model, 0.0) if model else 0.0), r.cpus, r.memory_gb

        picked: list[Held] = []
        rooms: dict[str, dict[str, float]] = {}  # per other tenant, what it borrows and has not given back
        gone: dict[str, dict[str, float]] = {}  # per other tenant, minus what it gives back this cycle
        fair: set[str] = set()  # tenants reclaim has brought down to the ask's tenant's share
        for r in cands:
            if max(left) <= EPS:
                break
            h = r.held
            g = gives(h)
            if not ((left[0] > EPS and g[0] > 0) or (left[1] > EPS and g[1] > 0) or (left[2] > EPS and g[2] > 0)):
                continue  # it gives nothing the ask still lacks
            b = self._bucket(h.key)
            if h.tenant != t.tenant and not (b.preemptible and b.value < t.value):  # taken to reclaim
                if h.tenant in fair:
                    continue
                minus = gone.get(h.tenant)
                if minus is None:
                    minus = gone[h.tenant] = {k: -n for k, n in self.taken.get(h.tenant, {}).items()}
                use = {k: -n for k, n in charges(h.family, h.resources).items()}
                if after > self.ledger.share(h.tenant, minus, use) + EPS:
                    fair.add(h.tenant)  # (giving back more would only lower its share further)
                    continue
                for k, n in use.items():
                    minus[k] = minus.get(k, 0.0) + n
            budget = self._budget(h) if h.tenant != t.tenant else None
            if budget is not None:
                room = rooms.get(h.tenant)
                if room is None:
                    borrowed, taken = self._left(h.tenant)
                    room = rooms[h.tenant] = {k: v - taken.get(k, 0.0) for k, v in borrowed.items()}
                if any(room.get(k, 0.0) + EPS < n for k, n in budget.items()):
                    continue
                for k, n in budget.items():
                    room[k] = room.get(k, 0.0) - n
            picked.append(h)
            left = [left[0] - g[0], left[1] - g[1], left[2] - g[2]]
        if max(left) > EPS:
            return None
        for h in reversed(list(picked)):  # put back what is not needed: the last taken (oldest, own) first
            g = gives(h)
            if all(x + y <= EPS for x, y in zip(left, g, strict=True)):
                picked.remove(h)
                left = [x + y for x, y in zip(left, g, strict=True)]
        return picked
