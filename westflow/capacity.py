"""A capacity snapshot per data center: what is free right now.

Pure data. :func:`static_capacity` derives one from the inventory's baseline
utilisation (for planning without a running network); the live one is read
from Ray by :mod:`ray_cluster.live`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from westflow.inventory import DataCenter, Network

__all__ = ["DCCapacity", "Capacity", "static_capacity", "full_capacity"]


@dataclass(frozen=True, slots=True)
class DCCapacity:
    """Free resources of one DC. ``free`` maps accelerator model to free count."""

    free: Mapping[str, int]
    free_cpus: float
    free_memory_gb: float
    utilisation: float
    alive: bool = True

    def take(self, model: str | None, count: int, cpus: float, memory_gb: float, total: int) -> DCCapacity:
        """The capacity left after one placement (``total`` = DC accelerator total)."""
        free = dict(self.free)
        if model:
            free[model] = free.get(model, 0) - count
        used_frac = count / total if total else 0.0
        return replace(self, free=free, free_cpus=self.free_cpus - cpus,
                       free_memory_gb=self.free_memory_gb - memory_gb,
                       utilisation=min(1.0, self.utilisation + used_frac))


Capacity = Mapping[str, DCCapacity]


def _dc_capacity(dc: DataCenter, used: float) -> DCCapacity:
    return DCCapacity(
        free={p.model: math.floor(p.count * (1 - used)) for p in dc.pools},
        free_cpus=dc.cpus * (1 - used),
        free_memory_gb=dc.memory_gb * (1 - used),
        utilisation=used,
    )


def static_capacity(network: Network) -> dict[str, DCCapacity]:
    """Capacity at each DC's configured baseline utilisation."""
    return {dc.id: _dc_capacity(dc, dc.utilisation_baseline) for dc in network.data_centers}


def full_capacity(network: Network) -> dict[str, DCCapacity]:
    """Every DC empty (the simulator's starting point)."""
    return {dc.id: _dc_capacity(dc, 0.0) for dc in network.data_centers}
