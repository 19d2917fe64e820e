"""The figures of ``westflow report`` and the ``network_utilisation`` asset, from metered usage records.

Pure: records in (anything shaped like ``admission.metering.UsageRecord``, see :class:`Metered`), the
inventory for capacity and targets, plain values out; the CLI draws them, the asset tabulates them.

- :func:`dc_utilisation`: per DC, the accelerator-hours its jobs ran inside a window over its
  capacity-hours (CPU-hours over CPU capacity where a DC has no accelerators), against its own target.
  A job is clipped to the window, so one that spans midnight counts in both days.
- :func:`hourly_utilisation`: the same per hour of a period, one series per DC with accelerators.
- :func:`tenant_spend`: CNY (energy and transfer) per tenant, largest first.
- :func:`region_share_by_day`: east and west accelerator-hours per Asia/Shanghai day a job *ended* in
  (as ``westflow usage --by day`` counts), and each region's share.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from westflow.capacity import Standing, UtilisationRow
from westflow.inventory import Network, Region

__all__ = ["Metered", "DCSeries", "TenantSpend", "DayShare", "dc_utilisation", "hourly_utilisation",
           "tenant_spend", "region_share_by_day", "shanghai_day", "FLOOR"]

FLOOR: Final = 0.65  # the national rack-utilisation floor (NDRC 2021), drawn on every utilisation figure
_TZ_OFFSET_S: Final = 8 * 3600  # Asia/Shanghai: a fixed UTC+8 since 1991
_HOUR: Final = 3600.0


class Metered(Protocol):
    """What the figures read of a usage record."""

    @property
    def tenant(self) -> str: ...
    @property
    def data_center(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def accelerators(self) -> int: ...
    @property
    def cpus(self) -> float: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def accelerator_hours(self) -> float: ...
    @property
    def cny(self) -> float: ...
    @property
    def transfer_cny(self) -> float: ...


@dataclass(frozen=True, slots=True)
class DCSeries:
    """One DC's utilisation per hour: ``hours[i]`` (epoch seconds, the hour's start) -> ``utilisation[i]``."""

    dc: str
    region: str
    target: float
    hours: tuple[float, ...]
    utilisation: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class TenantSpend:
    tenant: str
    cny: float
    accelerator_hours: float


@dataclass(frozen=True, slots=True)
class DayShare:
    """One Asia/Shanghai day's accelerator-hours by region, and the west's share of them (0 on an empty day)."""

    day: str
    east_hours: float
    west_hours: float

    @property
    def west_share(self) -> float:
        total = self.east_hours + self.west_hours
        return self.west_hours / total if total > 0 else 0.0

    @property
    def east_share(self) -> float:
        total = self.east_hours + self.west_hours
        return self.east_hours / total if total > 0 else 0.0


def shanghai_day(epoch_s: float) -> str:
    """The Asia/Shanghai date of an instant (``YYYY-MM-DD``)."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_s + _TZ_OFFSET_S))


def _check_window(start: float, end: float) -> None:
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise ValueError(f"Invalid window [{start!r}, {end!r}); end must be after start.")


def _overlap_h(r: Metered, start: float, end: float) -> float:
    return max(0.0, min(r.end, end) - max(r.start, start)) / _HOUR


def dc_utilisation(records: Iterable[Metered], network: Network, start: float, end: float,
                   *, dcs: Sequence[str] | None = None) -> tuple[UtilisationRow, ...]:
    """Per DC (``dcs``, default every DC of ``network``; sorted by id): metered use in ``[start, end)`` over
    capacity for that window, against the DC's ``utilisation_target``. Records of unknown DCs are ignored."""
    _check_window(start, end)
    hours = (end - start) / _HOUR
    acc_h: dict[str, float] = defaultdict(float)
    cpu_h: dict[str, float] = defaultdict(float)
    for r in records:
        h = _overlap_h(r, start, end)
        acc_h[r.data_center] += r.accelerators * h
        cpu_h[r.data_center] += r.cpus * h
    rows = []
    for dc_id in sorted(dcs if dcs is not None else network.dc_ids):
        dc = network.dc(dc_id)
        acc = dc.accelerator_total
        used, total, unit = ((acc_h[dc.id], acc * hours, "accelerator-hours") if acc
                             else (cpu_h[dc.id], dc.cpus * hours, "CPU-hours"))
        share = used / total if total > 0 else 0.0
        rows.append(UtilisationRow(dc.id, dc.region.value, used, total, unit, share, dc.utilisation_target,
                                   Standing.BELOW if share < dc.utilisation_target else Standing.MET))
    return tuple(rows)


def hourly_utilisation(records: Iterable[Metered], network: Network, start: float,
                       end: float) -> tuple[DCSeries, ...]:
    """Per DC with accelerators (sorted by id), its utilisation in each whole hour of ``[start, end)``."""
    _check_window(start, end)
    n = math.ceil((end - start) / _HOUR)
    used: dict[str, list[float]] = defaultdict(lambda: [0.0] * n)
    for r in records:
        if r.accelerators <= 0 or r.end <= start or r.start >= end:
            continue
        first = max(0, int((max(r.start, start) - start) // _HOUR))
        last = min(n - 1, int((min(r.end, end) - start) // _HOUR))
        series = used[r.data_center]
        for i in range(first, last + 1):
            h0 = start + i * _HOUR
            series[i] += r.accelerators * _overlap_h(r, h0, min(h0 + _HOUR, end))
    out = []
    for dc in sorted(network.data_centers, key=lambda d: d.id):
        if not dc.accelerator_total:
            continue
        cap = [dc.accelerator_total * (min(start + (i + 1) * _HOUR, end) - (start + i * _HOUR)) / _HOUR
               for i in range(n)]
        series = used.get(dc.id, [0.0] * n)
        out.append(DCSeries(dc.id, dc.region.value, dc.utilisation_target,
                            tuple(start + i * _HOUR for i in range(n)),
                            tuple(u / c if c > 0 else 0.0 for u, c in zip(series, cap, strict=True))))
    return tuple(out)


def tenant_spend(records: Iterable[Metered]) -> tuple[TenantSpend, ...]:
    """CNY (energy + transfer) and accelerator-hours per tenant; largest spend first, ties by tenant name."""
    cny: dict[str, float] = defaultdict(float)
    acc: dict[str, float] = defaultdict(float)
    for r in records:
        cny[r.tenant] += r.cny + r.transfer_cny
        acc[r.tenant] += r.accelerator_hours
    return tuple(sorted((TenantSpend(t, cny[t], acc[t]) for t in cny), key=lambda s: (-s.cny, s.tenant)))


def region_share_by_day(records: Iterable[Metered], start: float, end: float) -> tuple[DayShare, ...]:
    """East and west accelerator-hours of every Asia/Shanghai day in ``[start, end)`` (empty days included),
    each job counted on the day it ended."""
    _check_window(start, end)
    days = {shanghai_day(t): (0.0, 0.0) for t in _day_starts(start, end)}
    east: dict[str, float] = defaultdict(float)
    west: dict[str, float] = defaultdict(float)
    for r in records:
        if not start <= r.end < end:
            continue
        day = shanghai_day(r.end)
        (west if r.region == Region.WEST.value else east)[day] += r.accelerator_hours
        days.setdefault(day, (0.0, 0.0))
    return tuple(DayShare(d, east[d], west[d]) for d in sorted(days))


def _day_starts(start: float, end: float) -> Iterable[float]:
    t = start
    while t < end:
        yield t
        t += 86400.0
