"""``westflow up``: start the local network (idempotent)."""

from __future__ import annotations

import argparse

from westflow_cli.admitting import start_controller
from westflow_cli.localnet import add_args, network_of, s3_line, status_text


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("up", help="start the local Ray clusters (one node per DC of the local profile) and S3")
    add_args(p)
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every node")
    p.add_argument("--no-controller", action="store_true", help="do not start the admission controller (steps then "
                   "run the admission cycle themselves)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    net = network_of(args)
    print(status_text(net.up(timeout_s=args.timeout), net.profile.network))
    print(s3_line(net))
    if not args.no_controller:
        pid = start_controller(net.state_dir, config_dir=args.config_dir)
        print(f"controller   admission controller pid {pid} (log {net.state_dir / 'controller.log'}; "
              "`westflow queue`, `westflow tenants`)")
    return 0
