"""Run every policy over the same workload (in parallel processes) and compare."""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Callable, Sequence

from westflow.inventory import Network
from westflow.placement import get_policy
from westflow.simulator.demand import Workload
from westflow.simulator.engine import PolicyResult, simulate

__all__ = ["run_policies", "comparison_rows", "COMPARISON_HEADERS"]

_SHARED: dict[str, object] = {}


def _one(args: tuple[str, int]) -> PolicyResult:
    name, seed = args
    network = _SHARED["network"]
    workload = _SHARED["workload"]
    assert isinstance(network, Network) and isinstance(workload, Workload)
    return simulate(get_policy(name, seed=seed), network, workload, progress=_SHARED.get("progress"))  # type: ignore[arg-type]


def _stderr_progress(policy: str, frac: float) -> None:
    print(f"  {policy:<12} {frac:6.0%}", file=sys.stderr, flush=True)


def run_policies(names: Sequence[str], network: Network, workload: Workload, *, seed: int = 0,
                 processes: int = 2, progress: Callable[[str, float], None] | None = _stderr_progress
                 ) -> list[PolicyResult]:
    """Simulate each policy; results in the order of ``names``.

    ``processes`` > 1 forks workers that share the loaded workload (copy on write).
    """
    _ = workload.batch_specs  # build once, before forking
    _SHARED.update(network=network, workload=workload, progress=progress)
    tasks = [(n, seed) for n in names]
    if processes > 1 and len(names) > 1 and "fork" in mp.get_all_start_methods():
        with mp.get_context("fork").Pool(min(processes, len(names))) as pool:
            return list(pool.imap(_one, tasks))
    return [_one(t) for t in tasks]


COMPARISON_HEADERS = [
    "policy", "util east", "util west", "RT beyond 20ms (req)", "RT dropped (req)", "energy MWh",
    "cost kCNY", "CNY/acc-h", "batch wait mean h", "p95 h", "p99 h", "batch west", "sim s",
]


def comparison_rows(results: Sequence[PolicyResult]) -> list[list[str]]:
    rows = []
    for r in results:
        mean, p95, p99 = r.delay_stats()
        served = r.batch_acc_hours + (r.rt_demand_acc_min - r.rt_dropped_acc_min) / 60
        rows.append([
            r.policy, f"{r.util_region.get('east', 0):.1%}", f"{r.util_region.get('west', 0):.1%}",
            f"{r.rt_beyond_requests:,.0f}", f"{r.rt_dropped_requests:,.0f}",
            f"{r.energy_kwh / 1000:,.1f}", f"{r.cost_cny / 1000:,.1f}",
            f"{r.cost_cny / served:.3f}" if served else "-",
            f"{mean / 3600:.2f}", f"{p95 / 3600:.2f}", f"{p99 / 3600:.2f}", f"{r.west_share:.1%}",
            f"{r.wall_s:.1f}",
        ])
    return rows
