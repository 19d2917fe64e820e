"""Stuck asks: pending batch work that no admission cycle can let in until something changes (speed; the
engine makes the same decisions without them).

A pending ask that a cycle left waiting (on capacity, quota, or a deadline it cannot meet there) is
*stuck*. Later cycles get it again only when the state now meets every condition a cycle needs to admit
(or defer) it, or to preempt for it:

- **admit**: some DC, alive and not excluded, has a pool of the ask's accelerator family (model) with
  ``count`` free and the CPUs and memory it asks, and the tenant's quota does not rule that (region,
  model) out (:class:`~westflow.tenants.Ledger`: nominal and borrowing limits, what the cohort has
  unused to lend, region caps), as the cycle's quota step and ``place()``'s capacity filter read them;
- **preempt**: held work of a preemptible class lower than the ask's (priority), or, while the ask is
  within its tenant's nominal quota, another cohort member's work of a class no higher (reclaim).

Each condition only loosens through an event: capacity grows only in a DC where work is released; quota
loosens only when the tenant or a member of its cohort releases work; a tenant comes within its nominal
quota only when it releases work; new victims appear only when work starts. Within a cycle capacity and
use only tighten, so a condition false at a cycle's start stays false for its whole run. Time alone lets
no stuck ask in (a deadline only rejects more as time passes; the engine drops one that can no longer
be met, and takes the ask out of here: its spec changed).

Asks are kept in groups of one need (tenant, class, accelerator request, CPUs, memory, exclusions);
a group is judged again only after an event that may loosen a condition for it, and then on the state
as it is. :meth:`StuckAsks.loosen` runs before each cycle and frees the groups that may get in.

**Room for a few** (a group that may be admitted but may preempt no one): an ask that can only start now
or not at all (*fixed*: no start_after, no relative deadline, no inputs to move; its deadline, if any,
met by starting now with a second to spare, and too near to defer for: deadline - duration x
(1 + ``deadline_margin``) before now) takes a unit of the room its need has when the cycle places it:
in each DC, the fewest of its CPUs, memory, and the asks' counts in the pools quota allows there. The
cycle visits one need's asks by urgency (the latest start meeting the deadline, else the submission),
then key; so with room for ``R`` asks of the need, only the first ``R`` fixed ones (and every ask that
is not fixed) can get in this cycle: each before them took a unit, or failed with room left, as all
after it then fail. The rest stay stuck, judged again at the next cycle (their group's events stand).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from westflow.admission_cycle import Ask, Held
from westflow.capacity import Capacity
from westflow.errors import ConfigError
from westflow.inventory import Family, Network
from westflow.tenants import CPUS, MEMORY_GB, Ledger, Tenants

__all__ = ["StuckAsks"]

Need = tuple[str, str, Family, str | None, int, float, float, frozenset[str]]
Pool = tuple[str, str] | None  # (family, model); None: CPU only


@dataclass(slots=True)
class _Group:
    """The stuck asks of one need, and the event count as of which none of them could get in."""

    tenant: str
    value: int  # its class's value
    allowed: bool  # the tenant may use the class (else a cycle never admits it)
    count: int
    cpus: float
    memory_gb: float
    exclude: frozenset[str]
    pools: dict[str, tuple[Pool, ...]]  # per DC, the pools the request can use there
    quota_tenants: tuple[str, ...]  # whose releases loosen its quota: the tenant and its cohort
    victim_kinds: tuple[tuple[str, str], ...]  # (tenant, class) of held work it could preempt
    seen: int
    asks: dict[str, Ask] = field(default_factory=dict)


class StuckAsks:
    """The stuck asks of one simulation (see the module doc); told of every hold and release."""

    def __init__(self, network: Network, tenants: Tenants, ledger: Ledger,
                 capacity: Callable[[], Capacity], *, defers: bool = True) -> None:
        """``defers``: the policy may defer work with a deadline to a later start (see the module doc)."""
        self.tenants, self.ledger, self.capacity = tenants, ledger, capacity
        self.defers, self.margin = defers, network.weights.deadline_margin
        self._dcs = tuple(d.id for d in network.data_centers)
        self._region = {d.id: d.region.value for d in network.data_centers}
        self._dc_pools = {d.id: tuple((p.family, p.model) for p in d.pools) for d in network.data_centers}
        self._tick = 0  # events so far
        self._grew = dict.fromkeys(self._dcs, 0)  # per DC, the last event that released capacity there
        self._released: dict[str, int] = {}  # per tenant, its last release
        self._held: dict[tuple[str, str], int] = {}  # per (tenant, class), its last hold
        self._rows: dict[tuple[str, str], int] = {}  # per (tenant, class), the rows held
        self._groups: dict[Need, _Group] = {}
        self._need_of: dict[str, Need] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._need_of

    def __len__(self) -> int:
        return len(self._need_of)

    @property
    def tick(self) -> int:
        """The events so far (what :meth:`stick` takes as ``since``)."""
        return self._tick

    # -- events ------------------------------------------------------------------------------------
    def held(self, row: Held) -> None:
        """``row`` started holding capacity (a new victim, perhaps)."""
        self._tick += 1
        k = (row.tenant, row.priority_class)
        self._held[k] = self._tick
        self._rows[k] = self._rows.get(k, 0) + 1

    def released(self, row: Held) -> None:
        """``row`` let its capacity go (capacity in its DC, its tenant's quota and its cohort's lending grow)."""
        self._tick += 1
        self._grew[row.data_center] = self._tick
        self._released[row.tenant] = self._tick
        k = (row.tenant, row.priority_class)
        self._rows[k] -= 1

    # -- the stuck set -----------------------------------------------------------------------------
    def stick(self, asks: Iterable[Ask], since: int) -> None:
        """``asks`` were left waiting by a cycle that began at event ``since`` (none of them preempting)."""
        for ask in asks:
            need = self._need(ask)
            g = self._groups.get(need)
            if g is None:
                g = self._groups[need] = self._group(ask, since)
            else:
                g.seen = min(g.seen, since)
            g.asks[ask.key] = ask
            self._need_of[ask.key] = need

    def discard(self, key: str) -> None:
        """``key`` is no longer stuck (deferred, or its spec changed)."""
        need = self._need_of.pop(key, None)
        if need is not None:
            g = self._groups[need]
            del g.asks[key]
            if not g.asks:
                del self._groups[need]

    def loosen(self, now: float | None = None) -> None:
        """Free the stuck asks that the next cycle (its clock at ``now``, epoch s; None: none given) may
        admit, defer, or preempt for (see the module doc)."""
        free: list[Need] = []
        some: list[tuple[Need, list[str]]] = []
        caps = None
        for need, g in self._groups.items():
            if not g.allowed:
                continue
            s = g.seen
            quota = any(self._released.get(u, 0) > s for u in g.quota_tenants)
            dcs = self._dcs if quota else [d for d in self._dcs if self._grew[d] > s]
            victims = quota or any(self._held.get(k, 0) > s for k in g.victim_kinds)
            if not dcs and not victims:
                continue  # nothing since that could let it in
            if caps is None:
                caps = self.capacity()
            if victims and self._may_preempt(g):
                free.append(need)
            elif dcs and self._may_admit(g, dcs, caps):
                keys = self._first(g, self._room(g, caps), now)
                if keys is None:
                    free.append(need)
                else:
                    some.append((need, keys))  # (its events stand: the rest is judged again next time)
            else:
                g.seen = self._tick
        for need in free:
            for key in self._groups.pop(need).asks:
                del self._need_of[key]
        for _, keys in some:
            for key in keys:
                self.discard(key)

    # -- the conditions ----------------------------------------------------------------------------
    def _need(self, ask: Ask) -> Need:
        spec, acc = ask.spec, ask.spec.accelerator
        return (spec.tenant, ask.priority_class, acc.family, acc.model, acc.count, spec.cpus, spec.memory_gb,
                ask.exclude)

    def _group(self, ask: Ask, since: int) -> _Group:
        spec, acc, tenant = ask.spec, ask.spec.accelerator, ask.spec.tenant
        classes = self.tenants.priority_classes
        try:
            self.tenants.check(tenant, ask.priority_class)
            allowed = True
        except ConfigError:
            allowed = False
        value = classes[ask.priority_class].value if ask.priority_class in classes else 0
        pools: dict[str, tuple[Pool, ...]] = {}
        for dc, have in self._dc_pools.items():
            if acc.family is Family.CPU:
                pools[dc] = (None,)
            else:
                pools[dc] = tuple((f.value, m) for f, m in have
                                  if (acc.family is Family.ANY or f is acc.family) and acc.model in (None, m))
        terms = self.ledger.terms.get(tenant)
        cohort = terms.cohort if terms is not None else None
        mates = tuple(n for n, t in self.ledger.terms.items() if cohort is not None and t.cohort == cohort)
        kinds = tuple((u, c) for u in self.tenants.tenants for c, pc in classes.items()
                      if (pc.preemptible and pc.value < value)
                      or (cohort is not None and u != tenant and u in mates and pc.value <= value))
        return _Group(tenant, value, allowed, acc.count, spec.cpus, spec.memory_gb, ask.exclude, pools,
                      tuple(dict.fromkeys((tenant, *mates))), kinds, since)

    def _may_admit(self, g: _Group, dcs: Iterable[str], caps: Capacity) -> bool:
        """Whether one of ``dcs`` has the room ``g`` asks, in a pool its tenant's quota allows there."""
        for dc in dcs:
            cap = caps.get(dc)
            if cap is None or not cap.alive or dc in g.exclude or cap.free_cpus < g.cpus \
                    or cap.free_memory_gb < g.memory_gb:
                continue
            for pool in g.pools[dc]:
                if (pool is None or cap.free.get(pool[1], 0) >= g.count) and self._quota_allows(g, pool, dc):
                    return True
        return False

    def _room(self, g: _Group, caps: Capacity) -> float:
        """How many asks of ``g``'s need the free capacity holds at most, in pools its quota allows."""
        room = 0.0
        for dc in self._dcs:
            cap = caps.get(dc)
            if cap is None or not cap.alive or dc in g.exclude:
                continue
            most = math.inf if g.cpus <= 0 else cap.free_cpus // g.cpus
            if g.memory_gb > 0:
                most = min(most, cap.free_memory_gb // g.memory_gb)
            if most <= 0:
                continue
            fit = 0.0
            for pool in g.pools[dc]:
                if pool is not None and g.count > 0:
                    n = cap.free.get(pool[1], 0) // g.count
                    if n > 0 and self._quota_allows(g, pool, dc):
                        fit += n
                elif self._quota_allows(g, pool, dc):
                    fit = math.inf
            room += min(most, fit)
        return room

    def _first(self, g: _Group, room: float, now: float | None) -> list[str] | None:
        """The keys of ``g`` the next cycle may admit or defer with ``room`` for its need: every ask that is
        not fixed and the ``room`` most urgent fixed ones; None: all of them."""
        if room >= len(g.asks):
            return None
        fixed: list[tuple[float, str]] = []
        keys: list[str] = []
        for key, ask in g.asks.items():
            if self._fixed(ask, now):
                spec = ask.spec
                urgency = ask.submitted_at if spec.deadline is None else \
                    spec.deadline.timestamp() - spec.duration_hours * 3600.0
                fixed.append((urgency, key))
            else:
                keys.append(key)
        fixed.sort()
        keys += [key for _, key in fixed[:int(room)]]
        return None if len(keys) == len(g.asks) else keys

    def _fixed(self, ask: Ask, now: float | None) -> bool:
        """Whether placing ``ask`` at ``now`` can only start it at once (see the module doc)."""
        spec = ask.spec
        if spec.start_after is not None or spec.deadline_hours is not None or spec.inputs:
            return False
        if spec.deadline is None:
            return True
        if now is None:
            return False
        run, finish_by = spec.duration_hours * 3600.0, spec.deadline.timestamp()
        if now + run > finish_by - 1.0:
            return False  # (it may miss its deadline: rejected everywhere)
        return not self.defers or finish_by - run * (1.0 + self.margin) <= now - 1.0

    def _quota_allows(self, g: _Group, pool: Pool, dc: str) -> bool:
        """Whether the tenant's quota leaves ``pool`` in ``dc``'s region to ``g`` (the cycle's quota step)."""
        ledger, tenant = self.ledger, g.tenant
        terms = ledger.terms.get(tenant)
        if terms is None:
            return True  # (the cycle waits it on its configuration)
        if ledger.over(tenant, CPUS, g.cpus) or ledger.over(tenant, MEMORY_GB, g.memory_gb):
            return False
        n = float(g.count)
        if pool is not None:
            f, m = pool
            if f not in terms.named and m not in terms.named:
                return False
            if ledger.over(tenant, f, n) or ledger.over(tenant, m, n):
                return False
        region = self._region[dc]
        if region in terms.regions:
            over = ledger.region_over
            if over(tenant, region, CPUS, g.cpus) or over(tenant, region, MEMORY_GB, g.memory_gb):
                return False
            if pool is not None and (over(tenant, region, pool[0], n) or over(tenant, region, pool[1], n)):
                return False
        return True

    def _may_preempt(self, g: _Group) -> bool:
        """Whether held work exists that ``g`` could preempt (by priority, or to reclaim its nominal quota)."""
        classes, rows = self.tenants.priority_classes, self._rows
        terms = self.ledger.terms.get(g.tenant)
        reclaim: bool | None = None
        for k in g.victim_kinds:
            if not rows.get(k):
                continue
            pc = classes[k[1]]
            if pc.preemptible and pc.value < g.value:
                return True
            if reclaim is None:
                reclaim = terms is not None and terms.cohort is not None and any(
                    self.ledger.within_nominal(g.tenant, self._use(g, p)) for dc in self._dcs for p in g.pools[dc])
            if reclaim:
                return True
        return False

    @staticmethod
    def _use(g: _Group, pool: Pool) -> dict[str, float]:
        """What ``g`` is charged on ``pool`` (:func:`~westflow.tenants.charges`)."""
        use = {CPUS: g.cpus, MEMORY_GB: g.memory_gb}
        if pool is not None:
            use[pool[1]] = use[pool[0]] = float(g.count)
        return use
