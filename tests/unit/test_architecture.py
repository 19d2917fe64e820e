"""The tree's shape, checked: module names say one thing each, private names stay private.

The import arrows themselves are import-linter contracts in pyproject.toml (``make lint``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("westflow", "westflow_cli", "pipelines", "jobs", "ray_cluster", "storage", "admission", "hostprocs",
            "benchmarks")


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_two_modules_share_a_name() -> None:
    """``cli.py`` three times, ``model.py`` twice ...: a name should point at one thing."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for p in _modules():
        if p.name != "__init__.py":
            by_name[p.stem.lstrip("_")].append(str(p.relative_to(ROOT)))
    assert {n: ps for n, ps in by_name.items() if len(ps) > 1} == {}


def _private_imports(path: Path, ours: set[str]) -> list[str]:
    """Every ``from our.module import _name`` in ``path`` (a private name used outside its module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ours:
            found += [f"{_dotted(path)}: from {node.module} import {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_private_names_cross_modules() -> None:
    ours = set(PACKAGES)
    found = [f for p in _modules() for f in _private_imports(p, ours)]
    assert found == []


@pytest.mark.parametrize("package", ["westflow"])
def test_domain_names_its_exports(package: str) -> None:
    """Every public domain module says what it exports (``__all__``)."""
    missing = [str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")
               if not p.name.startswith("_") and "__all__" not in p.read_text()]
    assert missing == []
