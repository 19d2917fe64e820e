"""Tenants of the shared network: quotas, cohorts, fair-share weights, priority classes (``configs/tenants.yaml``).

The validated configuration of the admission design (issue 14) and its orderings. Pure.

- :class:`Quota`: an amount per accelerator family (optionally per model), CPUs and
  memory; a tenant has one over the whole network and optionally one per region.
- :class:`Tenant`: its quota, the cohort it may borrow in (up to ``borrowing_limit``,
  lending back what it does not use), its fair-share ``weight``, the priority classes
  it may use.
- :func:`dominant_share`: Kueue's and DRF's measure: a tenant's use against its
  nominal quota, on the resource where it is highest, divided by its weight.
- :func:`admission_order`: priority first, then the lowest dominant share, then age.
- :class:`Admission`: the ``admission:`` section (the default ``max_wait``, the controller's
  cycle interval, when an owner is stale, the preemption grace period).

The admission cycle that enforces all this is :mod:`westflow.admission_cycle`.

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
from westflow.spec import DURATION_TEXT, MAX_WAIT_S, duration_seconds

__all__ = ["Quota", "PriorityClass", "Cohort", "Tenant", "Tenants", "Admission", "load_tenants", "parse_tenants",
           "dominant_share", "admission_order", "Pending", "TENANTS_FILE", "CPUS", "MEMORY_GB"]

TENANTS_FILE = "tenants.yaml"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_FAMILIES = (Family.CUDA.value, Family.CANN.value)
CPUS, MEMORY_GB = "cpus", "memory_gb"  # the two dimensions of a quota besides accelerators


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


class _Admission(_Strict):
    default_max_wait: str | float | int = "1h"
    cycle_interval_s: float = Field(default=1.0, gt=0, le=3600)
    stale_after_s: float = Field(default=60.0, gt=0, le=7 * 86400)
    preemption_grace_s: float = Field(default=30.0, ge=0, le=86400)


class _File(_Strict):
    priority_classes: list[_Priority] = Field(min_length=1)
    cohorts: list[_Cohort] = Field(default_factory=list)
    tenants: list[_Tenant] = Field(min_length=1)
    default_tenant: str = "default"
    admission: _Admission = Field(default_factory=_Admission)


@dataclass(frozen=True, slots=True)
class Quota:
    """An amount of the network: accelerators per family or model, CPUs, memory (GB)."""

    accelerators: Mapping[str, int] = field(default_factory=dict)
    cpus: float = 0.0
    memory_gb: float = 0.0
    # the dimensions the file wrote (None: all of them). A region quota limits only what it writes;
    # the network-wide quota limits every dimension (unwritten CPUs or memory are 0).
    written: frozenset[str] | None = None

    def dimensions(self) -> dict[str, float]:
        """Every resource this quota names, as one flat mapping (``cpus``, ``memory_gb``, each family/model)."""
        return {**{k: float(v) for k, v in self.accelerators.items()}, CPUS: self.cpus, MEMORY_GB: self.memory_gb}

    def limits(self) -> dict[str, float]:
        """The dimensions this quota limits: those it wrote (all of :meth:`dimensions` when not known)."""
        dims = self.dimensions()
        return dims if self.written is None else {k: v for k, v in dims.items() if k in self.written}


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
class Admission:
    """The ``admission:`` section: how long a step waits by default, how often the controller cycles,
    when a silent owner is stale, how long a preempted job has to checkpoint."""

    default_max_wait_s: float = 3600.0
    cycle_interval_s: float = 1.0
    stale_after_s: float = 60.0
    preemption_grace_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Tenants:
    """The validated ``tenants.yaml``."""

    tenants: Mapping[str, Tenant]
    priority_classes: Mapping[str, PriorityClass]
    cohorts: Mapping[str, Cohort]
    default_tenant: str
    source: str = ""
    admission: Admission = field(default_factory=Admission)

    def tenant(self, name: str) -> Tenant:
        """``name``'s configuration; a ConfigError naming the known tenants if there is none."""
        got = self.tenants.get(name)
        if got is None:
            raise ConfigError(self.source, "tenant", name, sorted(self.tenants), problem="Unknown",
                              fix=f"add it to {TENANTS_FILE}, or run as one of the tenants above.")
        return got

    def check(self, tenant: str, priority_class: str) -> None:
        """Raise a ConfigError naming the field unless ``tenant`` is configured and may use ``priority_class``."""
        t = self.tenant(tenant)
        if priority_class not in t.priority_classes:
            known = priority_class in self.priority_classes
            raise ConfigError(self.source, "priority_class", priority_class, list(t.priority_classes),
                              problem="Not allowed" if known else "Unknown",
                              fix=f"use one of the priority classes of tenant {tenant!r}, or add {priority_class!r} "
                                  f"to its priority_classes in {TENANTS_FILE}.")

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
    written = frozenset(q.accelerators) | (q.model_fields_set & {CPUS, MEMORY_GB})
    return Quota(dict(q.accelerators), float(q.cpus), float(q.memory_gb), written)


def _admission(a: _Admission, file: str) -> Admission:
    wait = duration_seconds(a.default_max_wait)
    if wait is None:
        raise ConfigError(file, "admission.default_max_wait", a.default_max_wait, DURATION_TEXT)
    if not 0 < wait <= MAX_WAIT_S:
        raise ConfigError(file, "admission.default_max_wait", a.default_max_wait,
                          f"> 0 and <= {MAX_WAIT_S:.0f} s (30 days)", problem="Out of range")
    return Admission(wait, float(a.cycle_interval_s), float(a.stale_after_s), float(a.preemption_grace_s))


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
    return Tenants(tenants, classes, cohorts, f.default_tenant, file, _admission(f.admission, file))


def load_tenants(config_dir: Path | str = CONFIG_DIR, *, models: Iterable[str] = ()) -> Tenants:
    """Read and validate ``<config_dir>/tenants.yaml``."""
    path = Path(config_dir) / TENANTS_FILE
    return parse_tenants(load_yaml(path), models=models, file=str(path))


def dominant_share(used: Mapping[str, float], tenant: Tenant) -> float:
    """The tenant's use on the resource where it is highest against its nominal quota, over its weight.

    ``used`` is charged per dimension: an accelerator's family and its model both (``{"cuda": 8,
    "H800": 8, "cpus": 16, ...}``); only the dimensions the quota names count. A named dimension
    used with a zero quota counts as infinitely shared (it is all borrowed).
    """
    quota = tenant.quota.dimensions()
    worst = 0.0
    for k, q in quota.items():
        n = used.get(k, 0.0)
        if n > 0:
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
