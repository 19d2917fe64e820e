"""``westflow tenants``: each tenant's quota, what it uses, what it borrows from its cohort and lends to it.

    westflow tenants            # one row per tenant and resource it has quota for or uses
    westflow tenants --json
"""

from __future__ import annotations

import argparse
import json

from westflow.config import load_network
from westflow.tenants import Tenants
from westflow.text import table
from westflow_cli.admitting import queue_of, tenants_of, usage_of
from westflow_cli.localnet import default_state_dir

__all__ = ["register", "run", "ledger"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tenants", help="tenants' quotas, use, borrowed and lent (configs/tenants.yaml + the queue)")
    p.add_argument("--state-dir", default=default_state_dir())
    p.add_argument("--db", default=None, help="the queue's database URL (default: $WESTFLOW_ADMISSION_URL, else "
                   "SQLite in the state dir)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def ledger(tenants: Tenants, usage: dict[str, dict[str, float]]) -> list[dict[str, object]]:
    """Per tenant and resource: quota, used, borrowed (use over quota) and lent (its unused quota that
    cohort members borrow, shared among the lenders in proportion to what each leaves unused)."""
    rows: list[dict[str, object]] = []
    for name, t in tenants.tenants.items():
        quota = t.quota.dimensions()
        used = usage.get(name, {})
        peers = [p for p in tenants.members(t.cohort)] if t.cohort else [t]
        for dim in sorted(set(quota) | {d for d, n in used.items() if n > 0}):
            q, u = quota.get(dim, 0.0), used.get(dim, 0.0)
            borrowed_by_cohort = sum(max(0.0, usage.get(p.name, {}).get(dim, 0.0) - p.quota.dimensions().get(dim, 0.0))
                                     for p in peers)
            unused = {p.name: max(0.0, p.quota.dimensions().get(dim, 0.0) - usage.get(p.name, {}).get(dim, 0.0))
                      for p in peers}
            pool = sum(unused.values())
            lent = borrowed_by_cohort * unused[name] / pool if pool > 0 and t.cohort else 0.0
            rows.append({"tenant": name, "resource": dim, "quota": q, "used": u, "borrowed": max(0.0, u - q),
                         "lent": round(min(lent, unused[name]), 3), "weight": t.weight, "cohort": t.cohort})
    return rows


def run(args: argparse.Namespace) -> int:
    base = load_network(args.config_dir) if args.config_dir else load_network()
    tenants = tenants_of(args.config_dir, base)
    queue = queue_of(args.state_dir, args.db)
    rows = queue.rows(("pending", "admitted", "preempting"))
    out = ledger(tenants, usage_of(rows))
    pending = {n: sum(1 for r in rows if r.tenant == n and r.state == "pending") for n in tenants.tenants}
    admitted = {n: sum(1 for r in rows if r.tenant == n and r.state != "pending") for n in tenants.tenants}
    if args.json:
        print(json.dumps({"tenants": out, "pending": pending, "admitted": admitted}, indent=2))
        return 0
    print(table(["tenant", "weight", "cohort", "resource", "quota", "used", "borrowed", "lent"],
                [(str(r["tenant"]), f"{r['weight']:g}", str(r["cohort"] or "-"), str(r["resource"]),
                  f"{r['quota']:g}", f"{r['used']:g}", f"{r['borrowed']:g}", f"{r['lent']:g}") for r in out]))
    print("work: " + ", ".join(f"{n} {admitted[n]} admitted / {pending[n]} pending" for n in tenants.tenants))
    return 0
