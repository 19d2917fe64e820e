"""Load (issues 5, 12 and 14): 1,000 steps submitted at once, through the admission queue.

Every step goes through :class:`admission.tickets.StepTicket` as a step of
:class:`pipelines.resources.WestflowResource` does (:class:`Side`): the never-fits check on
each DC's totals, a row in the durable queue, and a wait in which, while no controller leads,
the step runs the admission cycle itself (a :class:`~admission.controller.Controller` built as
``WestflowResource.controller`` builds it, under the lease). A step stops waiting once a cycle
has decided it: admitted (with the placement the ticket returns), or waiting with a reason
per DC (``StepTicket.admit``'s ``cancelled`` hook, set by the ticket's first ``waiting``
event: its row stays pending and its ticket keeps beating, so a later cycle admits it). A
step that fits no DC even empty is refused before it is queued. A step ends when its
release marker appears (:func:`end_all`): its own process finishes its ticket.

``--mode jobs`` (the default, :mod:`benchmarks.load_jobs_bench`): against a local network
(started in a temp state dir, or the running one with ``--attach``), every step reads live
capacity through the dashboard and, when admitted, becomes a Ray Job through
``Dispatcher.submit``, from several processes with several threads each, all released at
once. Prints steps/s, the p50/p99 time from submission to the Ray job RUNNING, and the ratio
against the same jobs submitted with the bare ``JobSubmissionClient.submit_job``.

``--mode queue``: the queue alone, no Ray. Capacity is a fixed snapshot of an empty local
network (``configs/local.yaml``: fewer free accelerators than asked for). Prints the
decisions per second of the concurrent phase and how many were admitted, left waiting and
refused; then ends the admitted steps round by round (a controller in this process admits
the waiting ones, as ``westflow controller`` would) until none is left.

``tests/integration/test_load.py`` runs the same load against the live Ray network and
checks Ray's own accounting.

    .venv/bin/python -m benchmarks.load_bench [--mode jobs|queue] [--requests 1000] [--processes 4]
        [--threads 8] [--heartbeat-s 30] [--db sqlite|postgresql] [--attach]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import shutil
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from admission.controller import CapacityRead, Controller, holder_name
from admission.database import sqlite_url
from admission.rows import FINAL
from admission.tickets import QueueTimeout, StepTicket
from admission.workqueue import AdmissionQueue
from ray_cluster.federation import Federation, admit_on_totals
from ray_cluster.local import LocalProfile, load_profile
from westflow.capacity import Capacity, DCCapacity
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import InfeasibleError
from westflow.inventory import Network
from westflow.placement import Placement, Policy, get_policy
from westflow.spec import WorkloadSpec, parse_spec
from westflow.tenants import Tenants, load_tenants

__all__ = ["MIX", "IMPOSSIBLE", "CPUS", "POLL_S", "HEARTBEAT_S", "LOAD_HEARTBEAT_S", "make_specs", "empty_capacity",
           "Outcome", "Attempt", "Side", "Spread", "WorkerError", "queue_key", "end_all", "await_final", "tenants_for",
           "percentile", "postgres_databases"]

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
POLL_S = 0.5  # StepTicket's poll while waiting (the resource's default)
HEARTBEAT_S = 2.0  # the resource's heartbeat
# The load's heartbeat: 750 live tickets beating every 2 s (the resource's) saturate SQLite's one writer on
# 2 cores while Ray starts the burst's jobs (heartbeat writes waited 2.7 s on average, up to 60 s; cycles'
# fenced writes up to 30 s, losing their lease; a waiting step's own poll then failed with "database is
# locked"); every 10 s still did (mean 2.5 s, up to 39 s, and the same failure). Every 30 s keeps a row
# inside stale_after_s (60 s) at a fifteenth of the writes.
LOAD_HEARTBEAT_S = 30.0


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


def tenants_for(network: Network, config_dir: Path | str = CONFIG_DIR) -> Tenants:
    """tenants.yaml checked against ``network``'s models, as ``WestflowResource.tenants`` loads it."""
    return load_tenants(config_dir, models={p.model for dc in network.data_centers for p in dc.pools})


def queue_key(prefix: str, spec: WorkloadSpec) -> str:
    """The step's queue key (one per step run, as ``<run id>:<step key>`` is in Dagster)."""
    return f"{prefix}-{spec.name}"


class Outcome(StrEnum):
    ADMITTED = "admitted"
    WAITING = "waiting"  # queued; the cycle that decided it found no room (a reason per DC)
    REFUSED = "refused"  # fits no DC even when empty: never queued


