"""Live services over the federation: deploy, watch, move when a serving DC is lost.

:class:`Services` places each city's replicas (:func:`westflow.service.plan_city`),
deploys one Ray Serve application per (service, city) on the cluster of the DC
chosen, pinned there by the same resources as jobs (``dc:<id>``, ``rt:<city>``),
with the route ``/<service>/<city>`` on that cluster's HTTP ingress; and records
every route in ``<state_dir>/services.json`` (the source of each cluster's whole
Serve config, written under a lock so two deployers never lose each other's
applications).

- :meth:`Services.deploy` deploys or updates a service. A city whose DC is alive
  keeps it (a new model version is a rolling update in place, not a move).
- :meth:`Services.status` reads each route's health from Serve and Ray: which DC
  each replica runs in, as Ray reports its node.
- :meth:`Services.reconcile` moves the routes whose DC is lost to another DC
  within the city's bound; a city no DC can take is ``degraded``, with every
  DC's reason; a cluster that came back without its applications (restarted)
  gets them again.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ray_cluster.api_keys import digests, key_of
from ray_cluster.federation import ClusterRead, Federation
from ray_cluster.serve_api import AppView, ServeApi, serve_config
from westflow.capacity import DCCapacity
from westflow.errors import ClusterError
from westflow.inventory import Network
from westflow.service import CityPlan, ServiceSpec, parse_service, plan_city

__all__ = ["Services", "RouteRecord", "ServiceRecord", "RouteHealth", "SERVICES_FILE", "app_name",
           "route_prefix", "IMPORT_PATH",
           "SERVE_URL_ENV", "healthy", "describe"]

SERVICES_FILE = "services.json"
SERVE_URL_ENV = "WESTFLOW_SERVE_URL"  # the Serve ingress of a single cluster given by $WESTFLOW_RAY_ADDRESS
IMPORT_PATH = "jobs.endpoint:build"
PLACED, DEGRADED = "placed", "degraded"


def app_name(service: str, city: str) -> str:
    return f"{service}-{city}"


def route_prefix(service: str, city: str) -> str:
    return f"/{service}/{city}"


class RouteRecord(BaseModel):
    """One city's route as deployed: where its replicas are pinned and how to reach them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    city: str
    state: str  # placed | degraded
    cluster: str = ""
    data_center: str = ""
    rtt_ms: float | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    endpoint: str = ""
    actor_options: dict[str, Any] = {}
    reason: str = ""  # a degraded city: every DC's reason, one per line
    moved_from: tuple[str, ...] = ()  # DCs this route left because they were lost


