"""The Dagster pipelines end to end on the real local network (Ray nodes per DC + S3)."""


from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from pipelines import metadata as md
from pipelines import service_asset as sv
from pipelines.resources import WestflowResource
from pipelines.run import materialize_pipeline, route_reports, step_reports
from pipelines.workload import westflow_asset
from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import Dispatcher
from ray_cluster.live import live_capacity
from ray_cluster.local import LocalNetwork
from tests import secret_scan
from tests.fixtures.ray import remove_services
from westflow.config import load_network
from westflow.placement import get_policy
from westflow.spec import parse_spec

pytestmark = pytest.mark.integration


def _ray_says_ran_in(net: LocalNetwork, job_id: str) -> str | None:
    """Ray's own answer: the job's driver node, mapped to its DC by the node's labels."""
    info = net.job_client().get_job_info(job_id)
    for node in net.reader().nodes():
        if node.node_id == info.driver_node_id:
            return node.dc
    return None


@pytest.fixture(scope="module")
def pipeline_run(ray_network: LocalNetwork) -> Iterator[dg.ExecuteInProcessResult]:
    westflow = WestflowResource(state_dir=str(ray_network.state_dir), ray_address=ray_network.dashboard_url,
                                ray_auth_token_path=str(ray_network.token_path))
    # a persistent (SQLite) instance under the state dir: its event log storage is scanned for secrets below
    home = ray_network.state_dir / "dagster-pipelines"
    home.mkdir(exist_ok=True)
    instance = dg.DagsterInstance.local_temp(str(home))
    try:
        yield materialize_pipeline(westflow, rows=40_000, epochs=2, instance=instance)
    finally:
        instance.dispose()
        remove_services(ray_network)  # the pipeline's live service: its replicas hold accelerators


def test_the_ray_token_and_the_s3_secret_leak_nowhere(pipeline_run: dg.ExecuteInProcessResult,
                                                      ray_network: LocalNetwork) -> None:
    """Dagster's event log storage, Ray's job logs and session dir, and the state dir hold neither secret,
    except in the files that are their home (0600)."""
    import os

    from storage import S3Config

    assert pipeline_run.success
    state = Path(ray_network.state_dir)
    from ray_cluster import api_keys

    needles = {"ray token": ray_network.token_path.read_text().strip().encode(),
               "S3 secret": S3Config.load(state).secret_key.encode(),
               "API key": api_keys.key_of(state, "recsys").encode()}
    homes = {ray_network.token_path.resolve(), (state / "s3" / "credentials.json").resolve(),
             (state / "s3" / "s3.json").resolve(), (state / api_keys.KEYS_FILE).resolve()}
    for home in homes:
        assert home.stat().st_mode & 0o077 == 0, home
    found: list[str] = []
    paths: list[Path] = []
    session = ray_network.session_dir.resolve()
    scanned = 0
    for root in {state, session}:
        for d, _, files in os.walk(root):
            for f in files:
                p = Path(d) / f
                if p.resolve() in homes or not p.is_file() or p.stat().st_size > 512 * 2**20:
                    continue
                scanned += 1
                paths.append(p)
    found += secret_scan.leaks(paths, needles)  # not read here: see tests/secret_scan.py
    assert any((state / "dagster-pipelines").rglob("*.db")), "the Dagster instance's storage was not scanned"
    client = ray_network.job_client()
    ours = [j for j in client.list_jobs() if (j.metadata or {}).get("westflow.dagster_run_id") == pipeline_run.run_id]
    assert len(ours) == 3  # the logs of jobs on nodes other tests restarted are files in the session dir above
    for job in ours:
        text = (client.get_job_logs(job.submission_id) + repr(job)).encode()
        found += [f"{what} in Ray job {job.submission_id}" for what, n in needles.items() if n in text]
    assert found == [] and scanned > 50


def test_every_pipeline_succeeds_where_it_was_placed(pipeline_run: dg.ExecuteInProcessResult,
                                                     ray_network: LocalNetwork) -> None:
    assert pipeline_run.success
    reports = {r.step: r for r in step_reports(pipeline_run)}
    assert set(reports) == {"daily_features", "nightly_training", "batch_inference"}
    for r in reports.values():
        assert _ray_says_ran_in(ray_network, r.job_id) == r.placed_in, r
        assert r.ran_in == r.placed_in
    network = load_network()
    routes = {r.city: r for r in route_reports(pipeline_run)}  # the live service, a route per city
    assert set(routes) == {"shanghai", "chengdu"}
    for city, route in routes.items():
        assert route.health == "healthy" and route.replicas >= 1
        assert network.rtt(route.data_center, city) <= 20.0
    assert reports["daily_features"].region == "west"  # batch CPU work goes west
    assert network.dc(reports["nightly_training"].placed_in).region.value == "west"


def test_materialisations_carry_placement_metadata(pipeline_run: dg.ExecuteInProcessResult) -> None:
    mats = {m.asset_key.to_user_string(): m for m in
            (e.event_specific_data.materialization for e in pipeline_run.get_asset_materialization_events())}
    meta = mats["nightly_training"].metadata
    for key in md.PLACEMENT_KEYS:
        assert key in meta, key
    assert "| data center | reason | detail |" in meta[md.REJECTED].value
    assert meta[md.DASHBOARD].value.endswith(f"/#/jobs/{meta[md.RAY_JOB_ID].value}")
    # the job's own Pipes report came through: per-epoch loss and the honest backend fallback
    assert "loss_per_epoch" in meta and meta["backend"].value == "numpy"
    assert meta["backend_fallback"].value is True
    scoring = mats["realtime_scoring"].metadata
    assert scoring[sv.SERVICE].value == "recsys" and len(scoring[sv.MODEL_VERSION].value) == 12
    for city in ("shanghai", "chengdu"):
        assert float(scoring[sv.route_key(city, "rtt_ms")].value) <= 20
        assert scoring[sv.route_key(city, "endpoint")].value.endswith(f"/recsys/{city}")
    assert "| city | health | DC |" in scoring[sv.ROUTES].value
    util = mats["network_utilisation"].metadata
    assert "| target | standing |" in util["table"].value and Path(util["plot"].value).exists()


