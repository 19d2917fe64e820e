"""Load (issues 5 and 12): 1,000 steps submitted at once, through the production path.

``--mode jobs`` (the default, :mod:`benchmarks.load_jobs_bench`): against a
local network (started in a temp state dir, or the running one with
``--attach``), every step reads live capacity through the dashboard, reserves
on one journal and, when placed, becomes a Ray Job through
``Dispatcher.submit``, from several processes with several threads each, all
released at once. Prints steps/s, the p50/p99 time from submission to the Ray
job RUNNING, and the ratio against the same jobs submitted with the bare
``JobSubmissionClient.submit_job`` in the same process.

``--mode reserve`` (issue 5): the reservation path alone, no Ray. Every request
is one :meth:`ray_cluster.reservations.Reservations.reserve` on one journal over
the capacity of an empty local network (``configs/local.yaml``: fewer free
accelerators than asked for). Prints the decisions per second of that concurrent
phase and how many were placed, left waiting (they fit the empty network, not
the current one) and refused (they fit no DC at all); then releases every
reservation round by round, placing the waiting requests again, until none is
left, and prints how long that took.

``tests/integration/test_load.py`` runs the same load against the live Ray
network and checks Ray's own accounting.

    .venv/bin/python -m benchmarks.load_bench [--mode jobs|reserve] [--requests 1000] [--processes 4]
        [--threads 8] [--attach]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from ray_cluster.local import LocalProfile, load_profile
from ray_cluster.reservations import Reservations
from westflow.capacity import Capacity, DCCapacity
from westflow.config import load_network
from westflow.errors import InfeasibleError
from westflow.inventory import Network
from westflow.placement import Placement, Policy, get_policy
from westflow.spec import WorkloadSpec, parse_spec

__all__ = ["MIX", "IMPOSSIBLE", "CPUS", "make_specs", "empty_capacity", "Outcome", "Attempt", "attempt",
           "Submitters"]

# (kind, spec fields). Every kind but the IMPOSSIBLE ones fits an empty local network.
MIX: tuple[tuple[str, dict[str, Any]], ...] = (
    ("any1", {"accelerator": "any:1"}),
    ("cuda2", {"accelerator": "cuda:2"}),
    ("cann2", {"accelerator": "cann:2"}),
    ("cpu", {"accelerator": "cpu"}),
    ("rt-beijing", {"tier": "realtime", "origin": "beijing", "accelerator": "any:1"}),
    ("rt-shanghai", {"tier": "realtime", "origin": "shanghai", "accelerator": "cann:1"}),
    ("cann64", {"accelerator": "cann:64"}),  # no DC has 64 NPUs
    # H800 is only in Helinger, 21.1 ms from Shanghai: over the 20 ms bound
    ("rt-shanghai-h800", {"tier": "realtime", "origin": "shanghai", "accelerator": "H800:1"}),
)
IMPOSSIBLE = frozenset({"cann64", "rt-shanghai-h800"})
CPUS = 0.125  # per request: 16 fit a 2-CPU local node, so accelerators are what runs out first


def make_specs(n: int) -> list[tuple[str, WorkloadSpec]]:
    """``n`` specs cycling through :data:`MIX`, with priorities -1, 0 and 1."""
    out = []
    for i in range(n):
        kind, fields = MIX[i % len(MIX)]
        data = {"name": f"load-{i:04d}-{kind}", "tier": "batch", "cpus": CPUS, "memory_gb": 1,
                "duration_hours": 1, "priority": i % 3 - 1, **fields}
        out.append((kind, parse_spec(data)))
    return out


def empty_capacity(profile: LocalProfile) -> dict[str, DCCapacity]:
    """What ``live_capacity`` reads from an idle local network of ``profile``."""
    return {d.id: DCCapacity(free=dict(d.accelerators), free_cpus=float(d.cpus), free_memory_gb=profile.memory_gb,
                             utilisation=0.0) for d in profile.data_centers}


class Outcome(StrEnum):
    PLACED = "placed"
    WAITING = "waiting"  # fits the empty network, not what is free now
    REFUSED = "refused"  # fits no DC even when empty


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request's answer: its reservation ticket and placement, or every DC's reason."""

    spec: WorkloadSpec
    outcome: Outcome
    ticket: str | None = None
    placement: Placement | None = None
    rejected: tuple[Any, ...] = ()  # each a placement Rejection (reason, detail per DC)
    pid: int = 0


def attempt(journal: Reservations, policy: Policy, network: Network, spec: WorkloadSpec, capacity: Capacity,
            totals: Capacity, *, owner: str) -> Attempt:
    """Reserve a placement of ``spec`` as a Dagster step does; if nothing fits, say whether it ever could."""
    try:
        ticket, p = journal.reserve(capacity, lambda free: policy.place(spec, network, free), owner=owner,
                                    totals=totals)
    except InfeasibleError as now:
        try:
            policy.place(spec, network, totals)
        except InfeasibleError as ever:
            return Attempt(spec, Outcome.REFUSED, rejected=ever.rejected, pid=os.getpid())
        return Attempt(spec, Outcome.WAITING, rejected=now.rejected, pid=os.getpid())
    return Attempt(spec, Outcome.PLACED, ticket, p, pid=os.getpid())


