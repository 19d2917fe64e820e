"""Stopping the S3 server in the middle of a step's write: the step fails, nothing partial is visible,
and after a restart the re-run completes with the whole dataset."""

import threading
import time

import dagster as dg
import pytest

from pipelines.assets import daily_features
from pipelines.resources import WestflowResource
from ray_cluster.local import LocalNetwork
from storage import DatasetStore, S3Config, SeaweedServer
from westflow.errors import ObjectMissing

pytestmark = pytest.mark.integration
NAME, ROWS = "fault-features", 1_500_000


def _etl(net: LocalNetwork) -> dg.ExecuteInProcessResult:
    return dg.materialize([daily_features], instance=dg.DagsterInstance.ephemeral(),
                          resources={"westflow": WestflowResource(state_dir=str(net.state_dir), max_failovers=0)},
                          run_config={"ops": {"daily_features": {"config": {"dataset": NAME, "rows": ROWS}}}},
                          raise_on_error=False)


def test_s3_stopped_mid_write_leaves_nothing_and_the_rerun_completes(ray_network: LocalNetwork) -> None:
    config = S3Config.load(ray_network.state_dir)
    server = SeaweedServer(ray_network.state_dir)
    out: dict[str, dg.ExecuteInProcessResult] = {}
    runner = threading.Thread(target=lambda: out.setdefault("r", _etl(ray_network)))
    runner.start()
    s3 = config.boto3_client()
    deadline, writing = time.monotonic() + 180, False
    while time.monotonic() < deadline and not writing:
        for bucket in ("westflow-west", "westflow-east"):  # a multipart upload of a part is under way
            uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=f"datasets/{NAME}/").get("Uploads", [])
            writing = writing or bool(uploads)
        time.sleep(0.1)
    assert writing, "the ETL step never started writing"
    server.stop()
    try:
        runner.join(timeout=300)
        result = out["r"]
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "S3" in failure.message or "endpoint" in (str(failure.step_failure_data.error) or "")  # type: ignore[union-attr]
    finally:
        server.start()
    store = DatasetStore(config)
    with pytest.raises(ObjectMissing):
        store.info(NAME)  # no manifest: nothing visible under the final name
    rerun = _etl(ray_network)
    assert rerun.success
    info = store.info(NAME)
    assert info.num_rows == ROWS
    store.verify(NAME)
    assert store.read(NAME, columns=["id"]).num_rows == ROWS
