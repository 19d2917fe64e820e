"""``westflow plan SPEC.yaml``: place one spec and explain the decision."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ray_cluster.access import ADDRESS_ENV, RAY_ADDRESS_ENV, ClusterAccess
from westflow.capacity import Capacity
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import ClusterError, InfeasibleError
from westflow.inventory import Network
from westflow.placement import POLICY_NAMES, get_policy
from westflow.spec import load_spec
from westflow.text import placement_text
from westflow_cli.options import whole


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("plan", help="place a WorkloadSpec and explain why")
    p.add_argument("spec", nargs="+", help="spec YAML file(s)")
    p.add_argument("--policy", default="westflow", choices=POLICY_NAMES)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--seed", type=whole(low=0, high=2**32 - 1), default=0, help="seed of the random policy")
    p.add_argument("--live", action="store_true",
                   help="place on the running local network's live capacity (default: the inventory)")
    p.add_argument("--state-dir", default=".westflow",
                   help="the local network's state dir (with --live; $WESTFLOW_RAY_ADDRESS wins)")
    p.set_defaults(func=run)


def _access(args: argparse.Namespace) -> ClusterAccess:
    """The cluster to read: ``$WESTFLOW_RAY_ADDRESS``/``$RAY_ADDRESS`` (with the token from the environment)
    when set, else the local network ``westflow up`` recorded in ``--state-dir``."""
    if os.environ.get(ADDRESS_ENV) or os.environ.get(RAY_ADDRESS_ENV):
        return ClusterAccess.resolve()
    from ray_cluster.local.auth import TOKEN_FILE

    state = Path(args.state_dir)
    try:
        url = json.loads((state / "ray.json").read_text())["dashboard_url"]
    except (OSError, ValueError, KeyError):
        raise ClusterError(f"No local network in {str(state)!r} and no ${ADDRESS_ENV}. "
                           "To fix: run `westflow up`, or export the cluster's address and token.") from None
    return ClusterAccess.resolve(dashboard_url=url, token_path=state / TOKEN_FILE)


def _live_capacity(args: argparse.Namespace, network: Network) -> Capacity:
    from ray_cluster.live import DashboardReader, live_capacity

    access = _access(args)
    return live_capacity(network, DashboardReader(access.dashboard_url, access.token))


def run(args: argparse.Namespace) -> int:
    network = load_network(args.config_dir or CONFIG_DIR)
    policy = get_policy(args.policy, seed=args.seed)
    capacity = _live_capacity(args, network) if args.live else None
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
