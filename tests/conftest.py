"""Shared test setup. Integration fixtures live in tests/fixtures/*.py (real services)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.ray", "tests.fixtures.postgres"]

# Integration modules share one local network per session: check it fresh first, break it last.
# test_jobs_ray runs its own in-process Ray cluster, so it must come before any driver joins the network.
# test_admission_pg and test_metering_live need no Ray (a PostgreSQL of their own from pgserver): they run first.
_ORDER = ["test_admission_pg", "test_metering_live", "test_jobs_ray", "test_ray_network", "test_plan_live",
          "test_jobs_s3", "test_locality", "test_storage", "test_security", "test_load", "test_pipelines",
          "test_dagster_server", "test_s3_fault_step", "test_dagster_race", "test_first_pipeline", "test_own_code",
          "test_admission_live", "test_failover", "test_failover_realtime", "test_services", "test_controller_proc",
          "test_federation"]
# test_federation stops the single-cluster network (and this process's Ray driver of it) to start the
# federation: it and test_services (which shares it) must stay last, test_federation the very last (its last
# test stops the federation).


def _rank(item: object) -> tuple[int, int]:
    path = str(getattr(item, "path", ""))
    if "/integration/" not in path:
        return (0, 0)
    stem = path.rsplit("/", 1)[-1].removesuffix(".py")
    best = max((i for i, name in enumerate(_ORDER) if stem.startswith(name)), default=len(_ORDER),
               key=lambda i: len(_ORDER[i]) if i < len(_ORDER) else 0)
    return (1, best)


def pytest_collection_modifyitems(items: list[object]) -> None:
    items.sort(key=_rank)  # stable: tests keep their order inside a module
