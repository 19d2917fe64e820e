"""The Dagster code location loads, resolves every job, and validates specs at load time."""


import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from pipelines.definitions import defs
from pipelines.deployments import westflow_resource
from pipelines.metadata import SPEC, TIER
from pipelines.resources import WestflowResource
from pipelines.schedules import nightly_training_schedule
from pipelines.workload import CONFIG_DIR_ENV, westflow_asset
from tests.conftest import ROOT
from westflow.errors import ClusterError, ConfigError, SpecError


def test_definitions_resolve_every_job_and_schedule() -> None:
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {"recsys_pipeline", "nightly_training_job", "utilisation_job"}
    for job in repo.get_all_jobs():
        assert job.graph.node_defs  # resolves
    assert {s.name for s in repo.schedule_defs} == {"nightly_training_schedule", "utilisation_schedule"}
    assert {s.name for s in repo.sensor_defs} == {"services_reconcile_sensor"}
    nightly = repo.get_job("nightly_training_job")
    assert {k.to_user_string() for k in nightly.asset_layer.executable_asset_keys} == {"nightly_training",
                                                                                     "realtime_scoring"}
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == {"daily_features", "nightly_training", "batch_inference", "realtime_scoring",
                    "network_utilisation", "metering"}


def test_metering_is_partitioned_by_shanghai_day() -> None:
    node = defs.get_repository_def().asset_graph.get(dg.AssetKey("metering"))
    parts = node.partitions_def
    assert isinstance(parts, dg.DailyPartitionsDefinition) and parts.timezone == "Asia/Shanghai"
    keys = parts.get_partition_keys(current_time=datetime(2026, 11, 3, 0, 30, tzinfo=ZoneInfo("Asia/Shanghai")))
    assert keys[0] == "2026-01-01" and keys[-1] == "2026-11-02"  # only whole days: 11-03 has not ended
    util = defs.get_repository_def().asset_graph.get(dg.AssetKey("network_utilisation"))
    assert util.partitions_def is None  # the hourly schedule runs it unpartitioned


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
    node = repo.asset_graph.get(dg.AssetKey("nightly_training"))
    assert '"origin": "beijing"' in str(node.metadata[SPEC])
    assert node.tags[TIER] == "batch"


def test_each_deployment_builds_its_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    local = westflow_resource({"WESTFLOW_STATE_DIR": "/tmp/s"})
    assert local.ray_address is None and local.ray_auth_token is None and local.state_dir == "/tmp/s"
    cluster = westflow_resource({"WESTFLOW_DEPLOYMENT": "cluster"})
    assert isinstance(cluster.ray_address, dg.EnvVar) and cluster.ray_address.env_var_name == "WESTFLOW_RAY_ADDRESS"
    assert isinstance(cluster.ray_auth_token, dg.EnvVar) and cluster.ray_auth_token.env_var_name == "RAY_AUTH_TOKEN"
    with pytest.raises(ConfigError, match="'prod'; must be one of: local, cluster"):
        westflow_resource({"WESTFLOW_DEPLOYMENT": "prod"})


def test_the_resource_parses_the_spec_against_its_own_config_dir(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """A tier only the resource's config_dir knows: the run gets past the spec (to cluster access)."""
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    with (configs / "tiers.yaml").open("a") as f:
        f.write('  - {name: gold, max_rtt_ms: 30, description: "a tier only this config dir has"}\n')
    monkeypatch.setenv(CONFIG_DIR_ENV, str(configs))

    @westflow_asset(workload={"tier": "gold", "origin": "shanghai", "accelerator": "cpu"})
    def gold_step(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
        return westflow.run(context, module="jobs.etl")

    for var in ("WESTFLOW_RAY_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)

    def error_of(config_dir: Path) -> BaseException:
        with pytest.raises(Exception) as exc:  # noqa: PT011 - which error is the assertion
            dg.materialize([gold_step], instance=dg.DagsterInstance.ephemeral(),
                           resources={"westflow": WestflowResource(state_dir=str(tmp_path),
                                                                   config_dir=str(config_dir))})
        return exc.value

    theirs = error_of(configs)
    assert isinstance(theirs, ClusterError) and "No Ray cluster address" in str(theirs)
    default = error_of(ROOT / "configs")
    assert isinstance(default, SpecError) and default.field == "tier" and "gold" in str(default)
