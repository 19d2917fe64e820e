"""What travels with a step: the project's code and its Python dependencies, as a Ray runtime env.

A step runs on whatever cluster placement chose, which shares nothing with the
host that submits it. So the code goes through Ray, as Ray's runtime
environment: the project root as ``working_dir`` (Ray zips it, uploads it to
the cluster's GCS and unpacks it on the node as the job's working directory and
first ``sys.path`` entry), optional ``py_modules``, and the job's requirements
through Ray's ``pip`` or ``uv`` plugin. The interpreter is the cluster's own
``python`` (the one its Ray runs with, or the virtualenv Ray builds for the
requirements), never a path on the submitting host.

:func:`ship` resolves a :class:`CodeConfig` into a :class:`Shipment` and checks,
before anything is submitted, what can be known here: the directory exists, what
Ray would upload (same excludes, ``.gitignore`` and ``.rayignore`` as Ray) fits
the upload limit, large data files are left out (data goes through S3), and the
entry module is in the shipped code or importable. :func:`failure_line` turns
what can only be known on the cluster (a requirement that does not install, a
module or ``dagster-pipes`` missing there) into one line.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from westflow.errors import CodeError, field_message

__all__ = ["CodeConfig", "Shipment", "Installer", "INSTALLERS", "DEFAULT_EXCLUDES", "PROJECT_MARKERS",
           "DEFAULT_MAX_FILE_MB", "project_root", "project_requirements", "ship", "upload_limit_bytes",
           "entry_module", "check_module", "failure_line", "requirements_file", "last_error_line"]

Installer = Literal["pip", "uv"]
INSTALLERS: tuple[Installer, ...] = ("pip", "uv")
# Never code: VCS data, environments, caches, westflow's own state.
DEFAULT_EXCLUDES = (".git", ".venv", "venv", "__pycache__", "*.pyc", ".westflow", ".mypy_cache", ".pytest_cache",
                    ".ruff_cache", ".tox", "*.egg-info", ".ipynb_checkpoints", "node_modules")
# A directory holding one of these is a project root.
PROJECT_MARKERS = ("workspace.yaml", "pyproject.toml", "setup.py", "setup.cfg", "requirements.txt", ".git")
DEFAULT_MAX_FILE_MB = 20.0  # a file above this is data, not code: left out (datasets go through S3)
_MB = 1024 * 1024
_IGNORE_GITIGNORE_ENV = "RAY_RUNTIME_ENV_IGNORE_GITIGNORE"  # Ray's switch; we follow it


def upload_limit_bytes() -> int:
    """Ray's limit on one uploaded package (its gRPC message size, ``$RAY_max_grpc_message_size``)."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    return int(GCS_STORAGE_MAX_SIZE)


def project_root(path: str | Path) -> Path:
    """The project ``path`` belongs to: the nearest directory at or above it with a project marker
    (``workspace.yaml``, ``pyproject.toml``, ``setup.py``, ``requirements.txt``, ``.git``), else its directory."""
    start = Path(path).resolve()
    start = start if start.is_dir() else start.parent
    for d in (start, *start.parents):
        if any((d / m).exists() for m in PROJECT_MARKERS):
            return d
    return start


def project_requirements(root: Path) -> tuple[str, ...]:
    """The project's own Python dependencies: ``requirements.txt``, else ``pyproject.toml``'s
    ``[tool.westflow] requirements`` (a project whose cluster image already has them says ``[]``),
    else its ``[project] dependencies``, else none."""
    req = root / "requirements.txt"
    if req.is_file():
        return requirements_file(req)
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return ()
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CodeError(f"Cannot read {str(pyproject)!r} for the step's requirements: {exc}. "
                        "To fix: repair the file, or give the requirements as a list.") from None
    tool = data.get("tool", {}).get("westflow", {})
    if "requirements" in tool:
        return _strings(tool["requirements"], f"{pyproject} [tool.westflow] requirements")
    return _strings(data.get("project", {}).get("dependencies", []), f"{pyproject} [project] dependencies")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CodeError(field_message("requirements", value, "a list of requirement strings", where=where))
    return tuple(value)


