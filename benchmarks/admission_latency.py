"""Submission to admission through the queue vs the direct reservation path (issue 14), in one run.

No Ray: capacity is one fixed snapshot, every DC of configs/network.yaml empty
(:func:`westflow.capacity.full_capacity`), so nothing waits for capacity and both paths decide
with the same ``place()`` on the same numbers. ``--n`` submissions (the load's mix, less the
kinds that fit no DC) from ``--processes`` spawned processes x ``--threads`` threads, each
thread submitting its share back to back; a submission ends as soon as it is admitted (its
work is released at once), so holds stay small and quota (tenant ``default``) never binds.

Paths, each timed from the call to its answer:

- **journal**: today's direct path, one :meth:`ray_cluster.reservations.Reservations.reserve`
  on one journal (flock, read, decide, atomic write), then ``release``;
- **queue, self-serve**: ``StepTicket.admit`` as the Dagster resource calls it, with no
  controller process: the waiting step runs the admission cycle itself under the lease (the
  embedded default); then ``finish``;
- **queue, controller**: the same tickets without a controller of their own, admitted by
  ``Controller.run`` in a process of its own (as ``westflow controller``), at tenants.yaml's
  ``cycle_interval_s`` with the ticket's default poll (the production figure), and with
  ``--fast-interval`` for both (the floor).

On SQLite (a file in a temp dir) and on PostgreSQL 16 (PyPI ``pgserver``, a Unix socket in a
temp dir, nothing on TCP; a fresh database per path). Prints p50/p99 and throughput per path
and each queue path's ratio to the journal of the same run.

    .venv/bin/python -m benchmarks.admission_latency [--n 500] [--processes 4] [--threads 4]
        [--backends sqlite,postgresql] [--fast-interval 0.05]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from admission.controller import Controller, holder_name
from admission.database import sqlite_url
from admission.tickets import StepTicket
from admission.workqueue import AdmissionQueue
from benchmarks.load_bench import IMPOSSIBLE, make_specs, percentile, postgres_databases, tenants_for
from ray_cluster.reservations import Reservations
from westflow.capacity import Capacity, full_capacity
from westflow.config import load_network
from westflow.inventory import Network
from westflow.placement import get_policy
from westflow.spec import WorkloadSpec

__all__ = ["Result", "main"]

DEFAULT_POLL_S = 0.5  # StepTicket's default poll, as the resource waits


@dataclass(frozen=True, slots=True)
class Result:
    """One path's run: every submission's seconds to admission, and the seconds to the last one."""

    backend: str
    path: str
    latencies: tuple[float, ...]
    elapsed: float

    def row(self, journal: Result | None) -> str:
        p50, p99 = percentile(self.latencies, 0.5) * 1000, percentile(self.latencies, 0.99) * 1000
        rate = len(self.latencies) / self.elapsed
        line = f"{self.backend:<10} {self.path:<40} {len(self.latencies):>5} {p50:>9.1f} {p99:>9.1f} {rate:>9.1f}"
        if journal is None or journal is self:
            return line
        j50, j99 = percentile(journal.latencies, 0.5) * 1000, percentile(journal.latencies, 0.99) * 1000
        jrate = len(journal.latencies) / journal.elapsed
        return line + f" {p50 / j50:>8.1f}x {p99 / j99:>8.1f}x {jrate / rate:>8.1f}x"


# -- worker processes -----------------------------------------------------------------------------------

_W: dict[str, Any] = {}


def _init(path: str, target: str, network: Network, snapshot: Capacity, barrier: Any, self_serve: bool,
          poll_s: float) -> None:
    _W.update(path=path, network=network, snapshot=snapshot, barrier=barrier, policy=get_policy("westflow"),
              self_serve=self_serve, poll_s=poll_s)
    if path == "journal":
        _W["journal"] = Reservations(target)
    else:
        queue = AdmissionQueue(target)
        tenants = tenants_for(network)
        _W.update(queue=queue, tenants=tenants)


def _journal(spec: WorkloadSpec, key: str) -> float:
    journal: Reservations = _W["journal"]
    policy, network, snapshot = _W["policy"], _W["network"], _W["snapshot"]
    t0 = time.perf_counter()
    ticket, _ = journal.reserve(snapshot, lambda free: policy.place(spec, network, free), owner=f"bench {key}",
                                totals=snapshot)
    took = time.perf_counter() - t0
    journal.release(ticket)
    return took


def _queue(spec: WorkloadSpec, key: str) -> float:
    queue: AdmissionQueue = _W["queue"]
    controller = None
    if _W["self_serve"]:  # as WestflowResource.controller; a holder per thread: each stands for a step process
        controller = Controller(queue, tenants=_W["tenants"], network=_W["network"], policy=_W["policy"],
                                capacity=lambda: (_W["snapshot"], _W["snapshot"]),
                                holder=f"{holder_name()}:{threading.get_ident()}")
    ticket = StepTicket(queue, key, controller=controller, poll_s=_W["poll_s"], heartbeat_s=2.0)
    t0 = time.perf_counter()
    try:
        ticket.admit(spec, network=_W["network"], policy=_W["policy"], totals=_W["snapshot"],
                     tenants=_W["tenants"], owner=f"bench {key}")
        return time.perf_counter() - t0
    finally:
        ticket.finish("finished")


def _chunk(items: Sequence[tuple[WorkloadSpec, str]], threads: int) -> list[float]:
    fn: Callable[[WorkloadSpec, str], float] = _journal if _W["path"] == "journal" else _queue
    go = threading.Event()

    def one(spec: WorkloadSpec, key: str) -> float:
        go.wait()
        return fn(spec, key)

    def loop(mine: Sequence[tuple[WorkloadSpec, str]]) -> list[float]:
        return [one(s, k) for s, k in mine]

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(loop, items[i::threads]) for i in range(threads)]
        _W["barrier"].wait(120)
        go.set()
        return [x for f in futures for x in f.result(timeout=900)]


def _run(path: str, target: str, network: Network, snapshot: Capacity, specs: Sequence[WorkloadSpec], *,
         processes: int, threads: int, self_serve: bool = False, poll_s: float = DEFAULT_POLL_S,
         controller: tuple[str, float] | None = None) -> tuple[list[float], float]:
    """Every submission's seconds to admission, and the seconds from the common start to the last."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    prefix = f"{path}-{secrets.token_hex(3)}"
    items = [(s, f"{prefix}-{s.name}") for s in specs]
    stop = ctx.Event()
    leader = None
    if controller is not None:
        leader = ctx.Process(target=_lead, args=(controller[0], network, snapshot, controller[1], stop), daemon=True)
        leader.start()
    try:
        with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_init,
                                 initargs=(path, target, network, snapshot, barrier, self_serve, poll_s)) as pool:
            futures = [pool.submit(_chunk, items[i::processes], threads) for i in range(processes)]
            barrier.wait(300)
            t0 = time.perf_counter()
            out = [x for f in futures for x in f.result(timeout=900)]
            return out, time.perf_counter() - t0
    finally:
        stop.set()
        if leader is not None:
            leader.join(30)
            if leader.is_alive():
                leader.kill()


