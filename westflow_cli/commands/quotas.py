"""``westflow tenants``: each tenant's quota, what it uses, what it borrows from its cohort and lends to it.

    westflow tenants            # one row per tenant and resource it has quota for or uses
    westflow tenants --json
"""

from __future__ import annotations

import argparse
import json

from admission.rows import HOLDING, LIVE, WAITING
from westflow.config import load_network
from westflow.tenants import Ledger, Tenants
from westflow.text import table
from westflow_cli.admitting import ledger_for, queue_of, tenants_of
from westflow_cli.localnet import default_state_dir

__all__ = ["register", "run", "ledger"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tenants", help="tenants' quotas, use, borrowed and lent (configs/tenants.yaml + the queue)")
    p.add_argument("--state-dir", default=default_state_dir())
    p.add_argument("--db", default=None, help="the queue's database URL (default: $WESTFLOW_ADMISSION_URL, else "
                   "SQLite in the state dir)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def ledger(tenants: Tenants, used: Ledger) -> list[dict[str, object]]:
    """Per tenant and resource: quota, used, borrowed (use over quota) and lent (its unused quota that
    cohort members borrow, shared among the lenders in proportion to what each leaves unused)."""
    rows: list[dict[str, object]] = []
    for name, t in tenants.tenants.items():
        quota = t.quota.dimensions()
        mine = used.used.get(name, {})
        peers = tenants.members(t.cohort) if t.cohort else (t,)
        for dim in sorted(set(quota) | {d for d, n in mine.items() if n > 0}):
            q, u = quota.get(dim, 0.0), mine.get(dim, 0.0)
            borrowed = sum(used.borrowed(p.name).get(dim, 0.0) for p in peers if p.name != name)
            unused = {p.name: max(0.0, p.quota.dimensions().get(dim, 0.0) - used.used.get(p.name, {}).get(dim, 0.0))
                      for p in peers}
            pool = sum(unused.values())
            lent = min(borrowed * unused[name] / pool, unused[name]) if pool > 0 and t.cohort else 0.0
            rows.append({"tenant": name, "resource": dim, "quota": q, "used": u,
                         "borrowed": used.borrowed(name).get(dim, 0.0), "lent": round(lent, 3),
                         "share": round(used.share(name), 4), "weight": t.weight, "cohort": t.cohort})
    return rows


def run(args: argparse.Namespace) -> int:
    base = load_network(args.config_dir) if args.config_dir else load_network()
    tenants = tenants_of(args.config_dir, base)
    queue = queue_of(args.state_dir, args.db)
    rows = queue.rows(LIVE)
    out = ledger(tenants, ledger_for(tenants, rows))
    # pending counts deferred work too (it waits for its start): both are waiting, neither holds quota
    pending = {n: sum(1 for r in rows if r.tenant == n and r.state in WAITING) for n in tenants.tenants}
    admitted = {n: sum(1 for r in rows if r.tenant == n and r.state in HOLDING) for n in tenants.tenants}
    if args.json:
        print(json.dumps({"tenants": out, "pending": pending, "admitted": admitted}, indent=2))
        return 0
    print(table(["tenant", "weight", "cohort", "share", "resource", "quota", "used", "borrowed", "lent"],
                [(str(r["tenant"]), f"{r['weight']:g}", str(r["cohort"] or "-"), f"{r['share']:g}",
                  str(r["resource"]), f"{r['quota']:g}", f"{r['used']:g}", f"{r['borrowed']:g}", f"{r['lent']:g}")
                 for r in out]))
    print("work: " + ", ".join(f"{n} {admitted[n]} admitted / {pending[n]} pending" for n in tenants.tenants))
    return 0
