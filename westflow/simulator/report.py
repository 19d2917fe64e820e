"""The simulation report: a Markdown file with PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from westflow.inventory import Network, Region
from westflow.simulator.clock import Clock
from westflow.simulator.compare import COMPARISON_HEADERS, TENANT_HEADERS, comparison_rows, tenant_rows
from westflow.simulator.demand import (
    BATCH_CPUS_PER_ACCELERATOR,
    BATCH_MEMORY_GB_PER_ACCELERATOR,
    ORIGIN_SHARES,
    Workload,
)
from westflow.simulator.engine import RT_CPUS_PER_ACCELERATOR, RT_MEMORY_GB_PER_ACCELERATOR, PolicyResult
from westflow.simulator.intime import (
    GOAL_HEADERS,
    MARGIN_HEADERS,
    TIME_HEADERS,
    goal_rows,
    hours_histogram,
    margin_rows,
    plot_cost_hourly,
    plot_deferrals,
    pyplot,
    representative_dc,
    time_rows,
)
from westflow.simulator.tenancy import BATCH_CLASS
from westflow.simulator.traces import ITP_ORIGINS, SPLITWISE_CITATION, TraceSet
from westflow.tenants import Tenants
from westflow.text import markdown_table

__all__ = ["write_report", "plot_utilisation", "plot_cost_sla", "plot_waits", "warnings",
           "summary_rows", "WINDOW_RULE"]

WINDOW_RULE = ("work that runs past the window counts in the window's cost, energy, utilisation and "
               "accelerator-hours only for what falls inside it; the goals and the 'all work' columns extend the "
               "window until every policy's batch work has ended and count every run in full (no real-time "
               "demand after the window)")


def plot_utilisation(results: Sequence[PolicyResult], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for ax, region in zip(axes, [r.value for r in Region], strict=True):
        for r in results:
            ax.plot(r.util_series.get(region, []), label=r.policy, linewidth=0.9)
        ax.set_ylabel(f"{region} utilisation")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(ncol=5, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    axes[1].set_xlabel("simulated hour")
    fig.suptitle("Accelerator utilisation per region (hourly mean)", y=0.99)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost_sla(results: Sequence[PolicyResult], path: Path) -> None:
    """Energy cost and real-time SLA per policy, every bar labelled with its value (a 0 shows as '0')."""
    plt = pyplot()
    names = [r.policy for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    x = range(len(results))
    for off, label, colour, vals in ((-0.2, "within the window", "#4a7", [r.cost_cny for r in results]),
                                     (0.2, "all work, to its end", "#27a", [r.cost_all_cny for r in results])):
        bars = a.bar([i + off for i in x], [v / 1000 for v in vals], width=0.4, label=label, color=colour)
        a.bar_label(bars, labels=[f"{v / 1000:,.0f}" for v in vals], padding=2, fontsize=7)
    a.set_xticks(list(x), names)
    a.set_ylabel("energy cost, thousand CNY")
    a.set_title("Energy cost")
    a.legend(loc="lower right", fontsize=8)
    a.margins(y=0.15)
    beyond = [100 * r.share(r.rt_beyond_requests, r.rt_requests) for r in results]
    dropped = [100 * r.share(r.rt_dropped_requests, r.rt_requests) for r in results]
    b.bar(names, beyond, label="placed beyond 20 ms", color="#c44")
    top = b.bar(names, dropped, bottom=beyond, label="dropped", color="#999")
    b.bar_label(top, labels=[f"{x:.1f}% beyond\n{y:.1f}% dropped" for x, y in zip(beyond, dropped, strict=True)],
                padding=2, fontsize=7)
    b.set_ylabel("% of real-time requests (rows)")
    b.set_title("Real-time SLA")
    b.set_ylim(0, max(10.0, max(x + y for x, y in zip(beyond, dropped, strict=True)) * 1.35))
    b.legend(loc="upper right", fontsize=8)
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_waits(results: Sequence[PolicyResult], path: Path) -> None:
    """Histogram of batch waits before first start (first start - submit) per policy: queueing and, for a
    policy that defers, the chosen deferral (:func:`~westflow.simulator.intime.plot_deferrals` shows it apart)."""
    hours_histogram([(r.policy, r.batch_delay_s) for r in results], path, zero="at 0",
                    xlabel="batch wait, hours (queueing and chosen deferral)", ylabel="jobs",
                    title="Batch wait before first start")


def warnings(result: PolicyResult, workload: Workload) -> list[str]:
    """What a reader must not miss about a run (the same for every policy): an empty real-time stream, work
    not replayed."""
    out = []
    if result.rt_requests == 0:
        out.append("0 real-time requests in the simulated window: the real-time columns measure nothing "
                   "(no real-time rows in the traces, or none inside the window).")
    if result.rt_services_after_window:
        out.append(f"{result.rt_services_after_window:,} long-lived real-time rows start after the window: "
                   "not replayed.")
    late = sum(1 for j in workload.jobs if j.submit_s >= workload.window_s)
    if late:
        out.append(f"{late:,} batch jobs are submitted after the window: they run, but cost nothing in it.")
    return out


def _factor(f: float | None, note: str | None) -> str:
    return "x1 (the trace's arrivals as they are)" if f is None else note or f"x{f:,.3f}"


def summary_rows(results: Sequence[PolicyResult], workload: Workload, traces: TraceSet) -> list[list[str]]:
    """The run in a few rows: traces and their origins, window, load scaling factors, window rule."""
    r = results[0]
    origins = "; ".join(f"{Path(n).name} shifted by -{t0:,.0f} s" for n, t0 in workload.origins_s) or "none shifted"
    rows = [
        ["traces", ", ".join(traces.names)],
        ["trace origin (generic files start at 0)", origins],
        ["window", f"{workload.window_s / 86400:,.2f} days ({workload.steps:,} one-minute steps)"],
        ["batch jobs", f"{len(workload.jobs):,} (arrival span {workload.batch_span_s / 86400:,.2f} days "
                       "in the trace)"],
        ["batch load scaling", _factor(workload.batch_factor, workload.notes.get("batch arrivals"))],
        ["real-time load scaling", _factor(workload.realtime_factor, workload.notes.get("real-time arrivals"))],
        ["real-time requests in the window", f"{r.rt_requests:,.0f} ({r.rt_work_acc_s / 3600:,.0f} "
                                             f"accelerator-hours; {r.rt_services:,} long-lived services)"],
        ["past the window", f"{WINDOW_RULE}; batch work after it: "
                            + ", ".join(f"{x.policy} {x.batch_acc_hours_after:,.0f} acc-h (ends day "
                                        f"{max(x.end_s, x.window_s) / 86400:,.2f})" for x in results)],
    ]
    return rows


def _inventory_rows(network: Network) -> list[list[object]]:
    return [[d.id, d.region.value, d.pue, d.price_cny_kwh,
             ", ".join(f"{p.count} x {p.model} ({p.watts:g} W)" for p in d.pools), d.cpus, d.memory_gb,
             d.utilisation_target] for d in network.data_centers]


def _tenancy_lines(results: Sequence[PolicyResult], tenants: Tenants | None) -> list[str]:
    """The tenants section: per policy and tenant, and what the tenants were."""
    if tenants is None:
        who = ("One tenant (`default`) holds the whole network (no tenants file: `--tenants none`, or the "
               "config dir has none); batch jobs run best-effort, real-time demand as realtime.")
    else:
        who = (f"Tenants from `{tenants.source}`: "
               + ", ".join(f"{n} (weight {t.weight:g}, nominal accelerators "
                           f"{', '.join(f'{k} {v:,}' for k, v in t.quota.accelerators.items()) or 'none'})"
                           for n, t in tenants.tenants.items()) + ".")
    return [
        "## Tenants",
        "",
        who,
        "",
        markdown_table(TENANT_HEADERS, tenant_rows(results)),
        "",
        "Wait = first start - (scaled) submit time, per tenant (p50, p95, nearest rank). acc-h share: the "
        "tenant's share of the batch accelerator-hours run; share / weight share is 1.00 when it got exactly "
        "its weight's share. Jain's index is over x = share / weight for the tenants that submitted work "
        "(1 = perfectly weighted-fair, 1/n at worst); it measures the outcome, which also follows each "
        "tenant's demand. Preempted: batch jobs of the tenant stopped (and requeued with their remaining "
        "work) for real-time or higher-priority work.",
        "",
    ]


def write_report(out_dir: Path, results: Sequence[PolicyResult], network: Network, workload: Workload,
                 traces: TraceSet, *, elapsed_s: float, seed: int, tenants: Tenants | None = None,
                 clock: Clock | None = None, east_goal: float = 0.35) -> Path:
    """Write ``report.md``, ``utilisation.png``, ``cost_sla.png``, ``cost_hourly.png``, ``deferrals.png`` and
    ``waits.png`` into ``out_dir``. ``east_goal``: the saving against east-first the goals table asks."""
    clock = Clock() if clock is None else clock
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_utilisation(results, out_dir / "utilisation.png")
    plot_cost_sla(results, out_dir / "cost_sla.png")
    plot_cost_hourly(results, network, clock, out_dir / "cost_hourly.png")
    plot_deferrals(results, out_dir / "deferrals.png")
    plot_waits(results, out_dir / "waits.png")
    uses_azure = any(n.startswith("azure") for n in traces.names)
    lat = workload.latency
    per_dc = markdown_table(["policy"] + [d.id for d in network.data_centers],
                            [[r.policy] + [f"{r.util_dc[d.id]:.0%}" for d in network.data_centers]
                             for r in results])
    lines = [
        "# westflow network simulation",
        "",
        f"Traces: {', '.join(traces.names)}; {len(workload.jobs):,} batch jobs; simulated window "
        f"{workload.window_s / 86400:.2f} days ({workload.steps:,} one-minute steps); seed {seed}; "
        f"wall time {elapsed_s:.1f} s.",
        "",
        *[f"> **Warning:** {w}" for w in warnings(results[0], workload)],
        "",
        "## Summary",
        "",
        markdown_table(["", "value"], summary_rows(results, workload, traces)),
        "",
        "## Goals",
        "",
        markdown_table(GOAL_HEADERS, goal_rows(results, east_goal=east_goal)),
        "",
        "## Comparison",
        "",
        markdown_table(COMPARISON_HEADERS, comparison_rows(results)),
        "",
        f"Offered (same for every policy): {results[0].rt_requests:,.0f} real-time requests "
        f"({results[0].rt_demand_acc_min / 60:,.0f} accelerator-hours) and "
        f"{sum(j.accelerators * j.duration_s for j in workload.jobs) / 3600:,.0f} batch accelerator-hours. "
        "Utilisation is time-averaged over the window (batch and real-time accelerators in use / "
        "accelerators). Real-time requests are counted in trace requests after load scaling; "
        "'beyond 20 ms' were placed at a DC whose RTT to their origin exceeds the realtime tier; "
        "'% rows / % acc-s' gives each share per trace row and per accelerator-second of work (within a "
        "minute's demand, rows are counted pro rata of its accelerators; a long-lived service is one row); "
        "'dropped' found no DC within the bound with room. Cost is energy (power x time x PUE x "
        "price) plus data transfer, as `place()` prices it; CNY/acc-h divides by the "
        "accelerator-hours actually served. 'all work' extends the window until the policy's last batch job "
        "ends ('ends day') and counts every run in full: the goals compare these, since a policy that leaves "
        "more work past the window would otherwise look cheaper. Batch wait = start - (scaled) submit time.",
        "",
        "![utilisation per region](utilisation.png)",
        "",
        "![cost and SLA](cost_sla.png)",
        "",
        "![batch waits](waits.png)",
        "",
        "## Placement in time",
        "",
        f"Clock: {clock.describe()}. Energy is billed at each DC's time-of-use tariff for the simulated hours "
        "the work runs (a DC without one: its flat price). A policy that defers (westflow) gets each batch "
        "job's deadline and the clock's now, and may start it later, in cheaper hours, while it still "
        "finishes by the deadline with a margin; the baselines run at once. A job queued past the last start "
        "that meets its deadline is placed at once, and a job finishing after its deadline is a miss (counted "
        "for every policy against the same deadline). Queue wait = first start - max(submit, chosen start).",
        "",
        markdown_table(TIME_HEADERS, time_rows(results)),
        "",
        f"![cost per hour, tariff bands of {representative_dc(results, network)} shaded](cost_hourly.png)",
        "",
        "![hours deferred](deferrals.png)",
        "",
        "## Real-time RTT margin",
        "",
        "RTT (as the network models or measures it) of the real-time requests each policy placed, and how many "
        "would exceed the tier's bound if route inflation were "
        "2.1 x great circle instead of the model's (`westflow.latency_margin.realtime_margin`). Eligibility "
        "keeps the tier's guard band (`limit_ms`); SLA misses count against the bound (`max_rtt_ms`).",
        "",
        markdown_table(MARGIN_HEADERS, margin_rows(results, network)),
        "",
        "### Utilisation per data center",
        "",
        per_dc,
        "",
        *_tenancy_lines(results, tenants),
        "## Assumptions",
        "",
        "- **Inventory** (`configs/network.yaml`, every DC starts empty = `full_capacity`):",
        "",
        markdown_table(["DC", "region", "PUE", "CNY/kWh", "accelerators", "CPUs", "memory GB", "target"],
                       _inventory_rows(network)),
        "",
        "  Prices, PUE and power as the inventory states them (its sources and assumptions are "
        "commented there). Energy counts busy accelerators and CPUs only; idle power is not modelled.",
        f"- **Load scaling** (arrivals, never the inventory; the same for every policy): batch "
        f"{workload.notes.get('batch arrivals')}; real-time {workload.notes.get('real-time arrivals')}.",
        f"- **Batch jobs**: accelerator family `any`, {BATCH_CPUS_PER_ACCELERATOR:g} CPUs and "
        f"{BATCH_MEMORY_GB_PER_ACCELERATOR:g} GB per accelerator, the trace's duration, priority class "
        f"`{BATCH_CLASS}` unless told otherwise. Every admission goes through the admission cycle the "
        "controller runs (`westflow.admission_cycle`: priority, weighted fair share, age; quotas and "
        "borrowing; preemption), once after the events of each second with work pending; a job that "
        "fits nowhere waits and never blocks another. A preempted job stops at once, goes back to the "
        "queue with the work it has left and resumes from its checkpoint (no work lost; the live grace "
        "period is not modelled).",
        "- **Tenants of batch jobs**: the trace's `tenant` column where it has one; else a stable hash "
        "(SHA-256) of the job id (ITP `job_id`; a generic trace's file and row) over the tenants, "
        "weighted by their weights. Quotas are scaled so the nominal quotas add up to the network "
        "(one factor for accelerators, CPUs, memory; `--quota-scale as-is` keeps them).",
        "- **ITP cluster -> origin city** (the trace has no location): "
        + ", ".join(f"{k} {v}" for k, v in ITP_ORIGINS.items()) + ".",
        f"- **Real-time service model** (one accelerator, continuous batching): "
        f"{lat.prefill_ms_per_token:g} ms per context token + {lat.decode_ms_per_token:g} ms per generated "
        "token. Demand per city and minute = ceil(scaled arrivals x service seconds / 60 s) accelerators, "
        f"family `any`, {RT_CPUS_PER_ACCELERATOR:g} CPU and {RT_MEMORY_GB_PER_ACCELERATOR:g} GB per "
        "accelerator, held for the minute. The one-hour stream is tiled over the window.",
        "- **Origin cities of real-time requests** (assumption, seeded draw): "
        + ", ".join(f"{k} {v:.0%}" for k, v in ORIGIN_SHARES.items()) + ".",
        "- **Real-time first**: each minute, real-time demand (priority class `realtime`, the default "
        "tenant's unless told otherwise) is admitted before any batch of the minute; where no DC within "
        "20 ms has room it may preempt best-effort batch (its tenant's own, or others' only within what "
        "they borrow), and is then counted 'by preemption'; what no DC within the bound can hold even so "
        "is dropped. Demand larger than one DC's room is split across DCs, each piece placed by the policy.",
        "- **Policies**: the same `Policy.place()` the CLI and Dagster use "
        "(`westflow.placement.get_policy`), fed a `DCCapacity` snapshot the simulator maintains.",
        "",
        "## Sources",
        "",
        "- ITP: Microsoft ITP GPU clusters, `microsoft/elasticflow-traces` (ElasticFlow, ASPLOS'23), MIT.",
    ]
    if uses_azure:
        lines.append(f"- Azure LLM inference trace 2023, `Azure/AzurePublicDataset`, CC-BY-4.0. "
                     f"Results computed from it: {SPLITWISE_CITATION}.")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
