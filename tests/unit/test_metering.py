"""Metering on a real SQLite file: pricing, idempotent records, the reconciler, a writer killed before its commit,
and the ``usage`` / ``bill`` commands. Only Ray's job list is faked (objects shaped like Ray's JobDetails).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from admission.metering import USAGE_KEY, Meter, UsageRecord, job_metadata, usage_from_job, usage_record
from admission.workqueue import AdmissionQueue
from ray_cluster.dispatch import JOB_DC
from ray_cluster.metering_sync import reconcile
from tests.builders import make_spec, national
from westflow.placement import Placement, place

FORK = mp.get_context("fork")  # the writer is killed in its transaction: fork starts it in milliseconds
BOUND_S = 60.0
T0 = 1_793_000_000.0  # 2026-10-26 (UTC): a fixed instant, so periods are stable


@dataclass
class FakeJob:
    """What the reconciler reads of Ray's JobDetails."""

    submission_id: str
    status: str
    start_time: int | None
    end_time: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    job_id: str | None = None


def gpu_placement(tenant: str = "retail-ai", **spec: Any) -> Placement:
    return place(make_spec(accelerator="cuda:2", tenant=tenant, duration_hours=2, **spec), national())


def job_of(p: Placement, job_id: str, start: float, end: float | None, status: str = "SUCCEEDED",
           **meta: str) -> FakeJob:
    md = {JOB_DC: p.data_center, **job_metadata(p, run_id="run-1", step="train"), **meta}
    return FakeJob(job_id, status, int(start * 1000), None if end is None else int(end * 1000), md)


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[AdmissionQueue]:
    q = AdmissionQueue.local(tmp_path / "state")
    try:
        yield q
    finally:
        q.close()


@pytest.fixture
def meter(queue: AdmissionQueue) -> Meter:
    return Meter(queue)


# -- pricing ------------------------------------------------------------------------------------------


def test_time_of_use_metering_prices_the_hours_a_job_ran_and_travels_to_the_reconciler() -> None:
    n = national()
    p = gpu_placement()
    dc = n.dc(p.data_center)
    assert dc.tariff is not None
    valley = next(q for q in dc.tariff.periods if q.band.value == "valley")
    peak = next(q for q in dc.tariff.periods if q.band.value == "peak")
    midnight = T0 - (T0 + 8 * 3600) % 86400  # local midnight on T0's day
    cheap = usage_record(p, job_id="a", start=midnight + valley.start_s, end=midnight + valley.start_s + 3600,
                         status="SUCCEEDED", network=n)
    dear = usage_record(p, job_id="b", start=midnight + peak.start_s, end=midnight + peak.start_s + 3600,
                        status="SUCCEEDED", network=n)
    assert cheap.kwh == dear.kwh
    assert cheap.cny == pytest.approx(cheap.kwh * valley.price_cny_kwh)
    assert dear.cny == pytest.approx(dear.kwh * peak.price_cny_kwh) and dear.cny > cheap.cny
    meta = job_metadata(p)  # the placement's tariff travels with the job
    again = usage_from_job("a", metadata=meta, status="SUCCEEDED", start_ms=cheap.start * 1000,
                           end_ms=cheap.end * 1000)
    assert again is not None and again.cny == pytest.approx(cheap.cny)
    broken = {USAGE_KEY: meta[USAGE_KEY].replace('"tariff":[[0', '"tariff":[[5')}
    assert usage_from_job("a", metadata=broken, status="SUCCEEDED", start_ms=1, end_ms=2) is None


