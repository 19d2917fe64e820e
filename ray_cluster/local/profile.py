"""The local profile (``configs/local.yaml``): which DCs run as Ray nodes here, in which Ray clusters.

Schema first (unknown keys rejected), then cross-checks against the inventory,
then a frozen :class:`LocalProfile`. A profile lists ``clusters`` (each an
independent Ray cluster with its own head, ports and token: the local federation)
or, the single-cluster form, one ``data_centers`` list with top-level ``ports``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from westflow.config import CONFIG_DIR, load_yaml, pydantic_to_fields
from westflow.errors import ConfigError
from westflow.inventory import Network, RayCluster
from westflow.tags import NodeTags, node_tags

__all__ = ["Ports", "LocalDC", "LocalCluster", "LocalProfile", "load_profile", "parse_profile", "LOCAL_FILE",
           "SERVE_PORT"]

LOCAL_FILE = CONFIG_DIR / "local.yaml"
SERVE_PORT = 8000  # the first cluster's Ray Serve HTTP ingress; the next cluster's is 8001, ...


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Ports(_Strict):
    gcs: int = Field(default=6379, ge=1024, le=65535)
    dashboard: int = Field(default=8265, ge=1024, le=65535)
    client_server: int = Field(default=10001, ge=1024, le=65535)
    serve: int | None = Field(default=None, ge=1024, le=65535)  # Serve's HTTP ingress; default 8000 + cluster index


class _Node(_Strict):
    cpus: int = Field(default=2, ge=1, le=64)
    memory_gb: float = Field(default=64, gt=0)
    object_store_mb: int = Field(default=100, ge=80)


class _DC(_Strict):
    id: str
    accelerators: dict[str, int] = Field(default_factory=dict)
    cpus: int | None = Field(default=None, ge=1, le=64)


class _Cluster(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    ports: _Ports
    data_centers: list[_DC] = Field(min_length=1)


class _File(_Strict):
    ray_cluster: str = Field(default="local", pattern=r"^[a-z][a-z0-9_]*$")
    host: str = "127.0.0.1"
    first_node_ip: str = "127.0.0.2"
    ports: _Ports = Field(default_factory=_Ports)
    node: _Node = Field(default_factory=_Node)
    data_centers: list[_DC] | None = Field(default=None, min_length=1)
    clusters: list[_Cluster] | None = Field(default=None, min_length=1)


@dataclass(frozen=True, slots=True)
class Ports:
    """The fixed ports of a local network (the rest are picked free at ``up``)."""

    gcs: int = 6379
    dashboard: int = 8265
    client_server: int = 10001
    serve: int = SERVE_PORT


@dataclass(frozen=True, slots=True)
class LocalDC:
    """One local Ray node: its DC id, logical CPUs and accelerators (model -> count)."""

    id: str
    cpus: int
    accelerators: dict[str, int]


@dataclass(frozen=True, slots=True)
class LocalCluster:
    """One local Ray cluster: its name, fixed ports and DCs (the first hosts its head)."""

    name: str
    ports: Ports
    dc_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LocalProfile:
    """A validated local profile: one Ray cluster (the first DC hosts the head node), or several (``clusters``).

    ``data_centers`` lists every DC, each cluster's together, so node addresses are unique over all
    clusters; :meth:`cluster` gives the single-cluster profile of one of them.
    """

    network: Network
    data_centers: tuple[LocalDC, ...]
    ray_cluster: str = "local"
    host: str = "127.0.0.1"
    first_node_ip: str = "127.0.0.2"
    ports: Ports = Ports()
    memory_gb: float = 64.0
    object_store_mb: int = 100
    clusters: tuple[LocalCluster, ...] = ()

    def __post_init__(self) -> None:
        if not self.clusters:
            object.__setattr__(self, "clusters", (LocalCluster(self.ray_cluster, self.ports, self.dc_ids),))

    @property
    def cluster_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.clusters)

    def cluster_of(self, dc_id: str) -> str:
        """The name of the local Ray cluster ``dc_id`` is in."""
        return next(c.name for c in self.clusters if dc_id in c.dc_ids)

    def cluster(self, name: str) -> LocalProfile:
        """The single-cluster profile of cluster ``name`` (its DCs keep their node addresses)."""
        c = next((x for x in self.clusters if x.name == name), None)
        if c is None:
            raise ConfigError("local profile", "clusters", name, list(self.cluster_names), problem="Unknown")
        first = ipaddress.IPv4Address(self.first_node_ip) + self.dc_ids.index(c.dc_ids[0])
        return replace(self, data_centers=tuple(d for d in self.data_centers if d.id in c.dc_ids),
                       ray_cluster=c.name, first_node_ip=str(first), ports=c.ports,
                       clusters=(LocalCluster(c.name, c.ports, c.dc_ids),))

    def as_one_cluster(self) -> LocalProfile:
        """Every DC in one Ray cluster (the single-cluster option), on the first cluster's ports."""
        return replace(self, ray_cluster=self.ray_cluster if len(self.clusters) == 1 else "local",
                       ports=self.clusters[0].ports, clusters=())

    @property
    def grouped_network(self) -> Network:
        """The inventory with each local DC in its local Ray cluster (what placement names as its cluster)."""
        return self.network.regrouped({d: c.name for c in self.clusters for d in c.dc_ids},
                                      tuple(RayCluster(c.name, f"local Ray cluster {c.name}",
                                                       f"http://{self.host}:{c.ports.dashboard}")
                                            for c in self.clusters))

    @property
    def dc_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.data_centers)

    def node_ip(self, dc_id: str) -> str:
        """The loopback address of ``dc_id``'s Ray node: ``first_node_ip`` plus its index.

        Not 127.0.0.1: ``ray start`` swaps that for the host's interface address
        (``services.resolve_ip_for_localhost``), which would take Ray's traffic off loopback.
        """
        return str(ipaddress.IPv4Address(self.first_node_ip) + self.dc_ids.index(dc_id))

    @property
    def head_ip(self) -> str:
        return self.node_ip(self.dc_ids[0])

    def tags(self, dc_id: str) -> NodeTags:
        """The Ray node settings of ``dc_id`` in this profile."""
        d = next(x for x in self.data_centers if x.id == dc_id)
        return node_tags(self.network.dc(d.id), self.network, num_cpus=d.cpus,
                         accelerators=d.accelerators, memory_bytes=int(self.memory_gb * 2**30))

    def with_ports(self, ports: Ports) -> LocalProfile:
        """A single-cluster profile on ``ports``."""
        return replace(self.as_one_cluster() if len(self.clusters) > 1 else self, ports=ports, clusters=())

    def with_cluster_ports(self, ports: dict[str, Ports]) -> LocalProfile:
        """The same clusters on other fixed ports (tests pass free ones)."""
        return replace(self, clusters=tuple(replace(c, ports=ports.get(c.name, c.ports)) for c in self.clusters))

    def subset(self, dc_ids: tuple[str, ...]) -> LocalProfile:
        """One cluster of only ``dc_ids`` (in that order; the first is the head)."""
        by_id = {d.id: d for d in self.data_centers}
        unknown = [i for i in dc_ids if i not in by_id]
        if unknown:
            raise ConfigError("local profile", "data_centers", unknown, sorted(by_id), problem="Unknown")
        one = self.as_one_cluster()
        return replace(one, data_centers=tuple(by_id[i] for i in dc_ids), clusters=())


