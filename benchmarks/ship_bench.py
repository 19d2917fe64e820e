"""What shipping a project's code costs a Ray Job submission (issue "Bring your own code").

On one local network (two DCs), three kinds of submission of the same trivial
command (``python -c pass``), each ``--rounds`` times:

- baseline: ``JobSubmissionClient.submit_job`` with no runtime env (raw Ray);
- first: a fresh 10 MB project (``--mb``, incompressible files) through
  :func:`ray_cluster.shipping.ship` and ``submit_job`` (Ray zips and uploads it);
- cached: the same project again (Ray finds the package already in the GCS).

Prints, per kind, the median submission time (the call) and the median time to
SUCCEEDED (the node unpacks the package on first use), in ms, and the ratios
against the baseline measured in the same process.

    .venv/bin/python -m benchmarks.ship_bench [--mb 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_cluster.local import LocalNetwork, Ports, free_port, load_profile
from ray_cluster.shipping import CodeConfig, ship
from westflow.config import load_network

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _project(base: Path, mb: int, salt: int) -> Path:
    root = base / f"proj-{salt}"
    (root / "data").mkdir(parents=True)
    (root / "requirements.txt").write_text("# nothing to install\n")
    (root / "job.py").write_text(f"SALT = {salt}\n")
    for i in range(mb):  # 1 MiB files of random bytes: code-sized, and zip cannot shrink them
        (root / "data" / f"part{i:03d}.bin").write_bytes(os.urandom(1024 * 1024))
    return root


def _run(client: Any, runtime_env: Callable[[], dict[str, Any] | None]) -> tuple[float, float]:
    """(submit ms, submit-to-SUCCEEDED ms) of one trivial job."""
    t0 = time.perf_counter()
    env = runtime_env()
    job = client.submit_job(entrypoint="python -c pass", runtime_env=env) if env else (
        client.submit_job(entrypoint="python -c pass"))
    t1 = time.perf_counter()
    while (status := str(client.get_job_status(job))) not in TERMINAL:
        status = getattr(status, "value", status)
        time.sleep(0.02)
    t2 = time.perf_counter()
    if "SUCCEEDED" not in status:
        raise RuntimeError(f"bench job {job} ended {status}: {client.get_job_logs(job)[-2000:]}")
    return (t1 - t0) * 1000, (t2 - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    profile = load_profile(load_network()).subset(("zhangjiakou", "zhongwei"))
    state = Path(tempfile.mkdtemp(prefix="wf-ship-bench-"))
    net = LocalNetwork(state, profile, ports=Ports(free_port(), free_port(), free_port()), workdir=ROOT)
    net.up()
    try:
        client = net.job_client()
        _run(client, lambda: None)  # warm the job supervisor path
        base = Path(tempfile.mkdtemp(prefix="wf-ship-proj-"))
        rows: dict[str, list[tuple[float, float]]] = {"baseline (no runtime env)": [], "first (upload)": [],
                                                      "cached (same package)": []}
        for r in range(args.rounds):
            rows["baseline (no runtime env)"].append(_run(client, lambda: None))
            root = _project(base, args.mb, r)
            shipped = lambda root=root: ship(CodeConfig(root)).runtime_env({})  # noqa: E731
            rows["first (upload)"].append(_run(client, shipped))
            rows["cached (same package)"].append(_run(client, shipped))
        b_sub = statistics.median(x[0] for x in rows["baseline (no runtime env)"])
        b_end = statistics.median(x[1] for x in rows["baseline (no runtime env)"])
        print(f"shipping a {args.mb} MiB project, median of {args.rounds} (ms; ratio to the baseline)")
        print(f"{'submission':28} {'submit ms':>10} {'ratio':>7} {'to SUCCEEDED ms':>16} {'ratio':>7}")
        for name, xs in rows.items():
            sub, end = statistics.median(x[0] for x in xs), statistics.median(x[1] for x in xs)
            print(f"{name:28} {sub:10.1f} {sub / b_sub:7.2f} {end:16.1f} {end / b_end:7.2f}")
    finally:
        net.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
