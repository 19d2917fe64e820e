"""Materialise the recsys pipeline on the local network (``make demo`` and the tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines import metadata as md
from pipelines import service_asset as sv
from pipelines.assets import RAY_ASSETS
from pipelines.resources import WestflowResource
from pipelines.utilisation import network_utilisation

__all__ = ["StepReport", "RouteReport", "dagster_instance", "run_config", "materialize_pipeline", "step_reports",
           "route_reports"]


@dataclass(frozen=True, slots=True)
class StepReport:
    """Where one step was placed, where Ray says it ran, and why."""

    step: str
    placed_in: str
    ran_in: str
    region: str
    tier: str
    rtt_ms: str
    accelerator: str
    cost_cny: float
    job_id: str
    why: str
    cluster: str = ""  # the Ray cluster that ran it


def dagster_instance(state_dir: Path) -> dg.DagsterInstance:
    """The persistent Dagster instance under ``<state_dir>/dagster`` (DAGSTER_HOME)."""
    home = (state_dir / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def run_config(*, rows: int, epochs: int, log_level: str = "INFO") -> dict[str, Any]:
    return {"loggers": {"console": {"config": {"log_level": log_level}}}, "ops": {
        "daily_features": {"config": {"rows": rows}},
        "nightly_training": {"config": {"epochs": epochs}},
    }}


@dataclass(frozen=True, slots=True)
class RouteReport:
    """One city's route of a service materialised in a run."""

    service: str
    city: str
    health: str
    data_center: str
    cluster: str
    rtt_ms: float | None
    replicas: int
    endpoint: str
    model_version: str


def route_reports(result: dg.ExecuteInProcessResult) -> list[RouteReport]:
    """One report per city of each service deployed in ``result``."""
    out = []
    for ev in result.get_asset_materialization_events():
        meta = dict(ev.event_specific_data.materialization.metadata)  # type: ignore[union-attr]
        if sv.SERVICE not in meta:
            continue
        cities = sorted({k.split("/")[1] for k in meta if k.endswith("/health") and k.count("/") == 2})
        for city in cities:
            def get(what: str, default: Any = "", city: str = city, meta: dict[str, Any] = meta) -> Any:
                key = sv.route_key(city, what)
                return md.value(meta, key) if key in meta else default
            out.append(RouteReport(str(md.value(meta, sv.SERVICE)), city, str(get("health")), str(get("dc")),
                                   str(get("cluster")), get("rtt_ms", None), int(get("replicas", 0)),
                                   str(get("endpoint")), str(md.value(meta, sv.MODEL_VERSION))))
    return out


def step_reports(result: dg.ExecuteInProcessResult) -> list[StepReport]:
    """One report per westflow step materialised in ``result`` (read by the metadata keys)."""
    out = []
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization  # type: ignore[union-attr]
        meta = dict(mat.metadata)
        if md.DATA_CENTER not in meta:
            continue
        rtt = md.value(meta, md.RTT_MS)
        out.append(StepReport(
            step=mat.asset_key.to_user_string(), placed_in=str(md.value(meta, md.DATA_CENTER)),
            ran_in=str(md.value(meta, md.RAN_IN)), region=str(md.value(meta, md.REGION)),
            tier=str(md.value(meta, md.TIER)),
            rtt_ms=f"{rtt:.1f} ms to {md.value(meta, md.ORIGIN)}" if isinstance(rtt, float) else str(rtt),
            accelerator=str(md.value(meta, md.ACCELERATOR)), cost_cny=float(md.value(meta, md.COST_CNY)),
            job_id=str(md.value(meta, md.RAY_JOB_ID)), why=str(md.value(meta, md.WHY)),
            cluster=str(md.value(meta, md.RAY_CLUSTER))))
    return out


def materialize_pipeline(
    westflow: WestflowResource, *, rows: int = 1_000_000, epochs: int = 3,
    instance: dg.DagsterInstance | None = None, with_utilisation: bool = True,
) -> dg.ExecuteInProcessResult:
    """Run features -> training -> batch scoring and the live service (and the utilisation report) end to end.

    The Dagster instance defaults to the persistent one under the resource's ``state_dir``.
    """
    assets = [*RAY_ASSETS, network_utilisation] if with_utilisation else list(RAY_ASSETS)
    return dg.materialize(
        assets, instance=instance or dagster_instance(Path(westflow.state_dir)), resources={"westflow": westflow},
        run_config=run_config(rows=rows, epochs=epochs), raise_on_error=False,
    )
