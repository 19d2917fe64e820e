"""``westflow network``: the inventory and the RTT matrix to the demand cities; ``--sensitivity``:
the (DC, city) pairs whose realtime eligibility rests on the route-inflation assumption."""

from __future__ import annotations

import argparse

from westflow.config import CONFIG_DIR, load_network
from westflow.inventory import REALTIME, Network, Tier
from westflow.latency_margin import INFLATIONS, sensitivity
from westflow.text import table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("network", help="print the inventory and the RTT matrix")
    p.add_argument("--sensitivity", action="store_true",
                   help=f"list the (DC, city) pairs whose realtime eligibility changes as route inflation "
                        f"ranges over {INFLATIONS[0]:g}-{INFLATIONS[-1]:g} x great circle")
    p.set_defaults(func=run)


def _limit(t: Tier) -> str:
    if t.max_rtt_ms is None:
        return "no bound in tiers.yaml: every city"
    if not t.guard_band_ms:
        return f"<= {t.max_rtt_ms:g} ms"
    return f"<= {t.limit_ms:g} ms: the {t.max_rtt_ms:g} ms bound less a {t.guard_band_ms:g} ms guard band"


def run(args: argparse.Namespace) -> int:
    n = load_network(args.config_dir or CONFIG_DIR)
    if getattr(args, "sensitivity", False):
        return _sensitivity(n)
    rows = []
    for d in n.data_centers:
        pools = ", ".join(f"{p.count} {p.model} ({p.family.value}, {p.watts:g} W)" for p in d.pools) or "-"
        rows.append((d.id, d.hub, d.region.value, f"{d.pue:.2f}", f"{d.price_cny_kwh:.2f}", d.ray_cluster,
                     f"{d.utilisation_baseline:.0%}", pools))
    print(table(["DC", "hub", "region", "PUE", "CNY/kWh", "Ray cluster", "used", "accelerators"], rows))
    tier = n.tiers[REALTIME]
    print(f"\nRTT (ms) to demand cities; * = eligible for realtime ({_limit(tier)})\n")
    head = ["DC"] + list(n.city_ids)
    mrows = [[d.id] + [f"{n.rtt(d.id, c):.1f}{'*' if tier.admits(n.rtt(d.id, c)) else ' '}"
                       for c in n.city_ids] for d in n.data_centers]
    print(table(head, mrows))
    return 0


def _sensitivity(n: Network) -> int:
    tier = n.tiers[REALTIME]
    lat = n.latency
    rows = sensitivity(n)
    xs = [f"{f:g}x" for f in INFLATIONS]
    print(f"Realtime eligibility ({_limit(tier)}) as route inflation ranges over {xs[0]}-{xs[-1]} "
          f"(configured: {lat.route_inflation:g}x + {lat.equipment_overhead_ms:g} ms; "
          f"{len(lat.measured)} measured pair(s), which do not move)\n")
    if not rows:
        print("No (DC, city) pair changes eligibility.")
        return 0
    print(table(["DC", "city", *(f"RTT {x}" for x in xs), *(f"eligible {x}" for x in xs)],
                [(r.dc, r.city + (" (measured)" if r.measured else ""), *(f"{v:.1f}" for v in r.rtt_ms),
                  *("yes" if e else "no" for e in r.eligible)) for r in rows]))
    pairs = len(n.data_centers) * len(n.cities)
    print(f"\n{len(rows)} of {pairs} (DC, city) pairs change eligibility over {xs[0]}-{xs[-1]}.")
    return 0
