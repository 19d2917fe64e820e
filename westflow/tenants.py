"""Tenants of the shared network: quotas, cohorts, fair-share weights, priority classes (``configs/tenants.yaml``).

The validated configuration of the admission design (issue 14) and its orderings. Pure.

- :class:`Quota`: an amount per accelerator family (optionally per model), CPUs and
  memory; a tenant has one over the whole network and optionally one per region.
- :class:`Tenant`: its quota, the cohort it may borrow in (up to ``borrowing_limit``,
  lending back what it does not use), its fair-share ``weight``, the priority classes
  it may use.
- :func:`dominant_share`: Kueue's and DRF's measure: a tenant's use against its
  nominal quota, on the resource where it is highest, divided by its weight.
- :func:`admission_order`: priority first, then the lowest dominant share, then urgency (deadline or age).
- :class:`Ledger`: what each tenant uses (network-wide, per region, per cohort) and the quota
  arithmetic on it: does a use fit (nominal, borrowing within the cohort, region caps), how much a
  tenant borrows, its dominant share. The admission cycle, preemption and the simulator's
  accounting all read this one ledger.
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

from westflow.capacity import Resources
from westflow.config import CONFIG_DIR, load_yaml, validate_config
from westflow.errors import ConfigError
from westflow.inventory import Family, Region
from westflow.spec import DURATION_TEXT, MAX_WAIT_S, duration_seconds

__all__ = ["Quota", "PriorityClass", "Cohort", "Tenant", "Tenants", "Admission", "load_tenants", "parse_tenants",
           "dominant_share", "admission_order", "Pending", "Ledger", "charges", "TENANTS_FILE", "CPUS", "MEMORY_GB"]

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
    due_at: float | None = None  # work with a deadline: its latest start (deadline - duration), epoch s
    priority: int = 0  # the spec's priority: a tenant's own order within a class, and ties of share


def admission_order(pending: Sequence[Pending], usage: Mapping[str, Mapping[str, float]],
                    tenants: Tenants) -> list[Pending]:
    """Highest priority class first; then the tenant with the lowest dominant share; then the spec's highest
    ``priority``; then the most urgent (work with a deadline due at its latest start, other work at its
    submission: the oldest first)."""

    def key(p: Pending) -> tuple[int, float, int, float, str]:
        prio = tenants.priority_classes[p.priority_class].value
        share = dominant_share(usage.get(p.tenant, {}), tenants.tenant(p.tenant))
        return (-prio, share, -p.priority, p.submitted_at if p.due_at is None else p.due_at, p.key)

    return sorted(pending, key=key)


# -- the ledger: use per tenant, and the quota arithmetic on it -----------------------------------

_EPS = 1e-9
Charges = dict[str, float]


def charges(family: str | None, resources: Resources) -> Charges:
    """The dimensions a use is charged to: each accelerator's family and model, CPUs, memory."""
    out: Charges = {CPUS: resources.cpus, MEMORY_GB: resources.memory_gb}
    for model, n in resources.accelerators.items():
        if n:
            out[model] = out.get(model, 0.0) + n
            if family:
                out[family] = out.get(family, 0.0) + n
    return out


class _Terms:
    """One tenant's quota terms, flattened once: nominal and borrowing per dimension, region caps."""

    __slots__ = ("name", "nominal", "borrow", "named", "regions", "cohort", "weight")

    def __init__(self, t: Tenant) -> None:
        self.name, self.cohort, self.weight = t.name, t.cohort, t.weight
        self.nominal = t.quota.dimensions()
        self.borrow = t.borrowing_limit.dimensions() if t.cohort else {}
        self.named = frozenset(self.nominal) | frozenset(k for k, v in self.borrow.items() if v > 0)
        self.regions = {r: q.limits() for r, q in t.regions.items()}


