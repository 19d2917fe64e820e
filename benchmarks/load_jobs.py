"""Steps through the production path (issues 12 and 14): live capacity, the admission queue, a Ray Job.

Each step does what :class:`pipelines.resources.WestflowResource` does for a Dagster step
before its job runs, with the resource's own parts (:class:`Production`: its federation,
grouped network, tenants, queue and policy): one read of live capacity and totals through
the dashboard, ``StepTicket.admit`` on the durable queue (the never-fits check, a queued
row, and a wait in which the step runs the admission cycle on live capacity itself while no
controller leads; see :class:`benchmarks.load_bench.Side`), and, when admitted, one
:meth:`ray_cluster.dispatch.Dispatcher.submit` of the command
:func:`ray_cluster.dispatch.entrypoint` builds, pinned by ``placement.ray.job_options()``.
The command is :mod:`benchmarks.hold_job`, which holds until its release file exists. A
submission that fails finishes the step's ticket as failed, as a failing step does.

:class:`JobSteps` runs many steps at once from spawned processes with threads each;
:func:`watch_running` follows the jobs in Ray's job list (one ``list_jobs`` per poll) and
says when each was first seen RUNNING.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from admission.controller import Controller
from admission.workqueue import AdmissionQueue
from benchmarks.load_bench import HEARTBEAT_S, Attempt, Outcome, Side, Spread, percentile, worker
from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import JOB_SUBMISSION, entrypoint
from ray_cluster.federation import Federation
from westflow.capacity import Capacity
from westflow.inventory import Network
from westflow.placement import Placement, Policy, get_policy
from westflow.spec import WorkloadSpec
from westflow.tenants import Tenants

__all__ = ["Step", "JobSteps", "Production", "HOLD_MODULE", "JOB_LOAD", "CLUSTER_TIMEOUT_S", "submission_id",
           "hold_command", "release_path", "watch_running", "Watch", "RUNNING_OR_LATER", "touch_all", "percentile",
           "job_env"]

ROOT = Path(__file__).resolve().parents[1]
HOLD_MODULE = "benchmarks.hold_job"
JOB_LOAD = "westflow.load"  # Ray job metadata: the load run (its submission-id prefix) a job belongs to
RUNNING_OR_LATER = frozenset({"RUNNING", "SUCCEEDED", "FAILED", "STOPPED"})
# WestflowResource.cluster_timeout_s for the load: 1,000 steps on 2 cores make a dashboard read take
# seconds; the 1 s default would read the cluster as unreachable and refuse steps that fit.
CLUSTER_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Production:
    """The parts a step of ``WestflowResource`` places with, made by the resource itself."""

    federation: Federation
    network: Network  # grouped: each DC in the cluster that runs it here
    tenants: Tenants
    policy: Policy
    queue: AdmissionQueue

    @classmethod
    def of(cls, access: ClusterAccess, state_dir: Path | str, *, admission_url: str | None = None,
           cluster_timeout_s: float = CLUSTER_TIMEOUT_S) -> Production:
        """The resource's federation, network, tenants, policy and queue for one cluster at ``access``."""
        from pipelines.resources import WestflowResource

        resource = WestflowResource(ray_address=access.dashboard_url, ray_auth_token=access.token,
                                    state_dir=str(state_dir), admission_url=admission_url,
                                    cluster_timeout_s=cluster_timeout_s)
        fed = resource.federation()
        network = resource.network(fed)
        return cls(fed, network, resource.tenants(network), get_policy(resource.policy), resource.queue())

    def capacity(self) -> tuple[Capacity, Capacity]:
        """Live capacity and totals, one concurrent read of every cluster (the controller's read)."""
        return self.federation.capacity_and_totals(self.network)

    def controller(self, holder: str) -> Controller:
        """A controller as ``WestflowResource.controller`` builds it (``holder``: who leads)."""
        return Controller(self.queue, tenants=self.tenants, network=self.network, policy=self.policy,
                          capacity=self.capacity, holder=holder, scope=self.federation.scope)


