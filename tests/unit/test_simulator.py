"""The network simulator on small synthetic traces with known answers, and the real loaders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.builders import national
from westflow.capacity import full_capacity
from westflow.placement import get_policy
from westflow.simulator.clock import Clock
from westflow.simulator.demand import LoadScaling, Workload, build_workload
from westflow.simulator.engine import simulate
from westflow.simulator.traces import (
    DEFAULT_TRACES_DIR,
    BatchJob,
    Request,
    TraceSet,
    load_azure,
    load_generic,
    load_itp,
    load_traces,
)

NO_SCALING = LoadScaling(None, None)


def _workload(jobs: Sequence[BatchJob], reqs: Sequence[Request] = (), minutes: int = 10) -> Workload:
    traces = TraceSet(tuple(jobs), tuple(reqs), 3600.0, ("synthetic",))
    return build_workload(traces, national(), scaling=NO_SCALING, window_s=minutes * 60.0)


def _cheapest_dc() -> str:
    """Lowest energy cost per accelerator-hour over the inventory (min-power pool per DC)."""
    n = national()
    return min(n.data_centers, key=lambda d: min(p.watts for p in d.pools) * d.pue * d.price_cny_kwh).id


@pytest.mark.parametrize("policy", ["westflow", "cheapest"], ids=["westflow", "cheapest"])
def test_lone_batch_job_goes_to_the_cheapest_eligible_dc(policy: str) -> None:
    w = _workload([BatchJob(30.0, 3600.0, 8, "shanghai")])
    # no deadline: placed at once at the daily mean prices (time of use: see test_simulator_clock.py)
    r = simulate(get_policy(policy), national(), w, clock=Clock(deadline_slack=None))
    assert r.batch_started == 1
    assert r.batch_dc == {_cheapest_dc(): 1}
    assert r.batch_delay_s == [0.0]


def test_realtime_burst_beyond_eastern_capacity_is_dropped_not_sent_west() -> None:
    n = national()
    # Shanghai: only eastern DCs are within 20 ms (less the tier's guard band, where it has one).
    tier = n.tiers["realtime"]
    bound = (tier.max_rtt_ms or 0) - (getattr(tier, "guard_band_ms", None) or 0)
    near = [d for d in n.data_centers if n.rtt(d.id, "shanghai") <= bound]
    assert all(d.region.value == "east" for d in near)
    room = sum(d.accelerator_total for d in near)
    burst = room + 400  # accelerators for one minute
    w = _workload([], [Request(5.0, origin="shanghai", accel_seconds=burst * 60.0)], minutes=1)
    assert w.rt_demand[0][w.rt_cities.index("shanghai")] == burst
    r = simulate(get_policy("westflow"), n, w)
    assert r.rt_beyond_acc_min == 0
    assert r.rt_dropped_acc_min == pytest.approx(400)
    assert r.rt_demand_acc_min == burst
    # the latency-blind baseline sends the overflow west instead: an SLA violation
    c = simulate(get_policy("cheapest"), n, w)
    assert c.rt_dropped_acc_min == 0 and c.rt_beyond_acc_min > 0


def test_queued_jobs_start_when_capacity_frees() -> None:
    n = national()
    total = sum(d.accelerator_total for d in n.data_centers)
    biggest = max(p.count for d in n.data_centers for p in d.pools)
    # fill every pool with long jobs, then one more job must wait for the first to finish
    jobs = []
    for d in n.data_centers:
        for p in d.pools:
            left = p.count
            while left:
                k = min(64, left)
                jobs.append(BatchJob(0.0, 7200.0 if not jobs else 36000.0, k, "beijing"))
                left -= k
    assert sum(j.accelerators for j in jobs) == total and biggest >= 64
    jobs.append(BatchJob(60.0, 600.0, 64, "beijing"))
    r = simulate(get_policy("westflow"), n, _workload(jobs, minutes=200), clock=Clock(deadline_slack=None))
    assert r.batch_started == len(jobs)
    assert max(r.batch_delay_s) == pytest.approx(7200.0 - 60.0)
    assert sorted(r.batch_delay_s)[:-1] == [0.0] * (len(jobs) - 1)


@pytest.mark.parametrize("policy", ["random", "round-robin", "westflow"], ids=str)
def test_same_seed_same_result(policy: str) -> None:
    jobs = [BatchJob(float(i * 37 % 600), 900.0 + i * 11, 1 + i % 16, None) for i in range(150)]
    reqs = [Request(float(i), 500, 100) for i in range(0, 600, 3)]
    traces = TraceSet(tuple(jobs), tuple(reqs), 600.0, ("synthetic",))
    scaling = LoadScaling(0.3, 0.2)
    a = simulate(get_policy(policy, seed=5), national(),
                 build_workload(traces, national(), scaling=scaling, seed=3))
    b = simulate(get_policy(policy, seed=5), national(),
                 build_workload(traces, national(), scaling=scaling, seed=3))
    a.wall_s = b.wall_s = 0.0
    assert a == b
    assert a.rt_beyond_acc_min == 0


def test_simulator_starts_from_full_capacity() -> None:
    caps = full_capacity(national())
    assert all(c.utilisation == 0 for c in caps.values())


def test_generic_csv(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("submit_s,duration_s,accelerators,tier,origin,family\n"
                 "0,3600,8,batch,beijing,cann\n10,60,2,realtime,shanghai,\n", encoding="utf-8")
    jobs, reqs = load_generic(p)
    assert jobs == [BatchJob(0.0, 3600.0, 8, "beijing", "cann", "t.csv", row=1)]
    assert reqs == [Request(10.0, origin="shanghai", accel_seconds=120.0, accelerators=2, duration_s=60.0, row=2)]
    w = build_workload(load_traces([str(p)]), national(), scaling=NO_SCALING, window_s=120.0)
    r = simulate(get_policy("westflow"), national(), w)
    assert r.batch_started == 1 and r.rt_demand_acc_min == 2


@pytest.fixture
def real_traces() -> None:
    """The real traces are part of the test data: missing, the test fails loudly (never a silent skip)."""
    for name in ("itp", "azure"):
        if not (DEFAULT_TRACES_DIR / name).exists():
            pytest.fail(f"real trace {name!r} not found at {DEFAULT_TRACES_DIR}: the tests read ../shared/traces "
                        "beside the repository (see its README); put it there")


needs_real_traces = pytest.mark.usefixtures("real_traces")


@needs_real_traces
def test_itp_loader_reads_all_jobs() -> None:
    jobs = load_itp()
    assert len(jobs) == 69_351
    assert all(1 <= j.accelerators <= 64 and j.origin for j in jobs)
    assert jobs == sorted(jobs, key=lambda j: j.submit_s)


@needs_real_traces
@pytest.mark.parametrize(("kind", "count"), [("conv", 19_366), ("code", 8_819)], ids=["conv", "code"])
def test_azure_loader_reads_all_requests(kind: str, count: int) -> None:
    reqs = load_azure(kind)
    assert len(reqs) == count
    assert reqs[0].t_s == 0.0 and reqs[-1].t_s < 3600.0
