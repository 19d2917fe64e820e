"""The national network as frozen value objects: data centers, cities, tiers.

Objects here are built only by :mod:`westflow.config` after validation; nothing
downstream reads a raw dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from westflow.latency import LatencyModel
from westflow.tariffs import Tariff

__all__ = [
    "Region",
    "Family",
    "AcceleratorPool",
    "DataCenter",
    "City",
    "Tier",
    "Transfer",
    "PolicyWeights",
    "Network",
    "TokenSource",
    "RayCluster",
    "REALTIME",
    "BATCH",
]

REALTIME = "realtime"
BATCH = "batch"


class Region(StrEnum):
    EAST = "east"
    WEST = "west"


class Family(StrEnum):
    """Accelerator software family. ``any`` and ``cpu`` only appear in requests."""

    CUDA = "cuda"
    CANN = "cann"
    CPU = "cpu"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class AcceleratorPool:
    family: Family
    model: str
    count: int
    watts: float
    per_node: int = 8


@dataclass(frozen=True, slots=True)
class DataCenter:
    id: str
    name: str
    hub: str
    region: Region
    lat: float
    lon: float
    pue: float
    price_cny_kwh: float
    ray_cluster: str
    pools: tuple[AcceleratorPool, ...]
    cpus: int
    memory_gb: float
    cpu_watts: float
    utilisation_baseline: float
    utilisation_target: float
    tariff: Tariff | None = None  # time-of-use prices; None: price_cny_kwh at every hour

    @property
    def families(self) -> frozenset[Family]:
        return frozenset(p.family for p in self.pools)

    @property
    def accelerator_total(self) -> int:
        return sum(p.count for p in self.pools)


@dataclass(frozen=True, slots=True)
class TokenSource:
    """Where a Ray cluster's auth token comes from, never the token itself: exactly one of an environment
    variable, a file, or a Kubernetes Secret (``secret``/``key``, for the rendered manifests)."""

    env: str | None = None
    file: str | None = None
    secret: str | None = None
    key: str = "auth_token"

    def describe(self) -> str:
        if self.env:
            return f"${self.env}"
        if self.file:
            return f"file {self.file}"
        return f"Secret {self.secret}/{self.key}"


@dataclass(frozen=True, slots=True)
class RayCluster:
    """One independent Ray cluster (its own head, GCS, Jobs API and token) and how to reach it.

    ``dashboard_url`` is its dashboard / Jobs API (``http(s)://host:port``); None means westflow has no
    way to reach it in this deployment (its DCs get no live capacity). ``serve_url`` is its Ray Serve
    HTTP ingress (live services' routes), None if it serves none.
    """

    name: str
    description: str = ""
    dashboard_url: str | None = None
    token: TokenSource | None = None
    serve_url: str | None = None


@dataclass(frozen=True, slots=True)
class City:
    id: str
    name: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Tier:
    """A latency tier: ``max_rtt_ms`` of None means no bound. A placement is eligible at an RTT of
    at most :attr:`limit_ms`: the bound less ``guard_band_ms`` (headroom for an RTT the model gets wrong)."""

    name: str
    max_rtt_ms: float | None
    description: str = ""
    guard_band_ms: float = 0.0

    @property
    def limit_ms(self) -> float | None:
        """The largest RTT eligible in this tier: the bound less the guard band (None: no bound)."""
        return None if self.max_rtt_ms is None else self.max_rtt_ms - self.guard_band_ms

    def admits(self, rtt_ms: float) -> bool:
        """Whether a placement at ``rtt_ms`` is eligible in this tier."""
        limit = self.limit_ms
        return limit is None or rtt_ms <= limit


@dataclass(frozen=True, slots=True)
class Transfer:
    """Inter-region data movement: bandwidth and price."""

    bandwidth_gbps: float
    cost_cny_per_gb: float


@dataclass(frozen=True, slots=True)
class PolicyWeights:
    """Weights of the westflow scoring policy (``configs/policy.yaml``)."""

    fill_bonus: float = 0.15
    hour_value_cny: float = 0.0
    deadline_margin: float = 0.25  # a deferred step keeps this share of its duration spare before its deadline
    max_deferral_hours: float = 48.0  # the furthest ahead a deferred start is looked for


@dataclass(frozen=True)
class Network:
    """The validated inventory, the latency matrix and the policy inputs."""

    data_centers: tuple[DataCenter, ...]
    cities: tuple[City, ...]
    tiers: dict[str, Tier]
    rtt_ms: dict[tuple[str, str], float]
    transfer: dict[tuple[Region, Region], Transfer]
    weights: PolicyWeights = field(default_factory=PolicyWeights)
    source: str = ""
    clusters: tuple[RayCluster, ...] = ()
    latency: LatencyModel = field(default_factory=LatencyModel)

    def __hash__(self) -> int:
        return id(self)

    def dc(self, dc_id: str) -> DataCenter:
        for d in self.data_centers:
            if d.id == dc_id:
                return d
        raise KeyError(dc_id)

    def city(self, city_id: str) -> City:
        for c in self.cities:
            if c.id == city_id:
                return c
        raise KeyError(city_id)

    @property
    def dc_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.data_centers)

    @property
    def city_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.cities)

    def rtt(self, dc_id: str, city_id: str) -> float:
        return self.rtt_ms[(dc_id, city_id)]

    def serves_realtime(self, dc_id: str, tier: str = REALTIME) -> tuple[str, ...]:
        """Cities this DC serves within the bound of ``tier``, less its guard band."""
        t = self.tiers[tier]
        return tuple(c.id for c in self.cities if t.admits(self.rtt_ms[(dc_id, c.id)]))

    def cluster(self, name: str) -> RayCluster:
        """The Ray cluster ``name`` (one without access details if the inventory does not list it)."""
        for c in self.clusters:
            if c.name == name:
                return c
        return RayCluster(name)

    def regrouped(self, groups: dict[str, str], clusters: tuple[RayCluster, ...]) -> Network:
        """This network with DC ``d`` in Ray cluster ``groups[d]`` (others keep theirs) and ``clusters``
        (by name) replacing the inventory's: how a deployment (the local federation) maps onto the inventory."""
        by_name = {c.name: c for c in (*self.clusters, *clusters)}
        dcs = tuple(replace(d, ray_cluster=groups.get(d.id, d.ray_cluster)) for d in self.data_centers)
        used = dict.fromkeys(d.ray_cluster for d in dcs)
        return replace(self, data_centers=dcs, clusters=tuple(by_name[n] if n in by_name else RayCluster(n)
                                                               for n in used))

    def ray_clusters(self) -> dict[str, tuple[DataCenter, ...]]:
        out: dict[str, list[DataCenter]] = {}
        for d in self.data_centers:
            out.setdefault(d.ray_cluster, []).append(d)
        return {k: tuple(v) for k, v in out.items()}