def _lead(url: str, network: Network, snapshot: Capacity, interval_s: float, stop: Any) -> None:
    """A controller process of its own, as ``westflow controller`` runs."""
    queue = AdmissionQueue(url)
    ctl = Controller(queue, tenants=tenants_for(network), network=network, policy=get_policy("westflow"),
                     capacity=lambda: (snapshot, snapshot), holder=f"controller:{holder_name()}")
    waiter = threading.Event()  # Controller.run waits on a threading.Event

    def relay() -> None:
        stop.wait()
        waiter.set()

    threading.Thread(target=relay, daemon=True).start()
    ctl.run(waiter, interval_s=interval_s)
    queue.close()


# -- databases ------------------------------------------------------------------------------------------


@contextmanager
def _sqlite(tmp: Path) -> Iterator[Callable[[], str]]:
    def fresh() -> str:
        url = sqlite_url(tmp / f"sqlite-{secrets.token_hex(4)}")
        AdmissionQueue(url).close()  # migrated before the timed phase
        return url

    yield fresh


def _backend(name: str, fresh: Callable[[], str], tmp: Path, network: Network, snapshot: Capacity,
             specs: Sequence[WorkloadSpec], args: argparse.Namespace) -> list[Result]:
    kw = {"processes": args.processes, "threads": args.threads}
    interval = tenants_for(network).admission.cycle_interval_s
    def _run_controller(url: str, interval_s: float, poll_s: float) -> tuple[list[float], float]:
        return _run("queue", url, network, snapshot, specs, poll_s=poll_s, controller=(url, interval_s), **kw)

    runs = [("journal (Reservations.reserve)", lambda: _run("journal", str(tmp / f"journal-{name}.json"), network,
                                                             snapshot, specs, **kw)),
            ("queue, self-serve cycle", lambda: _run("queue", fresh(), network, snapshot, specs, self_serve=True,
                                                     **kw)),
            (f"queue, controller {interval:g} s, poll {DEFAULT_POLL_S:g} s",
             lambda: _run_controller(fresh(), interval, DEFAULT_POLL_S)),
            (f"queue, controller {args.fast_interval:g} s, poll {args.fast_interval:g} s",
             lambda: _run_controller(fresh(), args.fast_interval, args.fast_interval))]

    out = []
    for label, go in runs:
        latencies, elapsed = go()
        out.append(Result(name, label, tuple(latencies), elapsed))
        print(out[-1].row(out[0]), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="submissions per path")
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--fast-interval", type=float, default=0.05, help="the tight controller interval and poll (s)")
    args = ap.parse_args(argv)
    network = load_network()
    snapshot = full_capacity(network)
    specs = [s for kind, s in make_specs(args.n * 2) if kind not in IMPOSSIBLE][:args.n]
    print(f"{args.n} submissions per path from {args.processes} processes x {args.threads} threads, each admitted "
          f"then released at once; capacity: every DC of network.yaml empty ({len(snapshot)} DCs)")
    print(f"{'backend':<10} {'path':<40} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'steps/s':>9}"
          f" {'p50/jrnl':>9} {'p99/jrnl':>9} {'jrnl/s÷':>9}")
    with tempfile.TemporaryDirectory(prefix="wf-admlat-") as tmp:
        for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if name == "sqlite":
                with _sqlite(Path(tmp)) as fresh:
                    _backend(name, fresh, Path(tmp), network, snapshot, specs, args)
            elif name == "postgresql":
                with postgres_databases() as fresh:
                    _backend(name, fresh, Path(tmp), network, snapshot, specs, args)
            else:
                raise SystemExit(f"Invalid backend {name!r}; must be one of: sqlite, postgresql.")
    print("ratios: the queue path's p50 and p99 over the journal's in the same run; jrnl/s÷: the journal's "
          "throughput over the queue path's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
