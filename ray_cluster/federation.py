"""Several independent Ray clusters, one dispatcher over their Jobs APIs.

A :class:`Federation` knows every cluster's :class:`~ray_cluster.access.ClusterAccess`
(its dashboard / Jobs API URL and its own token) and which DCs each runs:

- :meth:`Federation.grouped` puts every DC in its cluster, so a placement names
  the cluster it runs in (``Placement.ray_cluster``);
- :meth:`Federation.capacity_and_totals` reads every cluster's nodes
  concurrently, each read bounded by ``timeout_s``: a cluster that does not
  answer in time makes its DCs ineligible with the reason
  ``cluster unreachable: <name>: <error>`` and never stalls placement longer;
- :meth:`Federation.dispatcher` is the :class:`~ray_cluster.dispatch.Dispatcher`
  of one cluster (submit, wait, logs, stop, node-loss verdict with its token).

Where the clusters come from: :meth:`Federation.local` (what ``westflow up``
recorded in the state dir), :meth:`Federation.of_network` (``configs/network.yaml``:
each cluster's ``dashboard_url`` and token source), :meth:`Federation.single`
(one cluster running every DC, e.g. ``$WESTFLOW_RAY_ADDRESS``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import Dispatcher
from ray_cluster.live import DashboardReader, NodeView, snapshot
from ray_cluster.local.clusters import recorded_clusters
from westflow.capacity import DCCapacity
from westflow.errors import ClusterError, InfeasibleError
from westflow.inventory import Network, RayCluster, TokenSource

__all__ = ["Member", "ClusterRead", "Federation", "DEFAULT_TIMEOUT_S", "TOKEN_ENV_PREFIX", "token_env", "token_of",
           "unreachable_reason", "admit_on_totals", "TOTALS_REREADS", "TOTALS_REREAD_S"]

DEFAULT_TIMEOUT_S = 1.0
TOTALS_REREADS, TOTALS_REREAD_S = 3, 1.0  # a timed-out cluster read, read again before a step is refused for it
TOKEN_ENV_PREFIX = "WESTFLOW_RAY_TOKEN_"  # where a Kubernetes Secret's token reaches the dispatcher


def token_env(cluster: str) -> str:
    """The variable the dispatcher finds ``cluster``'s token in when it comes from a Secret."""
    return TOKEN_ENV_PREFIX + cluster.upper()


@dataclass(frozen=True, slots=True)
class Member:
    """One cluster of the federation; ``data_centers`` empty means every DC the inventory puts in it."""

    name: str
    access: ClusterAccess
    data_centers: tuple[str, ...] = ()
    serve_url: str = ""  # Ray Serve's HTTP ingress of the cluster ("" = none known)


@dataclass(frozen=True, slots=True)
class ClusterRead:
    """One cluster's nodes as read now, or why it could not be read (``error``), and how long it took."""

    name: str
    nodes: tuple[NodeView, ...] = ()
    error: str = ""
    seconds: float = 0.0
    timed_out: bool = False  # no answer within the read's bound: busy or frozen, not (yet) known lost

    @property
    def reachable(self) -> bool:
        return not self.error


def unreachable_reason(name: str, error: str) -> str:
    """The rejection detail of a DC whose cluster did not answer."""
    return f"cluster unreachable: {name}: {error}"


def token_of(cluster: RayCluster, source: TokenSource, env: Mapping[str, str]) -> str:
    """The token ``source`` names, read now (a Secret arrives as ``$WESTFLOW_RAY_TOKEN_<NAME>``)."""
    if source.file:
        return ClusterAccess.resolve(dashboard_url=cluster.dashboard_url or "http://unset",
                                     token_path=source.file, env={}).token
    var = source.env or token_env(cluster.name)
    value = env.get(var, "").strip()
    if not value:
        raise ClusterError(f"No Ray auth token for cluster {cluster.name!r}: ${var} is empty or unset "
                           f"(its token source is {source.describe()}). To fix: set {var} "
                           "(the rendered dispatcher Deployment sets it from the cluster's Secret).")
    return value