def test_a_record_is_the_placements_price_for_the_hours_ray_reports() -> None:
    p = gpu_placement(inputs=[{"name": "x", "region": "west", "size_gb": 10}])
    rec = usage_record(p, job_id="j1", start=T0, end=T0 + 5400, status="SUCCEEDED", network=national(),
                       run_id="r", step="s", preemptions=1, failovers=2)
    assert rec.accelerator_hours == pytest.approx(2 * 1.5)
    assert rec.cpu_hours == pytest.approx(p.spec.cpus * 1.5)
    assert rec.kwh == pytest.approx(p.energy_kwh * 1.5 / 2) and rec.kwh > 0
    dc = national().dc(p.data_center)
    assert dc.tariff is not None  # priced at the time-of-use prices of the hours it ran
    assert rec.cny == pytest.approx(rec.kwh * dc.tariff.mean_price(T0, 1.5))
    flat = usage_record(replace(p, tariff=None), job_id="j1", start=T0, end=T0 + 5400, status="SUCCEEDED",
                        network=None)
    assert flat.cny == pytest.approx(p.energy_cost_cny * 1.5 / 2)  # no tariff: the placement's flat price
    pool = next(x for x in dc.pools if x.model == p.accelerator_model)
    by_hand = (pool.watts * 2 + dc.cpu_watts * p.spec.cpus) / 1000 * 1.5 * dc.pue
    assert rec.kwh == pytest.approx(by_hand) and flat.cny == pytest.approx(by_hand * dc.price_cny_kwh)
    assert (rec.tenant, rec.run_id, rec.step, rec.preemptions, rec.failovers) == ("retail-ai", "r", "s", 1, 2)
    assert (rec.data_center, rec.cluster, rec.region) == (p.data_center, p.ray_cluster, p.region)
    moved = 10.0 if p.region != "west" else 0.0
    assert rec.transfer_gb == pytest.approx(moved) and rec.transfer_cny == pytest.approx(p.transfer_cost_cny)


def test_the_reconcilers_price_is_the_writers() -> None:
    p = gpu_placement()
    job = job_of(p, "j1", T0, T0 + 3600, "FAILED")
    got = usage_from_job("j1", metadata=job.metadata, status="FAILED", start_ms=job.start_time, end_ms=job.end_time)
    want = usage_record(p, job_id="j1", start=T0, end=T0 + 3600, status="FAILED", network=national(), run_id="run-1",
                        step="train")
    assert got == want


@pytest.mark.parametrize(("meta", "status", "end"), [
    ({}, "SUCCEEDED", 1), ({USAGE_KEY: "{not json"}, "SUCCEEDED", 1), ({USAGE_KEY: '{"x": 1}'}, "SUCCEEDED", 1),
    (None, "RUNNING", None)], ids=["not-westflows", "bad-json", "bad-fields", "running"])
def test_jobs_the_reconciler_cannot_price_give_none(meta: dict[str, str] | None, status: str, end: int | None) -> None:
    md = job_metadata(gpu_placement()) if meta is None else meta
    assert usage_from_job("j", metadata=md, status=status, start_ms=0, end_ms=end) is None


@pytest.mark.parametrize(("name", "value"), [("status", "DONE"), ("cpus", -1.0), ("kwh", float("nan")),
                                             ("end", T0 - 1), ("ray_job_id", "")],
                         ids=["status", "negative", "nan", "end-before-start", "no-id"])
def test_a_bad_record_is_refused(name: str, value: Any) -> None:
    rec = usage_record(gpu_placement(), job_id="j", start=T0, end=T0 + 60, status="STOPPED", network=national())
    with pytest.raises(Exception, match=name):
        replace(rec, **{name: value})


# -- the store ----------------------------------------------------------------------------------------


def rec_of(job_id: str, *, tenant: str = "retail-ai", end: float = T0 + 3600, hours: float = 1.0) -> UsageRecord:
    p = gpu_placement(tenant)
    return usage_record(p, job_id=job_id, start=end - hours * 3600, end=end, status="SUCCEEDED", network=national())


def test_a_record_is_written_once(meter: Meter) -> None:
    rec = rec_of("j1")
    assert meter.record(rec) is True
    assert meter.record(rec) is False
    assert meter.record(replace(rec, cny=99.0)) is False  # append-only: the first write stands
    assert meter.records() == [rec]


