"""Dispatch a placed step to a Ray cluster's Jobs API and follow it; no Dagster here.

:class:`Dispatcher` (one per cluster, from a :class:`~ray_cluster.access.ClusterAccess`):

- :meth:`~Dispatcher.submit` is idempotent per ``submission_id``: a retried
  submission that finds the job already there (the first try reached the
  server, its answer was lost) attaches to it instead of failing or starting
  a second job;
- :meth:`~Dispatcher.wait` follows a submitted job to its end, separately from
  submitting: a transient fault while waiting re-attaches to the same job;
- :meth:`~Dispatcher.stop`, :meth:`~Dispatcher.ran_in` (the DC of the node Ray
  ran the driver on) and :meth:`~Dispatcher.node_loss_verdict` (did the job fail
  because its data center was lost?).

The failover loop over these is :func:`ray_cluster.failover.run_with_failover`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ray_cluster.access import ClusterAccess
from ray_cluster.live import CapacityReader, DashboardReader
from ray_cluster.retry import RetryPolicy, is_transient, retry_call
from ray_cluster.shipping import Shipment, failure_line, last_error_line
from westflow.errors import ClusterError
from westflow.placement import Placement

__all__ = ["Dispatcher", "JobOutcome", "ClusterLost", "entrypoint", "short_message", "JOB_DC", "JOB_SPEC",
           "JOB_SUBMISSION", "TERMINAL", "SUCCEEDED", "LOST", "is_transient_ray"]

log = logging.getLogger("westflow.dispatch")

# Ray job metadata keys westflow writes (the dashboard shows them; tests and `westflow status` read them).
JOB_DC, JOB_SPEC, JOB_SUBMISSION = "westflow.dc", "westflow.spec", "westflow.submission_id"
SUCCEEDED = "SUCCEEDED"
LOST = "LOST"  # not Ray's: the job's whole cluster stopped answering while westflow followed it
TERMINAL = frozenset({SUCCEEDED, "FAILED", "STOPPED"})
# Ray's own verdict that a job died with its node (JobErrorType / the supervisor's message).
_NODE_DIED_TYPES = frozenset({"JOB_SUPERVISOR_ACTOR_DIED"})
_NODE_DIED_TEXT = "node has died"
REATTACH = RetryPolicy(attempts=8, base_s=0.5, max_s=10.0)  # ~35 s of a silent Jobs API before giving up
CONFIRM = RetryPolicy(attempts=6, base_s=0.5, max_s=2.0, jitter=0)  # node-loss reads: ~7 s window
PENDING_CHECK_S = 2.0  # how often a pending job's DC is checked for a live node (Dispatcher.wait)


class ClusterLost(ClusterError):
    """The Jobs API of the cluster running a job stopped answering for the whole confirmation window."""

    def __init__(self, dashboard_url: str, job_id: str, waited_s: float, cause: BaseException) -> None:
        self.dashboard_url, self.job_id, self.waited_s = dashboard_url, job_id, waited_s
        super().__init__(f"Ray cluster at {dashboard_url} lost: its Jobs API did not answer for {waited_s:.0f} s "
                         f"while following job {job_id} (last error: {type(cause).__name__}: "
                         f"{' '.join(str(cause).split())[:160]})")


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a Ray job ended: Ray's status, message and error type, and the node its driver ran on."""

    job_id: str
    status: str
    message: str = ""
    error_type: str = ""
    driver_node_id: str | None = None
    cause: str = ""  # one line, when the failure's cause is known (shipping.failure_line)

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


def is_transient_ray(exc: BaseException) -> bool:
    """A fault of the Jobs API worth another try: no answer, or a gateway/overload status."""
    if is_transient(exc):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(f"status code {c}" in text for c in (502, 503, 504))


def entrypoint(python: str, module: str, args: Sequence[str], p: Placement) -> str:
    """The shell command of a placed step: ``python -m module args --task-resources <the placement's pins>``.

    ``python`` is the cluster's interpreter as the node resolves it (``python``: the one its Ray runs with,
    or the virtualenv Ray built for the step's requirements), never a path of the submitting host.
    """
    task = json.dumps(p.ray.task_options(), sort_keys=True)
    return shlex.join([python, "-m", module, *args, "--task-resources", task])


def short_message(message: str) -> str:
    """Ray's message without the log it appends (the log is read apart): one line."""
    head = " ".join(message.split(", last available logs", 1)[0].split())
    return (head[:300] + ("..." if len(head) > 300 else "")) or "no message from Ray"


def _status(value: Any) -> str:
    return str(getattr(value, "value", value))


