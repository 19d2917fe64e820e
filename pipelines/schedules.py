"""Schedules: nightly training (and the service's roll to its model) at 02:00 Beijing time, the utilisation
report hourly; a sensor that moves live services' routes off lost DCs."""

from __future__ import annotations

import dagster as dg

from pipelines.dagster_jobs import nightly_training_job, utilisation_job
from pipelines.resources import WestflowResource

__all__ = ["nightly_training_schedule", "utilisation_schedule", "services_reconcile_sensor", "ALL_SCHEDULES",
           "ALL_SENSORS", "TIMEZONE"]

TIMEZONE = "Asia/Shanghai"

nightly_training_schedule = dg.ScheduleDefinition(
    name="nightly_training_schedule", job=nightly_training_job, cron_schedule="0 2 * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain every night at 02:00 Asia/Shanghai, when eastern users sleep.")
utilisation_schedule = dg.ScheduleDefinition(
    name="utilisation_schedule", job=utilisation_job, cron_schedule="0 * * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING)
ALL_SCHEDULES = [nightly_training_schedule, utilisation_schedule]


@dg.sensor(name="services_reconcile_sensor", minimum_interval_seconds=15,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 15 s: a live service's route whose DC is lost moves to another DC within its "
                       "city's bound (or is marked degraded, with every DC's reason).")
def services_reconcile_sensor(context: dg.SensorEvaluationContext, westflow: WestflowResource) -> dg.SkipReason:
    moved = westflow.reconcile_services()
    for line in moved:
        context.log.warning(f"westflow: {line}")
    return dg.SkipReason("; ".join(moved) or "every route serves from a live DC")


ALL_SENSORS = [services_reconcile_sensor]
