"""Schedules: nightly training at 02:00 Beijing time, the utilisation report hourly."""

from __future__ import annotations

import dagster as dg

from pipelines.dagster_jobs import nightly_training_job, utilisation_job

__all__ = ["nightly_training_schedule", "utilisation_schedule", "ALL_SCHEDULES", "TIMEZONE"]

TIMEZONE = "Asia/Shanghai"

nightly_training_schedule = dg.ScheduleDefinition(
    name="nightly_training_schedule", job=nightly_training_job, cron_schedule="0 2 * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain every night at 02:00 Asia/Shanghai, when eastern users sleep.")
utilisation_schedule = dg.ScheduleDefinition(
    name="utilisation_schedule", job=utilisation_job, cron_schedule="0 * * * *",
    execution_timezone=TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING)
ALL_SCHEDULES = [nightly_training_schedule, utilisation_schedule]
