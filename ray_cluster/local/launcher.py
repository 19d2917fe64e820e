"""The local network: one Ray node per DC of the local profile, all on loopback.

Each node has its own loopback address (``127.0.0.2``, ``.3``, ...; see
:meth:`LocalProfile.node_ip`), so Ray's traffic never leaves ``127.0.0.0/8`` and
a job's driver can attach to the raylet of its own DC; the dashboard, Jobs API
and Ray Client server listen on ``host`` (127.0.0.1).

``up()`` starts the head (first DC: GCS, dashboard) and one worker node per
other DC with ``ray start``, each as a new session so its process group holds
every daemon it spawns; the groups are recorded in ``<state>/ray.json`` with a
random network id that every process of the network carries in its environment
(``WESTFLOW_NETWORK_ID``). ``down()`` signals only processes of a recorded group
that carry that id: a stale ``ray.json`` whose pids and groups were reused by
other programs kills nothing of theirs. Token auth stays on (see :mod:`.auth`).
Logs: ``<state>/logs/`` (``ray start`` output) and ``<state>/ray-session`` (Ray's
session logs).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

import hostprocs as procs
from ray_cluster.live import DashboardReader, NodeView
from ray_cluster.local import auth
from ray_cluster.local.profile import LocalProfile, Ports
from westflow.errors import ClusterError
from westflow.tags import ENV_DC, ENV_NODE_IP, GPU, NPU

__all__ = ["LocalNetwork", "DCStatus", "NetworkStatus", "free_port", "start_services", "stop_services",
           "recorded_serve_url"]

STATE_FILE = "ray.json"
ENV_NETWORK_ID = "WESTFLOW_NETWORK_ID"  # in the environment of every process a node runs
# Worker nodes start one at a time: they share the session dir, and concurrent raylets race for
# the same socket names (plasma_store.N: "Address already in use").
START_BATCH = 1
GCS_RECONNECT_S = 10
# The GCS declares a node dead after this many failed health checks, one a second (Ray: 5, every 3 s). On
# one host a killed raylet refuses at once, so a crashed DC is failed over in ~5 s instead of ~15-20 s; a
# raylet that is merely slow still gets Ray's 10 s per check, so it is not declared dead sooner.
HEALTH_CHECK_PERIOD_MS = 1000
HEALTH_CHECK_FAILURES = 5


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_services(state_dir: Path) -> None:
    """Companion services ``up`` starts after Ray: the embedded S3 server (idempotent)."""
    from storage import SeaweedServer

    SeaweedServer(state_dir).start()


def stop_services(state_dir: Path) -> None:
    """Stop what :func:`start_services` started (called by ``down`` before Ray stops)."""
    from storage import SeaweedServer

    SeaweedServer(state_dir).stop()


@dataclass(frozen=True, slots=True)
class DCStatus:
    """One DC as Ray sees it: used / total CPUs and accelerators."""

    dc: str
    node_id: str
    alive: bool
    head: bool
    cpus_used: float
    cpus_total: float
    accel: str
    accel_used: float
    accel_total: float


@dataclass(frozen=True, slots=True)
class NetworkStatus:
    running: bool
    dashboard_url: str
    address: str
    dcs: tuple[DCStatus, ...] = ()
    missing: tuple[str, ...] = ()
    rss_bytes: int = 0
    exports: tuple[str, ...] = field(default_factory=tuple)


class _NodeRecord(BaseModel):
    """One node ``up`` started: its DC, the process group of its ``ray start``, its log."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    dc: str
    pgid: int
    log: str


class _RayState(BaseModel):
    """``<state>/ray.json``: the nodes ``up`` started and the id their processes carry."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    nodes: tuple[_NodeRecord, ...] = ()
    address: str | None = None
    dashboard_url: str | None = None
    network_id: str | None = None
    serve_url: str | None = None


def recorded_serve_url(state_dir: Path | str) -> str:
    """The Serve ingress of the single-cluster network ``up`` recorded in ``state_dir`` ("" if none)."""
    try:
        return _RayState.model_validate_json((Path(state_dir) / "ray.json").read_bytes()).serve_url or ""
    except (OSError, ValueError):
        return ""


def _private_dir(path: Path) -> bool:
    """A real directory (not a link) owned by this user that no one else can read or write."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


RAY_START = Path(__file__).with_name("ray_start.py")  # `ray start` without the dashboard modules we never use


def _ray_start() -> list[str]:
    return [sys.executable, str(RAY_START), "start"]


