"""Losing the data center that runs nightly_training mid-epoch costs no finished work.

Ten times: start training, wait for a checkpoint, kill the Ray node of the DC
running it. Every run must finish in another eligible DC, resume from the last
complete checkpoint, train no completed epoch twice, and end with the same
model as an uninterrupted run with the same seed.
"""

import threading
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import numpy as np
import pytest

from pipelines.assets import daily_features, nightly_training
from pipelines.resources import WestflowResource
from ray_cluster.config import load_network
from ray_cluster.errors import ObjectMissing
from ray_cluster.local import LocalNetwork
from ray_cluster.model import Family
from ray_cluster.storage import CheckpointStore, S3Config

pytestmark = pytest.mark.integration
EPOCHS = 4
TRAIN = {"epochs": EPOCHS, "batch_size": 128, "hidden": 128, "seed": 7}


def _train(net: LocalNetwork, model: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [nightly_training], instance=dg.DagsterInstance.ephemeral(),
        resources={"westflow": WestflowResource(state_dir=str(net.state_dir), poll_interval_s=0.3)},
        run_config={"ops": {"nightly_training": {"config": {"model": model, **TRAIN}}}}, raise_on_error=False)


def _meta(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    mat = result.get_asset_materialization_events()[-1].event_specific_data.materialization  # type: ignore[union-attr]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _final(config: S3Config, model: str) -> dict[str, np.ndarray]:
    for bucket in ("westflow-west", "westflow-east"):
        try:
            return CheckpointStore(config, bucket, f"models/{model}/final").load()[0]
        except ObjectMissing:
            continue
    raise AssertionError(f"no final model {model}")


@pytest.fixture(scope="module", autouse=True)
def restore_network(ray_network: LocalNetwork) -> Iterator[None]:
    """Later modules share the network: bring back the node the last trial killed."""
    yield
    ray_network.up()


@pytest.fixture(scope="module")
def reference(ray_network: LocalNetwork) -> dict[str, np.ndarray]:
    feats = dg.materialize([daily_features], instance=dg.DagsterInstance.ephemeral(),
                           resources={"westflow": WestflowResource(state_dir=str(ray_network.state_dir))},
                           run_config={"ops": {"daily_features": {"config": {"rows": 200_000, "seed": 3}}}})
    assert feats.success
    ref = _train(ray_network, "failover-ref")
    assert ref.success and _meta(ref)["resumed_from_epoch"] == -1
    return _final(S3Config.load(ray_network.state_dir), "failover-ref")


@pytest.mark.parametrize("trial", range(10), ids=[f"kill-{i + 1}" for i in range(10)])
def test_node_lost_mid_epoch_resumes_elsewhere(trial: int, ray_network: LocalNetwork,
                                               reference: dict[str, np.ndarray]) -> None:
    ray_network.up()  # restore the node an earlier trial killed
    config = S3Config.load(ray_network.state_dir)
    model = f"failover-{trial}"
    out: dict[str, dg.ExecuteInProcessResult] = {}
    runner = threading.Thread(target=lambda: out.setdefault("r", _train(ray_network, model)))
    runner.start()
    jobs, running = ray_network.job_client(), []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not running:
        running = [j for j in jobs.list_jobs() if j.status == "RUNNING"
                   and (j.metadata or {}).get("westflow.spec") == "nightly-training"]
        time.sleep(0.2)
    assert len(running) == 1
    run_id = running[0].metadata["westflow.dagster_run_id"]  # type: ignore[index]
    seen = None
    while time.monotonic() < deadline and seen is None:
        for bucket in ("westflow-west", "westflow-east"):
            step = CheckpointStore(config, bucket, f"models/{model}/runs/{run_id}/checkpoints").latest()
            if step is not None and step >= 1:
                seen = step
        time.sleep(0.2)
    assert seen is not None and seen < EPOCHS, f"no mid-run checkpoint (saw {seen})"
    killed = running[0].metadata["westflow.dc"]  # type: ignore[index]
    ray_network.stop_node(killed)
    runner.join(timeout=420)
    result = out["r"]
    assert result.success
    meta = _meta(result)
    network = load_network()
    finished = meta["westflow/data_center"]
    assert finished != killed and meta["westflow/ran_in"] == finished
    assert network.dc(finished).families & {Family.CUDA, Family.CANN}  # still an accelerator site
    assert killed in meta["westflow/failovers"]
    observations = [e.event_specific_data.asset_observation.metadata  # type: ignore[union-attr]
                    for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert [(o["westflow/failover_from"].value, o["westflow/failover_to"].value) for o in observations] == \
        [(killed, finished)]
    # resumed from the last complete checkpoint; no completed epoch trained twice
    assert meta["resumed_from_epoch"] >= seen
    assert meta["resumed_from_epoch"] + meta["epochs_this_run"] == EPOCHS
    final = _final(config, model)
    assert final.keys() == reference.keys()
    for k in final:
        np.testing.assert_array_equal(final[k], reference[k], err_msg=k)
