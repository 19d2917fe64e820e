"""One admission cycle: which pending work to admit now, where, and whom to preempt for it.

Pure, and the only copy: the admission controller (:mod:`admission.controller`) runs it on the
durable queue and live capacity, the simulator (:mod:`westflow.simulator.engine`) on its own
clock. ``admission_cycle(pending, held, ...) -> CycleResult``, a pipeline of named steps:

1. **order** (:class:`_Order`): highest priority class first; then the tenant with the lowest
   dominant share (DRF against its nominal quota, over its weight; updated after each admission
   of the cycle: a heap whose stale entries are re-pushed when popped); then the most urgent:
   work with a ``deadline`` is due at its latest start (deadline - duration), other work at its
   submission (the oldest first); then the key. (Deadline-first within a class: in the simulator,
   the age order left 713 of 69,351 ITP jobs past their deadlines, mostly work submitted at midday
   behind work deferred to the valley band then; see docs/simulation.md.)
2. **quota** (:meth:`_Cycle._blocks`): each (region, accelerator model) the ask could use is
   checked against the tenant's quota (:class:`~westflow.tenants.Ledger`: nominal, borrowing
   within the cohort, region caps). If every one is out, the ask waits on ``quota`` without being
   placed; otherwise the DCs (or pools) that quota rules out are hidden from placement, a DC
   marked not alive with the quota's reason in ``DCCapacity.why`` (it reads in the placement's
   rejection table like any other reason).
3. **place**: ``policy.place(spec, network, view)``, the same ``place()`` as everywhere. The
   cycle subtracts what it admits from the capacity as it goes. A shape that failed on capacity
   is not placed again this cycle (capacity only shrinks within a cycle): its reasons are reused.
4. **preempt** (:meth:`_Cycle._preempt`), for an ask that failed on capacity (never on latency,
   accelerator, deadline or quota) and is not already ``awaiting_preemption``: in a DC that
   failed it on capacity, workloads it may displace are (a) *reclaim*: when the ask is within its
   tenant's nominal quota, other tenants' work (same cohort) of a class no higher, up to what those
   tenants borrow, and only while the ask's tenant would not end with a larger weighted share than
   the victim's (Kueue's fair-sharing guard: reclaim never undoes the weights); (b) *priority*:
   ``preemptible`` work of a lower class, of the ask's own tenant, or of others only up to what
   they borrow. Candidates in order: other tenants' (borrowed) first, then
   the lowest class, then the newest (least work lost); taken until the ask fits, then any not
   needed are put back. The DC needing the fewest victims wins (DCs are tried in order of a lower
   bound on their victims, then in the order of the rejection table; the first to need the fewest
   wins). Rows already ``preempting`` are never victims again and still hold their capacity. The
   preemptor stays pending (in ``waiting``, its first reason naming the victims) until they release.

**Deferral**: a placement whose ``start_at`` is after the cycle's ``now`` (a batch step with a
deadline, deferred to cheaper hours by the westflow policy, or one with a later ``start_after``)
is not admitted: the ask waits with a ``DEFERRED`` reason naming its start, and is placed again by
later cycles; once its start has come the placement starts at once and it is admitted as any other.

Best effort: an ask that does not fit never blocks later ones. Every ask ends in exactly one of
``admitted`` and ``waiting``; a preemptor is in ``waiting`` and ``preempt``.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import operator
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from westflow import collector
from westflow.capacity import Capacity, DCCapacity, Resources
from westflow.errors import ConfigError, InfeasibleError, SpecError
from westflow.inventory import REALTIME, Family, Network
from westflow.placement import Placement, Policy, Reason
from westflow.placement.tables import tables_for
from westflow.spec import WorkloadSpec
from westflow.tenants import CPUS, MEMORY_GB, Ledger, Tenants, charges

__all__ = ["Ask", "Held", "Admit", "Wait", "Preempt", "CycleResult", "VictimIndex", "admission_cycle", "held_of",
           "default_priority_class", "held_per_dc", "ledger_of", "QUOTA", "CONFIG", "PREEMPTION", "DEFERRED"]

QUOTA, CONFIG, PREEMPTION, DEFERRED = "quota", "config", "preemption", "deferred"  # the non-DC keys of a Wait's reasons
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Ask:
    """One pending workload."""

    key: str
    spec: WorkloadSpec
    priority_class: str
    submitted_at: float
    exclude: frozenset[str] = frozenset()  # DCs it must not go to (failover)
    awaiting_preemption: bool = False  # victims already preempting for it: do not preempt more


@dataclass(frozen=True, slots=True)
class Held:
    """Admitted work holding capacity (``preempting``: asked to stop; it holds until it releases)."""

    key: str
    tenant: str
    priority_class: str
    data_center: str
    region: str
    family: str | None
    resources: Resources
    admitted_at: float
    preempting: bool = False


@dataclass(frozen=True, slots=True)
class Admit:
    key: str
    placement: Placement
    family: str | None
    borrowed: bool  # the admission puts its tenant over its nominal quota (it borrows from the cohort)


@dataclass(frozen=True, slots=True)
class Wait:
    key: str
    reasons: tuple[tuple[str, str], ...]  # (data center, or QUOTA / CONFIG / PREEMPTION / DEFERRED, reason text)
    start_at: float | None = None  # deferred: the placement's start (epoch s; its note is the DEFERRED reason)


@dataclass(frozen=True, slots=True)
class Preempt:
    key: str  # the preemptor
    data_center: str
    victims: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class CycleResult:
    admitted: tuple[Admit, ...]
    waiting: tuple[Wait, ...]
    preempt: tuple[Preempt, ...]


def default_priority_class(spec: WorkloadSpec) -> str:
    """The spec's priority class: its own, else ``realtime`` for tier realtime, else ``production``."""
    if spec.priority_class is not None:
        return spec.priority_class
    return "realtime" if spec.tier == REALTIME else "production"


