"""``westflow init DIR [--name NAME] [--force]``: scaffold a data scientist's project.

Writes a Dagster project (see :mod:`westflow_cli.scaffold`) that materialises on
the local network as generated, then prints what it wrote and the next commands.
Exit codes: 0 written, 2 the directory or the name is not allowed (nothing written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from westflow_cli.scaffold import ScaffoldError, project_name, render, write

EXIT_BAD_INPUT = 2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("init", help="scaffold a Dagster project whose step westflow places and runs on Ray")
    p.add_argument("dir", metavar="DIR", help="the project directory (new or empty)")
    p.add_argument("--name", default=None,
                   help="project name: the asset's and the job module's (<name>_job); default: DIR's name")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR, overwriting the scaffold's files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir).expanduser().absolute()
    try:
        scaffold = render(project_name(directory, args.name))
        written = write(scaffold, directory, force=args.force)
    except ScaffoldError as exc:
        print(f"westflow: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    roles = {"defs.py": f"Dagster definitions: asset {scaffold.asset}, placed by westflow",
             f"{scaffold.job_module}.py": "the job that runs where it is placed (Dagster Pipes)",
             "spec.yaml": "the same workload, for westflow submit",
             "workspace.yaml": "loads defs.py for dagster dev",
             "requirements.txt": "packages installed on the node (none yet)",
             ".gitignore": "left out of what Ray ships",
             "README.md": "the three commands"}
    width = max(len(p.name) for p in written)
    print(f"westflow init: wrote project {scaffold.name!r} in {directory}")
    for p in written:
        print(f"  {p.name:<{width}}  {roles.get(p.name, '')}".rstrip())
    print("\nnext, with westflow's venv active and `westflow up` running (see README.md):")
    print(f"  cd {directory}")
    for command in scaffold.next_commands():
        print(f"  {command}")
    return 0
