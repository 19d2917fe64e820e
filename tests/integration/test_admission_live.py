"""Admission on the live network: preemption through Dagster, and fair share on Ray's own accounting.

- **Preemption.** A best-effort training step holds every A800 of zhangjiakou, the only DC with
  A800s (and within 20 ms of Beijing). A real-time step for Beijing asking for those A800s is
  queued; the admission cycle (run by the waiting step itself: no controller process here)
  preempts the training. Its step stops its Ray job (grace 0), goes back to the queue, waits
  while the real-time step runs in its bound, then resumes from its checkpoint and ends with the
  same model, bit for bit, as an uninterrupted run. The kill point is a barrier: the training
  job holds after epoch 2's checkpoint (jobs.train's test hook) until it is stopped.
- **Fair share.** Two tenants of weights 2 and 1 flood a CUDA pool of 12 GPUs (zhongwei's 8 H20 and
  helinger's 4 H800; their work keeps off zhangjiakou) with one-GPU work. The controller reads
  live capacity from Ray; each admitted workload is held in Ray by a placement group pinned to
  its DC; rounds end by releasing them. Admitted accelerator-hours converge to 2:1 within 10 %,
  and Ray never holds more than a DC has. (In a pool of 8 the max-min fair split is 5:3, not
  2:1: DRF is exact only where the pool divides.)
"""


import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from admission.controller import Controller
from admission.specjson import spec_to_json
from admission.workqueue import AdmissionQueue
from jobs.train import HOLD_FLAG
from pipelines import metadata as md
from pipelines.assets import FeaturesConfig, TrainingConfig, daily_features, train_model
from pipelines.resources import WestflowResource
from pipelines.workload import westflow_asset
from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import JOB_DC
from ray_cluster.federation import Federation
from ray_cluster.local import LocalNetwork
from storage import CheckpointStore, S3Config
from tests.builders import make_spec
from westflow.capacity import full_capacity
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import ObjectMissing
from westflow.placement import get_policy
from westflow.tenants import load_tenants

pytestmark = pytest.mark.integration
DATASET = "preempt_features"
TRAIN = {"epochs": 4, "batch_size": 128, "hidden": 16, "seed": 11}
A800 = {"family": "cuda", "model": "A800", "count": 8}
BUCKETS = ("westflow-west", "westflow-east")
WAIT_S = 300.0
POOL = {"zhongwei": 8, "helinger": 4}  # the local profile's CUDA GPUs outside zhangjiakou


@westflow_asset(workload={"tier": "batch", "origin": "beijing", "accelerator": A800, "cpus": 1, "memory_gb": 2,
                          "duration_hours": 2, "priority_class": "best-effort"},
                group_name="admission", description="Best-effort training on every A800 of one DC.")
def be_training(context: dg.AssetExecutionContext, config: TrainingConfig,
                westflow: WestflowResource) -> dg.MaterializeResult:
    return train_model(context, config, westflow, dataset=DATASET)


@westflow_asset(workload={"tier": "realtime", "origin": "beijing", "accelerator": A800, "cpus": 1, "memory_gb": 1,
                          "duration_hours": 0.1},
                group_name="admission", description="Real-time work for Beijing on the same A800s.")