class Federation:
    """The clusters westflow dispatches to (see the module doc)."""

    def __init__(self, members: Sequence[Member], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 make_dispatcher: Callable[[ClusterAccess], Dispatcher] | None = None) -> None:
        if not members:
            raise ClusterError("A federation needs at least one Ray cluster. To fix: run `westflow up`, or give "
                               "each cluster a dashboard_url and token in configs/network.yaml.")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ClusterError(f"Duplicate Ray cluster names in the federation: {names}.")
        self.members = {m.name: m for m in members}
        self.timeout_s = timeout_s
        self._make = make_dispatcher or (lambda access: Dispatcher(access))
        self._dispatchers: dict[str, Dispatcher] = {}
        self._lock = threading.Lock()
        self._flight: _Flight | None = None  # the read in progress, which this process's other reads join

    # -- where the clusters come from ----------------------------------------
    @classmethod
    def local(cls, state_dir: Path | str, **kwargs: Any) -> Federation | None:
        """The local clusters ``westflow up`` recorded in ``state_dir`` (None if it recorded none)."""
        recorded = recorded_clusters(state_dir)
        if not recorded:
            return None
        return cls([Member(c.name, ClusterAccess.resolve(dashboard_url=c.dashboard_url, token_path=c.token_path,
                                                         env={}), c.data_centers, c.serve_url)
                    for c in recorded], **kwargs)

    @classmethod
    def of_network(cls, network: Network, env: Mapping[str, str] | None = None, **kwargs: Any) -> Federation:
        """Every cluster of the inventory that says how to reach it (``dashboard_url`` and ``token``)."""
        env = os.environ if env is None else env
        members = [Member(c.name, ClusterAccess(c.dashboard_url, token_of(c, c.token, env)), (), c.serve_url or "")
                   for c in network.clusters if c.dashboard_url and c.token]
        return cls(members, **kwargs)

    @classmethod
    def single(cls, access: ClusterAccess, network: Network, name: str = "default", serve_url: str = "",
               **kwargs: Any) -> Federation:
        """One cluster that runs every DC of ``network`` (a single Ray cluster given by its address)."""
        return cls([Member(name, access, network.dc_ids, serve_url)], **kwargs)

    # -- the clusters --------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.members)

    @property
    def scope(self) -> str:
        """A stable id of these clusters (names and Jobs API URLs): the admission queue's scope, so steps and
        controllers of one federation share capacity accounting and other federations' work stays apart."""
        import hashlib

        text = "\n".join(f"{n} {m.access.dashboard_url}" for n, m in sorted(self.members.items()))
        return "fed-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def access(self, name: str) -> ClusterAccess:
        try:
            return self.members[name].access
        except KeyError:
            raise ClusterError(f"No Ray cluster {name!r} in this federation; it has {sorted(self.members)}. "
                               "To fix: `westflow up` (local), or give the cluster a dashboard_url and token "
                               "in configs/network.yaml.") from None

    def dispatcher(self, name: str) -> Dispatcher:
        """Cluster ``name``'s dispatcher (one per cluster, made on first use)."""
        with self._lock:
            if name not in self._dispatchers:
                self._dispatchers[name] = self._make(self.access(name))
            return self._dispatchers[name]

    def grouped(self, network: Network) -> Network:
        """``network`` with each DC in the cluster that runs it here (and each cluster's URL)."""
        groups = {dc: m.name for m in self.members.values() for dc in m.data_centers}
        clusters = tuple(replace(network.cluster(m.name), dashboard_url=m.access.dashboard_url)
                         for m in self.members.values())
        return network.regrouped(groups, clusters)

    # -- live capacity ---------------------------------------------------------
    def read(self) -> dict[str, ClusterRead]:
        """Every cluster's nodes, read concurrently; each read bounded by ``timeout_s`` (an unanswered one is
        reported as unreachable when its time is up, never waited for longer).

        A read asked for while another thread's is in flight joins it and gets its answer: one process's
        many steps or cycles send one read at a time to each dashboard, not one each (a dashboard on busy
        cores answers a crowd of reads slower than one)."""
        with self._lock:
            flight, mine = self._flight, self._flight is None
            if flight is None:
                flight = self._flight = _Flight()
            else:
                flight.joined += 1
        if not mine:
            flight.done.wait()  # bounded: the read in flight ends within timeout_s
            return dict(flight.result) if flight.result is not None else self._read_now()
        try:
            flight.result = self._read_now()
            return dict(flight.result)
        finally:
            with self._lock:
                self._flight = None
            flight.done.set()

    def _read_now(self) -> dict[str, ClusterRead]:
        out: dict[str, ClusterRead] = {}
        done = threading.Condition()

        def one(m: Member) -> None:
            t0 = time.perf_counter()
            try:
                nodes = DashboardReader(m.access.dashboard_url, m.access.token, timeout_s=self.timeout_s).nodes()
                r = ClusterRead(m.name, tuple(nodes), seconds=time.perf_counter() - t0)
            except (ClusterError, OSError, ValueError, KeyError, TypeError) as exc:
                r = ClusterRead(m.name, error=_short(exc), seconds=time.perf_counter() - t0)
            with done:
                out.setdefault(m.name, r)
                done.notify_all()

        for m in self.members.values():
            threading.Thread(target=one, args=(m,), daemon=True, name=f"westflow-read-{m.name}").start()
        deadline = time.monotonic() + self.timeout_s
        with done:
            while len(out) < len(self.members):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                done.wait(left)
            for name in self.members:
                out.setdefault(name, ClusterRead(name, error=f"no answer within {self.timeout_s:g} s",
                                                 seconds=self.timeout_s, timed_out=True))
            return {name: out[name] for name in self.members}

    def capacity_and_totals(self, network: Network, reads: Mapping[str, ClusterRead] | None = None,
                            ) -> tuple[dict[str, DCCapacity], dict[str, DCCapacity]]:
        """What is free per DC of every cluster, and what each would have free if empty (as
        :func:`ray_cluster.live.capacity_and_totals`), over one concurrent read of all clusters.

        ``network`` is grouped (:meth:`grouped`). A DC of an unreachable cluster is present, not alive,
        with the reason ``cluster unreachable: <name>: <error>``.
        """
        reads = self.read() if reads is None else reads
        caps: dict[str, DCCapacity] = {}
        totals: dict[str, DCCapacity] = {}
        for name, r in reads.items():
            mine = {d.id for d in network.data_centers if d.ray_cluster == name}
            if r.reachable:
                nodes = [n for n in r.nodes if n.dc in mine]
                caps.update(snapshot(network, nodes))
                totals.update(snapshot(network, [replace(n, available=dict(n.total)) for n in nodes]))
                continue
            out = DCCapacity({}, 0.0, 0.0, 1.0, alive=False, why=unreachable_reason(name, r.error))
            for dc in sorted(mine):
                caps[dc] = totals[dc] = out
        return caps, totals