_FAMILY_KEY: dict[Family, str | None] = {f: None if f is Family.CPU else f.value for f in Family}


def _family(p: Placement) -> str | None:
    return _FAMILY_KEY[p.family]


def _holds(p: Placement) -> Resources:
    """What a placement holds of its DC."""
    s = p.spec
    return Resources.of(p.accelerator_model, s.accelerator.count if p.accelerator_model else 0, s.cpus, s.memory_gb)


def held_of(p: Placement, key: str, tenant: str, priority_class: str, family: str | None,
            admitted_at: float) -> Held:
    """The :class:`Held` row of an admitted placement."""
    return Held(key, tenant, priority_class, p.data_center, p.region, family, _holds(p), admitted_at)


def held_per_dc(held: Iterable[Held]) -> dict[str, Resources]:
    """What ``held`` holds per DC (the ``held`` of :func:`westflow.capacity.after_holds`)."""
    out: dict[str, Resources] = {}
    for h in held:
        out[h.data_center] = out.get(h.data_center, Resources()).plus(h.resources)
    return out


def ledger_of(tenants: Tenants, held: Iterable[Held]) -> Ledger:
    """The tenants' use as ``held`` holds it (summed per tenant, region and family first: one
    :meth:`~westflow.tenants.Ledger.add` per group)."""
    acc: dict[tuple[str, str, str | None], dict[str, float]] = {}
    cpus: dict[tuple[str, str, str | None], float] = {}
    mem: dict[tuple[str, str, str | None], float] = {}
    for h in held:
        k = (h.tenant, h.region, h.family)
        mine = acc.get(k)
        if mine is None:
            mine, cpus[k], mem[k] = acc.setdefault(k, {}), 0.0, 0.0
        for m, n in h.resources.accelerators.items():
            mine[m] = mine.get(m, 0.0) + n
        cpus[k] += h.resources.cpus
        mem[k] += h.resources.memory_gb
    ledger = Ledger(tenants)
    for k, mine in acc.items():
        ledger.add(k[0], k[1], k[2], Resources(mine, cpus[k], mem[k]))
    return ledger


def admission_cycle(pending: Sequence[Ask], held: Sequence[Held], *, tenants: Tenants, network: Network,
                    capacity: Capacity, policy: Policy, ledger: Ledger | None = None,
                    now: float | None = None, victims: VictimIndex | None = None) -> CycleResult:
    """Admit what fits of ``pending`` in order, on ``capacity`` (free, already net of ``held``) and quota.

    ``ledger``: the tenants' use by ``held`` when the caller keeps it (the simulator does, instead
    of recounting every cycle); it is copied, never changed. ``now`` (epoch s): the cycle's clock,
    placing in time (``place(..., now=)``; None: the wall clock, for specs with times only).
    ``victims``: ``held`` as preemption reads it, when the caller keeps a :class:`VictimIndex` of it
    (the simulator); never changed. See the module doc for the rules.
    """
    with collector.paused():  # (it keeps ~10 objects per decision alive and makes no reference cycles)
        cycle = _Cycle(pending, held, tenants, network, capacity, policy,
                       ledger_of(tenants, held) if ledger is None else ledger.copy())
        cycle.now = now
        cycle.victim_index = victims
        return cycle.run()


