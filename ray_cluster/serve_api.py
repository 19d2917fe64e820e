"""One Ray cluster's Serve control plane, through its dashboard's REST API with the cluster's token.

westflow owns each cluster's whole Serve config (Serve's declarative API replaces
every application at once): :meth:`ServeApi.put` sends the applications of every
westflow service routed to that cluster, :meth:`ServeApi.details` reads what runs
(application and replica states, each replica's node).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ray_cluster.access import ClusterAccess
from westflow.errors import ClusterError

__all__ = ["ServeApi", "ReplicaView", "AppView", "SERVE_API_PATH", "serve_config"]

SERVE_API_PATH = "/api/serve/applications/"


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as Serve reports it: its state and the Ray node it runs on."""

    replica_id: str
    state: str
    node_id: str


@dataclass(frozen=True, slots=True)
class AppView:
    """One Serve application: its status, Serve's message, and its replicas."""

    name: str
    status: str
    message: str
    route_prefix: str
    replicas: tuple[ReplicaView, ...]

    @property
    def running(self) -> tuple[ReplicaView, ...]:
        return tuple(r for r in self.replicas if r.state == "RUNNING")


def serve_config(apps: Sequence[Mapping[str, Any]], serve_url: str) -> dict[str, Any]:
    """The declarative config of a cluster: its applications, the HTTP ingress at ``serve_url``.

    One proxy, on the head node: the ingress address is fixed per cluster, and the
    proxy reaches each replica wherever placement pinned it.
    """
    url = urllib.parse.urlsplit(serve_url)
    if url.scheme != "http" or not url.hostname or not url.port:
        raise ClusterError(f"Invalid Serve URL {serve_url!r}; must be http://host:port. To fix: set serve_url "
                           "for the cluster in configs/network.yaml (local: ports.serve in configs/local.yaml).")
    http: dict[str, Any] = {"port": url.port}
    if _is_ip(url.hostname):
        http["host"] = url.hostname  # locally 127.0.0.1: the proxy listens there and nowhere else
    # else a Kubernetes Service name (production): Serve's default, the pod's interfaces behind that Service
    return {"proxy_location": "HeadOnly", "http_options": http, "applications": [dict(a) for a in apps]}


def _is_ip(host: str) -> bool:
    return all(p.isdigit() for p in host.split(".")) and host.count(".") == 3


class ServeApi:
    """GET and PUT of one cluster's Serve applications (``timeout_s`` bounds each call)."""

    def __init__(self, access: ClusterAccess, *, timeout_s: float = 30.0) -> None:
        self.access = access
        self.timeout_s = timeout_s

    def _call(self, method: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.access.dashboard_url + SERVE_API_PATH, data=data, method=method,
                                     headers={**self.access.headers(), "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise ClusterError(f"Ray Serve at {self.access.dashboard_url} refused {method} {SERVE_API_PATH}: "
                               f"HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ClusterError(f"Ray Serve at {self.access.dashboard_url} did not answer {method}: {exc}. "
                               "To fix: check that the cluster is up (`westflow status`).") from None
        return json.loads(text) if text else None

    def put(self, config: Mapping[str, Any]) -> None:
        """Make the cluster's Serve applications exactly ``config``'s (Serve rolls each changed one)."""
        self._call("PUT", dict(config))

    def details(self) -> dict[str, AppView]:
        """Every application Serve runs on the cluster now."""
        raw = self._call("GET") or {}
        out = {}
        for name, app in (raw.get("applications") or {}).items():
            replicas = tuple(ReplicaView(str(r.get("replica_id", "")), str(r.get("state", "")),
                                         str(r.get("node_id") or ""))
                             for d in (app.get("deployments") or {}).values() for r in d.get("replicas") or [])
            out[name] = AppView(name, str(app.get("status", "")), str(app.get("message", ""))[:500],
                                str(app.get("route_prefix") or ""), replicas)
        return out
