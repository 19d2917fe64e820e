"""The report's placement-in-time parts: deadlines and deferral, the real-time RTT margin, the goals,
the per-hour cost with tariff bands shaded and the deferral histogram (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from westflow.inventory import Network
from westflow.latency_margin import STRESS_INFLATION, realtime_margin
from westflow.simulator.clock import Clock
from westflow.simulator.results import PolicyResult
from westflow.tariffs import Band

__all__ = ["TIME_HEADERS", "time_rows", "MARGIN_HEADERS", "margin_rows", "GOAL_HEADERS", "goal_rows",
           "representative_dc", "plot_cost_hourly", "plot_deferrals", "hours_histogram", "pyplot"]

BASELINE_CHEAPEST, BASELINE_EAST = "cheapest", "east-first"
_BAND_COLOUR = {Band.CRITICAL: "#f4a6a6", Band.PEAK: "#f8cfa0", Band.FLAT: "#f2f2f2", Band.VALLEY: "#cfe8cf",
                Band.DEEP_VALLEY: "#a8d8a8"}

TIME_HEADERS = ["policy", "jobs with a deadline", "deadline misses", "deferred jobs", "deferral mean h",
                "deferral max h", "queue wait mean h", "queue wait p95 h"]


def time_rows(results: Sequence[PolicyResult]) -> list[list[str]]:
    rows = []
    for r in results:
        deferred = [d for d in r.deferred_s if d > 0]
        mean, p95 = r.queue_stats()
        rows.append([r.policy, f"{r.deadline_jobs:,}", f"{r.deadline_misses:,}", f"{len(deferred):,}",
                     f"{sum(deferred) / len(deferred) / 3600:.2f}" if deferred else "0.00",
                     f"{max(deferred, default=0.0) / 3600:.2f}", f"{mean / 3600:.2f}", f"{p95 / 3600:.2f}"])
    return rows


MARGIN_HEADERS = ["policy", "RT requests placed", "p50 ms", "p95 ms", "max ms", "in the guard band (req)",
                  "beyond the bound (req)", f"beyond at {STRESS_INFLATION:g} x inflation (req)", "share"]


def margin_rows(results: Sequence[PolicyResult], network: Network) -> list[list[str]]:
    """Per policy, the RTT distribution of its real-time placements (``realtime_margin``)."""
    rows = []
    for r in results:
        m = realtime_margin(network, r.rt_placed)
        ms = [f"{x:.1f}" if x is not None else "-" for x in (m.p50_ms, m.p95_ms, m.max_ms)]
        rows.append([r.policy, f"{m.total:,.0f}", *ms, f"{m.in_guard_band:,.0f}", f"{m.beyond_bound:,.0f}",
                     f"{m.beyond_bound_at_stress:,.0f}", f"{m.share_beyond_bound_at_stress:.1%}"])
    return rows


GOAL_HEADERS = ["goal", "measured", "met"]


def goal_rows(results: Sequence[PolicyResult], *, east_goal: float = 0.35) -> list[list[str]]:
    """The issue's goals for the westflow policy against the baselines of this run (those present)."""
    by = {r.policy: r for r in results}
    w = by.get("westflow")
    if w is None:
        return []
    rows = []
    for name, goal in ((BASELINE_CHEAPEST, 0.15), (BASELINE_EAST, east_goal)):
        b = by.get(name)
        if b is not None and b.cost_all_cny:
            saved = 1 - w.cost_all_cny / b.cost_all_cny
            window = 1 - w.cost_cny / b.cost_cny if b.cost_cny else 0.0
            rows.append([f"energy cost >= {goal:.0%} below {name} (all work, to its end)",
                         f"{saved:.1%} below (within the window only: {window:.1%})",
                         "yes" if saved >= goal else "no"])
    rows.append(["0 real-time requests beyond their bound", f"{w.rt_beyond_requests:,.0f}",
                 "yes" if w.rt_beyond_requests == 0 else "no"])
    rows.append(["0 deadline misses", f"{w.deadline_misses:,}", "yes" if w.deadline_misses == 0 else "no"])
    others = [r.queue_stats()[1] for r in results if r.policy != "westflow"]
    if others:
        best, mine = min(others), w.queue_stats()[1]
        ok = mine <= 1.2 * best + 1e-9
        rows.append(["batch p95 queue wait <= 1.2 x the best baseline",
                     f"{mine / 3600:.2f} h vs {best / 3600:.2f} h", "yes" if ok else "no"])
    return rows


def representative_dc(results: Sequence[PolicyResult], network: Network) -> str:
    """The DC whose tariff bands are shaded: where the first policy (westflow) ran the most batch jobs
    (the inventory's first DC with a tariff when it ran none)."""
    r = results[0]
    if r.batch_dc:
        return max(r.batch_dc, key=lambda d: (r.batch_dc[d], d))
    return next((d.id for d in network.data_centers if d.tariff is not None), network.data_centers[0].id)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (imported late: only a report needs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cost_hourly(results: Sequence[PolicyResult], network: Network, clock: Clock, path: Path) -> None:
    """Energy cost per simulated hour and policy, the tariff bands of :func:`representative_dc` shaded."""
    plt = pyplot()
    dc = representative_dc(results, network)
    tariff = network.dc(dc).tariff
    hours = max((len(r.cost_hourly) for r in results), default=1)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    if tariff is not None:
        seen: set[Band] = set()
        for h in range(hours):
            band = tariff.period_at(clock.wall(h * 3600.0 + 1.0)).band
            ax.axvspan(h, h + 1, color=_BAND_COLOUR[band], lw=0, label=None if band in seen else f"{band.value} band")
            seen.add(band)
    for r in results:
        ax.plot([h + 0.5 for h in range(len(r.cost_hourly))], r.cost_hourly, label=r.policy, linewidth=0.8)
    ax.set_xlim(0, hours)
    ax.set_xlabel(f"simulated hour (0 = {clock.as_datetime(0).strftime('%Y-%m-%d %H:%M')} Asia/Shanghai)")
    ax.set_ylabel("energy cost, CNY per hour")
    shaded = f"{dc}'s tariff ({tariff.id})" if tariff is not None else f"{dc} (flat price: none shaded)"
    ax.set_title(f"Energy cost per hour at time-of-use prices; bands shaded: {shaded}")
    ax.legend(ncol=5, fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def hours_histogram(series: Sequence[tuple[str, Sequence[float]]], path: Path, *, zero: str, xlabel: str,
                    ylabel: str, title: str) -> None:
    """One step histogram per (policy, seconds), in hours, 30 bins up to the longest, log counts; each legend
    entry says how many are exactly 0 (``zero`` names them)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    longest = max((max(values, default=0.0) for _, values in series), default=0.0) / 3600
    edges = [longest * i / 30 for i in range(31)] if longest > 0 else [0.0, 1.0]
    for policy, values in series:
        h = [d / 3600 for d in values]
        at_zero = sum(1 for d in h if d == 0)
        ax.hist(h, bins=edges, histtype="step", label=f"{policy} ({at_zero:,} of {len(h):,} {zero})")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_deferrals(results: Sequence[PolicyResult], path: Path) -> None:
    """Histogram of the chosen deferral (hours from submit to the start the policy chose) per policy."""
    hours_histogram([(r.policy, r.deferred_s) for r in results], path, zero="not deferred",
                    xlabel="hours deferred (chosen start - submit)", ylabel="batch jobs",
                    title="Deferral into cheaper hours (baselines run at once)")
