"""Real-time work in the simulator: each minute's demand per origin city, and long-lived services.

A mixin of :class:`~westflow.simulator.engine.Simulation` (the engine's state is declared below):
demand is placed in pieces through the admission cycle, preempting best-effort batch where the
cycle says so; what no DC within the tier's bound can hold is dropped. Eligibility keeps the
tier's guard band (``limit_ms``: a DC is a candidate only within it, for a policy that respects
latency); SLA misses count against the bound itself (``max_rtt_ms``). Every admitted piece is
recorded per (DC, origin city) for the RTT distribution (:func:`westflow.latency_margin.realtime_margin`).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import replace

from westflow.admission_cycle import Ask, CycleResult, Held, Preempt, held_of
from westflow.capacity import DCCapacity
from westflow.inventory import REALTIME, Family, Network
from westflow.placement import Placement, Policy
from westflow.simulator.demand import STEP_S, Service, Workload
from westflow.simulator.results import PolicyResult
from westflow.simulator.state import SimNetwork
from westflow.simulator.tenancy import REALTIME_CLASS
from westflow.spec import AcceleratorRequest, WorkloadSpec

__all__ = ["RealtimeMixin", "RT_CPUS_PER_ACCELERATOR", "RT_MEMORY_GB_PER_ACCELERATOR"]

RT_CPUS_PER_ACCELERATOR = 1.0
RT_MEMORY_GB_PER_ACCELERATOR = 8.0


class RealtimeMixin:
    """The real-time half of the engine."""

    policy: Policy
    network: Network
    workload: Workload
    res: PolicyResult
    net: SimNetwork
    bound: float | None   # the tier's bound: placements beyond it are SLA misses
    limit: float | None   # the bound less the guard band: where a latency-respecting policy may place
    rt_tenant: str
    _rt_held: list[str]
    _rt_specs: dict[tuple[str, str, int, float], WorkloadSpec]
    _family_of: dict[str, str]
    _sites_cache: dict[tuple[str, str], tuple[tuple[str, ...], int]]
    _services: list[tuple[float, str]]
    _next_service: int

    def _cycle(self, asks: Sequence[Ask], t: float) -> CycleResult:
        raise NotImplementedError

    def _hold(self, row: Held) -> None:
        raise NotImplementedError

    def _release(self, key: str) -> Held:
        raise NotImplementedError

    def _preempt(self, p: Preempt, t: float) -> None:
        raise NotImplementedError

    def _inside(self, a: float, b: float) -> float:
        raise NotImplementedError

    def _spend(self, p: Placement, t: float, duration_s: float) -> None:
        raise NotImplementedError

    def _beyond(self, p: Placement) -> bool:
        """Whether a placement misses the tier's bound (an SLA miss)."""
        return self.bound is not None and p.rtt_ms is not None and p.rtt_ms > self.bound

    def _placed(self, p: Placement, city: str, requests: float) -> None:
        """Record ``requests`` of ``city`` placed at ``p``'s DC (the RTT distribution)."""
        k = (p.data_center, city)
        self.res.rt_placed[k] = self.res.rt_placed.get(k, 0.0) + requests

    def _sites(self, city: str, family: str) -> tuple[tuple[str, ...], int]:
        """The DCs a real-time piece for ``city`` may go to (within the bound, for a policy that respects
        it), and the largest piece of ``family`` one of them could ever hold."""
        got = self._sites_cache.get((city, family))
        if got is not None:
            return got
        bound = self.limit if self.policy.respect_latency else None  # eligibility keeps the guard band
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
            self._placed(p, svc.city, 1.0)
            if self._beyond(p):
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
                self._placed(p, w.rt_cities[c], n * per_acc)
                if self._beyond(p):
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
        r = self._cycle([ask], t)
        preempted = bool(r.preempt)
        if preempted:  # the victims stop now; the ask is admitted on what they leave
            for p in r.preempt:
                self._preempt(p, t)
            r = self._cycle([replace(ask, awaiting_preemption=True)], t)
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