def test_records_filter_by_tenant_and_end(meter: Meter) -> None:
    a, b, c = rec_of("a", end=T0), rec_of("b", tenant="recsys", end=T0 + 10), rec_of("c", end=T0 + 20)
    assert meter.record_many([c, a, b]) == 3 and meter.record_many([a, b]) == 0
    assert [r.ray_job_id for r in meter.records()] == ["a", "b", "c"]
    assert meter.records(tenant="retail-ai") == [a, c]
    assert meter.records(start=T0 + 5, end=T0 + 20) == [b]


def test_totals_group_in_the_database(meter: Meter) -> None:
    recs = [rec_of(f"j{i}", tenant=("recsys", "retail-ai")[i % 2], end=T0 + i * 86400, hours=1 + i) for i in range(4)]
    meter.record_many(recs)
    by_tenant = meter.totals(["tenant"])
    assert [t.key for t in by_tenant] == [("recsys",), ("retail-ai",)]
    assert sum(t.accelerator_hours for t in by_tenant) == pytest.approx(sum(r.accelerator_hours for r in recs))
    assert sum(t.total_cny for t in by_tenant) == pytest.approx(sum(r.cny + r.transfer_cny for r in recs))
    days = meter.totals(["day"])
    assert len(days) == 4 and all(t.jobs == 1 for t in days)
    assert meter.totals(["tenant"], start=T0 + 10 * 86400) == []


# -- the reconciler ------------------------------------------------------------------------------------


def test_the_reconciler_meters_ended_westflow_jobs_once(meter: Meter) -> None:
    p = gpu_placement()
    jobs = [job_of(p, "ended", T0, T0 + 3600), job_of(p, "failed", T0, T0 + 60, "FAILED"),
            job_of(p, "running", T0, None, "RUNNING"), FakeJob("not-ours", "SUCCEEDED", 0, 1000),
            FakeJob("old-westflow", "SUCCEEDED", 0, 1000, {JOB_DC: "x"})]
    meter.record(usage_record(p, job_id="failed", start=T0, end=T0 + 60, status="FAILED", network=national()))
    first = reconcile(meter, {"east": lambda: jobs, "west": lambda: []})
    assert (first.written, first.already, first.unpriced, first.unreachable) == (1, 1, ("old-westflow",), ())
    again = reconcile(meter, {"east": lambda: jobs})
    assert (again.written, again.already) == (0, 2)
    assert sorted(r.ray_job_id for r in meter.records()) == ["ended", "failed"]
    ended = next(r for r in meter.records() if r.ray_job_id == "ended")
    assert ended.accelerator_hours == pytest.approx(2.0) and (ended.start, ended.end) == (T0, T0 + 3600)


def test_an_unreachable_cluster_is_reported_and_the_others_metered(meter: Meter) -> None:
    def down() -> list[Any]:
        raise ConnectionError("no answer from 127.0.0.1:8266")

    report = reconcile(meter, {"dead": down, "live": lambda: [job_of(gpu_placement(), "j", T0, T0 + 1)]})
    assert report.written == 1 and report.unreachable[0][0] == "dead" and "no answer" in report.unreachable[0][1]


def test_reconcilers_racing_write_each_job_once(queue: AdmissionQueue) -> None:
    p = gpu_placement()
    jobs = [job_of(p, f"j{i}", T0, T0 + 60 + i) for i in range(200)]
    meters = [Meter(AdmissionQueue(queue.url)) for _ in range(4)]
    start = threading.Barrier(len(meters))
    written: list[int] = []

    def one(m: Meter) -> None:
        start.wait(timeout=BOUND_S)
        written.append(reconcile(m, {"c": lambda: jobs}).written)

    threads = [threading.Thread(target=one, args=(m,)) for m in meters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND_S)
    for m in meters:
        m.queue.close()
    assert sum(written) == 200 and Meter(queue).count() == 200


# -- a writer killed between the job's end and its commit -----------------------------------------------


