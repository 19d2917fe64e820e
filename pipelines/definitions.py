"""The ``pipelines`` code location: assembles assets, jobs, schedules and resources."""

from __future__ import annotations

import dagster as dg

from pipelines.assets import RAY_ASSETS
from pipelines.dagster_jobs import ALL_JOBS
from pipelines.deployments import westflow_resource
from pipelines.metering_asset import metering
from pipelines.schedules import ALL_SCHEDULES, ALL_SENSORS
from pipelines.utilisation import network_utilisation

defs = dg.Definitions(
    assets=[*RAY_ASSETS, network_utilisation, metering],
    jobs=ALL_JOBS,
    schedules=ALL_SCHEDULES,
    sensors=ALL_SENSORS,
    resources={"westflow": westflow_resource()},
)
