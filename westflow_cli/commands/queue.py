"""``westflow queue``: the admission queue, and why each pending step waits.

    westflow queue                # waiting (pending and deferred, in admission order) and admitted work
    westflow queue --all          # also what ended (finished, failed, expired, ...)
    westflow queue --why KEY      # one entry: every DC's last reason and its decisions
    westflow queue --json
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime

from admission.rows import HOLDING, LIVE, WAITING, WorkloadRow, start_text
from admission.tickets import reasons_of
from westflow.admission_types import latest_start
from westflow.config import load_network
from westflow.errors import WestflowError
from westflow.tenants import Pending, admission_order
from westflow.text import table
from westflow_cli.admitting import ledger_for, queue_of, tenants_of
from westflow_cli.localnet import default_state_dir

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("queue", help="the admission queue: pending and admitted work, and why each waits")
    p.add_argument("--state-dir", default=default_state_dir())
    p.add_argument("--db", default=None, help="the queue's database URL (default: $WESTFLOW_ADMISSION_URL, else "
                   "SQLite in the state dir)")
    p.add_argument("--all", action="store_true", help="also list work that ended")
    p.add_argument("--why", metavar="KEY", default=None, help="one entry: reasons per DC and its decisions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _why(row: WorkloadRow) -> str:
    if row.state == "deferred" and row.start_at is not None:
        return f"starts {start_text(row.start_at)}" + (f": {row.start_note}" if row.start_note else "")
    if row.state != "pending":
        return row.detail or ""
    reasons = reasons_of(row)
    if not reasons:
        return "not yet considered"
    first = sorted(reasons.items())
    text = "; ".join(f"{dc}: {r}" for dc, r in first[:3])
    return text + (f" (+{len(first) - 3} more DCs: --why {row.key})" if len(first) > 3 else "")


def run(args: argparse.Namespace) -> int:
    queue = queue_of(args.state_dir, args.db)
    now = time.time()
    if args.why:
        row = queue.get(args.why)
        if row is None:
            raise WestflowError(f"No queue entry {args.why!r}. To fix: list them with `westflow queue --all`.")
        if args.json:
            print(json.dumps({"row": _plain(row), "reasons": reasons_of(row),
                              "decisions": [d.__dict__ if hasattr(d, "__dict__") else _plain(d)
                                            for d in queue.decisions(row.key)]}, indent=2, default=str))
            return 0
        print(f"{row.key}: {row.spec_name}, tenant {row.tenant}, {row.priority_class}, {row.state}, "
              f"submitted {_age(now - row.submitted_at)} ago" + (f", at {row.data_center}" if row.data_center else "")
              + (f", {_why(row)}" if row.state == "deferred" else ""))
        reasons = reasons_of(row)
        if reasons:
            print(table(["data center", "last reason"], sorted(reasons.items())))
        print(table(["when", "decision", "DC", "detail", "by"],
                    [(time.strftime("%H:%M:%S", time.localtime(d.at)), d.kind, d.data_center or "-", d.detail[:90],
                      d.controller) for d in queue.decisions(row.key)]))
        return 0
    rows = queue.rows(None if args.all else LIVE)
    base = load_network(args.config_dir) if args.config_dir else load_network()
    tenants = tenants_of(args.config_dir, base)
    holding = [r for r in rows if r.state in HOLDING]
    pending = [r for r in rows if r.state in WAITING]  # deferred work is a candidate too, in the same order
    order = admission_order([Pending(r.key, r.tenant, r.priority_class, r.submitted_at, _due(r), r.priority)
                             for r in pending
                             if r.tenant in tenants.tenants and r.priority_class in tenants.priority_classes],
                            ledger_for(tenants, holding).used, tenants)
    position = {p.key: i + 1 for i, p in enumerate(order)}
    ranked = sorted(rows, key=lambda r: (r.state not in WAITING, position.get(r.key, 10**9), r.submitted_at))
    if args.json:
        print(json.dumps([{**_plain(r), "position": position.get(r.key)} for r in ranked], indent=2, default=str))
        return 0
    if not ranked:
        print("the queue is empty" + ("" if args.all else " (nothing pending or admitted; --all for history)"))
        return 0
    print(table(["#", "key", "spec", "tenant", "priority", "state", "DC", "since", "why / detail"],
                [(str(position.get(r.key, "")), r.key, r.spec_name, r.tenant, r.priority_class, r.state,
                  r.data_center or "-", _age(now - (r.admitted_at if r.state not in WAITING and r.admitted_at
                                                    else r.submitted_at)), _why(r)) for r in ranked]))
    deferred = sum(r.state == "deferred" for r in pending)
    print(f"{len(pending) - deferred} pending, " + (f"{deferred} deferred, " if deferred else "")
          + f"{len(holding)} admitted")
    return 0


def _due(row: WorkloadRow) -> float | None:
    """When a row with a deadline is due: its latest start (deadline - duration, epoch s), as the cycle
    orders it; None without a deadline (or a spec this reader cannot read: ordered by age)."""
    try:
        spec = json.loads(row.spec_json)
        deadline = spec.get("deadline")
        return latest_start(datetime.fromisoformat(deadline), float(spec.get("duration_hours") or 0.0)) \
            if deadline else None
    except (ValueError, TypeError, AttributeError):
        return None


def _plain(obj: object) -> dict[str, object]:
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else {"value": str(obj)}
