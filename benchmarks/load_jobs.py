"""Steps through the production path (issue 12): live capacity, reservation, Ray Job.

Each step does what :class:`pipelines.resources.WestflowResource` does for a
Dagster step before its job runs: one read of live capacity and totals through
the dashboard (:func:`ray_cluster.live.capacity_and_totals` over a
:class:`~ray_cluster.live.DashboardReader`), one
:meth:`~ray_cluster.reservations.Reservations.reserve` on the host's journal,
and, when placed, one :meth:`ray_cluster.dispatch.Dispatcher.submit` of the
command :func:`ray_cluster.dispatch.entrypoint` builds, pinned by
``placement.ray.job_options()`` (Ray's job supervisor holds those entrypoint
resources while the job runs). The command is :mod:`benchmarks.hold_job`, which
holds until its release file exists. A submission that fails releases the
step's reservation, as a failing step does.

:class:`JobSteps` runs many steps at once from spawned processes with threads
each, released together; :func:`watch_running` follows the jobs in Ray's job
list (one ``list_jobs`` per poll) and says when each was first seen RUNNING.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.load_bench import Attempt, Outcome, attempt
from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import JOB_SUBMISSION, Dispatcher, entrypoint
from ray_cluster.live import DashboardReader, capacity_and_totals
from ray_cluster.reservations import Reservations
from ray_cluster.retry import RetryPolicy
from westflow.inventory import Network
from westflow.placement import Placement, get_policy
from westflow.spec import WorkloadSpec

__all__ = ["Step", "JobSteps", "HOLD_MODULE", "JOB_LOAD", "submission_id", "hold_command", "release_path",
           "watch_running", "Watch", "RUNNING_OR_LATER", "touch_all", "percentile", "job_env"]

ROOT = Path(__file__).resolve().parents[1]
HOLD_MODULE = "benchmarks.hold_job"
JOB_LOAD = "westflow.load"  # Ray job metadata: the load run (its submission-id prefix) a job belongs to
RUNNING_OR_LATER = frozenset({"RUNNING", "SUCCEEDED", "FAILED", "STOPPED"})


@dataclass(frozen=True, slots=True)
class Step:
    """One step's answer: its attempt, and for a placed one the Ray job it became (or why not)."""

    attempt: Attempt
    submission_id: str | None = None  # the Ray job id (Dispatcher.submit returns the submission id)
    submitted: float = 0.0  # time.time() right before the submission
    error: str = ""  # the submission failed (the reservation was released)

    @property
    def outcome(self) -> Outcome:
        return self.attempt.outcome


def submission_id(prefix: str, spec: WorkloadSpec) -> str:
    """The step's stable Ray submission id: one per step, whatever round places it."""
    return f"{prefix}-{spec.name}"


def release_path(release_dir: Path | str, sid: str) -> Path:
    """The file whose creation ends job ``sid``."""
    return Path(release_dir) / sid


def hold_command(python: str, p: Placement, release: Path | str) -> str:
    """The job's command, built as every westflow step's is (with the placement's ``--task-resources``)."""
    return entrypoint(python, HOLD_MODULE, [str(release)], p)


def job_env() -> dict[str, str]:
    """What the held job needs: this checkout on its path (no code is shipped)."""
    return {"PYTHONPATH": str(ROOT)}


# -- worker processes --------------------------------------------------------------------------

_W: dict[str, Any] = {}


def _init(journal: str, network: Network, url: str, token: str, release_dir: str, prefix: str, python: str,
          barrier: Any) -> None:
    access = ClusterAccess(url, token)
    dispatcher = Dispatcher(access, retry=RetryPolicy(attempts=4))
    dispatcher.client()  # its constructor calls the server: once per process, not in the timed phase
    _W.update(journal=Reservations(journal), network=network, reader=DashboardReader(url, token),
              dispatcher=dispatcher, release=release_dir, prefix=prefix, python=python, barrier=barrier,
              policy=get_policy("westflow"), access=access)


def _step(spec: WorkloadSpec, submit: bool = True) -> Step:
    """Read live capacity, reserve, submit: one step of the production path (``submit=False``: no job)."""
    journal: Reservations = _W["journal"]
    live, totals = capacity_and_totals(_W["network"], _W["reader"])
    a = attempt(journal, _W["policy"], _W["network"], spec, live, totals, owner=f"load {spec.name}")
    if a.outcome is not Outcome.PLACED or not submit:
        return Step(a)
    assert a.placement is not None and a.ticket is not None
    sid = submission_id(_W["prefix"], spec)
    command = hold_command(_W["python"], a.placement, release_path(_W["release"], sid))
    t = time.time()
    try:
        _W["dispatcher"].submit(a.placement, command, env=job_env(), submission_id=sid,
                                metadata={JOB_LOAD: _W["prefix"]})
    except Exception as exc:  # noqa: BLE001 - reported per step; a failed step holds nothing
        journal.release(a.ticket)
        return Step(a, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    return Step(a, sid, t)


def _raw(p: Placement, sid: str) -> float:
    """The baseline: ``JobSubmissionClient.submit_job`` of the same command and resources, nothing else."""
    t = time.time()
    _W["dispatcher"].client().submit_job(entrypoint=hold_command(_W["python"], p, release_path(_W["release"], sid)),
                                         submission_id=sid, runtime_env={"env_vars": job_env()},
                                         metadata={JOB_LOAD: _W["prefix"], JOB_SUBMISSION: sid},
                                         **p.ray.job_options())
    return t


def _run_all(fn: Callable[..., Any], items: Sequence[Any], threads: int, gate: Callable[[], None]) -> list[Any]:
    go = threading.Event()

    def one(item: Any) -> Any:
        go.wait()
        return fn(*item) if isinstance(item, tuple) else fn(item)

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(one, x) for x in items]
        gate()
        go.set()
        return [f.result(timeout=600) for f in futures]