def rt_burst(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.run(context, module="jobs.etl", args=["--name", "rt_burst", "--rows", "2000", "--features",
                                                          "4", "--seed", "1"])


class _Holding(WestflowResource):
    """Submits the training's jobs with jobs.train's hold hook (``EPOCH:DIR``)."""

    hold: str

    def _entrypoint(self, module: str, args: Any, p: Any) -> str:
        return super()._entrypoint(module, [*args, HOLD_FLAG, self.hold] if module == "jobs.train" else args, p)


def _resource(net: LocalNetwork, **kw: Any) -> WestflowResource:
    kw = {"state_dir": str(net.state_dir), "poll_interval_s": 0.3, "preemption_grace_s": 0.0, **kw}
    return _Holding(**kw) if "hold" in kw else WestflowResource(**kw)


def _train(westflow: WestflowResource, model: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([be_training], instance=dg.DagsterInstance.ephemeral(), resources={"westflow": westflow},
                          run_config={"ops": {"be_training": {"config": {"model": model, **TRAIN}}}},
                          raise_on_error=False)


def _final(config: S3Config, model: str) -> dict[str, np.ndarray]:
    for bucket in BUCKETS:
        try:
            return CheckpointStore(config, bucket, f"models/{model}/final").load()[0]
        except ObjectMissing:
            continue
    raise AssertionError(f"no final model {model}")


def _meta(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    mat = result.get_asset_materialization_events()[-1].event_specific_data.materialization  # type: ignore[union-attr]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _jobs(net: LocalNetwork, needle: str) -> list[Any]:
    return sorted((j for j in net.job_client().list_jobs() if needle in j.entrypoint),
                  key=lambda j: j.start_time or 0)


@pytest.fixture(scope="module")
def features(ray_network: LocalNetwork) -> Iterator[LocalNetwork]:
    ray_network.up()
    got = dg.materialize([daily_features], instance=dg.DagsterInstance.ephemeral(),
                         resources={"westflow": _resource(ray_network)},
                         run_config={"ops": {"daily_features": {"config": FeaturesConfig(
                             dataset=DATASET, rows=20_000, seed=5).model_dump()}}})
    assert got.success
    yield ray_network


def test_realtime_preempts_best_effort_training_which_resumes_to_the_same_model(features: LocalNetwork,
                                                                                 tmp_path: Path) -> None:
    net = features
    config = S3Config.load(net.state_dir)
    ref = _train(_resource(net), "preempt-ref")
    assert ref.success and _meta(ref)[md.PREEMPTIONS] == 0
    reference = _final(config, "preempt-ref")

    hold = tmp_path / "hold"
    hold.mkdir()
    out: dict[str, dg.ExecuteInProcessResult] = {}
    training = threading.Thread(target=lambda: out.update(t=_train(_resource(net, hold=f"2:{hold}"), "preempt-be")))
    training.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not (hold / "held-2").exists():  # the barrier: epoch 2's checkpoint is written, the job holds
            assert training.is_alive() and time.monotonic() < deadline, "the training never reached epoch 2"
            time.sleep(0.1)
        rt = dg.materialize([rt_burst], instance=dg.DagsterInstance.ephemeral(),
                            resources={"westflow": _resource(net)}, raise_on_error=False)
        training.join(WAIT_S)
        assert not training.is_alive(), "the preempted training did not finish"
    finally:
        (hold / "go").touch()  # only a failed check leaves a job holding
        training.join(WAIT_S)

    assert rt.success
    rt_meta = _meta(rt)
    assert rt_meta[md.DATA_CENTER] == rt_meta[md.RAN_IN] == "zhangjiakou" and rt_meta[md.RTT_MS] <= 20.0
    trained = out["t"]
    assert trained.success, "the preempted step must wait and continue, not fail"
    meta = _meta(trained)
    assert meta[md.PREEMPTIONS] == 1 and meta[md.DATA_CENTER] == "zhangjiakou"
    assert meta["resumed_from_epoch"] == 2  # from its checkpoint, no epoch trained twice
    observed = [e.event_specific_data.asset_observation.metadata  # type: ignore[union-attr]
                for e in trained.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert any(md.PREEMPTED in o for o in observed)
    final = _final(config, "preempt-be")
    assert final.keys() == reference.keys()
    for k in reference:
        np.testing.assert_array_equal(final[k], reference[k], err_msg=k)

    # Ray's own record: the preempted job stopped before the real-time job started; never both on the A800s.
    be_jobs, rt_jobs = _jobs(net, "--model preempt-be "), _jobs(net, "--name rt_burst ")
    assert [j.status for j in be_jobs] == ["STOPPED", "SUCCEEDED"] and len(rt_jobs) == 1
    assert all(j.metadata[JOB_DC] == "zhangjiakou" for j in [*be_jobs, *rt_jobs])
    assert be_jobs[0].end_time <= rt_jobs[0].start_time and rt_jobs[0].end_time <= be_jobs[1].start_time

    queue = AdmissionQueue.local(net.state_dir)
    key = str(meta[md.QUEUE_KEY])
    kinds = [d.kind for d in queue.decisions(key) if d.kind != "waiting"]
    assert kinds == ["queued", "admitted", "preempting", "requeued", "resumed", "finished"], kinds
    assert not queue.holding()  # every step released what it held


# -- fair share on Ray's accounting ----------------------------------------------------------------------------


def test_two_tenants_weighted_two_to_one_get_two_to_one_of_the_accelerator_hours(ray_driver: LocalNetwork,
                                                                                tmp_path: Path) -> None:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    net = ray_driver
    network = load_network()
    fed = Federation.single(ClusterAccess.resolve(dashboard_url=net.dashboard_url, token_path=net.token_path), network)
    network = fed.grouped(network)
    tenants = load_tenants(CONFIG_DIR, models={p.model for dc in network.data_centers for p in dc.pools})
    queue = AdmissionQueue(f"sqlite:///{tmp_path / 'fair.db'}")
    ctl = Controller(queue, tenants=tenants, network=network, policy=get_policy("westflow"),
                     capacity=lambda: fed.capacity_and_totals(network), holder="fair-share")
    per_tenant = 60  # more than 6 rounds take: both tenants flood to the end
    for i in range(per_tenant):  # submitted interleaved, oldest first: age alone would split them 1:1
        for tenant in ("recsys", "retail-ai"):
            spec = make_spec(name=f"{tenant}-{i}", tenant=tenant, accelerator="cuda:1", cpus=0.01, memory_gb=0.01)
            queue.submit(f"{tenant}-{i}", tenant=tenant, priority_class="production", priority=0,
                         spec_name=spec.name, spec_json=spec_to_json(spec), max_wait_s=3600, owner="fair-share test",
                         exclude=("zhangjiakou",))
    hours = {"recsys": 0.0, "retail-ai": 0.0}
    groups: dict[str, Any] = {}
    try:
        for _ in range(6):  # rounds of equal length: each admitted workload runs one round
            report = ctl.cycle()
            assert report.led and report.written
            rows = [r for k in report.admitted if (r := queue.get(k)) is not None]
            per_dc = {dc: sum(r.accelerators for r in rows if r.data_center == dc) for dc in POOL}
            why = {r.key: r.reasons for r in queue.pending()[:2]}
            assert len(rows) == sum(POOL.values()) and per_dc == POOL, (per_dc, why)  # the pool full, none over
            for r in rows:
                assert r.data_center is not None
                groups[r.key] = placement_group([_bundle(r.key, r.data_center, network)])
                hours[r.tenant] += 1.0
            ready, pending = ray.wait([groups[k].ready() for k in report.admitted], num_returns=len(report.admitted),
                                      timeout=60)
            assert not pending, "the controller admitted more than Ray could hold"
            for k in list(report.admitted):
                remove_placement_group(groups.pop(k))
                queue.finish(k)
            _until_free(fed, network)
    finally:
        for g in groups.values():
            remove_placement_group(g)
    ratio = hours["recsys"] / hours["retail-ai"]
    assert abs(ratio - 2.0) <= 0.2, hours  # 2:1 within 10 %


def _bundle(key: str, dc: str, network: Any) -> dict[str, float]:
    """What the admitted workload's task would take in Ray (its placement's request, pins included)."""
    spec = make_spec(name=key, accelerator="cuda:1", cpus=0.01, memory_gb=0.01)
    p = get_policy("westflow").place(spec, network, {dc: full_capacity(network)[dc]})
    opts = p.ray.task_options()
    return {**{k: float(v) for k, v in opts["resources"].items()}, "CPU": float(opts["num_cpus"]),
            "GPU": float(opts.get("num_gpus") or 0)}


def _until_free(fed: Federation, network: Any, timeout_s: float = 60.0) -> None:
    """Wait until the dashboard shows the pool free again (it lags Ray's GCS by a few seconds)."""
    deadline = time.monotonic() + timeout_s
    while True:
        live, totals = fed.capacity_and_totals(network)
        if all(live[dc].free.get(m, 0) >= totals[dc].free.get(m, 0) for dc, m in (("zhongwei", "H20"),
                                                                                  ("helinger", "H800"))):
            return
        assert time.monotonic() < deadline, f"the pool never showed free: {live}"
        time.sleep(0.25)
