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
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from westflow.capacity import DCCapacity, full_capacity
from westflow.errors import InfeasibleError
from westflow.inventory import REALTIME, Family, Network, Region
from westflow.placement import Placement, Policy, Reason
from westflow.simulator.demand import (
    STEP_S,
    Workload,
)
from westflow.spec import AcceleratorRequest, WorkloadSpec

__all__ = ["PolicyResult", "simulate", "RT_CPUS_PER_ACCELERATOR", "RT_MEMORY_GB_PER_ACCELERATOR"]

RT_CPUS_PER_ACCELERATOR = 1.0
RT_MEMORY_GB_PER_ACCELERATOR = 8.0


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


class _State:
    """Simulated free capacity per DC and the DCCapacity snapshot handed to the policy."""

    def __init__(self, network: Network) -> None:
        self.dcs = network.data_centers
        start = full_capacity(network)
        self.free = {d.id: dict(start[d.id].free) for d in self.dcs}
        self.cpus = {d.id: start[d.id].free_cpus for d in self.dcs}
        self.mem = {d.id: start[d.id].free_memory_gb for d in self.dcs}
        self.total = {d.id: d.accelerator_total for d in self.dcs}
        self.used = {d.id: 0 for d in self.dcs}
        self.snap: dict[str, DCCapacity] = dict(start)
        self.dirty: set[str] = set()

    def snapshot(self) -> dict[str, DCCapacity]:
        for dc in self.dirty:
            tot = self.total[dc]
            self.snap[dc] = DCCapacity(dict(self.free[dc]), self.cpus[dc], self.mem[dc],
                                       self.used[dc] / tot if tot else 0.0)
        self.dirty.clear()
        return self.snap

    def take(self, dc: str, model: str | None, n: int, cpus: float, mem: float, sign: int = 1) -> None:
        if model is not None:
            self.free[dc][model] -= sign * n
            self.used[dc] += sign * n
        self.cpus[dc] -= sign * cpus
        self.mem[dc] -= sign * mem
        self.dirty.add(dc)

    def max_free(self) -> int:
        return max((max(f.values(), default=0) for f in self.free.values()), default=0)

    def fits_somewhere(self, n: int) -> bool:
        """Whether some pool of some DC has ``n`` accelerators free (a necessary condition)."""
        for f in self.free.values():
            for v in f.values():
                if v >= n:
                    return True
        return False


