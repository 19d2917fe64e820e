"""``network_utilisation``: each DC's use read from the running cluster, against that DC's own target.

The rows are :func:`westflow.capacity.utilisation_report` of the live usage
(:func:`ray_cluster.live.usage`): the same utilisation ``westflow status`` and the
simulator report, compared with each DC's ``utilisation_target`` from the config.
"""

import time
from pathlib import Path

import dagster as dg

from pipelines.resources import WestflowResource
from ray_cluster.live import usage
from westflow.capacity import UtilisationRow, utilisation_report
from westflow.text import markdown_table

__all__ = ["network_utilisation", "utilisation_rows"]


def utilisation_rows(westflow: WestflowResource) -> tuple[UtilisationRow, ...]:
    """One row per DC with a live node: used and total accelerators (CPUs where it has none), share, target."""
    network = westflow.network()
    return utilisation_report(network, usage(network, westflow.nodes()))


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
    ax.set_title("westflow network utilisation (red: below its target)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dg.asset(group_name="operations", kinds={"ray", "report"},
          description="Per-DC accelerator use read from the running Ray network; flags DCs below their own "
                      "utilisation target (configs/network.yaml).")
def network_utilisation(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    rows = utilisation_rows(westflow)
    reports = Path(westflow.state_dir).resolve() / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    png = reports / f"utilisation-{time.strftime('%Y%m%dT%H%M%S')}.png"
    _plot(rows, png)
    table = markdown_table(["data center", "region", "used", "total", "use", "target", "standing"],
                           [(r.dc, r.region, f"{r.used:g}", f"{r.total:g} {r.unit}", f"{r.utilisation:.0%}",
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
    })
