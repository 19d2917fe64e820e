"""Metering on a real PostgreSQL 16 (PyPI ``pgserver``): the same store, the writer killed before its commit,
reconcilers racing, and per-day sums (PostgreSQL rounds a CAST, so the day is floored there first).

Only Ray's job list is faked, as in tests/unit/test_metering.py.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from admission.metering import Meter
from admission.workqueue import AdmissionQueue
from ray_cluster.metering_sync import reconcile
from tests.unit.test_metering import BOUND_S, FORK, NOV, gpu_placement, job_of, rec_of, writer_hangs_before_commit

pytestmark = pytest.mark.integration


def test_records_are_idempotent_and_sum_per_day_on_postgres(pg_url: str) -> None:
    q = AdmissionQueue(pg_url)
    try:
        m = Meter(q)
        recs = [rec_of(f"j{i}", end=NOV + i * 3600 * 7 + 1800) for i in range(12)]  # 2026-11-02 .. 11-05
        assert m.record(recs[0]) and not m.record(recs[0])
        assert m.record_many(recs) == 11 and m.record_many(recs) == 0
        days = m.totals(["day"])
        assert [t.key[0] for t in days] == ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
        assert sum(t.jobs for t in days) == 12
        assert m.records(start=NOV, end=NOV + 86400) == recs[:4]
    finally:
        q.close()


@pytest.mark.parametrize("trial", range(3), ids=lambda t: f"trial-{t}")
def test_a_killed_writer_is_metered_once_on_postgres(pg_url: str, trial: int) -> None:
    q = AdmissionQueue(pg_url)
    try:
        job = job_of(gpu_placement(), f"job-{trial}", NOV, NOV + 600)
        ready = FORK.Event()
        proc = FORK.Process(target=writer_hangs_before_commit, args=(pg_url, job, ready))
        proc.start()
        try:
            assert ready.wait(timeout=BOUND_S), "the writer never reached its INSERT"
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.join(timeout=BOUND_S)
        meters = [Meter(AdmissionQueue(pg_url)) for _ in range(3)]
        written: list[int] = []
        start = threading.Barrier(len(meters))

        def one(m: Meter) -> None:
            start.wait(timeout=BOUND_S)
            written.append(reconcile(m, {"c": lambda: [job]}).written)

        threads = [threading.Thread(target=one, args=(m,)) for m in meters]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND_S)
        for m in meters:
            m.queue.close()
        assert sorted(written) == [0, 0, 1] and [r.ray_job_id for r in Meter(q).records()] == [job.submission_id]
    finally:
        q.close()