@dataclass(frozen=True, slots=True)
class Attempt:
    """One step's answer from the queue: where it was admitted, or every DC's reason."""

    spec: WorkloadSpec
    outcome: Outcome
    key: str
    placement: Placement | None = None
    reasons: dict[str, str] = field(default_factory=dict)  # waiting: the last reason per DC
    rejected: tuple[Any, ...] = ()  # refused: each a placement Rejection (reason, detail per DC)
    pid: int = 0
    started: float = 0.0  # time.time() when the step called StepTicket.admit
    decided_s: float = 0.0  # from that call to its answer


class Side:
    """One step process's view of the queue: its tickets, which it keeps beating until each step ends.

    ``capacity``: what each controller reads (live, or a fixed snapshot); ``ends``: the directory
    whose file ``<key>`` says step ``key`` is over (its ticket is then finished by this process);
    ``scope``: the federation its steps and controllers are for (``Federation.scope``); ``federation``:
    read for each step's never-fits check as the resource reads it (:func:`admit_on_totals`: a timed-out
    cluster is read again before a step is refused), instead of ``capacity``'s totals.
    """

    def __init__(self, queue: AdmissionQueue, network: Network, tenants: Tenants, policy: Policy,
                 capacity: CapacityRead, *, prefix: str, ends: Path | str, poll_s: float = POLL_S,
                 heartbeat_s: float = HEARTBEAT_S, scope: str = "", federation: Federation | None = None) -> None:
        self.queue, self.network, self.tenants, self.policy, self.scope = queue, network, tenants, policy, scope
        self.federation = federation
        self.capacity, self.prefix, self.ends = capacity, prefix, Path(ends)
        self.poll_s, self.heartbeat_s = poll_s, heartbeat_s
        self.tickets: dict[str, StepTicket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ender = threading.Thread(target=self._ending, name="load-step-ends", daemon=True)
        self._ender.start()

    def controller(self) -> Controller:
        """The cycle a waiting step runs itself, built as ``WestflowResource.controller`` builds it.

        Its holder names this thread too: each thread here stands for a step process of its own
        (Dagster's multiprocess executor), and a holder is one process in production.
        """
        return Controller(self.queue, tenants=self.tenants, network=self.network, policy=self.policy,
                          capacity=self.capacity, holder=f"{holder_name()}:{threading.get_ident()}", scope=self.scope)

    def admit(self, spec: WorkloadSpec) -> Attempt:
        """``StepTicket.admit`` as the resource calls it, until the first cycle that decides the step."""
        key = queue_key(self.prefix, spec)
        decided = threading.Event()

        def on_event(kind: str, text: str) -> None:
            if kind == "waiting":
                decided.set()

        started, t0 = time.time(), time.perf_counter()
        ticket = StepTicket(self.queue, key, controller=self.controller(), poll_s=self.poll_s,
                            heartbeat_s=self.heartbeat_s, on_event=on_event)

        def admit(totals: Mapping[str, DCCapacity]) -> Placement:
            return ticket.admit(spec, network=self.network, policy=self.policy, totals=totals, tenants=self.tenants,
                                owner=f"load {spec.name}", cancelled=decided.is_set)

        try:
            if self.federation is not None:  # the resource's read of the totals for the never-fits check
                p = admit_on_totals(self.federation, self.network, admit)
            else:
                live, read = self.capacity()
                p = admit(read if read is not None else live)
        except InfeasibleError as exc:
            return Attempt(spec, Outcome.REFUSED, key, rejected=exc.rejected, pid=os.getpid(), started=started,
                           decided_s=time.perf_counter() - t0)
        except QueueTimeout as exc:
            if exc.state != "cancelled":  # expired or ended: a step that fails frees its row
                ticket.finish("failed", str(exc)[:500])
                raise
            self._keep(ticket)
            return Attempt(spec, Outcome.WAITING, key, reasons=dict(exc.reasons), pid=os.getpid(), started=started,
                           decided_s=time.perf_counter() - t0)
        self._keep(ticket)
        return Attempt(spec, Outcome.ADMITTED, key, p, pid=os.getpid(), started=started,
                       decided_s=time.perf_counter() - t0)

    def finish(self, key: str, state: str, detail: str = "") -> None:
        """End step ``key`` now (a failed submission, say)."""
        with self._lock:
            ticket = self.tickets.pop(key, None)
        if ticket is not None:
            ticket.finish(state, detail)

    def close(self) -> None:
        """Stop ending steps; finish what is left as cancelled (a process that exits takes its steps)."""
        self._stop.set()
        self._ender.join(timeout=10)
        for key in list(self.tickets):
            self.finish(key, "cancelled", "the load's process closed")

    def _keep(self, ticket: StepTicket) -> None:
        with self._lock:
            self.tickets[ticket.key] = ticket

    def _ending(self) -> None:
        while not self._stop.wait(0.2):
            try:
                ended = set(os.listdir(self.ends))
            except OSError:
                continue
            with self._lock:
                keys = [k for k in self.tickets if k in ended]
            for key in keys:
                self.finish(key, "finished", "released by the load")


def end_all(ends: Path | str, keys: Iterable[str]) -> None:
    """Say steps ``keys`` are over: each one's process finishes its ticket."""
    for key in keys:
        (Path(ends) / key).touch()


def await_final(queue: AdmissionQueue, keys: Iterable[str], timeout_s: float = 60.0) -> None:
    """Until every row of ``keys`` is final (its step finished its ticket)."""
    want = set(keys)
    deadline = time.monotonic() + timeout_s
    while want:
        want -= {r.key for r in queue.rows(FINAL) if r.key in want}
        if want and time.monotonic() > deadline:
            raise TimeoutError(f"{len(want)} steps never finished their tickets, e.g. {sorted(want)[:3]}")
        if want:
            time.sleep(0.1)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))] if s else float("nan")


