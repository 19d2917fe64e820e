"""The discrete-event simulator: one policy, the whole network, simulated capacity.

Each data center starts empty (:func:`westflow.capacity.full_capacity`). Time runs in
one-minute steps; inside a step, batch arrivals and completions are events at their
own second. At each step boundary the real-time demand of every origin city is
placed by the policy under test (``Policy.place``, the one the CLI uses) on what
batch work left free, and holds it for the step. Demand no DC within the tier's
bound can hold is dropped, never sent further: the policy's own filter decides,
and a policy that ignores the bound (``cheapest``) shows up as SLA violations.
Batch jobs that fit nowhere wait in a queue (FIFO per size, smaller jobs may
backfill) and start when a completion frees room. No preemption.

What the network holds is the capacity model's :class:`~westflow.capacity.Resources`
per DC; what the policy sees, and the utilisation measured, come from it through
:func:`~westflow.capacity.capacity_of`, as for live capacity and reservations.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from westflow.capacity import DCCapacity, Resources, capacity_of, inventory_totals, utilisation
from westflow.errors import InfeasibleError
from westflow.inventory import REALTIME, Family, Network, Region
from westflow.placement import Placement, Policy, Reason
from westflow.simulator.demand import STEP_S, Workload
from westflow.spec import AcceleratorRequest, WorkloadSpec

__all__ = ["PolicyResult", "Simulation", "simulate", "RT_CPUS_PER_ACCELERATOR", "RT_MEMORY_GB_PER_ACCELERATOR"]

RT_CPUS_PER_ACCELERATOR = 1.0
RT_MEMORY_GB_PER_ACCELERATOR = 8.0

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
    energy_kwh: float = 0.0
    cost_cny: float = 0.0
    batch_jobs: int = 0
    batch_started: int = 0
    batch_delay_s: list[float] = field(default_factory=list)
    batch_acc_hours: float = 0.0
    batch_west_acc_hours: float = 0.0
    batch_dc: dict[str, int] = field(default_factory=dict)
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

    @property
    def west_share(self) -> float:
        return self.batch_west_acc_hours / self.batch_acc_hours if self.batch_acc_hours else 0.0


class _Network:
    """What the simulated network holds per DC, and what is derived from it: the capacity snapshot
    ``place()`` reads and each DC's utilisation (each rebuilt only for the DCs that changed)."""

    def __init__(self, network: Network) -> None:
        self.totals = {d.id: inventory_totals(d) for d in network.data_centers}
        self.used = {dc: Resources() for dc in self.totals}
        self._snap = {dc: capacity_of(t, Resources()) for dc, t in self.totals.items()}
        self._dirty: set[str] = set()
        self._max_free: int | None = None

    def take(self, dc: str, held: Resources) -> None:
        self.used[dc] = self.used[dc].plus(held)
        self._changed(dc)

    def release(self, dc: str, held: Resources) -> None:
        self.used[dc] = self.used[dc].minus(held)
        self._changed(dc)

    def _changed(self, dc: str) -> None:
        self._dirty.add(dc)
        self._max_free = None

    def capacity(self) -> dict[str, DCCapacity]:
        """The snapshot ``place()`` reads."""
        for dc in self._dirty:
            self._snap[dc] = capacity_of(self.totals[dc], self.used[dc])
        self._dirty.clear()
        return self._snap

    def max_free(self) -> int:
        """The largest free pool of any DC (no DC can hold a larger request)."""
        if self._max_free is None:
            most = 0
            for c in self.capacity().values():
                for n in c.free.values():
                    most = max(most, n)
            self._max_free = most
        return self._max_free


_Running = tuple[float, int, int, str, Resources]  # (end, seq, job, dc, held)


