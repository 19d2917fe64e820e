"""``westflow report``: a month's metered usage as PNG figures (matplotlib, Agg).

(The module is ``usage_charts``, not ``report``: ``westflow.simulator.report`` has that name, and a
module name points at one thing.)

    westflow report --period 2026-11 --out reports/

Writes three files into ``--out`` (created if missing):

- ``utilisation-<period>.png``: per DC with accelerators, the share of its accelerators in use each
  hour (metered accelerator-hours over its accelerator count), its own target and the 65 % floor;
- ``spend-<period>.png``: CNY per tenant (energy and transfer), bars with their values;
- ``regions-<period>.png``: east vs west share of the accelerator-hours of each day (Asia/Shanghai,
  a job counts on the day it ended, as in ``westflow usage --by day``).

The figures' data is :mod:`westflow.usage_report`; this module only draws. Drawing is deterministic:
a fixed style, fixed size and dpi, no timestamps or software version in the PNG, written to a
temporary name and renamed, so the same records give the same bytes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from admission.metering import UsageRecord
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import SpecError
from westflow.inventory import Network
from westflow.usage_report import (
    FLOOR,
    DayShare,
    DCSeries,
    TenantSpend,
    hourly_utilisation,
    region_share_by_day,
    tenant_spend,
)
from westflow_cli.commands.bill import period_range
from westflow_cli.commands.usage import open_meter
from westflow_cli.localnet import default_state_dir

__all__ = ["register", "run", "FIGURES", "render", "out_dir"]

FIGURES: Final = ("utilisation", "spend", "regions")
_DPI: Final = 100
_TZ_OFFSET_S: Final = 8 * 3600


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="a month's metered usage as PNGs: utilisation per DC, spend per tenant, "
                       "east vs west")
    p.add_argument("--state-dir", default=default_state_dir())
    p.add_argument("--db", default=None, help="the admission database URL (default: $WESTFLOW_ADMISSION_URL, else "
                   "SQLite in the state dir)")
    p.add_argument("--period", required=True, help="the month, YYYY-MM (Asia/Shanghai)")
    p.add_argument("--out", required=True, help="the directory the PNGs go to (created if missing)")
    p.set_defaults(func=run)


def out_dir(text: str) -> Path:
    """``--out`` as a directory westflow can write into (created if missing); a SpecError naming ``--out``."""
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise SpecError("--out", text, "a directory (this is a file)", problem="Unwritable",
                        fix="name a directory; the report writes several PNGs.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError("--out", text, f"a directory westflow can write ({exc.strerror or exc})",
                        problem="Unwritable") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise SpecError("--out", text, "a directory westflow can write (it is not writable)", problem="Unwritable")
    return out


# -- drawing -----------------------------------------------------------------------------------------------


def _local(epoch_s: float) -> datetime:
    """An instant as a naive Asia/Shanghai datetime (matplotlib's date axis, no time zone database needed)."""
    return datetime.fromtimestamp(epoch_s + _TZ_OFFSET_S, UTC).replace(tzinfo=None)


def _utilisation(ax_grid: Any, series: Sequence[DCSeries]) -> None:
    import matplotlib.dates as mdates

    for ax, s in zip(ax_grid, series, strict=False):
        x = [_local(h) for h in s.hours]
        ax.plot(x, [100 * u for u in s.utilisation], color="#1f77b4" if s.region == "east" else "#ff7f0e",
                linewidth=0.8, label="in use")
        same = abs(s.target - FLOOR) < 1e-9
        ax.axhline(100 * s.target, color="black", linestyle="--", linewidth=0.8,
                   label="its target (the 65 % floor)" if same else "its target")
        if not same:
            ax.axhline(100 * FLOOR, color="#d62728", linestyle=":", linewidth=0.8, label="65 % floor")
        mean = sum(s.utilisation) / len(s.utilisation) if s.utilisation else 0.0
        ax.set_title(f"{s.dc} ({s.region}): mean {mean:.0%}", fontsize=8)
        ax.set_ylim(0, 100)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_major_locator(mdates.DayLocator(bymonthday=[1, 8, 15, 22]))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    for ax in list(ax_grid)[len(series):]:
        ax.set_visible(False)
    if series:
        ax_grid[0].legend(fontsize=6, loc="upper right")


def _draw_utilisation(series: Sequence[DCSeries], period: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    cols = 2
    rows = max(1, (len(series) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(10, 1.8 * rows + 0.6), sharey=True, squeeze=False)
    _utilisation([ax for row in axes for ax in row], series)
    fig.suptitle(f"Accelerators in use per hour, {period} (Asia/Shanghai), % of each DC", fontsize=10)
    fig.supylabel("in use (%)", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _draw_spend(spend: Sequence[TenantSpend], period: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [s.tenant for s in spend]
    bars = ax.bar(names, [s.cny for s in spend], color="#2ca02c")
    ax.bar_label(bars, labels=[f"{s.cny:,.0f}" for s in spend], fontsize=8)
    ax.set_ylabel("CNY (energy + transfer)")
    ax.set_title(f"Spend per tenant, {period}" + ("" if spend else " (no metered usage)"))
    ax.margins(y=0.15)
    fig.tight_layout()
    _save(fig, path)


def _draw_regions(days: Sequence[DayShare], period: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    labels = [d.day[5:] for d in days]
    east = [100 * d.east_share for d in days]
    west = [100 * d.west_share for d in days]
    ax.bar(labels, west, color="#ff7f0e", label="west")
    ax.bar(labels, east, bottom=west, color="#1f77b4", label="east")
    total_e = sum(d.east_hours for d in days)
    total_w = sum(d.west_hours for d in days)
    share = total_w / (total_e + total_w) if total_e + total_w > 0 else 0.0
    ax.set_title(f"East vs west share of accelerator-hours per day, {period} (west overall: {share:.0%})")
    ax.set_ylabel("share (%)")
    ax.set_ylim(0, 100)
    ax.tick_params(axis="x", labelsize=6, rotation=90)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG with no varying metadata, atomically (a temporary file, then a rename)."""
    import matplotlib.pyplot as plt

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=_DPI, metadata={"Software": None})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


def render(records: Sequence[UsageRecord], network: Network, period: str, start: float, end: float,
           out: Path) -> list[Path]:
    """Draw the three figures of ``records`` over ``[start, end)`` into ``out``; the paths written, in order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    draws: dict[str, Callable[[Path], None]] = {
        "utilisation": lambda p: _draw_utilisation(hourly_utilisation(records, network, start, end), period, p),
        "spend": lambda p: _draw_spend(tenant_spend(records), period, p),
        "regions": lambda p: _draw_regions(region_share_by_day(records, start, end), period, p),
    }
    paths = []
    with plt.style.context("default"), matplotlib.rc_context({"font.family": "DejaVu Sans"}):
        for name in FIGURES:
            path = out / f"{name}-{period}.png"
            draws[name](path)
            paths.append(path)
    return paths


def run(args: argparse.Namespace) -> int:
    network = load_network(args.config_dir or CONFIG_DIR)
    start, end = period_range(args.period)
    out = out_dir(args.out)
    meter = open_meter(args)
    try:
        records = meter.records(start=start, end=end)
    finally:
        meter.queue.close()
    try:
        paths = render(records, network, args.period, start, end, out)
    except OSError as exc:
        raise SpecError("--out", args.out, f"a directory westflow can write ({exc.strerror or exc})",
                        problem="Unwritable") from None
    print(f"westflow: {args.period} report of {len(records)} record(s): " + ", ".join(str(p) for p in paths))
    return 0
