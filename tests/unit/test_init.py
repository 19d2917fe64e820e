"""``westflow init``: the files it writes, what it refuses, and that the project loads as generated."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ray_cluster.shipping import CodeConfig, project_root, ship
from tests.conftest import ROOT
from westflow.config import load_network
from westflow.placement import get_policy
from westflow.spec import load_spec, parse_spec
from westflow_cli.main import EXIT_BAD_INPUT, main
from westflow_cli.scaffold import WORKLOAD, render

FILES = {"defs.py", "my_first_pipeline_job.py", "spec.yaml", "workspace.yaml", "requirements.txt", ".gitignore",
         "README.md"}
DOC = ROOT / "docs" / "your-first-pipeline.md"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("home") / "my-first-pipeline"
    assert main(["init", str(d)]) == 0
    return d


def _env() -> dict[str, str]:
    """A subprocess environment with none of the local network's access (none is needed to load)."""
    drop = {"WESTFLOW_RAY_ADDRESS", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_init_writes_the_project_and_prints_the_next_commands(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "my-first-pipeline"
    assert main(["init", str(d)]) == 0
    assert {p.name for p in d.iterdir()} == FILES
    out = capsys.readouterr().out
    for name in FILES:
        assert name in out
    assert f"cd {d}" in out
    assert "dagster asset materialize -f defs.py --select my_first_pipeline" in out
    assert "westflow submit spec.yaml -- python -m my_first_pipeline_job" in out
    readme = (d / "README.md").read_text()
    assert all(c in readme for c in render("my_first_pipeline").next_commands())


def test_requirements_lists_no_package(project: Path) -> None:
    shipment = ship(CodeConfig(project))
    assert shipment.requirements == ()  # nothing pip-installed on the node: the first run is not slowed
    assert "#" in (project / "requirements.txt").read_text()  # says how to add one
    assert shipment.has_module("my_first_pipeline_job")
    assert project_root(project / "defs.py") == project  # the asset's project: this directory is what ships


def test_spec_yaml_is_the_assets_workload_and_goes_west(project: Path) -> None:
    network = load_network()
    spec = load_spec(project / "spec.yaml", network)
    data = yaml.safe_load((project / "spec.yaml").read_text())
    assert {k: v for k, v in data.items() if k != "name"} == WORKLOAD
    assert spec.name == "my-first-pipeline"
    placed = get_policy("westflow").place(spec, network, None)
    assert network.dc(placed.data_center).region.value == "west"
    assert parse_spec({"name": spec.name, **WORKLOAD}, network) == spec


def test_generated_defs_load_as_dagster_definitions(project: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                         cwd=project, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Validation successful for code location my_first_pipeline" in out.stderr + out.stdout
    probe = ("import defs, json; a = defs.defs.resolve_assets_def('my_first_pipeline'); "
             "print(json.dumps({'spec': a.metadata_by_key[a.key]['westflow/spec'], "
             "'project': a.metadata_by_key[a.key]['westflow/project']}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=project, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert json.loads(got["spec"]) == {"name": "my-first-pipeline", **WORKLOAD}
    assert Path(got["project"]) == project.resolve()


def test_the_job_runs_by_hand_and_takes_westflows_task_resources(project: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "my_first_pipeline_job", "--rows", "500",
                          "--task-resources", '{"num_cpus": 1}'], cwd=project, env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["rows_scored"] == 500 and 0 < report["mean_score"] < 1
    assert Path(report["job_file"]) == project / "my_first_pipeline_job.py"
    bad = subprocess.run([sys.executable, "-m", "my_first_pipeline_job", "--rows", "0"], cwd=project, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--rows must be >= 1" in bad.stderr


def test_non_empty_dir_is_refused_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    assert main(["init", str(d)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"DIR {str(d)!r} is not empty" in err and "--force" in err
    assert [p.name for p in d.iterdir()] == ["notes.txt"]  # nothing written
    (d / "defs.py").write_text("# old")
    assert main(["init", str(d), "--force"]) == 0
    assert "westflow_asset" in (d / "defs.py").read_text()
    assert (d / "notes.txt").read_text() == "mine"  # only the scaffold's own files are touched


def test_a_file_as_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "proj"
    f.write_text("x")
    assert main(["init", str(f), "--force"]) == EXIT_BAD_INPUT
    assert "is a file, not a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [(["9lives"], "Invalid DIR '9lives'"), (["p", "--name", "Bad-Name"], "Invalid --name 'Bad-Name'"),
     (["p", "--name", "class"], "Invalid --name 'class'"), (["p", "--name", "jobs"], "the module 'jobs'"),
     (["p", "--name", "json"], "the module 'json'"), (["p", "--name", "dg"], "defs.py already uses"),
     (["westflow"], "the module 'westflow'")],
    ids=["leading-digit", "not-lowercase", "keyword", "westflow-package", "stdlib", "defs-name", "from-dir"],
)
def test_names_that_would_collide_or_not_import_are_refused(args: list[str], says: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / args[0]
    assert main(["init", str(d), *args[1:]]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert says in err and "To fix:" in err
    assert not d.exists()


def test_name_flag_names_the_asset_and_job_module(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path / "x"), "--name", "churn"]) == 0
    assert (tmp_path / "x" / "churn_job.py").is_file()
    assert 'module="churn_job"' in (tmp_path / "x" / "defs.py").read_text()
    assert "def churn(" in (tmp_path / "x" / "defs.py").read_text()


def test_the_walkthroughs_code_is_what_init_writes() -> None:
    """The Python shown in docs/your-first-pipeline.md is quoted from the generated files, verbatim."""
    files = render("my_first_pipeline").files
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks
    for block in blocks:
        assert any(block in text for text in files.values()), block