def writer_hangs_before_commit(url: str, job: FakeJob, ready: Any) -> None:
    """Write ``job``'s record as a step's process does; block inside the INSERT's transaction (we get killed)."""
    q = AdmissionQueue(url)

    def hang(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO USAGE"):
            ready.set()
            time.sleep(10 * BOUND_S)

    sa.event.listen(q.engine, "before_cursor_execute", hang)
    rec = usage_from_job(job.submission_id, metadata=job.metadata, status=job.status, start_ms=job.start_time,
                         end_ms=job.end_time)
    assert rec is not None
    Meter(q).record(rec)


@pytest.mark.parametrize("trial", range(10), ids=lambda t: f"trial-{t}")
def test_a_writer_killed_before_its_commit_is_metered_once_by_the_reconciler(queue: AdmissionQueue,
                                                                            trial: int) -> None:
    job = job_of(gpu_placement(), f"job-{trial}", T0, T0 + 600 + trial)
    ready = FORK.Event()
    proc = FORK.Process(target=writer_hangs_before_commit, args=(queue.url, job, ready))
    proc.start()
    try:
        assert ready.wait(timeout=BOUND_S), "the writer never reached its INSERT"
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.join(timeout=BOUND_S)
    assert proc.exitcode == -signal.SIGKILL
    meter = Meter(queue)
    assert meter.records() == []  # the killed transaction left nothing
    listers = {"c": lambda: [job]}
    reports = [reconcile(meter, listers), reconcile(Meter(queue), listers)]
    assert [r.written for r in reports] == [1, 0]
    assert [r.ray_job_id for r in meter.records()] == [job.submission_id]


def test_a_writer_that_committed_is_not_metered_again(meter: Meter) -> None:
    job = job_of(gpu_placement(), "j", T0, T0 + 60)
    rec = usage_from_job("j", metadata=job.metadata, status="SUCCEEDED", start_ms=job.start_time, end_ms=job.end_time)
    assert rec is not None and meter.record(rec)
    assert reconcile(meter, {"c": lambda: [job]}).written == 0 and meter.count() == 1


# -- westflow usage / westflow bill ------------------------------------------------------------------------

NOV = 1_793_548_800.0  # 2026-11-02 00:00 Asia/Shanghai


@pytest.fixture
def billed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[UsageRecord]]:
    """A state dir whose meter holds two tenants' November jobs and one October job."""
    monkeypatch.delenv("WESTFLOW_ADMISSION_URL", raising=False)
    state = tmp_path / "state"
    recs = [rec_of(f"nov-{i}", tenant=("recsys", "retail-ai")[i % 3 == 0], end=NOV + i * 3600, hours=1 + i % 4)
            for i in range(30)] + [rec_of("oct", end=NOV - 5 * 86400)]
    q = AdmissionQueue.local(state)
    Meter(q).record_many(recs)
    q.close()
    return state, recs


def cli(*argv: str) -> int:
    from westflow_cli.main import main

    return main(list(argv))


