"""Federation (issue 13) on two real Ray clusters started here: east (zhangjiakou, wuhu) and west (helinger,
guian, zhongwei), each with its own head, Jobs API, token and nodes; one S3 server.

- the pipelines run across both clusters: every step in the cluster of its DC, as each cluster's Ray says,
  and the live service has a route per city, Shanghai's in east and Chengdu's in west;
- each cluster refuses the other's token and no token;
- west's head killed while idle: placement says ``cluster unreachable: west: ...`` within its timeout and
  puts batch work east; a real-time step that only west could serve fails with that reason; ``up`` brings
  west back without touching east;
- west's head killed (SIGKILL) mid-training, 6 times (two runs at once): each step finishes on east from its
  last checkpoint with the model of an uninterrupted run;
- ``westflow down`` leaves no process and no listening port of either cluster.
"""


import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import psutil
import pytest

from jobs.train import HOLD_FLAG
from pipelines import metadata as md
from pipelines.assets import FEATURES, MODEL, RAY_ASSETS, SERVICE, batch_inference, daily_features
from pipelines.resources import WestflowResource
from pipelines.run import route_reports, run_config, step_reports
from pipelines.workload import westflow_asset
from ray_cluster.federation import Federation
from ray_cluster.local import LocalFederation, LocalNetwork
from ray_cluster.serving import Services
from storage import CheckpointStore, S3Config
from tests.fixtures.training import BATCH, MATRIX_POLICY
from tests.fixtures.training import nightly_training as matrix_training
from westflow.config import load_network
from westflow.errors import ObjectMissing
from westflow.placement import get_policy
from westflow.spec import parse_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
EPOCHS = 4
TRAIN = {"epochs": EPOCHS, "batch_size": 128, "hidden": 64, "seed": 11}
LOST_AFTER_S = 6.0  # the resource's cluster_lost_after_s in these tests (default 20 s)


def _meta(result: dg.ExecuteInProcessResult, key: str | None = None) -> dict[str, Any]:
    mats = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]  # type: ignore[union-attr]
    mat = next(m for m in mats if key is None or m.asset_key.to_user_string() == key)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _driver_dc(net: LocalNetwork, job_id: str) -> str | None:
    """The DC of the node the job's driver ran on, as that cluster's own Ray reports it."""
    info = net.job_client().get_job_info(job_id)
    return next((n.dc for n in net.reader().nodes() if n.node_id == info.driver_node_id), None)


@westflow_asset(workload={"tier": "realtime", "origin": "shanghai", "accelerator": "any:1", "cpus": 1},
                deps=[batch_inference])
