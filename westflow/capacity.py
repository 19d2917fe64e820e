"""One capacity model: what a data center has, what of it is used, what is free.

Pure data, shared by placement, the reservation journal, the simulator and live
capacity:

- :class:`Resources`: an amount of a DC's resources (accelerators per model,
  CPUs, memory in GB). A DC's totals and what is used of them are both one.
- :func:`capacity_of`: ``free = total - used``, computed here and nowhere else,
  into the :class:`DCCapacity` snapshot that ``place()`` reads.
- :func:`utilisation`: the one share-in-use of a DC (accelerators, or CPUs where
  the DC has no accelerators), and :func:`utilisation_report`: each DC against
  its own ``utilisation_target`` from the config.

:func:`static_capacity` is each DC at its configured baseline (planning without a
running network), :func:`full_capacity` every DC empty (the simulator's start);
the live snapshot is read from Ray by :mod:`ray_cluster.live`. :func:`after_holds` is what
is left of a live snapshot once what admitted work holds is counted (the reservation journal
and the admission cycle both read capacity through it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from westflow.inventory import DataCenter, Network

__all__ = [
    "Resources", "DCUsage", "DCCapacity", "Capacity", "capacity_of", "utilisation", "inventory_totals",
    "static_capacity", "full_capacity", "after_holds", "Standing", "UtilisationRow", "utilisation_report",
]

_EPS = 1e-9  # live counts are floats summed over nodes: 7.9999999999 free accelerators is 8


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of a DC's resources: accelerators per model (or per Ray resource), CPUs, memory (GB)."""

    accelerators: Mapping[str, float] = field(default_factory=dict)
    cpus: float = 0.0
    memory_gb: float = 0.0

    @classmethod
    def of(cls, model: str | None, count: float, cpus: float, memory_gb: float) -> Resources:
        """What one placement holds: ``count`` of ``model`` (none when ``model`` is None), CPUs, memory."""
        return cls({model: count} if model else {}, cpus, memory_gb)

    @property
    def accelerator_count(self) -> float:
        return sum(self.accelerators.values())

    def plus(self, other: Resources, sign: int = 1) -> Resources:
        """``self + sign * other``, per resource."""
        acc = dict(self.accelerators)
        for m, n in other.accelerators.items():
            acc[m] = acc.get(m, 0) + sign * n
        return Resources(acc, self.cpus + sign * other.cpus, self.memory_gb + sign * other.memory_gb)

    def minus(self, other: Resources) -> Resources:
        return self.plus(other, -1)

    def most(self, other: Resources) -> Resources:
        """Per resource, the larger of the two (e.g. ``max(live used, reserved)``)."""
        acc = dict(self.accelerators)
        for m, n in other.accelerators.items():
            acc[m] = max(acc.get(m, 0), n)
        return Resources(acc, max(self.cpus, other.cpus), max(self.memory_gb, other.memory_gb))

    @staticmethod
    def total(amounts: Iterable[Resources]) -> Resources:
        """The sum of ``amounts``."""
        out = Resources()
        for r in amounts:
            out = out.plus(r)
        return out


@dataclass(frozen=True, slots=True)
class DCCapacity:
    """Free resources of one DC, as ``place()`` reads them. ``free`` maps accelerator model to free count."""

    free: Mapping[str, int]
    free_cpus: float
    free_memory_gb: float
    utilisation: float
    alive: bool = True
    why: str = ""  # why a DC that is not alive is out (e.g. "cluster unreachable: west: ..."); "" = no live node

    def resources(self) -> Resources:
        """What is free, as an amount (e.g. a DC's totals, read as the snapshot of it empty)."""
        return Resources(dict(self.free), self.free_cpus, self.free_memory_gb)


Capacity = Mapping[str, DCCapacity]


def utilisation(total: Resources, used: Resources) -> float:
    """The share of a DC in use, in [0, 1]: accelerators, or CPUs where it has none; 1.0 if it has neither."""
    acc = sum(total.accelerators.values())
    if acc:
        share = sum(used.accelerators.values()) / acc
    elif total.cpus:
        share = used.cpus / total.cpus
    else:
        return 1.0
    return min(1.0, max(0.0, share))


def _whole(n: float) -> int:
    return n if isinstance(n, int) else math.floor(n + _EPS)


def capacity_of(total: Resources, used: Resources, *, share: float | None = None,
                alive: bool = True) -> DCCapacity:
    """What is free of ``total`` when ``used`` is held: per resource ``total - used``.

    Accelerators count whole devices (rounded down); a model ``total`` does not have is not
    offered. ``share`` overrides the utilisation (default :func:`utilisation` of the two).
    """
    held = used.accelerators
    free = {m: _whole(n - held.get(m, 0)) for m, n in total.accelerators.items()}
    return DCCapacity(free, total.cpus - used.cpus, total.memory_gb - used.memory_gb,
                      utilisation(total, used) if share is None else share, alive)