def test_usage_prints_a_table_per_tenant_and_json(billed: tuple[Path, list[UsageRecord]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    state, recs = billed
    assert cli("usage", "--state-dir", str(state)) == 0
    out = capsys.readouterr().out
    assert "recsys" in out and "retail-ai" in out and "total" in out
    assert cli("usage", "--state-dir", str(state), "--tenant", "retail-ai", "--from", "2026-11-01", "--to",
               "2026-11-30", "--by", "day", "--json") == 0
    rows = json_of(capsys.readouterr().out)
    mine = [r for r in recs if r.tenant == "retail-ai" and r.ray_job_id != "oct"]
    assert sum(r["jobs"] for r in rows) == len(mine)
    assert sum(r["accelerator_hours"] for r in rows) == pytest.approx(sum(r.accelerator_hours for r in mine))
    assert {r["day"] for r in rows} <= {"2026-11-02", "2026-11-03"}


def json_of(text: str) -> Any:
    import json

    return json.loads(text)


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_a_tenants_bill_sums_its_records_and_reruns_byte_identical(billed: tuple[Path, list[UsageRecord]],
                                                                   tmp_path: Path, ext: str) -> None:
    import pyarrow.parquet as pq

    state, recs = billed
    out, again = tmp_path / f"bill.{ext}", tmp_path / f"again.{ext}"
    for path in (out, again):
        assert cli("bill", "--state-dir", str(state), "--tenant", "retail-ai", "--period", "2026-11", "--out",
                   str(path)) == 0
    assert out.read_bytes() == again.read_bytes()
    lines = pq.read_table(out).to_pylist() if ext == "parquet" else list(csv_rows(out))
    mine = [r for r in recs if r.tenant == "retail-ai" and r.ray_job_id != "oct"]
    assert {r["tenant"] for r in lines} == {"retail-ai"} and {r["kind"] for r in lines} == {"usage"}
    assert sum(int(r["jobs"]) for r in lines) == len(mine)
    assert sum(float(r["total_cny"]) for r in lines) == pytest.approx(sum(r.cny + r.transfer_cny for r in mine),
                                                                      abs=1e-5)


def csv_rows(path: Path) -> Iterator[dict[str, str]]:
    import csv

    with path.open(newline="") as f:
        yield from csv.DictReader(f)


def test_the_operators_bill_has_an_idle_line_per_dc(billed: tuple[Path, list[UsageRecord]], tmp_path: Path) -> None:
    state, recs = billed
    out = tmp_path / "all.csv"
    assert cli("bill", "--state-dir", str(state), "--period", "2026-11", "--out", str(out)) == 0
    lines = list(csv_rows(out))
    idle = {r["data_center"]: r for r in lines if r["kind"] == "idle"}
    assert set(idle) == {d.id for d in national().data_centers if d.accelerator_total}
    dc = recs[0].data_center
    used = sum(r.accelerator_hours for r in recs if r.data_center == dc and r.ray_job_id != "oct")
    capacity = national().dc(dc).accelerator_total * 30 * 24
    assert float(idle[dc]["accelerator_hours"]) == pytest.approx(capacity - used, abs=1e-5)
    assert float(idle[dc]["idle_share"]) == pytest.approx((capacity - used) / capacity, abs=1e-6)


@pytest.mark.parametrize(("argv", "field"), [
    (["--tenant", "nobody", "--period", "2026-11", "--out", "{tmp}/b.csv"], "tenant"),
    (["--period", "2999-01", "--out", "{tmp}/b.csv"], "--period"),
    (["--period", "2026-13", "--out", "{tmp}/b.csv"], "--period"),
    (["--period", "2026-11", "--out", "{tmp}/missing/b.csv"], "--out"),
    (["--period", "2026-11", "--out", "{tmp}/b.xlsx"], "--out"),
    (["--period", "2026-11", "--out", "{tmp}"], "--out"),
], ids=["unknown-tenant", "future", "month-13", "no-dir", "bad-ext", "a-directory"])
def test_bad_bill_input_exits_2_with_one_line(billed: tuple[Path, list[UsageRecord]], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str], argv: list[str], field: str) -> None:
    state, _ = billed
    code = cli("bill", "--state-dir", str(state), *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and field in err


def test_an_unwritable_out_exits_2(billed: tuple[Path, list[UsageRecord]], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    state, _ = billed
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only directory is still writable")
        assert cli("bill", "--state-dir", str(state), "--period", "2026-11", "--out", str(locked / "b.csv")) == 2
        assert "--out" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(("argv", "field"), [(["--tenant", "nobody"], "tenant"), (["--from", "2026-13-01"], "--from"),
                                             (["--from", "2026-11-05", "--to", "2026-11-01"], "--to")],
                         ids=["unknown-tenant", "bad-date", "to-before-from"])
def test_bad_usage_input_exits_2_with_one_line(billed: tuple[Path, list[UsageRecord]],
                                               capsys: pytest.CaptureFixture[str], argv: list[str], field: str) -> None:
    state, _ = billed
    assert cli("usage", "--state-dir", str(state), *argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err
