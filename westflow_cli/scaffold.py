"""The files of a new westflow project (``westflow init DIR``).

A data scientist's project lives outside westflow's checkout: a Dagster
definitions module (``defs.py``, one ``@westflow_asset``), the job module it runs
on the placed data center (``<name>_job.py``, reporting through Dagster Pipes), the
same workload as a spec for ``westflow submit`` (``spec.yaml``), a ``workspace.yaml``
for ``dagster dev``, a ``requirements.txt`` with no packages (each listed package
is pip-installed on the node before the job starts), a ``.gitignore`` (Ray leaves
ignored files out of what it ships) and a README of three commands.

The job module is named after the project, so it never shadows one of westflow's
own top-level packages, the standard library or an installed module on the node
(Ray puts the shipped directory first on ``sys.path``).
"""

from __future__ import annotations

import importlib.util
import json
import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from westflow.errors import WestflowError, field_message

__all__ = ["Scaffold", "ScaffoldError", "RESERVED_MODULES", "WORKLOAD", "project_name", "render", "write"]

# westflow's own top-level packages, and the definitions module every scaffold has.
RESERVED_MODULES = frozenset({"westflow", "westflow_cli", "pipelines", "jobs", "ray_cluster", "storage", "hostprocs",
                              "benchmarks", "tests", "defs"})
# Batch CPU work for users in Beijing: no latency bound, so placement takes the cheapest power (the west).
WORKLOAD: dict[str, object] = {"tier": "batch", "origin": "beijing", "accelerator": "cpu", "cpus": 1,
                               "memory_gb": 2, "duration_hours": 0.25}
