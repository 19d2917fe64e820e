"""``westflow bill``: a month's invoice lines as CSV or Parquet (by the extension of ``--out``).

    westflow bill --tenant retail-ai --period 2026-11 --out retail-ai-2026-11.csv
    westflow bill --period 2026-11 --out network-2026-11.parquet      # every tenant, and idle capacity per DC

One ``usage`` line per (tenant, DC, accelerator model): jobs, accelerator-hours, CPU-hours, kWh,
energy CNY, GB moved between regions, transfer CNY, total. Without ``--tenant`` (the operator's
view) each DC with accelerators also gets an ``idle`` line, OpenCost's idle share: its accelerator-hours
over the whole month less those metered, the idle share of capacity, and what those accelerators
would draw at full power (x PUE) and cost at the DC's price. A job counts in the month (Asia/Shanghai) it
ended. Lines are sorted and numbers written with fixed decimals, so a rerun writes the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from admission.metering import TZ, Totals
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import SpecError
from westflow.inventory import Network
from westflow_cli.commands.usage import checked_tenant, open_meter
from westflow_cli.localnet import default_state_dir

__all__ = ["register", "run", "COLUMNS", "period_range", "bill_lines", "write_bill"]

COLUMNS: Final = ("period", "kind", "tenant", "data_center", "region", "cluster", "accelerator_model", "jobs",
                  "accelerator_hours", "cpu_hours", "kwh", "energy_cny", "transfer_gb", "transfer_cny", "total_cny",
                  "idle_share")
_NUMBERS: Final = COLUMNS[8:]
_PERIOD = re.compile(r"(\d{4})-(\d{2})")
_FORMATS: Final = (".csv", ".parquet")
DECIMALS: Final = 6


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bill", help="a month's invoice lines (CSV or Parquet); without --tenant, idle capacity too")
    p.add_argument("--state-dir", default=default_state_dir())
    p.add_argument("--db", default=None, help="the admission database URL (default: $WESTFLOW_ADMISSION_URL, else "
                   "SQLite in the state dir)")
    p.add_argument("--tenant", default=None, help="one tenant's bill (default: every tenant and the idle lines)")
    p.add_argument("--period", required=True, help="the month, YYYY-MM (Asia/Shanghai)")
    p.add_argument("--out", required=True, help="the file to write: *.csv or *.parquet")
    p.set_defaults(func=run)


def period_range(text: str, *, now: float | None = None) -> tuple[float, float]:
    """``[start, end)`` epoch seconds of month ``YYYY-MM`` in Asia/Shanghai; a SpecError if malformed or not begun."""
    m = _PERIOD.fullmatch(text) if isinstance(text, str) else None
    if m is None or not 1 <= int(m[2]) <= 12 or int(m[1]) < 1970:
        raise SpecError("--period", text, "a month YYYY-MM", fix="e.g. --period 2026-11")
    year, month = int(m[1]), int(m[2])
    start = datetime(year, month, 1, tzinfo=TZ).timestamp()
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=TZ).timestamp()
    current = time.time() if now is None else now
    if start > current:
        this = datetime.fromtimestamp(current, TZ).strftime("%Y-%m")
        raise SpecError("--period", text, f"a month that has begun (up to {this})", problem="Future",
                        fix="bill a past or the current month.")
    return start, end


def _out_path(text: str) -> Path:
    out = Path(text)
    if out.suffix.lower() not in _FORMATS:
        raise SpecError("--out", text, "a file ending in .csv or .parquet")
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        why = "is a directory" if out.is_dir() else ("its directory does not exist" if not parent.is_dir()
                                                      else "its directory is not writable")
        raise SpecError("--out", text, f"a file westflow can write ({why})", problem="Unwritable")
    return out


def _line(period: str, kind: str, key: tuple[Any, ...], numbers: dict[str, float], jobs: int) -> dict[str, Any]:
    tenant, dc, region, cluster, model = key
    row: dict[str, Any] = {"period": period, "kind": kind, "tenant": tenant or "", "data_center": dc or "",
                           "region": region or "", "cluster": cluster or "", "accelerator_model": model or "",
                           "jobs": jobs}
    row.update({k: round(float(numbers.get(k, 0.0)), DECIMALS) + 0.0 for k in _NUMBERS})  # + 0.0: no "-0.0"
    return row


def _usage_line(period: str, t: Totals) -> dict[str, Any]:
    return _line(period, "usage", t.key, {"accelerator_hours": t.accelerator_hours, "cpu_hours": t.cpu_hours,
                                          "kwh": t.kwh, "energy_cny": t.cny, "transfer_gb": t.transfer_gb,
                                          "transfer_cny": t.transfer_cny, "total_cny": t.total_cny}, t.jobs)


def _idle_lines(period: str, hours: float, used: list[Totals], network: Network) -> list[dict[str, Any]]:
    by_pool: dict[tuple[str, str | None], float] = defaultdict(float)
    for t in used:
        by_pool[(t.key[1], t.key[4])] += t.accelerator_hours
    lines = []
    for dc in sorted(network.data_centers, key=lambda d: d.id):
        capacity = dc.accelerator_total * hours
        if capacity <= 0:
            continue
        idle_h = kwh = 0.0
        for pool in dc.pools:
            pool_idle = max(0.0, pool.count * hours - by_pool.get((dc.id, pool.model), 0.0))
            idle_h += pool_idle
            kwh += pool.watts * pool_idle / 1000 * dc.pue  # the accelerators' share of the placement's formula
        cny = kwh * dc.price_cny_kwh
        lines.append(_line(period, "idle", ("", dc.id, str(dc.region), dc.ray_cluster, ""),
                           {"accelerator_hours": idle_h, "kwh": kwh, "energy_cny": cny, "total_cny": cny,
                            "idle_share": idle_h / capacity}, 0))
    return lines


def bill_lines(args: argparse.Namespace, network: Network, tenant: str | None) -> list[dict[str, Any]]:
    """The invoice lines of ``args.period`` (usage, then idle when ``tenant`` is None), in a stable order."""
    start, end = period_range(args.period)
    meter = open_meter(args)
    try:
        used = meter.totals(["tenant", "dc", "region", "cluster", "model"], tenant=tenant, start=start, end=end)
    finally:
        meter.queue.close()
    lines = [_usage_line(args.period, t) for t in used]
    if tenant is None:
        lines += _idle_lines(args.period, (end - start) / 3600.0, used, network)
    return lines


def write_bill(lines: list[dict[str, Any]], out: Path) -> None:
    """Write ``lines`` to ``out`` (CSV or Parquet by extension) atomically: a temporary file, then a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            if out.suffix.lower() == ".csv":
                text = io.StringIO()
                w = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
                w.writeheader()
                w.writerows({k: (f"{v:.{DECIMALS}f}" if k in _NUMBERS else v) for k, v in r.items()} for r in lines)
                f.write(text.getvalue().encode())
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                types = {k: pa.float64() if k in _NUMBERS else pa.int64() if k == "jobs" else pa.string()
                         for k in COLUMNS}
                schema = pa.schema([(k, types[k]) for k in COLUMNS])
                pq.write_table(pa.Table.from_pylist(lines, schema=schema), f, compression="zstd")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    network = load_network(args.config_dir or CONFIG_DIR)
    tenant = checked_tenant(args.tenant, args.config_dir, network)
    period_range(args.period)
    out = _out_path(args.out)
    lines = bill_lines(args, network, tenant)
    try:
        write_bill(lines, out)
    except OSError as exc:
        raise SpecError("--out", args.out, f"a file westflow can write ({exc.strerror or exc})",
                        problem="Unwritable") from None
    usage = [r for r in lines if r["kind"] == "usage"]
    print(f"westflow: {args.period} bill{' of ' + tenant if tenant else ''}: {len(usage)} usage line(s)"
          f"{', ' + str(len(lines) - len(usage)) + ' idle' if tenant is None else ''}, "
          f"{sum(r['total_cny'] for r in usage):,.2f} CNY -> {out}")
    return 0
