"""A data scientist's own project, outside this repository, runs on the local network: its code and
its dependency travel through Ray's runtime env, not the shared filesystem (issue "Bring your own code")."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pipelines import metadata as md
from pipelines.resources import WestflowResource
from ray_cluster.dispatch import Dispatcher
from ray_cluster.live import live_capacity
from ray_cluster.local import LocalNetwork
from ray_cluster.reservations import Reservations
from ray_cluster.shipping import CodeConfig, ship
from westflow.config import load_network
from westflow.placement import get_policy
from westflow.spec import parse_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WESTFLOW = str(Path(sys.executable).with_name("westflow"))

JOB = '''
import json, os, pathlib, sys, time
from dagster_pipes import open_dagster_pipes  # first: a cluster without it fails here
import wftinydep

def main():
    here = pathlib.Path(__file__).resolve().parent
    barrier = here / "barrier_path.txt"
    if barrier.exists():  # the test renames the original project, then opens this barrier
        go = pathlib.Path(barrier.read_text().strip())
        for _ in range(1200):
            if go.exists():
                break
            time.sleep(0.1)
    import ownlib  # read from the shipped copy only now, after the original was renamed
    report = {"file": __file__, "lib_file": ownlib.__file__, "dep": wftinydep.VERSION, "cwd": os.getcwd(),
              "dc": os.environ.get("WESTFLOW_PLACED_DC", "")}
    if "DAGSTER_PIPES_CONTEXT" in os.environ:
        with open_dagster_pipes() as pipes:
            pipes.report_asset_materialization(metadata={k: {"raw_value": v, "type": "text"}
                                                         for k, v in report.items()})
    print("OWNJOB " + json.dumps(report), flush=True)

main()
'''

DEFS = '''
import dagster as dg
from pipelines.resources import WestflowResource
from pipelines.workload import westflow_asset

@westflow_asset(workload={"tier": "batch", "accelerator": "cpu", "cpus": 1, "memory_gb": 1,
                          "duration_hours": 0.1})
def own_step(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.run(context, module="ownjob")
'''


def _wheel(where: Path) -> Path:
    """A tiny pure-Python wheel of ``wftinydep`` (not in westflow's venv), built by hand."""
    files = {"wftinydep/__init__.py": b'VERSION = "0.1-westflow-test"\n',
             "wftinydep-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: wftinydep\nVersion: 0.1\n",
             "wftinydep-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: westflow-tests\n"
                                              b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for name, data in files.items()]
    files["wftinydep-0.1.dist-info/RECORD"] = ("\n".join([*record, "wftinydep-0.1.dist-info/RECORD,,"]) + "\n").encode()
    path = where / "wftinydep-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _wheel(tmp_path_factory.mktemp("wheels"))


def _project(base: Path, wheel: Path, name: str = "proj") -> Path:
    root = base / name
    root.mkdir(parents=True)
    (root / "requirements.txt").write_text(f"# the job's own dependency, not in the cluster's Python\n{wheel}\n")
    (root / "ownjob.py").write_text(textwrap.dedent(JOB))
    (root / "ownlib.py").write_text("NAME = 'ownlib'\n")
    (root / "defs.py").write_text(textwrap.dedent(DEFS))
    (root / "spec.yaml").write_text("name: own-step\ntier: batch\naccelerator: cpu\ncpus: 1\nmemory_gb: 1\n"
                                    "duration_hours: 0.1\n")
    return root


def _resource(net: LocalNetwork, **kw: object) -> WestflowResource:
    return WestflowResource(state_dir=str(net.state_dir), ray_address=net.dashboard_url,
                            ray_auth_token_path=str(net.token_path), **kw)


def _asset(root: Path) -> dg.AssetsDefinition:
    spec = importlib.util.spec_from_file_location(f"defs_{root.name}", root / "defs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.own_step  # type: ignore[no-any-return]


def test_own_project_materialises_with_its_code_and_dependency_from_ray(
        ray_network: LocalNetwork, wheel: Path, tmp_path: Path) -> None:
    root = _project(tmp_path, wheel)
    assert not str(root).startswith(str(ROOT))
    result = dg.materialize([_asset(root)], resources={"westflow": _resource(ray_network)},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    meta = result.asset_materializations_for_node("own_step")[0].metadata
    job_file = md.value(meta, "file")
    assert "runtime_resources" in job_file and job_file.endswith("ownjob.py")
    assert not job_file.startswith(str(root))
    assert md.value(meta, "dep") == "0.1-westflow-test"  # installed by Ray's pip plugin on the node
    assert md.value(meta, "dc") == md.value(meta, md.DATA_CENTER) == md.value(meta, md.RAN_IN)
    assert str(root.resolve()) in md.value(meta, md.CODE) and "wftinydep" in md.value(meta, md.CODE)


def test_the_project_renamed_after_submission_still_runs(ray_network: LocalNetwork, wheel: Path,
                                                          tmp_path: Path) -> None:
    root = _project(tmp_path, wheel)
    go = tmp_path / "go"
    (root / "barrier_path.txt").write_text(str(go))
    network = load_network()
    spec = parse_spec({"name": "own-renamed", "tier": "batch", "accelerator": "cpu", "cpus": 1, "memory_gb": 1,
                       "duration_hours": 0.1}, network)
    p = get_policy("westflow").place(spec, network, live_capacity(network, ray_network.reader()))
    code = ship(CodeConfig(root))
    dispatcher = Dispatcher(_resource(ray_network).access())
    job = dispatcher.submit(p, "python -m ownjob", env={"WESTFLOW_PLACED_DC": p.data_center},
                            submission_id=f"own-renamed-{os.getpid()}", code=code)
    moved = root.rename(tmp_path / "proj-renamed")  # the job waits at its barrier until now
    go.touch()
    out = dispatcher.wait(job)
    log = dispatcher.logs(job)
    assert out.succeeded, log[-2000:]
    report = json.loads(next(ln for ln in log.splitlines() if ln.startswith("OWNJOB "))[len("OWNJOB "):])
    assert not (tmp_path / "proj").exists() and moved.exists()
    assert "runtime_resources" in report["lib_file"] and report["dep"] == "0.1-westflow-test"
    assert dispatcher.ran_in(job) == p.data_center


def _jobs(net: LocalNetwork) -> set[str]:
    return {j.submission_id for j in net.job_client().list_jobs()}


def _submit(net: LocalNetwork, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WESTFLOW, "submit", str(root / "spec.yaml"), "--working-dir", str(root),
                           "--state-dir", str(net.state_dir), *args], capture_output=True, text=True, timeout=600,
                          cwd=root)


def test_submit_runs_the_command_where_placed_and_streams_its_log(ray_network: LocalNetwork, wheel: Path,
                                                                  tmp_path: Path) -> None:
    root = _project(tmp_path, wheel)
    r = _submit(ray_network, root, "--", "python", "-m", "ownjob")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("OWNJOB "))[len("OWNJOB "):])
    assert report["dep"] == "0.1-westflow-test" and "runtime_resources" in report["file"]
    assert f"westflow: own-step ran at {report['dc']} (placed at {report['dc']})" in r.stdout
    assert f"placed in     {report['dc']}" in r.stdout and "shipping: working dir" in r.stdout


