"""A real Dagster webserver against the local network: GraphQL runs, listing, cancellation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from pipelines.assets import SERVICE
from pipelines.resources import JOB_DAGSTER_RUN
from ray_cluster import api_keys
from ray_cluster.access import ClusterAccess
from ray_cluster.federation import Federation
from ray_cluster.local import LocalNetwork, free_port
from ray_cluster.serving import Services
from tests.fixtures.ray import remove_services
from westflow.config import load_network

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SMALL = {"ops": {"daily_features": {"config": {"rows": 30_000}},
                 "nightly_training": {"config": {"epochs": 2}},
                 "realtime_scoring": {"config": {"cities": ["shanghai"], "max_replicas": 1}}}}


def _graphql(port: int, query: str) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def webserver(ray_network: LocalNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    home = tmp_path_factory.mktemp("dagster-home")
    # Launch runs at once (no daemon needed for a GraphQL-submitted run in this test).
    (home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
        "telemetry:\n  enabled: false\n")
    port = free_port()
    # What `westflow ui` hands Dagster: the state dir and the network's access (address, token file).
    env = ray_network.client_env({**os.environ, "DAGSTER_HOME": str(home),
                                  "WESTFLOW_STATE_DIR": str(ray_network.state_dir),
                                  "WESTFLOW_RAY_ADDRESS": ray_network.dashboard_url})
    log = open(home / "webserver.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1",
                             "-p", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (home / "webserver.log").read_text()[-3000:]
                time.sleep(1)
        else:
            raise AssertionError("dagster webserver did not start")
        yield port
    finally:
        remove_services(ray_network)  # realtime_scoring's live service: its replica holds an accelerator
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait(client: DagsterGraphQLClient, run_id: str, timeout_s: float) -> DagsterRunStatus:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            return status
        time.sleep(2)
    raise AssertionError(f"run {run_id} still {client.get_run_status(run_id)} after {timeout_s} s")


def test_ui_lists_jobs_and_the_nightly_schedule(webserver: int) -> None:
    data = _graphql(webserver, """{ repositoriesOrError { ... on RepositoryConnection { nodes {
        name jobs { name } schedules { name cronSchedule executionTimezone } } } } }""")
    repo = data["data"]["repositoriesOrError"]["nodes"][0]
    assert {"recsys_pipeline", "nightly_training_job", "utilisation_job"} <= {j["name"] for j in repo["jobs"]}
    nightly = next(s for s in repo["schedules"] if s["name"] == "nightly_training_schedule")
    assert (nightly["cronSchedule"], nightly["executionTimezone"]) == ("0 2 * * *", "Asia/Shanghai")


def test_graphql_client_run_completes_on_the_network(webserver: int, ray_network: LocalNetwork) -> None:
    client = DagsterGraphQLClient("127.0.0.1", port_number=webserver)
    run_id = client.submit_job_execution("recsys_pipeline", run_config=SMALL)
    assert _wait(client, run_id, 600) == DagsterRunStatus.SUCCESS
    jobs = [j for j in ray_network.job_client().list_jobs()
            if (j.metadata or {}).get(JOB_DAGSTER_RUN) == run_id]
    assert len(jobs) == 3 and all(j.status == "SUCCEEDED" for j in jobs)  # features, training, batch scoring
    # realtime_scoring deployed the live service: Shanghai's route answers with the tenant's key
    access = ClusterAccess.resolve(dashboard_url=ray_network.dashboard_url, token_path=ray_network.token_path, env={})
    fed = Federation.single(access, load_network(), serve_url=ray_network.serve_url)
    route = Services(ray_network.state_dir, fed, load_network()).record(SERVICE).routes["shanghai"]
    req = urllib.request.Request(route.endpoint, data=json.dumps({"features": [0.0] * 32}).encode(),
                                 headers={"Authorization": f"Bearer {api_keys.key_of(ray_network.state_dir, SERVICE)}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read())["dc"] == route.data_center


def test_cancelling_a_run_stops_its_ray_job(webserver: int, ray_network: LocalNetwork) -> None:
    client = DagsterGraphQLClient("127.0.0.1", port_number=webserver)
    run_id = client.submit_job_execution(
        "nightly_training_job", run_config={"ops": {"nightly_training": {"config": {"epochs": 500}}}})
    ray = ray_network.job_client()
    deadline, job = time.monotonic() + 240, None
    while time.monotonic() < deadline and job is None:
        running = [j for j in ray.list_jobs() if (j.metadata or {}).get(JOB_DAGSTER_RUN) == run_id
                   and j.status == "RUNNING"]
        job = running[0] if running else None
        time.sleep(1)
    assert job is not None, "the training Ray Job never started"
    time.sleep(3)
    client.terminate_run(run_id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and ray.get_job_status(job.submission_id) != "STOPPED":
        time.sleep(1)
    assert ray.get_job_status(job.submission_id) == "STOPPED"
    assert _wait(client, run_id, 120) in (DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE)