class ServiceRecord(BaseModel):
    """A service as recorded: its spec, the model version it serves, each city's route."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    spec: dict[str, Any]
    model_version: str
    routes: dict[str, RouteRecord]

    @property
    def name(self) -> str:
        return str(self.spec["name"])


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    services: dict[str, ServiceRecord] = {}


@dataclass(frozen=True, slots=True)
class RouteHealth:
    """One route's health now: Serve's status, and the DC of each running replica as Ray reports its node."""

    service: str
    city: str
    route: RouteRecord
    health: str  # healthy | deploying | unhealthy | degraded | unreachable
    app_status: str
    replica_dcs: tuple[str, ...]
    message: str = ""


class Services:
    """The live services of a federation (see the module doc)."""

    def __init__(self, state_dir: Path | str, federation: Federation, network: Network, *,
                 replica_env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.state_dir = Path(state_dir)
        self.federation = federation
        self.network = federation.grouped(network)
        self.replica_env = dict(replica_env or {"WESTFLOW_STATE_DIR": str(self.state_dir)})
        self._clock = clock

    # -- the record ------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.state_dir / SERVICES_FILE

    @contextmanager
    def _locked(self) -> Iterator[_File]:
        """The record, under an exclusive lock; written back atomically when the block ends without error."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / (SERVICES_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._load()
            yield data
            tmp = self.path.with_name(f"{SERVICES_FILE}.{os.getpid()}.tmp")
            tmp.write_text(data.model_dump_json(indent=2))
            os.replace(tmp, self.path)
        finally:
            os.close(fd)

    def _load(self) -> _File:
        try:
            return _File.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return _File()
        except (ValidationError, ValueError) as exc:
            raise ClusterError(f"The services record {self.path} is unreadable ({str(exc).splitlines()[0]}). "
                               "To fix: remove it and deploy the services again.") from None

    def records(self) -> dict[str, ServiceRecord]:
        return dict(self._load().services)

    def record(self, name: str) -> ServiceRecord:
        got = self._load().services.get(name)
        if got is None:
            raise ClusterError(f"No service {name!r}; deployed: {sorted(self.records()) or 'none'}. "
                               "To fix: deploy it first (`westflow services deploy`).")
        return got

    # -- deploying -------------------------------------------------------------
    def deploy(self, spec: ServiceSpec, model_version: str) -> ServiceRecord:
        """Deploy or update ``spec`` serving ``model_version``; returns its record (routes per city)."""
        caps = self._capacity()
        key_of(self.state_dir, spec.tenant)  # the tenant has a key its clients can use from the start
        with self._locked() as data:
            old = data.services.get(spec.name)
            routes = {}
            for city in spec.cities:
                kept = old.routes.get(city) if old is not None and old.spec == spec.as_dict() else None
                if kept is not None and kept.state == PLACED and _alive(caps, kept.data_center):
                    routes[city] = kept
                else:
                    routes[city] = self._route(spec.name, plan_city(spec, city, self.network, caps), ())
            rec = ServiceRecord(spec=spec.as_dict(), model_version=model_version, routes=routes)
            data.services[spec.name] = rec
            self._apply(data, _clusters(old) | _clusters(rec))
        return rec

    def reconcile(self, name: str) -> ServiceRecord:
        """Move every route of ``name`` whose DC is lost (or that is degraded) to an eligible DC, if any."""
        caps = self._capacity()
        with self._locked() as data:
            old = data.services.get(name)
            if old is None:
                raise ClusterError(f"No service {name!r} to reconcile.")
            spec = parse_service(old.spec, self.network)
            routes = dict(old.routes)
            for city, r in old.routes.items():
                if r.state == PLACED and _alive(caps, r.data_center):
                    continue
                # only the DC just lost is left out: one lost earlier is eligible again once it is back
                gone = (r.data_center,) if r.data_center else ()
                lost = (*r.moved_from, *gone)
                routes[city] = self._route(name, plan_city(spec, city, self.network, caps, exclude=gone), lost)
            rec = old.model_copy(update={"routes": routes})
            data.services[name] = rec
            # a route whose application Serve no longer runs (its cluster restarted) is deployed again
            touched = _clusters(old) | _clusters(rec) if rec != old else self._missing(rec)
            self._apply(data, touched)
        return rec

    def _missing(self, rec: ServiceRecord) -> set[str]:
        """Clusters that should run an application of ``rec`` but whose Serve does not (or cannot say)."""
        out = set()
        for cluster in _clusters(rec):
            member = self.federation.members.get(cluster)
            if member is None:
                continue
            try:
                have = ServeApi(member.access, timeout_s=self.federation.timeout_s * 5).details()
            except ClusterError:
                continue  # unreachable: its DCs are not alive, the routes above have moved
            if any(app_name(rec.name, r.city) not in have for r in rec.routes.values()
                   if r.state == PLACED and r.cluster == cluster):
                out.add(cluster)
        return out

    def push_keys(self) -> None:
        """Send every replica the current key digests (after a key is issued): a config change in place."""
        with self._locked() as data:
            self._apply(data, {r.cluster for rec in data.services.values() for r in rec.routes.values()
                               if r.cluster})

    def remove(self, name: str, *, wait_s: float = 60.0) -> None:
        """Take ``name`` down; returns once Serve runs none of its applications (their replicas, and what they
        held, are released), or raises ClusterError after ``wait_s``."""
        with self._locked() as data:
            old = data.services.pop(name, None)
            if old is None:
                return
            self._apply(data, _clusters(old))
        deadline = self._clock() + wait_s
        for cluster in sorted(_clusters(old)):
            member = self.federation.members.get(cluster)
            if member is None:
                continue
            while True:
                try:
                    left = [a for a in ServeApi(member.access).details() if a.startswith(f"{name}-")]
                except ClusterError:
                    break  # the cluster is gone, and its replicas with it
                if not left:
                    break
                if self._clock() >= deadline:
                    raise ClusterError(f"Serve on {cluster} still runs {left} {wait_s:g} s after service "
                                       f"{name!r} was removed.")
                time.sleep(0.25)

    def _capacity(self) -> dict[str, DCCapacity]:
        caps, _ = self.federation.capacity_and_totals(self.network)
        return caps

    def _route(self, service: str, plan: CityPlan, lost: tuple[str, ...]) -> RouteRecord:
        p = plan.placement
        if p is None or plan.replica_request is None:
            return RouteRecord(city=plan.city, state=DEGRADED, reason=plan.reasons(), moved_from=lost)
        req = plan.replica_request
        opts: dict[str, Any] = {"num_cpus": req.num_cpus, "resources": dict(req.resources)}
        if req.num_gpus:
            opts["num_gpus"] = req.num_gpus
        if req.memory_bytes:
            opts["memory"] = req.memory_bytes
        member = self.federation.members.get(p.ray_cluster)
        serve_url = member.serve_url if member is not None else ""
        if not serve_url:
            raise ClusterError(f"Ray cluster {p.ray_cluster!r} has no Serve ingress known. To fix: give it a "
                               "serve_url in configs/network.yaml (local: ports.serve in configs/local.yaml).")
        return RouteRecord(city=plan.city, state=PLACED, cluster=p.ray_cluster, data_center=p.data_center,
                           rtt_ms=p.rtt_ms, min_replicas=plan.min_replicas, max_replicas=plan.max_replicas,
                           endpoint=serve_url + route_prefix(service, plan.city), actor_options=opts,
                           moved_from=tuple(d for d in lost if d != p.data_center))

    def _apply(self, data: _File, clusters: set[str]) -> None:
        """PUT the whole Serve config of each of ``clusters``: every recorded route placed there."""
        keys = digests(self.state_dir)
        for cluster in sorted(clusters):
            member = self.federation.members.get(cluster)
            if member is None or not member.serve_url:
                continue
            apps = self._applications(data, cluster, keys)
            try:
                ServeApi(member.access).put(serve_config(apps, member.serve_url))
            except ClusterError:
                if any(r.cluster == cluster for rec in data.services.values() for r in rec.routes.values()
                       if r.state == PLACED):
                    raise
                # nothing of ours is routed to an unreachable cluster any more: nothing to take down there

    def applications(self, cluster: str) -> list[dict[str, Any]]:
        """The Serve applications westflow routes to ``cluster`` now (its whole Serve config)."""
        return self._applications(self._load(), cluster, digests(self.state_dir))

    def _applications(self, data: _File, cluster: str, keys: dict[str, str]) -> list[dict[str, Any]]:
        return [self._application(rec, r, keys) for rec in data.services.values() for r in rec.routes.values()
                if r.state == PLACED and r.cluster == cluster]

    def _application(self, rec: ServiceRecord, r: RouteRecord, keys: dict[str, str]) -> dict[str, Any]:
        spec = rec.spec
        return {
            "name": app_name(rec.name, r.city),
            "route_prefix": route_prefix(rec.name, r.city),
            "import_path": IMPORT_PATH,
            "args": {"model": spec["model"], "tenant": spec["tenant"], "city": r.city},
            "runtime_env": {"env_vars": self.replica_env},
            "deployments": [{
                "name": "endpoint",
                "ray_actor_options": r.actor_options,
                "autoscaling_config": {"min_replicas": r.min_replicas, "max_replicas": r.max_replicas,
                                       "target_ongoing_requests": spec["target_ongoing_requests"],
                                       "upscale_delay_s": 2.0, "downscale_delay_s": 30.0},
                "user_config": {"model_version": rec.model_version, "keys": keys},
            }],
        }

    # -- health ------------------------------------------------------------------
    def status(self, name: str | None = None) -> list[RouteHealth]:
        """Every route's health (of ``name``, or of every service), read from Serve and Ray now."""
        recs = [self.record(name)] if name else list(self.records().values())
        reads = self.federation.read()
        views: dict[str, dict[str, AppView] | str] = {}
        out = []
        for rec in recs:
            for city, r in rec.routes.items():
                if r.state != PLACED:
                    out.append(RouteHealth(rec.name, city, r, DEGRADED, "", (), r.reason))
                    continue
                if r.cluster not in views:
                    views[r.cluster] = self._views(r.cluster, reads.get(r.cluster))
                got = views[r.cluster]
                if isinstance(got, str):
                    out.append(RouteHealth(rec.name, city, r, "unreachable", "", (), got))
                    continue
                out.append(_health(rec.name, r, got.get(app_name(rec.name, city)), reads.get(r.cluster)))
        return out

    def _views(self, cluster: str, read: ClusterRead | None) -> dict[str, AppView] | str:
        if read is not None and not read.reachable:
            return f"cluster unreachable: {cluster}: {read.error}"
        try:
            return ServeApi(self.federation.access(cluster), timeout_s=self.federation.timeout_s * 5).details()
        except ClusterError as exc:
            return str(exc).split(" To fix:")[0]

    def wait(self, name: str, ready: Callable[[list[RouteHealth]], bool], *, timeout_s: float = 120.0,
             poll_s: float = 0.5) -> list[RouteHealth]:
        """Poll :meth:`status` until ``ready`` holds; ClusterError naming each route's health if it never does."""
        deadline = self._clock() + timeout_s
        while True:
            got = self.status(name)
            if ready(got):
                return got
            if self._clock() >= deadline:
                lines = "; ".join(f"{h.city}: {h.health} ({h.app_status} {h.message[:200]})" for h in got)
                raise ClusterError(f"Service {name!r} not ready within {timeout_s:g} s: {lines}")
            time.sleep(poll_s)