def test_submit_of_a_failing_command_exits_non_zero_with_its_last_lines(ray_network: LocalNetwork, wheel: Path,
                                                                       tmp_path: Path) -> None:
    root = _project(tmp_path, wheel)
    (root / "failjob.py").write_text("print('step one done', flush=True)\nraise SystemExit('boom-7f3a: bad input')\n")
    r = _submit(ray_network, root, "--no-requirements", "--", "python", "-m", "failjob")
    assert r.returncode == 1, r.stderr
    assert "ended FAILED" in r.stderr and "its last lines:" in r.stderr
    last = r.stderr.split("its last lines:", 1)[1]
    assert "step one done" in last and "boom-7f3a: bad input" in last


def test_submit_of_an_infeasible_spec_exits_3_and_submits_nothing(ray_network: LocalNetwork, wheel: Path,
                                                                 tmp_path: Path) -> None:
    root = _project(tmp_path, wheel)
    (root / "spec.yaml").write_text("name: too-big\ntier: batch\naccelerator: cann:4096\nduration_hours: 1\n")
    before = _jobs(ray_network)
    r = _submit(ray_network, root, "--", "python", "-m", "ownjob")
    assert r.returncode == 3, r.stderr
    assert "infeasible" in r.stderr and "too-big" in r.stderr
    assert _jobs(ray_network) == before


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("westflow: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_code_over_the_upload_limit_and_a_missing_module_fail_before_submission(
        ray_network: LocalNetwork, wheel: Path, tmp_path: Path) -> None:
    root = _project(tmp_path, wheel)
    for i in range(3):
        (root / f"blob{i}.py").write_bytes(b"#" * (1024 * 1024))
    before = _jobs(ray_network)
    big = _submit(ray_network, root, "--max-upload-mb", "2", "--", "python", "-m", "ownjob")
    assert big.returncode == 2
    line = _one_line_error(big)
    assert str(root.resolve()) in line and "under 2 MiB" in line
    missing = _submit(ray_network, root, "--", "python", "-m", "nosuchjob")
    assert missing.returncode == 2
    assert "Module 'nosuchjob' is not in the shipped code" in _one_line_error(missing)
    assert _jobs(ray_network) == before


