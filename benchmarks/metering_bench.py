"""Metering's cost (issue 15's figures), on the embedded SQLite store in a temporary directory.

- **write overhead per job**: what a step's process adds when its Ray job ends
  (:func:`ray_cluster.metering_sync.meter_job`: one ``get_job_info`` from a stub answering at once,
  pricing, opening the queue's database and one idempotent INSERT), median and p95 over ``--jobs``;
  the INSERT alone beside it;
- **reconciler over 100,000 records**: one pass over a cluster's job table of ``--records`` ended
  westflow jobs (a stub list, as Ray's ``list_jobs`` returns), first with none metered (all written),
  then again with all metered (the steady state: nothing written);
- **bill for a month of 100,000 records**: ``westflow bill --period 2026-11`` (every tenant plus the
  idle lines) to CSV and to Parquet, through the CLI's own ``main``, goal < 2 s.

    .venv/bin/python -m benchmarks.metering_bench [--records 100000] [--jobs 300]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from admission.metering import Meter, job_metadata
from admission.workqueue import AdmissionQueue
from ray_cluster.dispatch import JOB_DC
from ray_cluster.metering_sync import meter_job, reconcile
from westflow.config import load_network
from westflow.placement import Placement, place
from westflow.spec import parse_spec
from westflow_cli.main import main

NOV = 1_793_462_400.0  # 2026-11-01 00:00 Asia/Shanghai
GOAL_BILL_S = 2.0


@dataclass
class Job:
    submission_id: str
    status: str
    start_time: int
    end_time: int
    metadata: dict[str, str]


class _Info:
    def __init__(self, start_ms: int, end_ms: int) -> None:
        self.start_time, self.end_time = start_ms, end_ms


class _Client:
    def get_job_info(self, job_id: str) -> _Info:
        return _Info(int(NOV * 1000), int(NOV * 1000) + 3_600_000)


class _Dispatcher:
    def client(self) -> _Client:
        return _Client()


def placements() -> list[Placement]:
    net = load_network()
    out = []
    for tenant in ("default", "recsys", "retail-ai"):
        for acc, origin in (("cuda:8", "beijing"), ("cann:4", "shanghai"), ("cuda:2", "chengdu"), ("cpu", "beijing")):
            spec = parse_spec({"name": "bench", "tier": "batch", "tenant": tenant, "accelerator": acc,
                               "origin": origin, "cpus": 8, "memory_gb": 32, "duration_hours": 2})
            out.append(place(spec, net))
    return out


def jobs(n: int, ps: list[Placement], seed: int = 7) -> list[Job]:
    rnd = random.Random(seed)
    metas = [{JOB_DC: p.data_center, **job_metadata(p, run_id="bench-run", step="train")} for p in ps]
    month_s = 29 * 86400
    out = []
    for i in range(n):
        end = NOV + rnd.random() * month_s
        out.append(Job(f"raysubmit_{i:07d}", rnd.choice(("SUCCEEDED", "SUCCEEDED", "FAILED", "STOPPED")),
                       int((end - rnd.uniform(60, 8 * 3600)) * 1000), int(end * 1000), rnd.choice(metas)))
    return out


def bench_writes(state: Path, ps: list[Placement], n: int) -> tuple[list[float], list[float]]:
    AdmissionQueue.local(state).close()  # migrated once, as a running network's database is
    full, insert = [], []
    meter = Meter(AdmissionQueue.local(state))
    for i in range(n):
        p = ps[i % len(ps)]
        t0 = time.perf_counter()
        rec = meter_job(lambda: AdmissionQueue.local(state), _Dispatcher(), p, f"w-{i}",  # type: ignore[arg-type]
                        status="SUCCEEDED", submitted_at=NOV)
        full.append(time.perf_counter() - t0)
        assert rec is not None
        t0 = time.perf_counter()
        meter.record(rec.__class__(**{**_fields(rec), "ray_job_id": f"i-{i}"}))
        insert.append(time.perf_counter() - t0)
    meter.queue.close()
    return full, insert


def _fields(rec: Any) -> dict[str, Any]:
    return {f: getattr(rec, f) for f in rec.__slots__}


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def run(records: int, n_jobs: int) -> None:
    ps = placements()
    with tempfile.TemporaryDirectory(prefix="westflow-metering-bench-") as tmp:
        root = Path(tmp)
        full, insert = bench_writes(root / "writes", ps, n_jobs)
        print(f"write overhead per job ({n_jobs} jobs, SQLite): meter_job median "
              f"{statistics.median(full) * 1e3:.2f} ms, "
              f"p95 {pct(full, 0.95) * 1e3:.2f} ms (opens the database each time, as a step does); "
              f"the INSERT alone median {statistics.median(insert) * 1e3:.2f} ms")

        state = root / "state"
        listing = jobs(records, ps)
        meter = Meter(AdmissionQueue.local(state))
        first = reconcile(meter, {"east": lambda: listing[: records // 2], "west": lambda: listing[records // 2:]})
        again = reconcile(meter, {"east": lambda: listing[: records // 2], "west": lambda: listing[records // 2:]})
        assert first.written == records and again.written == 0 and meter.count() == records
        meter.queue.close()
        print(f"reconciler over {records:,} ended jobs: {first.seconds:.2f} s with none metered (all written), "
              f"{again.seconds:.2f} s with all metered (nothing written)")

        for ext in ("csv", "parquet"):
            out = root / f"bill.{ext}"
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    code = main(["bill", "--state-dir", str(state), "--period", "2026-11", "--out", str(out)])
                times.append(time.perf_counter() - t0)
                assert code == 0
            best = min(times)
            print(f"bill, a month of {records:,} records -> {ext}: {statistics.median(times):.2f} s median, "
                  f"{best:.2f} s best of 3 (goal < {GOAL_BILL_S:g} s: {'met' if best < GOAL_BILL_S else 'MISSED'}); "
                  f"{out.stat().st_size:,} bytes")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=300)
    return ap.parse_args(argv)


if __name__ == "__main__":
    os.environ.pop("WESTFLOW_ADMISSION_URL", None)
    a = parse()
    run(a.records, a.jobs)
