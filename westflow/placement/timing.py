"""Placement in time: when a step may start, and the start each data center would get.

A :class:`Window` is read from the spec (``start_after``, ``deadline``, ``deadline_hours``),
the decision's ``now`` and the policy weights (``deadline_margin``, ``max_deferral_hours``).
:meth:`Window.start` gives, for one DC, the start and the price its run is costed at:

- a DC without a tariff, or a step that may not be deferred, starts at the earliest moment
  (``now``, or ``start_after`` if later) and pays the price of the hours it then runs;
- a deferrable step (a policy that defers, a tier with no latency bound, a ``deadline``) starts
  where its run is cheapest among the starts that still finish by the deadline with the
  expected duration plus ``deadline_margin`` of it to spare, at most ``max_deferral_hours`` ahead;
- a DC where even the earliest start cannot finish by the deadline gets None (a deadline rejection).

The start is when the step is admitted: its inputs move first (the transfer hours), then it
runs; the run's hours are the ones priced. Real-time steps are never deferred. Pure Python.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from westflow.inventory import Network, PolicyWeights
from westflow.spec import WorkloadSpec
from westflow.tariffs import DAY_S, TZ_OFFSET_S, Tariff, local_hhmm

__all__ = ["Window", "window_of", "describe_start"]


@dataclass(frozen=True, slots=True)
class Window:
    """When a spec may run (epoch seconds): from ``earliest_s``, done by ``finish_by_s`` (None: no
    deadline); ``defer``: a later, cheaper start may be chosen."""

    now_s: float
    earliest_s: float
    finish_by_s: float | None
    defer: bool
    margin: float
    horizon_s: float

    def start(self, tariff: Tariff | None, price_cny_kwh: float, transfer_hours: float,
              hours: float) -> tuple[float, float] | None:
        """``(start, CNY/kWh of the run)`` on a DC with this tariff (None: none) and flat price; None if
        the earliest start cannot finish by the deadline."""
        move_s, run_s = transfer_hours * 3600.0, hours * 3600.0
        lo = self.earliest_s
        if self.finish_by_s is not None and lo + move_s + run_s > self.finish_by_s:
            return None
        if tariff is None:
            return lo, price_cny_kwh
        hi = lo
        if self.defer and self.finish_by_s is not None:
            hi = min(lo + self.horizon_s, self.finish_by_s - move_s - run_s * (1.0 + self.margin))
        if not hi > lo:
            return lo, tariff.mean_price(lo + move_s, hours)
        t, p = tariff.cheapest_start(lo + move_s, hi + move_s, hours)
        return t - move_s, p

    def missed(self, transfer_hours: float, hours: float) -> str:
        """Why the earliest start misses the deadline (the text of a deadline rejection)."""
        return (f"{transfer_hours:.2f} h transfer + {hours:g} h run from {local_hhmm(self.earliest_s)} "
                f"ends after the deadline {local_hhmm(self.finish_by_s or 0.0)} (Asia/Shanghai)")


def window_of(spec: WorkloadSpec, network: Network, now_s: float, *, defers: bool) -> Window:
    """The spec's window at ``now_s``; ``defers``: the policy chooses later starts (the westflow policy)."""
    w: PolicyWeights = network.weights
    earliest = now_s
    if spec.start_after is not None:
        earliest = max(earliest, spec.start_after.timestamp())
    finish_by = spec.deadline.timestamp() if spec.deadline is not None else None
    if spec.deadline_hours is not None:
        rel = earliest + spec.deadline_hours * 3600.0
        finish_by = rel if finish_by is None else min(finish_by, rel)
    tier = network.tiers.get(spec.tier)
    realtime = tier is None or tier.max_rtt_ms is not None
    # only an absolute deadline lets a step wait: one relative to now would move on as it waits
    defer = defers and not realtime and spec.deadline is not None
    return Window(now_s, earliest, finish_by, defer, w.deadline_margin,
                  w.max_deferral_hours * 3600.0)


def describe_start(window: Window, start_s: float, dc_id: str, tariff: Tariff | None, cost_cny: float,
                   cost_now_cny: float) -> str:
    """What the Placement says of its start: "deferred 5 h to the 00:00 valley band in zhongwei: 41 % cheaper
    than now", "starts at start_after 2026-11-30 08:00", or "" (it starts now)."""
    if start_s <= window.now_s:
        return ""
    if start_s <= window.earliest_s:
        return f"starts at start_after {_local(start_s)} (Asia/Shanghai)"
    h = (start_s - window.now_s) / 3600.0
    if tariff is None:
        return f"deferred {h:.3g} h in {dc_id}"
    period = tariff.period_at(start_s)
    at = local_hhmm(start_s)
    where = (f"the {at} {period.band.value} band" if abs((start_s + TZ_OFFSET_S) % DAY_S - period.start_s) < 1
             else f"{at} ({period.band.value} band)")
    saved = 1.0 - cost_cny / cost_now_cny if cost_now_cny > 0 else 0.0
    base = "than at start_after" if window.earliest_s > window.now_s else "than now"
    return f"deferred {h:.3g} h to {where} in {dc_id}: {saved:.0%} cheaper {base}".replace("%", " %")


def _local(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch_s + TZ_OFFSET_S))