# -- the cycle ------------------------------------------------------------------------------------

Shape = tuple[object, ...]
Pool = tuple[str, str] | None  # (family, model) an ask could run on; None: CPU only
Blocks = dict[tuple[str, str | None], str]  # (region or "*", model or None) -> why quota rules it out


@dataclass(slots=True)
class _Failed:
    """A shape that failed on capacity this cycle: its reasons, and the DCs that failed it on capacity."""

    reasons: tuple[tuple[str, str], ...]
    capacity_dcs: tuple[str, ...]


@dataclass(slots=True)
class _Try:
    """One ask being decided."""

    ask: Ask
    tenant: str
    value: int
    pools: tuple[Pool, ...]
    use: dict[Pool, dict[str, float]] = field(default_factory=dict)


def _urgency(ask: Ask) -> float:
    """When an ask is due (epoch s): the latest start that still meets its deadline; for work with no
    deadline, its submission (age). The earlier first, within a class and fair share."""
    d = ask.spec.deadline
    return ask.submitted_at if d is None else d.timestamp() - ask.spec.duration_hours * 3600.0


class _Order:
    """The admission order: (-class value, dominant share, urgency, key), one heap entry per
    (tenant, class) group at a time; an entry whose share is stale is re-pushed when popped."""

    def __init__(self, asks: Sequence[tuple[Ask, str, int]], ledger: Ledger) -> None:
        groups: dict[tuple[str, str], list[tuple[float, str, Ask, str, int]]] = {}
        for ask, tenant, value in asks:
            groups.setdefault((tenant, ask.priority_class), []).append((_urgency(ask), ask.key, ask, tenant, value))
        self.groups = [sorted(g, key=_DUE) for g in groups.values()]
        self.ledger = ledger
        self.shares: dict[str, tuple[int, float]] = {}  # tenant -> (ledger version, its share then)
        self.heap: list[tuple[int, float, float, str, int, int, int]] = []
        for gid in range(len(self.groups)):
            self._push(gid, 0)

    def _push(self, gid: int, at: int) -> None:
        """The group's ``at``-th ask onto the heap (none past its end)."""
        group = self.groups[gid]
        if at < len(group):
            urgency, key, _, tenant, value = group[at]
            version, share = self._share(tenant)
            heapq.heappush(self.heap, (-value, share, urgency, key, version, gid, at))

    def _share(self, tenant: str) -> tuple[int, float]:
        """The tenant's ledger version and its dominant share at that version (read once per version)."""
        version = self.ledger.version.get(tenant, 0)
        got = self.shares.get(tenant)
        if got is None or got[0] != version:
            got = self.shares[tenant] = (version, self.ledger.share(tenant))
        return got

    def __iter__(self) -> _Order:
        return self

    def __next__(self) -> tuple[Ask, str, int]:
        heap, version_of = self.heap, self.ledger.version
        while heap:
            neg, _, urgency, key, version, gid, at = heap[0]
            tenant = self.groups[gid][at][3]
            if version != version_of.get(tenant, 0):  # its tenant's share changed: take its place again
                now, share = self._share(tenant)
                heapq.heapreplace(heap, (neg, share, urgency, key, now, gid, at))
                continue
            heapq.heappop(heap)
            self._push(gid, at + 1)
            _, _, ask, _, value = self.groups[gid][at]
            return ask, tenant, value
        raise StopIteration


_DUE = operator.itemgetter(0, 1)  # a group's order: (urgency, key)


class _Facts:
    """What a cycle reads of a network that does not change: per DC its region, size and inventory
    position; each model's family; memos of the DCs near a city and of the pools a request can use."""

    def __init__(self, network: Network) -> None:
        self.tables = tables_for(network)
        self.region = dict(zip(self.tables.ids, self.tables.region, strict=True))
        self.regions = tuple(sorted(set(self.tables.region)))
        self.family_of = {p.model: p.family.value for d in network.data_centers for p in d.pools}
        self.size = {d.id: (float(d.accelerator_total), float(d.cpus)) for d in network.data_centers}
        self.index = {dc: i for i, dc in enumerate(self.tables.ids)}
        self.near: dict[tuple[str | None, float | None], tuple[str, ...]] = {}
        self.near_set: dict[tuple[str | None, float], frozenset[str]] = {}
        self.pools_of: dict[tuple[Family, str | None], tuple[Pool, ...]] = {}


