"""The discrete-event simulator: one policy, the whole network, simulated capacity, one admission cycle.

Each data center starts empty (:func:`westflow.capacity.full_capacity`). Time runs in
one-minute steps; inside a step, batch arrivals and completions are events at their own
second. Every decision goes through :func:`westflow.admission_cycle.admission_cycle`, the
cycle the admission controller runs (priority, weighted fair share, age; quotas, borrowing;
preemption), over the policy under test (``Policy.place``, the one the CLI uses):

- **batch**: an arriving job becomes a pending ask of its tenant (a trace column, or
  :func:`~westflow.simulator.tenancy.assign_tenants`) in the batch class (``best-effort`` by
  default); after the events of each second with work pending, one cycle admits what fits.
  A job that does not fit waits for a later cycle; none blocks another.
- **real time**: at each step boundary the demand of every origin city becomes realtime-class
  asks of the real-time tenant, placed before any batch of that step on what batch work left
  free and held for the step. An ask that fails on capacity within its bound may preempt
  best-effort batch (the cycle's rules: the tenant's own, or others' only within what they
  borrow); the victims stop at once and go back to the queue with their remaining work (they
  resume from a checkpoint: no work is lost; the live grace period is not modelled), and the
  demand is admitted "by preemption". Demand larger than one DC's room is split, each piece
  placed by the policy; what no DC within the tier's bound can hold, even by preemption, is
  dropped, never sent further (a policy that ignores the bound, ``cheapest``, shows up as SLA
  violations).

- **long-lived services** (generic real-time rows longer than a step): placed whole (one DC,
  the row's accelerator family) at the step boundary where they start, by the same cycle and
  with the same preemption, and held until the first step boundary at or after their end; one
  that no DC within the bound can hold is dropped whole.

**The window.** Work that runs past it (a batch job started late, a service) counts in cost,
energy, utilisation and accelerator-hours only for what falls inside the window; what ran
after it is reported apart (:attr:`PolicyResult.batch_acc_hours_after`). Real-time SLA is
counted per row (trace request; within a minute's demand, rows are shared pro rata of the
accelerators) and per accelerator-second of work.

What the network holds is the capacity model's :class:`~westflow.capacity.Resources` per DC;
what the policy sees, and the utilisation measured, come from it through
:func:`~westflow.capacity.capacity_of`, as for live capacity. The tenants' use is one
:class:`~westflow.tenants.Ledger`, kept as work starts and ends and handed to every cycle.
Without tenants, one tenant holds the whole network (:func:`~westflow.simulator.tenancy.whole_network`).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import overload

from westflow.admission_cycle import Admit, Ask, CycleResult, Held, Preempt, admission_cycle, held_of
from westflow.capacity import DCCapacity, Resources, capacity_of, inventory_totals, utilisation
from westflow.errors import SpecError
from westflow.inventory import REALTIME, Family, Network, Region
from westflow.placement import Placement, Policy
from westflow.simulator.demand import STEP_S, Service, Workload
from westflow.simulator.tenancy import (
    BATCH_CLASS,
    REALTIME_CLASS,
    TenantStats,
    assign_tenants,
    class_for,
    jain,
    whole_network,
)
from westflow.spec import AcceleratorRequest, WorkloadSpec
from westflow.tenants import Ledger, Tenants

__all__ = ["PolicyResult", "Simulation", "simulate", "RT_CPUS_PER_ACCELERATOR", "RT_MEMORY_GB_PER_ACCELERATOR"]

RT_CPUS_PER_ACCELERATOR = 1.0
RT_MEMORY_GB_PER_ACCELERATOR = 8.0
MAX_RETRIES = 4  # cycles run again at one instant after preemptions freed capacity

Progress = Callable[[str, float], None]


@dataclass
class PolicyResult:
    """Everything measured for one policy."""

    policy: str
    window_s: float
    util_dc: dict[str, float] = field(default_factory=dict)
    util_region: dict[str, float] = field(default_factory=dict)
    util_series: dict[str, list[float]] = field(default_factory=dict)  # region -> per-hour mean
    rt_demand_acc_min: float = 0.0
    rt_requests: float = 0.0
    rt_beyond_acc_min: float = 0.0
    rt_beyond_requests: float = 0.0
    rt_dropped_acc_min: float = 0.0
    rt_dropped_requests: float = 0.0
    rt_by_preemption_acc_min: float = 0.0  # real-time demand admitted after preempting batch work
    rt_by_preemption_requests: float = 0.0
    rt_work_acc_s: float = 0.0         # the same, per unit of work: accelerator-seconds
    rt_beyond_acc_s: float = 0.0
    rt_dropped_acc_s: float = 0.0
    rt_by_preemption_acc_s: float = 0.0
    rt_services: int = 0               # long-lived real-time rows replayed (counted in rt_requests too)
    rt_services_dropped: int = 0
    rt_services_after_window: int = 0  # starting after the window: not replayed
    energy_kwh: float = 0.0
    cost_cny: float = 0.0
    batch_jobs: int = 0
    batch_started: int = 0
    batch_delay_s: list[float] = field(default_factory=list)
    batch_acc_hours: float = 0.0       # within the window
    batch_acc_hours_after: float = 0.0  # batch work that ran after the window: not in cost nor utilisation
    batch_west_acc_hours: float = 0.0
    cost_hourly: list[float] = field(default_factory=list)  # CNY per simulated hour of the window
    batch_dc: dict[str, int] = field(default_factory=dict)
    preemptions: int = 0  # batch jobs stopped (and requeued) for other work
    tenants: dict[str, TenantStats] = field(default_factory=dict)
    decisions: int = 0
    wall_s: float = 0.0

    def delay_stats(self) -> tuple[float, float, float]:
        """Mean, p95, p99 of batch queueing delay in seconds (nearest-rank)."""
        d = sorted(self.batch_delay_s)
        if not d:
            return 0.0, 0.0, 0.0
        def pct(q: float) -> float:
            return d[min(len(d) - 1, max(0, math.ceil(q * len(d)) - 1))]
        return sum(d) / len(d), pct(0.95), pct(0.99)

    def share(self, part: float, whole: float) -> float:
        """``part`` / ``whole`` (0 for no whole)."""
        return part / whole if whole else 0.0

    @property
    def west_share(self) -> float:
        return self.batch_west_acc_hours / self.batch_acc_hours if self.batch_acc_hours else 0.0

    @property
    def jain(self) -> float:
        """Jain's fairness index of the tenants' accelerator-hours against their weights."""
        return jain(self.tenants)


class _Network:
    """What the simulated network holds per DC, and what is derived from it: the capacity snapshot
    ``place()`` reads and each DC's utilisation (each rebuilt only for the DCs that changed)."""

    def __init__(self, network: Network) -> None:
        self.totals = {d.id: inventory_totals(d) for d in network.data_centers}
        self.used = {dc: Resources() for dc in self.totals}
        self._snap = {dc: capacity_of(t, Resources()) for dc, t in self.totals.items()}
        self._dirty: set[str] = set()

    def take(self, dc: str, held: Resources) -> None:
        self.used[dc] = self.used[dc].plus(held)
        self._changed(dc)

    def release(self, dc: str, held: Resources) -> None:
        self.used[dc] = self.used[dc].minus(held)
        self._changed(dc)

    def _changed(self, dc: str) -> None:
        self._dirty.add(dc)

    def capacity(self) -> dict[str, DCCapacity]:
        """The snapshot ``place()`` reads."""
        for dc in self._dirty:
            self._snap[dc] = capacity_of(self.totals[dc], self.used[dc])
        self._dirty.clear()
        return self._snap


