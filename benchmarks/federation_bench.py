"""Federation figures (issue 13): dispatch overhead, live capacity over all clusters, RSS.

Starts the local federation (configs/local.yaml: east and west) on free ports in a temp state dir, then:

1. **Dispatch overhead**: per step, the time from a finished ``place()`` to the Ray job RUNNING through
   :meth:`Federation.dispatcher` + :meth:`Dispatcher.submit`, against a bare
   ``JobSubmissionClient.submit_job`` of the same entrypoint with the same entrypoint resources to the same
   cluster (its client made once, as the dispatcher's is). Both poll ``get_job_status`` every 20 ms; runs
   alternate. Prints p50/p99 in ms and the ratio of the medians (goal <= 1.10).
2. **Live capacity read over all clusters** (:meth:`Federation.capacity_and_totals`, concurrent, bounded by
   its timeout, default 1 s): p50/p99 with both clusters up, with west's head killed (connection refused),
   and with west's dashboard frozen (SIGSTOP: it accepts and never answers, so the timeout is what bounds it).
3. **RSS** of every process of the federation, idle.

    .venv/bin/python -m benchmarks.federation_bench [--jobs 20] [--reads 50]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from ray_cluster.dispatch import entrypoint
from ray_cluster.federation import Federation
from ray_cluster.local import LocalFederation, Ports, free_port, load_profile
from westflow.config import load_network
from westflow.placement import Placement, get_policy
from westflow.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.02


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _until_running(client: Any, job_id: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while str(client.get_job_status(job_id)).split(".")[-1] not in ("RUNNING", "SUCCEEDED", "FAILED"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} never ran")
        time.sleep(POLL_S)


def dispatch_overhead(fed: Federation, p: Placement, jobs: int) -> tuple[list[float], list[float]]:
    """Seconds from placed to RUNNING: through the dispatcher, and bare (alternating)."""
    dispatcher = fed.dispatcher(p.ray_cluster)
    client = dispatcher.client()
    command = entrypoint("python", "jobs.etl", ["--help"], p)
    opts = p.ray.job_options()
    ours: list[float] = []
    bare: list[float] = []
    for i in range(jobs):
        t0 = time.perf_counter()
        jid = dispatcher.submit(p, command, env={}, submission_id=f"bench-ours-{os.getpid()}-{i}")
        _until_running(client, jid)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jid = client.submit_job(entrypoint=command, submission_id=f"bench-bare-{os.getpid()}-{i}",
                                runtime_env={"env_vars": {}}, **opts)
        _until_running(client, jid)
        bare.append(time.perf_counter() - t0)
    return ours, bare


def reads(fed: Federation, n: int) -> list[float]:
    network = fed.grouped(load_network())
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fed.capacity_and_totals(network)
        out.append(time.perf_counter() - t0)
    return out


def _dashboard_pid(net: Any) -> int:
    """The dashboard process of a cluster's head (the one listening on its dashboard port)."""
    port = net.profile.ports.dashboard
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:  # type: ignore[union-attr]
            return int(c.pid)
    raise RuntimeError(f"no process listens on {port}")


def _ms(xs: list[float]) -> str:
    return f"p50 {statistics.median(xs) * 1e3:8.1f} ms   p99 {_pct(xs, 0.99) * 1e3:8.1f} ms   (n={len(xs)})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--reads", type=int, default=50)
    args = ap.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="wf-fedbench-"))
    profile = load_profile(load_network())
    local = LocalFederation(state, profile, workdir=ROOT,
                            ports={n: Ports(free_port(), free_port(), free_port()) for n in profile.cluster_names})
    try:
        t0 = time.perf_counter()
        local.up()
        print(f"federation up: {', '.join(local.clusters)} in {time.perf_counter() - t0:.0f} s")
        time.sleep(5)
        print(f"memory, idle: {local.rss_bytes() / 2**30:.2f} GiB RSS, {local.pss_bytes() / 2**30:.2f} GiB PSS, "
              f"over {len(local.pids())} processes")
        fed = Federation.local(state)
        assert fed is not None
        network = fed.grouped(load_network())
        spec = parse_spec({"name": "bench", "tier": "batch", "origin": "beijing", "accelerator": "cpu",
                           "cpus": 0.5}, network)
        p = get_policy("westflow").place(spec, network, fed.capacity_and_totals(network)[0])
        print(f"\n1. dispatch overhead, placed to RUNNING at {p.data_center} (cluster {p.ray_cluster}), "
              f"{args.jobs} jobs each, alternating")
        ours, bare = dispatch_overhead(fed, p, args.jobs)
        print(f"   dispatcher          {_ms(ours)}")
        print(f"   bare submit_job     {_ms(bare)}")
        print(f"   ratio of medians    {statistics.median(ours) / statistics.median(bare):.3f}  (goal <= 1.10)")
        print(f"\n2. live capacity over all clusters (timeout {fed.timeout_s:g} s), {args.reads} reads each")
        print(f"   both up             {_ms(reads(fed, args.reads))}")
        frozen = _dashboard_pid(local.cluster("west"))
        os.kill(frozen, signal.SIGSTOP)
        try:
            print(f"   west frozen         {_ms(reads(fed, max(5, args.reads // 5)))}")
        finally:
            os.kill(frozen, signal.SIGCONT)
        local.stop_cluster("west")
        print(f"   west head killed    {_ms(reads(fed, args.reads))}")
    finally:
        local.down()
        local.remove_session_dirs()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
