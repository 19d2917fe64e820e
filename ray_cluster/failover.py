"""Run a placed step; when its data center is lost, place it again without that DC and rerun.

:func:`run_with_failover` is the loop, over callbacks, so it holds no Ray or
Dagster state of its own: ``place(exclude)`` decides and reserves a placement
(``(ticket, placement)``), ``run(placement, attempt)`` runs the step there and
returns an :class:`Attempt`, ``verdict(attempt)`` says whether a failure was the
loss of the data center (:meth:`~ray_cluster.dispatch.Dispatcher.node_loss_verdict`),
and ``release(ticket)`` frees the reservation: always when the attempt ends
(succeeded, failed or raised), so before the step is placed again.

A preempted attempt (``preempted(attempt)`` gives a reason: the admission controller took its
capacity for higher-priority work) is neither a failure nor a failover: the step is placed
again with the same exclusions, as often as it is preempted, and resumes from its checkpoint.

A failure that is not a lost data center, or one past ``max_failovers``, raises
:class:`JobFailed` carrying the outcome and every loss so far. A re-placement
keeps the spec (tier, latency bound, accelerator family); when no other DC fits,
``place`` raises its ``InfeasibleError`` with every DC's reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ray_cluster.dispatch import JobOutcome, short_message
from westflow.errors import ClusterError
from westflow.placement import Placement

__all__ = ["Lost", "Attempt", "Finished", "JobFailed", "run_with_failover"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Lost:
    """A data center lost while it ran the step, and Ray's reason."""

    data_center: str
    reason: str


@dataclass(frozen=True, slots=True)
class Attempt(Generic[T]):
    """One run of the step: where, the Ray job, how it ended, and what the caller collected (``result``)."""

    placement: Placement
    outcome: JobOutcome
    result: T

    @property
    def job_id(self) -> str:
        return self.outcome.job_id


@dataclass(frozen=True, slots=True)
class Finished(Generic[T]):
    """The attempt that succeeded and the losses before it (oldest first)."""

    attempt: Attempt[T]
    lost: tuple[Lost, ...] = ()


class JobFailed(ClusterError):
    """The step's Ray job ended FAILED or STOPPED and no failover applies (or none is left)."""

    def __init__(self, spec: str, data_center: str, outcome: JobOutcome, lost: tuple[Lost, ...],
                 *, node_lost: str | None = None) -> None:
        self.spec, self.data_center, self.outcome, self.lost, self.node_lost = (
            spec, data_center, outcome, lost, node_lost)
        why = f" after {len(lost)} failover(s)" if lost else ""
        cause = f"; {node_lost}, and no failover is left" if node_lost else ""
        super().__init__(f"Ray job {outcome.job_id} of {spec!r} at {data_center} ended {outcome.status}{why}"
                         f"{cause}: {outcome.cause or short_message(outcome.message)}")


def run_with_failover(
    *,
    place: Callable[[frozenset[str]], tuple[str, Placement]],
    release: Callable[[str], None],
    run: Callable[[Placement, int], Attempt[T]],
    verdict: Callable[[Attempt[T]], str | None],
    max_failovers: int,
    on_failover: Callable[[Lost, Placement], None] | None = None,
    preempted: Callable[[Attempt[T]], str | None] | None = None,
    on_preempted: Callable[[Placement, str], None] | None = None,
) -> Finished[T]:
    """Place, run, and on a lost DC place again without it, at most ``max_failovers`` times (module doc)."""
    if max_failovers < 0:
        raise ValueError(f"Invalid max_failovers {max_failovers!r}; must be >= 0.")
    lost: list[Lost] = []
    n = 0  # attempts so far (preempted ones included): each has its own job
    after_loss = False
    while True:
        ticket, placement = place(frozenset(x.data_center for x in lost))
        if after_loss and on_failover:
            on_failover(lost[-1], placement)
        after_loss = False
        try:
            attempt = run(placement, n)
        finally:  # the job ended, failed or was never submitted: free the reservation before re-placing
            release(ticket)
        n += 1
        if attempt.outcome.succeeded:
            return Finished(attempt, tuple(lost))
        why_preempted = preempted(attempt) if preempted is not None else None
        if why_preempted is not None:
            if on_preempted is not None:
                on_preempted(placement, why_preempted)
            continue
        why = verdict(attempt)
        if why is None or len(lost) == max_failovers:
            raise JobFailed(placement.spec.name, placement.data_center, attempt.outcome, tuple(lost), node_lost=why)
        lost.append(Lost(placement.data_center, why))
        after_loss = True
