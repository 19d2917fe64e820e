"""The Dagster code location loads, resolves every job, and validates specs at load time."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from pipelines.definitions import defs
from pipelines.schedules import nightly_training_schedule
from pipelines.workload import westflow_asset
from tests.conftest import ROOT
from westflow.errors import SpecError


def test_definitions_resolve_every_job_and_schedule() -> None:
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {"recsys_pipeline", "nightly_training_job", "utilisation_job"}
    for job in repo.get_all_jobs():
        assert job.graph.node_defs  # resolves
    assert {s.name for s in repo.schedule_defs} == {"nightly_training_schedule", "utilisation_schedule"}
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == {"daily_features", "nightly_training", "batch_inference", "realtime_scoring",
                    "network_utilisation"}


def test_dagster_cli_validates_the_workspace() -> None:
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "All code locations passed validation" in out.stderr + out.stdout


def test_nightly_schedule_next_tick_is_0200_shanghai() -> None:
    assert nightly_training_schedule.execution_timezone == "Asia/Shanghai"
    start = datetime(2026, 11, 27, 15, 30, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    tick = next(cron_string_iterator(start, nightly_training_schedule.cron_schedule, "Asia/Shanghai"))
    assert (tick.hour, tick.minute) == (2, 0)
    assert tick.date().isoformat() == "2026-11-28"
    assert tick.utcoffset() is not None and tick.utcoffset().total_seconds() == 8 * 3600  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("workload", "field"),
    [({"tier": "realtime", "origin": "paris"}, "origin"), ({"accelerator": "gpu"}, "accelerator"),
     ({"tier": "realtime"}, "origin"), ({"cpus": -2}, "cpus")],
    ids=["unknown-city", "loose-junk", "realtime-without-origin", "negative-cpus"],
)
def test_bad_spec_fails_at_load_naming_asset_and_field(workload: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as exc:
        @westflow_asset(workload=workload)
        def broken_step() -> None: ...
    assert exc.value.field == field
    assert "asset 'broken_step'" in str(exc.value)


def test_spec_travels_on_the_asset() -> None:
    repo = defs.get_repository_def()
    node = repo.asset_graph.get(dg.AssetKey("realtime_scoring"))
    assert '"origin": "shanghai"' in str(node.metadata["westflow/spec"])
    assert node.tags["westflow/tier"] == "realtime"
