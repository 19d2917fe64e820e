"""Plain-text tables for the CLI (and Markdown for Dagster metadata)."""

from __future__ import annotations

from collections.abc import Sequence

from westflow.placement import Placement

__all__ = ["table", "markdown_table", "placement_text", "rejections_markdown"]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned fixed-width table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def rejections_markdown(p: Placement) -> str:
    return markdown_table(["data center", "reason", "detail"],
                          [(r.data_center, r.reason.value, r.detail) for r in p.rejected])


def placement_text(p: Placement) -> str:
    """The human explanation of a placement (``westflow plan``)."""
    s = p.spec
    rtt = "n/a (no origin)" if p.rtt_ms is None else f"{p.rtt_ms:.1f} ms to {s.origin}"
    accel = ("cpu" if p.accelerator_model is None
             else f"{s.accelerator.count} x {p.accelerator_model} ({p.family.value})")
    head = [
        f"{s.name}: {s.tier} work{' from ' + s.origin if s.origin else ''}, {accel}, {s.duration_hours:g} h",
        f"  placed in     {p.data_center} ({p.region}, Ray cluster {p.ray_cluster}) by policy {p.policy}",
        f"  RTT           {rtt}{'' if p.within_tier else '  !! BEYOND THE TIER BOUND'}",
        f"  energy        {p.energy_kwh:.3f} kWh  ->  {p.energy_cost_cny:.2f} CNY",
        f"  data transfer {p.transfer_hours:.2f} h, {p.transfer_cost_cny:.2f} CNY",
        f"  total cost    {p.cost_cny:.2f} CNY",
        *([f"  starts        {p.start_note}"] if p.start_note else []),
        f"  ray request   {p.ray.task_options()}",
        f"  ray job submit {p.ray.submit_flags()} -- python jobs/...",
    ]
    if p.ray.bundles:
        head.append(f"  gang          {len(p.ray.bundles)} bundles {p.ray.strategy} inside {p.data_center}")
    rows = [(r.data_center, r.reason.value, r.detail) for r in p.rejected]
    return "\n".join(head) + "\n\n" + table(["other DC", "lost on", "why"], rows)


def why(p: Placement) -> str:
    """One line: why this DC won (what the others lost on)."""
    counts: dict[str, int] = {}
    for r in p.rejected:
        counts[r.reason.value] = counts.get(r.reason.value, 0) + 1
    eligible = counts.pop("dearer", 0) + counts.pop("not-chosen", 0) + 1
    lost = ", ".join(f"{n} on {reason}" for reason, n in sorted(counts.items()))
    head = {"westflow": "cheapest total cost", "east-first": "nearest eastern DC", "cheapest": "cheapest energy",
            "round-robin": "round-robin turn", "random": "random draw"}.get(p.policy, p.policy)
    return f"{head} of {eligible} eligible" + (f"; others lost {lost}" if lost else "")
