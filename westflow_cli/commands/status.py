"""``westflow status``: per-DC used/total CPUs and accelerators, read from Ray."""

from __future__ import annotations

import argparse

from westflow_cli.localnet import add_args, network_of, reservations_text, s3_line, status_text


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="show the local Ray network: DCs, usage, dashboard, auth exports")
    add_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    net = network_of(args)
    st = net.status()
    print(status_text(st, net.profile.network))
    print(s3_line(net))
    if st.running:
        print(reservations_text(net))
    return 0 if st.running and not st.missing else 4
