"""From traces to what the simulator replays: scaled batch jobs and per-minute real-time demand.

Load scaling scales *arrivals*, never the inventory:

- batch: submit times are divided by ``k`` so the offered load (accelerator-seconds
  per second of the window) equals ``batch_load`` x the network's accelerators; the
  window shrinks by the same ``k``; durations and sizes are the trace's own;
- real-time: every minute's arrivals are multiplied by ``m`` so the mean demand
  equals ``realtime_load`` x the eastern accelerators.

Real-time demand of a minute, city and accelerator family = ceil(sum of service seconds of
its requests / 60), the accelerators that keep up with it. A generic real-time row longer
than a step is a long-lived *service* (:class:`Service`): it holds its accelerators from its
start to its end, once (never tiled, never scaled). Service seconds of one request on one
accelerator = ``prefill_ms_per_token`` x context tokens + ``decode_ms_per_token`` x
generated tokens (:class:`LatencyModel`). The Azure stream (an hour) is tiled over the
window; a generic trace's real-time rows are replayed once, as they are.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field, replace

from westflow.inventory import BATCH, Family, Network, Region
from westflow.simulator.traces import BatchJob, TraceLimits, TraceSet
from westflow.spec import AcceleratorRequest, WorkloadSpec

__all__ = [
    "PREFILL_MS_PER_TOKEN", "DECODE_MS_PER_TOKEN", "LatencyModel", "ORIGIN_SHARES", "LoadScaling",
    "Workload", "build_workload", "STEP_S", "BATCH_CPUS_PER_ACCELERATOR", "BATCH_MEMORY_GB_PER_ACCELERATOR",
    "Service", "trace_limits",
]

STEP_S = 60.0  # one real-time step: a minute
BATCH_CPUS_PER_ACCELERATOR = 2.0
BATCH_MEMORY_GB_PER_ACCELERATOR = 16.0
PREFILL_MS_PER_TOKEN = 0.5
DECODE_MS_PER_TOKEN = 15.0

# Share of real-time requests per origin city (an assumption: roughly the cities' weight in
# China's digital economy; Beijing/Shanghai/Guangdong lead).
ORIGIN_SHARES = {
    "beijing": 0.16, "shanghai": 0.16, "guangzhou": 0.10, "shenzhen": 0.12, "hangzhou": 0.09,
    "chengdu": 0.08, "chongqing": 0.06, "wuhan": 0.08, "nanjing": 0.08, "xian": 0.07,
}


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Accelerator-seconds of one LLM request on one accelerator (assumption).

    Defaults: a 70B-class model on one H800/910B-class accelerator with continuous
    batching: prefill 0.5 ms per context token, decode 15 ms per generated token.
    """

    prefill_ms_per_token: float = PREFILL_MS_PER_TOKEN
    decode_ms_per_token: float = DECODE_MS_PER_TOKEN

    def service_s(self, context_tokens: int, generated_tokens: int) -> float:
        return (self.prefill_ms_per_token * context_tokens + self.decode_ms_per_token * generated_tokens) / 1000


@dataclass(frozen=True, slots=True)
class LoadScaling:
    """Target offered loads; None keeps the trace's own arrival rate."""

    batch_load: float | None = 0.55      # x all accelerators of the network
    realtime_load: float | None = 0.30   # x the eastern accelerators


@dataclass(frozen=True, slots=True)
class Service:
    """A long-lived real-time row: ``accelerators`` of ``family`` for ``city`` from ``start_s`` to ``end_s``."""

    start_s: float
    end_s: float
    city: str
    family: str
    accelerators: int
    row: int = 0


def trace_limits(network: Network) -> TraceLimits:
    """The network's cities, and per family the largest batch job one DC can hold (one pool, with the
    CPUs and memory a batch job takes per accelerator)."""
    largest: dict[str, int] = {}
    for d in network.data_centers:
        room = min(int(d.cpus // BATCH_CPUS_PER_ACCELERATOR), int(d.memory_gb // BATCH_MEMORY_GB_PER_ACCELERATOR))
        for p in d.pools:
            n = min(p.count, room)
            for fam in (p.family.value, Family.ANY.value):
                largest[fam] = max(largest.get(fam, 0), n)
    return TraceLimits(frozenset(network.city_ids), largest)


@dataclass(frozen=True)
class Workload:
    """What the engine replays (same for every policy)."""

    jobs: tuple[BatchJob, ...]               # submit times already scaled
    window_s: float                          # simulated window (real-time stream runs over it)
    rt_cities: tuple[str, ...]               # per column: its origin city (a city repeats for other families)
    rt_demand: tuple[tuple[int, ...], ...]   # [minute of period][column] accelerators
    rt_requests: tuple[tuple[float, ...], ...]  # [minute of period][column] requests (scaled)
    batch_factor: float | None               # None: the trace's own arrivals (no scaling asked)
    realtime_factor: float | None
    latency: LatencyModel
    notes: dict[str, str] = field(default_factory=dict)
    rt_families: tuple[str, ...] = ()        # per column: its accelerator family ('any' where empty)
    rt_work: tuple[tuple[float, ...], ...] = ()  # [minute of period][column] accelerator-seconds (scaled)
    services: tuple[Service, ...] = ()       # long-lived real-time rows, by start
    batch_span_s: float = 0.0                # the trace's batch arrival span (last - first submit), unscaled
    origins_s: tuple[tuple[str, float], ...] = ()
    rt_tiled: bool = True                    # the stream repeats over the window (Azure); not a generic trace's

    def family(self, column: int) -> str:
        return self.rt_families[column] if self.rt_families else Family.ANY.value

    @functools.cached_property
    def batch_specs(self) -> list[WorkloadSpec]:
        """One WorkloadSpec per job (built once, shared by every policy and forked worker)."""
        return [WorkloadSpec(name=f"job{i}", tier=BATCH, origin=j.origin,
                             accelerator=AcceleratorRequest(Family(j.family), j.accelerators),
                             cpus=BATCH_CPUS_PER_ACCELERATOR * j.accelerators,
                             memory_gb=BATCH_MEMORY_GB_PER_ACCELERATOR * j.accelerators,
                             duration_hours=j.duration_s / 3600) for i, j in enumerate(self.jobs)]

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.window_s / STEP_S))


