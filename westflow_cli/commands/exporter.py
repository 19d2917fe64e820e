"""``westflow exporter``: serve the network's state as Prometheus metrics on 127.0.0.1.

    westflow exporter                  # http://127.0.0.1:9464/metrics until SIGTERM
    westflow exporter --once           # print one scrape and exit

Metrics and the Grafana dashboard that reads them: docs/metrics.md, deploy/grafana/westflow.json.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from westflow.config import load_network
from westflow_cli.admitting import queue_of
from westflow_cli.localnet import default_state_dir, federation_of
from westflow_cli.metrics import NetworkCollector

__all__ = ["register", "run", "HOST", "DEFAULT_PORT"]

HOST = "127.0.0.1"
DEFAULT_PORT = 9464


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("exporter", help="serve the network's state as Prometheus metrics on 127.0.0.1")
    p.add_argument("--state-dir", default=default_state_dir())
    p.add_argument("--db", default=None, help="the admission queue's database URL (default: "
                   "$WESTFLOW_ADMISSION_URL, else SQLite in the state dir)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--once", action="store_true", help="print one scrape and exit")
    p.set_defaults(func=run)


def collector(args: argparse.Namespace) -> NetworkCollector:
    base = load_network(args.config_dir) if args.config_dir else load_network()
    fed = federation_of(args.state_dir, base)
    network = fed.grouped(base)
    return NetworkCollector(network, lambda: fed.capacity_and_totals(network), queue_of(args.state_dir, args.db))


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        from westflow.errors import SpecError

        raise SpecError("--port", args.port, "1..65535", source="westflow exporter")
    registry = CollectorRegistry()
    registry.register(collector(args))
    if args.once:
        print(generate_latest(registry).decode(), end="")
        return 0
    server, thread = start_http_server(args.port, addr=HOST, registry=registry)
    print(f"westflow exporter on http://{HOST}:{args.port}/metrics", flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    server.shutdown()
    thread.join(10)
    return 0