class Ledger:
    """What each tenant uses per dimension (see :func:`charges`), network-wide and per region, and what
    each cohort's members use of the dimensions they name; with the quota arithmetic on it.

    A use fits a tenant's quota when, on every dimension it names, it stays within its nominal quota,
    or within nominal + ``borrowing_limit`` while the cohort's members together stay within the
    cohort's nominal total (so a tenant borrows only what the others leave unused); and within every
    region quota of the region it runs in (no borrowing there). An accelerator use must be named by
    the tenant's quota (its family or its model). Changed only by :meth:`add`; :meth:`copy` for a
    scratch copy. ``version[tenant]`` counts the changes of a tenant's use.
    """

    def __init__(self, tenants: Tenants) -> None:
        self.tenants = tenants
        self.terms = {n: _Terms(t) for n, t in tenants.tenants.items()}
        self.used: dict[str, Charges] = {n: {} for n in tenants.tenants}
        self.region_used: dict[tuple[str, str], Charges] = {}
        self.cohort_used: dict[str, Charges] = {c: {} for c in tenants.cohorts}
        self.cohort_nominal: dict[str, Charges] = {c: {} for c in tenants.cohorts}
        for terms in self.terms.values():
            if terms.cohort is not None:
                total = self.cohort_nominal[terms.cohort]
                for k in terms.named:
                    total[k] = total.get(k, 0.0) + terms.nominal.get(k, 0.0)
        self.version: dict[str, int] = dict.fromkeys(tenants.tenants, 0)

    def copy(self) -> Ledger:
        out = Ledger.__new__(Ledger)
        out.tenants, out.terms, out.cohort_nominal = self.tenants, self.terms, self.cohort_nominal
        out.used = {t: dict(c) for t, c in self.used.items()}
        out.region_used = {k: dict(c) for k, c in self.region_used.items()}
        out.cohort_used = {k: dict(c) for k, c in self.cohort_used.items()}
        out.version = dict(self.version)
        return out

    def add(self, tenant: str, region: str, family: str | None, resources: Resources, sign: int = 1) -> None:
        """Count (``sign`` 1) or release (-1) a use of ``resources`` by ``tenant`` in ``region``."""
        terms = self.terms.get(tenant)
        mine = self.used.get(tenant)
        if mine is None:
            mine = self.used[tenant] = {}
        here = self.region_used.get((tenant, region))
        if here is None:
            here = self.region_used[(tenant, region)] = {}
        pool = self.cohort_used[terms.cohort] if terms is not None and terms.cohort is not None else None
        named = terms.named if terms is not None else frozenset()
        items = [(CPUS, resources.cpus), (MEMORY_GB, resources.memory_gb)]
        for model, n in resources.accelerators.items():
            if n:
                items.append((model, n))
                if family:
                    items.append((family, n))
        for k, n in items:
            n *= sign
            mine[k] = mine.get(k, 0.0) + n
            here[k] = here.get(k, 0.0) + n
            if pool is not None and k in named:
                pool[k] = pool.get(k, 0.0) + n
        self.version[tenant] = self.version.get(tenant, 0) + 1

    def share(self, tenant: str, *deltas: Mapping[str, float]) -> float:
        """The tenant's dominant share (:func:`dominant_share`) of what it uses now, plus ``deltas``."""
        terms = self.terms.get(tenant)
        if terms is None:
            return math.inf
        used, worst = self.used.get(tenant, {}), 0.0
        for k, q in terms.nominal.items():
            n = used.get(k, 0.0)
            for d in deltas:
                n += d.get(k, 0.0)
            if n > _EPS:
                x = math.inf if q <= 0 else n / q
                if x > worst:
                    worst = x
        return worst / terms.weight

    def borrowed(self, tenant: str) -> Charges:
        """Per dimension the tenant names, how much of its use is above its nominal quota."""
        terms = self.terms.get(tenant)
        if terms is None:
            return {}
        used = self.used.get(tenant, {})
        return {k: used.get(k, 0.0) - terms.nominal.get(k, 0.0) for k in terms.named
                if used.get(k, 0.0) - terms.nominal.get(k, 0.0) > _EPS}

    def within_nominal(self, tenant: str, use: Charges) -> bool:
        """Whether adding ``use`` keeps the tenant within its nominal quota on every dimension it names."""
        terms = self.terms[tenant]
        used, named, nominal = self.used.get(tenant, {}), terms.named, terms.nominal
        for k, n in use.items():
            if n > 0 and k in named and not used.get(k, 0.0) + n <= nominal.get(k, 0.0) + _EPS:  # (NaN: out)
                return False
        return True

    def over_nominal(self, tenant: str, use: Charges) -> bool:
        """Whether ``use`` would be (partly) borrowed."""
        return not self.within_nominal(tenant, use)

    def misfit(self, tenant: str, use: Charges, family: str | None, model: str | None) -> str:
        """Why ``use`` (of ``model`` of ``family``, or CPUs only) does not fit the tenant's network-wide
        quota; "" if it fits."""
        terms = self.terms[tenant]
        if model is not None and family not in terms.named and model not in terms.named:
            return f"tenant {tenant} has no quota for {family} ({model})"
        for k, n in use.items():
            why = self.over(tenant, k, n)
            if why:
                return why
        return ""

    def over(self, tenant: str, k: str, n: float) -> str:
        """Why ``n`` more of dimension ``k`` does not fit the tenant's network-wide quota ("" if it does,
        or if the quota does not name ``k``): past nominal + borrowing limit, or the cohort has not that
        much unused to lend."""
        terms = self.terms[tenant]
        if n <= 0 or k not in terms.named:
            return ""
        had, nominal = self.used.get(tenant, {}).get(k, 0.0), terms.nominal.get(k, 0.0)
        if had + n <= nominal + _EPS:
            return ""
        limit = terms.borrow.get(k, 0.0)
        cohort = terms.cohort
        if had + n > nominal + limit + _EPS or cohort is None:  # (a borrowing limit only in a cohort)
            return (f"tenant {tenant}: {k} {had:g}/{nominal:g} used, {n:g} asked, may borrow "
                    f"{limit:g}" if limit else f"tenant {tenant}: {k} {had:g}/{nominal:g} used, {n:g} asked")
        pool, total = self.cohort_used[cohort].get(k, 0.0), self.cohort_nominal[cohort].get(k, 0.0)
        if pool + n > total + _EPS:
            return (f"tenant {tenant}: {k} {had:g}/{nominal:g} used, {n:g} asked; cohort {cohort} has "
                    f"{max(0.0, total - pool):g} of {total:g} unused to lend")
        return ""

    def region_over(self, tenant: str, region: str, k: str, n: float) -> str:
        """Why ``n`` more of ``k`` does not fit the tenant's quota in ``region`` ("" if it does, or none
        limits ``k`` there)."""
        limits = self.terms[tenant].regions.get(region)
        if not limits or n <= 0 or k not in limits:
            return ""
        had, cap = self.region_used.get((tenant, region), {}).get(k, 0.0), limits[k]
        if had + n > cap + _EPS:
            return f"tenant {tenant}: {k} {had:g}/{cap:g} used in region {region}, {n:g} asked"
        return ""

    def region_misfit(self, tenant: str, region: str, use: Charges) -> str:
        """Why ``use`` does not fit the tenant's quota in ``region``; "" if it fits or there is none."""
        limits = self.terms[tenant].regions.get(region)
        if not limits:
            return ""
        used = self.region_used.get((tenant, region), {})
        for k, cap in limits.items():
            n = use.get(k, 0.0)
            if n > 0 and used.get(k, 0.0) + n > cap + _EPS:
                return f"tenant {tenant}: {k} {used.get(k, 0.0):g}/{cap:g} used in region {region}, {n:g} asked"
        return ""