def shanghai_scoring(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    """A real-time Ray Job step (the pipeline's realtime_scoring is a live service, tested in test_services)."""
    return westflow.run(context, module="jobs.realtime_score", args=[
        "--model", MODEL, "--dataset", FEATURES, "--requests", "300"])


@pytest.fixture(scope="module")
def pipeline_run(ray_federation: LocalFederation) -> Iterator[dg.ExecuteInProcessResult]:
    westflow = WestflowResource(state_dir=str(ray_federation.state_dir))  # the clusters `up` recorded
    yield dg.materialize([*RAY_ASSETS, shanghai_scoring], instance=dg.DagsterInstance.ephemeral(),
                         resources={"westflow": westflow}, run_config=run_config(rows=40_000, epochs=2),
                         raise_on_error=False)
    fed = Federation.local(ray_federation.state_dir)
    if fed is not None:  # the module's last test stops the federation
        Services(ray_federation.state_dir, fed, load_network()).remove(SERVICE)


def test_the_pipelines_run_across_both_clusters(pipeline_run: dg.ExecuteInProcessResult,
                                                ray_federation: LocalFederation) -> None:
    assert pipeline_run.success
    reports = step_reports(pipeline_run)
    assert {r.step for r in reports} == {"daily_features", "nightly_training", "batch_inference",
                                         "shanghai_scoring"}
    for r in reports:
        cluster = ray_federation.profile.cluster_of(r.placed_in)
        assert r.cluster == cluster, r
        net = ray_federation.cluster(cluster)
        assert r.ran_in == r.placed_in == _driver_dc(net, r.job_id), r  # the cluster's own Ray says so
        other = next(c for n, c in ray_federation.clusters.items() if n != cluster)
        assert r.job_id not in {j.submission_id for j in other.job_client().list_jobs()}
        meta = _meta(pipeline_run, r.step)
        assert meta[md.RAY_CLUSTER] == cluster
        assert meta[md.CLUSTER_DASHBOARD] == net.dashboard_url
        assert meta[md.DASHBOARD] == f"{net.dashboard_url}/#/jobs/{r.job_id}"
    by_step = {r.step: r.cluster for r in reports}
    assert by_step["shanghai_scoring"] == "east"
    routes = {r.city: r.cluster for r in route_reports(pipeline_run)}  # the live service: a route per city
    assert routes == {"shanghai": "east", "chengdu": "west"}
    assert {by_step[s] for s in ("daily_features", "nightly_training", "batch_inference")} == {"west"}


def _get(url: str, token: str | None) -> int:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_each_cluster_refuses_the_other_clusters_token_and_none(ray_federation: LocalFederation) -> None:
    east, west = ray_federation.cluster("east"), ray_federation.cluster("west")
    tokens = {n: c.token_path.read_text().strip() for n, c in ray_federation.clusters.items()}
    assert tokens["east"] != tokens["west"]
    for name, net in (("east", east), ("west", west)):
        other = "west" if name == "east" else "east"
        url = f"{net.dashboard_url}/api/jobs/"
        assert _get(url, tokens[name]) == 200
        assert _get(url, tokens[other]) in (401, 403)
        assert _get(url, None) in (401, 403)
        body = json.dumps({"entrypoint": "echo hi", "submission_id": f"cross-token-{name}"}).encode()
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Authorization": f"Bearer {tokens[other]}",
                                              "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code in (401, 403)
        assert f"cross-token-{name}" not in {j.submission_id for j in net.job_client().list_jobs()}


@westflow_asset(workload={"tier": "realtime", "origin": "beijing",
                          "accelerator": {"family": "cuda", "model": "H800", "count": 1}})
def h800_realtime(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.run(context, module="jobs.realtime_score")


def test_a_lost_idle_cluster_is_unreachable_and_comes_back(ray_federation: LocalFederation) -> None:
    east_pids = set(ray_federation.cluster("east").pids())
    ray_federation.stop_cluster("west", sig=signal.SIGKILL)
    try:
        fed = Federation.local(ray_federation.state_dir)
        assert fed is not None
        network = fed.grouped(load_network())
        t0 = time.monotonic()
        caps, _ = fed.capacity_and_totals(network)
        took = time.monotonic() - t0
        assert took <= fed.timeout_s + 0.5, f"the read took {took:.2f} s, its bound is {fed.timeout_s} s"
        for dc in ("helinger", "guian", "zhongwei"):
            assert not caps[dc].alive and caps[dc].why.startswith("cluster unreachable: west: "), caps[dc]
        assert caps["zhangjiakou"].alive and caps["wuhu"].alive
        batch = parse_spec({"name": "batch", "tier": "batch", "origin": "beijing", "accelerator": "any:2"}, network)
        p = get_policy("westflow").place(batch, network, caps)
        assert p.ray_cluster == "east"
        assert {r.data_center: r.detail for r in p.rejected}["zhongwei"].startswith("cluster unreachable: west")
        # a real-time step only west could serve (H800 near Beijing: helinger) fails, naming the lost cluster
        result = dg.materialize([h800_realtime], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                                resources={"westflow": WestflowResource(state_dir=str(ray_federation.state_dir))})
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        table = str(failure.step_failure_data.user_failure_data.metadata[md.REJECTED].value)  # type: ignore[union-attr]
        assert "| helinger | unavailable | cluster unreachable: west: " in table
    finally:
        ray_federation.up()
    caps, _ = Federation.local(ray_federation.state_dir).capacity_and_totals(network)  # type: ignore[union-attr]
    assert all(caps[dc].alive for dc in ("helinger", "guian", "zhongwei", "zhangjiakou", "wuhu"))
    assert east_pids <= set(ray_federation.cluster("east").pids()), "bringing west back restarted east"


class _HoldingWestflow(WestflowResource):
    """Submits the step's jobs with jobs.train's test hook: ``hold`` is ``EPOCH:DIR``."""

    hold: str

    def _entrypoint(self, module: str, args: Sequence[str], p: Any) -> str:
        return super()._entrypoint(module, [*args, HOLD_FLAG, self.hold], p)


def _train(fed: LocalFederation, model: str, hold: str = "") -> dg.ExecuteInProcessResult:
    kw: dict[str, Any] = {"state_dir": str(fed.state_dir), "poll_interval_s": 0.3, "cluster_lost_after_s": LOST_AFTER_S}
    westflow = _HoldingWestflow(hold=hold, policy=MATRIX_POLICY, **kw) if hold else WestflowResource(**kw)
    return dg.materialize([matrix_training], instance=dg.DagsterInstance.ephemeral(), resources={"westflow": westflow},
                          run_config={"ops": {"nightly_training": {"config": {"model": model, **TRAIN}}}},
                          raise_on_error=False)


def _final(config: S3Config, model: str) -> dict[str, np.ndarray]:
    for bucket in ("westflow-west", "westflow-east"):
        try:
            return CheckpointStore(config, bucket, f"models/{model}/final").load()[0]
        except ObjectMissing:
            continue
    raise AssertionError(f"no final model {model}")


@pytest.fixture(scope="module")
def reference(ray_federation: LocalFederation) -> dict[str, np.ndarray]:
    feats = dg.materialize([daily_features], instance=dg.DagsterInstance.ephemeral(),
                           resources={"westflow": WestflowResource(state_dir=str(ray_federation.state_dir))},
                           run_config={"ops": {"daily_features": {"config": {"rows": 60_000, "seed": 5}}}})
    assert feats.success
    ref = _train(ray_federation, "fed-ref")
    assert ref.success and _meta(ref)["resumed_from_epoch"] == -1
    return _final(S3Config.load(ray_federation.state_dir), "fed-ref")


TRIALS = 10  # west-head-killed trials (one Dagster run each), as every kind of the failover matrix
PAIR = BATCH  # runs per test, at once: all hold in one west DC (tests.fixtures.training) and lose west together
_BATCHES = [tuple(range(b, min(b + PAIR, TRIALS))) for b in range(0, TRIALS, PAIR)]


@pytest.mark.parametrize("trials", _BATCHES, ids=["west-head-killed-" + "-".join(str(t + 1) for t in b)
                                                  for b in _BATCHES])
def test_west_head_killed_mid_training_finishes_east(trials: tuple[int, ...], ray_federation: LocalFederation,
                                                     reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    ray_federation.up()  # no-op unless the test before failed before it brought west back
    west = ray_federation.cluster("west")
    config = S3Config.load(ray_federation.state_dir)
    holds = {f"fed-failover-{t}": (1 + t % (EPOCHS - 1), tmp_path / f"run{t}") for t in trials}
    out: dict[str, dg.ExecuteInProcessResult] = {}
    runners = []
    for model, (hold, where) in holds.items():
        where.mkdir()
        runners.append(threading.Thread(target=lambda m=model, h=hold, w=where: out.setdefault(
            m, _train(ray_federation, m, f"{h}:{w}")), name=model))
        runners[-1].start()
    killed_dc: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 240
        while (time.monotonic() < deadline and all(r.is_alive() for r in runners)
               and not all((w / "held").exists() for _, w in holds.values())):
            time.sleep(0.1)
        for model, (_, where) in holds.items():
            assert (where / "held").exists(), f"{model}: the training job never held after its checkpoint"
        running = [j for j in west.job_client().list_jobs()
                   if j.status == "RUNNING" and (j.metadata or {}).get("westflow.spec") == "nightly-training"]
        assert len(running) == len(holds), f"{len(running)} training jobs run in the west cluster"
        for model in holds:
            mine = [j for j in running if f" --model {model} " in f"{j.entrypoint} "]
            assert len(mine) == 1, f"{model}: the training step does not run in the west cluster"
            killed_dc[model] = mine[0].metadata["westflow.dc"]  # type: ignore[index]
        ray_federation.stop_cluster("west", sig=signal.SIGKILL)  # the head: GCS, dashboard, Jobs API
        # West stays down until every step has given it up and has its job in east; then it comes back while
        # east trains (its own Ray session dir: a node starting there touches nothing of east's jobs).
        east = ray_federation.cluster("east")
        deadline = time.monotonic() + 240
        while not all(any(f" --model {m} " in f"{j.entrypoint} " for j in east.job_client().list_jobs())
                      for m in holds):
            assert all(r.is_alive() for r in runners), "a run ended before its step was placed in east"
            assert time.monotonic() < deadline, "the steps were not placed in east within 240 s"
            time.sleep(0.1)
        with ThreadPoolExecutor(1, thread_name_prefix="west-up") as pool:
            west_up = pool.submit(ray_federation.up)
            for r in runners:
                r.join(timeout=420)
            west_up.result()
    finally:
        for _, where in holds.values():
            (where / "go").touch()
    for model, (hold, _) in holds.items():
        result = out[model]
        assert result.success, f"{model} failed"
        meta = _meta(result)
        assert meta[md.RAY_CLUSTER] == "east" and ray_federation.profile.cluster_of(meta[md.DATA_CENTER]) == "east"
        assert meta[md.RAN_IN] == meta[md.DATA_CENTER]
        assert killed_dc[model] in meta[md.FAILOVERS] and "Ray cluster west lost" in meta[md.FAILOVERS]
        assert meta["resumed_from_epoch"] == hold
        assert meta["resumed_from_epoch"] + meta["epochs_this_run"] == EPOCHS
        final = _final(config, model)
        assert final.keys() == reference.keys()
        for k in final:
            np.testing.assert_array_equal(final[k], reference[k], err_msg=f"{model}: {k}")


def _listening(ports: set[int]) -> set[int]:
    return {c.laddr.port for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in ports}


def test_down_leaves_no_process_or_port_of_either_cluster(ray_federation: LocalFederation) -> None:
    ray_federation.up()
    rss, pss = ray_federation.rss_bytes(), ray_federation.pss_bytes()
    print(f"local federation after the tests: {rss / 2**30:.2f} GiB RSS, {pss / 2**30:.2f} GiB PSS")
    assert pss < 4 * 2**30, f"the federation holds {pss / 2**30:.2f} GiB (PSS)"
    pids = ray_federation.pids()
    ports = {p for c in ray_federation.profile.clusters for p in (c.ports.gcs, c.ports.dashboard,
                                                                  c.ports.client_server) if p}
    assert pids and _listening(ports) == ports
    stopped = ray_federation.down()
    assert stopped == sorted(ray_federation.profile.dc_ids)
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    assert alive == [], f"processes of the federation still running: {alive}"
    assert _listening(ports) == set()
    assert not (ray_federation.state_dir / "federation.json").exists()
