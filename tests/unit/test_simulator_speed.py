"""The engine's speed-ups make the same decisions: stuck asks skipped and one kept victim index, vs every ask
sent to every cycle and each cycle building its own victims."""

from __future__ import annotations

import random
from dataclasses import asdict
from datetime import datetime
from typing import Any

import pytest

from tests.builders import national
from westflow.placement import POLICY_NAMES, get_policy
from westflow.simulator.clock import SHANGHAI, Clock
from westflow.simulator.demand import LoadScaling, Workload, build_workload
from westflow.simulator.engine import Simulation
from westflow.simulator.traces import BatchJob, Request, TraceSet
from westflow.tenants import Tenants, parse_tenants

N = national()
MODELS = {p.model for d in N.data_centers for p in d.pools}
CITIES = ("beijing", "shanghai", "guangzhou", "chengdu")


def _busy_workload(seed: int = 3, minutes: int = 30) -> Workload:
    """More batch work than the network holds, arriving through the window (and a tail after it), with
    real-time bursts that preempt it."""
    rng = random.Random(seed)
    jobs = [BatchJob(float(rng.randrange(0, (minutes + 30) * 60)), float(rng.choice((300, 1800, 3600, 7200))),
                     rng.choice((8, 64, 256, 512)), rng.choice(CITIES), family=rng.choice(("any", "any", "cann")),
                     job_id=f"j{i}")
            for i in range(200)]
    jobs.sort(key=lambda j: j.submit_s)
    reqs = [Request(float(rng.randrange(0, 3600)), origin=rng.choice(CITIES), accel_seconds=64 * 60.0 * rng.random())
            for _ in range(40)]
    traces = TraceSet(tuple(jobs), tuple(reqs), 3600.0, ("synthetic",))
    return build_workload(traces, N, scaling=LoadScaling(None, None), window_s=minutes * 60.0)


def _two_tenants() -> Tenants:
    borrow = {"accelerators": {"cann": 4864, "cuda": 4608}}
    quota = {"accelerators": {"cann": 2432, "cuda": 2304}, "cpus": 100_000, "memory_gb": 10**6}
    return parse_tenants({
        "priority_classes": [{"name": "realtime", "value": 1000}, {"name": "production", "value": 100},
                             {"name": "best-effort", "value": 0, "preemptible": True}],
        "cohorts": [{"name": "c"}],
        "tenants": [
            {"name": "heavy", "weight": 2, "cohort": "c", "borrowing_limit": borrow, "quota": quota,
             "priority_classes": ["realtime", "production", "best-effort"]},
            {"name": "light", "weight": 1, "cohort": "c", "borrowing_limit": borrow, "quota": quota,
             "priority_classes": ["production", "best-effort"]}],
        "default_tenant": "heavy"}, models=MODELS)


def _numbers(policy: str, w: Workload, skip: bool, **kw: Any) -> tuple[dict[str, Any], int]:
    """The report numbers of one run and how many asks its cycles were sent."""
    sim = Simulation(get_policy(policy, seed=0), N, w, **kw)
    sim.skip_stuck = sim.keep_victims = skip  # the reference: neither
    sent = 0
    cycle = sim._cycle

    def counting(asks: Any, t: float) -> Any:
        nonlocal sent
        sent += len(asks)
        return cycle(asks, t)

    sim._cycle = counting  # type: ignore[method-assign]
    out = asdict(sim.run())
    out.pop("wall_s")
    return out, sent


@pytest.mark.parametrize("tenants", [None, "two"])
@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_skipping_stuck_asks_gives_the_same_report_numbers(policy: str, tenants: str | None) -> None:
    w = _busy_workload()
    kw: dict[str, Any] = {"tenants": _two_tenants()} if tenants else {}
    (fast, sent), (reference, sent_all) = _numbers(policy, w, True, **kw), _numbers(policy, w, False, **kw)
    assert fast["batch_started"] > 0
    if policy == "westflow":
        assert fast["preemptions"] > 0  # real time took some back (victims requeued, stuck asks released)
    assert sent < 0.8 * sent_all  # the queue backs up: many asks are stuck
    assert fast == reference


def test_reclaim_by_a_stuck_tenant_gives_the_same_report_numbers() -> None:
    # "light" floods the network at t=0 (borrowing); "heavy" arrives later within its nominal quota and
    # reclaims, while more of light's work keeps arriving (stuck asks, cross-tenant victims)
    rng = random.Random(5)
    jobs = [BatchJob(float(rng.randrange(0, 300)), 3600.0, 64, "beijing", tenant="light") for _ in range(160)]
    jobs += [BatchJob(float(rng.randrange(600, 1500)), 1800.0, rng.choice((8, 64)), "shanghai", tenant="heavy")
             for _ in range(60)]
    jobs.sort(key=lambda j: j.submit_s)
    traces = TraceSet(tuple(jobs), (), 3600.0, ("synthetic",))
    w = build_workload(traces, N, scaling=LoadScaling(None, None), window_s=1800.0)
    (fast, sent), (reference, sent_all) = (_numbers("westflow", w, skip, tenants=_two_tenants())
                                           for skip in (True, False))
    assert fast["tenants"]["light"]["preempted"] > 0  # heavy reclaimed
    assert sent < sent_all
    assert fast == reference


@pytest.mark.parametrize("tenants", [None, "two"])
def test_skipping_stuck_asks_while_the_policy_defers_gives_the_same_report_numbers(tenants: str | None) -> None:
    # the window ends the evening peak: queued jobs with time to spare are deferred to the night's valley
    # as room appears (they take none now), the others start at once
    clock = Clock(datetime(2026, 1, 5, 20, 30, tzinfo=SHANGHAI).timestamp(), 2.0)
    w = _busy_workload(seed=7)
    kw: dict[str, Any] = {"tenants": _two_tenants()} if tenants else {}
    (fast, sent), (reference, sent_all) = (_numbers("westflow", w, skip, clock=clock, **kw) for skip in (True, False))
    assert sum(1 for d in fast["deferred_s"] if d > 0) > 10
    assert sent < 0.8 * sent_all
    assert fast == reference
