"""A project from ``westflow init``, outside the repository, on the real local network; and the walkthrough.

``docs/your-first-pipeline.md`` is run as written: every ``$`` line of its
``console`` blocks, in order, in one shell whose working directory and exports
carry from line to line, with ``$HOME`` a temporary directory outside the
repository. What differs from a reader's machine is listed in ``SUBSTITUTED``
(the checkout's path, and the test network's state dir and ports, which are
not the defaults) and ``$WESTFLOW_STATE_DIR``, which points the project at the
test network. No Ray address or token is exported: the project finds the
network through the state dir, as a reader's does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines import metadata as md
from ray_cluster.local import LocalNetwork, free_port
from tests.conftest import ROOT
from westflow_cli.admitting import stop_controller

pytestmark = pytest.mark.integration

DOC = ROOT / "docs" / "your-first-pipeline.md"
BIN = Path(sys.executable).parent
ACCESS_ENV = ("WESTFLOW_RAY_ADDRESS", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH",
              "DAGSTER_HOME", "VIRTUAL_ENV")


def _user_env(net: LocalNetwork, home: Path, *, venv_on_path: bool) -> dict[str, str]:
    """A user's shell: none of the network's access exported, the test network's state dir named."""
    env = {k: v for k, v in os.environ.items() if k not in ACCESS_ENV}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != BIN.resolve()]
    env["PATH"] = os.pathsep.join(([str(BIN)] if venv_on_path else []) + path)
    env.update(HOME=str(home), WESTFLOW_STATE_DIR=str(net.state_dir), RAY_USAGE_STATS_ENABLED="0")
    return env


def _ray_says_ran_in(net: LocalNetwork, job_id: str) -> str | None:
    info = net.job_client().get_job_info(job_id)
    return next((n.dc for n in net.reader().nodes() if n.node_id == info.driver_node_id), None)


def _assert_shipped(job_file: str, net: LocalNetwork, project: Path) -> None:
    """The job's module came through Ray: unpacked under the network's runtime resources, not read from the project."""
    path = Path(job_file).resolve()
    assert "runtime_resources" in path.parts, path
    assert path.is_relative_to(net.session_dir.resolve()), path
    assert not path.is_relative_to(project.resolve()), path


