"""The admission controller: one cycle reads the queue and live capacity, decides, and writes once.

A cycle, only while this process leads (:class:`~admission.lease.Leader`, a lease row with a
fencing epoch):

1. read the waiting (pending and deferred) and the holding workloads;
2. mark what no owner heartbeats any more (``stale_after_s``) abandoned, and waiting work that has
   waited past its ``max_wait`` expired, counted from its submission or, for work deferred to a later
   start, from that start (:meth:`~admission.rows.WorkloadRow.wait_from`: a deferred row never expires
   before its start);
3. read live capacity (a callable: the Ray federation in production, a fixed snapshot in tests)
   and take off what admitted work holds (:func:`westflow.capacity.after_holds`, the journal's rule);
4. decide with :func:`westflow.admission_cycle.admission_cycle` (the one policy the simulator runs) at
   the controller's clock: work placed to start later is written ``deferred`` with its start and note,
   and admitted by the first cycle at or after that start;
5. write every decision in one transaction that first checks the lease is still this one's
   (:meth:`~admission.workqueue.AdmissionQueue.apply`). A controller killed anywhere before the
   commit wrote nothing; one that lost its lease meanwhile writes nothing. So a workload is never
   admitted twice, and a successor repeats the cycle from the same durable state.

No Ray and no Dagster here: the capacity read is injected.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from admission.lease import Leader
from admission.rows import Admission, CycleWrite, Preemption, Waiting, WorkloadRow
from admission.specjson import spec_from_json
from admission.workqueue import AdmissionQueue
from westflow.admission_cycle import DEFERRED, Ask, CycleResult, Held, admission_cycle
from westflow.capacity import Capacity, Resources, after_holds
from westflow.errors import SpecError
from westflow.inventory import Network
from westflow.placement import Placement, Policy
from westflow.tenants import Tenants

__all__ = ["Controller", "CycleReport", "CapacityRead", "placement_summary", "holder_name", "as_held", "lease_name"]

CapacityRead = Callable[[], tuple[Capacity, Capacity | None]]  # (live free per DC, each DC's totals)


def lease_name(scope: str = "") -> str:
    """The lease the controllers of ``scope`` (one federation) contend for."""
    return f"controller:{scope}" if scope else "controller"


def holder_name() -> str:
    """This process, as a lease holder and in the decision log: host, pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle did (``led`` False: another controller leads; nothing was read or written)."""

    led: bool
    written: bool = False
    epoch: int | None = None
    admitted: tuple[str, ...] = ()
    waiting: int = 0
    preempting: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    abandoned: tuple[str, ...] = ()
    seconds: float = 0.0
    deferred: int = 0  # of ``waiting``: placed to start later

    def line(self) -> str:
        if not self.led:
            return "not leading"
        return (f"epoch {self.epoch}: admitted {len(self.admitted)}, waiting {self.waiting}"
                + (f" ({self.deferred} deferred)" if self.deferred else "") + ", preempting "
                f"{len(self.preempting)}, expired {len(self.expired)}, abandoned {len(self.abandoned)} "
                f"in {self.seconds * 1000:.0f} ms" + ("" if self.written else " (lease lost: nothing written)"))


def placement_summary(p: Placement) -> str:
    """The admitted placement as the queue records it (JSON)."""
    return json.dumps({"data_center": p.data_center, "ray_cluster": p.ray_cluster, "region": p.region,
                       "rtt_ms": p.rtt_ms, "accelerator_model": p.accelerator_model,
                       "energy_kwh": round(p.energy_kwh, 6), "cost_cny": round(p.cost_cny, 4),
                       "policy": p.policy}, sort_keys=True)


def as_held(r: WorkloadRow) -> Held:
    """An admitted (or preempting) row as the cycle sees it."""
    assert r.data_center is not None and r.region is not None and r.admitted_at is not None
    return Held(r.key, r.tenant, r.priority_class, r.data_center, r.region, r.family,
                Resources.of(r.accelerator_model, r.accelerators, r.cpus, r.memory_gb), r.admitted_at,
                r.state == "preempting")


class Controller:
    """Runs admission cycles against ``queue`` while it holds the controller lease."""

    def __init__(self, queue: AdmissionQueue, *, tenants: Tenants, network: Network, capacity: CapacityRead,
                 policy: Policy, holder: str | None = None, ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.time,
                 before_commit: Callable[[CycleWrite], None] | None = None, scope: str = "") -> None:
        self.queue = queue
        self.tenants = tenants
        self.network = network
        self.policy = policy
        self.holder = holder or holder_name()
        self.scope = scope  # the federation this controller admits for (see AdmissionQueue.submit)
        self.leader = Leader(queue, holder=self.holder, name=lease_name(scope), ttl_s=ttl_s, clock=clock)
        self._capacity = capacity
        self._clock = clock
        self._before_commit = before_commit

    def cycle(self) -> CycleReport:
        """One admission cycle if this controller leads (or can take the lease now)."""
        start = time.perf_counter()
        lease = self.leader.acquire()
        if lease is None:
            return CycleReport(led=False)
        now = self._clock()
        settings = self.tenants.admission
        pending, holding = self.queue.pending(self.scope), self.queue.holding(self.scope)
        stale = {r.key for r in (*pending, *holding) if now - r.heartbeat_at > settings.stale_after_s}
        expired = [r.key for r in pending if r.key not in stale and r.max_wait_s is not None
                   and now - r.wait_from() > r.max_wait_s]
        live_pending = [r for r in pending if r.key not in stale and r.key not in expired]
        live_holding = [r for r in holding if r.key not in stale]
        result, unreadable = self._decide(live_pending, live_holding, now)
        write = CycleWrite(
            admitted=tuple(Admission(
                a.key, a.placement.data_center, a.placement.ray_cluster, a.placement.region, a.family,
                a.placement.accelerator_model, a.placement.spec.accelerator.count if a.placement.accelerator_model
                else 0, float(a.placement.spec.cpus), float(a.placement.spec.memory_gb),
                placement_summary(a.placement), "borrowed quota" if a.borrowed else "within quota")
                for a in result.admitted),
            waiting=tuple(Waiting(w.key, json.dumps(dict(w.reasons)), w.start_at,
                                  dict(w.reasons).get(DEFERRED, "") if w.start_at is not None else "")
                          for w in result.waiting),
            preempt=tuple(Preemption(v, p.key, p.reason) for p in result.preempt for v in p.victims),
            expire=(*expired, *unreadable),
            abandon=tuple(sorted(stale)))
        if self._before_commit is not None:
            self._before_commit(write)
        written = self.queue.apply(write, lease)
        return CycleReport(True, written, lease.epoch, tuple(a.key for a in write.admitted), len(write.waiting),
                           tuple(p.victim for p in write.preempt), tuple(write.expire), write.abandon,
                           time.perf_counter() - start, sum(w.start_at is not None for w in write.waiting))

    def _decide(self, pending: Sequence[WorkloadRow], holding: Sequence[WorkloadRow], now: float,
                ) -> tuple[CycleResult, list[str]]:
        awaiting = {r.preempted_by for r in holding if r.state == "preempting"}
        asks, unreadable = [], []
        for r in pending:
            try:
                spec = spec_from_json(r.spec_json)
            except SpecError:
                unreadable.append(r.key)  # a row no westflow wrote: it can never be admitted
                continue
            asks.append(Ask(r.key, spec, r.priority_class, r.submitted_at, frozenset(r.exclude),
                            r.key in awaiting))
        held = [as_held(r) for r in holding]
        if not asks:
            return CycleResult((), (), ()), unreadable
        live, totals = self._capacity()
        per_dc: dict[str, Resources] = {}
        for h in held:
            per_dc[h.data_center] = per_dc.get(h.data_center, Resources()).plus(h.resources)
        free = after_holds(live, per_dc, totals)
        return admission_cycle(asks, held, tenants=self.tenants, network=self.network, capacity=free,
                               policy=self.policy, now=now), unreadable

    def run(self, stop: threading.Event, *, interval_s: float | None = None,
            log: Callable[[str], None] | None = None) -> None:
        """Cycle every ``interval_s`` (default: tenants.yaml's ``cycle_interval_s``) until ``stop`` is set."""
        every = interval_s if interval_s is not None else self.tenants.admission.cycle_interval_s
        last = ""
        try:
            while not stop.is_set():
                report = self.cycle()
                line = report.line()
                if log is not None and (report.admitted or report.preempting or report.expired
                                        or report.abandoned or line.split(":")[0] != last):
                    log(line)
                last = line.split(":")[0]
                stop.wait(every)
        finally:
            self.release()

    def release(self) -> None:
        """Give the lease up (a successor need not wait for it to expire)."""
        lease = self.leader.current()
        if lease is not None and lease.holder == self.holder:
            self.leader.release(lease)