class Dispatcher:
    """Submits placed steps to one Ray cluster and follows them (see the module doc)."""

    def __init__(self, access: ClusterAccess, *, retry: RetryPolicy | None = None,
                 reattach: RetryPolicy = REATTACH, confirm: RetryPolicy = CONFIRM, confirm_reads: int = 2,
                 poll_interval_s: float = 0.5, log_fn: Callable[[str], None] | None = None, client: Any = None,
                 reader: CapacityReader | None = None, sleep: Callable[[float], None] = time.sleep,
                 lost_after_s: float | None = None) -> None:
        self.access = access
        self.retry = retry or RetryPolicy()
        # A Jobs API that does not answer for this whole window while a job is followed: the cluster is lost.
        self.reattach = RetryPolicy.spanning(lost_after_s) if lost_after_s is not None else reattach
        self.confirm, self.confirm_reads = confirm, confirm_reads
        self._reader = reader
        self.poll_interval_s = poll_interval_s
        self.log_fn = log_fn or log.warning
        self._client = client  # a JobSubmissionClient, made on first use (its constructor calls the server)
        self._sleep = sleep

    # -- the Jobs API -------------------------------------------------------
    def client(self) -> Any:
        """The authenticated ``JobSubmissionClient`` (made once; retried while the server does not answer)."""
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = self._call(
                lambda: JobSubmissionClient(self.access.dashboard_url, headers=self.access.headers()),
                what=f"connecting to the Ray Jobs API at {self.access.dashboard_url}", policy=self.retry)
        return self._client

    def reader(self) -> CapacityReader:
        """Ray's node state (the dashboard's; a given reader in tests)."""
        return self._reader or DashboardReader(self.access.dashboard_url, self.access.token)

    def _call(self, fn: Callable[[], Any], *, what: str, policy: RetryPolicy) -> Any:
        return retry_call(fn, policy, what=what, log_fn=self.log_fn, transient=is_transient_ray, sleep=self._sleep)

    # -- submit / wait / stop ------------------------------------------------
    def submit(self, placement: Placement, command: str, *, env: Mapping[str, str], submission_id: str,
               metadata: Mapping[str, str] | None = None, code: Shipment | None = None) -> str:
        """Submit ``command`` pinned where ``placement`` says, with ``code`` shipped through Ray's runtime env;
        returns the job id (= ``submission_id``).

        Idempotent: if a retry finds ``submission_id`` already submitted with this command, it attaches.
        """
        params: dict[str, Any] = {
            "entrypoint": command,
            "runtime_env": code.runtime_env(env) if code is not None else {"env_vars": dict(env)},
            "submission_id": submission_id,
            "metadata": {JOB_DC: placement.data_center, JOB_SPEC: placement.spec.name,
                         JOB_SUBMISSION: submission_id, **(metadata or {})},
            **placement.ray.job_options(),
        }

        def once() -> str:
            try:
                return str(self.client().submit_job(**params))
            except RuntimeError as exc:
                if "already exists" not in str(exc):
                    raise
            info = self.client().get_job_info(submission_id)  # a lost answer to an earlier try: attach
            if info.entrypoint != command:
                raise ClusterError(f"Ray job {submission_id!r} already exists with another entrypoint "
                                   f"({info.entrypoint!r}). To fix: use a new submission id.") from None
            self.log_fn(f"Ray job {submission_id} was already submitted (an earlier try got through): attaching")
            return submission_id

        return str(self._call(once, what=f"Ray Job submission of {placement.spec.name}", policy=self.retry))

    def outcome(self, job_id: str) -> JobOutcome:
        """The job's state now (one read; transient faults retried)."""
        info = self._call(lambda: self.client().get_job_info(job_id), what=f"reading Ray job {job_id}",
                          policy=self.reattach)
        return JobOutcome(job_id, _status(info.status), " ".join(str(info.message or "").split()),
                          _status(info.error_type) if info.error_type else "", info.driver_node_id)

    def logs(self, job_id: str) -> str:
        """The job driver's output so far ("" when Ray has none, e.g. its runtime env never came up)."""
        try:
            return str(self._call(lambda: self.client().get_job_logs(job_id), what=f"reading the log of {job_id}",
                                  policy=self.retry))
        except (RuntimeError, ClusterError):
            return ""

    def explained(self, outcome: JobOutcome, *, where: str, code: Shipment | None, python: str) -> JobOutcome:
        """``outcome`` with its ``cause`` set when the failure is the shipped code's or the cluster Python's."""
        if outcome.succeeded or outcome.cause:
            return outcome
        log_text = self.logs(outcome.job_id)
        cause = failure_line(error_type=outcome.error_type, message=outcome.message, log=log_text, where=where,
                             shipment=code, python=python)
        if not cause and log_text.strip():  # the job's own error: its last error line, not the whole log
            cause = f"{short_message(outcome.message)}; the job's last error at {where}: {last_error_line(log_text)}"
        return replace(outcome, cause=cause) if cause else outcome

    def wait(self, job_id: str, *, on_log: Callable[[str], None] | None = None, log_flush_s: float = 30.0,
             data_center: str | None = None) -> JobOutcome:
        """Follow ``job_id`` until it ends; ``on_log`` gets each line of its driver's output as it comes.

        A fault of the Jobs API while waiting re-attaches to the same job (bounded by ``reattach``);
        it never submits again. A Jobs API that gives no answer for that whole window raises
        :class:`ClusterLost` (the cluster is gone: its head, or the way to it).

        A job still PENDING for ``data_center`` when Ray shows no live node there (``confirm_reads``
        reads in a row, one every ``PENDING_CHECK_S``) was placed on a DC that died before it started;
        Ray would keep it pending for up to 15 min (``RAY_JOB_START_TIMEOUT_SECONDS``). It is stopped
        and reported STOPPED at once: Ray leaves it PENDING (its stop waits for the supervisor, which
        cannot be scheduled), and should the DC come back, the supervisor stops the job as it starts.
        The caller's verdict then finds the DC lost and places the step again.
        """
        tail = _LogTail(self.client(), job_id, on_log) if on_log else None
        every = max(1, round(PENDING_CHECK_S / self.poll_interval_s))  # polls between node-state reads
        polls, dead = 0, 0
        try:
            while True:
                try:
                    status = _status(self._call(lambda: self.client().get_job_status(job_id),
                                                what=f"following Ray job {job_id}", policy=self.reattach))
                    if status in TERMINAL:
                        return self.outcome(job_id)
                except Exception as exc:
                    if is_transient_ray(exc):
                        raise ClusterLost(self.access.dashboard_url, job_id, self.reattach.total_s(), exc) from exc
                    raise
                polls += 1
                if data_center and status == "PENDING" and polls % every == 0:
                    dead = dead + 1 if self._dc_alive(data_center) is False else 0
                    if dead >= self.confirm_reads:
                        why = (f"pending for {data_center}, which has no live Ray node ({dead} reads of Ray's node "
                               "state in a row): stopped before it started")
                        self.log_fn(f"Ray job {job_id} {why}")
                        self.stop(job_id)
                        return JobOutcome(job_id, "STOPPED", why)
                self._sleep(self.poll_interval_s)
        finally:
            if tail:
                tail.join(log_flush_s)

    def stop(self, job_id: str) -> bool:
        """Ask Ray to stop the job; False if it had already ended."""
        return bool(self._call(lambda: self.client().stop_job(job_id), what=f"stopping Ray job {job_id}",
                               policy=self.retry))

    # -- where it ran, why it failed -------------------------------------------
    def ran_in(self, job_id: str) -> str:
        """The DC of the node Ray says ran the job's driver ("unknown" if that node is gone)."""
        node_id = self.outcome(job_id).driver_node_id
        for n in self.reader().nodes():
            if n.node_id == node_id and n.dc:
                return n.dc
        return "unknown"

    def _dc_alive(self, dc: str) -> bool | None:
        """Whether Ray shows a live node of ``dc`` (None: the dashboard did not answer)."""
        try:
            return any(n.dc == dc and n.alive for n in self.reader().nodes())
        except ClusterError:
            return None

    def node_loss_verdict(self, job_id: str, dc: str) -> str | None:
        """Why the job failed if its DC was lost, else None (the job failed on its own).

        Lost only when confirmed: Ray's own verdict (its supervisor actor died with the node, or
        "node has died"), or Ray's node state showing no live node of ``dc`` in ``confirm_reads``
        answers in a row, read over a bounded window (``confirm``). A dashboard that does not answer
        is not a lost DC: with no confirmation in the window the failure is the job's own.
        """
        try:
            out = self.outcome(job_id)
            message, kind = out.message, out.error_type
        except ClusterError:  # the job server itself may be what was lost; the node state decides
            message, kind = "", ""
        if kind in _NODE_DIED_TYPES or _NODE_DIED_TEXT in message:
            return f"Ray node of {dc} lost during the step ({message[:160] or 'Ray: the node died'})"
        dead = 0
        for i in range(self.confirm.attempts):
            alive = self._dc_alive(dc)
            if alive:
                return None
            dead = dead + 1 if alive is False else 0
            if dead >= self.confirm_reads:
                return (f"Ray node of {dc} lost during the step (no live node of {dc} in {dead} reads of "
                        f"Ray's node state{'; ' + message[:120] if message else ''})")
            if i + 1 < self.confirm.attempts:
                self._sleep(self.confirm.delay(i + 1))
        self.log_fn(f"Ray job {job_id} failed and the loss of {dc} could not be confirmed (Ray's node state "
                    f"did not show it dead {self.confirm_reads} times in a row): not failing over")
        return None


class _LogTail:
    """Follows a job's log in a thread (Ray's ``tail_job_logs`` is async) and hands out lines."""

    def __init__(self, client: Any, job_id: str, on_log: Callable[[str], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(client, job_id, on_log), daemon=True,
                                        name=f"ray-job-log-{job_id}")
        self._thread.start()

    @staticmethod
    def _run(client: Any, job_id: str, on_log: Callable[[str], None]) -> None:
        async def follow() -> None:
            async for chunk in client.tail_job_logs(job_id):
                for line in chunk.splitlines():
                    on_log(line)

        try:
            asyncio.run(follow())
        except Exception as exc:  # noqa: BLE001 - the log is a view; the job's outcome is read apart
            log.debug("log tail of Ray job %s ended: %s", job_id, exc)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
