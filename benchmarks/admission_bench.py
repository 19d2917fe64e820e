"""One admission cycle over 10,000 pending workloads from 20 tenants (issue 14's speed goal).

Prints the CPU time (``time.process_time``) of one :func:`westflow.admission_cycle.admission_cycle`
and per decision (one decision per pending ask: admitted or waiting with its reasons), on the
national inventory (``configs/network.yaml``) and on the synthetic 1,000-DC inventory of
:mod:`benchmarks.placement_bench`, with the goals beside them: <= 0.5 s national, <= 5 s at 1,000
DCs. Each figure is the median of 5 cycles over the same input (a cycle is a pure function); one
more cycle times its ``place()`` calls, to show what of a cycle is placement and what is admission.

The setup, the same shape on both inventories (seeded):

- 20 tenants in one cohort, weights 1-3; each with a nominal quota of 1/20 of the network's CUDA and
  CANN accelerators, CPUs and memory, a borrowing limit of as much again; every fourth tenant also
  has a region quota (half its nominal, in the east);
- half of every pool held by 4-accelerator work of those tenants (best-effort and production;
  some tenants over their nominal quota: they borrow), so quotas, borrowing and preemption are live
  (on the 1,000-DC inventory every pending ask then fits: each one is a ``place()`` call, the worst
  case; a last line holds 95 % of every pool there, where most wait);
- 10,000 pending asks: the placement benchmark's mix (60 % batch, 40 % real-time from every city;
  batch production or best-effort, real-time realtime), tenants drawn at random.

    .venv/bin/python -m benchmarks.admission_bench [--rounds 5] [--pending 10000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.placement_bench import spec_mix, synthetic_network
from westflow.admission_cycle import Ask, CycleResult, Held, admission_cycle, held_per_dc
from westflow.capacity import Capacity, Resources, after_holds, full_capacity, inventory_totals
from westflow.inventory import Family, Network
from westflow.placement import Placement, Policy, get_policy
from westflow.spec import WorkloadSpec
from westflow.tenants import Tenants, parse_tenants

GOAL_NATIONAL_S = 0.5
GOAL_1000_S = 5.0
TENANTS = 20


def bench_tenants(network: Network, n: int = TENANTS) -> Tenants:
    """``n`` tenants in one cohort, each nominal 1/n of the network, borrowing as much again."""
    acc = {f.value: sum(p.count for d in network.data_centers for p in d.pools if p.family is f)
           for f in (Family.CUDA, Family.CANN)}
    cpus = sum(d.cpus for d in network.data_centers)
    mem = sum(d.memory_gb for d in network.data_centers)
    share = {"accelerators": {f: max(1, c // n) for f, c in acc.items()}, "cpus": cpus / n, "memory_gb": mem / n}
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {"name": f"t{i:02d}", "weight": 1 + i % 3, "cohort": "all", "quota": share,
                               "borrowing_limit": share, "priority_classes": ["realtime", "production", "best-effort"]}
        if i % 4 == 0:
            row["regions"] = {"east": {"accelerators": {f: max(1, c // (2 * n)) for f, c in acc.items()}}}
        rows.append(row)
    models = {p.model for d in network.data_centers for p in d.pools}
    return parse_tenants({
        "priority_classes": [{"name": "realtime", "value": 1000}, {"name": "production", "value": 100},
                             {"name": "best-effort", "value": 0, "preemptible": True}],
        "cohorts": [{"name": "all"}], "tenants": rows, "default_tenant": "t00"}, models=models)


def bench_held(network: Network, tenants: Tenants, seed: int = 4, share: float = 0.5) -> list[Held]:
    """``share`` of every pool held by 4-accelerator work; the first tenants hold more (they borrow)."""
    rng = random.Random(seed)
    names = list(tenants.tenants)
    skew = [3.0 if i < 4 else 1.0 for i in range(len(names))]
    out: list[Held] = []
    for d in network.data_centers:
        for p in d.pools:
            for j in range(int(p.count * share) // 4):
                tenant = rng.choices(names, weights=skew)[0]
                cls = rng.choice(["best-effort", "production"])
                out.append(Held(f"held-{d.id}-{p.model}-{j}", tenant, cls, d.id, d.region.value, p.family.value,
                                Resources({p.model: 4}, 8.0, 32.0), rng.uniform(0, 1000)))
    return out


def bench_pending(network: Network, tenants: Tenants, n: int, seed: int = 5) -> list[Ask]:
    rng = random.Random(seed)
    mix = spec_mix(network, n=500, seed=seed)
    names = list(tenants.tenants)
    out = []
    for i in range(n):
        spec = mix[i % len(mix)].copy(tenant=rng.choice(names))
        cls = "realtime" if spec.tier == "realtime" else rng.choice(["production", "best-effort"])
        out.append(Ask(f"ask-{i}", spec, cls, rng.uniform(0, 3600)))
    return out


class _Timed(Policy):
    """The westflow policy, timing its ``place()`` calls (CPU time): what of a cycle is placement."""

    def __init__(self) -> None:
        self.inner = get_policy("westflow")
        self.name = self.inner.name
        self.seconds = 0.0
        self.calls = 0

    def place(self, spec: WorkloadSpec, network: Network, capacity: Capacity | None = None,
              *, now: float | None = None) -> Placement:
        t0 = time.process_time()
        try:
            return self.inner.place(spec, network, capacity, now=now)
        finally:
            self.seconds += time.process_time() - t0
            self.calls += 1


def place_share(network: Network, pending: Sequence[Ask], held: Sequence[Held], tenants: Tenants) -> _Timed:
    """One more cycle, its ``place()`` calls timed (not counted in the figures: timing costs a little)."""
    totals = full_capacity(network)
    free = after_holds(totals, held_per_dc(held), {d.id: totals[d.id] for d in network.data_centers})
    timed = _Timed()
    gc.collect()
    admission_cycle(pending, held, tenants=tenants, network=network, capacity=free, policy=timed)
    return timed


def measure(network: Network, pending: Sequence[Ask], held: Sequence[Held], tenants: Tenants,
            rounds: int) -> tuple[float, float, CycleResult]:
    """The median and the least CPU seconds of ``rounds`` cycles (each from a collected heap), and the
    last cycle's result."""
    totals = full_capacity(network)
    free = after_holds(totals, held_per_dc(held), {d.id: totals[d.id] for d in network.data_centers})
    policy = get_policy("westflow")
    clock = time.process_time
    times = []
    result = None
    for _ in range(rounds):
        result = None
        gc.collect()
        t0 = clock()
        result = admission_cycle(pending, held, tenants=tenants, network=network, capacity=free, policy=policy)
        times.append(clock() - t0)
    if result is None:
        raise ValueError("rounds must be >= 1")
    return statistics.median(times), min(times), result