class _Holding(Sequence[Held]):
    """The held rows as the admission cycle reads them: a view of the simulation's dict (a cycle
    reads them only when it looks for victims; the tenants' use comes from the ledger)."""

    def __init__(self, rows: dict[str, Held]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Held]:
        return iter(self.rows.values())

    @overload
    def __getitem__(self, i: int) -> Held: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Held]: ...
    def __getitem__(self, i: int | slice) -> Held | Sequence[Held]:
        return list(self.rows.values())[i]


@dataclass
class _Run:
    """A batch job running: where, since when, what it was charged for the work left at its start."""

    job: int
    seq: int
    start: float
    left_s: float  # work left when it started
    energy_kwh: float  # of the whole run from its start (what the placement priced)
    cost_cny: float
    accelerators: int


class Simulation:
    """One policy replaying one workload: a single event loop over real-time steps and batch events."""

    def __init__(self, policy: Policy, network: Network, workload: Workload, progress: Progress | None = None,
                 *, tenants: Tenants | None = None, realtime_tenant: str | None = None,
                 batch_class: str = BATCH_CLASS) -> None:
        self.policy, self.network, self.workload, self.progress = policy, network, workload, progress
        self.tenants = whole_network(network) if tenants is None else tenants
        self.res = PolicyResult(policy.name, workload.window_s, batch_jobs=len(workload.jobs),
                                cost_hourly=[0.0] * max(1, math.ceil(workload.window_s / 3600)))
        self.net = _Network(network)
        self.region_of = {d.id: d.region for d in network.data_centers}
        self.bound = network.tiers[REALTIME].max_rtt_ms
        self._regions = {r.value: [d.id for d in network.data_centers if d.region is r] for r in Region}
        self._region_totals = {r: Resources({i: self.net.totals[i].accelerator_count for i in ids},
                                            sum(self.net.totals[i].cpus for i in ids))
                               for r, ids in self._regions.items()}
        self._area = dict.fromkeys(self.net.totals, 0.0)  # integral of each DC's utilisation over time
        self._last_t = 0.0
        # tenants: who each job belongs to, its class; the real-time tenant
        self.job_tenant = assign_tenants(workload.jobs, self.tenants) if tenants is not None \
            else [self.tenants.default_tenant] * len(workload.jobs)  # one tenant: a tenant column is moot
        self.job_class = {t: class_for(self.tenants, t, batch_class) for t in set(self.job_tenant)}
        self.rt_tenant = realtime_tenant or self._realtime_tenant()
        for name, t in self.tenants.tenants.items():
            self.res.tenants[name] = TenantStats(t.weight)
        for name in self.job_tenant:
            self.res.tenants[name].jobs += 1
        self.ledger = Ledger(self.tenants)
        self.held: dict[str, Held] = {}
        self._holding = _Holding(self.held)
        self.pending: dict[str, Ask] = {}
        self._left = [j.duration_s for j in workload.jobs]  # work left per job
        self._started = [False] * len(workload.jobs)
        self._running: list[tuple[float, int, str]] = []  # heap of (end, seq, key)
        self._runs: dict[str, _Run] = {}
        self._seq = 0
        self._next_job = 0
        self._rt_held: list[str] = []
        self._rt_specs: dict[tuple[str, str, int, float], WorkloadSpec] = {}
        self._family_of = {p.model: p.family.value for d in network.data_centers for p in d.pools}
        self._sites_cache: dict[tuple[str, str], tuple[tuple[str, ...], int]] = {}
        self._services: list[tuple[float, str]] = []  # heap of (end, key) of services held
        self._next_service = 0

    def _realtime_tenant(self) -> str:
        """The tenant real-time demand runs as: the default tenant if it may use the realtime class, else
        the first that may."""
        t = self.tenants
        for name in (t.default_tenant, *t.tenants):
            if REALTIME_CLASS in t.tenants[name].priority_classes:
                return name
        raise SpecError("tenants", sorted(t.tenants), f"a tenant allowed the {REALTIME_CLASS!r} priority class",
                        problem="None of", fix="let one tenant use realtime (for the real-time demand).")

    def _sites(self, city: str, family: str) -> tuple[tuple[str, ...], int]:
        """The DCs a real-time piece for ``city`` may go to (within the bound, for a policy that respects
        it), and the largest piece of ``family`` one of them could ever hold."""
        got = self._sites_cache.get((city, family))
        if got is not None:
            return got
        bound = self.bound if self.policy.respect_latency else None
        sites = tuple(d.id for d in self.network.data_centers
                      if bound is None or self.network.rtt(d.id, city) <= bound)

        def pool(dc: str) -> int:
            acc = self.net.totals[dc].accelerators
            return int(max((n for m, n in acc.items() if family == Family.ANY.value or self._family_of[m] == family),
                           default=0))
        most = max((min(pool(d), int(self.net.totals[d].cpus // RT_CPUS_PER_ACCELERATOR),
                        int(self.net.totals[d].memory_gb // RT_MEMORY_GB_PER_ACCELERATOR)) for d in sites), default=0)
        self._sites_cache[(city, family)] = (sites, most)
        return sites, most

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> PolicyResult:
        wall0 = time.perf_counter()
        w, res = self.workload, self.res
        steps = w.steps
        series: dict[str, list[float]] = {r.value: [] for r in Region}
        hour = dict.fromkeys(series, 0.0)
        report_every = max(1, steps // 20)
        for step in range(steps):
            t0 = step * STEP_S
            self._account(t0)
            self._release_realtime()  # real-time holds last one step
            self._release_services(t0)
            self._place_services(t0)
            self._place_realtime(step, t0)
            self._admit_batch(t0)  # what the step's real-time work left (or released) for the queue
            for region, share in self._region_shares().items():
                hour[region] += share
            self._events(until=t0 + STEP_S)
            if (step + 1) % 60 == 0 or step == steps - 1:
                k = (step % 60) + 1
                for region in series:
                    series[region].append(hour[region] / k)
                    hour[region] = 0.0
            if self.progress and step % report_every == 0:
                self.progress(self.policy.name, step / steps)
        self._account(w.window_s)
        self._release_realtime()
        self._release_services(math.inf)
        res.rt_services_after_window = len(w.services) - self._next_service
        self._admit_batch(w.window_s)
        self._events(until=math.inf)  # no more real-time: remaining arrivals and the queue run to completion
        self._finish(series)
        res.wall_s = time.perf_counter() - wall0
        if self.progress:
            self.progress(self.policy.name, 1.0)
        return res

    def _events(self, until: float) -> None:
        """Batch completions and arrivals before ``until``, in time order (completions first on ties);
        after the events of each instant, a cycle for what is pending."""
        jobs, running = self.workload.jobs, self._running
        while True:
            t_done = running[0][0] if running else math.inf
            t_arr = jobs[self._next_job].submit_s if self._next_job < len(jobs) else math.inf
            t = min(t_done, t_arr)
            if t >= until:
                return
            self._account(t)
            while running and running[0][0] == t:
                _, seq, key = heapq.heappop(running)
                run = self._runs.get(key)
                if run is not None and run.seq == seq:  # (else preempted meanwhile)
                    del self._runs[key]
                    self._release(key)
            while self._next_job < len(jobs) and jobs[self._next_job].submit_s == t:
                self._arrive(self._next_job)
                self._next_job += 1
            self._admit_batch(t)

    def _account(self, t: float) -> None:
        """Integrate each DC's utilisation up to ``t`` (capped at the window)."""
        t = min(t, self.workload.window_s)
        if t > self._last_t:
            dt = t - self._last_t
            for dc, cap in self.net.capacity().items():
                self._area[dc] += cap.utilisation * dt  # the DC's utilisation(), as the policy sees it
            self._last_t = t

    def _region_shares(self) -> dict[str, float]:
        """Each region's utilisation now: :func:`utilisation` of its DCs' totals and use together
        (accelerators counted per DC, CPUs summed)."""
        out = {}
        for region, ids in self._regions.items():
            used = Resources({i: self.net.used[i].accelerator_count for i in ids},
                             sum(self.net.used[i].cpus for i in ids))
            out[region] = utilisation(self._region_totals[region], used) if ids else 0.0
        return out

    def _finish(self, series: dict[str, list[float]]) -> None:
        res, window = self.res, self.workload.window_s
        for dc in self.net.totals:
            res.util_dc[dc] = self._area[dc] / window
        for r in Region:
            ids = [dc for dc, reg in self.region_of.items() if reg is r]
            weights = {i: self.net.totals[i].accelerator_count for i in ids}
            tot = sum(weights.values())
            res.util_region[r.value] = sum(weights[i] * res.util_dc[i] for i in ids) / tot if tot else 0.0
        res.util_series = series

    # -- admission -------------------------------------------------------------------------------
    def _cycle(self, asks: Sequence[Ask]) -> CycleResult:
        """One admission cycle on the simulated network (the controller's, see the module doc)."""
        return admission_cycle(asks, self._holding, tenants=self.tenants, network=self.network,
                               capacity=self.net.capacity(), policy=self.policy, ledger=self.ledger)

    def _hold(self, row: Held) -> None:
        self.held[row.key] = row
        self.net.take(row.data_center, row.resources)
        self.ledger.add(row.tenant, row.region, row.family, row.resources)

    def _release(self, key: str) -> Held:
        row = self.held.pop(key)
        self.net.release(row.data_center, row.resources)
        self.ledger.add(row.tenant, row.region, row.family, row.resources, -1)
        return row

    def _inside(self, a: float, b: float) -> float:
        """Seconds of ``[a, b)`` inside the window."""
        return max(0.0, min(b, self.workload.window_s) - max(a, 0.0))

    def _bill(self, energy_kwh: float, cost_cny: float, a: float, b: float, c: float, sign: float = 1.0) -> None:
        """Charge what a run priced at ``energy_kwh`` / ``cost_cny`` for ``[a, b)`` costs over ``[c, b)``, only
        inside the window (spread evenly over the run), into the totals and the hourly curve."""
        if b <= a:
            return
        lo, hi = max(c, 0.0), min(b, self.workload.window_s)
        if hi <= lo:
            return
        e_rate, c_rate = energy_kwh / (b - a), cost_cny / (b - a)
        self.res.energy_kwh += sign * e_rate * (hi - lo)
        self.res.cost_cny += sign * c_rate * (hi - lo)
        hourly = self.res.cost_hourly
        h = int(lo // 3600)
        while h < len(hourly) and h * 3600 < hi:
            hourly[h] += sign * c_rate * (min(hi, (h + 1) * 3600) - max(lo, h * 3600))
            h += 1

    def _spend(self, p: Placement, t: float, duration_s: float) -> None:
        """Charge placement ``p`` of work running ``[t, t + duration_s)`` (only what is inside the window)."""
        self._bill(p.energy_kwh, p.energy_cost_cny + p.transfer_cost_cny, t, t + duration_s, t)

    # -- batch -----------------------------------------------------------------------------------
    def _key(self, i: int) -> str:
        return f"job{i:07d}"  # (keys sort as the jobs do: the cycle's last tie-break)

    def _arrive(self, i: int) -> None:
        tenant = self.job_tenant[i]
        spec = self.workload.batch_specs[i]
        if tenant != spec.tenant:
            spec = spec.copy(tenant=tenant)
        self.pending[self._key(i)] = Ask(self._key(i), spec, self.job_class[tenant], self.workload.jobs[i].submit_s)

    def _admit_batch(self, t: float) -> None:
        """Cycles for the pending batch work at ``t``: admit what fits; apply preemptions at once and
        cycle again (bounded) so the preemptors take what their victims left."""
        for _ in range(MAX_RETRIES):
            if not self.pending:
                return
            r = self._cycle(list(self.pending.values()))
            for a in r.admitted:
                self._start(a, t)
            for p in r.preempt:
                self._preempt(p, t)
                ask = self.pending.get(p.key)
                if ask is not None:
                    self.pending[p.key] = replace(ask, awaiting_preemption=True)
            if not r.preempt:
                break
        for key, ask in self.pending.items():
            if ask.awaiting_preemption:
                self.pending[key] = replace(ask, awaiting_preemption=False)

    def _start(self, a: Admit, t: float) -> None:
        res, key = self.res, a.key
        ask = self.pending.pop(key)
        i = int(key[3:])
        p, tenant = a.placement, ask.spec.tenant
        self._hold(held_of(p, key, tenant, ask.priority_class, a.family, t))
        res.decisions += 1
        left = self._left[i]
        self._seq += 1
        heapq.heappush(self._running, (t + left, self._seq, key))
        n = p.spec.accelerator.count
        self._runs[key] = _Run(i, self._seq, t, left, p.energy_kwh, p.energy_cost_cny + p.transfer_cost_cny, n)
        stats = res.tenants[tenant]
        if not self._started[i]:
            self._started[i] = True
            res.batch_started += 1
            res.batch_delay_s.append(t - self.workload.jobs[i].submit_s)
            stats.started += 1
            stats.wait_s.append(t - self.workload.jobs[i].submit_s)
        self._spend(p, t, left)
        ah = n * self._inside(t, t + left) / 3600  # within the window
        res.batch_acc_hours += ah
        res.batch_acc_hours_after += n * left / 3600 - ah
        stats.acc_hours += ah
        if self.region_of[p.data_center] is Region.WEST:
            res.batch_west_acc_hours += ah
        res.batch_dc[p.data_center] = res.batch_dc.get(p.data_center, 0) + 1

    def _preempt(self, p: Preempt, t: float) -> None:
        """Stop ``p``'s victims now; each goes back to the queue with the work it has left."""
        res = self.res
        for key in p.victims:
            run = self._runs.pop(key, None)
            if run is None:
                continue  # not a batch job (the cycle never picks real-time work: it is not preemptible)
            row = self._release(key)
            end = run.start + run.left_s
            unrun = end - t
            self._bill(run.energy_kwh, run.cost_cny, run.start, end, t, sign=-1.0)  # refund what will not run
            n = run.accelerators
            ah = n * self._inside(t, end) / 3600
            res.batch_acc_hours -= ah
            res.batch_acc_hours_after -= n * unrun / 3600 - ah
            stats = res.tenants[row.tenant]
            stats.acc_hours -= ah
            if self.region_of[row.data_center] is Region.WEST:
                res.batch_west_acc_hours -= ah
            stats.preempted += 1
            res.preemptions += 1
            i = run.job
            self._left[i] = unrun
            spec = self.workload.batch_specs[i].copy(tenant=row.tenant, duration_hours=max(unrun, 1.0) / 3600)
            self.pending[key] = Ask(key, spec, row.priority_class, self.workload.jobs[i].submit_s)

    # -- real time -------------------------------------------------------------------------------
    def _rt_spec(self, city: str, family: str, n: int, duration_s: float = STEP_S) -> WorkloadSpec:
        """The real-time spec of ``n`` accelerators of ``family`` for ``city`` (cached: frozen values)."""
        k = (city, family, n, duration_s)
        s = self._rt_specs.get(k)
        if s is None:
            s = self._rt_specs[k] = WorkloadSpec(
                name=f"rt-{city}", tenant=self.rt_tenant, tier=REALTIME, origin=city,
                accelerator=AcceleratorRequest(Family(family), n), cpus=RT_CPUS_PER_ACCELERATOR * n,
                memory_gb=RT_MEMORY_GB_PER_ACCELERATOR * n, duration_hours=duration_s / 3600)
        return s

    def _release_realtime(self) -> None:
        for key in self._rt_held:
            self._release(key)
        self._rt_held.clear()

    def _release_services(self, t: float) -> None:
        """Services whose end is at or before ``t`` let their accelerators go."""
        while self._services and self._services[0][0] <= t:
            self._release(heapq.heappop(self._services)[1])

    def _place_services(self, t: float) -> None:
        """The services starting before the next step boundary, each placed whole at ``t`` and held to its end."""
        w, res = self.workload, self.res
        while self._next_service < len(w.services) and w.services[self._next_service].start_s < t + STEP_S:
            i = self._next_service
            self._next_service += 1
            svc: Service = w.services[i]
            dur = svc.end_s - svc.start_s
            work = svc.accelerators * self._inside(svc.start_s, svc.end_s)
            res.rt_services += 1
            res.rt_requests += 1
            res.rt_work_acc_s += work
            res.rt_demand_acc_min += work / 60
            key = f"svc:{i}"
            got = self._admit_realtime(key, self._rt_spec(svc.city, svc.family, svc.accelerators, dur), t)
            if got is None:
                res.rt_services_dropped += 1
                res.rt_dropped_requests += 1
                res.rt_dropped_acc_s += work
                res.rt_dropped_acc_min += work / 60
                continue
            p, preempted = got
            heapq.heappush(self._services, (svc.end_s, key))
            self._spend(p, svc.start_s, dur)
            if self.bound is not None and p.rtt_ms is not None and p.rtt_ms > self.bound:
                res.rt_beyond_requests += 1
                res.rt_beyond_acc_s += work
                res.rt_beyond_acc_min += work / 60
            if preempted:
                res.rt_by_preemption_requests += 1
                res.rt_by_preemption_acc_s += work
                res.rt_by_preemption_acc_min += work / 60

    def _place_realtime(self, step: int, t: float) -> None:
        w, res = self.workload, self.res
        if not w.rt_tiled and step >= len(w.rt_demand):
            return  # a generic trace's stream is replayed once
        m = step % len(w.rt_demand)
        row, reqs = w.rt_demand[m], w.rt_requests[m]
        works = w.rt_work[m] if w.rt_work else tuple(float(n) * STEP_S for n in row)
        for c in range(len(w.rt_cities)):
            want = row[c]
            if want <= 0:
                continue
            res.rt_demand_acc_min += want
            res.rt_requests += reqs[c]
            res.rt_work_acc_s += works[c]
            per_acc, work_per_acc = reqs[c] / want, works[c] / want
            left = want
            tries = 0
            while left > 0 and tries < 2 * len(self.net.totals):
                tries += 1
                got = self._place_piece(c, left, step, t)
                if got is None:
                    break
                p, n, preempted = got
                if self.bound is not None and p.rtt_ms is not None and p.rtt_ms > self.bound:
                    res.rt_beyond_acc_min += n
                    res.rt_beyond_requests += n * per_acc
                    res.rt_beyond_acc_s += n * work_per_acc
                if preempted:
                    res.rt_by_preemption_acc_min += n
                    res.rt_by_preemption_requests += n * per_acc
                    res.rt_by_preemption_acc_s += n * work_per_acc
                left -= n
            if left > 0:
                res.rt_dropped_acc_min += left
                res.rt_dropped_requests += left * per_acc
                res.rt_dropped_acc_s += left * work_per_acc

    def _place_piece(self, col: int, left: int, step: int, t: float) -> tuple[Placement, int, bool] | None:
        """Admit as much of ``left`` accelerators for column ``col`` (a city and family) as one DC can take
        (preempting batch work where it must); None if none can. The piece: what the largest pool near the
        city holds, else (when that cannot be had, even by preemption) the most one DC has free."""
        city, family = self.workload.rt_cities[col], self.workload.family(col)
        sites, most = self._sites(city, family)
        caps = self.net.capacity()
        for n in dict.fromkeys((min(left, most), min(left, self._room(caps, sites, family, self._family_of)))):
            if n <= 0:
                continue
            key = f"rt:{step}:{col}:{len(self._rt_held)}"
            got = self._admit_realtime(key, self._rt_spec(city, family, n), t)
            if got is not None:
                self._rt_held.append(key)
                self._spend(got[0], t, STEP_S)
                return got[0], n, got[1]
        return None

    def _admit_realtime(self, key: str, spec: WorkloadSpec, t: float) -> tuple[Placement, bool] | None:
        """One real-time ask through the cycle, preempting batch work where the cycle says so; held if admitted."""
        ask = Ask(key, spec, REALTIME_CLASS, t)
        r = self._cycle([ask])
        preempted = bool(r.preempt)
        if preempted:  # the victims stop now; the ask is admitted on what they leave
            for p in r.preempt:
                self._preempt(p, t)
            r = self._cycle([replace(ask, awaiting_preemption=True)])
        if not r.admitted:
            return None
        a = r.admitted[0]
        self._hold(held_of(a.placement, key, self.rt_tenant, REALTIME_CLASS, a.family, t))
        self.res.decisions += 1
        return a.placement, preempted

    @staticmethod
    def _room(caps: dict[str, DCCapacity], sites: Sequence[str], family: str, family_of: dict[str, str]) -> int:
        """The largest real-time piece of ``family`` one of ``sites`` can take on what is free there."""
        room = 0
        for d in sites:
            cap = caps.get(d)
            if cap is not None and cap.alive:
                free = max((n for m, n in cap.free.items() if family == Family.ANY.value or family_of.get(m) == family),
                           default=0)
                room = max(room, min(free, int(cap.free_cpus // RT_CPUS_PER_ACCELERATOR),
                                     int(cap.free_memory_gb // RT_MEMORY_GB_PER_ACCELERATOR)))
        return room


def simulate(policy: Policy, network: Network, workload: Workload, progress: Progress | None = None, *,
             tenants: Tenants | None = None, realtime_tenant: str | None = None,
             batch_class: str = BATCH_CLASS) -> PolicyResult:
    """Replay ``workload`` on ``network`` with ``policy``; deterministic for a given policy seed.

    ``tenants``: who shares the network (None: one tenant holds it all); batch jobs run in
    ``batch_class`` (where their tenant may use it), real-time demand as ``realtime_tenant``
    (default: the default tenant, if it may use the realtime class).
    """
    return Simulation(policy, network, workload, progress, tenants=tenants, realtime_tenant=realtime_tenant,
                      batch_class=batch_class).run()
