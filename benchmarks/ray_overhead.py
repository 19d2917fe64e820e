"""Overhead of westflow's placement path on real Ray tasks.

1,000 tiny tasks twice on one local network: (a) raw Ray tasks with the same
resources; (b) each task placed by ``place()`` (static capacity, as a caller
with a cached snapshot would) and submitted with ``RayRequest.task_options()``.
Prints both wall times and the ratio (goal <= 1.10).

    .venv/bin/python -m benchmarks.ray_overhead [--tasks 1000] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ray_cluster.local import LocalNetwork, Ports, free_port, load_profile
from westflow.config import load_network
from westflow.placement import get_policy
from westflow.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--state-dir", default=None)
    args = ap.parse_args()
    import ray

    network = load_network()
    profile = load_profile(network).subset(("zhangjiakou", "zhongwei"))
    state = Path(args.state_dir or tempfile.mkdtemp(prefix="wf-bench-"))
    net = LocalNetwork(state, profile, ports=Ports(free_port(), free_port(), free_port()), workdir=ROOT)
    net.up()
    try:
        net.init_driver(logging_level="WARNING", log_to_driver=False)
        spec = parse_spec({"name": "tiny", "tier": "batch", "accelerator": {"cuda": 1}, "cpus": 0.1,
                           "memory_gb": 0.01, "duration_hours": 0.001})
        policy = get_policy("westflow")
        opts = policy.place(spec, network).ray.task_options()

        @ray.remote
        def tiny(i: int) -> int:
            return i

        ray.get([tiny.options(**opts).remote(i) for i in range(50)])  # warm the workers

        def raw() -> float:
            t = time.perf_counter()
            ray.get([tiny.options(**opts).remote(i) for i in range(args.tasks)])
            return time.perf_counter() - t

        def westflow() -> float:
            t = time.perf_counter()
            refs = []
            for i in range(args.tasks):
                o = policy.place(spec, network).ray.task_options()
                refs.append(tiny.options(**o).remote(i))
            ray.get(refs)
            return time.perf_counter() - t

        raw_s, wf_s = [], []
        for _ in range(3):  # interleaved, best of 3: the machine is shared
            raw_s.append(raw())
            wf_s.append(westflow())
        r, w = min(raw_s), min(wf_s)
        print(f"placed on {policy.place(spec, network).data_center}; {args.tasks} tasks")
        print(f"raw Ray      {r:.3f} s  ({args.tasks / r:.0f} tasks/s)")
        print(f"westflow     {w:.3f} s  ({args.tasks / w:.0f} tasks/s)")
        print(f"ratio        {w / r:.3f}  (goal <= 1.10)")
        print(f"network RSS  {net.rss_bytes() / 2**30:.2f} GiB")
        ray.shutdown()
        return 0
    finally:
        net.down()


if __name__ == "__main__":
    raise SystemExit(main())