class Simulation:
    """One policy replaying one workload: a single event loop over real-time steps and batch events."""

    def __init__(self, policy: Policy, network: Network, workload: Workload,
                 progress: Progress | None = None) -> None:
        self.policy, self.network, self.workload, self.progress = policy, network, workload, progress
        self.res = PolicyResult(policy.name, workload.window_s, batch_jobs=len(workload.jobs))
        self.net = _Network(network)
        self.region_of = {d.id: d.region for d in network.data_centers}
        self.bound = network.tiers[REALTIME].max_rtt_ms
        self._regions = {r.value: [d.id for d in network.data_centers if d.region is r] for r in Region}
        self._region_totals = {r: Resources({i: self.net.totals[i].accelerator_count for i in ids},
                                            sum(self.net.totals[i].cpus for i in ids))
                               for r, ids in self._regions.items()}
        self._area = dict.fromkeys(self.net.totals, 0.0)  # integral of each DC's utilisation over time
        self._last_t = 0.0
        self._running: list[_Running] = []
        self._seq = 0
        self._queues: dict[int, deque[int]] = {}
        self._queued = 0
        self._next_job = 0
        self._rt_held: list[tuple[str, Resources]] = []
        self._rt_specs: dict[tuple[str, int], WorkloadSpec] = {}

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
            self._place_realtime(step)
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
        self._events(until=math.inf)  # no more real-time: remaining arrivals and the queue run to completion
        self._finish(series)
        res.wall_s = time.perf_counter() - wall0
        if self.progress:
            self.progress(self.policy.name, 1.0)
        return res

    def _events(self, until: float) -> None:
        """Batch completions and arrivals before ``until``, in time order (completions first on ties)."""
        jobs, running = self.workload.jobs, self._running
        while True:
            t_done = running[0][0] if running else math.inf
            t_arr = jobs[self._next_job].submit_s if self._next_job < len(jobs) else math.inf
            t = min(t_done, t_arr)
            if t >= until:
                return
            self._account(t)
            if t_done <= t_arr:
                _, _, _, dc, held = heapq.heappop(running)
                self.net.release(dc, held)
                self._drain_queue(t)
            else:
                self._arrive(self._next_job, t)
                self._next_job += 1

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

    # -- batch -----------------------------------------------------------------------------------
    def _start(self, i: int, t: float) -> bool:
        spec, job, res = self.workload.batch_specs[i], self.workload.jobs[i], self.res
        try:
            p = self.policy.place(spec, self.network, self.net.capacity())
        except InfeasibleError:
            return False
        res.decisions += 1
        n = spec.accelerator.count
        held = Resources.of(p.accelerator_model, n, spec.cpus, spec.memory_gb)
        self.net.take(p.data_center, held)
        heapq.heappush(self._running, (t + job.duration_s, self._seq, i, p.data_center, held))
        self._seq += 1
        res.batch_started += 1
        res.batch_delay_s.append(t - job.submit_s)
        self._spend(p)
        ah = n * spec.duration_hours
        res.batch_acc_hours += ah
        if self.region_of[p.data_center] is Region.WEST:
            res.batch_west_acc_hours += ah
        res.batch_dc[p.data_center] = res.batch_dc.get(p.data_center, 0) + 1
        return True

    def _drain_queue(self, t: float) -> None:
        """Start queued jobs that now fit: oldest first among sizes that can fit anywhere."""
        if not self._queued:
            return
        blocked: set[int] = set()
        while True:
            room = self.net.max_free()
            best_n, best_i = -1, -1
            for n, q in self._queues.items():
                if q and n <= room and n not in blocked and (best_i < 0 or q[0] < best_i):
                    best_n, best_i = n, q[0]
            if best_i < 0:
                return
            if self._start(best_i, t):
                self._queues[best_n].popleft()
                self._queued -= 1
            else:
                blocked.add(best_n)

    def _arrive(self, i: int, t: float) -> None:
        n = self.workload.jobs[i].accelerators
        q = self._queues.get(n)
        if (q and len(q)) or not self._start(i, t):
            self._queues.setdefault(n, deque()).append(i)
            self._queued += 1

    def _spend(self, p: Placement) -> None:
        self.res.energy_kwh += p.energy_kwh
        self.res.cost_cny += p.energy_cost_cny + p.transfer_cost_cny

    # -- real time -------------------------------------------------------------------------------
    def _rt_spec(self, city: str, n: int) -> WorkloadSpec:
        """The real-time spec of ``n`` accelerators for ``city`` (cached: frozen values)."""
        s = self._rt_specs.get((city, n))
        if s is None:
            s = self._rt_specs[(city, n)] = WorkloadSpec(
                name=f"rt-{city}", tier=REALTIME, origin=city, accelerator=AcceleratorRequest(Family.ANY, n),
                cpus=RT_CPUS_PER_ACCELERATOR * n, memory_gb=RT_MEMORY_GB_PER_ACCELERATOR * n,
                duration_hours=STEP_S / 3600)
        return s

    def _release_realtime(self) -> None:
        for dc, held in self._rt_held:
            self.net.release(dc, held)
        self._rt_held.clear()

    def _place_realtime(self, step: int) -> None:
        w, res = self.workload, self.res
        row = w.rt_demand[step % len(w.rt_demand)]
        reqs = w.rt_requests[step % len(w.rt_requests)]
        for c, city in enumerate(w.rt_cities):
            want = row[c]
            if want <= 0:
                continue
            res.rt_demand_acc_min += want
            res.rt_requests += reqs[c]
            per_acc = reqs[c] / want
            left = want
            tries = 0
            while left > 0 and tries < 2 * len(self.net.totals):
                tries += 1
                got = self._place_piece(city, left)
                if got is None:
                    break
                p, n = got
                res.decisions += 1
                held = Resources.of(p.accelerator_model, n, p.spec.cpus, p.spec.memory_gb)
                self.net.take(p.data_center, held)
                self._rt_held.append((p.data_center, held))
                self._spend(p)
                if self.bound is not None and p.rtt_ms is not None and p.rtt_ms > self.bound:
                    res.rt_beyond_acc_min += n
                    res.rt_beyond_requests += n * per_acc
                left -= n
            if left > 0:
                res.rt_dropped_acc_min += left
                res.rt_dropped_requests += left * per_acc

    def _place_piece(self, city: str, left: int) -> tuple[Placement, int] | None:
        """Place as much of ``left`` accelerators for ``city`` as one DC can take; None if none can."""
        caps = self.net.capacity()
        # no DC can hold more than its largest free pool: asking for more must fail, so
        # ask for that much (the policy still decides where, or that nothing fits)
        ask = min(left, self.net.max_free())
        if ask <= 0:
            return None
        try:
            return self.policy.place(self._rt_spec(city, ask), self.network, caps), ask
        except InfeasibleError as exc:
            # the largest piece one DC the policy accepted (all but capacity) can take
            room = 0
            for r in exc.rejected:
                if r.reason is Reason.CAPACITY:
                    cap = caps[r.data_center]
                    room = max(room, min(max(cap.free.values(), default=0),
                                         int(cap.free_cpus // RT_CPUS_PER_ACCELERATOR),
                                         int(cap.free_memory_gb // RT_MEMORY_GB_PER_ACCELERATOR)))
        if room <= 0:
            return None
        try:
            return self.policy.place(self._rt_spec(city, room), self.network, caps), room
        except InfeasibleError:
            return None


def simulate(policy: Policy, network: Network, workload: Workload,
             progress: Progress | None = None) -> PolicyResult:
    """Replay ``workload`` on ``network`` with ``policy``; deterministic for a given policy seed."""
    return Simulation(policy, network, workload, progress).run()
