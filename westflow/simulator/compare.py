"""Run every policy over the same workload (in parallel processes) and compare."""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from westflow.inventory import Network
from westflow.placement import get_policy
from westflow.simulator.clock import Clock
from westflow.simulator.demand import Workload
from westflow.simulator.engine import PolicyResult, simulate
from westflow.simulator.tenancy import BATCH_CLASS
from westflow.tenants import Tenants

__all__ = ["run_policies", "comparison_rows", "COMPARISON_HEADERS", "tenant_rows", "TENANT_HEADERS"]

@dataclass(frozen=True)
class _Run:
    """What every policy's simulation shares (set before forking: the workers read it copy on write)."""

    network: Network
    workload: Workload
    progress: Callable[[str, float], None] | None
    tenants: Tenants | None
    realtime_tenant: str | None
    batch_class: str
    clock: Clock | None


_SHARED: list[_Run] = []


def _one(args: tuple[str, int]) -> PolicyResult:
    name, seed = args
    run = _SHARED[-1]
    return simulate(get_policy(name, seed=seed), run.network, run.workload, progress=run.progress,
                    tenants=run.tenants, realtime_tenant=run.realtime_tenant, batch_class=run.batch_class,
                    clock=run.clock)


def _stderr_progress(policy: str, frac: float) -> None:
    print(f"  {policy:<12} {frac:6.0%}", file=sys.stderr, flush=True)


def run_policies(names: Sequence[str], network: Network, workload: Workload, *, seed: int = 0,
                 processes: int = 2, progress: Callable[[str, float], None] | None = _stderr_progress,
                 tenants: Tenants | None = None, realtime_tenant: str | None = None,
                 batch_class: str = BATCH_CLASS, clock: Clock | None = None) -> list[PolicyResult]:
    """Simulate each policy; results in the order of ``names``.

    ``processes`` > 1 forks workers that share the loaded workload (copy on write). ``tenants``,
    ``realtime_tenant``, ``batch_class``, ``clock``: as :func:`~westflow.simulator.engine.simulate` takes them.
    """
    _ = workload.batch_specs  # build once, before forking
    _SHARED[:] = [_Run(network, workload, progress, tenants, realtime_tenant, batch_class, clock)]
    tasks = [(n, seed) for n in names]
    if processes > 1 and len(names) > 1 and "fork" in mp.get_all_start_methods():
        with mp.get_context("fork").Pool(min(processes, len(names))) as pool:
            return list(pool.imap(_one, tasks))
    return [_one(t) for t in tasks]


COMPARISON_HEADERS = [
    "policy", "util east", "util west", "RT beyond 20ms (req)", "RT dropped (req)", "RT beyond % rows / % acc-s",
    "RT dropped % rows / % acc-s", "RT by preemption (req)",
    "energy MWh", "cost kCNY", "CNY/acc-h", "all work: cost kCNY", "CNY/acc-h", "ends day", "batch wait mean h",
    "p95 h", "p99 h", "batch west", "preempted",
    "sim s",
]


def comparison_rows(results: Sequence[PolicyResult]) -> list[list[str]]:
    rows = []
    for r in results:
        mean, p95, p99 = r.delay_stats()
        served, served_all = r.served_acc_hours, r.served_all_acc_hours
        rows.append([
            r.policy, f"{r.util_region.get('east', 0):.1%}", f"{r.util_region.get('west', 0):.1%}",
            f"{r.rt_beyond_requests:,.0f}", f"{r.rt_dropped_requests:,.0f}",
            f"{r.share(r.rt_beyond_requests, r.rt_requests):.1%} / {r.share(r.rt_beyond_acc_s, r.rt_work_acc_s):.1%}",
            f"{r.share(r.rt_dropped_requests, r.rt_requests):.1%} / {r.share(r.rt_dropped_acc_s, r.rt_work_acc_s):.1%}",
            f"{r.rt_by_preemption_requests:,.0f}",
            f"{r.energy_kwh / 1000:,.1f}", f"{r.cost_cny / 1000:,.1f}",
            f"{r.cost_cny / served:.3f}" if served else "-",
            f"{r.cost_all_cny / 1000:,.1f}", f"{r.cost_all_cny / served_all:.3f}" if served_all else "-",
            f"{max(r.end_s, r.window_s) / 86400:.2f}",
            f"{mean / 3600:.2f}", f"{p95 / 3600:.2f}", f"{p99 / 3600:.2f}", f"{r.west_share:.1%}",
            f"{r.preemptions:,}", f"{r.wall_s:.1f}",
        ])
    return rows


TENANT_HEADERS = ["policy", "tenant", "weight", "jobs", "wait p50 h", "wait p95 h", "acc-h share",
                  "share / weight share", "preempted", "Jain (policy)"]


def tenant_rows(results: Sequence[PolicyResult]) -> list[list[str]]:
    """Per policy and tenant: waits, share of the accelerator-hours against the weight's share, preemptions;
    and the policy's Jain index over the tenants that submitted work."""
    rows = []
    for r in results:
        total = sum(s.acc_hours for s in r.tenants.values())
        weights = sum(s.weight for s in r.tenants.values() if s.jobs)
        for name, s in r.tenants.items():
            share = s.acc_hours / total if total else 0.0
            rows.append([r.policy, name, f"{s.weight:g}", f"{s.jobs:,}", f"{s.wait(0.5) / 3600:.2f}",
                         f"{s.wait(0.95) / 3600:.2f}", f"{share:.1%}",
                         f"{share / (s.weight / weights):.2f}" if s.jobs and weights else "-", f"{s.preempted:,}",
                         f"{r.jain:.3f}"])
    return rows
