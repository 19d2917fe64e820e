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

**The window.** Work that runs past it (a batch job started late, a service) counts in the window's
cost, energy, utilisation and accelerator-hours only for what falls inside the window; what ran
after it is reported apart (:attr:`PolicyResult.batch_acc_hours_after`). The window is also
extended until all batch work ends (:attr:`PolicyResult.end_s`; no real-time demand after the
window): ``cost_all_cny`` and ``energy_all_kwh`` count every run in full, so policies that leave
different amounts of work past the window compare on the same work. Real-time SLA is
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
from collections.abc import Callable, Sequence
from dataclasses import replace

from westflow.admission_cycle import Admit, Ask, CycleResult, Held, Preempt, VictimIndex, admission_cycle, held_of
from westflow.capacity import Resources, utilisation
from westflow.errors import SpecError
from westflow.inventory import REALTIME, Network, Region
from westflow.placement import Placement, Policy
from westflow.simulator.clock import Clock, Pricer
from westflow.simulator.demand import STEP_S, Workload
from westflow.simulator.realtime import RT_CPUS_PER_ACCELERATOR, RT_MEMORY_GB_PER_ACCELERATOR, RealtimeMixin
from westflow.simulator.results import PolicyResult
from westflow.simulator.state import Holding, Run, SimNetwork
from westflow.simulator.stuck import StuckAsks
from westflow.simulator.tenancy import (
    BATCH_CLASS,
    REALTIME_CLASS,
    TenantStats,
    assign_tenants,
    class_for,
    whole_network,
)
from westflow.spec import WorkloadSpec
from westflow.tenants import Ledger, Tenants

__all__ = ["PolicyResult", "Simulation", "simulate", "RT_CPUS_PER_ACCELERATOR", "RT_MEMORY_GB_PER_ACCELERATOR"]

MAX_RETRIES = 4  # cycles run again at one instant after preemptions freed capacity

Progress = Callable[[str, float], None]


