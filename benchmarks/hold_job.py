"""A Ray job entrypoint that holds its place until released: the load test's and load bench's step.

    python -m benchmarks.hold_job RELEASE_FILE [--task-resources JSON]

It waits until ``RELEASE_FILE`` exists, then exits 0, so no job ends before the
caller says so. The command is built by :func:`ray_cluster.dispatch.entrypoint`
like every westflow step's (hence ``--task-resources``, the placement's task
options, which it only checks for JSON). It imports nothing but the standard
library: the job's cost is Ray's (its supervisor actor and this process), not
the entrypoint's.
"""

from __future__ import annotations

import argparse
import json
import os
import time

__all__ = ["main", "POLL_S"]

POLL_S = 0.5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("release", help="the job ends once this file exists")
    ap.add_argument("--task-resources", type=json.loads, default=None, help="the placement's task options (JSON)")
    args = ap.parse_args(argv)
    while not os.path.exists(args.release):
        time.sleep(POLL_S)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