class LocalNetwork:
    """A real multi-node Ray cluster standing in for the national network.

    ``state_dir`` holds the token, the recorded process groups and the logs.
    ``ports`` overrides the profile's fixed ports (tests pass free ones).
    """

    def __init__(self, state_dir: Path | str, profile: LocalProfile, *, ports: Ports | None = None,
                 workdir: Path | str | None = None, services: bool = True) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.profile = profile if ports is None else profile.with_ports(ports)
        if len(self.profile.clusters) > 1:
            raise ClusterError(f"A LocalNetwork is one Ray cluster; the profile has "
                               f"{list(self.profile.cluster_names)}. To fix: use LocalFederation, or "
                               "profile.cluster(name) / profile.as_one_cluster().")
        self.services = services  # the embedded S3 server (a federation runs one for all its clusters)
        # Ray processes (and so job entrypoints without a working_dir) run here.
        self.workdir = Path(workdir or Path.cwd()).resolve()

    # -- addresses and auth -------------------------------------------------
    @property
    def address(self) -> str:
        """The GCS address, for ``ray.init(address=...)``."""
        return f"{self.profile.head_ip}:{self.profile.ports.gcs}"

    @property
    def dashboard_url(self) -> str:
        """The dashboard and Jobs API, for ``JobSubmissionClient`` and ``ray job submit``."""
        return f"http://{self.profile.host}:{self.profile.ports.dashboard}"

    @property
    def serve_url(self) -> str:
        """Where Ray Serve's HTTP ingress listens once a service is deployed (westflow passes it to Serve)."""
        return f"http://{self.profile.host}:{self.profile.ports.serve}"

    @property
    def token_path(self) -> Path:
        return self.state_dir / auth.TOKEN_FILE

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for Ray clients (CLI, subprocesses): token auth on, address set."""
        env = auth.client_env(self.state_dir, base)
        env["RAY_ADDRESS"] = self.dashboard_url
        return env

    def export_lines(self) -> list[str]:
        return auth.export_lines(self.state_dir, self.dashboard_url)

    def job_client(self) -> Any:
        """An authenticated ``ray.job_submission.JobSubmissionClient`` for this network."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url, headers=auth.auth_headers(self.state_dir))

    def reader(self) -> DashboardReader:
        """A capacity reader over the dashboard API (no Ray driver needed)."""
        return DashboardReader(self.dashboard_url, auth.read_token(self.state_dir))

    def init_driver(self, **kwargs: Any) -> Any:
        """``ray.init`` this process as a driver of the network, with token auth."""
        import ray

        auth.enable_in_process(self.state_dir)
        return ray.init(address=self.address, **kwargs)

    # -- state --------------------------------------------------------------
    def _state(self) -> _RayState:
        """What ``ray.json`` records; nothing (so nothing to stop) if it is missing or malformed."""
        try:
            return _RayState.model_validate_json((self.state_dir / STATE_FILE).read_bytes())
        except (OSError, ValueError, ValidationError):
            return _RayState()

    def _save(self, state: _RayState) -> None:
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(state.model_dump_json(indent=2))
        tmp.replace(self.state_dir / STATE_FILE)

    def _temp_dir(self, *, create: bool = False) -> Path:
        """Ray's temp dir; short, because Ray's unix socket paths must fit 107 bytes.

        Under the state dir when its path is short. Else ``r`` inside a private dir made by ``mkdtemp``
        (a random name, mode 0700: another local user cannot pre-create it or enter it; Ray itself makes
        its own temp dir 0777, so the privacy is the parent's), recorded as the symlink
        ``<state>/ray-session``. A recorded dir that is not private to this user is never used.
        """
        inside = self.state_dir / "ray-session"  # not "ray": a job's cwd must not shadow the package
        if len(str(inside)) <= 40:
            return inside
        if inside.is_symlink():
            private = Path(os.readlink(inside))
            if _private_dir(private) or not create:
                return private / "r"
            inside.unlink()
        elif inside.exists() or not create:
            return inside
        self.state_dir.mkdir(parents=True, exist_ok=True)
        private = Path(tempfile.mkdtemp(prefix="wf-"))
        inside.symlink_to(private)  # so the session logs are still found under the state dir
        return private / "r"

    @property
    def session_dir(self) -> Path:
        """Ray's temp dir of this network (its ``session_*/logs``): see :meth:`_temp_dir`."""
        return self._temp_dir()

    def remove_session_dir(self) -> None:
        """Delete Ray's private temp dir of a stopped network (logs included) and its link in the state dir."""
        if self.is_up():
            raise ClusterError(f"The local network in {str(self.state_dir)!r} is running; stop it first.")
        inside = self.state_dir / "ray-session"
        if inside.is_symlink():
            private = Path(os.readlink(inside))
            if _private_dir(private):
                shutil.rmtree(private, ignore_errors=True)
            inside.unlink()
        elif inside.is_dir():
            shutil.rmtree(inside, ignore_errors=True)

    def _marker(self, state: _RayState | None = None) -> procs.Marker | None:
        """The environment entry that proves a process belongs to this network (None: nothing recorded)."""
        network_id = (state or self._state()).network_id
        return (ENV_NETWORK_ID, network_id) if network_id else None

    def recorded(self) -> dict[str, int]:
        """DC -> process group id of each node ``up`` started that still has a live process of ours."""
        state = self._state()
        marker = self._marker(state)
        if marker is None:
            return {}
        return {n.dc: n.pgid for n in state.nodes if procs.members(n.pgid, marker, files_under=self._temp_dir())}

    def pids(self) -> list[int]:
        marker = self._marker()
        if marker is None:
            return []
        return [p for g in self.recorded().values() for p in procs.members(g, marker, files_under=self._temp_dir())]

    def _kill(self, pgids: list[int], sig: signal.Signals = signal.SIGTERM, dc: str | None = None) -> None:
        """Signal the processes of ``pgids`` that are provably this network's (none if it has no id):
        they carry its id, or write their logs under its Ray session dir; with ``dc``, also that DC's
        processes outside the groups (its Ray workers and job drivers)."""
        marker = self._marker()
        if marker is not None and pgids:
            procs.kill_members(pgids, marker, files_under=self._temp_dir(), sig=sig,
                               also=(ENV_DC, dc) if dc else None)

    def rss_bytes(self) -> int:
        """Resident memory of every process of the network (sum over processes)."""
        return procs.rss_bytes(self.pids())

    def worker_pids(self) -> list[int]:
        """The network's Ray workers, outside its nodes' process groups: job drivers and supervisors, tasks,
        actors (the live services' Serve controller, proxy and replicas)."""
        marker = self._marker()
        if marker is None:
            return []
        nodes = set(self.pids())
        return [p for p in procs.carrying(marker) if p not in nodes]

    def pss_bytes(self) -> int:
        """Memory of every process of the network, pages shared between them counted once."""
        return procs.pss_bytes(self.pids())

    def is_up(self) -> bool:
        head = self.profile.dc_ids[0]
        return head in self.recorded()

    # -- up / down ----------------------------------------------------------
    def _start_node(self, dc: str, head: bool, env: dict[str, str], temp: Path) -> tuple[subprocess.Popen[bytes], Path]:
        p = self.profile
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"ray-start-{dc}.log"
        cmd = [*_ray_start(), f"--node-ip-address={p.node_ip(dc)}", f"--temp-dir={temp}",
               f"--object-store-memory={p.object_store_mb * 10**6}", "--disable-usage-stats",
               f"--dashboard-agent-listen-port={free_port()}", *p.tags(dc).ray_start_args()]
        if head:
            cmd += ["--head", f"--port={p.ports.gcs}", "--include-dashboard=true",
                    f"--dashboard-host={p.host}", f"--dashboard-port={p.ports.dashboard}",
                    f"--ray-client-server-port={p.ports.client_server}"]
        else:
            # One log monitor per host: all nodes here share the session's log dir.
            cmd += [f"--address={self.address}", "--include-log-monitor=False"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    env={**env, ENV_DC: dc, ENV_NODE_IP: p.node_ip(dc),
                                         ENV_NETWORK_ID: self._state().network_id or ""},
                                    start_new_session=True, cwd=self.workdir)
        return proc, log

    def _wait_started(self, started: list[tuple[str, subprocess.Popen[bytes], Path]], timeout_s: float) -> None:
        state = self._state()
        done = {dc for dc, _, _ in started}
        nodes = [n for n in state.nodes if n.dc not in done] + [
            _NodeRecord(dc=dc, pgid=proc.pid, log=str(log)) for dc, proc, log in started]
        # Recorded before waiting, so `down` finds even a node that failed to join.
        self._save(state.model_copy(update={"nodes": tuple(nodes)}))
        for dc, proc, log in started:
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                rc = -1
            if rc != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise ClusterError(f"`ray start` for DC {dc!r} failed (exit {rc}); log {log}:\n{tail}")

    def up(self, *, timeout_s: float = 180.0) -> NetworkStatus:
        """Start what is not running (idempotent) and wait until every DC's node is alive."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        auth.ensure_token(self.state_dir)
        env = self.client_env()
        env.pop("RAY_ADDRESS", None)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # A node whose head is gone (its GCS killed) exits after this long instead of Ray's 60 s, taking its
        # jobs with it: a step that failed over to another cluster leaves no twin running here.
        env["RAY_gcs_rpc_server_reconnect_timeout_s"] = str(GCS_RECONNECT_S)
        env["RAY_health_check_period_ms"] = str(HEALTH_CHECK_PERIOD_MS)
        env["RAY_health_check_failure_threshold"] = str(HEALTH_CHECK_FAILURES)
        # Two malloc arenas per process, not 8 per core: the many threads of Ray's Python daemons
        # (dashboard, agents) otherwise hold hundreds of MB of mostly empty arenas (the 4 GiB budget).
        env.setdefault("MALLOC_ARENA_MAX", "2")
        # Job entrypoints (`python ...`) resolve to this interpreter, which has ray and westflow.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        temp = self._temp_dir(create=True)
        temp.mkdir(parents=True, exist_ok=True)
        running = self.recorded()
        head = self.profile.dc_ids[0]
        if head not in running:
            if running:
                self._kill(list(running.values()))
            self._save(_RayState(address=self.address, dashboard_url=self.dashboard_url, serve_url=self.serve_url,
                                 network_id=secrets.token_hex(16)))
            proc, log = self._start_node(head, True, env, temp)
            self._wait_started([(head, proc, log)], timeout_s)
            running = {head: proc.pid}
        live = {n.dc for n in self._views(allow_down=True) if n.alive}
        todo = [d for d in self.profile.dc_ids if d not in running or d not in live]
        todo = [d for d in todo if d != head]
        for d in todo:
            if d in running:
                self._kill([running[d]])
        for i in range(0, len(todo), START_BATCH):
            batch = [(d, *self._start_node(d, False, env, temp)) for d in todo[i:i + START_BATCH]]
            self._wait_started(batch, timeout_s)
        self._wait_alive(timeout_s)
        if self.services:
            start_services(self.state_dir)
        return self.status()

    def _views(self, *, allow_down: bool = False) -> list[NodeView]:
        try:
            return self.reader().nodes()
        except ClusterError:
            if allow_down:
                return []
            raise

    def _wait_alive(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        want = set(self.profile.dc_ids)
        have: set[str | None] = set()
        while time.monotonic() < deadline:
            have = {n.dc for n in self._views(allow_down=True) if n.alive}
            if want <= have:
                return
            time.sleep(0.5)
        raise ClusterError(f"Ray nodes of {sorted(want - have)} did not join within {timeout_s:g} s; "
                           f"see logs in {self.state_dir / 'logs'}.")

    def stop_node(self, dc: str, *, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop one DC's node (its process group), as if the site went dark.

        ``sig``: SIGTERM (default; what is left after a grace period is killed) or SIGKILL (at once: a crash,
        no process of the node gets to clean up or tell the GCS). Ray runs each worker and job driver in a
        process group of its own; they carry the node's DC in their environment and go with it (a SIGKILL of
        the group alone left them running: a "lost" DC finished its job).
        """
        group = self.recorded().get(dc)
        if group is None:
            raise ClusterError(f"No running node recorded for DC {dc!r}; running: {sorted(self.recorded())}.")
        self._kill([group], sig, dc)

    def down(self) -> list[str]:
        """Stop exactly the nodes ``up`` recorded (workers first); return their DCs."""
        if self.services:
            stop_services(self.state_dir)
        running = self.recorded()
        head = self.profile.dc_ids[0]
        workers = [g for d, g in running.items() if d != head]
        self._kill(workers)
        if head in running:
            self._kill([running[head]])
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        return sorted(running)

    # -- status -------------------------------------------------------------
    def status(self) -> NetworkStatus:
        """Per DC used/total CPUs and accelerators, read from Ray."""
        base = dict(dashboard_url=self.dashboard_url, address=self.address, exports=tuple(self.export_lines()))
        if not self.recorded():
            return NetworkStatus(running=False, missing=self.profile.dc_ids, **base)  # type: ignore[arg-type]
        rows = []
        for n in sorted(self._views(), key=lambda v: (not v.is_head, str(v.dc))):
            if n.dc is None:
                continue
            key = GPU if n.total.get(GPU) else NPU if n.total.get(NPU) else ""
            gpu, npu = n.total.get(GPU, 0.0), n.total.get(NPU, 0.0)
            accel = " + ".join(x for x, c in ((GPU, gpu), (NPU, npu)) if c) or "-"
            used = n.used(GPU) + n.used(NPU) if key else 0.0
            rows.append(DCStatus(n.dc, n.node_id, n.alive, n.is_head, n.used("CPU"), n.total.get("CPU", 0.0),
                                 accel, used, gpu + npu))
        alive = {r.dc for r in rows if r.alive}
        missing = tuple(d for d in self.profile.dc_ids if d not in alive)
        return NetworkStatus(running=True, dcs=tuple(rows), missing=missing, rss_bytes=self.rss_bytes(),
                             **base)  # type: ignore[arg-type]
