"""The simulated network's state: what each DC holds (:class:`SimNetwork`), the held rows as the
admission cycle reads them (:class:`Holding`), a running batch job (:class:`Run`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from westflow.admission_cycle import Held
from westflow.capacity import DCCapacity, Resources, capacity_of, inventory_totals
from westflow.inventory import Network

__all__ = ["SimNetwork", "Holding", "Run"]


class SimNetwork:
    """What the simulated network holds per DC, and what is derived from it: the capacity snapshot
    ``place()`` reads and each DC's utilisation (each rebuilt only for the DCs that changed)."""

    def __init__(self, network: Network) -> None:
        self.totals = {d.id: inventory_totals(d) for d in network.data_centers}
        self.used = {dc: Resources() for dc in self.totals}
        self._snap = {dc: capacity_of(t, Resources()) for dc, t in self.totals.items()}
        self._dirty: set[str] = set()

    def take(self, dc: str, held: Resources) -> None:
        self.used[dc] = self.used[dc].plus(held)
        self._changed(dc)

    def release(self, dc: str, held: Resources) -> None:
        self.used[dc] = self.used[dc].minus(held)
        self._changed(dc)

    def _changed(self, dc: str) -> None:
        self._dirty.add(dc)

    def capacity(self) -> dict[str, DCCapacity]:
        """The snapshot ``place()`` reads."""
        for dc in self._dirty:
            self._snap[dc] = capacity_of(self.totals[dc], self.used[dc])
        self._dirty.clear()
        return self._snap


class Holding(Sequence[Held]):
    """The held rows as the admission cycle reads them: a view of the simulation's dict (a cycle
    reads them only when it looks for victims; the tenants' use comes from the ledger)."""

    def __init__(self, rows: dict[str, Held]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Held]:
        return iter(self.rows.values())

    @overload
    def __getitem__(self, i: int) -> Held: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Held]: ...
    def __getitem__(self, i: int | slice) -> Held | Sequence[Held]:
        return list(self.rows.values())[i]


@dataclass
class Run:
    """A batch job running: where, since when, what it was charged for the work left at its start."""

    job: int
    seq: int
    start: float
    left_s: float  # work left when it started
    energy_kwh: float  # of the whole run from its start (what the placement priced)
    transfer_cny: float  # the data transfer the placement priced (energy is billed at the tariff)
    accelerators: int


