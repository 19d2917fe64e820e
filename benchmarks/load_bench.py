"""Reservation throughput under load (issue 5): 1,000 placements submitted at once.

Many threads submit a mix of specs to one :class:`~westflow.ledger.Ledger`
at the same moment, over the capacity of an empty local network
(``configs/local.yaml``: fewer free accelerators than asked for). Prints the
decisions per second of that concurrent phase, how many were placed, queued
and refused, then releases every reservation round by round until the queue is
empty and prints how long that took.

``tests/integration/test_load.py`` runs the same load against the live Ray
network, holding every placement in Ray and checking Ray's own accounting.

    .venv/bin/python -m benchmarks.load_bench [--requests 1000] [--threads 32]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray_cluster.local import LocalProfile, load_profile
from westflow.capacity import DCCapacity
from westflow.config import load_network
from westflow.ledger import Decision, Ledger, Status
from westflow.spec import WorkloadSpec, parse_spec

__all__ = ["MIX", "IMPOSSIBLE", "CPUS", "make_specs", "empty_capacity", "submit_concurrently"]

# (kind, spec fields). Every kind but the IMPOSSIBLE ones fits an empty local network.
MIX: tuple[tuple[str, dict[str, Any]], ...] = (
    ("any1", {"accelerator": "any:1"}),
    ("cuda2", {"accelerator": "cuda:2"}),
    ("cann2", {"accelerator": "cann:2"}),
    ("cpu", {"accelerator": "cpu"}),
    ("rt-beijing", {"tier": "realtime", "origin": "beijing", "accelerator": "any:1"}),
    ("rt-shanghai", {"tier": "realtime", "origin": "shanghai", "accelerator": "cann:1"}),
    ("cann64", {"accelerator": "cann:64"}),  # no DC has 64 NPUs
    # H800 is only in Helinger, 21.1 ms from Shanghai: over the 20 ms bound
    ("rt-shanghai-h800", {"tier": "realtime", "origin": "shanghai", "accelerator": "H800:1"}),
)
IMPOSSIBLE = frozenset({"cann64", "rt-shanghai-h800"})
CPUS = 0.125  # per request: 16 fit a 2-CPU local node, so accelerators are what runs out first


def make_specs(n: int) -> list[tuple[str, WorkloadSpec]]:
    """``n`` specs cycling through :data:`MIX`, with priorities -1, 0 and 1."""
    out = []
    for i in range(n):
        kind, fields = MIX[i % len(MIX)]
        data = {"name": f"load-{i:04d}-{kind}", "tier": "batch", "cpus": CPUS, "memory_gb": 1,
                "duration_hours": 1, "priority": i % 3 - 1, **fields}
        out.append((kind, parse_spec(data)))
    return out


def empty_capacity(profile: LocalProfile) -> dict[str, DCCapacity]:
    """What ``live_capacity`` reads from an idle local network of ``profile``."""
    return {d.id: DCCapacity(free=dict(d.accelerators), free_cpus=float(d.cpus), free_memory_gb=profile.memory_gb,
                             utilisation=0.0) for d in profile.data_centers}


def submit_concurrently(ledger: Ledger, specs: list[WorkloadSpec], threads: int) -> tuple[list[Decision], float]:
    """Submit every spec from ``threads`` threads released at once; the decisions (in spec
    order) and the seconds from the release to the last decision."""
    go = threading.Event()

    def submit(spec: WorkloadSpec) -> Decision:
        go.wait()
        return ledger.submit(spec)

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(submit, s) for s in specs]
        time.sleep(0.05)  # let the workers reach the gate
        t0 = time.perf_counter()
        go.set()
        decisions = [f.result(timeout=120) for f in futures]
        elapsed = time.perf_counter() - t0
    return decisions, elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=32)
    args = ap.parse_args()
    network = load_network()
    ledger = Ledger(network, empty_capacity(load_profile(network)))
    decisions, elapsed = submit_concurrently(ledger, [s for _, s in make_specs(args.requests)], args.threads)
    counts = Counter(d.status.value for d in decisions)
    print(f"load: {len(decisions)} decisions from {args.threads} threads in {elapsed:.3f} s = "
          f"{len(decisions) / elapsed:,.0f} decisions/s (placed {counts['placed']}, queued {counts['queued']}, "
          f"refused {counts['refused']})")
    held = [d.ticket for d in decisions if d.status is Status.PLACED]
    t0, rounds = time.perf_counter(), 0
    while held:
        rounds += 1
        held = [d.ticket for t in held for d in ledger.release(t)]
    print(f"drain: every queued request placed in {rounds} release rounds, {time.perf_counter() - t0:.2f} s; "
          f"left queued: {len(ledger.queued())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