@contextmanager
def postgres_databases() -> Iterator[Callable[[], str]]:
    """A PostgreSQL 16 from PyPI pgserver on a Unix socket in a temp dir (nothing on TCP), as
    tests/fixtures/postgres.py starts it; yields a maker of fresh, migrated databases (their URLs)."""
    import sqlalchemy as sa

    with warnings.catch_warnings():  # platformdirs warns on import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver
    root = Path(tempfile.mkdtemp(prefix="wf-pg-"))  # short: the socket lives in it
    server: Any = pgserver.get_server(root / "data", cleanup_mode="delete")
    try:
        socket_dir = server.get_postmaster_info().socket_dir

        def url(db: str) -> str:
            return f"postgresql+psycopg://postgres:@/{db}?host={socket_dir}"

        admin = sa.create_engine(url("postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)

        def fresh() -> str:
            name = f"bench_{secrets.token_hex(4)}"
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            AdmissionQueue(url(name)).close()  # migrated before the timed phase
            return url(name)

        yield fresh
        admin.dispose()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)



# -- processes x threads ---------------------------------------------------------------------------

_W: dict[str, Any] = {}  # this worker process's state (its Side, and what its initializer adds)


def worker() -> dict[str, Any]:
    """This worker process's state, as its initializer left it."""
    return _W


def _run_all(fn: Callable[[Any], Any], items: Sequence[Any], threads: int, gate: Callable[[], None]) -> list[Any]:
    """``fn`` over ``items`` from ``threads`` threads that start together once ``gate()`` returns."""
    go = threading.Event()

    def one(item: Any) -> Any:
        go.wait()
        return fn(item)

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(one, x) for x in items]
        gate()
        go.set()
        return [f.result(timeout=900) for f in futures]


class WorkerError(RuntimeError):
    """A step raised in a worker process: its traceback as text (not every westflow error pickles)."""


def _chunk(fn: Callable[[Any], Any], items: Sequence[Any], threads: int) -> list[Any]:
    try:
        return _run_all(fn, items, threads, lambda: _W["barrier"].wait(120))
    except BaseException as exc:  # noqa: BLE001 - carried to the parent as text
        raise WorkerError(f"in process {os.getpid()}: " + "".join(traceback.format_exception(exc))) from None


def _close_side() -> None:
    side = _W.pop("side", None)
    if side is not None:
        side.close()
    _W["barrier"].wait(120)  # so each process takes exactly one of these


class Spread:
    """``processes`` spawned processes with ``threads`` threads each, all starting a batch together.

    ``initializer(*initargs)`` runs once per process (it fills :func:`worker`); the processes
    live until :meth:`close`, so their tickets keep beating between batches, as a step's
    process does while it waits.
    """

    def __init__(self, initializer: Callable[..., None], initargs: tuple[Any, ...], *, processes: int = 4,
                 threads: int = 8) -> None:
        if processes < 1:
            raise ValueError(f"Invalid processes {processes!r}; must be >= 1.")
        self.processes, self.threads = processes, threads
        ctx = mp.get_context("spawn")
        self._barrier = ctx.Barrier(processes + 1)
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            processes, mp_context=ctx, initializer=_init_spread, initargs=(initializer, initargs, self._barrier))

    def __enter__(self) -> Spread:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            try:
                futures = [self._pool.submit(_close_side) for _ in range(self.processes)]
                self._barrier.wait(120)
                for f in futures:
                    f.result(timeout=60)
            except Exception:  # noqa: BLE001 - closing: the rows of a process that is gone end as abandoned
                pass
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> tuple[list[Any], float]:
        """``fn(item)`` for every item (answers in item order), spread round-robin over the processes,
        and the seconds from the common start to the last answer. ``fn`` must be picklable by name."""
        assert self._pool is not None, "closed"
        if not items:
            return [], 0.0
        n = self.processes
        chunks = [list(items[i::n]) for i in range(n)]  # round-robin: kinds and order mix in every process
        futures = [self._pool.submit(_chunk, fn, c, self.threads) for c in chunks]
        self._barrier.wait(120)  # every process holds a chunk and its threads are at the gate
        t0 = time.perf_counter()
        results = [f.result(timeout=900) for f in futures]
        elapsed = time.perf_counter() - t0
        out: list[Any] = [None] * len(items)
        for i, chunk in enumerate(results):
            out[i::n] = chunk
        return out, elapsed


