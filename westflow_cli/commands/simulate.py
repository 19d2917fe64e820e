"""``westflow simulate``: replay real traces through every placement policy and compare."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from westflow.config import CONFIG_DIR, load_network, load_yaml
from westflow.errors import SpecError
from westflow.inventory import Network
from westflow.placement import POLICY_NAMES
from westflow.simulator.clock import DEFAULT_DEADLINE_SLACK, DEFAULT_EPOCH, SHANGHAI, Clock
from westflow.simulator.compare import COMPARISON_HEADERS, TENANT_HEADERS, comparison_rows, run_policies, tenant_rows
from westflow.simulator.demand import (
    DECODE_MS_PER_TOKEN,
    PREFILL_MS_PER_TOKEN,
    LatencyModel,
    LoadScaling,
    build_workload,
    trace_limits,
)
from westflow.simulator.report import warnings, write_report
from westflow.simulator.tenancy import BATCH_CLASS, scaled_to, whole_network
from westflow.simulator.traces import DEFAULT_TRACES_DIR, SPLITWISE_CITATION, TRACE_NAMES, load_traces
from westflow.tenants import TENANTS_FILE, Tenants, parse_tenants
from westflow.text import table
from westflow_cli.options import number, out_dir, whole, writable_dir

MAX_DAYS = 366            # the longest window simulated (a leap year of minutes)
MAX_LOAD = 100.0          # offered load, as a share of the accelerators it is scaled to
MAX_MS_PER_TOKEN = 60_000.0


def load_factor(high: float) -> Callable[[str], float | None]:
    """An offered load in ``[0, high]``, or ``none`` (also ``0``): replay the trace's arrivals as they are."""
    parse = number(low=0, high=high)

    def factor(text: str) -> float | None:
        if text.strip().lower() == "none":
            return None
        return parse(text) or None

    return factor


def deadline_slack(text: str) -> float | None:
    """``none``: no deadlines (nothing deferred); else a factor >= 1 of a job's duration."""
    if text.strip().lower() == "none":
        return None
    return number(low=1, high=1000)(text)


