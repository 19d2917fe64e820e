"""``network_utilisation``: each DC's metered use over the last day, against that DC's own target.

From actuals, not a snapshot: the usage records (:class:`admission.metering.Meter`) of jobs that
ended in the last 24 hours or since, each clipped to the window, give per DC the accelerator-hours
run (CPU-hours where a DC has no accelerators) over its capacity-hours in the window
(:func:`westflow.usage_report.dc_utilisation`), compared with its ``utilisation_target``. A job still
running is not metered yet, so a DC's figure can only rise as its jobs end. Needs no Ray.
"""

import time
from pathlib import Path
from typing import Final

import dagster as dg

from admission.metering import Meter
from pipelines.resources import WestflowResource
from westflow.capacity import UtilisationRow
from westflow.config import load_network
from westflow.text import markdown_table
from westflow.usage_report import dc_utilisation

__all__ = ["network_utilisation", "utilisation_rows", "WINDOW_S"]

WINDOW_S: Final = 86400.0


def utilisation_rows(westflow: WestflowResource, *, now: float | None = None,
                     window_s: float = WINDOW_S) -> tuple[UtilisationRow, ...]:
    """One row per DC of the inventory: metered use in ``[now - window_s, now)`` over capacity, share, target."""
    end = time.time() if now is None else now
    start = end - window_s
    queue = westflow.queue()
    try:
        records = Meter(queue).records(start=start)  # ended in the window or after: clipped to it
    finally:
        queue.close()
    return dc_utilisation(records, load_network(westflow.config_dir), start, end)


def _plot(rows: tuple[UtilisationRow, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r.dc for r in rows]
    colours = ["#d62728" if r.below else "#2ca02c" for r in rows]
    ax.bar(names, [100 * r.utilisation for r in rows], color=colours)
    ax.scatter(names, [100 * r.target for r in rows], color="black", marker="_", s=400, zorder=3,
               label="the DC's utilisation target")
    ax.set_ylabel("in use (%)")
    ax.set_ylim(0, 100)
    ax.set_title("metered utilisation, last 24 h (red: below its target)")
    ax.tick_params(axis="x", labelsize=7, rotation=30)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dg.asset(group_name="operations", kinds={"sqlite", "report"},
          description="Per-DC accelerator-hours metered over the last 24 hours against capacity; flags DCs "
                      "below their own utilisation target (configs/network.yaml).")
def network_utilisation(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    rows = utilisation_rows(westflow)
    reports = Path(westflow.state_dir).resolve() / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    png = reports / f"utilisation-{time.strftime('%Y%m%dT%H%M%S')}.png"
    _plot(rows, png)
    table = markdown_table(["data center", "region", "used", "capacity", "use", "target", "standing"],
                           [(r.dc, r.region, f"{r.used:,.1f}", f"{r.total:,.0f} {r.unit}", f"{r.utilisation:.0%}",
                             f"{r.target:.0%}", r.standing.value) for r in rows])
    below = [r.dc for r in rows if r.below]
    if below:
        context.log.warning("below their utilisation target: "
                            + ", ".join(f"{r.dc} ({r.utilisation:.0%} < {r.target:.0%})" for r in rows if r.below))
    return dg.MaterializeResult(metadata={
        "table": dg.MetadataValue.md(table),
        "plot": dg.MetadataValue.path(str(png)),
        "below_target": ", ".join(below) or "none",
        "data_centers": len(rows),
        "window_hours": WINDOW_S / 3600,
    })
