"""Reserve capacity at decision time so racing placements cannot both win.

Many users submit at once. Each decision happens under one lock against the
capacity left after every outstanding reservation, so two requests for the
last free accelerators of a DC cannot both be placed there. A reservation is
released when its work ends or fails; queued requests are then retried in
order (priority first, then arrival).

Every request ends in exactly one of: placed (with its Placement), queued
(it would fit an empty network, not the current one) or refused (it fits
nowhere, with every DC's reason).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from westflow.capacity import Capacity, DCCapacity
from westflow.errors import InfeasibleError
from westflow.inventory import Network
from westflow.placement import Placement, Policy, Rejection, WestflowPolicy
from westflow.spec import WorkloadSpec

__all__ = ["Status", "Decision", "Ledger"]


class Status(StrEnum):
    PLACED = "placed"
    QUEUED = "queued"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Decision:
    ticket: str
    spec: WorkloadSpec
    status: Status
    placement: Placement | None = None
    reason: str = ""
    rejected: tuple[Rejection, ...] = ()


@dataclass
class _Use:
    accel: dict[str, int]
    cpus: float = 0.0
    memory_gb: float = 0.0


class Ledger:
    """Thread-safe reservations over a capacity snapshot."""

    def __init__(self, network: Network, capacity: Capacity, policy: Policy | None = None) -> None:
        self._network = network
        self._base: dict[str, DCCapacity] = dict(capacity)
        self._policy = policy or WestflowPolicy()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._use: dict[str, _Use] = {dc: _Use({}) for dc in self._base}
        self._held: dict[str, Placement] = {}
        self._queue: list[tuple[int, int, str, WorkloadSpec]] = []
        self._totals = {d.id: d.accelerator_total for d in network.data_centers}

    def submit(self, spec: WorkloadSpec) -> Decision:
        """Place and reserve, queue, or refuse ``spec``."""
        with self._lock:
            ticket = f"t{next(self._ids):06d}"
            decision = self._decide(ticket, spec)
            if decision.status is Status.QUEUED:
                self._queue.append((-spec.priority, int(ticket[1:]), ticket, spec))
                self._queue.sort()
            return decision

    def release(self, ticket: str) -> list[Decision]:
        """Free a reservation (work ended or failed); returns queued work placed as a result."""
        with self._lock:
            p = self._held.pop(ticket, None)
            if p is not None:
                self._adjust(p, -1)
            return self._drain()

    def mark_lost(self, dc_id: str) -> None:
        """A DC's node is gone: offer it no more work (held reservations stay until released)."""
        with self._lock:
            if dc_id in self._base:
                self._base[dc_id] = replace(self._base[dc_id], alive=False)

    def held(self) -> Mapping[str, Placement]:
        with self._lock:
            return dict(self._held)

    def queued(self) -> list[str]:
        with self._lock:
            return [t for _, _, t, _ in self._queue]

    def reserved(self, dc_id: str) -> dict[str, int]:
        """Accelerators reserved per model at ``dc_id``."""
        with self._lock:
            return {m: n for m, n in self._use[dc_id].accel.items() if n}

    def capacity(self) -> dict[str, DCCapacity]:
        """What is free after every reservation."""
        with self._lock:
            return self._free()

    # -- private steps, called under the lock --------------------------------

    def _free(self) -> dict[str, DCCapacity]:
        out = {}
        for dc, base in self._base.items():
            use = self._use[dc]
            total = self._totals.get(dc, 0)
            used = sum(use.accel.values())
            out[dc] = replace(
                base,
                free={m: n - use.accel.get(m, 0) for m, n in base.free.items()},
                free_cpus=base.free_cpus - use.cpus,
                free_memory_gb=base.free_memory_gb - use.memory_gb,
                utilisation=min(1.0, base.utilisation + (used / total if total else 0.0)),
            )
        return out

    def _decide(self, ticket: str, spec: WorkloadSpec) -> Decision:
        try:
            p = self._policy.place(spec, self._network, self._free())
        except InfeasibleError as now:
            try:
                self._policy.place(spec, self._network, self._base)
            except InfeasibleError as ever:
                return Decision(ticket, spec, Status.REFUSED, reason="fits no data center even when empty",
                                rejected=ever.rejected)
            return Decision(ticket, spec, Status.QUEUED, reason="no free capacity now; queued",
                            rejected=now.rejected)
        self._held[ticket] = p
        self._adjust(p, +1)
        return Decision(ticket, spec, Status.PLACED, placement=p)

    def _adjust(self, p: Placement, sign: int) -> None:
        use = self._use[p.data_center]
        if p.accelerator_model:
            use.accel[p.accelerator_model] = use.accel.get(p.accelerator_model, 0) + sign * p.spec.accelerator.count
        use.cpus += sign * p.spec.cpus
        use.memory_gb += sign * p.spec.memory_gb

    def _drain(self) -> list[Decision]:
        """Place queued work that fits now, in queue order.

        Capacity only shrinks during one pass, so once a request did not fit, every
        later one of the same shape (see :func:`_shape`) is left as it is without a
        placement attempt: a release costs one attempt per shape, not per queued request.
        """
        placed, waiting = [], []
        missed: dict[tuple[object, ...], Status] = {}
        for item in self._queue:
            shape = _shape(item[3])
            status = missed.get(shape)
            if status is None:
                d = self._decide(item[2], item[3])
                if d.status is Status.PLACED:
                    placed.append(d)
                    continue
                status = missed[shape] = d.status
            if status is Status.QUEUED:
                waiting.append(item)
        self._queue = waiting
        return placed


def _shape(spec: WorkloadSpec) -> tuple[object, ...]:
    """What decides whether a spec fits anywhere (not its name, tenant or priority)."""
    return (spec.tier, spec.origin, spec.accelerator, spec.cpus, spec.memory_gb, spec.duration_hours,
            spec.inputs, spec.deadline_hours)
