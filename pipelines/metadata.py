"""The Dagster metadata keys westflow writes, shared by the writer and every reader.

The resource writes them on each materialisation (:func:`placement_metadata`);
``pipelines.run.step_reports``, the CLI and the tests read them by these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from ray_cluster.failover import Lost
from westflow.placement import Placement
from westflow.text import rejections_markdown, why

__all__ = [
    "DATA_CENTER", "RAN_IN", "REGION", "RAY_CLUSTER", "TIER", "ORIGIN", "RTT_MS", "ACCELERATOR", "ENERGY_KWH",
    "COST_CNY", "TRANSFER_HOURS", "POLICY", "RAY_JOB_ID", "DASHBOARD", "CLUSTER_DASHBOARD", "WHY", "REJECTED",
    "FAILOVERS",
    "FAILOVER_FROM", "FAILOVER_TO", "FAILOVER_REASON", "SPEC", "INPUTS", "PROJECT", "CODE", "FAILURE",
    "JOB_LOG_TAIL", "PLACEMENT_KEYS", "TENANT", "WAIT_S", "PREEMPTIONS", "PREEMPTED", "QUEUE_KEY",
    "placement_metadata", "failover_metadata", "failovers_markdown", "value",
]

# on every materialisation
DATA_CENTER = "westflow/data_center"
RAN_IN = "westflow/ran_in"
REGION = "westflow/region"
RAY_CLUSTER = "westflow/ray_cluster"
TIER = "westflow/tier"  # also the asset tag of the declared tier
ORIGIN = "westflow/origin"
RTT_MS = "westflow/rtt_ms"
ACCELERATOR = "westflow/accelerator"  # also the asset tag of the declared accelerator
ENERGY_KWH = "westflow/energy_kwh"
COST_CNY = "westflow/cost_cny"
TRANSFER_HOURS = "westflow/transfer_hours"
POLICY = "westflow/policy"
RAY_JOB_ID = "westflow/ray_job_id"
DASHBOARD = "westflow/dashboard"  # the Ray job's page in its cluster's dashboard
CLUSTER_DASHBOARD = "westflow/cluster_dashboard"  # the dashboard of the Ray cluster that ran it
WHY = "westflow/why"
REJECTED = "westflow/rejected"  # also on the failure of a step no DC can take
PLACEMENT_KEYS = (DATA_CENTER, RAN_IN, REGION, RAY_CLUSTER, TIER, ORIGIN, RTT_MS, ACCELERATOR, ENERGY_KWH, COST_CNY,
                  TRANSFER_HOURS, POLICY, RAY_JOB_ID, DASHBOARD, CLUSTER_DASHBOARD, WHY, REJECTED)
# after a data center was lost
FAILOVERS = "westflow/failovers"  # on the materialisation
FAILOVER_FROM, FAILOVER_TO, FAILOVER_REASON = (  # on an AssetObservation per failover
    "westflow/failover_from", "westflow/failover_to", "westflow/failover_reason")
# on the asset definition (written by @westflow_asset)
SPEC = "westflow/spec"
INPUTS = "westflow/inputs"
PROJECT = "westflow/project"  # the project root whose code the step ships
# on the materialisation (CODE) and on a failed step
CODE = "westflow/code"  # what travelled: working dir, size, requirements
FAILURE = "westflow/failure"  # the one-line cause of a failed step
JOB_LOG_TAIL = "westflow/job_log_tail"  # the last lines of the failed job's log
TENANT = "westflow/tenant"  # who the step was admitted as
WAIT_S = "westflow/wait_s"  # seconds in the admission queue, every admission together
PREEMPTIONS = "westflow/preemptions"  # how often the step was preempted (and resumed)
PREEMPTED = "westflow/preempted"  # on the observation logged at a preemption
QUEUE_KEY = "westflow/queue_key"  # the step's entry in the admission queue (`westflow queue`)


def placement_metadata(p: Placement, *, job_id: str, job_url: str, ran_in: str, cluster_url: str = "",
                       ) -> dict[str, Any]:
    """What every materialisation records about where and why it ran."""
    return {
        DATA_CENTER: p.data_center,
        RAN_IN: ran_in,
        REGION: p.region,
        RAY_CLUSTER: p.ray_cluster,
        TIER: p.spec.tier,
        ORIGIN: p.spec.origin or "",
        RTT_MS: dg.MetadataValue.float(round(p.rtt_ms, 3)) if p.rtt_ms is not None else "n/a",
        ACCELERATOR: f"{p.spec.accelerator.count} x {p.accelerator_model}" if p.accelerator_model else "cpu",
        ENERGY_KWH: dg.MetadataValue.float(round(p.energy_kwh, 6)),
        COST_CNY: dg.MetadataValue.float(round(p.cost_cny, 6)),
        TRANSFER_HOURS: dg.MetadataValue.float(round(p.transfer_hours, 6)),
        POLICY: p.policy,
        RAY_JOB_ID: job_id,
        DASHBOARD: dg.MetadataValue.url(job_url),
        CLUSTER_DASHBOARD: dg.MetadataValue.url(cluster_url or job_url.split("/#/")[0]),
        WHY: why(p),
        REJECTED: dg.MetadataValue.md(rejections_markdown(p)),
    }


def failover_metadata(lost: Lost, to: Placement) -> dict[str, Any]:
    """The observation recorded when the step moves off a lost data center."""
    return {FAILOVER_FROM: lost.data_center, FAILOVER_TO: to.data_center, FAILOVER_REASON: lost.reason}


def failovers_markdown(lost: tuple[Lost, ...]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- lost {x.data_center}: {x.reason}" for x in lost))


def value(meta: Mapping[str, Any], key: str) -> Any:
    """The plain value of ``meta[key]`` (a MetadataValue's ``.value``), or None."""
    v = meta.get(key)
    return getattr(v, "value", v)
