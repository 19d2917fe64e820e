"""The simulator on the admission cycle: tenants, fair share, real-time preemption of best-effort batch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.builders import national
from westflow.config import CONFIG_DIR
from westflow.errors import SpecError
from westflow.placement import get_policy
from westflow.simulator.demand import LoadScaling, Workload, build_workload
from westflow.simulator.engine import simulate
from westflow.simulator.tenancy import TenantStats, assign_tenants, jain, scaled_to, whole_network
from westflow.simulator.traces import BatchJob, Request, TraceSet, load_generic
from westflow.tenants import Tenants, load_tenants, parse_tenants

N = national()
MODELS = {p.model for d in N.data_centers for p in d.pools}
NO_SCALING = LoadScaling(None, None)


def _workload(jobs: list[BatchJob], reqs: list[Request] | None = None, minutes: int = 10) -> Workload:
    traces = TraceSet(tuple(jobs), tuple(reqs or ()), 3600.0, ("synthetic",))
    return build_workload(traces, N, scaling=NO_SCALING, window_s=minutes * 60.0)


def _fill_every_pool(duration_s: float) -> list[BatchJob]:
    """Jobs of 64 (or what is left) that together take every accelerator of the network at t=0."""
    jobs = []
    for d in N.data_centers:
        for p in d.pools:
            left = p.count
            while left:
                k = min(64, left)
                jobs.append(BatchJob(0.0, duration_s, k, "beijing"))
                left -= k
    return jobs


def test_realtime_preempts_best_effort_batch_which_resumes_with_its_remaining_work() -> None:
    jobs = _fill_every_pool(7200.0)
    # a minute of 64 accelerators of real-time demand from Shanghai in minute 1 (batch fills minute 0)
    w = _workload(jobs, [Request(65.0, origin="shanghai", accel_seconds=64 * 60.0)], minutes=10)
    assert w.rt_demand[1][w.rt_cities.index("shanghai")] == 64
    r = simulate(get_policy("westflow"), N, w)
    assert r.rt_dropped_acc_min == 0 and r.rt_beyond_acc_min == 0
    assert r.rt_by_preemption_acc_min == 64 and r.rt_by_preemption_requests == pytest.approx(1.0)
    assert r.preemptions == 1 and r.tenants["default"].preempted == 1
    # every job ran to the end: the victim resumed with what it had left, no work lost or run twice
    assert r.batch_started == len(jobs)
    total = sum(j.accelerators * j.duration_s for j in jobs) / 3600
    assert r.batch_acc_hours + r.batch_acc_hours_after == pytest.approx(total)
    # only the window's 10 minutes count (the jobs run 2 h): the rest is reported apart
    assert r.batch_acc_hours == pytest.approx(total * 600 / 7200, rel=0.01)


def test_realtime_never_preempts_production_batch() -> None:
    jobs = _fill_every_pool(7200.0)
    w = _workload(jobs, [Request(65.0, origin="shanghai", accel_seconds=64 * 60.0)], minutes=3)
    r = simulate(get_policy("westflow"), N, w, batch_class="production")
    assert r.preemptions == 0 and r.rt_by_preemption_acc_min == 0 and r.rt_dropped_acc_min == 64


def _two_tenants(heavy_weight: float = 2.0) -> Tenants:
    borrow = {"accelerators": {"cann": 4864}}
    return parse_tenants({
        "priority_classes": [{"name": "realtime", "value": 1000}, {"name": "production", "value": 100},
                             {"name": "best-effort", "value": 0, "preemptible": True}],
        "cohorts": [{"name": "c"}],
        "tenants": [
            {"name": "heavy", "weight": heavy_weight, "cohort": "c", "borrowing_limit": borrow,
             "quota": {"accelerators": {"cann": 2432}, "cpus": 100_000, "memory_gb": 10**6},
             "priority_classes": ["realtime", "production", "best-effort"]},
            {"name": "light", "weight": 1, "cohort": "c", "borrowing_limit": borrow,
             "quota": {"accelerators": {"cann": 2432}, "cpus": 100_000, "memory_gb": 10**6},
             "priority_classes": ["production", "best-effort"]}],
        "default_tenant": "heavy"}, models=MODELS)


def test_two_tenants_weighted_two_to_one_flooding_the_cann_pools_get_two_to_one(tmp_path: Path) -> None:
    # Both tenants flood every Ascend pool (4,864 accelerators) with 64-accelerator, 1-3 h jobs at t=0,
    # each with three times the pools' worth: the trace's tenant column says whose.
    rows = ["submit_s,duration_s,accelerators,tier,origin,family,tenant"]
    for i in range(3 * 4864 // 64):
        for tenant in ("heavy", "light"):
            rows.append(f"{i % 7},{3600 * (1 + i % 3)},64,batch,beijing,cann,{tenant}")
    p = tmp_path / "flood.csv"
    p.write_text("\n".join(rows) + "\n")
    jobs, _ = load_generic(p)
    assert Counter(j.tenant for j in jobs) == {"heavy": 228, "light": 228}
    w = _workload(jobs, minutes=8 * 60)
    r = simulate(get_policy("westflow"), N, w, tenants=_two_tenants())
    heavy, light = r.tenants["heavy"], r.tenants["light"]
    assert heavy.jobs == light.jobs == 228
    # both are backlogged through the 8 h window: the accelerator-hours run in it go 2:1
    assert heavy.acc_hours / light.acc_hours == pytest.approx(2.0, rel=0.1)
    assert heavy.wait(0.5) < light.wait(0.5)
    assert 0.9 < r.jain <= 1.0


def test_assign_tenants_is_stable_weighted_and_honours_the_trace_column() -> None:
    t = load_tenants(CONFIG_DIR, models=MODELS)  # default 1, recsys 2, retail-ai 1
    jobs = [BatchJob(0.0, 60.0, 1, None, job_id=f"id-{i}") for i in range(4000)]
    got = assign_tenants(jobs, t)
    assert got == assign_tenants(jobs, t)  # a hash, not a draw
    counts = Counter(got)
    assert counts["recsys"] / len(jobs) == pytest.approx(0.5, abs=0.03)
    assert counts["default"] / len(jobs) == pytest.approx(0.25, abs=0.03)
    assert assign_tenants([BatchJob(0.0, 60.0, 1, None, tenant="retail-ai")], t) == ["retail-ai"]
    with pytest.raises(SpecError) as exc:
        assign_tenants([BatchJob(0.0, 60.0, 1, None, source="t.csv", tenant="mallory")], t)
    assert "mallory" in str(exc.value) and "recsys" in str(exc.value)


def test_quotas_scaled_to_the_network_keep_their_shares() -> None:
    t = load_tenants(CONFIG_DIR, models=MODELS)
    s = scaled_to(t, N)
    total = sum(p.count for d in N.data_centers for p in d.pools)
    assert sum(sum(x.quota.accelerators.values()) for x in s.tenants.values()) == pytest.approx(total, abs=3)
    assert sum(x.quota.cpus for x in s.tenants.values()) == pytest.approx(sum(d.cpus for d in N.data_centers))
    a, b = t.tenant("recsys"), s.tenant("recsys")
    factor = b.quota.accelerators["cuda"] / a.quota.accelerators["cuda"]
    assert b.regions["east"].accelerators["cuda"] == round(a.regions["east"].accelerators["cuda"] * factor)
    assert b.weight == a.weight and b.priority_classes == a.priority_classes


def test_whole_network_is_one_tenant_with_everything() -> None:
    t = whole_network(N)
    assert list(t.tenants) == ["default"]
    q = t.tenant("default").quota
    assert q.accelerators["cuda"] + q.accelerators["cann"] > sum(d.accelerator_total for d in N.data_centers)


@pytest.mark.parametrize(("hours", "weights", "expected"), [
    ((2.0, 1.0), (2.0, 1.0), 1.0),
    ((1.0, 1.0), (1.0, 1.0), 1.0),
    ((1.0, 0.0), (1.0, 1.0), 0.5),
    ((3.0, 1.0), (1.0, 1.0), 0.8),
], ids=["weighted-fair", "equal", "one-starved", "three-to-one"])
def test_jain(hours: tuple[float, float], weights: tuple[float, float], expected: float) -> None:
    stats = {f"t{i}": TenantStats(w, jobs=1, acc_hours=h) for i, (h, w) in enumerate(zip(hours, weights, strict=True))}
    assert jain(stats) == pytest.approx(expected)


def test_the_cli_reports_tenants(tmp_path: Path, capsys: Any) -> None:
    from westflow_cli.main import main

    trace = tmp_path / "t.csv"
    trace.write_text("submit_s,duration_s,accelerators,tier,origin,family,tenant\n0,600,8,batch,,,recsys\n"
                     "10,600,8,batch,,,\n300,60,2,realtime,shanghai,,\n")
    code = main(["simulate", "--trace", str(trace), "--policy", "westflow", "--processes", "1",
                 "--out", str(tmp_path / "sim")])
    out = capsys.readouterr().out
    assert code == 0
    assert "Jain (policy)" in out and "recsys" in out and "retail-ai" in out
    report = (tmp_path / "sim" / "report.md").read_text()
    assert "## Tenants" in report and "SHA-256" in report
    code = main(["simulate", "--trace", str(trace), "--policy", "westflow", "--processes", "1",
                 "--out", str(tmp_path / "sim2"), "--tenants", "none"])
    assert code == 0
    code = main(["simulate", "--trace", str(trace), "--policy", "westflow", "--processes", "1",
                 "--out", str(tmp_path / "sim3"), "--realtime-tenant", "retail-ai"])
    assert code == 2
    assert "Not allowed priority_class 'realtime'" in capsys.readouterr().err
