"""Tenants of the shared network: quotas, cohorts, fair-share weights, priority classes (``configs/tenants.yaml``).

The first slice of the admission design (issue 14), pure and not yet enforced: the
validated configuration and the two orderings the admission controller will use.

- :class:`Quota`: an amount per accelerator family (optionally per model), CPUs and
  memory; a tenant has one over the whole network and optionally one per region.
- :class:`Tenant`: its quota, the cohort it may borrow in (up to ``borrowing_limit``,
  lending back what it does not use), its fair-share ``weight``, the priority classes
  it may use.
- :func:`dominant_share`: Kueue's and DRF's measure: a tenant's use against its
  nominal quota, on the resource where it is highest, divided by its weight.
- :func:`admission_order`: priority first, then the lowest dominant share, then age.

Every failure is a :class:`~westflow.errors.ConfigError` naming the file, the field,
the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from westflow.config import CONFIG_DIR, load_yaml, validate_config
from westflow.errors import ConfigError
from westflow.inventory import Family, Region

__all__ = ["Quota", "PriorityClass", "Cohort", "Tenant", "Tenants", "load_tenants", "parse_tenants",
           "dominant_share", "admission_order", "Pending", "TENANTS_FILE"]

TENANTS_FILE = "tenants.yaml"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_FAMILIES = (Family.CUDA.value, Family.CANN.value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class _Quota(_Strict):
    accelerators: dict[str, int] = Field(default_factory=dict)  # family or model -> count
    cpus: float = Field(default=0, ge=0, le=10**7)
    memory_gb: float = Field(default=0, ge=0, le=10**9)


class _Priority(_Strict):
    name: str = Field(pattern=_NAME)
    value: int = Field(ge=-10**6, le=10**6)
    preemptible: bool = False


class _Cohort(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""


class _Tenant(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""
    weight: float = Field(default=1.0, gt=0, le=10**6)
    cohort: str | None = None
    quota: _Quota
    regions: dict[str, _Quota] = Field(default_factory=dict)
    borrowing_limit: _Quota = Field(default_factory=_Quota)
    priority_classes: list[str] = Field(min_length=1)


class _File(_Strict):
    priority_classes: list[_Priority] = Field(min_length=1)
    cohorts: list[_Cohort] = Field(default_factory=list)
    tenants: list[_Tenant] = Field(min_length=1)
    default_tenant: str = "default"


@dataclass(frozen=True, slots=True)
class Quota:
    """An amount of the network: accelerators per family or model, CPUs, memory (GB)."""

    accelerators: Mapping[str, int] = field(default_factory=dict)
    cpus: float = 0.0
    memory_gb: float = 0.0

    def dimensions(self) -> dict[str, float]:
        """Every resource this quota names, as one flat mapping (``cpus``, ``memory_gb``, each family/model)."""
        return {**{k: float(v) for k, v in self.accelerators.items()}, "cpus": self.cpus,
                "memory_gb": self.memory_gb}


@dataclass(frozen=True, slots=True)
class PriorityClass:
    name: str
    value: int
    preemptible: bool = False


@dataclass(frozen=True, slots=True)
class Cohort:
    name: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Tenant:
    """One tenant: its nominal quota (network-wide, and per region), borrowing, weight and priority classes."""

    name: str
    quota: Quota
    weight: float = 1.0
    cohort: str | None = None
    regions: Mapping[str, Quota] = field(default_factory=dict)
    borrowing_limit: Quota = field(default_factory=Quota)
    priority_classes: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class Tenants:
    """The validated ``tenants.yaml``."""

    tenants: Mapping[str, Tenant]
    priority_classes: Mapping[str, PriorityClass]
    cohorts: Mapping[str, Cohort]
    default_tenant: str
    source: str = ""

    def tenant(self, name: str) -> Tenant:
        """``name``'s configuration; a ConfigError naming the known tenants if there is none."""
        got = self.tenants.get(name)
        if got is None:
            raise ConfigError(self.source, "tenant", name, sorted(self.tenants), problem="Unknown",
                              fix=f"add it to {TENANTS_FILE}, or run as one of the tenants above.")
        return got

    def members(self, cohort: str) -> tuple[Tenant, ...]:
        return tuple(t for t in self.tenants.values() if t.cohort == cohort)


