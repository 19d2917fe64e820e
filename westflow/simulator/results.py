"""What one policy's simulation measured (:class:`PolicyResult`), filled in by the engine."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from westflow.simulator.tenancy import TenantStats, jain

__all__ = ["PolicyResult", "nearest_rank"]


def nearest_rank(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; 0 for none)."""
    d = sorted(values)
    if not d:
        return 0.0
    return d[min(len(d) - 1, max(0, math.ceil(q * len(d)) - 1))]


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
    energy_kwh: float = 0.0             # within the window
    cost_cny: float = 0.0               # within the window
    energy_all_kwh: float = 0.0         # all work, the window extended until it ends
    cost_all_cny: float = 0.0           # all work, the window extended until it ends
    end_s: float = 0.0                  # when the last batch work ended (the extended window)
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
    # placement in time (see westflow.simulator.clock)
    rt_placed: dict[tuple[str, str], float] = field(default_factory=dict)  # (DC, origin city) -> requests
    deadline_jobs: int = 0       # batch jobs given a deadline (the westflow policy; 0 for baselines)
    deadline_misses: int = 0     # batch jobs that finished after submit + slack x duration (every policy)
    deferred_s: list[float] = field(default_factory=list)  # per started job: the chosen deferral (0: none)
    queue_wait_s: list[float] = field(default_factory=list)  # per started job: wait not counting its deferral

    def delay_stats(self) -> tuple[float, float, float]:
        """Mean, p95, p99 of batch queueing delay in seconds (nearest-rank)."""
        d = self.batch_delay_s
        if not d:
            return 0.0, 0.0, 0.0
        return sum(d) / len(d), nearest_rank(d, 0.95), nearest_rank(d, 0.99)

    def queue_stats(self) -> tuple[float, float]:
        """Mean and p95 of batch waits from queueing alone (the chosen deferral not counted), in seconds."""
        d = self.queue_wait_s
        return (sum(d) / len(d) if d else 0.0), nearest_rank(d, 0.95)

    def share(self, part: float, whole: float) -> float:
        """``part`` / ``whole`` (0 for no whole)."""
        return part / whole if whole else 0.0

    @property
    def served_acc_hours(self) -> float:
        """Accelerator-hours served within the window: batch work inside it and real-time demand admitted."""
        return self.batch_acc_hours + (self.rt_demand_acc_min - self.rt_dropped_acc_min) / 60

    @property
    def served_all_acc_hours(self) -> float:
        """Accelerator-hours served to the end of all work: every batch run in full and real-time admitted."""
        return self.served_acc_hours + self.batch_acc_hours_after

    @property
    def west_share(self) -> float:
        return self.batch_west_acc_hours / self.batch_acc_hours if self.batch_acc_hours else 0.0

    @property
    def jain(self) -> float:
        """Jain's fairness index of the tenants' accelerator-hours against their weights."""
        return jain(self.tenants)


