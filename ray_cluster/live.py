"""Live capacity: what each data center's Ray nodes have free right now.

Two readers return the same :class:`NodeView` list, so :func:`snapshot` (pure)
turns either into the :data:`~westflow.capacity.Capacity` mapping that
``place()`` takes, and :func:`usage` into each DC's totals and use (the capacity
model's :class:`~westflow.capacity.DCUsage`, for the utilisation report):

- :class:`DriverReader` inside a Ray driver or task (``ray.nodes()`` plus the
  GCS's per-node available resources; fresh to about a second);
- :class:`DashboardReader` from outside (Dagster, scripts): the dashboard REST
  API with the token (``/api/v0/nodes`` for nodes and labels,
  ``/api/cluster_status`` for per-node usage; the usage lags by the autoscaler
  monitor's update interval, about 5 s).

A DC whose node is gone is absent from the snapshot, so placement reports it
``unavailable``. :func:`where_am_i` tells code inside a Ray task its DC.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from westflow.capacity import DCCapacity, DCUsage, Resources, capacity_of, utilisation
from westflow.errors import ClusterError
from westflow.inventory import Family, Network
from westflow.tags import ENV_DC, ENV_NODE_IP, GPU, NPU, accelerator_type_resource, dc_of_labels, dc_of_resources

__all__ = ["NodeView", "CapacityReader", "DriverReader", "DashboardReader", "snapshot", "usage",
           "live_capacity", "capacity_and_totals", "where_am_i", "init_here"]


@dataclass(frozen=True, slots=True)
class NodeView:
    """One Ray node as read from the cluster: totals, what is still available, labels."""

    node_id: str
    alive: bool
    total: dict[str, float]
    available: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)
    is_head: bool = False

    @property
    def dc(self) -> str | None:
        return dc_of_labels(self.labels) or dc_of_resources(self.total)

    def used(self, resource: str) -> float:
        return self.total.get(resource, 0.0) - self.available.get(resource, 0.0)


class CapacityReader(Protocol):
    def nodes(self) -> list[NodeView]: ...


def _family_key(family: Family) -> str:
    return GPU if family is Family.CUDA else NPU


def _by_dc(network: Network, nodes: Iterable[NodeView]) -> dict[str, list[NodeView]]:
    by_dc: dict[str, list[NodeView]] = {}
    for n in nodes:
        if n.alive and n.dc in network.dc_ids:
            by_dc.setdefault(str(n.dc), []).append(n)
    return by_dc


def _amounts(views: list[NodeView], accelerators: Mapping[str, tuple[str, list[NodeView]]]) -> DCUsage:
    """Totals and use of ``views`` in the capacity model's terms; ``accelerators`` names each
    accelerator entry and says which Ray resource of which nodes it counts."""
    def amount(of: Callable[[NodeView, str], float]) -> Resources:
        return Resources({name: sum(of(v, key) for v in have) for name, (key, have) in accelerators.items()},
                         sum(of(v, "CPU") for v in views), sum(of(v, "memory") for v in views) / 2**30)

    return DCUsage(amount(lambda v, k: v.total.get(k, 0.0)), amount(NodeView.used))


def usage(network: Network, nodes: Iterable[NodeView]) -> dict[str, DCUsage]:
    """Per DC with a live node: Ray's accelerators (``GPU``, ``NPU``), CPUs and memory, total and used.

    What :func:`westflow.capacity.utilisation` and the utilisation report read.
    """
    return {dc: _amounts(views, {k: (k, views) for k in (GPU, NPU)}) for dc, views in _by_dc(network, nodes).items()}


def snapshot(network: Network, nodes: Iterable[NodeView]) -> dict[str, DCCapacity]:
    """Aggregate live nodes per DC into DCCapacity; DCs without a live node are absent.

    ``free[model]`` is the free count of the model's family (GPU or NPU) on the
    DC's nodes that advertise ``accelerator_type:<model>``; two models of one
    family on one node share that count, as Ray's GPU resource does. The
    utilisation is that of Ray's accelerators (:func:`usage`).
    """
    out: dict[str, DCCapacity] = {}
    for dc_id, views in _by_dc(network, nodes).items():
        pools: dict[str, tuple[str, list[NodeView]]] = {}
        for pool in network.dc(dc_id).pools:
            tag = accelerator_type_resource(pool.model)
            have = [v for v in views if tag in v.total]
            if have:
                pools[pool.model] = (_family_key(pool.family), have)
        per_model, ray = _amounts(views, pools), _amounts(views, {k: (k, views) for k in (GPU, NPU)})
        out[dc_id] = capacity_of(per_model.total, per_model.used, share=utilisation(ray.total, ray.used))
    return out


def live_capacity(network: Network, reader: CapacityReader) -> dict[str, DCCapacity]:
    """The capacity snapshot of the running cluster, ready for ``place()``."""
    return snapshot(network, reader.nodes())


def capacity_and_totals(network: Network, reader: CapacityReader) -> tuple[dict[str, DCCapacity],
                                                                            dict[str, DCCapacity]]:
    """What is free per live DC, and what each would have free if empty (one read of the nodes):
    the ``capacity`` and ``totals`` that :meth:`ray_cluster.reservations.Reservations.reserve` takes."""
    nodes = reader.nodes()
    return snapshot(network, nodes), snapshot(network, [replace(n, available=dict(n.total)) for n in nodes])


class DriverReader:
    """Reads nodes through the connected Ray driver (``ray.init`` done by the caller)."""

    def nodes(self) -> list[NodeView]:
        import ray
        from ray._private import state  # DeveloperAPI: per-node available resources from the GCS

        avail = state.available_resources_per_node()
        out = []
        for n in ray.nodes():
            nid = n["NodeID"]
            out.append(NodeView(nid, bool(n["Alive"]), dict(n["Resources"]), dict(avail.get(nid, {})),
                                dict(n.get("Labels") or {})))
        return out


class DashboardReader:
    """Reads nodes through the dashboard REST API with the token; no Ray driver needed."""

    def __init__(self, dashboard_url: str, token: str | None, *, timeout_s: float = 10.0) -> None:
        self.url = dashboard_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def get(self, path: str) -> Any:
        """GET ``path`` as JSON; ClusterError on refusal or no answer."""
        req = urllib.request.Request(self.url + path)
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ClusterError(f"Ray dashboard {self.url} refused GET {path}: HTTP {exc.code}. "
                               "To fix: check the token (RAY_AUTH_TOKEN_PATH).") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ClusterError(f"Ray dashboard {self.url} did not answer GET {path}: {exc}. "
                               "To fix: start the network with `westflow up`.") from None

    def nodes(self) -> list[NodeView]:
        # The State API keeps resource names as Ray spells them; the node summary
        # and cluster status camelCase them (accelerator_type:X -> acceleratorType:X).
        rows = self.get("/api/v0/nodes?detail=1&limit=10000")["data"]["result"]["result"]
        status = self.get("/api/cluster_status?format=0")["data"]["clusterStatus"]
        usage: dict[str, dict[str, list[float]]] = (status or {}).get("loadMetricsReport", {}).get(
            "usageByNode") or {}
        out = []
        for r in rows:
            nid = r["node_id"]
            total = {k: float(v) for k, v in (r.get("resources_total") or {}).items()}
            node_usage = usage.get(nid, {})
            used = {k: float((node_usage.get(k) or node_usage.get(_camel(k)) or [0.0])[0]) for k in total}
            avail = {k: v - used[k] for k, v in total.items()}
            out.append(NodeView(nid, r.get("state") == "ALIVE", total, avail, dict(r.get("labels") or {}),
                                bool(r.get("is_head_node"))))
        return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def init_here(**kwargs: Any) -> Any:
    """``ray.init`` a job's driver on the raylet of the node it runs on.

    On one host Ray attaches a driver to the head's raylet unless told its node's IP;
    each local node passes its own in ``WESTFLOW_NODE_IP``. Elsewhere this is ``ray.init``.
    """
    import ray

    ip = os.environ.get(ENV_NODE_IP)
    options: dict[str, Any] = {"_node_ip_address": ip} if ip else {}
    return ray.init(**options, **kwargs)


def where_am_i() -> str:
    """The DC id of the node this Ray task or job runs on.

    Read from ``WESTFLOW_DC`` (set on each DC's node processes, so it is exact for
    job entrypoints too), else the node's labels, else its ``dc:<id>`` resource.
    """
    env = os.environ.get(ENV_DC)
    if env:
        return env
    import ray

    ctx = ray.get_runtime_context()
    labels = ctx.get_node_labels()
    dc = dc_of_labels({k: str(v) for k, v in labels.items()})
    if dc:
        return dc
    node_id = ctx.get_node_id()
    for n in ray.nodes():
        if n["NodeID"] == node_id:
            found = dc_of_resources(n["Resources"])
            if found:
                return found
    raise ClusterError(f"Ray node {node_id} advertises no westflow DC (no label or dc:<id> resource).")