def after_holds(live: Capacity, held: Mapping[str, Resources],
                totals: Capacity | None = None) -> dict[str, DCCapacity]:
    """The capacity left for new work: per DC and resource ``total - max(live_used, held)``.

    ``live`` is the live snapshot (free per DC), ``held`` what admitted work holds per DC (it is
    counted from the decision on, before the dashboard sees it start), ``totals`` each DC's
    capacity when empty. A running job is in both live use and ``held``: the ``max`` counts it
    once. Without a DC's total, its holds are subtracted from ``live`` (right for a snapshot taken
    before any held work started). Utilisation is the larger of the live one and that of
    ``max(live_used, held)``. DCs absent from ``live`` stay absent (unavailable).
    """
    out: dict[str, DCCapacity] = {}
    for dc, now in live.items():
        mine = held.get(dc)
        total = None if totals is None else totals.get(dc)
        if mine is None:
            out[dc] = now
        elif total is None:  # utilisation unknown without a total: kept as read
            out[dc] = replace(capacity_of(now.resources(), mine, share=now.utilisation, alive=now.alive),
                              why=now.why)
        else:
            whole = total.resources()
            cap = capacity_of(whole, whole.minus(now.resources()).most(mine), alive=now.alive)
            out[dc] = replace(cap, utilisation=max(now.utilisation, cap.utilisation), why=now.why)
    return out


@dataclass(frozen=True, slots=True)
class DCUsage:
    """One DC's totals and what is used of them."""

    total: Resources
    used: Resources

    def capacity(self, *, alive: bool = True) -> DCCapacity:
        """The snapshot ``place()`` reads (see :func:`capacity_of`)."""
        return capacity_of(self.total, self.used, alive=alive)


def inventory_totals(dc: DataCenter) -> Resources:
    """A DC's resources as the inventory declares them."""
    return Resources({p.model: p.count for p in dc.pools}, float(dc.cpus), dc.memory_gb)


def _baseline(dc: DataCenter) -> DCCapacity:
    """The DC at its configured baseline share: that share of every resource used, whole devices free."""
    u = dc.utilisation_baseline
    used = Resources({p.model: p.count - math.floor(p.count * (1 - u)) for p in dc.pools},
                     dc.cpus * u, dc.memory_gb * u)
    # the configured share, not the one whole-device rounding gives: scores weigh it
    return capacity_of(inventory_totals(dc), used, share=u)


def static_capacity(network: Network) -> dict[str, DCCapacity]:
    """Capacity at each DC's configured baseline utilisation."""
    return {dc.id: _baseline(dc) for dc in network.data_centers}


def full_capacity(network: Network) -> dict[str, DCCapacity]:
    """Every DC empty (the simulator's starting point)."""
    return {dc.id: capacity_of(inventory_totals(dc), Resources()) for dc in network.data_centers}


# -- utilisation against each DC's own target ---------------------------------------------------


class Standing(StrEnum):
    """A DC's utilisation against its own ``utilisation_target``."""

    BELOW = "below target"
    MET = "at or above target"


@dataclass(frozen=True, slots=True)
class UtilisationRow:
    """One DC's use: ``used`` of ``total`` (accelerators, or CPUs where it has none), its share and target."""

    dc: str
    region: str
    used: float
    total: float
    unit: str
    utilisation: float
    target: float
    standing: Standing

    @property
    def below(self) -> bool:
        return self.standing is Standing.BELOW


def utilisation_report(network: Network, usage: Mapping[str, DCUsage]) -> tuple[UtilisationRow, ...]:
    """Per DC of ``usage`` known to ``network``, sorted by DC id: its :func:`utilisation` and
    whether it is below its own ``utilisation_target``."""
    rows = []
    for dc_id in sorted(usage):
        if dc_id not in network.dc_ids:
            continue
        dc = network.dc(dc_id)
        total, used = usage[dc_id].total, usage[dc_id].used
        share = utilisation(total, used)
        acc = total.accelerator_count
        basis = (used.accelerator_count, acc, "accelerators") if acc else (used.cpus, total.cpus, "CPUs")
        rows.append(UtilisationRow(dc.id, dc.region.value, *basis, share, dc.utilisation_target,
                                   Standing.BELOW if share < dc.utilisation_target else Standing.MET))
    return tuple(rows)
