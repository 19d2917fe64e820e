"""``westflow plan SPEC.yaml``: place one spec and explain the decision."""

from __future__ import annotations

import argparse
import json

from westflow.capacity import Capacity
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import InfeasibleError
from westflow.inventory import Network
from westflow.placement import POLICY_NAMES, get_policy
from westflow.spec import load_spec
from westflow.text import placement_text
from westflow_cli.localnet import default_state_dir, federation_of
from westflow_cli.options import whole


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("plan", help="place a WorkloadSpec and explain why")
    p.add_argument("spec", nargs="+", help="spec YAML file(s)")
    p.add_argument("--policy", default="westflow", choices=POLICY_NAMES)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--seed", type=whole(low=0, high=2**32 - 1), default=0, help="seed of the random policy")
    p.add_argument("--live", action="store_true",
                   help="place on the running local network's live capacity (default: the inventory)")
    p.add_argument("--state-dir", default=default_state_dir(),
                   help="the local network's state dir (with --live; default: $WESTFLOW_STATE_DIR, else the "
                   "checkout's .westflow; $WESTFLOW_RAY_ADDRESS wins)")
    p.set_defaults(func=run)


def _live(args: argparse.Namespace, network: Network) -> tuple[Network, Capacity]:
    """The network grouped into the running clusters, and their live capacity (one concurrent read)."""
    fed = federation_of(args.state_dir, network)
    grouped = fed.grouped(network)
    return grouped, fed.capacity_and_totals(grouped)[0]


def run(args: argparse.Namespace) -> int:
    network = load_network(args.config_dir or CONFIG_DIR)
    policy = get_policy(args.policy, seed=args.seed)
    capacity: Capacity | None = None
    if args.live:
        network, capacity = _live(args, network)
    results = []
    for path in args.spec:
        spec = load_spec(path, network)
        try:
            placement = policy.place(spec, network, capacity)
        except InfeasibleError as exc:
            if args.json:
                print(json.dumps({"spec": spec.name, "error": "infeasible", "rejected": [
                    {"data_center": r.data_center, "reason": r.reason.value, "detail": r.detail}
                    for r in exc.rejected]}, indent=2))
            raise
        results.append(placement)
        if not args.json:
            print(placement_text(placement) + "\n")
    if args.json:
        out = [p.as_dict() for p in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    return 0
