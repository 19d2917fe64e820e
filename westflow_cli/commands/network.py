"""``westflow network``: the inventory and the RTT matrix to the demand cities."""

from __future__ import annotations

import argparse

from westflow.config import CONFIG_DIR, load_network
from westflow.inventory import REALTIME
from westflow.text import table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("network", help="print the inventory and the RTT matrix")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    n = load_network(args.config_dir or CONFIG_DIR)
    rows = []
    for d in n.data_centers:
        pools = ", ".join(f"{p.count} {p.model} ({p.family.value}, {p.watts:g} W)" for p in d.pools) or "-"
        rows.append((d.id, d.hub, d.region.value, f"{d.pue:.2f}", f"{d.price_cny_kwh:.2f}", d.ray_cluster,
                     f"{d.utilisation_baseline:.0%}", pools))
    print(table(["DC", "hub", "region", "PUE", "CNY/kWh", "Ray cluster", "used", "accelerators"], rows))
    bound = n.tiers[REALTIME].max_rtt_ms
    limit = "no bound in tiers.yaml: every city" if bound is None else f"{bound:g} ms"
    print(f"\nRTT (ms) to demand cities; * = within the realtime bound ({limit})\n")
    head = ["DC"] + list(n.city_ids)
    mrows = [[d.id] + [f"{n.rtt(d.id, c):.1f}{'*' if bound is None or n.rtt(d.id, c) <= bound else ' '}"
                       for c in n.city_ids] for d in n.data_centers]
    print(table(head, mrows))
    return 0