# -- worker processes --------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(path: str, network: Network, barrier: Any) -> None:
    _WORKER.update(journal=Reservations(path), network=network, barrier=barrier, policy=get_policy("westflow"))


def _attempt_all(specs: Sequence[WorkloadSpec], capacity: Capacity, totals: Capacity, threads: int,
                 gate: Any) -> list[Attempt]:
    """Attempt every spec from ``threads`` threads that start together once ``gate()`` returns."""
    go = threading.Event()
    journal: Reservations = _WORKER["journal"]

    def one(spec: WorkloadSpec) -> Attempt:
        go.wait()
        return attempt(journal, _WORKER["policy"], _WORKER["network"], spec, capacity, totals,
                       owner=f"load {spec.name}")

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(one, s) for s in specs]
        gate()
        go.set()
        return [f.result(timeout=300) for f in futures]


def _worker_chunk(specs: Sequence[WorkloadSpec], capacity: Capacity, totals: Capacity,
                  threads: int) -> list[Attempt]:
    return _attempt_all(specs, capacity, totals, threads, lambda: _WORKER["barrier"].wait(120))


class Submitters:
    """``processes`` spawned processes with ``threads`` threads each, placing on one journal at once.

    The processes live until :meth:`close` (a ``with`` block): a reservation is held only while
    the process that made it runs, as a step's is. ``processes=0`` places from this process only.
    """

    def __init__(self, journal: Path | str, network: Network, *, processes: int = 4, threads: int = 8) -> None:
        self.path, self.network, self.processes, self.threads = str(journal), network, processes, threads
        ctx = mp.get_context("spawn")
        self._barrier = ctx.Barrier(processes + 1) if processes else None
        self._pool = ProcessPoolExecutor(processes, mp_context=ctx, initializer=_init_worker,
                                         initargs=(self.path, network, self._barrier)) if processes else None
        _init_worker(self.path, network, None)

    def __enter__(self) -> Submitters:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def attempt(self, specs: Sequence[WorkloadSpec], capacity: Capacity,
                totals: Capacity) -> tuple[list[Attempt], float]:
        """Every spec's attempt (in spec order) and the seconds from the common start to the last answer."""
        if self._pool is None or self._barrier is None:
            t0 = time.perf_counter()
            alone = _attempt_all(specs, capacity, totals, self.threads, lambda: None)
            return alone, time.perf_counter() - t0
        n = self.processes
        chunks = [list(specs[i::n]) for i in range(n)]  # round-robin, so kinds and order mix in every process
        futures = [self._pool.submit(_worker_chunk, c, capacity, totals, self.threads) for c in chunks]
        self._barrier.wait(120)  # every process has a chunk and its threads are at the gate
        t0 = time.perf_counter()
        results = [f.result(timeout=300) for f in futures]
        elapsed = time.perf_counter() - t0
        out: list[Attempt | None] = [None] * len(specs)
        for i, chunk in enumerate(results):
            out[i::n] = chunk
        return [a for a in out if a is not None], elapsed


def _reserve_only(args: argparse.Namespace) -> int:
    """The reservation path alone, over an empty network's capacity (no Ray)."""
    network = load_network()
    empty = empty_capacity(load_profile(network))
    specs = [s for _, s in make_specs(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        journal = Reservations(Path(tmp) / "reservations.json")
        with Submitters(journal.path, network, processes=args.processes, threads=args.threads) as subs:
            attempts, elapsed = subs.attempt(specs, empty, empty)
            counts = Counter(a.outcome.value for a in attempts)
            print(f"load: {len(attempts)} reservations on one journal from {args.processes} processes x "
                  f"{args.threads} threads in {elapsed:.3f} s = {len(attempts) / elapsed:,.0f} decisions/s "
                  f"(placed {counts['placed']}, waiting {counts['waiting']}, refused {counts['refused']})")
            t0, rounds = time.perf_counter(), 0
            while any(a.outcome is Outcome.PLACED for a in attempts):
                rounds += 1
                for a in attempts:
                    if a.ticket:
                        journal.release(a.ticket)
                waiting = [a.spec for a in attempts if a.outcome is Outcome.WAITING]
                attempts = subs.attempt(waiting, empty, empty)[0] if waiting else []
            print(f"drain: every waiting request placed in {rounds} release rounds, "
                  f"{time.perf_counter() - t0:.2f} s; left waiting: "
                  f"{sum(a.outcome is Outcome.WAITING for a in attempts)}; held: {len(journal.held())}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--mode", choices=("jobs", "reserve"), default="jobs",
                    help="jobs: through the Ray Jobs API on a local network (default); reserve: reservations only")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--attach", action="store_true", help="jobs mode: use the running network "
                    "($WESTFLOW_RAY_ADDRESS, $RAY_AUTH_TOKEN_PATH, as `westflow up` prints) instead of starting one")
    args = ap.parse_args()
    if args.mode == "reserve":
        return _reserve_only(args)
    from benchmarks.load_jobs_bench import run_jobs_bench

    return run_jobs_bench(requests=args.requests, processes=args.processes, threads=args.threads,
                          attach=args.attach)


if __name__ == "__main__":
    raise SystemExit(main())
