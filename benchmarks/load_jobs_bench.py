"""``load_bench --mode jobs``: steps/s through the production path and time to a RUNNING Ray job.

Against a local network of one Ray cluster (every local DC; started here in a
temp state dir, or the running one with ``--attach``: a single-cluster network
such as ``westflow up --profile configs/local-one-cluster.yaml`` starts, since
every job goes to the one Jobs API in ``$WESTFLOW_RAY_ADDRESS``), two phases from the same worker processes and threads:

1. production: every step reads live capacity through the dashboard, goes
   through ``StepTicket.admit`` on one admission queue (SQLite, the embedded
   default, or PostgreSQL from pgserver with ``--db postgresql``; queued, then
   decided by the admission cycle that a waiting step runs itself on live
   capacity while no controller leads) and, when admitted, is submitted by
   ``Dispatcher.submit`` as a Ray Job (:mod:`benchmarks.load_jobs`); all start
   together. Steps that wait stop waiting once a cycle has decided them;
2. baseline: the admitted steps' jobs again, same command and same entrypoint
   resources, each a bare ``JobSubmissionClient.submit_job`` (no capacity read,
   no queue, no dispatcher); all start together.

Between the phases the jobs are released, their steps end (their tickets
finished), and the dashboard shows the network empty again.

Time to RUNNING: the main process polls ``list_jobs`` every 0.25 s; a job's
time is the first poll that shows it RUNNING (or ended) minus the moment its
Ray submission call started (a wall clock read in the submitting thread), so
each figure is late by at most one poll plus one ``list_jobs``. For the
production path it is also given from the step's ``StepTicket.admit`` call
(its capacity read, queueing and wait for the cycle included).
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from admission.database import sqlite_url
from admission.workqueue import AdmissionQueue
from benchmarks.load_bench import LOAD_HEARTBEAT_S, Outcome, await_final, end_all, make_specs, postgres_databases
from benchmarks.load_jobs import JobSteps, percentile, touch_all, watch_running
from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import TERMINAL
from ray_cluster.live import DashboardReader
from ray_cluster.local import LocalNetwork, Ports, free_port, load_profile
from westflow.config import load_network

__all__ = ["run_jobs_bench"]

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.25


def _await_ended(client: Any, ids: list[str], timeout_s: float = 300.0) -> Counter[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = {j.submission_id: str(getattr(j.status, "value", j.status)) for j in client.list_jobs()}
        if all(status.get(i) in TERMINAL for i in ids) or time.monotonic() > deadline:
            return Counter(status.get(i, "missing") for i in ids)
        time.sleep(0.5)


def _await_empty(reader: DashboardReader, timeout_s: float = 120.0) -> None:
    """Until the dashboard shows no accelerator or CPU in use (the phases start from the same network)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(abs(n.used(k)) < 1e-9 for n in reader.nodes() if n.alive for k in ("CPU", "GPU", "NPU")):
            return
        time.sleep(0.5)
    raise SystemExit("the network never showed itself empty again: is another load running on it?")


def _summary(name: str, n_jobs: int, submit_s: float, waits: list[float], last_running_s: float) -> str:
    return (f"{name}: {n_jobs} jobs submitted in {submit_s:.2f} s ({n_jobs / submit_s:,.1f} jobs/s); "
            f"submission -> RUNNING p50 {percentile(waits, 0.5):.2f} s, p99 {percentile(waits, 0.99):.2f} s; "
            f"all RUNNING {last_running_s:.1f} s after the start")


def _phase(client: Any, ids: list[str], submitted: dict[str, float], t0_wall: float, prefix: str) -> tuple[
        list[float], float]:
    watch = watch_running(client, ids, timeout_s=600, poll_s=POLL_S, prefix=prefix)
    missing = [i for i in ids if i not in watch.running_at]
    if missing:
        raise SystemExit(f"{len(missing)} jobs never ran: {[(i, watch.status.get(i)) for i in missing[:5]]}")
    return [watch.running_at[i] - submitted[i] for i in ids], max(watch.running_at.values()) - t0_wall


def run_jobs_bench(*, requests: int, processes: int, threads: int, attach: bool,
                   heartbeat_s: float = LOAD_HEARTBEAT_S, db: str = "sqlite") -> int:
    """The bench on a queue in SQLite (``db="sqlite"``, the embedded default) or PostgreSQL (pgserver)."""
    if db == "postgresql":
        with postgres_databases() as fresh:
            return _run(requests, processes, threads, attach, heartbeat_s, fresh(), db)
    if db != "sqlite":
        raise SystemExit(f"Invalid db {db!r}; must be one of: sqlite, postgresql.")
    return _run(requests, processes, threads, attach, heartbeat_s, None, db)