def report(label: str, network: Network, n: int, rounds: int, goal_s: float, share: float = 0.5) -> None:
    tenants = bench_tenants(network)
    held = bench_held(network, tenants, share=share)
    pending = bench_pending(network, tenants, n)
    accelerators = sum(inventory_totals(d).accelerator_count for d in network.data_centers)
    s, least, r = measure(network, pending, held, tenants, rounds)
    print(f"{label}: {len(network.data_centers):,} DCs ({accelerators:,.0f} accelerators), {len(tenants.tenants)} "
          f"tenants, {len(held):,} held ({share:.0%} of every pool), {len(pending):,} pending")
    quota = sum(1 for w in r.waiting if w.reasons and w.reasons[0][0] == "quota")
    print(f"  admitted {len(r.admitted):,}, waiting {len(r.waiting):,} (on quota alone {quota:,}), "
          f"preempting for {len(r.preempt):,} ({sum(len(p.victims) for p in r.preempt):,} victims)")
    print(f"  cycle {s:.3f} s CPU (median of {rounds}; least {least:.3f} s), {s / len(pending) * 1e6:.1f} us per "
          f"decision; goal <= {goal_s:g} s: {'MET' if s <= goal_s else 'NOT MET'}")
    timed = place_share(network, pending, held, tenants)
    print(f"  of a cycle, place() took {timed.seconds:.3f} s ({timed.calls:,} calls, "
          f"{timed.seconds / max(1, timed.calls) * 1e6:.0f} us each)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pending", type=int, default=10_000)
    args = ap.parse_args(argv)
    from westflow.config import load_network

    report("national inventory", load_network(), args.pending, args.rounds, GOAL_NATIONAL_S)
    big, rounds = synthetic_network(), max(1, args.rounds // 2 + 1)
    report("synthetic inventory", big, args.pending, rounds, GOAL_1000_S)
    report("synthetic inventory, nearly full", big, args.pending, rounds, GOAL_1000_S, share=0.95)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
