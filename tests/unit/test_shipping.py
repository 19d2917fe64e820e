"""What travels with a step: project root, requirements, excludes, limits, and one-line failure causes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_cluster.shipping import (
    DEFAULT_EXCLUDES,
    CodeConfig,
    check_module,
    entry_module,
    failure_line,
    project_requirements,
    project_root,
    ship,
)
from westflow.errors import CodeError

MB = 1024 * 1024


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "workspace.yaml").write_text("load_from: []\n")
    (root / "defs.py").write_text("x = 1\n")
    (root / "myjob.py").write_text("print('hi')\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "step.py").write_text("")
    return root


def test_project_root_is_the_nearest_directory_with_a_marker(tmp_path: Path) -> None:
    root = _project(tmp_path)
    assert project_root(root / "pkg" / "step.py") == root.resolve()
    assert project_root(root / "defs.py") == root.resolve()
    bare = tmp_path / "bare" / "x.py"
    bare.parent.mkdir()
    bare.write_text("")
    assert project_root(bare) == bare.parent.resolve()


def test_requirements_from_requirements_txt_then_pyproject(tmp_path: Path) -> None:
    root = _project(tmp_path)
    assert project_requirements(root) == ()
    (root / "pyproject.toml").write_text('[project]\nname = "p"\ndependencies = ["tinydep>=1", "numpy"]\n')
    assert project_requirements(root) == ("tinydep>=1", "numpy")
    (root / "pyproject.toml").write_text('[project]\nname = "p"\ndependencies = ["numpy"]\n'
                                         "[tool.westflow]\nrequirements = []\n")
    assert project_requirements(root) == ()
    (root / "base.txt").write_text("numpy==2.0  # pinned\n")
    (root / "requirements.txt").write_text("# deps\n\ntinydep==0.1\n-r base.txt\n")
    assert project_requirements(root) == ("tinydep==0.1", "numpy==2.0")


def test_pyproject_requirements_must_be_strings(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "pyproject.toml").write_text("[tool.westflow]\nrequirements = [1]\n")
    with pytest.raises(CodeError, match=r"requirements \[1\]; must be a list of requirement strings"):
        project_requirements(root)


def test_ship_leaves_out_caches_vcs_gitignored_and_large_data(tmp_path: Path) -> None:
    root = _project(tmp_path)
    for d in (".git", ".venv", "__pycache__", ".westflow"):
        (root / d).mkdir()
        (root / d / "junk.py").write_text("x" * 1000)
    (root / ".gitignore").write_text("scratch/\nout.csv\n")
    (root / "scratch").mkdir()
    (root / "scratch" / "a.py").write_text("")
    (root / "out.csv").write_text("1,2\n")
    (root / "data").mkdir()
    (root / "data" / "big[1].bin").write_bytes(b"\0" * (3 * MB))
    s = ship(CodeConfig(root, max_file_mb=2, requirements=()))
    # shipped: workspace.yaml, defs.py, myjob.py, pkg/__init__.py, pkg/step.py, .gitignore
    assert s.files == 6
    assert s.left_out == (("data/big[1].bin", 3 * MB),)
    assert s.excludes[: len(DEFAULT_EXCLUDES)] == DEFAULT_EXCLUDES
    assert s.excludes[-1] == r"/data/big\[1\].bin"  # escaped for Ray's gitwildmatch
    env = s.runtime_env({"A": "1"})
    assert env["working_dir"] == str(root.resolve()) and env["env_vars"] == {"A": "1"} and "pip" not in env
    assert "left out as data: data/big[1].bin (3 MiB)" in s.describe()


def test_a_state_dir_inside_the_project_is_never_shipped(tmp_path: Path) -> None:
    from ray._private.thirdparty.pathspec import PathSpec

    root = _project(tmp_path)
    state = root / "ops" / "state [prod]"
    state.mkdir(parents=True)
    for name in ("auth_token", "admission.db", "s3.json"):
        (state / name).write_text("secret")
    (root / "ops" / "deploy.py").write_text("")
    s = ship(CodeConfig(root, requirements=(), state_dir=state))
    assert s.files == 6  # the project's five and ops/deploy.py; nothing of the state dir
    rays = PathSpec.from_lines("gitwildmatch", s.excludes)  # what Ray's own packaging will leave out
    assert all(rays.match_file(f"ops/state [prod]/{n}") for n in ("auth_token", "admission.db", "s3.json"))
    assert not rays.match_file("ops/deploy.py")
    outside = ship(CodeConfig(root, requirements=(), state_dir=tmp_path / "elsewhere"))
    assert outside.excludes == DEFAULT_EXCLUDES and outside.files == 9  # its own files ship, as before


def test_the_left_out_pattern_matches_in_rays_own_matcher(tmp_path: Path) -> None:
    from ray._private.thirdparty.pathspec import PathSpec

    spec = PathSpec.from_lines("gitwildmatch", [r"/data/big\[1\].bin"])
    assert spec.match_file("data/big[1].bin") and not spec.match_file("data/big1.bin")


def test_requirements_go_to_the_installer_plugin(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "requirements.txt").write_text("tinydep==0.1\n")
    assert ship(CodeConfig(root)).runtime_env({})["pip"] == {"packages": ["tinydep==0.1"]}
    assert ship(CodeConfig(root, installer="uv")).runtime_env({})["uv"] == {"packages": ["tinydep==0.1"]}
    assert "pip" not in ship(CodeConfig(root, requirements=())).runtime_env({})
    with pytest.raises(CodeError, match=r"Invalid installer 'conda'; must be one of: pip, uv"):
        ship(CodeConfig(root, installer="conda"))  # type: ignore[arg-type]


def test_over_the_upload_limit_fails_before_submission(tmp_path: Path) -> None:
    root = _project(tmp_path)
    for i in range(3):
        (root / f"part{i}.py").write_bytes(b"#" * MB)
    with pytest.raises(CodeError) as exc:
        ship(CodeConfig(root, max_upload_mb=2))
    text = str(exc.value)
    assert str(root.resolve()) in text and "3.0 MiB" in text and "under 2 MiB (max_upload_mb's upload limit)" in text


def test_missing_working_dir_and_py_module_are_named(tmp_path: Path) -> None:
    with pytest.raises(CodeError, match="Invalid working_dir .*nope.*; must be an existing directory"):
        ship(CodeConfig(tmp_path / "nope"))
    with pytest.raises(CodeError, match="Invalid py_modules .*gone.*; must be an existing package"):
        ship(CodeConfig(None, py_modules=(tmp_path / "gone",)))


def test_module_is_checked_against_the_shipped_code(tmp_path: Path) -> None:
    root = _project(tmp_path)
    s = ship(CodeConfig(root, requirements=()))
    assert s.has_module("myjob") and s.has_module("pkg") and s.has_module("pkg.step")
    assert not s.has_module("otherjob")
    check_module(s, "myjob")
    check_module(s, "json")  # installed here: the cluster's Python may have it too
    with pytest.raises(CodeError, match=r"Module 'otherjob' is not in the shipped code \(the working dir"):
        check_module(s, "otherjob")


def test_entry_module_of_a_command() -> None:
    assert entry_module(["python", "-m", "myjob", "--x", "1"]) == "myjob"
    assert entry_module(["python", "-u", "-m", "pkg.step"]) == "pkg.step"
    assert entry_module(["python", "script.py", "-m", "x"]) is None
    assert entry_module(["bash", "-c", "echo"]) is None


def test_failure_lines_name_what_and_where(tmp_path: Path) -> None:
    s = ship(CodeConfig(_project(tmp_path), requirements=("nosuchpkg-westflow==9.9",)))
    pip = failure_line(error_type="RUNTIME_ENV_SETUP_FAILURE",
                       message="runtime_env setup failed: Failed to set up runtime environment.\n... pip ...\n"
                               "ERROR: Could not find a version that satisfies the requirement nosuchpkg-westflow==9.9"
                               "\nERROR: No matching distribution found for nosuchpkg-westflow==9.9\n",
                       log="", where="zhongwei (http://127.0.0.1:8265)", shipment=s, python="python")
    assert pip is not None and "\n" not in pip
    assert "at zhongwei (http://127.0.0.1:8265)" in pip and "nosuchpkg-westflow==9.9" in pip
    pipes = failure_line(error_type="JOB_ENTRYPOINT_COMMAND_ERROR", message="exit code 1",
                         log="Traceback...\nModuleNotFoundError: No module named 'dagster_pipes'\n",
                         where="guian", shipment=s, python="/opt/py/bin/python")
    assert pipes is not None and "has no dagster-pipes" in pipes and "'/opt/py/bin/python'" in pipes
    mod = failure_line(error_type="JOB_ENTRYPOINT_COMMAND_ERROR", message="",
                       log="/x/bin/python: No module named 'myjob2'\n", where="guian", shipment=s, python="python")
    assert mod is not None and "module 'myjob2' was not found at guian" in mod
    assert failure_line(error_type="JOB_ENTRYPOINT_COMMAND_ERROR", message="exit code 1",
                        log="ValueError: bad\n", where="guian", shipment=s, python="python") is None


def test_a_logged_fallback_warning_is_not_the_failure() -> None:
    """An Ascend job's backend warns "No module named 'torch'" and runs on; the job then fails on S3."""
    from ray_cluster.shipping import failure_line

    log = ("2026-11-28 jobs.train WARNING array backend numpy on cpu; FALLBACK: No module named 'torch'\n"
           "Traceback (most recent call last):\nwestflow.errors.EndpointUnreachable: S3 endpoint http://127.0.0.1:1 "
           "did not answer\n")
    assert failure_line(error_type="", message="Job entrypoint command failed with exit code 1", log=log,
                        where="guian", shipment=None, python="python") is None