def start_time(text: str) -> datetime:
    """An ISO date or date-time; without an offset, Asia/Shanghai."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --start {text!r}: must be an ISO date or date-time, e.g. "
                                         "2026-01-05T00:00+08:00") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=SHANGHAI)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="replay workload traces through the placement policies")
    p.add_argument("--trace", action="append", default=None, metavar="NAME|PATH",
                   help=f"{', '.join(TRACE_NAMES)} or a CSV 'submit_s,duration_s,accelerators,tier"
                        "[,origin][,family]' (repeatable; default: itp and azure-conv)")
    p.add_argument("--policy", default="all", choices=("all",) + POLICY_NAMES)
    p.add_argument("--out", default="simulation", type=out_dir(), help="directory for report.md and the plots")
    p.add_argument("--traces-dir", default=str(DEFAULT_TRACES_DIR), help="where itp/ and azure/ are")
    p.add_argument("--seed", type=whole(low=0, high=2**32 - 1), default=0,
                   help="seed of origin draws and the random policy")
    p.add_argument("--batch-load", type=load_factor(MAX_LOAD), default=0.55,
                   help="offered batch load as a share of all accelerators ('none' or 0: the trace's arrivals as "
                        "they are)")
    p.add_argument("--realtime-load", type=load_factor(MAX_LOAD), default=0.30,
                   help="offered real-time load as a share of eastern accelerators ('none' or 0: the trace's "
                        "arrivals as they are)")
    p.add_argument("--days", type=number(low=0, high=MAX_DAYS, low_open=True), default=None,
                   help=f"simulated window, at most {MAX_DAYS} (default: the scaled trace span)")
    p.add_argument("--prefill-ms", type=number(low=0, high=MAX_MS_PER_TOKEN),
                   default=PREFILL_MS_PER_TOKEN, help="accelerator ms per context token")
    p.add_argument("--decode-ms", type=number(low=0, high=MAX_MS_PER_TOKEN),
                   default=DECODE_MS_PER_TOKEN, help="accelerator ms per generated token")
    p.add_argument("--processes", type=whole(low=1, high=64), default=2,
                   help="policies simulated in parallel")
    p.add_argument("--tenants", default=None, metavar="PATH|none",
                   help=f"who shares the network: a tenants file (default: the config dir's {TENANTS_FILE} if it "
                        "has one); 'none': one tenant holds the whole network")
    p.add_argument("--quota-scale", default="network", choices=("network", "as-is"),
                   help="scale the tenants' quotas so their nominal quotas add up to the network (default), "
                        "or take them as written")
    p.add_argument("--batch-class", default=BATCH_CLASS, metavar="CLASS",
                   help="priority class of batch jobs (where their tenant may use it; default best-effort: "
                        "real-time work may preempt it)")
    p.add_argument("--realtime-tenant", default=None, metavar="TENANT",
                   help="tenant of the real-time demand (default: the default tenant)")
    p.add_argument("--start", type=start_time, default=DEFAULT_EPOCH, metavar="ISO",
                   help="wall-clock time of the trace's origin (t = 0), for the time-of-use tariffs (default "
                        f"{DEFAULT_EPOCH.isoformat()}, 00:00 Asia/Shanghai; without an offset: Asia/Shanghai)")
    p.add_argument("--deadline-slack", type=deadline_slack, default=DEFAULT_DEADLINE_SLACK, metavar="K|none",
                   help="batch deadline = submit + K x duration, so a policy that defers (westflow) may start it "
                        f"in cheaper hours (default {DEFAULT_DEADLINE_SLACK:g}); 'none': no deadlines, no deferral")
    p.set_defaults(func=run)


def _progress(policy: str, frac: float) -> None:
    print(f"westflow simulate: {policy:<12} {frac:4.0%}", file=sys.stderr, flush=True)


def _tenants(args: argparse.Namespace, network: Network) -> Tenants | None:
    """The tenants the simulation runs (None: one tenant holds the network), checked against the flags."""
    tenants: Tenants | None = None
    path = Path(args.tenants) if args.tenants else Path(args.config_dir or CONFIG_DIR) / TENANTS_FILE
    if args.tenants != "none" and (args.tenants is not None or path.exists()):
        tenants = parse_tenants(load_yaml(path), models={p.model for d in network.data_centers for p in d.pools},
                                file=str(path))
    effective = tenants or whole_network(network)
    if args.batch_class not in effective.priority_classes:
        raise SpecError("--batch-class", args.batch_class, sorted(effective.priority_classes), problem="Unknown")
    if args.realtime_tenant is not None:
        effective.check(args.realtime_tenant, "realtime")
    if tenants is not None and args.quota_scale == "network":
        return scaled_to(tenants, network)
    return tenants


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    network = load_network(args.config_dir or CONFIG_DIR)
    tenants = _tenants(args, network)
    names = args.trace or ["itp", "azure-conv"]
    print(f"westflow simulate: loading {', '.join(names)} from {args.traces_dir}", file=sys.stderr, flush=True)
    traces = load_traces(names, Path(args.traces_dir), trace_limits(network))
    workload = build_workload(
        traces, network,
        scaling=LoadScaling(args.batch_load, args.realtime_load),
        latency=LatencyModel(args.prefill_ms, args.decode_ms),
        window_s=args.days * 86400 if args.days else None, seed=args.seed)
    if workload.window_s > MAX_DAYS * 86400:  # only a scaled trace span gets here: --days is bounded
        raise SpecError("window", f"{workload.window_s / 86400:,.0f} days", f"<= {MAX_DAYS} days",
                        problem="Out of range",
                        fix="set --days, or raise --batch-load ('none' keeps the trace's rate).")
    out = writable_dir("--out", args.out)  # before the long part: a bad --out fails now, not after
    clock = Clock(args.start.timestamp(), args.deadline_slack)
    policies = list(POLICY_NAMES) if args.policy == "all" else [args.policy]
    print(f"westflow simulate: {len(workload.jobs):,} batch jobs, {workload.steps:,} steps, "
          f"policies {', '.join(policies)}", file=sys.stderr, flush=True)
    results = run_policies(policies, network, workload, seed=args.seed, processes=args.processes,
                           progress=_progress, tenants=tenants, realtime_tenant=args.realtime_tenant,
                           batch_class=args.batch_class, clock=clock)
    elapsed = time.perf_counter() - t0
    print(table(COMPARISON_HEADERS, comparison_rows(results)))
    print()
    print(table(TENANT_HEADERS, tenant_rows(results)))
    try:
        report = write_report(out, results, network, workload, traces, elapsed_s=elapsed, seed=args.seed,
                              tenants=tenants, clock=clock,
                              east_goal=0.20 if (args.batch_load or 0.0) >= 0.95 else 0.35)
    except OSError as exc:
        raise SpecError("--out", str(out), f"a directory westflow can write into ({exc.strerror or exc})",
                        problem="Cannot write") from None
    for line in warnings(results[0], workload):
        print(f"westflow simulate: warning: {line}", file=sys.stderr)
    print(f"\nreport: {report}  ({elapsed:.1f} s)")
    if any(n.startswith("azure") for n in names):
        print(f"Azure trace results: {SPLITWISE_CITATION}.")
    return 0