def parse_profile(data: Any, network: Network, *, file: str = "local.yaml") -> LocalProfile:
    """Validate raw YAML data against the schema and the inventory."""
    if not isinstance(data, dict):
        raise ConfigError(file, "<root>", data, "a mapping of keys to values")
    try:
        f = _File.model_validate(data)
    except ValidationError as exc:
        field, value, allowed = pydantic_to_fields(exc)
        raise ConfigError(file, field, value, allowed) from None
    if (f.data_centers is None) == (f.clusters is None):
        raise ConfigError(file, "clusters", "both" if f.clusters else "neither",
                          "exactly one of clusters (several Ray clusters) or data_centers (one)")
    if f.clusters is not None:
        names = [c.name for c in f.clusters]
        for j, c in enumerate(f.clusters):
            if names.index(c.name) != j:
                raise ConfigError(file, f"clusters.{j}.name", c.name, "unique", problem="Duplicate")
        used = [(j, k, v) for j, c in enumerate(f.clusters) for k, v in c.ports.model_dump().items() if v is not None]
        seen_ports: set[int] = set()
        for j, k, v in used:
            if v in seen_ports:
                raise ConfigError(file, f"clusters.{j}.ports.{k}", v, "a port no other cluster uses",
                                  problem="Duplicate")
            seen_ports.add(v)
        entries = [(f"clusters.{j}.data_centers.{i}", d) for j, c in enumerate(f.clusters)
                   for i, d in enumerate(c.data_centers)]
    else:
        entries = [(f"data_centers.{i}", d) for i, d in enumerate(f.data_centers or [])]
    dcs: list[LocalDC] = []
    seen: set[str] = set()
    for at, d in entries:
        if d.id not in network.dc_ids:
            raise ConfigError(file, f"{at}.id", d.id, network.dc_ids, problem="Unknown")
        if d.id in seen:
            raise ConfigError(file, f"{at}.id", d.id, "unique", problem="Duplicate")
        seen.add(d.id)
        models = [p.model for p in network.dc(d.id).pools]
        for model, count in d.accelerators.items():
            if model not in models:
                raise ConfigError(file, f"{at}.accelerators", model, models or ["none (CPU only)"],
                                  problem="Unknown", fix=f"declare only models {d.id} has in network.yaml.")
            if count < 0:
                raise ConfigError(file, f"{at}.accelerators.{model}", count, ">= 0")
        dcs.append(LocalDC(d.id, d.cpus or f.node.cpus, dict(d.accelerators)))
    _check_loopback(file, "host", f.host)
    first = _check_loopback(file, "first_node_ip", f.first_node_ip, last_offset=len(dcs) - 1)
    p = f.ports
    clusters = tuple(LocalCluster(c.name, Ports(c.ports.gcs, c.ports.dashboard, c.ports.client_server,
                                                c.ports.serve or SERVE_PORT + j),
                                  tuple(d.id for d in c.data_centers)) for j, c in enumerate(f.clusters or []))
    return LocalProfile(network=network, data_centers=tuple(dcs),
                        ray_cluster=clusters[0].name if clusters else f.ray_cluster, host=f.host,
                        first_node_ip=first,
                        ports=clusters[0].ports if clusters else Ports(p.gcs, p.dashboard, p.client_server,
                                                                       p.serve or SERVE_PORT),
                        memory_gb=f.node.memory_gb, object_store_mb=f.node.object_store_mb, clusters=clusters)


def _check_loopback(file: str, field: str, value: str, *, last_offset: int | None = None) -> str:
    """``value`` as an IPv4 loopback address; node addresses must also avoid 127.0.0.1."""
    allowed = "an IPv4 loopback address (127.0.0.0/8)"
    if last_offset is not None:
        allowed += f" other than 127.0.0.1, with {last_offset} more after it inside 127.0.0.0/8"
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(file, field, value, allowed) from None
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    if ip not in loopback or (last_offset is not None and (
            ip == ipaddress.IPv4Address("127.0.0.1") or ip + last_offset not in loopback)):
        raise ConfigError(file, field, value, allowed)
    return str(ip)


def load_profile(network: Network, path: Path | str = LOCAL_FILE) -> LocalProfile:
    """Read ``configs/local.yaml`` (or ``path``)."""
    return parse_profile(load_yaml(Path(path)), network, file=str(path))
