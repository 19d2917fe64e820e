"""``westflow up``: start the local network (idempotent)."""

from __future__ import annotations

import argparse

from westflow_cli.localnet import add_args, network_of, s3_line, status_text


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("up", help="start the local Ray clusters (one node per DC of the local profile) and S3")
    add_args(p)
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every node")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    net = network_of(args)
    print(status_text(net.up(timeout_s=args.timeout), net.profile.network))
    print(s3_line(net))
    return 0