@functools.lru_cache(maxsize=8)
def _facts(network: Network) -> _Facts:
    return _Facts(network)


class _Cycle:
    def __init__(self, pending: Sequence[Ask], held: Sequence[Held], tenants: Tenants, network: Network,
                 capacity: Capacity, policy: Policy, ledger: Ledger) -> None:
        self.pending, self.held, self.tenants, self.network, self.policy = pending, held, tenants, network, policy
        self.ledger = ledger
        self.free: dict[str, DCCapacity] = dict(capacity)
        facts = _facts(network)
        self.tables, self.region, self.regions = facts.tables, facts.region, facts.regions
        self.family_of, self.size, self.index = facts.family_of, facts.size, facts.index
        self.near, self.near_set, self.pools_of = facts.near, facts.near_set, facts.pools_of
        self.failed: dict[Shape, _Failed] = {}
        # (DCs failed on capacity, tenant, family, model, class value) -> the (count, CPUs, memory) of asks
        # that found no victims there: one asking as much or more finds none either
        self.no_victims: dict[tuple[object, ...], list[tuple[int, float, float]]] = {}
        self.over_quota: dict[tuple[object, ...], str] = {}
        self.views: dict[Shape, tuple[int, dict[str, DCCapacity]]] = {}  # (len(changed) when built, view)
        self.changed: list[str] = []  # the DC of each admission, in order
        self.admitted: list[Admit] = []
        self.waiting: list[Wait] = []
        self.preempt: list[Preempt] = []
        self._victims: _Victims | None = None
        self.victim_index: VictimIndex | None = None
        self.now: float | None = None

    def run(self) -> CycleResult:
        classes, asks = self.tenants.priority_classes, []
        for ask in self.pending:
            tenant = ask.spec.tenant
            try:
                self.tenants.check(tenant, ask.priority_class)
            except ConfigError as exc:
                self.waiting.append(Wait(ask.key, ((CONFIG, str(exc)),)))
                continue
            asks.append((ask, tenant, classes[ask.priority_class].value))
        for ask, tenant, value in _Order(asks, self.ledger):
            self._decide(_Try(ask, tenant, value, self._pools(ask.spec)))
        return CycleResult(tuple(self.admitted), tuple(self.waiting), tuple(self.preempt))

    # -- the steps of one ask -------------------------------------------------------------------
    def _decide(self, t: _Try) -> None:
        ask, spec = t.ask, t.ask.spec
        acc = spec.accelerator
        need = (t.tenant, acc.family, acc.model, acc.count, spec.cpus, spec.memory_gb)
        whole = self.over_quota.get(need, "")
        if not whole:
            blocks, whole = self._blocks(t)
            if whole:  # use only grows within a cycle: the same need of this tenant is out of quota too
                self.over_quota[need] = whole
        if whole:
            self.waiting.append(Wait(ask.key, ((QUOTA, whole),)))
            return
        sig: frozenset[object] = frozenset(blocks.items())  # (a key: what quota rules out)
        key = (*_shape(spec), ask.exclude, sig)
        failed = self.failed.get(key)
        if failed is None:
            try:
                p = self.policy.place(spec, self.network, self._view(t, blocks, sig), now=self.now)
            except InfeasibleError as exc:
                failed = self.failed[key] = _Failed(
                    tuple((r.data_center, f"{r.reason.value}: {r.detail}") for r in exc.rejected),
                    tuple(r.data_center for r in exc.rejected if r.reason is Reason.CAPACITY))
            except SpecError as exc:  # a tier or origin this network does not know
                self.waiting.append(Wait(ask.key, ((CONFIG, str(exc)),)))
                return
            else:
                if p.start_at is not None and p.deferred(self.now if self.now is not None else time.time()):
                    self.waiting.append(Wait(ask.key, ((DEFERRED, p.start_note or "deferred"),
                                                       (p.data_center, f"starts at {p.start_at:.0f} (epoch s)")),
                                             p.start_at))
                    return
                self._admit(t, p)
                return
        reasons = failed.reasons
        if failed.capacity_dcs and ask.awaiting_preemption:
            reasons = ((PREEMPTION, "waiting for preempted work to release its capacity"), *reasons)
        elif failed.capacity_dcs:
            kind = (failed.capacity_dcs, t.tenant, acc.family, acc.model, t.value)
            size = (acc.count, spec.cpus, spec.memory_gb)
            known_none = self._none_for(kind, size)
            got = None if known_none else self._preempt(t, failed.capacity_dcs, blocks)
            if got is not None:
                self.preempt.append(got)
                reasons = ((PREEMPTION, got.reason), *reasons)
            elif not known_none:  # victims only grow scarcer within a cycle
                self.no_victims.setdefault(kind, []).append(size)
        self.waiting.append(Wait(ask.key, reasons))

    def _none_for(self, kind: tuple[object, ...], size: tuple[int, float, float]) -> bool:
        """Whether an ask of ``kind`` no smaller than one that found no victims this cycle (so finds none)."""
        count, cpus, mem = size
        for c, cp, m in self.no_victims.get(kind, ()):
            if c <= count and cp <= cpus and m <= mem:
                return True
        return False

    def _admit(self, t: _Try, p: Placement) -> None:
        held, fam = _holds(p), _family(p)
        borrowed = not self.ledger.within_nominal(t.tenant, self._use(t, (fam, p.accelerator_model) if fam and
                                                                      p.accelerator_model else None))
        self.ledger.add(t.tenant, p.region, fam, held)
        dc = p.data_center
        cap = self.free[dc]
        acc_total, cpu_total = self.size.get(dc, (0.0, 0.0))
        if acc_total:
            grew = held.accelerator_count / acc_total
        else:
            grew = held.cpus / cpu_total if cpu_total else 0.0
        free = dict(cap.free)
        for m, n in held.accelerators.items():
            free[m] = int(free.get(m, 0) - n)
        self.free[dc] = DCCapacity(free, cap.free_cpus - held.cpus, cap.free_memory_gb - held.memory_gb,
                                   min(1.0, cap.utilisation + grew), cap.alive, cap.why)
        self.changed.append(dc)
        self.admitted.append(Admit(t.ask.key, p, fam, borrowed))

    # -- quota ----------------------------------------------------------------------------------
    def _pools(self, spec: WorkloadSpec) -> tuple[Pool, ...]:
        """The (family, model) pairs of the network the spec's accelerator request can run on."""
        acc = spec.accelerator
        got = self.pools_of.get((acc.family, acc.model))
        if got is None:
            if acc.family is Family.CPU:
                got = (None,)
            else:
                got = tuple((f, m) for m, f in sorted(self.family_of.items())
                            if (acc.model is None or m == acc.model)
                            and (acc.family is Family.ANY or f == acc.family.value))
            self.pools_of[(acc.family, acc.model)] = got
        return got

    def _use(self, t: _Try, pool: Pool) -> dict[str, float]:
        """What the ask is charged on ``pool`` (:func:`~westflow.tenants.charges`)."""
        got = t.use.get(pool)
        if got is None:
            spec = t.ask.spec
            got = t.use[pool] = {CPUS: spec.cpus, MEMORY_GB: spec.memory_gb}
            if pool is not None:
                n = float(spec.accelerator.count)
                got[pool[1]] = n
                got[pool[0]] = n
        return got

    def _blocks(self, t: _Try) -> tuple[Blocks, str]:
        """What quota rules out for this ask: per (region or ``*``, model; None for CPU-only work) the
        reason; and, when that is every pool in every region, the reasons joined (it then waits on
        quota alone, without being placed). CPUs and memory are checked once, each family once."""
        ledger, tenant = self.ledger, t.tenant
        terms = ledger.terms[tenant]
        blocks: Blocks = {}
        self._scope_blocks(blocks, t, "*", partial(ledger.over, tenant), terms.named)
        for region, limits in terms.regions.items():
            self._scope_blocks(blocks, t, region, partial(ledger.region_over, tenant, region), limits)
        if blocks and self._all_out(blocks, t.pools):
            return blocks, "; ".join(dict.fromkeys(blocks.values()))
        return blocks, ""

    def _scope_blocks(self, blocks: Blocks, t: _Try, scope: str, over: Callable[[str, float], str],
                      named: Collection[str]) -> None:
        """:meth:`_blocks` in one scope: network-wide (``*``, ``over`` the tenant's quota) or a region
        with a quota of the tenant's."""
        spec = t.ask.spec
        why = over(CPUS, spec.cpus) or over(MEMORY_GB, spec.memory_gb)
        if why:
            for pool in t.pools:
                blocks.setdefault((scope, pool[1] if pool else None), why)
            return
        n = float(spec.accelerator.count)
        family_why: dict[str, str] = {}
        for pool in t.pools:
            if pool is None or ("*", pool[1]) in blocks:
                continue
            f, m = pool
            if scope == "*" and f not in named and m not in named:
                blocks[("*", m)] = f"tenant {t.tenant} has no quota for {f} ({m})"
                continue
            fam = family_why.get(f)
            if fam is None:
                fam = family_why[f] = over(f, n) if f in named else ""
            why = fam or (over(m, n) if m in named else "")
            if why:
                blocks[(scope, m)] = why

    def _all_out(self, blocks: Blocks, pools: tuple[Pool, ...]) -> bool:
        """Whether quota rules out every one of ``pools`` in every region."""
        for p in pools:
            m = p[1] if p else None
            if ("*", m) in blocks:
                continue
            for r in self.regions:
                if (r, m) not in blocks:
                    return False
        return True

    def _why(self, blocks: Blocks, model: str | None, region: str) -> str:
        """Why quota rules out ``model`` in ``region`` for this ask ("" if it does not)."""
        return blocks.get(("*", model)) or blocks.get((region, model)) or ""

    def _view(self, t: _Try, blocks: Blocks, sig: frozenset[object]) -> dict[str, DCCapacity]:
        """The capacity ``place()`` reads for this ask: the free capacity, with excluded DCs and what
        quota rules out taken away (DCs beyond the latency bound keep their latency reason). Kept per
        kind of ask and brought up to date where admissions changed a DC since."""
        ask = t.ask
        spec = ask.spec
        if (not blocks and not ask.exclude) or spec.tier not in self.network.tiers or (
                spec.origin is not None and spec.origin not in self.tables.cities):
            return self.free  # (an unknown tier or origin: place() raises the SpecError naming it)
        bound = self.network.tiers[spec.tier].limit_ms  # as place() filters: the bound less its guard band
        key = (ask.exclude, sig, spec.origin, bound, spec.accelerator.family, spec.accelerator.model)
        got = self.views.get(key)
        if got is not None:
            at, view = got
            if at < len(self.changed):
                for dc in set(self.changed[at:]):
                    view[dc] = self._entry(dc, t, blocks, bound)
                self.views[key] = (len(self.changed), view)
            return view
        view = dict(self.free)
        for dc in (*ask.exclude, *(self._near(spec.origin, bound) if blocks else ())):
            if dc in view:
                view[dc] = self._entry(dc, t, blocks, bound)
        self.views[key] = (len(self.changed), view)
        return view

    def _near(self, origin: str | None, bound: float | None) -> tuple[str, ...]:
        """The DCs within ``bound`` of ``origin``."""
        got = self.near.get((origin, bound))
        if got is None:
            got = self.near[(origin, bound)] = tuple(s[2] for s in self.tables.sites(origin, bound)[0])
        return got

    def _entry(self, dc: str, t: _Try, blocks: Blocks, bound: float | None) -> DCCapacity:
        """One DC as this ask's view has it (see :meth:`_view`)."""
        cap = self.free[dc]
        if not cap.alive:
            return cap
        if dc in t.ask.exclude:
            return DCCapacity(cap.free, cap.free_cpus, cap.free_memory_gb, cap.utilisation, False,
                              "excluded: this workload failed there before")
        if not blocks or (bound is not None and dc not in self._near_set(t.ask.spec.origin, bound)):
            return cap
        region = self.region[dc]
        spec = t.ask.spec
        if spec.accelerator.family is Family.CPU:
            models: list[str | None] = [None]
        else:
            models = [p.model for p in self.tables.pools(spec)[0][self.index[dc]]]
        out = {m: why for m in models if (why := self._why(blocks, m, region))}
        if not out:
            return cap
        if len(out) == len(models):
            return DCCapacity(cap.free, cap.free_cpus, cap.free_memory_gb, cap.utilisation, False,
                              f"{QUOTA}: " + "; ".join(dict.fromkeys(out.values())))
        return DCCapacity({m: (0 if m in out else n) for m, n in cap.free.items()}, cap.free_cpus,
                          cap.free_memory_gb, cap.utilisation, cap.alive, cap.why)

    def _near_set(self, origin: str | None, bound: float) -> frozenset[str]:
        got = self.near_set.get((origin, bound))
        if got is None:
            got = self.near_set[(origin, bound)] = frozenset(self._near(origin, bound))
        return got

    # -- preemption -----------------------------------------------------------------------------
    def _preempt(self, t: _Try, dcs: Sequence[str], blocks: Blocks) -> Preempt | None:
        if self._victims is None:
            index = self.victim_index if self.victim_index is not None else VictimIndex(self.tenants, self.held)
            self._victims = _Victims(index, self.ledger)
        return self._victims.choose(self, t, dcs, blocks)