def _quota(q: _Quota, file: str, at: str, models: set[str]) -> Quota:
    for key in q.accelerators:
        if key not in _FAMILIES and key not in models:
            raise ConfigError(file, f"{at}.accelerators.{key}", key,
                              [*_FAMILIES, "or an accelerator model of network.yaml"], problem="Unknown")
    for key, n in q.accelerators.items():
        if n < 0:
            raise ConfigError(file, f"{at}.accelerators.{key}", n, ">= 0")
    return Quota(dict(q.accelerators), float(q.cpus), float(q.memory_gb))


def parse_tenants(data: Any, *, models: Iterable[str] = (), file: str = TENANTS_FILE) -> Tenants:
    """Validate loose ``tenants.yaml`` data; ``models`` are the accelerator models a quota may name."""
    f = validate_config(_File, data, file)
    known = set(models)
    classes: dict[str, PriorityClass] = {}
    for i, p in enumerate(f.priority_classes):
        if p.name in classes:
            raise ConfigError(file, f"priority_classes.{i}.name", p.name, "unique", problem="Duplicate")
        classes[p.name] = PriorityClass(p.name, p.value, p.preemptible)
    cohorts: dict[str, Cohort] = {}
    for i, c in enumerate(f.cohorts):
        if c.name in cohorts:
            raise ConfigError(file, f"cohorts.{i}.name", c.name, "unique", problem="Duplicate")
        cohorts[c.name] = Cohort(c.name, c.description)
    regions = [r.value for r in Region]
    tenants: dict[str, Tenant] = {}
    for i, t in enumerate(f.tenants):
        at = f"tenants.{i}"
        if t.name in tenants:
            raise ConfigError(file, f"{at}.name", t.name, "unique", problem="Duplicate")
        if t.cohort is not None and t.cohort not in cohorts:
            raise ConfigError(file, f"{at}.cohort", t.cohort, sorted(cohorts) or ["none declared"],
                              problem="Unknown")
        for j, pc in enumerate(t.priority_classes):
            if pc not in classes:
                raise ConfigError(file, f"{at}.priority_classes.{j}", pc, sorted(classes), problem="Unknown")
        for r in t.regions:
            if r not in regions:
                raise ConfigError(file, f"{at}.regions.{r}", r, regions, problem="Unknown")
        if t.cohort is None and t.borrowing_limit.model_dump() != _Quota().model_dump():
            raise ConfigError(file, f"{at}.borrowing_limit", t.borrowing_limit.model_dump(),
                              "empty unless the tenant is in a cohort (there is no one to borrow from)")
        tenants[t.name] = Tenant(
            t.name, _quota(t.quota, file, f"{at}.quota", known), t.weight, t.cohort,
            {r: _quota(q, file, f"{at}.regions.{r}", known) for r, q in t.regions.items()},
            _quota(t.borrowing_limit, file, f"{at}.borrowing_limit", known), tuple(t.priority_classes),
            t.description)
    if f.default_tenant not in tenants:
        raise ConfigError(file, "default_tenant", f.default_tenant, sorted(tenants), problem="Unknown")
    return Tenants(tenants, classes, cohorts, f.default_tenant, file)


def load_tenants(config_dir: Path | str = CONFIG_DIR, *, models: Iterable[str] = ()) -> Tenants:
    """Read and validate ``<config_dir>/tenants.yaml``."""
    path = Path(config_dir) / TENANTS_FILE
    return parse_tenants(load_yaml(path), models=models, file=str(path))


def dominant_share(used: Mapping[str, float], tenant: Tenant) -> float:
    """The tenant's use on the resource where it is highest against its nominal quota, over its weight.

    A resource the tenant uses but has no quota for counts as infinitely shared (it is all borrowed).
    """
    quota = tenant.quota.dimensions()
    worst = 0.0
    for k, n in used.items():
        if n <= 0:
            continue
        q = quota.get(k, 0.0)
        worst = max(worst, math.inf if q <= 0 else n / q)
    return worst / tenant.weight


@dataclass(frozen=True, slots=True)
class Pending:
    """One workload waiting for admission: its tenant, priority class and when it was submitted."""

    key: str
    tenant: str
    priority_class: str
    submitted_at: float


def admission_order(pending: Sequence[Pending], usage: Mapping[str, Mapping[str, float]],
                    tenants: Tenants) -> list[Pending]:
    """Highest priority first; then the tenant with the lowest dominant share; then the oldest."""

    def key(p: Pending) -> tuple[int, float, float, str]:
        prio = tenants.priority_classes[p.priority_class].value
        share = dominant_share(usage.get(p.tenant, {}), tenants.tenant(p.tenant))
        return (-prio, share, p.submitted_at, p.key)

    return sorted(pending, key=key)
