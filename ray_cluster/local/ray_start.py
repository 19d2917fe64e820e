"""``ray start`` for the local network, with the dashboard modules westflow does not use left out.

Ray 2.60 has no ``ray start`` switch for the dashboard's modules: each head forks every
module as its own process (about 180 MB RSS each). This runs Ray's own ``ray start``
with one change: the dashboard head is started with ``--modules-to-load`` naming
every module but Ray Train's and Ray Data's dashboards (westflow runs neither), so
a local cluster's head runs 7 module processes, not 9. Jobs, State, Node, Serve,
metrics and events (what westflow and an operator's dashboard use) are all there.

Run as a script by path (``python .../ray_start.py start --head ...``), so the short-lived
``ray start`` process imports nothing of westflow.
"""

from __future__ import annotations

import sys
from typing import Any

UNUSED = ("TrainHead", "DataHead")
MODULES = ("MetricsHead", "EventHead", "JobHead", "NodeHead", "ReportHead", "ServeHead", "StateHead",
           "TaskEventsHead", "UsageStatsHead", "PlatformEventsHead")  # disabled ones are skipped by Ray


def with_modules(command: list[str], process_type: str) -> list[str]:
    """``command`` as Ray would run it, the dashboard's with its modules named."""
    if process_type == "dashboard" and not any(c.startswith("--modules-to-load") for c in command):
        return [*command, "--modules-to-load=" + ",".join(MODULES)]
    return command


def main() -> int:
    from ray._private import services
    from ray.scripts.scripts import main as ray_main

    start = services.start_ray_process

    def start_ray_process(command: list[str], process_type: str, *args: Any, **kwargs: Any) -> Any:
        return start(with_modules(command, process_type), process_type, *args, **kwargs)

    services.start_ray_process = start_ray_process
    sys.argv[0] = "ray"
    return int(ray_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
