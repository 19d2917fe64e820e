"""Two real Dagster runs race for the last accelerators of one DC on the live network: never both get them.

Both runs ask for 8 CUDA accelerators for users in Beijing; zhongwei (8 x H20, the
cheapest power) is the first choice of each, zhangjiakou (8 x A800) the only other.
Each job holds its accelerators in a Ray task until the test opens a barrier, so
both are held at the same moment: one run wins zhongwei, the other goes to
zhangjiakou, and Ray runs both tasks at once. (Had both been placed at zhongwei,
the second task could never start while the first holds the 8 H20s, and the
test would fail at its deadline.)
"""

from __future__ import annotations

import importlib.util
import textwrap
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines import metadata as md
from pipelines.resources import WestflowResource
from ray_cluster.local import LocalNetwork
from ray_cluster.reservations import Reservations

pytestmark = pytest.mark.integration

JOB = '''
import json, os, pathlib, sys, time
import ray
from dagster_pipes import open_dagster_pipes

@ray.remote
def hold(barrier: str, dc: str) -> str:
    pathlib.Path(barrier, dc + ".held").write_text(str(ray.get_runtime_context().get_accelerator_ids()))
    while not pathlib.Path(barrier, "go").exists():
        time.sleep(0.1)
    return dc

opts = json.loads(sys.argv[sys.argv.index("--task-resources") + 1])
barrier = (pathlib.Path(__file__).resolve().parent / "barrier_path.txt").read_text().strip()
with open_dagster_pipes() as pipes:
    ray.init()
    held_in = ray.get(hold.options(**opts).remote(barrier, os.environ["WESTFLOW_PLACED_DC"]))
    pipes.report_asset_materialization(metadata={"held_in": {"raw_value": held_in, "type": "text"}})
'''

DEFS = '''
import dagster as dg
from pipelines.resources import WestflowResource
from pipelines.workload import westflow_asset

@westflow_asset(workload={"tier": "batch", "origin": "beijing", "accelerator": "cuda:8", "cpus": 0.5,
                          "memory_gb": 1, "duration_hours": 0.1})
def last_gpus(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.run(context, module="holdjob")
'''


def test_two_runs_racing_for_the_last_accelerators_never_both_get_them(ray_network: LocalNetwork,
                                                                       tmp_path: Path) -> None:
    root = tmp_path / "race"
    barrier = tmp_path / "barrier"
    root.mkdir()
    barrier.mkdir()
    (root / "holdjob.py").write_text(textwrap.dedent(JOB))
    (root / "defs.py").write_text(textwrap.dedent(DEFS))
    (root / "barrier_path.txt").write_text(str(barrier))
    (root / "requirements.txt").write_text("# the cluster's Python has ray and dagster-pipes\n")
    spec = importlib.util.spec_from_file_location("race_defs", root / "defs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    westflow = WestflowResource(state_dir=str(ray_network.state_dir), ray_address=ray_network.dashboard_url,
                                ray_auth_token_path=str(ray_network.token_path), poll_interval_s=0.3)
    # the race is for every accelerator of both DCs: wait (bounded) until Ray shows them all free
    deadline = time.monotonic() + 120
    while True:
        caps, _ = westflow.capacity_and_totals(westflow.network())
        free = {dc: caps[dc].free.get(model, 0) for dc, model in (("zhongwei", "H20"), ("zhangjiakou", "A800"))}
        if free == {"zhongwei": 8, "zhangjiakou": 8}:
            break
        assert time.monotonic() < deadline, f"the accelerators never came free before the race: {free}"
        time.sleep(0.5)
    results: dict[int, dg.ExecuteInProcessResult] = {}
    start = threading.Barrier(2)

    def run(i: int) -> None:
        start.wait()
        results[i] = dg.materialize([mod.last_gpus], resources={"westflow": westflow},
                                    instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)

    runners = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in runners:
        t.start()
    try:
        deadline = time.monotonic() + 300  # a bound on a hang, not a race: the event is both files
        while time.monotonic() < deadline and len(list(barrier.glob("*.held"))) < 2:
            if not any(t.is_alive() for t in runners):
                break
            time.sleep(0.2)
        held = sorted(p.stem for p in barrier.glob("*.held"))
        assert held == ["zhangjiakou", "zhongwei"], f"both runs did not hold accelerators at once: {held}"
    finally:
        (barrier / "go").touch()
        for t in runners:
            t.join(timeout=300)
    assert all(r.success for r in results.values()) and len(results) == 2
    placed = sorted(md.value(r.asset_materializations_for_node("last_gpus")[0].metadata, md.DATA_CENTER)
                    for r in results.values())
    assert placed == ["zhangjiakou", "zhongwei"]
    for r in results.values():
        meta = r.asset_materializations_for_node("last_gpus")[0].metadata
        assert md.value(meta, "held_in") == md.value(meta, md.DATA_CENTER) == md.value(meta, md.RAN_IN)
    assert Reservations(ray_network.state_dir / "reservations.json").held() == ()
