"""``network_utilisation``: each DC's use read from the running cluster, flagged against the 65 % floor."""


import time
from pathlib import Path

import dagster as dg

from pipelines.resources import WestflowResource
from westflow.text import markdown_table

__all__ = ["network_utilisation", "utilisation_rows"]


def utilisation_rows(westflow: WestflowResource) -> list[tuple[str, str, float, float, float, bool]]:
    """(dc, region, used, total, share, below floor) per DC with a live node."""
    network = westflow.network()
    by_dc = {d.id: d for d in network.data_centers}
    rows = []
    for n in westflow.nodes():
        if not n.alive or n.dc not in by_dc:
            continue
        dc = by_dc[n.dc]
        total = n.total.get("GPU", 0.0) + n.total.get("NPU", 0.0)
        used = n.used("GPU") + n.used("NPU")
        if not total:
            total, used = n.total.get("CPU", 0.0), n.used("CPU")
        share = used / total if total else 0.0
        rows.append((dc.id, dc.region.value, used, total, share, share < dc.utilisation_target))
    return sorted(rows)


def _plot(rows: list[tuple[str, str, float, float, float, bool]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r[0] for r in rows]
    colours = ["#d62728" if r[5] else "#2ca02c" for r in rows]
    ax.bar(names, [100 * r[4] for r in rows], color=colours)
    ax.axhline(65, color="black", linestyle="--", linewidth=1, label="65 % national floor")
    ax.set_ylabel("accelerators in use (%)")
    ax.set_ylim(0, 100)
    ax.set_title("westflow network utilisation (red: below the floor)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dg.asset(group_name="operations", kinds={"ray", "report"},
          description="Per-DC accelerator use read from the running Ray network; flags DCs under 65 %.")
def network_utilisation(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    rows = utilisation_rows(westflow)
    reports = Path(westflow.state_dir).resolve() / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    png = reports / f"utilisation-{time.strftime('%Y%m%dT%H%M%S')}.png"
    _plot(rows, png)
    table = markdown_table(["data center", "region", "used", "total", "use", "below 65 % floor"],
                           [(r[0], r[1], f"{r[2]:g}", f"{r[3]:g}", f"{r[4]:.0%}", "yes" if r[5] else "")
                            for r in rows])
    below = [r[0] for r in rows if r[5]]
    if below:
        context.log.warning(f"below the 65 % utilisation floor: {', '.join(below)}")
    return dg.MaterializeResult(metadata={
        "table": dg.MetadataValue.md(table),
        "plot": dg.MetadataValue.path(str(png)),
        "below_floor": ", ".join(below) or "none",
        "data_centers": len(rows),
    })
