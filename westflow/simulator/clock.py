"""The simulator's clock: simulated seconds as wall-clock instants, batch deadlines, time-of-use billing.

Simulated time ``t`` (seconds since the trace's origin, after load scaling and shifting) is the
instant ``epoch_s + t``; the default epoch is ``DEFAULT_EPOCH`` (00:00 Asia/Shanghai on a Monday;
every tariff repeats daily, so only the time of day matters). ``westflow simulate --start`` moves it.

A batch job submitted at ``s`` with a duration ``d`` must finish by ``s + slack x d``
(``deadline_slack``; ``--deadline-slack``, default ``DEFAULT_DEADLINE_SLACK``; None: no deadlines,
nothing is deferred). A policy that defers (westflow) gets the deadline in its spec and the clock's
``now``, and may start the job later, in cheaper hours; the baselines run at once.

:class:`Pricer` bills energy at each DC's time-of-use tariff (:mod:`westflow.tariffs`) for the hours
the work actually runs, hour by hour (the flat ``price_cny_kwh`` of a DC without one). Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from westflow.inventory import Network
from westflow.tariffs import Tariff

__all__ = ["Clock", "Pricer", "DEFAULT_EPOCH", "DEFAULT_DEADLINE_SLACK", "SHANGHAI"]

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
DEFAULT_EPOCH = datetime(2026, 1, 5, tzinfo=SHANGHAI)  # the trace's origin: a Monday, 00:00 Asia/Shanghai
DEFAULT_DEADLINE_SLACK = 2.0  # deadline = submit + 2.0 x duration


@dataclass(frozen=True, slots=True)
class Clock:
    """Where simulated time sits on the wall clock, and the batch deadline rule."""

    epoch_s: float = DEFAULT_EPOCH.timestamp()
    deadline_slack: float | None = DEFAULT_DEADLINE_SLACK

    def __post_init__(self) -> None:
        if self.deadline_slack is not None and not self.deadline_slack >= 1.0:
            raise ValueError(f"deadline_slack must be >= 1 (a job needs its duration) or None, "
                             f"not {self.deadline_slack!r}")

    def wall(self, t: float) -> float:
        """The epoch instant of simulated second ``t``."""
        return self.epoch_s + t

    def deadline(self, submit_s: float, duration_s: float) -> float | None:
        """The simulated second a job must finish by (None: no deadlines)."""
        if self.deadline_slack is None:
            return None
        return submit_s + self.deadline_slack * duration_s

    def as_datetime(self, t: float) -> datetime:
        """Simulated second ``t`` as an aware datetime (Asia/Shanghai)."""
        return datetime.fromtimestamp(self.epoch_s + t, SHANGHAI)

    def describe(self) -> str:
        slack = ("none (no deadlines: nothing deferred)" if self.deadline_slack is None
                 else f"deadline = submit + {self.deadline_slack:g} x duration")
        return f"t = 0 is {self.as_datetime(0).strftime('%Y-%m-%d %H:%M')} Asia/Shanghai; {slack}"


class Pricer:
    """Prices energy by DC and simulated time: each DC's tariff (or flat price) on the clock."""

    def __init__(self, network: Network, clock: Clock) -> None:
        self.clock = clock
        self.tariff: dict[str, Tariff | None] = {d.id: d.tariff for d in network.data_centers}
        self.flat = {d.id: d.price_cny_kwh for d in network.data_centers}

    def price(self, dc: str, lo: float, hi: float) -> float:
        """Mean CNY/kWh at ``dc`` over simulated ``[lo, hi)`` (constant power)."""
        tariff = self.tariff[dc]
        if tariff is None:
            return self.flat[dc]
        return tariff.mean_price(self.clock.epoch_s + lo, (hi - lo) / 3600.0)

    def bill(self, dc: str, kwh_per_s: float, lo: float, hi: float, hourly: list[float]) -> float:
        """CNY of ``kwh_per_s`` over ``[lo, hi)`` at ``dc``, each simulated hour's share added to ``hourly``
        (hours past its end are not recorded there); returns the total."""
        if hi <= lo:
            return 0.0
        if self.tariff[dc] is None:  # one price: no need to split by the hour
            return self.spread(kwh_per_s * self.flat[dc], lo, hi, hourly)
        total, a = 0.0, lo
        while a < hi:
            b = min(hi, (int(a // 3600) + 1) * 3600.0)
            cny = kwh_per_s * (b - a) * self.price(dc, a, b)
            h = int(a // 3600)
            if h < len(hourly):
                hourly[h] += cny
            total += cny
            a = b
        return total

    @staticmethod
    def spread(rate: float, lo: float, hi: float, hourly: list[float]) -> float:
        """``rate`` (CNY per second) over ``[lo, hi)`` into ``hourly``; the total."""
        h = int(lo // 3600)
        while h < len(hourly) and h * 3600 < hi:
            hourly[h] += rate * (min(hi, (h + 1) * 3600) - max(lo, h * 3600))
            h += 1
        return rate * (hi - lo)
