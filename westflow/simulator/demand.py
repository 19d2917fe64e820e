"""From traces to what the simulator replays: scaled batch jobs and per-minute real-time demand.

Load scaling scales *arrivals*, never the inventory:

- batch: submit times are divided by ``k`` so the offered load (accelerator-seconds
  per second of the window) equals ``batch_load`` x the network's accelerators; the
  window shrinks by the same ``k``; durations and sizes are the trace's own;
- real-time: every minute's arrivals are multiplied by ``m`` so the mean demand
  equals ``realtime_load`` x the eastern accelerators.

Real-time demand of a minute and city = ceil(sum of service seconds of its requests / 60),
the accelerators that keep up with it. Service seconds of one request on one
accelerator = ``prefill_ms_per_token`` x context tokens + ``decode_ms_per_token`` x
generated tokens (:class:`LatencyModel`). The stream (an hour for Azure) is tiled
over the window.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field, replace

from westflow.inventory import BATCH, Family, Network, Region
from westflow.simulator.traces import BatchJob, TraceSet
from westflow.spec import AcceleratorRequest, WorkloadSpec

__all__ = [
    "PREFILL_MS_PER_TOKEN", "DECODE_MS_PER_TOKEN", "LatencyModel", "ORIGIN_SHARES", "LoadScaling",
    "Workload", "build_workload", "STEP_S", "BATCH_CPUS_PER_ACCELERATOR", "BATCH_MEMORY_GB_PER_ACCELERATOR",
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


@dataclass(frozen=True)
class Workload:
    """What the engine replays (same for every policy)."""

    jobs: tuple[BatchJob, ...]               # submit times already scaled
    window_s: float                          # simulated window (real-time stream runs over it)
    rt_cities: tuple[str, ...]
    rt_demand: tuple[tuple[int, ...], ...]   # [minute of period][city] accelerators
    rt_requests: tuple[tuple[float, ...], ...]  # [minute of period][city] requests (scaled)
    batch_factor: float
    realtime_factor: float
    latency: LatencyModel
    notes: dict[str, str] = field(default_factory=dict)

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

    # batch: compress arrivals to the target load
    jobs = traces.batch
    k = 1.0
    span = max((j.submit_s for j in jobs), default=0.0)
    if jobs and scaling.batch_load:
        work = sum(j.duration_s * j.accelerators for j in jobs)
        k = scaling.batch_load * total_acc * max(span, 1.0) / work
    start = min((j.submit_s for j in jobs), default=0.0)
    scaled = tuple(
        replace(j, submit_s=(j.submit_s - start) / k,
                origin=j.origin or rng.choices(list(shares), weights=list(shares.values()))[0])
        for j in jobs)
    if window_s is None:
        window_s = (span - start) / k + STEP_S if jobs else 86400.0

    # real-time: accelerator-seconds per (minute of the period, city)
    period_steps = max(1, math.ceil(traces.request_period_s / STEP_S))
    work_grid = [[0.0] * len(cities) for _ in range(period_steps)]
    req_grid = [[0.0] * len(cities) for _ in range(period_steps)]
    names, weights = list(shares), list(shares.values())
    index = {c: i for i, c in enumerate(cities)}
    for r in traces.requests:
        m = int(r.t_s // STEP_S) % period_steps
        city = r.origin or rng.choices(names, weights=weights)[0]
        s = r.accel_seconds if r.accel_seconds is not None else latency.service_s(r.context_tokens,
                                                                                  r.generated_tokens)
        work_grid[m][index[city]] += s
        req_grid[m][index[city]] += 1
    mean_acc = sum(map(sum, work_grid)) / STEP_S / period_steps
    mfac = 1.0
    if mean_acc > 0 and scaling.realtime_load:
        mfac = scaling.realtime_load * east_acc / mean_acc
    demand = tuple(tuple(math.ceil(w * mfac / STEP_S - 1e-9) for w in row) for row in work_grid)
    requests = tuple(tuple(n * mfac for n in row) for row in req_grid)
    notes = {
        "batch arrivals": f"x{k:.3f} (submit times / {k:.3f}); offered {scaling.batch_load} x {total_acc} accelerators"
        if scaling.batch_load and jobs else "as in the trace",
        "real-time arrivals": f"x{mfac:.3f}; offered {scaling.realtime_load} x {east_acc} eastern accelerators"
        if scaling.realtime_load and mean_acc else "as in the trace",
    }
    return Workload(scaled, float(window_s), cities, demand, requests, k, mfac, latency, notes)