def healthy(routes: list[RouteHealth]) -> bool:
    """Every placed route serving from its own DC (degraded cities count as settled)."""
    return all(h.health in ("healthy", DEGRADED) for h in routes)


def _health(service: str, r: RouteRecord, app: AppView | None, read: ClusterRead | None) -> RouteHealth:
    if app is None:
        return RouteHealth(service, r.city, r, "deploying", "NOT_STARTED", ())
    dcs = {n.node_id: n.dc or "" for n in (read.nodes if read is not None else ())}
    where = tuple(sorted(dcs.get(x.node_id, "?") for x in app.running))
    if app.status == "RUNNING" and where and all(d == r.data_center for d in where):
        state = "healthy"
    elif app.status in ("DEPLOYING", "NOT_STARTED") or (app.status == "RUNNING" and not where):
        state = "deploying"
    else:
        state = "unhealthy"
    return RouteHealth(service, r.city, r, state, app.status, where, app.message)


def _alive(caps: Mapping[str, DCCapacity], dc: str) -> bool:
    c = caps.get(dc)
    return c is not None and c.alive


def _clusters(rec: ServiceRecord | None) -> set[str]:
    return {r.cluster for r in rec.routes.values() if r.cluster} if rec is not None else set()


def describe(routes: list[RouteHealth]) -> list[dict[str, Any]]:
    """Rows for a table or JSON: service, city, health, DC, cluster, RTT, replicas, endpoint."""
    return [{"service": h.service, "city": h.city, "health": h.health, "dc": h.route.data_center,
             "cluster": h.route.cluster, "rtt_ms": h.route.rtt_ms,
             "replicas": f"{len(h.replica_dcs)} ({h.route.min_replicas}-{h.route.max_replicas})",
             "endpoint": h.route.endpoint, "reason": h.message.splitlines()[0] if h.message else ""}
            for h in routes]
