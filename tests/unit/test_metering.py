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
T0 = 1_793_000_000.0  # 2026-10-27 (UTC): a fixed instant, so periods are stable


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


def test_a_record_is_the_placements_price_for_the_hours_ray_reports() -> None:
    p = gpu_placement(inputs=[{"name": "x", "region": "west", "size_gb": 10}])
    rec = usage_record(p, job_id="j1", start=T0, end=T0 + 5400, status="SUCCEEDED", network=national(),
                       run_id="r", step="s", preemptions=1, failovers=2)
    assert rec.accelerator_hours == pytest.approx(2 * 1.5)
    assert rec.cpu_hours == pytest.approx(p.spec.cpus * 1.5)
    assert rec.kwh == pytest.approx(p.energy_kwh * 1.5 / 2) and rec.kwh > 0
    assert rec.cny == pytest.approx(p.energy_cost_cny * 1.5 / 2)
    dc = national().dc(p.data_center)
    pool = next(x for x in dc.pools if x.model == p.accelerator_model)
    by_hand = (pool.watts * 2 + dc.cpu_watts * p.spec.cpus) / 1000 * 1.5 * dc.pue
    assert rec.kwh == pytest.approx(by_hand) and rec.cny == pytest.approx(by_hand * dc.price_cny_kwh)
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
