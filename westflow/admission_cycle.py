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
import operator
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from westflow import collector
from westflow.admission_types import (
    CONFIG,
    DEFERRED,
    PREEMPTION,
    QUOTA,
    Admit,
    Ask,
    Blocks,
    CycleResult,
    Held,
    Pool,
    Preempt,
    Shape,
    Try,
    Wait,
    latest_start,
)
from westflow.capacity import Capacity, DCCapacity, Resources
from westflow.errors import ConfigError, InfeasibleError, SpecError
from westflow.inventory import REALTIME, Family, Network
from westflow.placement import Placement, Policy, Reason
from westflow.placement.tables import tables_for
from westflow.preemption import VictimIndex, Victims
from westflow.spec import WorkloadSpec
from westflow.tenants import CPUS, MEMORY_GB, Ledger, Tenants

__all__ = ["Ask", "Held", "Admit", "Wait", "Preempt", "CycleResult", "VictimIndex", "admission_cycle", "held_of",
           "default_priority_class", "held_per_dc", "ledger_of", "QUOTA", "CONFIG", "PREEMPTION", "DEFERRED"]

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

@dataclass(slots=True)
class _Failed:
    """A shape that failed on capacity this cycle: its reasons, and the DCs that failed it on capacity."""

    reasons: tuple[tuple[str, str], ...]
    capacity_dcs: tuple[str, ...]


def _urgency(ask: Ask) -> float:
    """When an ask is due (epoch s): the latest start that still meets its deadline; for work with no
    deadline, its submission (age). The earlier first, within a class and fair share."""
    due = latest_start(ask.spec.deadline, ask.spec.duration_hours)
    return ask.submitted_at if due is None else due


class _Order:
    """The admission order: (-class value, dominant share, -spec priority, urgency, key), one heap entry per
    (tenant, class) group at a time; an entry whose share is stale is re-pushed when popped. (The spec's
    ``priority`` orders a tenant's own work within a class, and breaks ties of fair share: it never lets a
    tenant pass another with a lower share.)"""

    def __init__(self, asks: Sequence[tuple[Ask, str, int]], ledger: Ledger) -> None:
        groups: dict[tuple[str, str], list[tuple[int, float, str, Ask, str, int]]] = {}
        for ask, tenant, value in asks:
            groups.setdefault((tenant, ask.priority_class), []).append(
                (-ask.spec.priority, _urgency(ask), ask.key, ask, tenant, value))
        self.groups = [sorted(g, key=_DUE) for g in groups.values()]
        self.ledger = ledger
        self.shares: dict[str, tuple[int, float]] = {}  # tenant -> (ledger version, its share then)
        self.heap: list[tuple[int, float, int, float, str, int, int, int]] = []
        for gid in range(len(self.groups)):
            self._push(gid, 0)

    def _push(self, gid: int, at: int) -> None:
        """The group's ``at``-th ask onto the heap (none past its end)."""
        group = self.groups[gid]
        if at < len(group):
            rank, urgency, key, _, tenant, value = group[at]
            version, share = self._share(tenant)
            heapq.heappush(self.heap, (-value, share, rank, urgency, key, version, gid, at))

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
            neg, _, rank, urgency, key, version, gid, at = heap[0]
            tenant = self.groups[gid][at][4]
            if version != version_of.get(tenant, 0):  # its tenant's share changed: take its place again
                now, share = self._share(tenant)
                heapq.heapreplace(heap, (neg, share, rank, urgency, key, now, gid, at))
                continue
            heapq.heappop(heap)
            self._push(gid, at + 1)
            _, _, _, ask, _, value = self.groups[gid][at]
            return ask, tenant, value
        raise StopIteration


_DUE = operator.itemgetter(0, 1, 2)  # a group's order: (-spec priority, urgency, key)


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
        self._victims: Victims | None = None
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
            self._decide(Try(ask, tenant, value, self._pools(ask.spec)))
        return CycleResult(tuple(self.admitted), tuple(self.waiting), tuple(self.preempt))

    # -- the steps of one ask -------------------------------------------------------------------
    def _decide(self, t: Try) -> None:
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

    def _admit(self, t: Try, p: Placement) -> None:
        held, fam = _holds(p), _family(p)
        borrowed = not self.ledger.within_nominal(t.tenant, self.use(t, (fam, p.accelerator_model) if fam and
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

    def use(self, t: Try, pool: Pool) -> dict[str, float]:
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

    def _blocks(self, t: Try) -> tuple[Blocks, str]:
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

    def _scope_blocks(self, blocks: Blocks, t: Try, scope: str, over: Callable[[str, float], str],
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

    def quota_why(self, blocks: Blocks, model: str | None, region: str) -> str:
        """Why quota rules out ``model`` in ``region`` for this ask ("" if it does not)."""
        return blocks.get(("*", model)) or blocks.get((region, model)) or ""

    def _view(self, t: Try, blocks: Blocks, sig: frozenset[object]) -> dict[str, DCCapacity]:
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

    def _entry(self, dc: str, t: Try, blocks: Blocks, bound: float | None) -> DCCapacity:
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
        out = {m: why for m in models if (why := self.quota_why(blocks, m, region))}
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
    def _preempt(self, t: Try, dcs: Sequence[str], blocks: Blocks) -> Preempt | None:
        if self._victims is None:
            index = self.victim_index if self.victim_index is not None else VictimIndex(self.tenants, self.held)
            self._victims = Victims(index, self.ledger)
        return self._victims.choose(self, t, dcs, blocks)


def _shape(spec: WorkloadSpec) -> Shape:
    """What placement reads of a spec (not its name, tenant, or admission fields)."""
    acc = spec.accelerator
    return (spec.tier, spec.origin, acc.family, acc.count, acc.model, spec.cpus, spec.memory_gb, spec.duration_hours,
            spec.inputs, spec.deadline_hours, spec.start_after, spec.deadline)