# Names defs.py binds besides the asset (whose function is named after the project).
_DEFS_NAMES = frozenset({"dg", "westflow_resource", "westflow_asset", "westflow", "context", "config"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_NAME_RULE = "1-40 lowercase letters, digits and '_', starting with a letter"


class ScaffoldError(WestflowError):
    """``westflow init`` cannot write the project: the directory or the name is not allowed."""

    def __init__(self, field: str, value: object, allowed: str, *, fix: str, message: str | None = None) -> None:
        self.field = field
        self.value = value
        super().__init__(field_message(field, value, allowed, fix=fix, message=message))


@dataclass(frozen=True, slots=True)
class Scaffold:
    """A rendered project: its name, its modules and every file's text by relative path."""

    name: str
    asset: str
    job_module: str
    files: dict[str, str]

    def next_commands(self) -> tuple[str, ...]:
        """The README's three commands: materialise from the shell, the UI, the same job without Dagster."""
        return (f"dagster asset materialize -f defs.py --select {self.asset}",
                "dagster dev -h 127.0.0.1 -p 3000",
                f"westflow submit spec.yaml -- python -m {self.job_module}")


def project_name(directory: Path, name: str | None = None) -> str:
    """The project's name: ``name``, else ``directory``'s name lowercased, other characters as ``_``."""
    field, value = ("--name", name) if name is not None else ("DIR", directory.name)
    fix = "pass another --name." if name is not None else "pass --name NAME, or name the directory so."
    text = name if name is not None else re.sub(r"[^0-9a-z_]", "_", directory.name.lower())
    if not _NAME.match(text) or keyword.iskeyword(text):
        raise ScaffoldError(field, value, f"a project name of {_NAME_RULE}", fix=fix)
    job = f"{text}_job"
    for module in (text, job):
        if module in RESERVED_MODULES or module in sys.stdlib_module_names:
            raise ScaffoldError(field, value, "a name that is none of westflow's packages ("
                                + ", ".join(sorted(RESERVED_MODULES)) + ") nor a standard library module", fix=fix,
                                message=f"Project name {text!r} makes the module {module!r}, which is taken")
    if text in _DEFS_NAMES:
        raise ScaffoldError(field, value, "a name that is none of " + ", ".join(sorted(_DEFS_NAMES)), fix=fix,
                            message=f"Project name {text!r} is a name defs.py already uses for something else")
    if importlib.util.find_spec(job) is not None:
        raise ScaffoldError(field, value, "a name whose job module is not installed already", fix=fix,
                            message=f"Project name {text!r} makes the job module {job!r}, which is already "
                                    "installed here (one would shadow the other)")
    return text


def render(name: str) -> Scaffold:
    """Every file of project ``name`` (a name :func:`project_name` accepted)."""
    asset, job = name, f"{name}_job"
    scaffold = Scaffold(name, asset, job, {})
    workload = _wrap([f"{json.dumps(k)}: {json.dumps(v)}" for k, v in WORKLOAD.items()], indent=" " * 14)
    spec = yaml.safe_dump({"name": name.replace("_", "-"), **WORKLOAD}, sort_keys=False)
    commands = scaffold.next_commands()
    subs = {"name": name, "asset": asset, "job": job, "workload": workload, "spec": spec,
            "pad": " " * len(f"def {asset}("), "materialize": commands[0], "dev": commands[1], "submit": commands[2]}
    files = {path.format(**subs): text.format(**subs) for path, text in _TEMPLATES.items()}
    return Scaffold(name, asset, job, files)


def write(scaffold: Scaffold, directory: Path, *, force: bool = False) -> list[Path]:
    """Write ``scaffold`` into ``directory`` (created if missing); returns the paths written.

    A directory that exists and is not empty is refused unless ``force``; then only the
    scaffold's own files are overwritten, nothing else is touched.
    """
    if directory.exists() and not directory.is_dir():
        raise ScaffoldError("DIR", str(directory), "a new or empty directory", fix="choose another path.",
                            message=f"DIR {str(directory)!r} is a file, not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise ScaffoldError("DIR", str(directory), "a new or empty directory (or --force to overwrite the "
                            "scaffold's files in it)", fix="choose a new directory, or pass --force.",
                            message=f"DIR {str(directory)!r} is not empty")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for rel, text in scaffold.files.items():
        path = directory / rel
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _wrap(items: list[str], *, indent: str, width: int = 100) -> str:
    """``items`` joined by ", ", broken into lines of at most ``width`` characters."""
    lines = [""]
    for item in items:
        if lines[-1] and len(lines[-1]) + len(item) + 2 > width:
            lines[-1] += ","
            lines.append("")
        lines[-1] += (", " if lines[-1] else "") + item
    return f"\n{indent}".join(lines)


_DEFS = '''\
"""{name}: a Dagster project whose step runs on the national computing power network.

westflow places the asset's step by its ``workload`` (tier, users' city, hardware),
then runs ``python -m {job}`` there as a Ray Job; this directory travels with it
(Ray's runtime env), so the job's code needs no shared filesystem.
"""

import dagster as dg

from pipelines.deployments import westflow_resource
from pipelines.resources import WestflowResource
from pipelines.workload import westflow_asset


class ScoreConfig(dg.Config):
    rows: int = 10_000


@westflow_asset(
    # Batch CPU work for users in Beijing: no latency bound, so it goes where power is cheapest (the west).
    # The same workload is in spec.yaml, for `westflow submit`.
    workload={{{workload}}},
    description="Scores synthetic customers where westflow places the step.",
)
def {asset}(context: dg.AssetExecutionContext, config: ScoreConfig,
{pad}westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.run(context, module="{job}", args=["--rows", str(config.rows)])


# $WESTFLOW_DEPLOYMENT picks the network: local (default) is the one `westflow up` started.
defs = dg.Definitions(assets=[{asset}], resources={{"westflow": westflow_resource()}})
'''

_JOB = '''\
"""{name}: the step's real work, run as a Ray Job in the data center westflow chose.

Dagster (defs.py) or `westflow submit` starts it as ``python -m {job}``. Ray shipped
this directory to the node, so ``__file__`` is under Ray's runtime resources there.
It reports back through Dagster Pipes; run by hand or by `westflow submit`, Pipes
is a no-op and the result is printed. Replace ``score`` with your own work.
"""

import argparse
import json
import math
import os
import random
import socket
import sys

from dagster_pipes import open_dagster_pipes


def score(rows: int, seed: int) -> dict[str, float]:
    """A stand-in model: the logistic score of ``rows`` synthetic customers, summarised."""
    rng = random.Random(seed)
    scores = [1.0 / (1.0 + math.exp(0.5 - 1.5 * rng.gauss(0.0, 1.0))) for _ in range(rows)]
    return {{"rows_scored": rows, "mean_score": round(sum(scores) / rows, 4),
            "share_above_half": round(sum(s > 0.5 for s in scores) / rows, 4)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m {job}", description="Score synthetic customers.")
    parser.add_argument("--rows", type=int, default=10_000, help="how many rows to score (>= 1)")
    parser.add_argument("--seed", type=int, default=0)
    # westflow passes the placement's Ray task options (JSON). A job that starts Ray tasks gives them to
    # ray.remote(fn).options(**json.loads(...)), so its tasks hold the spec's CPUs and accelerators in the
    # same data center. This one works in the job's driver, which westflow already pinned there.
    parser.add_argument("--task-resources", default=os.environ.get("WESTFLOW_TASK_RESOURCES"),
                        help="the placement's Ray task options, as JSON (westflow passes them)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows must be >= 1, not {{args.rows}}")
    placed = os.environ.get("WESTFLOW_PLACED_DC", "not placed (run by hand)")
    with open_dagster_pipes() as pipes:
        pipes.log.info(f"scoring {{args.rows}} rows in {{placed}}")
        metadata = {{**score(args.rows, args.seed),
                    "placed_dc": placed,
                    "region": os.environ.get("WESTFLOW_REGION", "unknown"),
                    "job_file": __file__,  # where Ray unpacked the shipped code on the node
                    "python": sys.executable,
                    "host": socket.gethostname()}}
        pipes.report_asset_materialization(metadata=metadata)
    print(json.dumps(metadata), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
'''

_SPEC = '''\
# The workload of the asset in defs.py, for the same job without Dagster:
#   {submit}
{spec}'''

_WORKSPACE = '''\
# `dagster dev` in this directory loads defs.py as the code location "{name}".
load_from:
  - python_file:
      relative_path: defs.py
      location_name: {name}
'''

_REQUIREMENTS = '''\
# Python packages the job imports that the cluster's Python lacks (it has dagster-pipes, numpy, pyarrow, ray).
# westflow installs every line here into a virtualenv on the node before the job starts (Ray's pip runtime
# env): slow the first time on each node, cached after. No packages are needed as generated.
# Add one requirement per line, pinned, e.g.:
#   scikit-learn==1.5.2
'''

_GITIGNORE = '''\
# Left out of what Ray ships with each step, too.
__pycache__/
.venv/
.dagster/
.tmp_dagster_home_*/
'''

_README = '''\
# {name}

A Dagster asset (`{asset}` in `defs.py`) whose step westflow places on the
national computing power network and runs there as a Ray Job
(`python -m {job}`, this directory shipped with it).

With westflow's venv active and its local network up (`westflow up` in the
westflow checkout), from this directory:

```bash
{materialize}    # the step, on the network
{dev}    # the Dagster UI: where it ran and why
{submit}    # the same job, no Dagster
```

Set `DAGSTER_HOME` to a directory (e.g. `export DAGSTER_HOME=~/.dagster`) so
`dagster dev` shows the runs the first command made. Change the workload in
`defs.py` (and `spec.yaml`), the work in `{job}.py`, packages in
`requirements.txt`.
'''

_TEMPLATES = {"defs.py": _DEFS, "{job}.py": _JOB, "spec.yaml": _SPEC, "workspace.yaml": _WORKSPACE,
              "requirements.txt": _REQUIREMENTS, ".gitignore": _GITIGNORE, "README.md": _README}
