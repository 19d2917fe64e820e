"""The simulator's clock: time-of-use billing, batch deadlines and deferral, the real-time guard band."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.builders import national
from westflow.placement import get_policy
from westflow.simulator.clock import DEFAULT_EPOCH, Clock, Pricer
from westflow.simulator.demand import LoadScaling, Workload, build_workload
from westflow.simulator.engine import Simulation, simulate
from westflow.simulator.traces import BatchJob, Request, TraceSet

NO_SCALING = LoadScaling(None, None)
H = 3600.0


def _workload(jobs: Sequence[BatchJob], reqs: Sequence[Request] = (), minutes: int = 10) -> Workload:
    traces = TraceSet(tuple(jobs), tuple(reqs), 3600.0, ("synthetic",))
    return build_workload(traces, national(), scaling=NO_SCALING, window_s=minutes * 60.0)


def test_default_epoch_is_midnight_in_shanghai() -> None:
    assert Clock().as_datetime(0).strftime("%H:%M") == "00:00"
    assert Clock().epoch_s == DEFAULT_EPOCH.timestamp()
    assert Clock().deadline(100.0, 50.0) == 200.0
    assert Clock(deadline_slack=None).deadline(100.0, 50.0) is None
    with pytest.raises(ValueError, match="deadline_slack"):
        Clock(deadline_slack=0.5)


def test_energy_is_billed_at_the_tariff_of_the_hours_it_runs() -> None:
    n = national()
    pricer = Pricer(n, Clock())
    tariff = n.dc("zhangjiakou").tariff
    assert tariff is not None
    valley, peak = [0.0] * 24, [0.0] * 24
    at_night = pricer.bill("zhangjiakou", 1.0 / H, 1 * H, 3 * H, valley)  # 01:00-03:00: valley
    by_day = pricer.bill("zhangjiakou", 1.0 / H, 9 * H, 11 * H, peak)     # 09:00-11:00: peak
    assert at_night == pytest.approx(2 * tariff.price_at(Clock().wall(H)))
    assert by_day == pytest.approx(2 * tariff.price_at(Clock().wall(9 * H)))
    assert at_night < by_day
    assert sum(valley) == pytest.approx(at_night) and valley[1] > 0 and valley[3] == 0


def test_westflow_defers_a_batch_job_with_slack_into_cheaper_hours() -> None:
    # submitted at 00:00:30 for 1 h, may finish by 12:00: the western valley band (09:00-17:00) is cheapest
    w = _workload([BatchJob(30.0, H, 8, "shanghai")], minutes=24 * 60)
    n = national()
    slack = Clock(deadline_slack=12.0)
    deferred = simulate(get_policy("westflow"), n, w, clock=slack)
    at_once = simulate(get_policy("westflow"), n, w, clock=Clock(deadline_slack=None))
    baseline = simulate(get_policy("cheapest"), n, w, clock=slack)
    assert deferred.deadline_jobs == 1 and deferred.deadline_misses == 0
    assert deferred.deferred_s[0] > 8 * H
    assert deferred.queue_wait_s == [0.0]  # the chosen deferral is not queueing
    assert deferred.cost_cny < 0.8 * at_once.cost_cny
    assert baseline.deferred_s == [0.0] and baseline.deadline_jobs == 0  # baselines run at once
    assert sum(deferred.cost_hourly) == pytest.approx(deferred.cost_cny)


def test_a_job_that_cannot_meet_its_deadline_still_runs_and_is_counted() -> None:
    n = national()
    jobs = []
    for d in n.data_centers:  # fill every pool until 10 h
        for p in d.pools:
            left = p.count
            while left:
                k = min(64, left)
                jobs.append(BatchJob(0.0, 10 * H, k, "beijing"))
                left -= k
    jobs.append(BatchJob(60.0, 600.0, 64, "beijing"))
    r = simulate(get_policy("westflow"), n, _workload(jobs, minutes=60), clock=Clock(deadline_slack=1.0))
    assert r.batch_started == len(jobs)
    assert r.deadline_misses == 1
    assert max(r.queue_wait_s) == pytest.approx(10 * H - 60.0)


def test_realtime_eligibility_keeps_the_guard_band() -> None:
    n = national()
    tier = n.tiers["realtime"]
    assert tier.limit_ms is not None and tier.max_rtt_ms is not None and tier.limit_ms < tier.max_rtt_ms
    sim = Simulation(get_policy("westflow"), n, _workload([]))
    for c in n.cities:
        sites, _ = sim._sites(c.id, "any")
        assert all(n.rtt(d, c.id) <= tier.limit_ms for d in sites), c.id
    # zhangjiakou is 19.2 ms from Shanghai: within the bound, in the guard band
    assert "zhangjiakou" not in sim._sites("shanghai", "any")[0]


def test_realtime_placements_are_recorded_per_dc_and_city() -> None:
    w = _workload([], [Request(5.0, origin="shanghai", accel_seconds=4 * 60.0)], minutes=1)
    r = simulate(get_policy("westflow"), national(), w)
    assert sum(r.rt_placed.values()) == pytest.approx(r.rt_requests)
    assert all(city == "shanghai" for _, city in r.rt_placed)
    assert r.rt_beyond_requests == 0


def test_report_parts_for_time_and_margin() -> None:
    from westflow.simulator.intime import goal_rows, margin_rows, time_rows

    w = _workload([BatchJob(30.0, H, 8, "shanghai")], [Request(5.0, origin="shanghai", accel_seconds=240.0)],
                  minutes=24 * 60)
    n = national()
    rs = [simulate(get_policy(p), n, w, clock=Clock(deadline_slack=12.0)) for p in ("westflow", "cheapest")]
    assert time_rows(rs)[0][:4] == ["westflow", "1", "0", "1"]
    assert margin_rows(rs, n)[0][5:7] == ["0", "0"]  # westflow: none in the guard band, none beyond
    goals = {g: met for g, _, met in goal_rows(rs)}
    assert goals["0 deadline misses"] == "yes" and goals["0 real-time requests beyond their bound"] == "yes"


def test_cli_options_for_the_clock() -> None:
    from westflow_cli.commands.simulate import deadline_slack, start_time

    assert deadline_slack("none") is None and deadline_slack("2.5") == 2.5
    assert start_time("2026-03-01").utcoffset() == DEFAULT_EPOCH.utcoffset()


def test_cost_goals_compare_all_work_not_the_window() -> None:
    """A policy that leaves work past the window looks cheaper within it: the goals compare all the work."""
    from westflow.simulator.intime import goal_rows
    from westflow.simulator.results import PolicyResult

    def result(name: str, window: float, total: float) -> PolicyResult:
        return PolicyResult(name, 3600.0, cost_cny=window, cost_all_cny=total)

    rows = goal_rows([result("westflow", 50.0, 100.0), result("cheapest", 100.0, 100.0),
                      result("east-first", 100.0, 200.0)], east_goal=0.35)
    goals = {g: (measured, met) for g, measured, met in rows}
    assert goals["energy cost >= 15% below cheapest (all work, to its end)"] == (
        "0.0% below (within the window only: 50.0%)", "no")
    assert goals["energy cost >= 35% below east-first (all work, to its end)"][1] == "yes"