def _chunk_steps(specs: Sequence[WorkloadSpec], threads: int) -> list[Step]:
    return _run_all(_step, specs, threads, lambda: _W["barrier"].wait(120))


def _chunk_reserve(specs: Sequence[WorkloadSpec], threads: int) -> list[Step]:
    return _run_all(lambda spec: _step(spec, submit=False), specs, threads, lambda: _W["barrier"].wait(120))


def _chunk_raw(items: Sequence[tuple[Placement, str]], threads: int) -> list[float]:
    return _run_all(_raw, items, threads, lambda: _W["barrier"].wait(120))


class JobSteps:
    """``processes`` spawned processes with ``threads`` threads each, running steps at once.

    Reservations are held by the worker processes (they live until :meth:`close`), as a step's
    is held by its step process.
    """

    def __init__(self, journal: Path | str, network: Network, access: ClusterAccess, release_dir: Path | str,
                 *, prefix: str, processes: int = 4, threads: int = 8, python: str = "python") -> None:
        if processes < 1:
            raise ValueError(f"Invalid processes {processes!r}; must be >= 1.")
        self.processes, self.threads, self.prefix = processes, threads, prefix
        ctx = mp.get_context("spawn")
        self._barrier = ctx.Barrier(processes + 1)
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            processes, mp_context=ctx, initializer=_init,
            initargs=(str(journal), network, access.dashboard_url, access.token, str(release_dir), prefix, python,
                      self._barrier))

    def __enter__(self) -> JobSteps:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _spread(self, fn: Callable[..., list[Any]], items: Sequence[Any]) -> tuple[list[Any], float, list[int]]:
        assert self._pool is not None, "closed"
        n = self.processes
        chunks = [list(items[i::n]) for i in range(n)]  # round-robin: kinds and order mix in every process
        futures = [self._pool.submit(fn, c, self.threads) for c in chunks]
        self._barrier.wait(120)  # every process holds a chunk and its threads are at the gate
        t0 = time.perf_counter()
        results = [f.result(timeout=900) for f in futures]
        elapsed = time.perf_counter() - t0
        out: list[Any] = [None] * len(items)
        for i, chunk in enumerate(results):
            out[i::n] = chunk
        return out, elapsed, [len(c) for c in chunks]

    def run(self, specs: Sequence[WorkloadSpec], *, submit: bool = True) -> tuple[list[Step], float]:
        """Every spec's step (in spec order) and the seconds from the common start to the last answer;
        ``submit=False`` stops each step after its reservation (no Ray job)."""
        if not specs:
            return [], 0.0
        steps, elapsed, _ = self._spread(_chunk_steps if submit else _chunk_reserve, specs)
        return steps, elapsed

    def raw(self, jobs: Sequence[tuple[Placement, str]]) -> tuple[list[float], float]:
        """The baseline: submit ``(placement, submission id)`` jobs with the bare Jobs API client, at once.
        Returns each job's submission time and the seconds to the last answer."""
        if not jobs:
            return [], 0.0
        times, elapsed, _ = self._spread(_chunk_raw, jobs)
        return times, elapsed


@dataclass
class Watch:
    """What :func:`watch_running` saw: when each job was first seen RUNNING (or later), and every status."""

    running_at: dict[str, float]
    status: dict[str, str]
    polls: int
    poll_s: float


def watch_running(client: Any, ids: Collection[str], *, timeout_s: float, poll_s: float = 0.25,
                  on_poll: Callable[[], None] | None = None, prefix: str | None = None) -> Watch:
    """Poll Ray's job list until every job of ``ids`` was seen RUNNING (or ended), or ``timeout_s``.

    A job's time is the first poll that showed it so: an upper bound, late by at most one poll
    period plus one ``list_jobs`` call. ``on_poll`` runs after each poll (e.g. to sample Ray's accounting).
    """
    want = set(ids)
    seen: dict[str, float] = {}
    status: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    polls = 0
    while True:
        jobs = client.list_jobs()
        now = time.time()
        polls += 1
        for j in jobs:
            sid = j.submission_id
            if sid is None or (prefix is not None and not sid.startswith(prefix)):
                continue
            st = str(getattr(j.status, "value", j.status))
            status[sid] = st
            if sid in want and st in RUNNING_OR_LATER and sid not in seen:
                seen[sid] = now
        if on_poll is not None:
            on_poll()
        if want <= seen.keys() or time.monotonic() > deadline:
            return Watch(seen, status, polls, poll_s)
        time.sleep(poll_s)


def touch_all(release_dir: Path | str, ids: Iterable[str]) -> None:
    """End the held jobs ``ids``."""
    for sid in ids:
        release_path(release_dir, sid).touch()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))] if s else float("nan")

