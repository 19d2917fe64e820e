"""Live real-time services: a model endpoint per city, each city's replicas within its bound.

A :class:`ServiceSpec` is declared like a step (tier ``realtime``, the accelerator,
CPUs and memory of one replica) with one or more origin ``cities`` and min/max
replicas. :func:`plan_service` places each city's replicas in the best DC within
that city's bound (different DCs for different cities when their bounds differ):
the ``min_replicas`` must fit there now; autoscaling may grow up to what the DC's
free capacity allows, never past ``max_replicas``. A city that no DC can take is
*degraded*, with every DC's reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from westflow.capacity import Capacity, DCCapacity, static_capacity
from westflow.errors import InfeasibleError, SpecError
from westflow.inventory import REALTIME, Family, Network
from westflow.placement import place
from westflow.placement.values import Placement, Rejection
from westflow.spec import AcceleratorRequest, WorkloadSpec, parse_spec, read_spec_yaml
from westflow.tags import RayRequest, ray_request

__all__ = ["ServiceSpec", "CityPlan", "parse_service", "load_service", "plan_service", "plan_city", "SERVICE_KEYS",
           "MAX_REPLICAS"]

SERVICE_KEYS = ("name", "tenant", "cities", "model", "accelerator", "cpus", "memory_gb", "min_replicas",
                "max_replicas", "target_ongoing_requests")
MAX_REPLICAS = 64


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A validated service: ``replica`` is one replica's needs as a real-time WorkloadSpec (origin: the first city)."""

    name: str
    tenant: str
    cities: tuple[str, ...]
    model: str
    replica: WorkloadSpec
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0

    def replica_for(self, city: str, replicas: int = 1) -> WorkloadSpec:
        """``replicas`` replicas for ``city``'s users, as one spec (what placement must fit in one DC)."""
        acc = self.replica.accelerator
        return self.replica.copy(name=f"{self.name}-{city}", origin=city,
                                 accelerator=AcceleratorRequest(acc.family, acc.count * replicas, acc.model),
                                 cpus=self.replica.cpus * replicas, memory_gb=self.replica.memory_gb * replicas)

    def as_dict(self) -> dict[str, Any]:
        acc = self.replica.accelerator
        return {"name": self.name, "tenant": self.tenant, "cities": list(self.cities), "model": self.model,
                "accelerator": {"family": acc.family.value, "count": acc.count, "model": acc.model},
                "cpus": self.replica.cpus, "memory_gb": self.replica.memory_gb, "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas, "target_ongoing_requests": self.target_ongoing_requests}


def _bad(source: str | None, field: str, value: Any, allowed: str | list[str], *,
         problem: str = "Invalid") -> SpecError:
    return SpecError(field, value, allowed, problem=problem, source=source)


def _int(field: str, value: Any, low: int, high: int, source: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(source, field, value, f"a whole number from {low} to {high}")
    return value


def parse_service(data: Any, network: Network, *, source: str | None = None) -> ServiceSpec:
    """A service from loose input (a YAML mapping); every error a SpecError naming the field."""
    if not isinstance(data, Mapping):
        raise _bad(source, "<service>", data, "a mapping with keys " + ", ".join(SERVICE_KEYS))
    for k in data:
        if k not in SERVICE_KEYS:
            raise _bad(source, str(k), data[k], list(SERVICE_KEYS), problem="Unknown key")
    for k in ("name", "cities", "model"):
        if k not in data:
            raise _bad(source, k, None, "present", problem="Missing")
    cities = data["cities"]
    if isinstance(cities, str):
        cities = [cities]
    if not isinstance(cities, list | tuple) or not cities:
        raise _bad(source, "cities", cities, "a non-empty list of city ids, e.g. [shanghai, chengdu]")
    for i, c in enumerate(cities):
        if c not in network.city_ids:
            raise _bad(source, f"cities[{i}]", c, list(network.city_ids), problem="Unknown city")
    if len(set(cities)) != len(cities):
        raise _bad(source, "cities", list(cities), "each city once")
    model = data["model"]
    if not isinstance(model, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", model, re.ASCII):
        raise _bad(source, "model", model, "a model name of letters, digits, '_' and '-' (1-63)")
    low = _int("min_replicas", data.get("min_replicas", 1), 1, MAX_REPLICAS, source)
    high = _int("max_replicas", data.get("max_replicas", low), low, MAX_REPLICAS, source)
    target = data.get("target_ongoing_requests", 2.0)
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < float(target) <= 1000:
        raise _bad(source, "target_ongoing_requests", target, "a number in (0, 1000]")
    replica = parse_spec({"name": data["name"], "tenant": data.get("tenant", "default"), "tier": REALTIME,
                          "origin": cities[0], "accelerator": data.get("accelerator", "cpu"),
                          "cpus": data.get("cpus", 1), "memory_gb": data.get("memory_gb", 1)}, network,
                         source=source)
    return ServiceSpec(replica.name, replica.tenant, tuple(cities), model, replica, low, high, float(target))


def load_service(path: Path | str, network: Network) -> ServiceSpec:
    """Read a service YAML file (the same size, alias and duplicate-key limits as a spec)."""
    return parse_service(read_spec_yaml(path), network, source=str(path))


@dataclass(frozen=True, slots=True)
class CityPlan:
    """Where one city's replicas go, or why they cannot (``placement`` None: degraded)."""

    city: str
    placement: Placement | None
    replica_request: RayRequest | None
    min_replicas: int
    max_replicas: int
    rejected: tuple[Rejection, ...]

    @property
    def degraded(self) -> bool:
        return self.placement is None

    def reasons(self) -> str:
        """Every DC's reason, one ``dc: reason: detail`` per line (what a degraded city reports)."""
        return "\n".join(f"{r.data_center}: {r.reason.value}: {r.detail}" for r in self.rejected)


def _fits(free: Mapping[str, int], free_cpus: float, free_memory_gb: float, spec: WorkloadSpec,
          model: str | None) -> int:
    """How many replicas of ``spec`` the free resources hold (CPUs, memory, accelerators of ``model``)."""
    counts = [int(free_cpus // spec.cpus)]
    if spec.memory_gb:
        counts.append(int(free_memory_gb // spec.memory_gb))
    need = spec.accelerator.count
    if need and model:
        counts.append(int(free.get(model, 0) // need))
    return max(0, min(counts))


def plan_city(spec: ServiceSpec, city: str, network: Network, capacity: Capacity | None = None,
              exclude: Iterable[str] = ()) -> CityPlan:
    """Place ``city``'s ``min_replicas`` in one DC within its bound (none of ``exclude``)."""
    out = frozenset(exclude)
    cap = dict(capacity) if capacity is not None else None
    if out:
        cap = dict(cap if cap is not None else static_capacity(network))
        for lost in out:
            if lost in cap:
                cap[lost] = _excluded(cap[lost])
    together = spec.replica_for(city, spec.min_replicas)
    try:
        p = place(together, network, cap)
    except InfeasibleError as exc:
        rejected = tuple(r for r in exc.rejected if isinstance(r, Rejection))
        return CityPlan(city, None, None, spec.min_replicas, spec.max_replicas, rejected)
    one = spec.replica_for(city)
    acc = one.accelerator
    model = p.accelerator_model if p.family is not Family.CPU else None
    request = ray_request(network.dc(p.data_center), family=p.family, model=model,
                          count=acc.count, per_node=max(acc.count, 1), cpus=one.cpus, memory_gb=one.memory_gb,
                          realtime_origin=city)
    high = spec.max_replicas
    if cap is not None and p.data_center in cap:
        c = cap[p.data_center]
        high = max(spec.min_replicas, min(high, _fits(c.free, c.free_cpus, c.free_memory_gb, one,
                                                      p.accelerator_model)))
    return CityPlan(city, p, request, spec.min_replicas, high, tuple(p.rejected))


def _excluded(c: DCCapacity) -> DCCapacity:
    return replace(c, alive=False, why=c.why or "serving DC lost")


def plan_service(spec: ServiceSpec, network: Network, capacity: Capacity | None = None,
                 exclude: Mapping[str, Iterable[str]] | None = None) -> dict[str, CityPlan]:
    """Each city's plan (``exclude``: per city, DCs not to use, e.g. the one just lost)."""
    exclude = exclude or {}
    return {city: plan_city(spec, city, network, capacity, exclude.get(city, ())) for city in spec.cities}
