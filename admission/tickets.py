"""A step's place in the admission queue, from its own process: submit, wait, heartbeat, requeue, finish.

A step submits its spec and waits until a controller admits it. While it waits and while its
job runs, a heartbeat thread keeps its row alive (a row nobody beats is abandoned by the
controller and frees what it held) and watches for preemption. When no controller leads (no
``westflow controller`` runs: the embedded default, tests) a waiting step runs the cycle itself,
under the same lease, so exactly one process decides at a time either way.

Events (``on_event(kind, text)``): ``queued``, ``waiting`` (the reasons changed), ``deferred`` (placed to
start later, or its start moved: "deferred until 2026-11-30 09:00 Asia/Shanghai: deferred 14 h to the
09:00 valley band in helinger: 67 % cheaper than now"), ``admitted``, ``preempted``, ``requeued``,
``resumed``; the Dagster resource turns them into step log lines.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from admission.controller import Controller
from admission.rows import WorkloadRow, start_text
from admission.specjson import spec_to_json
from admission.workqueue import AdmissionQueue
from westflow.admission_cycle import default_priority_class
from westflow.capacity import Capacity, full_capacity
from westflow.errors import WestflowError
from westflow.inventory import Network
from westflow.placement import Placement, Policy
from westflow.spec import WorkloadSpec
from westflow.tenants import Tenants

__all__ = ["StepTicket", "QueueTimeout", "Waited", "FINAL", "admitted_placement"]

FINAL = ("finished", "failed", "expired", "cancelled", "abandoned")
Event = Callable[[str, str], None]


def admitted_placement(row: WorkloadRow, spec: WorkloadSpec, network: Network, policy: Policy) -> Placement:
    """What an admitted row holds, as a Placement: ``place()`` on its DC offering only its accelerator model
    (a portable spec at a DC with CUDA and Ascend pools must run on the pool the cycle charged). A spec placed
    in time (``start_after``/``deadline``) is placed at its admission's clock, so it starts then, as the cycle
    decided, and is not deferred again by a later wall clock."""
    assert row.data_center is not None, row.key
    empty = full_capacity(network)[row.data_center]
    if row.accelerator_model:
        empty = replace(empty, free={row.accelerator_model: empty.free.get(row.accelerator_model, 0)})
    timed = spec.start_after is not None or spec.deadline is not None
    return policy.place(spec, network, {row.data_center: empty}, now=row.admitted_at if timed else None)


class QueueTimeout(WestflowError):
    """The step waited past its ``max_wait`` (or its row ended) without being admitted."""

    def __init__(self, key: str, state: str, waited_s: float, reasons: dict[str, str]) -> None:
        self.key, self.state, self.waited_s, self.reasons = key, state, waited_s, reasons
        why = "; ".join(f"{dc}: {r}" for dc, r in sorted(reasons.items())) or "no reason recorded"
        super().__init__(f"Workload {key!r} was not admitted ({state} after {waited_s:.0f} s in the queue). "
                         f"Last reason per data center: {why}")


@dataclass(frozen=True, slots=True)
class Waited:
    """An admission: the row as admitted and how long this wait took."""

    row: WorkloadRow
    waited_s: float


def reasons_of(row: WorkloadRow) -> dict[str, str]:
    try:
        got = json.loads(row.reasons or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in got.items()} if isinstance(got, dict) else {}


class StepTicket:
    """One step's workload in ``queue`` (``key`` unique per step run)."""

    def __init__(self, queue: AdmissionQueue, key: str, *, controller: Controller | None = None,
                 poll_s: float = 0.5, heartbeat_s: float = 5.0, on_event: Event | None = None,
                 scope: str | None = None) -> None:
        self.queue = queue
        self.key = key
        self.controller = controller
        # the federation it is for: the self-serve controller's, unless given
        self.scope = scope if scope is not None else (controller.scope if controller is not None else "")
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self._on_event = on_event or (lambda kind, text: None)
        self.preempted = threading.Event()
        self.preempted_by: str | None = None
        self._stop_beat = threading.Event()
        self._beat: threading.Thread | None = None
        self.waited_s = 0.0
        self.preemptions = 0

    # -- the whole path ---------------------------------------------------------
    def admit(self, spec: WorkloadSpec, *, network: Network, policy: Policy, totals: Capacity, tenants: Tenants,
              owner: str, exclude: Iterable[str] = (), cancelled: Callable[[], bool] = lambda: False) -> Placement:
        """Queue ``spec`` (or requeue it without ``exclude`` after a loss or a preemption), wait, and place it
        where it was admitted.

        Raises InfeasibleError at once when no DC could run it even empty (``totals``: each DC's
        capacity when empty), a ConfigError for a tenant or priority class tenants.yaml does not
        allow, and :class:`QueueTimeout` when it is not admitted within its ``max_wait``.
        """
        out = frozenset(exclude)
        policy.place(spec, network, {dc: c for dc, c in totals.items() if dc not in out})
        if self.queue.get(self.key) is None:
            pclass = spec.priority_class or default_priority_class(spec)
            tenants.check(spec.tenant, pclass)
            max_wait = spec.max_wait_s if spec.max_wait_s is not None else tenants.admission.default_max_wait_s
            self.submit(spec, priority_class=pclass, max_wait_s=max_wait, owner=owner, exclude=out)
        else:
            why = (f"preempted by {self.preempted_by}" if self.preempted.is_set()
                   else f"failover away from {', '.join(sorted(out))}")
            self.requeue(exclude=out, reason=why)
        return admitted_placement(self.wait(cancelled=cancelled).row, spec, network, policy)

    # -- the queue ------------------------------------------------------------
    def submit(self, spec: WorkloadSpec, *, priority_class: str, max_wait_s: float | None, owner: str,
               exclude: Iterable[str] = ()) -> WorkloadRow:
        row = self.queue.submit(self.key, tenant=spec.tenant, priority_class=priority_class, priority=spec.priority,
                                spec_name=spec.name, spec_json=spec_to_json(spec), max_wait_s=max_wait_s,
                                owner=owner, exclude=tuple(exclude), scope=self.scope)
        self._on_event("queued", f"queued as {self.key} (tenant {row.tenant}, priority {row.priority_class})")
        self._start_heartbeat()
        return row

    def requeue(self, *, exclude: Iterable[str] = (), reason: str) -> WorkloadRow:
        """Back to pending after a lost DC or a preemption (its age is kept)."""
        preempted = self.preempted.is_set()
        row = self.queue.requeue(self.key, exclude=exclude, reason=reason, preempted=preempted)
        if preempted:
            self.preemptions += 1
        self.preempted.clear()
        self.preempted_by = None
        self._on_event("requeued", f"requeued ({reason})")
        return row

    def wait(self, *, cancelled: Callable[[], bool] = lambda: False) -> Waited:
        """Block until admitted; :class:`QueueTimeout` when the row expires or ends without admission."""
        start = time.monotonic()
        seen: dict[str, str] | None = None
        deferred: float | None = None  # the start last told (a deferred row's reasons change as its hours pass)
        while True:
            row = self.queue.get(self.key)  # a read: the heartbeat thread beats (a write) every heartbeat_s
            if row is None:
                raise QueueTimeout(self.key, "missing", time.monotonic() - start, {})
            if row.state in ("admitted", "preempting"):
                waited = time.monotonic() - start
                self.waited_s += waited
                kind = "resumed" if row.attempts else "admitted"
                self._on_event(kind, f"{kind} at {row.data_center} (Ray cluster {row.ray_cluster}) after "
                                     f"{waited:.1f} s in the queue")
                return Waited(row, waited)
            if row.state in FINAL:
                raise QueueTimeout(self.key, row.state, time.monotonic() - start, reasons_of(row))
            reasons = reasons_of(row)
            if row.state == "deferred" and row.start_at is not None:
                if row.start_at != deferred:
                    deferred, seen = row.start_at, reasons
                    self._on_event("deferred", f"deferred until {start_text(row.start_at)}"
                                               + (f": {row.start_note}" if row.start_note else ""))
            elif reasons and reasons != seen:
                seen, deferred = reasons, None
                self._on_event("waiting", "waiting: " + "; ".join(f"{dc}: {r}" for dc, r in sorted(reasons.items())))
            if cancelled():
                raise QueueTimeout(self.key, "cancelled", time.monotonic() - start, reasons)
            if self.controller is not None and self._no_leader():
                self.controller.cycle()
                self.controller.release()
                continue
            time.sleep(self.poll_s)

    def finish(self, state: str = "finished", detail: str = "") -> None:
        """The step is over: free what it holds (idempotent; nothing to do if it was never queued, or its row
        already ended, e.g. expired); stops the heartbeat."""
        self._stop_beat.set()
        if self._beat is None:
            return  # never submitted
        self._beat.join(timeout=10)
        self.queue.finish(self.key, state, detail)

    # -- heartbeat and preemption ------------------------------------------------
    def _no_leader(self) -> bool:
        assert self.controller is not None
        lease = self.controller.leader.current()
        return lease is None

    def _start_heartbeat(self) -> None:
        if self._beat is not None:
            return
        self._beat = threading.Thread(target=self._beating, name=f"westflow-heartbeat-{self.key}", daemon=True)
        self._beat.start()

    def _beating(self) -> None:
        while not self._stop_beat.wait(self.heartbeat_s):
            try:
                row = self.queue.heartbeat(self.key)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the step's own path reports DB errors
                continue
            if row is not None and row.state == "preempting" and not self.preempted.is_set():
                self.preempted_by = row.preempted_by
                self.preempted.set()
                self._on_event("preempted", f"preempted at {row.data_center} by {row.preempted_by}")
