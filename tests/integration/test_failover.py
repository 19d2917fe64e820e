"""Losing the data center that runs nightly_training mid-epoch costs no finished work.

Ten times: start training, let the job hold right after an epoch's checkpoint
(jobs.train's test hook, so the kill point is deterministic), kill the Ray node
of the DC running it. Every run must finish in another eligible DC, resume from
the last complete checkpoint, train no completed epoch twice, and end with the
same model as an uninterrupted run with the same seed.
"""

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from jobs.train import HOLD_FLAG
from pipelines.assets import daily_features, nightly_training
from pipelines.resources import WestflowResource
from ray_cluster.local import LocalNetwork
from storage import CheckpointStore, S3Config
from westflow.config import load_network
from westflow.errors import ObjectMissing
from westflow.inventory import Family

pytestmark = pytest.mark.integration
EPOCHS = 4
TRAIN = {"epochs": EPOCHS, "batch_size": 128, "hidden": 128, "seed": 7}


class _HoldingWestflow(WestflowResource):
    """Submits the step's jobs with jobs.train's test hook: ``hold`` is ``EPOCH:DIR``."""

    hold: str

    def _entrypoint(self, module: str, args: Sequence[str], p: Any) -> str:
        return super()._entrypoint(module, [*args, HOLD_FLAG, self.hold], p)


def _train(net: LocalNetwork, model: str, hold: str = "") -> dg.ExecuteInProcessResult:
    westflow = (_HoldingWestflow(state_dir=str(net.state_dir), poll_interval_s=0.3, hold=hold) if hold
                else WestflowResource(state_dir=str(net.state_dir), poll_interval_s=0.3))
    return dg.materialize(
        [nightly_training], instance=dg.DagsterInstance.ephemeral(), resources={"westflow": westflow},
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
                                               reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    ray_network.up()  # restore the node an earlier trial killed
    config = S3Config.load(ray_network.state_dir)
    model = f"failover-{trial}"
    hold = 1 + trial % (EPOCHS - 1)  # the kill point: the job holds after epoch 1, 2 or 3's checkpoint
    held, go = tmp_path / "held", tmp_path / "go"
    out: dict[str, dg.ExecuteInProcessResult] = {}
    runner = threading.Thread(target=lambda: out.setdefault("r", _train(ray_network, model, f"{hold}:{tmp_path}")))
    runner.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and runner.is_alive() and not held.exists():
            time.sleep(0.1)
        assert held.exists(), "the training job never held after its checkpoint"
        assert held.read_text() == str(hold)
        running = [j for j in ray_network.job_client().list_jobs() if j.status == "RUNNING"
                   and (j.metadata or {}).get("westflow.spec") == "nightly-training"]
        assert len(running) == 1
        run_id = running[0].metadata["westflow.dagster_run_id"]  # type: ignore[index]
        seen = max((s for bucket in ("westflow-west", "westflow-east") if (s := CheckpointStore(
            config, bucket, f"models/{model}/runs/{run_id}/checkpoints").latest()) is not None), default=None)
        assert seen == hold, f"the held job's latest checkpoint is {seen}, not epoch {hold}"
        killed = running[0].metadata["westflow.dc"]  # type: ignore[index]
        ray_network.stop_node(killed)  # the job is still held: it dies mid-run, after epoch `hold`
        runner.join(timeout=420)
    finally:
        go.touch()  # only now: a job held by a failed check above finishes; the killed one is gone
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
    assert meta["resumed_from_epoch"] == seen
    assert meta["resumed_from_epoch"] + meta["epochs_this_run"] == EPOCHS
    final = _final(config, model)
    assert final.keys() == reference.keys()
    for k in final:
        np.testing.assert_array_equal(final[k], reference[k], err_msg=k)
