"""CLI support for ``westflow up``, ``down`` and ``status``: the local federation the flags describe, and the
clusters every other command dispatches to."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ray_cluster.access import ADDRESS_ENV, RAY_ADDRESS_ENV, ClusterAccess
from ray_cluster.federation import Federation
from ray_cluster.local import FederationStatus, LocalFederation, NetworkStatus, load_profile
from westflow.capacity import DCUsage, Resources, UtilisationRow, utilisation_report
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import ClusterError
from westflow.inventory import Network
from westflow.text import table

__all__ = ["add_args", "cluster_access", "federation_of", "default_state_dir", "STATE_DIR_ENV", "network_of",
           "status_text", "utilisation_of", "s3_line", "reservations_text"]


STATE_DIR_ENV = "WESTFLOW_STATE_DIR"
CHECKOUT = Path(__file__).resolve().parents[1]


def default_state_dir() -> str:
    """The host's westflow state dir: ``$WESTFLOW_STATE_DIR``, else the checkout's ``.westflow`` (as the
    Dagster deployment reads it), so every command finds the network ``westflow up`` recorded from anywhere."""
    return os.environ.get(STATE_DIR_ENV) or str(CHECKOUT / ".westflow")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=default_state_dir(),
                   help="token, pids and logs (default: $WESTFLOW_STATE_DIR, else the checkout's .westflow)")
    p.add_argument("--profile", default=None, help="local profile YAML (default configs/local.yaml)")


def cluster_access(state_dir: str | Path) -> ClusterAccess:
    """The cluster to use: ``$WESTFLOW_RAY_ADDRESS``/``$RAY_ADDRESS`` (with the token from the environment)
    when set, else the local network ``westflow up`` recorded in ``state_dir``."""
    if os.environ.get(ADDRESS_ENV) or os.environ.get(RAY_ADDRESS_ENV):
        return ClusterAccess.resolve()
    from ray_cluster.local.auth import TOKEN_FILE

    state = Path(state_dir)
    try:
        url = json.loads((state / "ray.json").read_text())["dashboard_url"]
    except (OSError, ValueError, KeyError):
        raise ClusterError(f"No local network in {str(state)!r} and no ${ADDRESS_ENV}. "
                           "To fix: run `westflow up`, or export the cluster's address and token.") from None
    return ClusterAccess.resolve(dashboard_url=url, token_path=state / TOKEN_FILE)


def federation_of(state_dir: str | Path, network: Network) -> Federation:
    """The clusters to dispatch to: the one ``$WESTFLOW_RAY_ADDRESS``/``$RAY_ADDRESS`` names, else every cluster
    of the local federation ``westflow up`` recorded in ``state_dir``, else its single-cluster network."""
    if not (os.environ.get(ADDRESS_ENV) or os.environ.get(RAY_ADDRESS_ENV)):
        local = Federation.local(state_dir)
        if local is not None:
            return local
    return Federation.single(cluster_access(state_dir), network)


def network_of(args: argparse.Namespace) -> LocalFederation:
    """The local federation of the profile the flags name (default configs/local.yaml)."""
    cfg = args.config_dir or CONFIG_DIR
    net = load_network(cfg)
    profile = load_profile(net, args.profile) if args.profile else load_profile(net, f"{cfg}/local.yaml")
    return LocalFederation(args.state_dir, profile)


def utilisation_of(st: NetworkStatus, network: Network) -> dict[str, UtilisationRow]:
    """Each live DC's utilisation against its own target (:func:`westflow.capacity.utilisation_report`)."""
    usage: dict[str, DCUsage] = {}
    for r in st.dcs:
        if not r.alive:
            continue
        node = DCUsage(Resources({r.accel: r.accel_total}, r.cpus_total),
                       Resources({r.accel: r.accel_used}, r.cpus_used))
        have = usage.get(r.dc)
        usage[r.dc] = node if have is None else DCUsage(have.total.plus(node.total), have.used.plus(node.used))
    return {row.dc: row for row in utilisation_report(network, usage)}


def status_text(fst: FederationStatus, network: Network | None = None) -> str:
    """The ``westflow status`` report, one section per Ray cluster (with ``network``: each DC's use against its
    own target); never contains a token itself."""
    if not fst.running:
        return "local network: down (run `westflow up`)"
    out = [_cluster_text(name, st, network) for name, st in fst.clusters]
    out.append(f"memory       {fst.rss_bytes / 2**30:.2f} GiB RSS over all Ray processes of "
               f"{len(fst.clusters)} cluster(s)")
    return "\n\n".join(out)


def _cluster_text(name: str, st: NetworkStatus, network: Network | None) -> str:
    if not st.running:
        return f"Ray cluster {name}: DOWN (run `westflow up`); missing DCs: {', '.join(st.missing)}"
    util = utilisation_of(st, network) if network is not None else {}
    rows = []
    for r in st.dcs:
        u = util.get(r.dc) if r.alive else None
        use = "" if u is None else f"{u.utilisation:.0%} ({'below' if u.below else 'meets'} {u.target:.0%})"
        rows.append((r.dc + (" (head)" if r.head else ""), "alive" if r.alive else "DEAD",
                     f"{r.cpus_used:g}/{r.cpus_total:g}", r.accel, f"{r.accel_used:g}/{r.accel_total:g}", use))
    head = next((r.dc for r in st.dcs if r.head), "-")
    out = [f"Ray cluster {name}: head {head}, Ray address {st.address}, dashboard {st.dashboard_url}",
           table(["DC", "node", "CPUs used/total", "accelerator", "used/total", "use (target)"], rows)]
    if st.missing:
        out.append(f"missing DCs: {', '.join(st.missing)}")
    out += [f"memory       {st.rss_bytes / 2**30:.2f} GiB RSS", f"for `ray job submit` to {name} and its dashboard:",
            *st.exports]
    return "\n".join(out)


def s3_line(net: LocalFederation) -> str:
    """The embedded S3 server's state (never its credentials)."""
    from storage import SeaweedServer

    server = SeaweedServer(net.state_dir)
    if not server.is_running():
        return "S3           down"
    return (f"S3           {server.config.endpoint_url} (SeaweedFS pid {server.pid}; buckets westflow-east, "
            f"westflow-west; credentials in {net.state_dir / 's3' / 'credentials.json'})")


def reservations_text(net: LocalFederation) -> str:
    """What running westflow steps hold, and what waits (the admission queue in the state dir)."""
    from admission.rows import HOLDING, LIVE
    from westflow_cli.admitting import controller_pid, queue_of

    rows = queue_of(net.state_dir).rows(LIVE)
    pid = controller_pid(net.state_dir)
    ctl = f"controller   {'pid ' + str(pid) if pid else 'not running (steps run the admission cycle themselves)'}"
    held = [r for r in rows if r.state in HOLDING]
    deferred = sum(r.state == "deferred" for r in rows)
    waiting = f"{len(rows) - len(held) - deferred} pending" + (f", {deferred} deferred" if deferred else "")
    if not held:
        return f"{ctl}\nadmitted     nothing running; {waiting} (`westflow queue`)"
    lines = [(r.key, r.tenant, r.data_center or "-", f"{r.accelerators} x {r.accelerator_model}"
              if r.accelerator_model else "-", f"{r.cpus:g}", r.spec_name) for r in held]
    return (f"{ctl}\nadmitted ({len(held)}; {waiting}, `westflow queue`):\n"
            + table(["key", "tenant", "DC", "accelerators", "CPUs", "spec"], lines))
