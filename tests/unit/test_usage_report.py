"""The report's figures (``westflow.usage_report``), ``westflow report`` (bad input, determinism) and the
``metering`` asset's dataset, on a synthetic month of records.

``python -m tests.unit.test_usage_report`` redraws the example PNGs of docs/metering.md (docs/img/report-*.png).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from admission.metering import Meter, UsageRecord
from admission.workqueue import AdmissionQueue
from tests.builders import national
from westflow.capacity import Standing
from westflow.inventory import Network
from westflow.usage_report import (
    dc_utilisation,
    hourly_utilisation,
    region_share_by_day,
    shanghai_day,
    tenant_spend,
)

NOV_START = 1_793_462_400.0  # 2026-11-01 00:00 Asia/Shanghai
NOV_END = 1_796_054_400.0    # 2026-12-01 00:00 Asia/Shanghai
H = 3600.0


def rec(job: str, dc: str = "guian", *, start: float = NOV_START, hours: float = 1.0, accelerators: int = 8,
        tenant: str = "recsys", cny: float = 10.0, transfer_cny: float = 0.0, network: Network | None = None,
        cpus: float = 4.0) -> UsageRecord:
    d = (network or national()).dc(dc)
    return UsageRecord(job, d.ray_cluster, d.id, d.region.value, tenant, None, None, None, accelerators, cpus, 32.0,
                       start, start + hours * H, "SUCCEEDED", accelerators * hours, cpus * hours, 1.0, cny, 0.0,
                       transfer_cny, 0, 0)


def synthetic_month(network: Network, seed: int = 7) -> list[UsageRecord]:
    """A month of jobs: each DC loaded to a diurnal share of its capacity, the west lighter than the east."""
    rng = random.Random(seed)
    tenants = ("recsys", "retail-ai", "bio-research", "gov-analytics")
    out: list[UsageRecord] = []
    for dc in sorted(network.data_centers, key=lambda d: d.id):
        if not dc.accelerator_total:
            continue
        level = 0.55 if dc.region.value == "east" else 0.35
        t = NOV_START
        while t < NOV_END - 12 * H:
            hour = int((t - NOV_START) // H) % 24
            busy = level * (1.25 if 9 <= hour <= 21 else 0.7) * (1 + 0.4 * (t - NOV_START) / (NOV_END - NOV_START))
            n = max(8, int(dc.accelerator_total * busy * rng.uniform(0.05, 0.15)) // 8 * 8)
            hours = rng.uniform(1.0, 6.0)
            out.append(rec(f"{dc.id}-{len(out)}", dc.id, start=t, hours=hours, accelerators=n,
                           tenant=rng.choices(tenants, weights=(5, 3, 2, 1))[0],
                           cny=n * hours * dc.price_cny_kwh * 0.5, network=network))
            t += hours * H / 10 * rng.uniform(0.6, 1.4)
    return out


# -- the pure figures ---------------------------------------------------------------------------------------


def test_dc_utilisation_clips_jobs_to_the_window_against_each_target() -> None:
    net = national()
    cap = net.dc("guian").accelerator_total
    day = NOV_START
    recs = [rec("a", start=day - 2 * H, hours=4, accelerators=cap),   # 2 h inside the day
            rec("b", start=day + 10 * H, hours=12, accelerators=cap),  # 12 h inside
            rec("c", start=day + 23 * H, hours=5, accelerators=cap)]   # 1 h inside
    rows = {r.dc: r for r in dc_utilisation(recs, net, day, day + 24 * H)}
    g = rows["guian"]
    assert g.used == pytest.approx(15 * cap) and g.total == pytest.approx(24 * cap)
    assert g.utilisation == pytest.approx(15 / 24) and g.target == net.dc("guian").utilisation_target
    assert g.standing is (Standing.BELOW if 15 / 24 < g.target else Standing.MET)
    assert rows["helinger"].utilisation == 0.0 and set(rows) == set(net.dc_ids)
    assert [r.dc for r in dc_utilisation(recs, net, day, day + H, dcs=["guian"])] == ["guian"]
    with pytest.raises(ValueError, match="end must be after start"):
        dc_utilisation(recs, net, day, day)


def test_hourly_utilisation_spreads_a_job_over_the_hours_it_ran() -> None:
    net = national()
    cap = net.dc("guian").accelerator_total
    recs = [rec("a", start=NOV_START + 1.5 * H, hours=2, accelerators=cap // 2)]
    series = {s.dc: s for s in hourly_utilisation(recs, net, NOV_START, NOV_START + 6 * H)}
    g = series["guian"]
    assert g.hours == tuple(NOV_START + i * H for i in range(6))
    assert g.utilisation == pytest.approx((0.0, 0.25, 0.5, 0.25, 0.0, 0.0))
    assert set(series) == {d.id for d in net.data_centers if d.accelerator_total}
    assert all(u == 0 for u in series["helinger"].utilisation)


def test_hourly_sums_match_dc_utilisation_over_the_month() -> None:
    net = national()
    recs = [r for r in synthetic_month(net) if NOV_START <= r.end < NOV_END]
    monthly = {r.dc: r.utilisation for r in dc_utilisation(recs, net, NOV_START, NOV_END)}
    for s in hourly_utilisation(recs, net, NOV_START, NOV_END):
        assert sum(s.utilisation) / len(s.utilisation) == pytest.approx(monthly[s.dc])


def test_tenant_spend_sums_energy_and_transfer_largest_first() -> None:
    recs = [rec("a", tenant="b", cny=5, transfer_cny=1), rec("b", tenant="a", cny=6),
            rec("c", tenant="c", cny=1), rec("d", tenant="c", cny=2, hours=3)]
    spend = tenant_spend(recs)
    assert [(s.tenant, s.cny) for s in spend] == [("a", 6.0), ("b", 6.0), ("c", 3.0)]  # ties by name
    assert spend[2].accelerator_hours == pytest.approx(8 * 4)
    assert tenant_spend([]) == ()


def test_region_share_counts_each_job_on_the_day_it_ended() -> None:
    recs = [rec("w", "guian", start=NOV_START + 20 * H, hours=6, accelerators=8),      # ends on 11-02
            rec("e", "zhangjiakou", start=NOV_START + 2 * H, hours=1, accelerators=24)]  # ends on 11-01
    days = {d.day: d for d in region_share_by_day(recs, NOV_START, NOV_START + 3 * 86400)}
    assert list(days) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert (days["2026-11-01"].east_hours, days["2026-11-01"].west_share) == (24.0, 0.0)
    assert days["2026-11-02"].west_hours == 48.0 and days["2026-11-02"].west_share == 1.0
    assert days["2026-11-03"].east_share == days["2026-11-03"].west_share == 0.0
    assert shanghai_day(NOV_START) == "2026-11-01" and shanghai_day(NOV_START - 1) == "2026-10-31"


# -- westflow report -------------------------------------------------------------------------------------


@pytest.fixture
def metered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("WESTFLOW_ADMISSION_URL", raising=False)
    state = tmp_path / "state"
    q = AdmissionQueue.local(state)
    Meter(q).record_many([r for r in synthetic_month(national()) if r.end < NOV_END][::20])
    q.close()
    return state


def cli(*argv: str) -> int:
    from westflow_cli.main import main

    return main(list(argv))


def test_report_writes_three_pngs_byte_identical_on_a_rerun(metered: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b" / "nested"
    for out in (a, b):
        assert cli("report", "--state-dir", str(metered), "--period", "2026-11", "--out", str(out)) == 0
    names = sorted(p.name for p in a.iterdir())
    assert names == ["regions-2026-11.png", "spend-2026-11.png", "utilisation-2026-11.png"]
    for name in names:
        data = (a / name).read_bytes()
        assert data.startswith(b"\x89PNG") and data == (b / name).read_bytes()
        assert b"Software" not in data and b"matplotlib" not in data


@pytest.mark.parametrize(("argv", "field"), [
    (["--period", "2999-01", "--out", "{tmp}/r"], "--period"),
    (["--period", "2026-13", "--out", "{tmp}/r"], "--period"),
    (["--period", "2026-11", "--out", "{tmp}/a-file"], "--out"),
    (["--period", "2026-11", "--out", "{tmp}/a-file/below"], "--out"),
], ids=["future", "month-13", "a-file", "under-a-file"])
def test_bad_report_input_exits_2_with_one_line(metered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                argv: list[str], field: str) -> None:
    (tmp_path / "a-file").write_text("x")
    code = cli("report", "--state-dir", str(metered), *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and field in err


def test_an_unwritable_report_dir_exits_2(metered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only directory is still writable")
        for out in (locked, locked / "sub"):
            assert cli("report", "--state-dir", str(metered), "--period", "2026-11", "--out", str(out)) == 2
            assert "--out" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


# -- the Dagster assets (no Ray: the database, and the catalogue behind its seam) -------------------------------


def test_a_metering_day_is_one_dataset_with_its_sums() -> None:
    from jobs.memstore import MemoryDatasetStore
    from pipelines.metering_asset import ACCELERATOR_HOURS, CNY, ROWS, SCHEMA, day_window, write_day

    start, end = day_window("2026-11-01")
    assert (start, end) == (NOV_START, NOV_START + 86400)
    recs = [rec("a", cny=2.5, transfer_cny=0.5), rec("b", "zhangjiakou", hours=2, cny=1.0)]
    store = MemoryDatasetStore()
    meta = write_day(store, "2026-11-01", recs)
    assert (meta[ROWS], meta[ACCELERATOR_HOURS], meta[CNY]) == (2, 24.0, 4.0)
    table = store.read("metering-2026-11-01", "east")
    assert table.schema == SCHEMA and table.to_pylist()[1]["data_center"] == "zhangjiakou"
    assert table.to_pylist()[0]["run_id"] is None
    assert write_day(store, "2026-11-02", [])[ROWS] == 0 and store.read("metering-2026-11-02").num_rows == 0


def test_network_utilisation_reads_metered_actuals_without_ray(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from pipelines.resources import WestflowResource
    from pipelines.utilisation import network_utilisation, utilisation_rows

    for var in ("WESTFLOW_ADMISSION_URL", "WESTFLOW_RAY_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    net = national()
    now = NOV_START + 86400
    cap = net.dc("guian").accelerator_total
    q = AdmissionQueue.local(tmp_path)
    Meter(q).record_many([rec("g", "guian", start=now - 20 * H, hours=18, accelerators=cap),
                          rec("old", "guian", start=now - 50 * H, hours=1, accelerators=cap)])
    q.close()
    res = WestflowResource(state_dir=str(tmp_path))
    rows = {r.dc: r for r in utilisation_rows(res, now=now)}
    assert rows["guian"].utilisation == pytest.approx(18 / 24) and rows["guian"].standing is Standing.MET
    assert rows["helinger"].below and set(rows) == set(net.dc_ids)
    result = dg.materialize([network_utilisation], instance=dg.DagsterInstance.ephemeral(),
                            resources={"westflow": res})
    meta = result.asset_materializations_for_node("network_utilisation")[0].metadata
    assert "| target | standing |" in meta["table"].value and Path(meta["plot"].value).exists()
    assert meta["data_centers"].value == len(net.dc_ids) and "helinger" in meta["below_target"].value


def write_examples(out: Path) -> list[Path]:
    """The example PNGs of docs/metering.md: the synthetic month, drawn by the command's own renderer."""
    from westflow_cli.commands.usage_charts import render

    net = national()
    recs = [r for r in synthetic_month(net) if NOV_START <= r.end < NOV_END]
    paths = render(recs, net, "2026-11", NOV_START, NOV_END, out)
    return [p.rename(out / f"report-{p.name}") for p in paths]


if __name__ == "__main__":
    for p in write_examples(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")):
        print(p)
