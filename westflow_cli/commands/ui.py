"""``westflow ui``: the Dagster webserver and daemon against the local network."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from westflow.config import CONFIG_DIR
from westflow_cli.localnet import add_args, network_of

ROOT = CONFIG_DIR.parent


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ui", help="start the Dagster UI and daemon (schedules fire) on 127.0.0.1")
    add_args(p)
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).resolve()
    home = state / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    # The resource finds every local cluster (dashboard URL, token file) through the state dir `up` recorded.
    env = {**os.environ, "DAGSTER_HOME": str(home), "WESTFLOW_STATE_DIR": str(state)}
    network_of(args)  # the profile must be valid
    for name in ("WESTFLOW_RAY_ADDRESS", "RAY_ADDRESS"):  # one cluster named here would win over the federation
        env.pop(name, None)
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
           "-p", str(args.port)]
    print(f"Dagster UI on http://127.0.0.1:{args.port} (DAGSTER_HOME={home}); Ctrl-C stops it.", flush=True)
    try:
        return subprocess.call(cmd, env=env, cwd=ROOT)
    except KeyboardInterrupt:
        return 0
