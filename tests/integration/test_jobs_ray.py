"""Jobs on a real local Ray: logical accelerators are reported, gangs stay in one DC."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from jobs.backend import numpy_backend, select_backend
from jobs.dataio import load_labelled
from jobs.gang import plan_gang, train_gang
from jobs.memstore import MemoryDatasetStore
from jobs.model import ModelConfig
from jobs.synthetic import SyntheticSpec, chunks
from jobs.training import TrainConfig, fit
from westflow.tags import NPU, PIN, dc_resource

pytestmark = pytest.mark.integration

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Three raylets on this machine: two nodes of dc 'zhongwei', one of 'qingyang'."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a loud failure, never a silent skip: tests/conftest.py orders this module first
        pytest.fail("another Ray session is already open in this process, so this module's own cluster cannot "
                    "start: run it before any test that connects this process to Ray (tests/conftest.py)")
    c = Cluster()
    c.add_node(num_cpus=1, num_gpus=1, resources={dc_resource("zhongwei"): 1000, NPU: 1})
    c.add_node(num_cpus=1, num_gpus=1, resources={dc_resource("zhongwei"): 1000})
    c.add_node(num_cpus=1, num_gpus=1, resources={dc_resource("qingyang"): 1000})
    ray.init(address=c.address, include_dashboard=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _probe() -> dict[str, Any]:
    return select_backend().metadata()


def test_logical_gpu_and_npu_are_reported(cluster: Any) -> None:
    f = ray.remote(_probe)
    gpu = ray.get(f.options(num_gpus=1, num_cpus=0).remote())
    npu = ray.get(f.options(resources={NPU: 1}, num_cpus=0).remote())
    cpu = ray.get(f.options(num_cpus=0).remote())
    assert gpu["accelerator_assigned"] == "cuda" and gpu["accelerator_source"] == "ray"
    assert npu["accelerator_assigned"] == "cann"
    for md in (gpu, npu):  # no device here: NumPy, and it says so
        if md["backend"] == "numpy":
            assert md["accelerator_mode"] == "logical" and md["backend_fallback"] is True
            assert md["backend_fallback_reason"]
    assert cpu["accelerator_assigned"] == "none" and cpu["backend_fallback"] is False


def test_gang_spans_nodes_but_not_data_centers(cluster: Any) -> None:
    store = MemoryDatasetStore()
    store.write("d", "west", chunks(SyntheticSpec(rows=4000, chunk_rows=1000)))
    d = load_labelled(store, "d")
    model, cfg = ModelConfig(32, 4, 16), TrainConfig(epochs=2, batch_size=256, lr=0.1, seed=3)
    bundle = {"GPU": 1.0, "CPU": 1.0, dc_resource("zhongwei"): PIN}
    plan = plan_gang([bundle, bundle], per_node=1)
    assert plan.strategy == "PACK"
    r = train_gang(d.X, d.y, d.train_idx, d.eval_idx, model, cfg, plan, timeout_s=120,
                   log=lambda _: None)
    assert len(set(r.nodes.values())) == 2  # one GPU per node: the gang needs both zhongwei nodes
    zhongwei = {n["NodeID"] for n in ray.nodes() if dc_resource("zhongwei") in n["Resources"]}
    assert set(r.nodes.values()) <= zhongwei
    assert all(w["accelerator_assigned"] == "cuda" for w in r.workers)
    # Averaged gradients over the gang = one process on the whole batch.
    single = fit(numpy_backend(), d.X, d.y, d.train_idx, d.eval_idx, model, cfg)
    for k in single.params:
        np.testing.assert_allclose(r.params[k], single.params[k], rtol=1e-4, atol=1e-6)
    assert r.history[-1].loss < r.history[0].loss


def test_task_resources_runs_the_body_in_a_pinned_ray_task(
    cluster: Any, s3_config: Any, dataset_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``--task-resources`` (RayRequest.task_options()) moves the work into a task holding the GPU."""
    import json
    import logging

    from jobs import etl

    opts = {"num_cpus": 0, "num_gpus": 1, "resources": {dc_resource("qingyang"): PIN},
            "runtime_env": {"env_vars": s3_config.env()}}
    caplog.set_level(logging.INFO)
    assert etl.main(["--name", "in-task", "--rows", "2000", "--region", "east",
                     "--task-resources", json.dumps(opts)]) == 0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("etl result "))
    md = json.loads(line.split(" result ", 1)[1])
    assert md["accelerator_assigned"] == "cuda" and md["accelerator_source"] == "ray"
    assert md["backend_fallback"] is (md["backend"] == "numpy")
    assert dataset_store.info("in-task", "east").num_rows == 2000


GANG_BUNDLE = {"GPU": 1, "CPU": 1, dc_resource("zhongwei"): PIN}


def _gang_setup(caplog: pytest.LogCaptureFixture) -> Any:
    """In-memory stores holding a 3,000-row ETL dataset in the west; INFO logs captured."""
    import logging

    from jobs import etl
    from jobs.memstore import memory_stores

    stores = memory_stores()
    caplog.set_level(logging.INFO)
    assert etl.main(["--rows", "3000", "--region", "west"], stores=stores) == 0
    return stores


def _gang_result(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The metadata of the last ``jobs.gang`` run (its ``gang result`` log line)."""
    import json

    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gang result ")][-1]
    return dict(json.loads(line.split(" result ", 1)[1]))


def test_gang_cli_saves_a_model_and_reports_worker_fallbacks(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from jobs import gang
    from jobs.artifacts import load_model

    stores = _gang_setup(caplog)
    bundle = GANG_BUNDLE
    assert gang.main(["--bundles", json.dumps([bundle, bundle]), "--per-node", "1",
                      "--epochs", "1", "--hidden", "8", "--model", "g", "--region", "west"],
                     stores=stores) == 0
    md = _gang_result(caplog)
    assert (md["dc"], md["strategy"], md["workers"], md["nodes"]) == ("zhongwei", "PACK", 2, 2)
    assert md["worker_fallbacks"] == sum(b == "numpy" for b in md["worker_backends"])
    arrays, meta = load_model(stores, "west", "g")
    assert meta["gang"] == 2 and arrays["W1"].shape == (32, 8)
    bad = {"GPU": 1, "CPU": 1, dc_resource("qingyang"): PIN}
    assert gang.main(["--bundles", json.dumps([bundle, bad]), "--region", "west"],
                     stores=stores) == 2


def test_gang_interrupted_and_resumed_ends_with_the_uninterrupted_model(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    import numpy as np

    from jobs import gang
    from jobs.artifacts import load_model

    stores = _gang_setup(caplog)
    common = ["--bundles", json.dumps([GANG_BUNDLE, GANG_BUNDLE]), "--per-node", "1", "--epochs", "3",
              "--hidden", "8", "--region", "west"]

    assert gang.main([*common, "--model", "whole"], stores=stores) == 0
    assert gang.main([*common, "--model", "cut", "--stop-after", "2"], stores=stores) == 0
    first = _gang_result(caplog)
    assert (first["complete"], first["epochs_this_run"], first["model_uri"]) == (False, 2, None)
    assert gang.main([*common, "--model", "cut"], stores=stores) == 0
    second = _gang_result(caplog)
    assert (second["complete"], second["resumed_from_epoch"], second["epochs_this_run"]) == (True, 2, 1)
    whole, _ = load_model(stores, "west", "whole")
    cut, _ = load_model(stores, "west", "cut")
    assert whole.keys() == cut.keys()
    for k in whole:
        np.testing.assert_array_equal(whole[k], cut[k], err_msg=k)
