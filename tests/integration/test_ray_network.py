"""The local national network on real Ray: tags, placement, auth, capacity.

Ordered: the test that stops a DC's node runs last and restarts it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ray_cluster.live import DriverReader, live_capacity, where_am_i
from ray_cluster.local import LocalNetwork
from tests.builders import make_spec
from westflow.errors import InfeasibleError
from westflow.inventory import Family, Region
from westflow.placement import Reason, get_policy
from westflow.tags import LABEL_ACCELERATOR, LABEL_DC, LABEL_REGION, dc_resource

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
POLICY = get_policy("westflow")
ASCEND_ONLY = ("wuhu", "guian")


def _remote_where() -> Any:
    import ray

    @ray.remote
    def where() -> str:
        return where_am_i()

    return where


def _run_where(options: dict[str, Any], n: int = 1) -> list[str]:
    import ray

    where = _remote_where()
    return list(ray.get([where.options(**options).remote() for _ in range(n)], timeout=120))


def _capacity(net: LocalNetwork) -> Any:
    return live_capacity(net.profile.network, DriverReader())


def test_network_is_small_and_complete(ray_driver: LocalNetwork) -> None:
    st = ray_driver.status()
    assert {r.dc for r in st.dcs if r.alive} == set(ray_driver.profile.dc_ids)
    assert st.rss_bytes < 4 * 2**30, f"local network uses {st.rss_bytes / 2**30:.2f} GiB RSS"
    assert not any("auth_token" not in line and len(line) > 60 and " " not in line for line in st.exports)


def test_realtime_from_beijing_runs_within_20ms(ray_driver: LocalNetwork) -> None:
    network = ray_driver.profile.network
    spec = make_spec(tier="realtime", origin="beijing", accelerator={"cuda": 1}, cpus=1, memory_gb=1)
    p = POLICY.place(spec, network, _capacity(ray_driver))
    assert "rt:beijing" in p.ray.resources
    [ran] = _run_where(p.ray.task_options())
    assert ran == p.data_center
    assert network.rtt(ran, "beijing") <= 20.0


def test_batch_runs_west(ray_driver: LocalNetwork) -> None:
    network = ray_driver.profile.network
    p = POLICY.place(make_spec(accelerator={"any": 2}, cpus=1, memory_gb=1), network, _capacity(ray_driver))
    [ran] = _run_where(p.ray.task_options())
    assert ran == p.data_center
    assert network.dc(ran).region is Region.WEST


def test_cuda_never_on_ascend_only_node(ray_driver: LocalNetwork) -> None:
    network = ray_driver.profile.network
    p = POLICY.place(make_spec(accelerator={"cuda": 1}, cpus=0.5, memory_gb=0.5), network, _capacity(ray_driver))
    ran = set(_run_where(p.ray.task_options(), n=4)) | set(_run_where({"num_gpus": 1, "num_cpus": 0.5}, n=6))
    assert not ran & set(ASCEND_ONLY)
    assert all(any(pool.family is Family.CUDA for pool in network.dc(d).pools) for d in ran)


def test_ray_job_submit_with_plan_flags_runs_where_planned(ray_driver: LocalNetwork, tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("name: cli-job\ntier: batch\norigin: beijing\naccelerator: {cuda: 1}\n"
                         "cpus: 1\nmemory_gb: 1\nduration_hours: 1\n")
    plan = json.loads(subprocess.run([sys.executable, "-m", "westflow_cli.main", "plan", "--json", str(spec_file)],
                                     check=True, capture_output=True, text=True, cwd=ROOT).stdout)
    assert plan["data_center"] in ray_driver.profile.dc_ids, "the static plan must land on a local DC"
    ray_bin = str(Path(sys.executable).with_name("ray"))
    code = "import ray; ray.init(); from ray_cluster.live import where_am_i; print('WESTFLOW_DC=' + where_am_i())"
    sub_id = f"westflow-test-{time.time_ns()}"
    cmd = (f"{ray_bin} job submit --address {ray_driver.dashboard_url} --submission-id {sub_id} "
           f"--runtime-env-json '{json.dumps({'env_vars': {'PYTHONPATH': str(ROOT)}})}' "
           f"{plan['ray_job_submit_flags']} -- python -c \"{code}\"")
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=180,
                         env=ray_driver.client_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    client = ray_driver.job_client()
    assert f"WESTFLOW_DC={plan['data_center']}" in client.get_job_logs(sub_id)
    node_of = {n.node_id: n.dc for n in ray_driver.reader().nodes()}
    assert node_of[client.get_job_info(sub_id).driver_node_id] == plan["data_center"]


def test_job_driver_attaches_to_the_raylet_of_its_own_dc(ray_driver: LocalNetwork) -> None:
    """A westflow job's ``init_here()`` joins its own node, not the head's (one host, one IP per node)."""
    dc = ray_driver.profile.dc_ids[-1]
    code = ("import ray; from ray_cluster.live import init_here; init_here(); "
            "print('NODE=' + ray.get_runtime_context().get_node_id())")
    client = ray_driver.job_client()
    sub_id = client.submit_job(entrypoint=f"python -c \"{code}\"", entrypoint_resources={dc_resource(dc): 1},
                               runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
                               submission_id=f"westflow-here-{time.time_ns()}")
    deadline = time.monotonic() + 180
    while str(client.get_job_status(sub_id)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.5)
    logs = client.get_job_logs(sub_id)
    node_of = {n.node_id: n.dc for n in ray_driver.reader().nodes()}
    line = next((x for x in logs.splitlines() if x.startswith("NODE=")), None)
    assert line is not None, logs[-2000:]
    assert node_of[line[5:]] == dc != ray_driver.profile.dc_ids[0]


def test_job_without_token_is_refused(ray_driver: LocalNetwork) -> None:
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {k: v for k, v in ray_driver.client_env().items() if not k.startswith("RAY_AUTH")}
    out = subprocess.run([ray_bin, "job", "list", "--address", ray_driver.dashboard_url],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode != 0


def _get(url: str, token: str | None) -> tuple[int, Any]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_dashboard_api_lists_one_node_per_dc_and_needs_the_token(ray_driver: LocalNetwork) -> None:
    token = ray_driver.token_path.read_text().strip()
    url = ray_driver.dashboard_url + "/nodes?view=summary"
    assert _get(url, None)[0] == 401
    assert _get(url, "not-the-token")[0] == 403
    status, body = _get(url, token)
    assert status == 200
    nodes = [n["raylet"] for n in body["data"]["summary"] if n["raylet"]["state"] == "ALIVE"]
    by_dc = {n["labels"][LABEL_DC]: n for n in nodes}
    assert sorted(by_dc) == sorted(ray_driver.profile.dc_ids) and len(nodes) == len(by_dc)
    for dc_id, n in by_dc.items():
        want = ray_driver.profile.tags(dc_id)
        assert {k: n["labels"][k] for k in (LABEL_DC, LABEL_REGION, LABEL_ACCELERATOR)} == want.labels
    # The State API keeps Ray's resource names (the node summary camelCases them).
    status, body = _get(ray_driver.dashboard_url + "/api/v0/nodes?detail=1", token)
    assert status == 200
    rows = [r for r in body["data"]["result"]["result"] if r["state"] == "ALIVE"]
    assert sorted(r["labels"][LABEL_DC] for r in rows) == sorted(ray_driver.profile.dc_ids)
    for r in rows:
        want = ray_driver.profile.tags(r["labels"][LABEL_DC])
        assert {k: r["resources_total"][k] for k in want.resources} == want.resources
        assert r["resources_total"].get("GPU", 0) == want.num_gpus


def test_full_dc_sends_next_placement_to_next_eligible(ray_driver: LocalNetwork) -> None:
    import ray

    network = ray_driver.profile.network
    spec = make_spec(accelerator={"cuda": 4}, cpus=0.5, memory_gb=0.5)
    first = POLICY.place(spec, network, _capacity(ray_driver))

    class _Hold:
        def ready(self) -> bool:
            return True

    Hold: Any = ray.remote(num_cpus=0)(_Hold)

    holders: list[Any] = []
    try:
        taken = [first.data_center]
        gpus = ray_driver.profile.tags(first.data_center).num_gpus
        holders.append(Hold.options(num_gpus=gpus, resources={dc_resource(first.data_center): 0.001}).remote())
        ray.get([h.ready.remote() for h in holders], timeout=120)
        second = POLICY.place(spec, network, _capacity(ray_driver))
        assert second.data_center != first.data_center
        lost = {r.data_center: r.reason for r in second.rejected}
        assert lost[first.data_center] is Reason.CAPACITY
        [ran] = _run_where(second.ray.task_options())
        assert ran == second.data_center
        # The dashboard (outside view, no driver) catches up within the monitor interval.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            outside = live_capacity(network, ray_driver.reader())
            if outside[first.data_center].free.get(first.accelerator_model or "", 0) == 0:
                break
            time.sleep(1)
        else:
            pytest.fail("dashboard reader never saw the full DC")
        # Fill every CUDA DC: no capacity, with a reason per DC.
        for dc_id in ray_driver.profile.dc_ids:
            gpus = ray_driver.profile.tags(dc_id).num_gpus  # all of them: waits for finished tasks to let go
            if dc_id not in taken and gpus:
                holders.append(Hold.options(num_gpus=gpus, resources={dc_resource(dc_id): 0.001}).remote())
        ray.get([h.ready.remote() for h in holders], timeout=120)
        deadline = time.monotonic() + 15  # the GCS hears of the allocations within a second or so
        while True:
            try:
                POLICY.place(spec, network, _capacity(ray_driver))
            except InfeasibleError as exc:
                err = exc
                break
            if time.monotonic() > deadline:
                pytest.fail("placement still found CUDA capacity with every CUDA DC full")
            time.sleep(0.5)
        reasons = {r.data_center: r.reason for r in err.rejected}
        assert all(reasons[d] is Reason.CAPACITY for d in ("zhangjiakou", "helinger", "zhongwei"))
        assert all(reasons[d] is Reason.ACCELERATOR for d in ASCEND_ONLY)
    finally:
        for h in holders:
            ray.kill(h)
        deadline = time.monotonic() + 30  # leave the GPUs free for the next test
        while ray.available_resources().get("GPU", 0) < ray.cluster_resources().get("GPU", 0):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)


def test_removed_dc_is_avoided_then_up_restores_it(ray_driver: LocalNetwork) -> None:
    network = ray_driver.profile.network
    spec = make_spec(accelerator={"cuda": 1}, cpus=0.5, memory_gb=0.5)
    gone = POLICY.place(spec, network, _capacity(ray_driver)).data_center
    assert gone != ray_driver.profile.dc_ids[0], "the head DC cannot be removed"
    ray_driver.stop_node(gone)
    deadline = time.monotonic() + 60
    while gone in _capacity(ray_driver) and time.monotonic() < deadline:
        time.sleep(0.5)
    p = POLICY.place(spec, network, _capacity(ray_driver))
    assert p.data_center != gone
    assert {r.data_center: r.reason for r in p.rejected}[gone] is Reason.UNAVAILABLE
    [ran] = _run_where(p.ray.task_options())
    assert ran == p.data_center
    before = ray_driver.recorded()
    ray_driver.up()
    after = ray_driver.recorded()
    assert gone in after and after[gone] != before.get(gone)
    assert {d: g for d, g in after.items() if d != gone} == before  # idempotent for the rest