def requirements_file(path: Path, seen: frozenset[Path] = frozenset()) -> tuple[str, ...]:
    """The requirement lines of a requirements file (comments and blanks dropped, ``-r`` followed)."""
    if path in seen:
        return ()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CodeError(f"Cannot read the requirements file {str(path)!r}: {exc}.") from None
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        m = re.match(r"^(?:-r|--requirement)[ =]?\s*(\S+)$", line)
        if m:
            out += requirements_file((path.parent / m.group(1)).resolve(), seen | {path})
        else:
            out.append(line)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CodeConfig:
    """What to ship with a step (the Dagster resource's or ``westflow submit``'s settings).

    ``requirements=None`` means the project's own (:func:`project_requirements` of ``working_dir``);
    ``()`` means none (the cluster's Python has them). ``max_upload_mb=None`` is Ray's own limit.
    ``state_dir``: westflow's state dir (the Ray token, the S3 secret, the queue database), never
    shipped, wherever it is inside the project (``.westflow`` is excluded by name).
    """

    working_dir: Path | None
    excludes: tuple[str, ...] = ()
    max_file_mb: float = DEFAULT_MAX_FILE_MB
    max_upload_mb: float | None = None
    py_modules: tuple[Path, ...] = ()
    requirements: tuple[str, ...] | None = None
    installer: Installer = "pip"
    state_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class Shipment:
    """A checked :class:`CodeConfig`: what Ray will upload and install, and what was left out."""

    working_dir: Path | None
    excludes: tuple[str, ...]
    py_modules: tuple[Path, ...]
    requirements: tuple[str, ...]
    installer: Installer
    files: int
    size_bytes: int
    left_out: tuple[tuple[str, int], ...] = ()  # (path under working_dir, bytes): files over max_file_mb

    def runtime_env(self, env_vars: Mapping[str, str]) -> dict[str, Any]:
        """The Ray runtime env of a job that runs this code (``JobSubmissionClient`` uploads local paths)."""
        env: dict[str, Any] = {"env_vars": dict(env_vars)}
        if self.working_dir is not None:
            env["working_dir"] = str(self.working_dir)
            env["excludes"] = list(self.excludes)
        if self.py_modules:
            env["py_modules"] = [str(p) for p in self.py_modules]
        if self.requirements:
            env[self.installer] = {"packages": list(self.requirements)}
        return env

    def has_module(self, module: str) -> bool:
        """Whether ``module`` (``a.b``) is a module or package of the shipped code."""
        parts = module.split(".")
        roots = ([self.working_dir] if self.working_dir else []) + [p.parent for p in self.py_modules if p.is_dir()]
        shipped_tops = {p.name for p in self.py_modules}
        for root in roots:
            if root != self.working_dir and parts[0] not in shipped_tops:
                continue
            base = root.joinpath(*parts)
            if base.with_suffix(".py").is_file() or any((base / f).is_file() for f in ("__init__.py", "__main__.py")):
                return True
        return False

    def describe(self) -> str:
        """One line for logs: what goes, how big, what was left out, what gets installed."""
        parts = []
        if self.working_dir is not None:
            parts.append(f"working dir {self.working_dir} ({self.files} files, {self.size_bytes / _MB:.1f} MiB)")
        if self.left_out:
            parts.append("left out as data: " + ", ".join(f"{p} ({n / _MB:.0f} MiB)" for p, n in self.left_out[:3])
                         + (f" and {len(self.left_out) - 3} more" if len(self.left_out) > 3 else ""))
        if self.py_modules:
            parts.append("py_modules " + ", ".join(str(p) for p in self.py_modules))
        parts.append(f"requirements ({self.installer}): {', '.join(self.requirements)}" if self.requirements
                     else "no requirements (the cluster's Python)")
        return "; ".join(parts)


def _spec(lines: Sequence[str]) -> Any:
    from ray._private.thirdparty.pathspec import PathSpec

    return PathSpec.from_lines("gitwildmatch", lines)


def _walk(root: Path, excludes: Sequence[str]) -> Iterator[tuple[Path, int]]:
    """Every file Ray would upload from ``root`` with these excludes (and ``.gitignore``/``.rayignore``
    files in any directory, as Ray reads them), with its size."""
    with_gitignore = os.environ.get(_IGNORE_GITIGNORE_ENV, "0") != "1"
    base = _spec(excludes)
    ignores: list[tuple[Path, Any]] = [(root, base)]

    def skipped(p: Path) -> bool:
        return any(spec.match_file(str(p.relative_to(at))) for at, spec in ignores)

    def visit(d: Path) -> Iterator[tuple[Path, int]]:
        pushed = 0
        for name in ((".gitignore",) if with_gitignore else ()) + (".rayignore",):
            f = d / name
            if f.is_file():
                ignores.append((d, _spec(f.read_text(encoding="utf-8", errors="replace").splitlines())))
                pushed += 1
        try:
            entries = sorted(d.iterdir())
        except OSError as exc:
            raise CodeError(f"Cannot read {str(d)!r} of the working dir: {exc}.") from None
        for p in entries:
            if skipped(p):
                continue
            if p.is_dir() and not p.is_symlink():
                yield from visit(p)
            elif p.is_file():
                yield p, p.stat().st_size
        del ignores[len(ignores) - pushed:]

    yield from visit(root)


def _escape(rel: str) -> str:
    return "/" + re.sub(r"([\\*?\[\]!#])", r"\\\1", rel)