class _Flight:
    """One read in flight: its answer once done, and how many reads joined it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: dict[str, ClusterRead] | None = None
        self.joined = 0


T = TypeVar("T")
Totals = Mapping[str, DCCapacity]


class _Reads(Protocol):
    def read(self) -> dict[str, ClusterRead]: ...

    def capacity_and_totals(self, network: Network, reads: Mapping[str, ClusterRead] | None = None,
                            ) -> tuple[dict[str, DCCapacity], dict[str, DCCapacity]]: ...


def admit_on_totals(federation: _Reads, network: Network, admit: Callable[[Totals], T], *,
                    rereads: int = TOTALS_REREADS, pause_s: float = TOTALS_REREAD_S,
                    on_slow: Callable[[Sequence[str]], None] | None = None) -> T:
    """``admit(totals)`` on what each DC would have free if empty, read live: the never-fits check of a step.

    When ``admit`` finds the step fits nowhere (:class:`InfeasibleError`) while a cluster's read timed out (a
    dashboard too busy to answer within its bound, or frozen), that cluster is read again, ``rereads`` times
    at most, ``pause_s`` apart (``on_slow`` is told which), before the error stands: a busy cluster is not
    a lost one. A cluster that refused the connection counts at once, so a lost head fails its steps fast.
    """
    reads = federation.read()
    while True:
        _, totals = federation.capacity_and_totals(network, reads)
        try:
            return admit(totals)
        except InfeasibleError:
            slow = sorted(name for name, r in reads.items() if r.timed_out)
            if not (rereads and slow):
                raise
        if on_slow is not None:
            on_slow(slow)
        rereads -= 1
        time.sleep(pause_s)
        reads = federation.read()


def _short(exc: BaseException) -> str:
    """The first line of an error, without westflow's "To fix" advice (the table names the cluster)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.split(" To fix:")[0][:200]
