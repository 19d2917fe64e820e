"""Issue 16 part 4: any trace replayed faithfully (origins, spans, the window, services, families, SLA per
work, load scaling 'none'), and bad trace files refused with exit 2 naming the file and row."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import national
from tests.unit.test_cli_fuzz import run_cli
from westflow.errors import SpecError
from westflow.placement import get_policy
from westflow.simulator.demand import LoadScaling, build_workload, trace_limits
from westflow.simulator.engine import simulate
from westflow.simulator.report import warnings
from westflow.simulator.traces import load_traces
from westflow_cli.main import EXIT_BAD_INPUT

HEADER = "submit_s,duration_s,accelerators,tier,origin,family\n"
AS_IS = LoadScaling(None, None)


def _csv(tmp_path: Path, rows: str, name: str = "t.csv", header: str = HEADER) -> Path:
    p = tmp_path / name
    p.write_text(header + rows, encoding="utf-8")
    return p


def _mixed(t0: float) -> str:
    """Two batch jobs and three short real-time rows, times from ``t0``."""
    return "".join(f"{t0 + dt:g},{d},{n},{tier},{city},\n" for dt, d, n, tier, city in [
        (0, 3600, 8, "batch", "beijing"), (30, 30, 2, "realtime", "shanghai"), (90, 40, 1, "realtime", "beijing"),
        (200, 20, 1, "realtime", "wuhan"), (7200, 600, 4, "batch", "wuhan")])


def test_a_trace_not_starting_at_zero_shifts_every_row_by_one_origin(tmp_path: Path) -> None:
    """Before: batch rows were shifted, real-time rows were not and fell outside the window (0 requests, silent)."""
    traces = load_traces([str(_csv(tmp_path, _mixed(1_000_000)))])
    assert traces.origins_s == ((str(tmp_path / "t.csv"), 1_000_000.0),)
    assert [j.submit_s for j in traces.batch] == [0.0, 7200.0]
    assert [r.t_s for r in traces.requests] == [30.0, 90.0, 200.0]
    for scaling in (AS_IS, LoadScaling(0.5, None)):
        w = build_workload(traces, national(), scaling=scaling)
        r = simulate(get_policy("westflow"), national(), w)
        assert r.rt_requests == 3 and r.rt_dropped_requests == 0
        assert not warnings(r, w)


def test_zero_realtime_requests_in_the_window_warns(tmp_path: Path) -> None:
    traces = load_traces([str(_csv(tmp_path, "0,600,8,batch,beijing,\n100,600,8,batch,wuhan,\n"))])
    w = build_workload(traces, national(), scaling=AS_IS)
    r = simulate(get_policy("westflow"), national(), w)
    assert any("0 real-time requests" in line for line in warnings(r, w))


def test_batch_load_factor_is_over_the_traces_own_span(tmp_path: Path) -> None:
    """Before: the span was counted from t = 0, so a trace starting late was compressed 3.7 x (here 11 x) more."""
    late = build_workload(load_traces([str(_csv(tmp_path, _mixed(72_000), "late.csv"))]), national(),
                          scaling=LoadScaling(0.5, None))
    early = build_workload(load_traces([str(_csv(tmp_path, _mixed(0), "early.csv"))]), national(),
                           scaling=LoadScaling(0.5, None))
    assert late.batch_factor == pytest.approx(early.batch_factor)
    assert late.window_s == pytest.approx(early.window_s)
    assert late.batch_span_s == 7200.0


def test_work_past_the_window_counts_only_inside_it(tmp_path: Path) -> None:
    """A 2 h job in a 30 min window: cost, energy and accelerator-hours are a quarter of the job's."""
    traces = load_traces([str(_csv(tmp_path, "0,7200,8,batch,beijing,\n"))])
    short = simulate(get_policy("westflow"), national(), build_workload(traces, national(), scaling=AS_IS,
                                                                         window_s=1800.0))
    full = simulate(get_policy("westflow"), national(), build_workload(traces, national(), scaling=AS_IS,
                                                                        window_s=7200.0))
    assert short.cost_cny == pytest.approx(full.cost_cny / 4)
    assert short.energy_kwh == pytest.approx(full.energy_kwh / 4)
    assert (short.batch_acc_hours, short.batch_acc_hours_after) == pytest.approx((4.0, 12.0))
    assert full.batch_acc_hours_after == 0
    assert sum(short.cost_hourly) == pytest.approx(short.cost_cny)
    assert len(full.cost_hourly) == 2 and full.cost_hourly[0] == pytest.approx(full.cost_hourly[1])
    # the window extended until the work ends: the same totals whatever the window
    assert short.cost_all_cny == pytest.approx(full.cost_cny) == pytest.approx(full.cost_all_cny)
    assert short.energy_all_kwh == pytest.approx(full.energy_kwh) == pytest.approx(full.energy_all_kwh)
    assert short.end_s == full.end_s >= 7200.0
    assert short.served_all_acc_hours == pytest.approx(full.served_acc_hours) == pytest.approx(16.0)