def test_init_project_materialises_where_placed_with_its_code_shipped(ray_network: LocalNetwork,
                                                                      tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    project, dagster_home = home / "churn-model", home / "dagster_home"
    dagster_home.mkdir()
    assert not project.resolve().is_relative_to(ROOT)
    env = {**_user_env(ray_network, home, venv_on_path=True), "DAGSTER_HOME": str(dagster_home)}
    start = time.monotonic()
    init = subprocess.run([str(BIN / "westflow"), "init", str(project)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert init.returncode == 0, init.stderr
    run = subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-f", "defs.py", "--select", "churn_model"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    print(f"westflow init -> first materialisation: {elapsed:.1f} s")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("churn_model"))
    assert event is not None and event.asset_materialization is not None
    meta = {k: md.value(event.asset_materialization.metadata, k) for k in event.asset_materialization.metadata}
    dc = meta[md.DATA_CENTER]
    assert meta[md.RAN_IN] == dc == meta["placed_dc"] == _ray_says_ran_in(ray_network, meta[md.RAY_JOB_ID])
    assert meta[md.REGION] == "west"  # batch CPU work goes where power is cheap
    assert meta["rows_scored"] == 10_000
    _assert_shipped(meta["job_file"], ray_network, project)
    assert str(project) in meta[md.CODE] and "no requirements" in meta[md.CODE]


# -- the walkthrough, as written ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    command: str
    returncode: int
    output: str
    seconds: float


def _doc_commands() -> list[str]:
    blocks = re.findall(r"```console\n(.*?)```", DOC.read_text(), re.S)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


class Shell:
    """One shell session across commands: the working directory and exports carry over (like a terminal)."""

    def __init__(self, state: Path, env: dict[str, str], cwd: Path) -> None:
        self.state, self.env = state, env
        state.write_text(f"cd {shlex.quote(str(cwd))}\n")

    def _script(self, command: str) -> str:
        q = shlex.quote(str(self.state))
        return (f"source {q} || exit 90\n{command}\nrc=$?\n"
                f"{{ export -p; echo \"cd $(printf %q \"$PWD\")\"; }} > {q}\nexit $rc\n")

    def run(self, command: str, timeout_s: float = 600) -> Ran:
        start = time.monotonic()
        out = subprocess.run(["bash", "-c", self._script(command)], env=self.env, capture_output=True, text=True,
                             timeout=timeout_s)
        return Ran(command, out.returncode, out.stdout + out.stderr, time.monotonic() - start)

    def background(self, command: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as f:
            return subprocess.Popen(["bash", "-c", f"source {shlex.quote(str(self.state))} && exec {command}"],
                                    env=self.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _graphql(port: int, query: str) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


_LATEST = """{ assetOrError(assetKey: {path: ["%s"]}) { __typename ... on Asset {
  assetMaterializations(limit: 1) { runId metadataEntries { label __typename
    ... on TextMetadataEntry { text } ... on UrlMetadataEntry { url } ... on IntMetadataEntry { intValue }
    ... on FloatMetadataEntry { floatValue } ... on MarkdownMetadataEntry { mdStr } } } } } }"""


def _ui_metadata(port: int, asset: str) -> dict[str, object]:
    """The latest materialisation's metadata as the Dagster UI reads it (its GraphQL API)."""
    data = _graphql(port, _LATEST % asset)["data"]["assetOrError"]
    assert data["__typename"] == "Asset", data
    entries = data["assetMaterializations"][0]["metadataEntries"]
    return {e["label"]: next((e[k] for k in ("text", "url", "intValue", "floatValue", "mdStr") if k in e), None)
            for e in entries}


@contextlib.contextmanager
def _serving(shell: Shell, command: str, log: Path) -> Iterator[int]:
    """Run the page's ``dagster dev`` line on a free port until it answers; stop its process group after."""
    port = free_port()
    proc = shell.background(command.replace("-p 3000", f"-p {port}"), log)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "dagster dev did not answer:\n" + log.read_text()[-3000:]
                time.sleep(1)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: dagster dev stops its webserver and daemon
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def walkthrough_profile(ray_network: LocalNetwork, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-cluster profile (the session's network) with the test network's ports (a reader's network has
    the default profile's own)."""
    data = yaml.safe_load((ROOT / "configs" / "local-one-cluster.yaml").read_text())
    ports = ray_network.profile.ports
    data["ports"] = {"gcs": ports.gcs, "dashboard": ports.dashboard, "client_server": ports.client_server}
    path = tmp_path_factory.mktemp("profile") / "local.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_walkthrough_runs_as_written(ray_network: LocalNetwork, walkthrough_profile: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    substituted = {"cd ~/westflow": f"cd {shlex.quote(str(ROOT))}",
                   "westflow up": f"westflow up --state-dir {shlex.quote(str(ray_network.state_dir))} "
                                  f"--profile {shlex.quote(str(walkthrough_profile))}"}
    commands = _doc_commands()
    assert set(substituted) <= set(commands), "the page no longer has a line this test substitutes"
    assert sum(c.startswith("dagster dev") for c in commands) == 1
    shell = Shell(tmp_path / "shell-state.sh", _user_env(ray_network, home, venv_on_path=False), home)
    ran: dict[str, Ran] = {}
    ui: dict[str, object] = {}
    try:
        for command in commands:
            if command.startswith("dagster dev"):
                with _serving(shell, command, tmp_path / "dagster-dev.log") as port:
                    ui = _ui_metadata(port, "my_first_pipeline")
                continue
            result = shell.run(substituted.get(command, command))
            assert result.returncode == 0, f"$ {command}\n{result.output[-5000:]}"
            ran[command] = result
    finally:  # `westflow up` started the admission controller in the session's state dir: the later tests run
        stop_controller(ray_network.state_dir)  # without one (their steps run the cycle themselves)
    project = home / "my-first-pipeline"
    assert not project.resolve().is_relative_to(ROOT)

    # 2. materialised from the shell: placed, ran there, with the code Ray shipped
    materialise = next(r for c, r in ran.items() if c.startswith("dagster asset materialize"))
    assert "RUN_SUCCESS" in materialise.output
    assert "westflow: my-first-pipeline -> " in materialise.output and "westflow: shipping working dir" in (
        materialise.output)
    # 3. what the UI shows for it
    for key in (md.DATA_CENTER, md.RAN_IN, md.REGION, md.WHY, md.REJECTED, md.RTT_MS, md.ENERGY_KWH, md.COST_CNY,
                md.RAY_JOB_ID, md.DASHBOARD, md.CODE, "rows_scored", "mean_score", "placed_dc", "job_file"):
        assert key in ui, key
    assert ui[md.DATA_CENTER] == ui[md.RAN_IN] == ui["placed_dc"] == _ray_says_ran_in(ray_network,
                                                                                      str(ui[md.RAY_JOB_ID]))
    assert ui[md.REGION] == "west"
    assert "cheapest" in str(ui[md.WHY])
    _assert_shipped(str(ui["job_file"]), ray_network, project)
    # 4. the same job without Dagster
    submit = next(r for c, r in ran.items() if c.startswith("westflow submit"))
    report = json.loads(next(line for line in reversed(submit.output.splitlines()) if '"rows_scored"' in line))
    assert report["rows_scored"] == 1000
    assert f"ran at {report['placed_dc']} (placed at {report['placed_dc']})" in submit.output
    _assert_shipped(report["job_file"], ray_network, project)

    to_first = sum(r.seconds for c, r in ran.items()
                   if c.startswith(("westflow init", "cd my-first", "mkdir", "export", "dagster asset")))
    with capsys.disabled():
        print(f"\nwalkthrough: westflow init -> first materialisation {to_first:.1f} s; "
              + ", ".join(f"{c.split()[0]} {c.split()[1] if len(c.split()) > 1 else ''}: {r.seconds:.1f} s"
                          for c, r in ran.items()))