class Simulation(RealtimeMixin):
    """One policy replaying one workload: a single event loop over real-time steps and batch events.

    **Stuck asks** (speed; the same decisions): a pending ask a cycle left waiting (on capacity, quota, or
    a deadline it cannot meet there) stays *stuck* until the state meets every condition a cycle needs to
    admit it or preempt for it: room in a DC its quota allows, or victims it may take
    (:class:`~westflow.simulator.stuck.StuckAsks`, judged per need after the events that may loosen them:
    a release where it could fit, one by its tenant or cohort, new work it could preempt). A later cycle
    gets only the asks that are not stuck: the stuck ones admit nothing and preempt no one there, and they
    would not change the order of the others (fair shares move only on admissions).
    ``skip_stuck = False`` sends every pending ask to every cycle (the reference the tests compare with).

    **Victims kept** (speed; the same decisions): the held rows as preemption reads them are one
    :class:`~westflow.admission_cycle.VictimIndex`, updated as work starts and ends, instead of one
    built by each cycle that looks for victims. ``keep_victims = False``: each cycle builds its own.
    """

    skip_stuck = True
    keep_victims = True

    def __init__(self, policy: Policy, network: Network, workload: Workload, progress: Progress | None = None,
                 *, tenants: Tenants | None = None, realtime_tenant: str | None = None,
                 batch_class: str = BATCH_CLASS, clock: Clock | None = None) -> None:
        self.policy, self.network, self.workload, self.progress = policy, network, workload, progress
        self.clock = Clock() if clock is None else clock
        self.pricer = Pricer(network, self.clock)
        # a policy that defers gets each batch job's deadline and the clock's now; the baselines run at once
        self.defers = policy.defers and self.clock.deadline_slack is not None
        self.tenants = whole_network(network) if tenants is None else tenants
        self.res = PolicyResult(policy.name, workload.window_s, batch_jobs=len(workload.jobs),
                                cost_hourly=[0.0] * max(1, math.ceil(workload.window_s / 3600)))
        self.net = SimNetwork(network)
        self.region_of = {d.id: d.region for d in network.data_centers}
        self.bound = network.tiers[REALTIME].max_rtt_ms  # SLA misses
        self.limit = network.tiers[REALTIME].limit_ms  # eligibility (the guard band)
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
        self._holding = Holding(self.held)
        self._victims = VictimIndex(self.tenants)  # the held rows as preemption reads them, kept as they change
        self.pending: dict[str, Ask] = {}
        self._left = [j.duration_s for j in workload.jobs]  # work left per job
        self._started = [False] * len(workload.jobs)
        self._running: list[tuple[float, int, str]] = []  # heap of (end, seq, key)
        self._runs: dict[str, Run] = {}
        self._seq = 0
        self._next_job = 0
        self._rt_held: list[str] = []
        self._rt_specs: dict[tuple[str, str, int, float], WorkloadSpec] = {}
        self._family_of = {p.model: p.family.value for d in network.data_centers for p in d.pools}
        self._sites_cache: dict[tuple[str, str], tuple[tuple[str, ...], int]] = {}
        self._services: list[tuple[float, str]] = []  # heap of (end, key) of services held
        self._next_service = 0
        self._waiting: dict[str, Ask] = {}  # the deferred asks, by key
        self._deadline = [self.clock.deadline(j.submit_s, j.duration_s) for j in workload.jobs]
        self._ready = [j.submit_s for j in workload.jobs]  # submit, or the start the policy chose (deferral)
        self._deferred: list[tuple[float, str]] = []  # heap of (start, key) of asks deferred to cheaper hours
        self._latest: list[tuple[float, int]] = []  # heap of (latest start meeting the deadline, job)
        # pending asks no cycle can admit until something changes (class doc)
        self._stuck = StuckAsks(network, self.tenants, self.ledger, self.net.capacity, defers=self.defers)

    def _realtime_tenant(self) -> str:
        """The tenant real-time demand runs as: the default tenant if it may use the realtime class, else
        the first that may."""
        t = self.tenants
        for name in (t.default_tenant, *t.tenants):
            if REALTIME_CLASS in t.tenants[name].priority_classes:
                return name
        raise SpecError("tenants", sorted(t.tenants), f"a tenant allowed the {REALTIME_CLASS!r} priority class",
                        problem="None of", fix="let one tenant use realtime (for the real-time demand).")

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
            t_def = self._deferred[0][0] if self._deferred else math.inf
            t = min(t_done, t_arr, t_def)
            if t >= until:
                return
            self._account(t)
            while running and running[0][0] == t:
                _, seq, key = heapq.heappop(running)
                run = self._runs.get(key)
                if run is not None and run.seq == seq:  # (else preempted meanwhile)
                    del self._runs[key]
                    self._release(key)
                    self.res.end_s = max(self.res.end_s, t)
                    dl = self._deadline[run.job]
                    if dl is not None and t > dl + 1e-6:
                        self.res.deadline_misses += 1
            while self._deferred and self._deferred[0][0] <= t:
                key = heapq.heappop(self._deferred)[1]
                self.pending[key] = self._waiting.pop(key)
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
    def _cycle(self, asks: Sequence[Ask], t: float) -> CycleResult:
        """One admission cycle on the simulated network at simulated second ``t`` (the controller's, see the
        module doc); a policy that defers gets the clock's now (the baselines: flat prices, at once)."""
        return admission_cycle(asks, self._holding, tenants=self.tenants, network=self.network,
                               capacity=self.net.capacity(), policy=self.policy, ledger=self.ledger,
                               now=self.clock.wall(t) if self.defers else None,
                               victims=self._victims if self.keep_victims else None)

    def _hold(self, row: Held) -> None:
        self.held[row.key] = row
        self._victims.add(row)
        self.net.take(row.data_center, row.resources)
        self.ledger.add(row.tenant, row.region, row.family, row.resources)
        self._stuck.held(row)

    def _release(self, key: str) -> Held:
        row = self.held.pop(key)
        self._victims.remove(key)
        self.net.release(row.data_center, row.resources)
        self.ledger.add(row.tenant, row.region, row.family, row.resources, -1)
        self._stuck.released(row)
        return row

    def _inside(self, a: float, b: float) -> float:
        """Seconds of ``[a, b)`` inside the window."""
        return max(0.0, min(b, self.workload.window_s) - max(a, 0.0))

    def _bill(self, dc: str, energy_kwh: float, transfer_cny: float, a: float, b: float, c: float,
              sign: float = 1.0) -> None:
        """Charge a run at ``dc`` using ``energy_kwh`` over ``[a, b)`` (constant power), for ``[c, b)``: the energy
        at the DC's time-of-use tariff for the hours it runs, the transfer (``transfer_cny`` for the whole run)
        spread evenly. What falls inside the window goes into the window's totals and the hourly curve; all of
        it into the totals to the end of all work (``cost_all_cny``, ``energy_all_kwh``)."""
        if b <= a:
            return
        res, window = self.res, self.workload.window_s
        lo, hi = max(c, 0.0), min(b, window)
        e_rate, t_rate = sign * energy_kwh / (b - a), sign * transfer_cny / (b - a)
        if hi > lo:
            cny = self.pricer.bill(dc, e_rate, lo, hi, res.cost_hourly)
            if t_rate:
                cny += self.pricer.spread(t_rate, lo, hi, res.cost_hourly)
            res.energy_kwh += e_rate * (hi - lo)
            res.cost_cny += cny
            res.cost_all_cny += cny
            res.energy_all_kwh += e_rate * (hi - lo)
        after = max(lo, window)  # what runs after the window: only in the totals to the end of all work
        if b > after:
            res.cost_all_cny += self.pricer.bill(dc, e_rate, after, b, []) + t_rate * (b - after)
            res.energy_all_kwh += e_rate * (b - after)

    def _spend(self, p: Placement, t: float, duration_s: float) -> None:
        """Charge placement ``p`` of work running ``[t, t + duration_s)`` (only what is inside the window)."""
        self._bill(p.data_center, p.energy_kwh, p.transfer_cost_cny, t, t + duration_s, t)

    # -- batch -----------------------------------------------------------------------------------
    def _key(self, i: int) -> str:
        return f"job{i:07d}"  # (keys sort as the jobs do: the cycle's last tie-break)

    def _spec(self, i: int, tenant: str, left_s: float | None = None) -> WorkloadSpec:
        """Job ``i``'s spec for ``tenant`` (with ``left_s`` of work left, if given); with its deadline where the
        policy defers (see :mod:`westflow.simulator.clock`)."""
        spec = self.workload.batch_specs[i]
        changes: dict[str, object] = {}
        if tenant != spec.tenant:
            changes["tenant"] = tenant
        if left_s is not None:
            changes["duration_hours"] = max(left_s, 1.0) / 3600
        dl = self._deadline[i]
        if self.defers and dl is not None:
            changes["deadline"] = self.clock.as_datetime(dl)
            heapq.heappush(self._latest, (dl - self._left[i], i))
        return spec.copy(**changes) if changes else spec

    def _arrive(self, i: int) -> None:
        tenant = self.job_tenant[i]
        if self.defers:
            self.res.deadline_jobs += 1
        self.pending[self._key(i)] = Ask(self._key(i), self._spec(i, tenant), self.job_class[tenant],
                                         self.workload.jobs[i].submit_s)

    def _past_deadline(self, t: float) -> None:
        """Pending jobs that can no longer finish by their deadline lose it (placed at once, like a baseline's;
        the miss is counted when they finish)."""
        while self._latest and self._latest[0][0] < t:
            _, i = heapq.heappop(self._latest)
            dl, ask = self._deadline[i], self.pending.get(self._key(i))
            if dl is None or ask is None or ask.spec.deadline is None or t <= dl - self._left[i]:
                continue  # running, deferred (its start meets the deadline), or a later entry stands
            self.pending[ask.key] = replace(ask, spec=ask.spec.copy(deadline=None))
            self._stuck.discard(ask.key)

    def _defer(self, key: str, start_at: float, t: float) -> None:
        """Take an ask the policy deferred out of the queue until its start (a whole simulated second, after
        ``t``: the cycle then runs at or after the start, and admits it)."""
        start = max(float(math.ceil(start_at - self.clock.epoch_s)), math.floor(t) + 1.0)
        self._waiting[key] = self.pending.pop(key)
        self._stuck.discard(key)
        heapq.heappush(self._deferred, (start, key))
        self._ready[int(key[3:])] = start

    def _admit_batch(self, t: float) -> None:
        """Cycles for the pending batch work at ``t``: admit what fits; apply preemptions at once and
        cycle again (bounded) so the preemptors take what their victims left."""
        if self._latest:
            self._past_deadline(t)
        r, since = None, 0
        for _ in range(MAX_RETRIES):
            if not self.pending:
                return
            stuck = self._stuck
            if self.skip_stuck and stuck:
                stuck.loosen(self.clock.wall(t) if self.defers else None)
            asks = [a for k, a in self.pending.items() if k not in stuck] if stuck else list(self.pending.values())
            if not asks:
                return  # every pending ask is stuck: the cycle would admit, defer and preempt nothing
            since = stuck.tick
            r = self._cycle(asks, t)
            for a in r.admitted:
                self._start(a, t)
            for wait in r.waiting:
                if wait.start_at is not None:
                    self._defer(wait.key, wait.start_at, t)
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
        if self.skip_stuck and r is not None and not r.preempt:  # what the last cycle left waiting
            self._stuck.stick((a for k, a in self.pending.items() if k not in self._stuck), since)

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
        self._runs[key] = Run(i, self._seq, t, left, p.energy_kwh, p.transfer_cost_cny, n)
        stats = res.tenants[tenant]
        if not self._started[i]:
            self._started[i] = True
            res.batch_started += 1
            submit = self.workload.jobs[i].submit_s
            res.batch_delay_s.append(t - submit)
            res.deferred_s.append(max(0.0, min(t, self._ready[i]) - submit))
            res.queue_wait_s.append(max(0.0, t - max(submit, self._ready[i])))
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
            self._bill(row.data_center, run.energy_kwh, run.transfer_cny, run.start, end, t, sign=-1.0)  # refund
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
            spec = self._spec(i, row.tenant, unrun)
            if spec.deadline is not None and t > (self._deadline[i] or 0.0) - unrun:
                spec = spec.copy(deadline=None)  # too late to meet it: at once
            self.pending[key] = Ask(key, spec, row.priority_class, self.workload.jobs[i].submit_s)



def simulate(policy: Policy, network: Network, workload: Workload, progress: Progress | None = None, *,
             tenants: Tenants | None = None, realtime_tenant: str | None = None,
             batch_class: str = BATCH_CLASS, clock: Clock | None = None) -> PolicyResult:
    """Replay ``workload`` on ``network`` with ``policy``; deterministic for a given policy seed.

    ``clock``: where simulated time sits on the wall clock (time-of-use prices) and the batch deadline
    rule (:class:`~westflow.simulator.clock.Clock`; default: ``DEFAULT_EPOCH``, ``DEFAULT_DEADLINE_SLACK``).
    ``tenants``: who shares the network (None: one tenant holds it all); batch jobs run in
    ``batch_class`` (where their tenant may use it), real-time demand as ``realtime_tenant``
    (default: the default tenant, if it may use the realtime class).
    """
    return Simulation(policy, network, workload, progress, tenants=tenants, realtime_tenant=realtime_tenant,
                      batch_class=batch_class, clock=clock).run()
