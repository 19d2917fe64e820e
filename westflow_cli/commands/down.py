"""``westflow down``: stop exactly what ``westflow up`` started (by recorded process groups)."""

from __future__ import annotations

import argparse

from westflow_cli.admitting import stop_controller
from westflow_cli.localnet import add_args, network_of


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("down", help="stop the local Ray network started by `westflow up`")
    add_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    net = network_of(args)
    if stop_controller(net.state_dir):
        print("stopped: the admission controller")
    stopped = net.down()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0
