"""``westflow controller``: the admission controller, in the foreground (``westflow up`` starts one).

    westflow controller                 # cycle every cycle_interval_s of tenants.yaml until SIGTERM
    westflow controller --once          # one cycle, print what it did
    westflow controller --db postgresql+psycopg://...   # the queue of many hosts

Several may run against one database: exactly one leads (a lease in the database); the others
wait and take over within the lease's lifetime when the leader dies.

The leader also runs the metering reconciler every ``--meter-every`` seconds: every westflow Ray
job that ended without a usage record (its step's process died before writing it) is metered
from its cluster's job table, so nothing that ran goes unbilled.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime
from types import FrameType

from admission.controller import Controller
from admission.database import masked
from admission.metering import Meter
from ray_cluster.federation import Federation
from ray_cluster.metering_sync import cluster_listers, reconcile
from westflow.config import load_network
from westflow.placement import POLICY_NAMES, get_policy
from westflow_cli.admitting import queue_of, tenants_of
from westflow_cli.localnet import default_state_dir, federation_of

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("controller", help="run the admission controller (queue -> live capacity -> admit)")
    p.add_argument("--state-dir", default=default_state_dir(), help="where `westflow up` recorded the clusters")
    p.add_argument("--db", default=None, help="the queue's database URL (default: $WESTFLOW_ADMISSION_URL, else "
                   "SQLite in the state dir)")
    p.add_argument("--policy", default="westflow", choices=POLICY_NAMES)
    p.add_argument("--clusters", default="auto", choices=("auto", "inventory"),
                   help="auto: the clusters `westflow up` recorded (or $WESTFLOW_RAY_ADDRESS); inventory: every "
                   "cluster of network.yaml, each token from $WESTFLOW_RAY_TOKEN_<NAME> (production)")
    p.add_argument("--once", action="store_true", help="run one cycle and exit")
    p.add_argument("--interval", type=float, default=None, help="seconds between cycles (default: tenants.yaml)")
    p.add_argument("--lease-ttl", type=float, default=5.0, help="seconds a dead leader's lease outlives it")
    p.add_argument("--meter-every", type=float, default=60.0,
                   help="seconds between metering reconciler passes while leading (0: never)")
    p.set_defaults(func=run)


def _log(line: str) -> None:
    print(f"{datetime.now().isoformat(timespec='seconds')} {line}", flush=True)


def run(args: argparse.Namespace) -> int:
    base = load_network(args.config_dir) if args.config_dir else load_network()
    fed = Federation.of_network(base) if args.clusters == "inventory" else federation_of(args.state_dir, base)
    network = fed.grouped(base)
    tenants = tenants_of(args.config_dir, network)
    queue = queue_of(args.state_dir, args.db)
    ctl = Controller(queue, tenants=tenants, network=network, policy=get_policy(args.policy),
                     capacity=lambda: fed.capacity_and_totals(network), ttl_s=args.lease_ttl, scope=fed.scope)
    if args.once:
        report = ctl.cycle()
        ctl.release()
        print(report.line())
        return 0
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _log(f"controller {ctl.holder} on {masked(queue.url)}")
    if args.meter_every > 0:
        threading.Thread(target=_meter_loop, args=(ctl, fed, stop, args.meter_every), daemon=True,
                         name="westflow-meter-reconciler").start()
    ctl.run(stop, interval_s=args.interval, log=_log)
    _log("controller stopped; lease released")
    sys.stdout.flush()
    return 0


def _meter_loop(ctl: Controller, fed: Federation, stop: threading.Event, every_s: float) -> None:
    """While this controller leads: meter the ended jobs nobody metered, every ``every_s``."""
    meter, listers = Meter(ctl.queue), cluster_listers(fed)
    while not stop.wait(every_s):
        lease = ctl.leader.current()
        if lease is None or lease.holder != ctl.holder:
            continue
        try:
            report = reconcile(meter, listers)
        except Exception as exc:  # noqa: BLE001 - a failing pass is logged; the next one tries again
            _log(f"metering reconciler failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
            continue
        if report.written or report.unreachable or report.unpriced:
            _log(f"metering reconciler: {report.written} job(s) metered, {report.already} already, "
                 f"unpriced {list(report.unpriced)}, unreachable {[n for n, _ in report.unreachable]}")
