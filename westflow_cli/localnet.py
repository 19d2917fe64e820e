"""CLI support for ``westflow up``, ``down`` and ``status``: the LocalNetwork the flags describe."""

from __future__ import annotations

import argparse

from ray_cluster.local import LocalNetwork, NetworkStatus, load_profile
from westflow.capacity import DCUsage, Resources, UtilisationRow, utilisation_report
from westflow.config import CONFIG_DIR, load_network
from westflow.inventory import Network
from westflow.text import table

__all__ = ["add_args", "network_of", "status_text", "utilisation_of", "s3_line", "reservations_text"]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=".westflow", help="token, pids and logs (default .westflow)")
    p.add_argument("--profile", default=None, help="local profile YAML (default configs/local.yaml)")


def network_of(args: argparse.Namespace) -> LocalNetwork:
    cfg = args.config_dir or CONFIG_DIR
    net = load_network(cfg)
    profile = load_profile(net, args.profile) if args.profile else load_profile(net, f"{cfg}/local.yaml")
    return LocalNetwork(args.state_dir, profile)


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


def status_text(st: NetworkStatus, network: Network | None = None) -> str:
    """The ``westflow status`` report (with ``network``: each DC's use against its own target);
    never contains the token itself."""
    if not st.running:
        return "local network: down (run `westflow up`)"
    util = utilisation_of(st, network) if network is not None else {}
    rows = []
    for r in st.dcs:
        u = util.get(r.dc) if r.alive else None
        use = "" if u is None else f"{u.utilisation:.0%} ({'below' if u.below else 'meets'} {u.target:.0%})"
        rows.append((r.dc + (" (head)" if r.head else ""), "alive" if r.alive else "DEAD",
                     f"{r.cpus_used:g}/{r.cpus_total:g}", r.accel, f"{r.accel_used:g}/{r.accel_total:g}", use))
    out = [table(["DC", "node", "CPUs used/total", "accelerator", "used/total", "use (target)"], rows), ""]
    if st.missing:
        out.append(f"missing DCs: {', '.join(st.missing)}")
    out += [f"Ray address  {st.address}", f"dashboard    {st.dashboard_url}",
            f"memory       {st.rss_bytes / 2**30:.2f} GiB RSS over all Ray processes", "",
            "for `ray job submit` and the dashboard by hand:", *st.exports]
    return "\n".join(out)


def s3_line(net: LocalNetwork) -> str:
    """The embedded S3 server's state (never its credentials)."""
    from storage import SeaweedServer

    server = SeaweedServer(net.state_dir)
    if not server.is_running():
        return "S3           down"
    return (f"S3           {server.config.endpoint_url} (SeaweedFS pid {server.pid}; buckets westflow-east, "
            f"westflow-west; credentials in {net.state_dir / 's3' / 'credentials.json'})")


def reservations_text(net: LocalNetwork) -> str:
    """Placements held by running westflow steps (the host's reservation journal)."""
    from ray_cluster.reservations import Reservations

    held = Reservations(net.state_dir / "reservations.json").held()
    if not held:
        return "reserved     nothing (no westflow step is being placed or running)"
    rows = [(r.ticket, r.data_center, f"{r.accelerators} x {r.accelerator_model}" if r.accelerator_model else "-",
             f"{r.cpus:g}", r.spec, r.owner) for r in held]
    return "reserved by running steps:\n" + table(["ticket", "DC", "accelerators", "CPUs", "spec", "owner"], rows)
