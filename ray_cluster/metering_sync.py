"""The metering reconciler: meter every westflow Ray job that ended without a usage record.

A job's record is normally written by the process that followed it; if that process died (killed
between the job's end and its commit, a host lost), the job would go unbilled. :func:`reconcile`
reads each cluster's job table (Ray's ``list_jobs``: status, start and end in ms, metadata), keeps
the ended jobs westflow priced at submission (metadata ``admission.metering.USAGE_KEY``, written
with ``JOB_DC``), and writes a record for each one that has none. Writes are
``ON CONFLICT DO NOTHING`` on the Ray job id, so a reconciler racing the writer or another
reconciler never writes a job twice. A cluster that does not answer is reported, never waited on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from admission.metering import Meter, UsageRecord, job_metadata, usage_from_job, usage_record
from admission.workqueue import AdmissionQueue
from ray_cluster.dispatch import JOB_DC, LOST, TERMINAL, Dispatcher
from ray_cluster.federation import Federation
from westflow.placement import Placement

__all__ = ["JobLister", "ReconcileReport", "reconcile", "cluster_listers", "meter_job", "job_metadata"]

_log = logging.getLogger("westflow.metering")
STOP_SETTLE_S = 10.0  # how long a stopped job's writer waits for Ray to report its end
JobLister = Callable[[], Iterable[Any]]  # one cluster's jobs: objects shaped like Ray's JobDetails


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What one pass did: records written, jobs already metered, westflow jobs it could not price, clusters
    that did not answer (name, why), and how long it took."""

    written: int
    already: int
    unpriced: tuple[str, ...]
    unreachable: tuple[tuple[str, str], ...]
    seconds: float


def _listed(lister: JobLister) -> list[Any]:
    return list(lister())


def _jobs_of(fed: Federation, name: str) -> list[Any]:
    return list(fed.dispatcher(name).client().list_jobs())


def _status(value: Any) -> str:
    return str(getattr(value, "value", value))


def _ended(jobs: Iterable[Any]) -> list[tuple[str, str, Any]]:
    """(job id, status, job) of every ended westflow job (not the running ones, not others' jobs)."""
    out = []
    for j in jobs:
        meta = getattr(j, "metadata", None) or {}
        status = _status(getattr(j, "status", ""))
        job_id = getattr(j, "submission_id", None) or getattr(j, "job_id", None)
        if JOB_DC in meta and status in TERMINAL and job_id:
            out.append((str(job_id), status, j))
    return out


def _priced(ended: Iterable[tuple[str, str, Any]]) -> tuple[list[UsageRecord], list[str]]:
    out: list[UsageRecord] = []
    unpriced: list[str] = []
    for job_id, status, j in ended:
        rec = usage_from_job(job_id, metadata=j.metadata, status=status, start_ms=getattr(j, "start_time", None),
                             end_ms=getattr(j, "end_time", None))
        if rec is None:
            unpriced.append(job_id)
        else:
            out.append(rec)
    return out, unpriced


def reconcile(meter: Meter, listers: Mapping[str, JobLister], *, timeout_s: float = 30.0) -> ReconcileReport:
    """One pass over every cluster's job table (read concurrently); see the module doc."""
    t0 = time.perf_counter()
    unreachable: list[tuple[str, str]] = []
    ended: list[tuple[str, str, Any]] = []
    pool = ThreadPoolExecutor(max_workers=max(1, len(listers)), thread_name_prefix="westflow-meter")
    try:
        futures = {name: pool.submit(_listed, f) for name, f in sorted(listers.items())}
        deadline = time.monotonic() + timeout_s
        for name, fut in futures.items():
            try:
                ended += _ended(fut.result(timeout=max(0.0, deadline - time.monotonic())))
            except Exception as exc:  # noqa: BLE001 - an unreachable cluster is reported, the others go on
                unreachable.append((name, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a cluster that hangs is not waited for
    known = meter.known(job_id for job_id, _, _ in ended)  # priced only when not metered yet
    missing, unpriced = _priced(e for e in ended if e[0] not in known)
    written = meter.record_many(missing, by="reconciler") if missing else 0
    already = len(ended) - len(unpriced) - written
    return ReconcileReport(written, already, tuple(unpriced), tuple(unreachable), time.perf_counter() - t0)


def cluster_listers(fed: Federation) -> dict[str, JobLister]:
    """Each cluster's job table through its dispatcher's Jobs API client (token auth included)."""
    return {name: partial(_jobs_of, fed, name) for name in fed.names}


def _ended_info(dispatcher: Dispatcher, job_id: str, *, settle_s: float) -> Any:
    """Ray's job info, waiting up to ``settle_s`` for its end time (a job westflow just stopped ends a moment
    later, asynchronously: its record then carries Ray's end, not the moment of the stop)."""
    deadline = time.monotonic() + settle_s
    info = dispatcher.client().get_job_info(job_id)
    while not info.end_time and time.monotonic() < deadline:
        time.sleep(0.2)
        info = dispatcher.client().get_job_info(job_id)
    return info


def meter_job(open_queue: Callable[[], AdmissionQueue], dispatcher: Dispatcher, p: Placement, job_id: str, *,
              status: str, submitted_at: float, run_id: str | None = None, step: str | None = None,
              preempted: bool = False, log_fn: Callable[[str], None] | None = None) -> UsageRecord | None:
    """Write the record of a job that ended (the writer's side); never raises.

    Start and end are Ray's (``get_job_info``; for a job just stopped, once Ray reports its end, up to
    :data:`STOP_SETTLE_S`); a job whose cluster was lost (``LOST``) has none to
    read, so it is metered from ``submitted_at`` to now. A job stopped for a preemption is ``PREEMPTED``.
    Any failure is logged and left to the reconciler, which meters the job from Ray's job table.
    """
    try:
        start, end = submitted_at, time.time()
        if status != LOST:
            info = _ended_info(dispatcher, job_id, settle_s=STOP_SETTLE_S if status == "STOPPED" else 0.0)
            start = info.start_time / 1000.0 if info.start_time else start
            end = info.end_time / 1000.0 if info.end_time else end
        final = "PREEMPTED" if preempted and status == "STOPPED" else status
        rec = usage_record(p, job_id=job_id, start=start, end=end, status=final, network=None, run_id=run_id,
                           step=step, preemptions=int(final == "PREEMPTED"), failovers=int(final == LOST))
        queue = open_queue()
        try:
            Meter(queue).record(rec)
        finally:
            queue.close()
        return rec
    except Exception as exc:  # noqa: BLE001 - metering never fails a step: the reconciler catches up
        (log_fn or _log.warning)(f"westflow: usage of Ray job {job_id} not recorded now ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:200]}); the reconciler meters it from Ray's job table")
        return None