def _init_spread(initializer: Callable[..., None], initargs: tuple[Any, ...], barrier: Any) -> None:
    _W["barrier"] = barrier
    initializer(*initargs)


# -- the queue alone -----------------------------------------------------------------------------------


def _init_snapshot(url: str, network: Network, snapshot: Capacity, prefix: str, ends: str,
                   heartbeat_s: float) -> None:
    queue = AdmissionQueue(url)
    _W["side"] = Side(queue, network, tenants_for(network), get_policy("westflow"), lambda: (snapshot, snapshot),
                      prefix=prefix, ends=ends, heartbeat_s=heartbeat_s)


def admit_one(spec: WorkloadSpec) -> Attempt:
    """One step through this worker's :class:`Side` (picklable by name for :meth:`Spread.map`)."""
    side: Side = _W["side"]
    return side.admit(spec)


def _queue_only(args: argparse.Namespace) -> int:
    """The queue path alone, over an empty network's capacity (no Ray)."""
    network = load_network()
    empty = empty_capacity(load_profile(network))
    specs = [s for _, s in make_specs(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        url, ends = sqlite_url(Path(tmp) / "state"), Path(tmp) / "ends"
        ends.mkdir()
        queue = AdmissionQueue(url)  # migrated before the processes start
        prefix = "loadq"
        with Spread(_init_snapshot, (url, network, empty, prefix, str(ends), args.heartbeat_s),
                    processes=args.processes, threads=args.threads) as spread:
            attempts, elapsed = spread.map(admit_one, specs)
            counts = Counter(a.outcome.value for a in attempts)
            decided = [a.decided_s for a in attempts]
            print(f"load: {len(attempts)} steps through the queue (SQLite; tickets beat every "
                  f"{args.heartbeat_s:g} s) from {args.processes} processes x {args.threads} threads in "
                  f"{elapsed:.2f} s = {len(attempts) / elapsed:,.0f} steps/s (admitted {counts['admitted']}, "
                  f"waiting {counts['waiting']}, refused {counts['refused']}); StepTicket.admit to its answer "
                  f"p50 {percentile(decided, 0.5):.2f} s, p99 {percentile(decided, 0.99):.2f} s")
            ctl = Controller(queue, tenants=tenants_for(network), network=network, policy=get_policy("westflow"),
                             capacity=lambda: (empty, empty), holder="load-bench-controller")
            t0, rounds = time.perf_counter(), 0
            while held := [r.key for r in queue.holding()]:
                rounds += 1
                end_all(ends, held)
                await_final(queue, held)
                ctl.cycle()
            ctl.release()
            print(f"drain: every waiting step admitted in {rounds} rounds (steps end, one controller cycle), "
                  f"{time.perf_counter() - t0:.2f} s; left pending: {len(queue.pending())}; "
                  f"states: {dict(sorted(queue.counts().items()))}")
        queue.close()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--mode", choices=("jobs", "queue"), default="jobs",
                    help="jobs: through the Ray Jobs API on a local network (default); queue: the queue only")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--heartbeat-s", type=float, default=LOAD_HEARTBEAT_S,
                    help=f"how often each live ticket beats (default {LOAD_HEARTBEAT_S:g}; the resource's: "
                         f"{HEARTBEAT_S:g})")
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite",
                    help="jobs mode: the queue's store (sqlite, the embedded default; postgresql from pgserver)")
    ap.add_argument("--attach", action="store_true", help="jobs mode: use the running network "
                    "($WESTFLOW_RAY_ADDRESS, $RAY_AUTH_TOKEN_PATH, as `westflow up` prints) instead of starting one")
    args = ap.parse_args()
    if args.mode == "queue":
        return _queue_only(args)
    from benchmarks.load_jobs_bench import run_jobs_bench

    return run_jobs_bench(requests=args.requests, processes=args.processes, threads=args.threads,
                          attach=args.attach, heartbeat_s=args.heartbeat_s, db=args.db)


if __name__ == "__main__":
    raise SystemExit(main())
