"""CLI support for ``westflow up``, ``down`` and ``status``: the LocalNetwork the flags describe."""

from __future__ import annotations

import argparse

from ray_cluster.local import LocalNetwork, NetworkStatus, load_profile
from westflow.config import CONFIG_DIR, load_network
from westflow.text import table

__all__ = ["add_args", "network_of", "status_text", "s3_line", "reservations_text"]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=".westflow", help="token, pids and logs (default .westflow)")
    p.add_argument("--profile", default=None, help="local profile YAML (default configs/local.yaml)")


def network_of(args: argparse.Namespace) -> LocalNetwork:
    cfg = args.config_dir or CONFIG_DIR
    net = load_network(cfg)
    profile = load_profile(net, args.profile) if args.profile else load_profile(net, f"{cfg}/local.yaml")
    return LocalNetwork(args.state_dir, profile)


def status_text(st: NetworkStatus) -> str:
    """The ``westflow status`` report; never contains the token itself."""
    if not st.running:
        return "local network: down (run `westflow up`)"
    rows = [(r.dc + (" (head)" if r.head else ""), "alive" if r.alive else "DEAD",
             f"{r.cpus_used:g}/{r.cpus_total:g}", r.accel, f"{r.accel_used:g}/{r.accel_total:g}")
            for r in st.dcs]
    out = [table(["DC", "node", "CPUs used/total", "accelerator", "used/total"], rows), ""]
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