def test_every_job_of_the_demo_pipelines_is_metered_as_ray_ran_it_and_the_bill_sums_the_records(
        pipeline_run: dg.ExecuteInProcessResult, ray_network: LocalNetwork, tmp_path: Path) -> None:
    """Issue 15's reconciliation: per Ray job, metered accelerator-hours = (Ray end - Ray start) x accelerators
    within 1 %; a tenant's bill (`westflow bill`) sums exactly its records."""
    import csv
    import subprocess
    import sys
    from datetime import datetime

    from admission.metering import TZ, Meter
    from admission.workqueue import AdmissionQueue

    client = ray_network.job_client()
    ours = [j for j in client.list_jobs() if (j.metadata or {}).get("westflow.dagster_run_id") == pipeline_run.run_id]
    recs = {r.ray_job_id: r for r in Meter(AdmissionQueue.local(ray_network.state_dir)).records()}
    assert ours and {j.submission_id for j in ours} <= recs.keys(), "a job of the demo went unmetered"
    for j in ours:
        r = recs[j.submission_id]
        ray_h = (j.end_time - j.start_time) / 1000.0 / 3600.0
        assert r.run_id == pipeline_run.run_id and r.status == "SUCCEEDED"
        assert abs(r.accelerator_hours - ray_h * r.accelerators) <= 0.01 * ray_h * max(r.accelerators, 1), r
        assert abs(r.cpu_hours - ray_h * r.cpus) <= 0.01 * ray_h * r.cpus + 1e-12, r
    tenant = recs[ours[0].submission_id].tenant
    period = datetime.fromtimestamp(recs[ours[0].submission_id].end, TZ).strftime("%Y-%m")
    out = tmp_path / "bill.csv"
    done = subprocess.run([sys.executable, "-m", "westflow_cli.main", "bill", "--state-dir", str(ray_network.state_dir),
                           "--tenant", tenant, "--period", period, "--out", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = list(csv.DictReader(out.open()))
    assert lines and {ln["kind"] for ln in lines} == {"usage"} and {ln["tenant"] for ln in lines} == {tenant}
    mine = [r for r in recs.values() if r.tenant == tenant
            and datetime.fromtimestamp(r.end, TZ).strftime("%Y-%m") == period]
    assert sum(int(ln["jobs"]) for ln in lines) == len(mine)
    for column, of in (("accelerator_hours", lambda r: r.accelerator_hours), ("kwh", lambda r: r.kwh),
                       ("total_cny", lambda r: r.cny + r.transfer_cny)):
        assert abs(sum(float(ln[column]) for ln in lines) - sum(of(r) for r in mine)) <= 1e-6 * (len(lines) + 1), column


def test_unplaceable_step_fails_with_every_dc_reason(ray_network: LocalNetwork) -> None:
    @westflow_asset(workload={"tier": "realtime", "origin": "guangzhou", "accelerator": "cuda:1"})
    def guangzhou_cuda_scoring(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
        return westflow.run(context, module="jobs.realtime_score")

    result = dg.materialize([guangzhou_cuda_scoring], instance=dg.DagsterInstance.ephemeral(),
                            resources={"westflow": WestflowResource(state_dir=str(ray_network.state_dir))},
                            raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = str(failure.step_failure_data.user_failure_data.metadata[md.REJECTED].value)  # type: ignore[union-attr]
    for dc in load_network().dc_ids:
        assert f"| {dc} |" in text, dc
    assert "| guian | accelerator |" in text  # within 20 ms, but Ascend only
    assert "| zhangjiakou | latency |" in text  # CUDA, but 30 ms from Guangzhou
    assert not any(e.event_type_value == "ASSET_MATERIALIZATION" for e in result.all_events)


def test_the_dispatcher_runs_a_placed_job_without_dagster(ray_network: LocalNetwork) -> None:
    """Submit (twice: the retry attaches), wait with the log streamed, and ask Ray where it ran."""
    access = ClusterAccess.resolve(dashboard_url=ray_network.dashboard_url, token_path=ray_network.token_path)
    dispatcher = Dispatcher(access, poll_interval_s=0.3)
    network = load_network()
    spec = parse_spec({"name": "dispatch-probe", "tier": "realtime", "origin": "shanghai", "accelerator": "any:1"},
                      network)
    p = get_policy("westflow").place(spec, network, live_capacity(network, dispatcher.reader()))
    command = "python -c 'import os; print(\"on\", os.environ[\"WESTFLOW_DC\"])'"
    sid = f"dispatch-probe-{ray_network.profile.ports.dashboard}"
    assert dispatcher.submit(p, command, env={"X": "1"}, submission_id=sid) == sid
    assert dispatcher.submit(p, command, env={"X": "1"}, submission_id=sid) == sid  # attaches, no second job
    assert [j.submission_id for j in ray_network.job_client().list_jobs()].count(sid) == 1
    lines: list[str] = []
    outcome = dispatcher.wait(sid, on_log=lines.append)
    assert outcome.succeeded, outcome
    assert f"on {p.data_center}" in lines
    assert dispatcher.ran_in(sid) == p.data_center == _ray_says_ran_in(ray_network, sid)
    assert dispatcher.node_loss_verdict(sid, p.data_center) is None