def ship(config: CodeConfig) -> Shipment:
    """Check ``config`` and say what will travel; a :class:`CodeError` names what is wrong, before submission."""
    wd = config.working_dir
    excludes = DEFAULT_EXCLUDES + tuple(config.excludes)
    files, size, left_out = 0, 0, []
    if wd is not None:
        wd = Path(wd).expanduser().resolve()
        if not wd.is_dir():
            raise CodeError(field_message("working_dir", str(wd), "an existing directory (the project to ship)"))
        state = Path(config.state_dir).expanduser().resolve() if config.state_dir is not None else None
        if state is not None and state != wd and state.is_relative_to(wd):
            excludes += (_escape(state.relative_to(wd).as_posix()) + "/",)
        limit_file = config.max_file_mb * _MB
        for p, n in _walk(wd, excludes):
            if n > limit_file:
                left_out.append((str(p.relative_to(wd)), n))
            else:
                files, size = files + 1, size + n
        excludes += tuple(_escape(rel) for rel, _ in left_out)
        limit = upload_limit_bytes() if config.max_upload_mb is None else int(config.max_upload_mb * _MB)
        if size >= limit:
            raise CodeError(
                f"The working dir {str(wd)!r} is {size / _MB:.1f} MiB in {files} files after excludes; must be under "
                f"{limit / _MB:.0f} MiB ({'Ray' if config.max_upload_mb is None else 'max_upload_mb'}'s upload "
                f"limit). To fix: exclude what the job does not import (excludes, .rayignore) and read data "
                "from S3.")
    mods = []
    for m in config.py_modules:
        p = Path(m).expanduser().resolve()
        if not p.exists():
            raise CodeError(field_message("py_modules", str(p), "an existing package directory or .whl file"))
        mods.append(p)
    requirements = config.requirements
    if requirements is None:
        requirements = project_requirements(wd) if wd is not None else ()
    if config.installer not in INSTALLERS:
        raise CodeError(field_message("installer", config.installer, INSTALLERS))
    return Shipment(wd, excludes, tuple(mods), tuple(requirements), config.installer, files, size,
                    tuple(sorted(left_out)))


def entry_module(command: Sequence[str]) -> str | None:
    """The module a ``python [...] -m module`` command runs, if it is one."""
    for i, arg in enumerate(command[:-1]):
        if arg == "-m":
            return command[i + 1]
        if not arg.startswith("-") and i > 0:
            return None
    return None


def check_module(shipment: Shipment, module: str) -> None:
    """Fail before submission when ``module`` is neither in the shipped code nor importable anywhere here."""
    if shipment.has_module(module):
        return
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        where = f"the working dir {str(shipment.working_dir)!r}" if shipment.working_dir else "no working dir"
        raise CodeError(f"Module {module!r} is not in the shipped code ({where}) nor installed here. "
                        "To fix: run from the project that holds it, or pass --working-dir / py_modules.")


_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_PIP_ERROR = re.compile(r"ERROR: (No matching distribution found for .+|Could not find a version that satisfies .+|"
                        r"Invalid requirement: .+|Could not install .+|.*does not exist.*)")


def failure_line(*, error_type: str, message: str, log: str, where: str, shipment: Shipment | None,
                 python: str) -> str | None:
    """One line for a failure whose cause is the shipped code or the cluster's Python, else None.

    ``where`` names the data center and cluster; ``message`` is Ray's, ``log`` the job's driver output.
    """
    text = f"{message}\n{log}"
    if error_type == "RUNTIME_ENV_SETUP_FAILURE" or "runtime_env setup failed" in text.lower():
        m = _PIP_ERROR.search(text)
        reqs = ", ".join(shipment.requirements) if shipment and shipment.requirements else "none"
        cause = m.group(1).strip() if m else last_error_line(text)
        return (f"the step's code or requirements could not be set up at {where}: {cause} "
                f"(requirements: {reqs}). To fix: correct the requirement, or make it installable from the "
                "cluster's package index.")
    m = _missing_module(log) or _missing_module(message)
    if m:
        missing = m.group(1)
        if missing.split(".")[0] == "dagster_pipes":
            return (f"the cluster's Python ({python!r}) at {where} has no dagster-pipes, which a Dagster step's "
                    "job needs to report back. To fix: add dagster-pipes to the project's requirements or the "
                    "cluster's image.")
        shipped = f"the shipped code ({shipment.working_dir})" if shipment and shipment.working_dir else "no code"
        return (f"module {missing!r} was not found at {where}: it is neither in {shipped} nor installed in the "
                f"cluster's Python ({python!r}). To fix: add it to the project or its requirements.")
    return None


def _missing_module(text: str) -> re.Match[str] | None:
    """The last "No module named 'x'" that is an error (a traceback's or the interpreter's), not a logged
    warning (a job's array backend says "No module named 'torch'" when it falls back, and runs on)."""
    for line in reversed(text.splitlines()):
        m = _NO_MODULE.search(line)
        if m and "WARNING" not in line:
            return m
    return None


def last_error_line(text: str) -> str:
    """The last line of ``text`` that reads as an error (else its last line), at most 300 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower():
            return ln[:300]
    return (lines[-1] if lines else "no detail from Ray")[:300]
