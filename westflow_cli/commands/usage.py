"""``westflow usage``: what ran, for whom, where, and what it cost (the metered usage records).

    westflow usage                                  # per tenant, all time
    westflow usage --tenant retail-ai --from 2026-11-01 --to 2026-11-30 --by day
    westflow usage --by dc --json
    westflow usage --reconcile                      # first meter ended jobs whose writer died

Dates are Asia/Shanghai days, ``--to`` included; a job counts on the day it ended.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from typing import Any

from admission.metering import TZ, Meter, Totals
from admission.workqueue import AdmissionQueue
from ray_cluster.metering_sync import cluster_listers, reconcile
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import SpecError
from westflow.inventory import Network
from westflow.text import table
from westflow_cli.admitting import queue_of, tenants_of
from westflow_cli.localnet import default_state_dir, federation_of

__all__ = ["register", "run", "day_start", "checked_tenant", "open_meter", "BY"]

BY = {"tenant": "tenant", "dc": "dc", "cluster": "cluster", "day": "day"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
HEADERS = ["jobs", "accel-h", "CPU-h", "kWh", "energy CNY", "GB moved", "transfer CNY", "total CNY"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("usage", help="metered usage per tenant, DC, cluster or day (accelerator-hours, kWh, CNY)")
    p.add_argument("--state-dir", default=default_state_dir())
    p.add_argument("--db", default=None, help="the admission database URL (default: $WESTFLOW_ADMISSION_URL, else "
                   "SQLite in the state dir)")
    p.add_argument("--tenant", default=None)
    p.add_argument("--from", dest="date_from", metavar="DATE", default=None, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", metavar="DATE", default=None, help="last day (included), YYYY-MM-DD")
    p.add_argument("--by", choices=sorted(BY), default="tenant")
    p.add_argument("--reconcile", action="store_true",
                   help="first meter ended westflow jobs without a record, from every cluster's job table")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def day_start(flag: str, text: str) -> float:
    """Epoch seconds of the start of Asia/Shanghai day ``text`` (``YYYY-MM-DD``); a SpecError naming ``flag``."""
    try:
        if not isinstance(text, str) or not _DATE.fullmatch(text):
            raise ValueError
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=TZ).timestamp()
    except ValueError:
        raise SpecError(flag, text, "a date YYYY-MM-DD (Asia/Shanghai)", fix=f"e.g. {flag} 2026-11-01") from None


def checked_tenant(tenant: str | None, config_dir: str | None, network: Network) -> str | None:
    """``tenant`` if tenants.yaml knows it (a ConfigError listing the tenants otherwise)."""
    if tenant is not None:
        tenants_of(config_dir, network).tenant(tenant)
    return tenant


def open_meter(args: argparse.Namespace) -> Meter:
    """The meter on the queue's database the flags name."""
    queue: AdmissionQueue = queue_of(args.state_dir, args.db)
    return Meter(queue)


def _range(args: argparse.Namespace) -> tuple[float | None, float | None]:
    start = day_start("--from", args.date_from) if args.date_from else None
    end = day_start("--to", args.date_to) + 86400.0 if args.date_to else None
    if start is not None and end is not None and end <= start:
        raise SpecError("--to", args.date_to, f"a day on or after --from ({args.date_from})")
    return start, end


def _row(t: Totals) -> list[Any]:
    return [t.jobs, f"{t.accelerator_hours:,.2f}", f"{t.cpu_hours:,.2f}", f"{t.kwh:,.2f}", f"{t.cny:,.2f}",
            f"{t.transfer_gb:,.2f}", f"{t.transfer_cny:,.2f}", f"{t.total_cny:,.2f}"]


def run(args: argparse.Namespace) -> int:
    network = load_network(args.config_dir or CONFIG_DIR)
    tenant = checked_tenant(args.tenant, args.config_dir, network)
    start, end = _range(args)
    meter = open_meter(args)
    try:
        if args.reconcile:
            fed = federation_of(args.state_dir, network)
            rep = reconcile(meter, cluster_listers(fed))
            print(f"westflow: reconciled: {rep.written} new record(s), {rep.already} already metered"
                  + "".join(f"; {name} unreachable ({why})" for name, why in rep.unreachable), file=sys.stderr)
        rows = meter.totals([BY[args.by]], tenant=tenant, start=start, end=end)
    finally:
        meter.queue.close()
    if args.json:
        print(json.dumps([{args.by: t.key[0], "jobs": t.jobs, "accelerator_hours": t.accelerator_hours,
                           "cpu_hours": t.cpu_hours, "kwh": t.kwh, "energy_cny": t.cny, "transfer_gb": t.transfer_gb,
                           "transfer_cny": t.transfer_cny, "total_cny": t.total_cny} for t in rows], indent=2))
        return 0
    if not rows:
        print("no metered usage" + (f" for tenant {tenant}" if tenant else "") + " in that range")
        return 0
    total = Totals(("total",), sum(t.jobs for t in rows),
                   *(sum(getattr(t, f) for t in rows) for f in ("accelerator_hours", "cpu_hours", "kwh", "cny",
                                                                "transfer_gb", "transfer_cny")))
    print(table([args.by, *HEADERS], [[t.key[0] or "-", *_row(t)] for t in [*rows, total]]))
    return 0