def build_workload(
    traces: TraceSet,
    network: Network,
    *,
    scaling: LoadScaling = LoadScaling(),
    latency: LatencyModel = LatencyModel(),
    window_s: float | None = None,
    seed: int = 0,
    origin_shares: dict[str, float] | None = None,
) -> Workload:
    """Scale and aggregate ``traces`` for ``network`` (deterministic for a seed)."""
    rng = random.Random(seed)
    shares = {c: w for c, w in (origin_shares or ORIGIN_SHARES).items() if c in network.city_ids}
    if not shares:
        shares = {c: 1.0 for c in network.city_ids}
    cities = tuple(network.city_ids)
    total_acc = sum(d.accelerator_total for d in network.data_centers)
    east_acc = sum(d.accelerator_total for d in network.data_centers if d.region is Region.EAST)

    # batch: compress arrivals to the target load, over the arrivals' own span (not from t = 0)
    jobs = traces.batch
    start = min((j.submit_s for j in jobs), default=0.0)
    span = max((j.submit_s for j in jobs), default=0.0) - start
    work = sum(j.duration_s * j.accelerators for j in jobs)
    k = 1.0
    if jobs and scaling.batch_load and work > 0:
        k = scaling.batch_load * total_acc * max(span, 1.0) / work
    scaled = tuple(
        replace(j, submit_s=(j.submit_s - start) / k,
                origin=j.origin or rng.choices(list(shares), weights=list(shares.values()))[0])
        for j in jobs)

    # real-time: accelerator-seconds per (minute of the period, city and family); long rows are services
    period_steps = max(1, math.ceil(traces.request_period_s / STEP_S))
    columns = {(c, Family.ANY.value): i for i, c in enumerate(cities)}
    work_grid: list[list[float]] = [[0.0] * len(cities) for _ in range(period_steps)]
    req_grid: list[list[float]] = [[0.0] * len(cities) for _ in range(period_steps)]
    names, weights = list(shares), list(shares.values())
    services: list[Service] = []
    for r in traces.requests:
        city = r.origin or rng.choices(names, weights=weights)[0]
        if r.duration_s > STEP_S:
            services.append(Service(r.t_s, r.t_s + r.duration_s, city, r.family, r.accelerators, r.row))
            continue
        col = columns.setdefault((city, r.family), len(columns))
        if col == len(work_grid[0]):
            for row in (*work_grid, *req_grid):
                row.append(0.0)
        m = int(r.t_s // STEP_S) % period_steps
        s = r.accel_seconds if r.accel_seconds is not None else latency.service_s(r.context_tokens,
                                                                                  r.generated_tokens)
        work_grid[m][col] += s
        req_grid[m][col] += 1
    mean_acc = sum(map(sum, work_grid)) / STEP_S / period_steps
    mfac = 1.0
    if mean_acc > 0 and scaling.realtime_load:
        mfac = scaling.realtime_load * east_acc / mean_acc
    demand = tuple(tuple(math.ceil(w * mfac / STEP_S - 1e-9) for w in row) for row in work_grid)
    requests = tuple(tuple(n * mfac for n in row) for row in req_grid)
    rt_work = tuple(tuple(w * mfac for w in row) for row in work_grid)
    if window_s is None:
        # the batch arrivals (scaled) and every real-time row of a generic trace (as written) fit in it
        rt_end = max([r.t_s for r in traces.requests if r.accel_seconds is not None], default=-STEP_S)
        window_s = max(span / k + STEP_S if jobs else 86400.0, rt_end + STEP_S)
    notes = {
        "batch arrivals": f"x{k:.3f} (submit times / {k:.3f}); offered {scaling.batch_load} x {total_acc} accelerators"
        if scaling.batch_load and jobs else "as in the trace (x1)",
        "real-time arrivals": f"x{mfac:.3f}; offered {scaling.realtime_load} x {east_acc} eastern accelerators"
        if scaling.realtime_load and mean_acc else "as in the trace (x1)",
    }
    generic = any(r.accel_seconds is not None for r in traces.requests)
    if generic:
        notes["real-time stream"] = "replayed once, as in the trace (a generic trace's stream is not tiled)"
    if services:
        notes["real-time services"] = (f"{len(services):,} rows longer than {STEP_S:g} s held for their duration, "
                                       "as in the trace (not scaled, not tiled)")
    by_col = sorted(columns.items(), key=lambda kv: kv[1])
    return Workload(scaled, float(window_s), tuple(c for (c, _), _ in by_col), demand, requests,
                    k if scaling.batch_load and jobs else None, mfac if scaling.realtime_load and mean_acc else None,
                    latency, notes, tuple(f for (_, f), _ in by_col), rt_work,
                    tuple(sorted(services, key=lambda x: x.start_s)), span, traces.origins_s, not generic)
