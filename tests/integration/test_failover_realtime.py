"""A real-time step whose only site within 20 ms is lost fails clearly; it never moves out of bound."""

import threading
import time

import dagster as dg
import pytest

from pipelines.metadata import REJECTED
from pipelines.resources import WestflowResource
from pipelines.workload import westflow_asset
from ray_cluster.dispatch import JOB_DC, JOB_SPEC
from ray_cluster.local import LocalNetwork

pytestmark = pytest.mark.integration


@westflow_asset(workload={"tier": "realtime", "origin": "chengdu", "accelerator": "cann:1", "cpus": 1,
                          "memory_gb": 1})
def chengdu_scoring(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    # Guian is the one local Ascend site within 20 ms of Chengdu; this keeps it busy until it is lost.
    return westflow.run(context, module="jobs.etl", args=["--name", "chengdu-rt", "--rows", "20000000"])


def test_realtime_step_fails_when_no_other_site_is_within_bound(ray_network: LocalNetwork) -> None:
    ray_network.up()
    out: dict[str, dg.ExecuteInProcessResult] = {}
    resource = WestflowResource(state_dir=str(ray_network.state_dir), poll_interval_s=0.3)
    runner = threading.Thread(target=lambda: out.setdefault("r", dg.materialize(
        [chengdu_scoring], instance=dg.DagsterInstance.ephemeral(), resources={"westflow": resource},
        raise_on_error=False)))
    runner.start()
    jobs, running = ray_network.job_client(), []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not running:
        running = [j for j in jobs.list_jobs() if j.status == "RUNNING"
                   and (j.metadata or {}).get(JOB_SPEC) == "chengdu-scoring"]
        time.sleep(0.5)
    assert running and running[0].metadata[JOB_DC] == "guian"  # type: ignore[index]
    time.sleep(3)
    ray_network.stop_node("guian")
    try:
        runner.join(timeout=300)
        result = out["r"]
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        table = str(failure.step_failure_data.user_failure_data.metadata[REJECTED].value)  # type: ignore[union-attr]
        assert "| guian | unavailable |" in table
        assert "| helinger | latency |" in table  # CANN there, but 20.4 ms from Chengdu
        assert "| zhongwei | accelerator |" in table  # within 12.7 ms, but CUDA only
        assert not any(e.event_type_value == "ASSET_MATERIALIZATION" for e in result.all_events)
    finally:
        ray_network.up()