def test_an_unresolvable_requirement_fails_in_one_line_naming_it_and_where(
        ray_network: LocalNetwork, wheel: Path, tmp_path: Path) -> None:
    root = _project(tmp_path, wheel)
    r = _submit(ray_network, root, "--pip", "nosuchpkg-westflow==9.9", "--", "python", "-m", "ownjob")
    assert r.returncode == 1
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("westflow: Ray job"))
    assert "could not be set up at" in line and "nosuchpkg-westflow==9.9" in line
    assert "No matching distribution found for nosuchpkg-westflow==9.9" in line


def test_a_cluster_python_without_dagster_pipes_fails_the_step_in_one_line(
        ray_network: LocalNetwork, wheel: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    root = _project(tmp_path, wheel)
    result = dg.materialize([_asset(root)], resources={"westflow": _resource(
        ray_network, python=str(bare / "bin" / "python"), requirements=[])},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure is not None
    line = md.value(failure.metadata, md.FAILURE)
    assert "\n" not in line and "has no dagster-pipes" in line and str(bare / "bin" / "python") in line
    assert "No module named 'dagster_pipes'" in md.value(failure.metadata, md.JOB_LOG_TAIL)
    # the failed job is metered as FAILED, with Ray's own start and end (issue 15)
    from admission.metering import Meter
    from admission.workqueue import AdmissionQueue

    job_id = str(md.value(failure.metadata, md.RAY_JOB_ID))
    info = ray_network.job_client().get_job_info(job_id)
    [rec] = [r for r in Meter(AdmissionQueue.local(ray_network.state_dir)).records() if r.ray_job_id == job_id]
    assert rec.status == "FAILED" and (rec.start, rec.end) == (info.start_time / 1000.0, info.end_time / 1000.0)


def test_a_step_that_loses_track_of_its_job_stops_it(ray_network: LocalNetwork, wheel: Path,
                                                     tmp_path: Path) -> None:
    """The Jobs API fails while the step waits (after the job is RUNNING): the step fails and its job is stopped."""
    from ray_cluster.access import ClusterAccess
    from ray_cluster.federation import Federation
    from westflow.errors import ClusterError

    root = _project(tmp_path, wheel)
    (root / "ownjob.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(900)\n")
    seen: list[str] = []

    class LosesTrack(Dispatcher):
        def wait(self, job_id: str, **kw: object) -> Any:
            seen.append(job_id)
            while str(self.client().get_job_status(job_id)) not in ("RUNNING", "JobStatus.RUNNING"):
                time.sleep(0.2)  # the job really runs before the fault
            raise ClusterError("Ray Jobs API at the dashboard did not answer (injected fault)")

    class Resource(WestflowResource):
        def federation(self, log_fn: Any = None) -> Federation:
            access = ClusterAccess(ray_network.dashboard_url, ray_network.token_path.read_text().strip())
            return Federation.single(access, load_network(), make_dispatcher=lambda a: LosesTrack(a, log_fn=log_fn))

    result = dg.materialize([_asset(root)], resources={"westflow": Resource(
        state_dir=str(ray_network.state_dir), requirements=[])}, instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False)
    assert not result.success and len(seen) == 1
    client = ray_network.job_client()
    status = ""
    for _ in range(300):  # Ray stops a job asynchronously; the job itself would sleep 15 minutes
        status = str(getattr(client.get_job_status(seen[0]), "value", client.get_job_status(seen[0])))
        if status in ("STOPPED", "FAILED", "SUCCEEDED"):
            break
        time.sleep(0.2)
    assert status == "STOPPED"
    running = [j.submission_id for j in client.list_jobs()
               if str(getattr(j.status, "value", j.status)) in ("PENDING", "RUNNING")
               and (j.metadata or {}).get("westflow.spec") == "own-step"]
    assert running == []
    assert Reservations(ray_network.state_dir / "reservations.json").held() == ()
    # metered up to its stop, with Ray's own start and end (issue 15)
    from admission.metering import Meter
    from admission.workqueue import AdmissionQueue

    info = client.get_job_info(seen[0])
    [rec] = [r for r in Meter(AdmissionQueue.local(ray_network.state_dir)).records() if r.ray_job_id == seen[0]]
    assert rec.status == "STOPPED" and rec.step is not None
    assert (rec.start, rec.end) == (info.start_time / 1000.0, info.end_time / 1000.0)
