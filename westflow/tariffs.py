"""Time-of-use electricity tariffs: the price of a kWh at an instant, and over a run.

A :class:`Tariff` is one day of :class:`Period` s (local Asia/Shanghai hours, each in a
:class:`Band` with its price) repeated every day; the inventory gives one per DC (or
province) in ``configs/network.yaml``, built by :mod:`westflow.config`. A DC without one
pays its flat ``price_cny_kwh``. Times are floats, seconds since the epoch; Asia/Shanghai
has had no daylight saving since 1991, so its local time is a fixed UTC+8.

:meth:`Tariff.mean_price` prices a run (the price integrated over its hours, divided by
them); :meth:`Tariff.cheapest_start` finds the start in a window whose run is cheapest
(what deferral of a batch step with a deadline chooses). Pure Python.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Band", "Period", "Tariff", "TZ_OFFSET_S", "DAY_S", "local_hhmm"]

TZ_OFFSET_S = 8 * 3600  # Asia/Shanghai: a fixed UTC+8
DAY_S = 86400.0
_REL = 1e-12  # prices this close are equal: the earlier start wins


class Band(StrEnum):
    """A time-of-use band, dearest first (China's provincial tariffs: 尖峰, 高峰, 平段, 低谷, 深谷)."""

    CRITICAL = "critical"
    PEAK = "peak"
    FLAT = "flat"
    VALLEY = "valley"
    DEEP_VALLEY = "deep_valley"


@dataclass(frozen=True, slots=True)
class Period:
    """``[start_s, end_s)`` seconds after local midnight, in ``band``, at ``price_cny_kwh``."""

    start_s: float
    end_s: float
    band: Band
    price_cny_kwh: float


def local_hhmm(epoch_s: float) -> str:
    """``HH:MM`` of an instant in Asia/Shanghai."""
    return time.strftime("%H:%M", time.gmtime(epoch_s + TZ_OFFSET_S))


@dataclass(frozen=True, slots=True)
class Tariff:
    """A day of periods covering ``[0, 86400)`` in order, without gaps (checked by the config loader
    and again here); ``carbon_g_kwh``: the grid's carbon intensity, when known."""

    id: str
    periods: tuple[Period, ...]
    carbon_g_kwh: float | None = None
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _cum: tuple[float, ...] = field(init=False, repr=False, compare=False)  # CNY-seconds/kWh before each period

    def __post_init__(self) -> None:
        at = 0.0
        for p in self.periods:
            if p.start_s != at or not p.end_s > p.start_s or not (math.isfinite(p.price_cny_kwh)
                                                                 and p.price_cny_kwh > 0):
                raise ValueError(f"tariff {self.id!r}: periods must cover the day in order with prices > 0; "
                                 f"got {p!r} after {at:g} s")
            at = p.end_s
        if at != DAY_S:
            raise ValueError(f"tariff {self.id!r}: periods end at {at:g} s, not at midnight ({DAY_S:g} s)")
        cum, total = [], 0.0
        for p in self.periods:
            cum.append(total)
            total += (p.end_s - p.start_s) * p.price_cny_kwh
        cum.append(total)
        object.__setattr__(self, "_starts", tuple(p.start_s for p in self.periods))
        object.__setattr__(self, "_cum", tuple(cum))

    def period_at(self, epoch_s: float) -> Period:
        """The period an instant falls in."""
        s = (epoch_s + TZ_OFFSET_S) % DAY_S
        return self.periods[bisect.bisect_right(self._starts, s) - 1]

    def price_at(self, epoch_s: float) -> float:
        """CNY/kWh at an instant."""
        return self.period_at(epoch_s).price_cny_kwh

    @property
    def daily_mean(self) -> float:
        """The day's mean price (CNY/kWh, each hour counted alike)."""
        return self._cum[-1] / DAY_S

    def _integral(self, epoch_s: float) -> tuple[float, float]:
        """(whole local days, CNY-seconds/kWh into the day) since the epoch's local midnight."""
        x = epoch_s + TZ_OFFSET_S
        days = math.floor(x / DAY_S)
        s = x - days * DAY_S
        k = bisect.bisect_right(self._starts, s) - 1
        p = self.periods[k]
        return days, self._cum[k] + (s - p.start_s) * p.price_cny_kwh

    def mean_price(self, start_s: float, hours: float) -> float:
        """The mean CNY/kWh of a run at constant power from ``start_s`` for ``hours``
        (the price at ``start_s`` for a run of no length)."""
        if not hours > 0:
            return self.price_at(start_s)
        d0, i0 = self._integral(start_s)
        d1, i1 = self._integral(start_s + hours * 3600.0)
        return ((d1 - d0) * self._cum[-1] + (i1 - i0)) / (hours * 3600.0)

    def changes(self, lo_s: float, hi_s: float) -> list[float]:
        """The instants in ``[lo_s, hi_s]`` where the price may change (period starts), in order."""
        out: list[float] = []
        day0 = math.floor((lo_s + TZ_OFFSET_S) / DAY_S) * DAY_S - TZ_OFFSET_S  # local midnight before lo_s
        day = day0
        while day <= hi_s:
            out.extend(t for t in (day + s for s in self._starts) if lo_s <= t <= hi_s)
            day += DAY_S
        return out

    def cheapest_start(self, lo_s: float, hi_s: float, hours: float) -> tuple[float, float]:
        """``(start, mean price)`` of the cheapest run of ``hours`` starting in ``[lo_s, hi_s]``; the earliest
        such start on a tie (``lo_s`` itself when nothing later is cheaper).

        The run's cost is piecewise linear in its start, so its least is at a window end or where the
        run's start or end meets a price change: only those starts are priced.
        """
        best_t, best_p = lo_s, self.mean_price(lo_s, hours)
        if not hi_s > lo_s:
            return best_t, best_p
        run_s = hours * 3600.0
        starts = {hi_s, *self.changes(lo_s, hi_s), *(t - run_s for t in self.changes(lo_s + run_s, hi_s + run_s))}
        for t in sorted(starts):
            p = self.mean_price(t, hours)
            if p < best_p * (1 - _REL):
                best_t, best_p = t, p
        return best_t, best_p