def simulate(policy: Policy, network: Network, workload: Workload,
             progress: Callable[[str, float], None] | None = None) -> PolicyResult:
    """Replay ``workload`` on ``network`` with ``policy``; deterministic for a given policy seed."""
    wall0 = time.perf_counter()
    res = PolicyResult(policy.name, workload.window_s)
    st = _State(network)
    place = policy.place
    region_of = {d.id: d.region for d in network.data_centers}
    area = {d.id: 0.0 for d in network.data_centers}
    last_t = 0.0
    window = workload.window_s

    def account(t: float) -> None:
        nonlocal last_t
        t = min(t, window)
        if t > last_t:
            dt = t - last_t
            for dc, u in st.used.items():
                area[dc] += u * dt
            last_t = t

    jobs = workload.jobs
    specs = workload.batch_specs
    res.batch_jobs = len(jobs)
    running: list[tuple[float, int, str, str | None, int, float, float]] = []
    queues: dict[int, deque[int]] = {}
    queued = 0
    seq = 0

    def start(i: int, t: float) -> bool:
        nonlocal seq
        spec = specs[i]
        try:
            p = place(spec, network, st.snapshot())
        except InfeasibleError:
            return False
        res.decisions += 1
        n = spec.accelerator.count
        st.take(p.data_center, p.accelerator_model, n, spec.cpus, spec.memory_gb)
        heapq.heappush(running, (t + jobs[i].duration_s, seq, p.data_center, p.accelerator_model, n,
                                 spec.cpus, spec.memory_gb))
        seq += 1
        res.batch_started += 1
        res.batch_delay_s.append(t - jobs[i].submit_s)
        res.energy_kwh += p.energy_kwh
        res.cost_cny += p.energy_cost_cny + p.transfer_cost_cny
        ah = n * spec.duration_hours
        res.batch_acc_hours += ah
        if region_of[p.data_center] is Region.WEST:
            res.batch_west_acc_hours += ah
        res.batch_dc[p.data_center] = res.batch_dc.get(p.data_center, 0) + 1
        return True

    def drain_queue(t: float) -> None:
        """Start queued jobs that now fit: oldest first among sizes that can fit anywhere."""
        nonlocal queued
        if not queued:
            return
        blocked: set[int] = set()
        while True:
            room = st.max_free()
            best_n, best_i = -1, -1
            for n, q in queues.items():
                if q and n <= room and n not in blocked and (best_i < 0 or q[0] < best_i):
                    best_n, best_i = n, q[0]
            if best_i < 0:
                return
            if start(best_i, t):
                queues[best_n].popleft()
                queued -= 1
            else:
                blocked.add(best_n)

    def arrive(i: int, t: float) -> None:
        nonlocal queued
        n = jobs[i].accelerators
        q = queues.get(n)
        if (q and len(q)) or not start(i, t):
            queues.setdefault(n, deque()).append(i)
            queued += 1

    # real-time specs are cached per (city, accelerators): frozen values
    rt_specs: dict[tuple[str, int], WorkloadSpec] = {}

    def rt_spec(city: str, n: int) -> WorkloadSpec:
        s = rt_specs.get((city, n))
        if s is None:
            s = rt_specs[(city, n)] = WorkloadSpec(
                name=f"rt-{city}", tier=REALTIME, origin=city, accelerator=AcceleratorRequest(Family.ANY, n),
                cpus=RT_CPUS_PER_ACCELERATOR * n, memory_gb=RT_MEMORY_GB_PER_ACCELERATOR * n,
                duration_hours=STEP_S / 3600)
        return s

    bound = network.tiers[REALTIME].max_rtt_ms
    held: list[tuple[str, str | None, int, float, float]] = []

    def place_realtime(step: int) -> None:
        row = workload.rt_demand[step % len(workload.rt_demand)]
        reqs = workload.rt_requests[step % len(workload.rt_requests)]
        for c, city in enumerate(workload.rt_cities):
            want = row[c]
            if want <= 0:
                continue
            res.rt_demand_acc_min += want
            res.rt_requests += reqs[c]
            per_acc = reqs[c] / want
            left = want
            tries = 0
            while left > 0 and tries < 2 * len(st.dcs):
                tries += 1
                snap = st.snapshot()
                # no DC can hold more than its largest free pool: asking for more must fail, so
                # ask for that much (the policy still decides where, or that nothing fits)
                ask = left if st.fits_somewhere(left) else st.max_free()
                if ask <= 0:
                    break
                try:
                    p: Placement = place(rt_spec(city, ask), network, snap)
                    n = ask
                except InfeasibleError as exc:
                    # the largest piece one DC the policy accepted (all but capacity) can take
                    room = 0
                    for r in exc.rejected:
                        if r.reason is Reason.CAPACITY:
                            d = r.data_center
                            fit = min(max(st.free[d].values(), default=0),
                                      int(st.cpus[d] // RT_CPUS_PER_ACCELERATOR),
                                      int(st.mem[d] // RT_MEMORY_GB_PER_ACCELERATOR))
                            room = max(room, fit)
                    if room <= 0:
                        break
                    try:
                        p = place(rt_spec(city, room), network, snap)
                    except InfeasibleError:
                        break
                    n = room
                res.decisions += 1
                spec = p.spec
                st.take(p.data_center, p.accelerator_model, n, spec.cpus, spec.memory_gb)
                held.append((p.data_center, p.accelerator_model, n, spec.cpus, spec.memory_gb))
                res.energy_kwh += p.energy_kwh
                res.cost_cny += p.energy_cost_cny + p.transfer_cost_cny
                if bound is not None and p.rtt_ms is not None and p.rtt_ms > bound:
                    res.rt_beyond_acc_min += n
                    res.rt_beyond_requests += n * per_acc
                left -= n
            if left > 0:
                res.rt_dropped_acc_min += left
                res.rt_dropped_requests += left * per_acc

    steps = workload.steps
    series: dict[str, list[float]] = {r.value: [] for r in Region}
    reg_total = {r.value: sum(st.total[d.id] for d in st.dcs if d.region is r) for r in Region}
    hour_acc = {r.value: 0.0 for r in Region}
    ji = 0
    n_jobs = len(jobs)
    report_every = max(1, steps // 20)
    for step in range(steps):
        t0 = step * STEP_S
        t1 = t0 + STEP_S
        # real-time holds last one step
        account(t0)
        for dc, model, n, cpus, mem in held:
            st.take(dc, model, n, cpus, mem, -1)
        held.clear()
        place_realtime(step)
        for r in Region:
            hour_acc[r.value] += sum(st.used[d.id] for d in st.dcs if d.region is r)
        # batch events inside the step, in time order (completions first on ties)
        while True:
            t_done = running[0][0] if running else math.inf
            t_arr = jobs[ji].submit_s if ji < n_jobs else math.inf
            t = min(t_done, t_arr)
            if t >= t1:
                break
            account(t)
            if t_done <= t_arr:
                _, _, dc, model, n, cpus, mem = heapq.heappop(running)
                st.take(dc, model, n, cpus, mem, -1)
                drain_queue(t)
            else:
                arrive(ji, t)
                ji += 1
        if (step + 1) % 60 == 0 or step == steps - 1:
            k = (step % 60) + 1
            for r in Region:
                series[r.value].append(hour_acc[r.value] / k / reg_total[r.value] if reg_total[r.value] else 0.0)
                hour_acc[r.value] = 0.0
        if progress and (step % report_every == 0):
            progress(policy.name, step / steps)
    account(window)
    for dc, model, n, cpus, mem in held:
        st.take(dc, model, n, cpus, mem, -1)
    held.clear()
    # drain: no more real-time; remaining arrivals and the queue run to completion
    while running or ji < n_jobs:
        t_done = running[0][0] if running else math.inf
        t_arr = jobs[ji].submit_s if ji < n_jobs else math.inf
        if t_done <= t_arr:
            _, _, dc, model, n, cpus, mem = heapq.heappop(running)
            st.take(dc, model, n, cpus, mem, -1)
            drain_queue(t_done)
        else:
            arrive(ji, t_arr)
            ji += 1
    for d in st.dcs:
        res.util_dc[d.id] = area[d.id] / (st.total[d.id] * window) if st.total[d.id] else 0.0
    for r in Region:
        ids = [d.id for d in st.dcs if d.region is r]
        tot = sum(st.total[i] for i in ids)
        res.util_region[r.value] = sum(area[i] for i in ids) / (tot * window) if tot else 0.0
    res.util_series = series
    res.wall_s = time.perf_counter() - wall0
    if progress:
        progress(policy.name, 1.0)
    return res