def _run(requests: int, processes: int, threads: int, attach: bool, heartbeat_s: float, pg: str | None,
         db: str) -> int:
    network = load_network()
    tmp = Path(tempfile.mkdtemp(prefix="wf-loadbench-"))
    net: LocalNetwork | None = None
    if attach:
        access = ClusterAccess.resolve()
    else:
        net = LocalNetwork(tmp / "state", load_profile(network).as_one_cluster(), workdir=ROOT,
                           ports=Ports(gcs=free_port(), dashboard=free_port(), client_server=free_port()))
        t = time.perf_counter()
        net.up()
        print(f"network: {len(net.profile.dc_ids)} DCs up in {time.perf_counter() - t:.1f} s at {net.dashboard_url}")
        access = ClusterAccess(net.dashboard_url, net.token_path.read_text(encoding="ascii").strip())
    try:
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(access.dashboard_url, headers=access.headers())
        reader = DashboardReader(access.dashboard_url, access.token)
        _await_empty(reader)
        release, ends = tmp / "release", tmp / "ends"
        release.mkdir()
        ends.mkdir()
        prefix = f"wf-loadbench-{secrets.token_hex(4)}"
        url = pg or sqlite_url(tmp / "queue")
        queue = AdmissionQueue(url)  # migrated before the processes start
        specs = [s for _, s in make_specs(requests)]
        with JobSteps(access, tmp / "queue", url, release, ends, prefix=prefix, processes=processes,
                      threads=threads, heartbeat_s=heartbeat_s) as js:
            t0 = time.time()
            steps, elapsed = js.run(specs)
            counts = Counter(s.outcome.value for s in steps)
            errors = [s.error for s in steps if s.error]
            admitted = [s for s in steps if s.submission_id]
            ids = [s.submission_id for s in admitted if s.submission_id]
            waits, last = _phase(client, ids, {s.submission_id: s.submitted for s in admitted if s.submission_id},
                                 t0, prefix)
            whole = [w + s.submitted - s.attempt.started for w, s in zip(waits, admitted, strict=True)]
            decided = [s.attempt.decided_s for s in steps]
            print(f"production path: {len(steps)} steps (live read, StepTicket.admit on the queue in {db}, tickets "
                  f"beating every {heartbeat_s:g} s, "
                  f"Dispatcher.submit) from {processes} processes x {threads} threads in {elapsed:.2f} s = "
                  f"{len(steps) / elapsed:,.1f} steps/s (admitted {counts['admitted']}, waiting "
                  f"{counts['waiting']}, refused {counts['refused']}, submission errors {len(errors)}); "
                  f"StepTicket.admit to its answer p50 {percentile(decided, 0.5):.2f} s, "
                  f"p99 {percentile(decided, 0.99):.2f} s")
            print("  " + _summary("production", len(ids), elapsed, waits, last))
            print(f"  production, from the step's StepTicket.admit call (queue wait included) -> RUNNING: "
                  f"p50 {percentile(whole, 0.5):.2f} s, p99 {percentile(whole, 0.99):.2f} s")
            touch_all(release, ids)
            ended = _await_ended(client, ids)
            keys = [r.key for r in queue.holding()]
            end_all(ends, keys)
            await_final(queue, keys)
            _await_empty(reader)

            raw_jobs = [(s.attempt.placement, f"{prefix}-raw-{s.attempt.spec.name}") for s in admitted
                        if s.attempt.placement is not None and s.outcome is Outcome.ADMITTED]
            t0 = time.time()
            times, raw_elapsed = js.raw(raw_jobs)
            raw_ids = [sid for _, sid in raw_jobs]
            raw_waits, raw_last = _phase(client, raw_ids, dict(zip(raw_ids, times, strict=True)), t0, prefix)
            print("  " + _summary("baseline (bare submit_job)", len(raw_ids), raw_elapsed, raw_waits, raw_last))
            touch_all(release, raw_ids)
            raw_ended = _await_ended(client, raw_ids)
        print(f"ratio production / baseline: submission phase {elapsed / raw_elapsed:.2f}x the time "
              f"(it also decides the {len(steps) - len(ids)} steps that wait or are refused), "
              f"Ray submission to RUNNING p50 {percentile(waits, 0.5) / percentile(raw_waits, 0.5):.2f}x, "
              f"p99 {percentile(waits, 0.99) / percentile(raw_waits, 0.99):.2f}x; from the step's admit call "
              f"p50 {percentile(whole, 0.5) / percentile(raw_waits, 0.5):.2f}x, "
              f"p99 {percentile(whole, 0.99) / percentile(raw_waits, 0.99):.2f}x; all RUNNING {last / raw_last:.2f}x")
        print(f"jobs ended: production {dict(ended)}, baseline {dict(raw_ended)}; queue rows: "
              f"{dict(sorted(queue.counts().items()))} (the waiting steps' processes closed: cancelled)")
        queue.close()
    finally:
        if net is not None:
            net.down()
            net.remove_session_dir()
    return 0
