"""The local `ray start` wrapper: only the dashboard's command changes, and no module westflow uses is dropped."""

from __future__ import annotations

import ray.dashboard.utils as dashboard_utils
from ray.dashboard.subprocesses.module import SubprocessModule

from ray_cluster.local.ray_start import MODULES, UNUSED, with_modules


def test_only_the_dashboard_gets_its_module_list() -> None:
    raylet = ["raylet", "--node-ip-address=127.0.0.2"]
    assert with_modules(raylet, "raylet") == raylet
    dash = with_modules(["python", "dashboard.py", "--port=8265"], "dashboard")
    assert dash[-1].startswith("--modules-to-load=") and "JobHead" in dash[-1] and "TrainHead" not in dash[-1]
    assert with_modules(dash, "dashboard") == dash  # a list already given is kept


def test_every_module_ray_has_is_either_loaded_or_named_unused() -> None:
    have = {c.__name__ for c in dashboard_utils.get_all_modules(SubprocessModule)}
    assert have <= set(MODULES) | set(UNUSED), have - set(MODULES) - set(UNUSED)
    assert {"JobHead", "StateHead", "ReportHead", "ServeHead", "NodeHead"} <= set(MODULES)
