"""``westflow storage gc``: remove what killed writes left in the westflow buckets.

Aborts multipart uploads in progress and deletes unpublished dataset runs and
checkpoint arrays no marker names, once older than ``--older-than``; committed
datasets and checkpoints are never touched (see :mod:`storage.gc`).
"""

from __future__ import annotations

import argparse
import math
import os
import re

from storage import S3Config
from storage.gc import GcReport, collect
from storage.s3_config import ENV_ENDPOINT
from westflow_cli.localnet import default_state_dir

__all__ = ["register", "run", "duration_s", "report_text"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd]?)$")


def duration_s(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``2d`` or plain seconds, as seconds (finite, >= 0)."""
    m = _DURATION.match(text.strip()) if text.isascii() else None
    value = float(m.group(1)) * _UNITS[m.group(2) or "s"] if m else math.nan
    if not math.isfinite(value):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise argparse.ArgumentTypeError(
            f"Invalid duration {shown!r}; must be a number >= 0 with an optional unit s, m, h or d "
            "(e.g. 1h, 30m, 0).")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("storage", help="maintain the westflow S3 buckets")
    actions = p.add_subparsers(dest="storage_command", required=True, parser_class=type(p))
    gc = actions.add_parser("gc", help="abort stale multipart uploads, delete unpublished runs and "
                                       "unreferenced checkpoint arrays")
    gc.add_argument("--older-than", type=duration_s, default=3600.0, metavar="AGE",
                    help="only what is at least this old (default 1h; e.g. 30m, 2d, 0)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.add_argument("--state-dir", default=default_state_dir(),
                    help="where `westflow up` recorded the S3 server (default: $WESTFLOW_STATE_DIR, "
                         "else the checkout's .westflow); $WESTFLOW_S3_ENDPOINT overrides it")
    gc.set_defaults(func=run)


def _config(state_dir: str) -> S3Config:
    return S3Config.from_env() if os.environ.get(ENV_ENDPOINT) else S3Config.load(state_dir)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} B"


def _age(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"


def report_text(report: GcReport) -> str:
    """One line per removal, then a total."""
    verb = {"upload": "abort upload", "run": "delete run", "checkpoint": "delete arrays"}
    lines = []
    for r in report.removed:
        what = "in progress" if r.kind == "upload" else f"{r.objects} object(s), {_size(r.size_bytes)}"
        prefix = "would " if report.dry_run else ""
        lines.append(f"{prefix}{verb[r.kind]:13s} {r.bucket}/{r.key}  ({what}, {_age(r.age_s)} old)")
    uploads = sum(r.kind == "upload" for r in report.removed)
    objects = sum(r.objects for r in report.removed)
    size = sum(r.size_bytes for r in report.removed)
    done = "would remove" if report.dry_run else "removed"
    lines.append(f"{done}: {uploads} upload(s) in progress, {objects} object(s), {_size(size)} "
                 f"in {', '.join(report.buckets) or 'no westflow bucket'}; "
                 f"{report.young} leftover(s) younger than {_age(report.older_than_s)} kept")
    lines += [f"warning: kept, unreadable: {f}" for f in report.failures]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = collect(_config(args.state_dir), older_than_s=args.older_than, dry_run=args.dry_run)
    print(report_text(report))
    return 0
