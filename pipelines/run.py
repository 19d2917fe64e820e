"""Materialise the recsys pipeline on the local network (``make demo`` and the tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.assets import RAY_ASSETS
from pipelines.resources import WestflowResource
from pipelines.utilisation import network_utilisation

__all__ = ["StepReport", "dagster_instance", "run_config", "materialize_pipeline", "step_reports"]


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


def dagster_instance(state_dir: Path) -> dg.DagsterInstance:
    """The persistent Dagster instance under ``<state_dir>/dagster`` (DAGSTER_HOME)."""
    home = (state_dir / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def run_config(*, rows: int, epochs: int, requests: int, log_level: str = "INFO") -> dict[str, Any]:
    return {"loggers": {"console": {"config": {"log_level": log_level}}}, "ops": {
        "daily_features": {"config": {"rows": rows}},
        "nightly_training": {"config": {"epochs": epochs}},
        "realtime_scoring": {"config": {"requests": requests}},
    }}


def _value(meta: dict[str, Any], key: str) -> Any:
    v = meta.get(key)
    return getattr(v, "value", v)


def step_reports(result: dg.ExecuteInProcessResult) -> list[StepReport]:
    out = []
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization  # type: ignore[union-attr]
        meta = dict(mat.metadata)
        if "westflow/data_center" not in meta:
            continue
        rtt = _value(meta, "westflow/rtt_ms")
        out.append(StepReport(
            step=mat.asset_key.to_user_string(), placed_in=str(_value(meta, "westflow/data_center")),
            ran_in=str(_value(meta, "westflow/ran_in")), region=str(_value(meta, "westflow/region")),
            tier=str(_value(meta, "westflow/tier")),
            rtt_ms=f"{rtt:.1f} ms to {_value(meta, 'westflow/origin')}" if isinstance(rtt, float) else str(rtt),
            accelerator=str(_value(meta, "westflow/accelerator")), cost_cny=float(_value(meta, "westflow/cost_cny")),
            job_id=str(_value(meta, "westflow/ray_job_id")), why=str(_value(meta, "westflow/why"))))
    return out


def materialize_pipeline(
    state_dir: Path, *, rows: int = 1_000_000, epochs: int = 3, requests: int = 2_000,
    instance: dg.DagsterInstance | None = None, with_utilisation: bool = True,
) -> dg.ExecuteInProcessResult:
    """Run features -> training -> scoring (and the utilisation report) end to end."""
    resource = WestflowResource(state_dir=str(state_dir.resolve()))
    assets = [*RAY_ASSETS, network_utilisation] if with_utilisation else list(RAY_ASSETS)
    return dg.materialize(
        assets, instance=instance or dagster_instance(state_dir), resources={"westflow": resource},
        run_config=run_config(rows=rows, epochs=epochs, requests=requests), raise_on_error=False,
    )