def _rows_for(need: float, per_row: float) -> int:
    """At least how many rows of at most ``per_row`` each cover ``need``."""
    if need <= _EPS:
        return 0
    return math.ceil(need / per_row - _EPS) if per_row > 0 else 1 << 30


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


def _shape(spec: WorkloadSpec) -> Shape:
    """What placement reads of a spec (not its name, tenant, or admission fields)."""
    acc = spec.accelerator
    return (spec.tier, spec.origin, acc.family, acc.count, acc.model, spec.cpus, spec.memory_gb, spec.duration_hours,
            spec.inputs, spec.deadline_hours, spec.start_after, spec.deadline)


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


class _Victims:
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
                    if room < b.least.get(model, math.inf) - _EPS:
                        continue
                    acc += min(room, b.acc.get(model, 0.0))  # (a row is taken whole)
                theirs.append(b)
            else:
                continue
            cpus += b.cpus
            mem += b.memory_gb
        return acc, cpus, mem, theirs, mine

    def choose(self, cycle: _Cycle, t: _Try, dcs: Sequence[str], blocks: Blocks) -> Preempt | None:
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
                if blocks and cycle._why(blocks, model, region):
                    continue
                reclaim = reclaims.get(pool)
                if reclaim is None:
                    reclaim = reclaims[pool] = cohort is not None and self.ledger.within_nominal(
                        tenant, cycle._use(t, pool))
                memo = (model, tenant, value, reclaim)
                here = bounds.get(dc)
                if here is None:
                    here = bounds[dc] = {}
                got = here.get(memo)
                if got is None:
                    got = here[memo] = self._bound(buckets, pool, tenant, value, cohort, reclaim, rooms)
                acc, cpus, mem, theirs, mine = got
                if acc < short - _EPS or cpus < short_cpus - _EPS or mem < short_mem - _EPS:
                    continue  # not enough to preempt here, whichever rows
                least = 1
                if short > _EPS:
                    least = max(least, _rows_for(short, most.get(model, 0.0)))
                if short_cpus > _EPS:
                    least = max(least, _rows_for(short_cpus, most.get(None, 0.0)))
                if short_mem > _EPS:
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
                after = afters[model] = self.ledger.share(tenant, cycle._use(t, pool))
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

    def _fit(self, cap: DCCapacity, model: str | None, t: _Try, cands: Iterable[_Row],
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
            if max(left) <= _EPS:
                break
            h = r.held
            g = gives(h)
            if not ((left[0] > _EPS and g[0] > 0) or (left[1] > _EPS and g[1] > 0) or (left[2] > _EPS and g[2] > 0)):
                continue  # it gives nothing the ask still lacks
            b = self._bucket(h.key)
            if h.tenant != t.tenant and not (b.preemptible and b.value < t.value):  # taken to reclaim
                if h.tenant in fair:
                    continue
                minus = gone.get(h.tenant)
                if minus is None:
                    minus = gone[h.tenant] = {k: -n for k, n in self.taken.get(h.tenant, {}).items()}
                use = {k: -n for k, n in charges(h.family, h.resources).items()}
                if after > self.ledger.share(h.tenant, minus, use) + _EPS:
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
                if any(room.get(k, 0.0) + _EPS < n for k, n in budget.items()):
                    continue
                for k, n in budget.items():
                    room[k] = room.get(k, 0.0) - n
            picked.append(h)
            left = [left[0] - g[0], left[1] - g[1], left[2] - g[2]]
        if max(left) > _EPS:
            return None
        for h in reversed(list(picked)):  # put back what is not needed: the last taken (oldest, own) first
            g = gives(h)
            if all(x + y <= _EPS for x, y in zip(left, g, strict=True)):
                picked.remove(h)
                left = [x + y for x, y in zip(left, g, strict=True)]
        return picked