def test_a_long_realtime_row_is_a_service_holding_its_accelerators(tmp_path: Path) -> None:
    """Before: 16 accelerators for 2 h became 1,920 accelerators for one minute (most of it dropped)."""
    traces = load_traces([str(_csv(tmp_path, "0,7200,16,realtime,shanghai,\n"))])
    w = build_workload(traces, national(), scaling=AS_IS, window_s=3 * 3600.0)
    assert len(w.services) == 1 and not any(map(any, w.rt_demand))
    r = simulate(get_policy("westflow"), national(), w)
    assert (r.rt_services, r.rt_requests, r.rt_dropped_requests) == (1, 1, 0)
    assert r.rt_work_acc_s == 16 * 7200
    held = {dc: u for dc, u in r.util_dc.items() if u}
    assert len(held) == 1  # one DC holds it for 2 h of the 3
    dc = next(iter(held))
    pool = max(p.count for d in national().data_centers if d.id == dc for p in d.pools)
    assert held[dc] == pytest.approx(16 / pool * 2 / 3, rel=0.05)


def test_sla_is_reported_per_row_and_per_accelerator_second(tmp_path: Path) -> None:
    """One huge service no DC can hold beside 199 small rows: 0.5 % of rows, ~100 % of the work dropped."""
    small = "".join(f"{i * 10},30,1,realtime,shanghai,\n" for i in range(199))
    traces = load_traces([str(_csv(tmp_path, small + "0,3600,4096,realtime,shanghai,\n"))])
    r = simulate(get_policy("westflow"), national(), build_workload(traces, national(), scaling=AS_IS))
    assert r.rt_requests == pytest.approx(200)
    assert r.share(r.rt_dropped_requests, r.rt_requests) == pytest.approx(0.005)
    assert r.share(r.rt_dropped_acc_s, r.rt_work_acc_s) > 0.99


@pytest.mark.parametrize("family", ["cann", "cuda"], ids=str)
def test_the_family_of_a_realtime_row_is_honoured(tmp_path: Path, family: str) -> None:
    n = national()
    traces = load_traces([str(_csv(tmp_path, f"0,30,64,realtime,shanghai,{family}\n"))])
    w = build_workload(traces, n, scaling=AS_IS, window_s=60.0)
    r = simulate(get_policy("westflow"), n, w)
    used = [dc for dc, u in r.util_dc.items() if u]
    assert used and r.rt_dropped_requests == 0
    assert all(d.families == {family} or family in d.families for d in n.data_centers if d.id in used)
    assert all(p.family.value == family for d in n.data_centers if d.id in used for p in d.pools
               if len(d.pools) == 1)


def _bad(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must hold besides the path)."""
    b = tmp_path / "bad"
    b.mkdir()

    def raw(name: str, data: bytes) -> Path:
        p = b / name
        p.write_bytes(data)
        return p

    h = HEADER.encode()
    return {
        "unknown-city-batch": (raw("c1.csv", h + b"0,60,1,batch,beijing,\n5,60,1,batch,atlantis,\n"), "row 2 origin"),
        "unknown-city-realtime": (raw("c2.csv", h + b"0,60,1,realtime,gotham,\n"), "row 1 origin"),
        "zero-accelerators": (raw("z.csv", h + b"0,60,1,batch,,\n1,60,0,batch,,\n"), "row 2 accelerators"),
        "directory": (b, "a directory"),
        "binary": (raw("bin.csv", h + b"0,60,1,batch,,\n\x00\x01\x02\xff\n"), "row 2"),
        "not-utf8": (raw("latin.csv", h + b"0,60,1,batch,,\n0,60,1,b\xe9tch,,\n"), "row 2"),
        "header-only": (raw("empty.csv", h), "at least one row"),
        "too-large-job": (raw("big.csv", h + b"0,60,1,batch,,\n0,60,4000,batch,,cann\n"),
                          "row 2 accelerators (batch job of row 2)"),
    }


def test_bad_trace_files_name_the_file_and_row(tmp_path: Path) -> None:
    limits = trace_limits(national())
    for name, (path, needle) in _bad(tmp_path).items():
        with pytest.raises(SpecError) as e:
            load_traces([str(path)], limits=limits)
        assert str(path) in str(e.value) and needle in str(e.value), (name, str(e.value))


def test_a_bom_before_the_header_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + b"0,60,1,batch,beijing,\n")
    assert len(load_traces([str(p)], limits=trace_limits(national())).batch) == 1


@pytest.mark.timeout(120)
def test_cli_bad_traces_exit_2_and_none_replays_as_is(tmp_path: Path) -> None:
    for name, (path, needle) in _bad(tmp_path).items():
        code, _, err = run_cli(["simulate", "--trace", str(path), "--out", str(tmp_path / "s"), "--processes", "1"])
        assert code == EXIT_BAD_INPUT and str(path) in err and needle in err and "Traceback" not in err, (name, err)
    trace = _csv(tmp_path, "0,600,8,batch,beijing,\n100,600,8,batch,wuhan,\n")
    out = tmp_path / "sim"
    code, _, err = run_cli(["simulate", "--trace", str(trace), "--policy", "westflow", "--processes", "1",
                            "--batch-load", "none", "--realtime-load", "NONE", "--out", str(out)])
    assert code == 0, err
    assert "warning: 0 real-time requests" in err
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| batch load scaling | x1 (the trace's arrivals as they are) |" in report
    assert "| real-time load scaling | x1 (the trace's arrivals as they are) |" in report
    assert "> **Warning:** 0 real-time requests" in report
    assert all((out / f).stat().st_size > 0 for f in ("cost_sla.png", "cost_hourly.png", "waits.png"))