@dataclass(frozen=True, slots=True)
class Step:
    """One step's answer: its attempt, and for an admitted one the Ray job it became (or why not)."""

    attempt: Attempt
    submission_id: str | None = None  # the Ray job id (Dispatcher.submit returns the submission id)
    submitted: float = 0.0  # time.time() right before the submission
    error: str = ""  # the submission failed (the step's ticket was finished as failed)

    @property
    def outcome(self) -> Outcome:
        return self.attempt.outcome


def submission_id(prefix: str, spec: WorkloadSpec) -> str:
    """The step's stable Ray submission id: one per step, whatever round admits it."""
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


def _init(url: str, token: str, state_dir: str, admission_url: str, release_dir: str, ends: str, prefix: str,
          python: str, heartbeat_s: float) -> None:
    prod = Production.of(ClusterAccess(url, token), state_dir, admission_url=admission_url)
    for name in prod.federation.names:
        prod.federation.dispatcher(name).client()  # its constructor calls the server: not in the timed phase
    w = worker()
    w.update(prod=prod, release=release_dir, prefix=prefix, python=python,
             side=Side(prod.queue, prod.network, prod.tenants, prod.policy, prod.capacity, prefix=prefix, ends=ends,
                       scope=prod.federation.scope, heartbeat_s=heartbeat_s, federation=prod.federation))


def _step(spec: WorkloadSpec) -> Step:
    """Read live capacity, queue and wait for the cycle's decision, submit: one step of the production path."""
    w = worker()
    side: Side = w["side"]
    a = side.admit(spec)
    if a.outcome is not Outcome.ADMITTED:
        return Step(a)
    assert a.placement is not None
    sid = submission_id(w["prefix"], spec)
    command = hold_command(w["python"], a.placement, release_path(w["release"], sid))
    t = time.time()
    try:
        w["prod"].federation.dispatcher(a.placement.ray_cluster).submit(
            a.placement, command, env=job_env(), submission_id=sid, metadata={JOB_LOAD: w["prefix"]})
    except Exception as exc:  # noqa: BLE001 - reported per step; a failed step holds nothing
        side.finish(a.key, "failed", f"submission failed: {exc}"[:500])
        return Step(a, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    return Step(a, sid, t)


def _raw(item: tuple[Placement, str]) -> float:
    """The baseline: ``JobSubmissionClient.submit_job`` of the same command and resources, nothing else."""
    p, sid = item
    w = worker()
    t = time.time()
    w["prod"].federation.dispatcher(p.ray_cluster).client().submit_job(
        entrypoint=hold_command(w["python"], p, release_path(w["release"], sid)), submission_id=sid,
        runtime_env={"env_vars": job_env()}, metadata={JOB_LOAD: w["prefix"], JOB_SUBMISSION: sid},
        **p.ray.job_options())
    return t


class JobSteps:
    """``processes`` spawned processes with ``threads`` threads each, running steps at once.

    Each process is a step process: it keeps its tickets beating (every ``heartbeat_s``) and
    finishes each when the file ``ends/<queue key>`` appears (the processes live until :meth:`close`).
    """

    def __init__(self, access: ClusterAccess, state_dir: Path | str, admission_url: str, release_dir: Path | str,
                 ends: Path | str, *, prefix: str, processes: int = 4, threads: int = 8,
                 python: str = "python", heartbeat_s: float = HEARTBEAT_S) -> None:
        self.prefix = prefix
        self._spread = Spread(_init, (access.dashboard_url, access.token or "", str(state_dir), admission_url,
                                      str(release_dir), str(ends), prefix, python, heartbeat_s),
                              processes=processes, threads=threads)

    def __enter__(self) -> JobSteps:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._spread.close()

    def run(self, specs: Sequence[WorkloadSpec]) -> tuple[list[Step], float]:
        """Every spec's step (in spec order) and the seconds from the common start to the last answer."""
        return self._spread.map(_step, specs)

    def raw(self, jobs: Sequence[tuple[Placement, str]]) -> tuple[list[float], float]:
        """The baseline: submit ``(placement, submission id)`` jobs with the bare Jobs API client, at once.
        Returns each job's submission time and the seconds to the last answer."""
        return self._spread.map(_raw, jobs)


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
