"""The one capacity model: free = total - used, one utilisation, each DC against its own target."""

from __future__ import annotations

import dataclasses

import pytest

from ray_cluster.live import NodeView, snapshot, usage
from ray_cluster.local import DCStatus, NetworkStatus
from ray_cluster.reservations import Reservation, available
from tests.builders import national
from westflow.capacity import (
    DCCapacity,
    DCUsage,
    Resources,
    Standing,
    capacity_of,
    full_capacity,
    static_capacity,
    utilisation,
    utilisation_report,
)
from westflow.inventory import Network
from westflow.placement import get_policy
from westflow.simulator.demand import LoadScaling, build_workload
from westflow.simulator.engine import simulate
from westflow.simulator.traces import BatchJob, TraceSet
from westflow.tags import LABEL_DC, dc_resource
from westflow_cli.localnet import utilisation_of

TOTAL = Resources({"H20": 8, "A800": 8}, 64.0, 512.0)


def _with_targets(**targets: float) -> Network:
    """The national network with some DCs' ``utilisation_target`` changed."""
    n = national()
    dcs = tuple(dataclasses.replace(d, utilisation_target=targets.get(d.id, d.utilisation_target))
                for d in n.data_centers)
    return dataclasses.replace(n, data_centers=dcs)


def test_free_is_total_minus_used_per_resource() -> None:
    used = Resources({"H20": 3}, 10.0, 100.0).plus(Resources.of("A800", 1, 2.0, 12.0))
    cap = capacity_of(TOTAL, used)
    assert cap == DCCapacity({"H20": 5, "A800": 7}, 52.0, 400.0, 4 / 16)
    assert capacity_of(TOTAL, used.minus(used)) == capacity_of(TOTAL, Resources())
    # live counts are float sums: 7.9999999999 free is 8 devices, 7.5 free is 7
    assert capacity_of(Resources({"H20": 8.0}), Resources({"H20": 1e-10})).free == {"H20": 8}
    assert capacity_of(Resources({"H20": 8.0}), Resources({"H20": 0.5})).free == {"H20": 7}
    # a model the DC does not have is never offered, whatever is held of it
    assert set(capacity_of(TOTAL, Resources({"H800": 2})).free) == {"H20", "A800"}


@pytest.mark.parametrize(("total", "used", "share"), [
    (TOTAL, Resources({"H20": 4}, 64.0), 0.25),  # accelerators decide where there are any
    (Resources({}, 4.0), Resources({}, 1.0), 0.25),  # CPUs where there are none
    (Resources({"GPU": 0.0}, 4.0), Resources({}, 3.0), 0.75),  # a zero count is none
    (Resources(), Resources(), 1.0),  # a node with nothing to offer is full
    (TOTAL, Resources({"H20": 20}), 1.0),  # clamped
], ids=["accelerators", "cpus", "zero-accelerators", "nothing", "clamped"])
def test_one_utilisation(total: Resources, used: Resources, share: float) -> None:
    assert utilisation(total, used) == share
    assert capacity_of(total, used).utilisation == share


def test_each_dc_is_judged_against_its_own_target() -> None:
    n = _with_targets(zhongwei=0.9, wuhu=0.3)
    half = DCUsage(Resources({"x": 10}), Resources({"x": 5}))
    rows = utilisation_report(n, {"zhongwei": half, "wuhu": half, "nowhere": half})
    assert [(r.dc, r.utilisation, r.target, r.standing) for r in rows] == [
        ("wuhu", 0.5, 0.3, Standing.MET), ("zhongwei", 0.5, 0.9, Standing.BELOW)]
    assert rows[1].below and not rows[0].below
    assert (rows[0].used, rows[0].total, rows[0].unit) == (5, 10, "accelerators")
    (cpu_row,) = utilisation_report(n, {"wuhu": DCUsage(Resources({}, 8.0), Resources({}, 2.0))})
    assert (cpu_row.used, cpu_row.total, cpu_row.unit, cpu_row.standing) == (2.0, 8.0, "CPUs", Standing.BELOW)


def test_static_capacity_is_the_configured_baseline_and_full_capacity_is_empty() -> None:
    n = national()
    for dc in n.data_centers:
        s, f = static_capacity(n)[dc.id], full_capacity(n)[dc.id]
        assert s.utilisation == dc.utilisation_baseline and f.utilisation == 0.0
        assert f.free == {p.model: p.count for p in dc.pools} and f.free_cpus == dc.cpus
        for p in dc.pools:
            assert s.free[p.model] == int(p.count * (1 - dc.utilisation_baseline))


def _node(dc: str, *, gpu: float, gpu_free: float, cpus_free: float = 1.0, model: str = "H20") -> NodeView:
    total = {"CPU": 2.0, "memory": 2.0**36, dc_resource(dc): 1000.0, "GPU": gpu, f"accelerator_type:{model}": 1.0}
    return NodeView(f"node-{dc}-{model}", True, total, dict(total, GPU=gpu_free, CPU=cpus_free), {LABEL_DC: dc})


def test_live_snapshot_usage_and_status_agree_on_utilisation() -> None:
    n = _with_targets(zhongwei=0.5, zhangjiakou=0.5)
    nodes = [_node("zhongwei", gpu=8, gpu_free=2), _node("zhangjiakou", gpu=8, gpu_free=7, model="A800")]
    caps, rows = snapshot(n, nodes), {r.dc: r for r in utilisation_report(n, usage(n, nodes))}
    assert {dc: c.utilisation for dc, c in caps.items()} == {dc: r.utilisation for dc, r in rows.items()}
    assert rows["zhongwei"].standing is Standing.MET and rows["zhangjiakou"].standing is Standing.BELOW
    assert (rows["zhongwei"].used, rows["zhongwei"].total) == (6, 8)
    st = NetworkStatus(True, "http://127.0.0.1:8265", "127.0.0.1:6379", tuple(
        DCStatus(v.dc or "", v.node_id, True, False, v.used("CPU"), 2.0, "GPU", v.used("GPU"), v.total["GPU"])
        for v in nodes))
    assert {dc: r.utilisation for dc, r in utilisation_of(st, n).items()} == {dc: r.utilisation
                                                                              for dc, r in rows.items()}


def _held(model: str, n: int) -> Reservation:
    return Reservation(ticket=f"r-{model}", owner="o", pid=1, pid_start=None, created=0.0, spec="s",
                       data_center="zhongwei", accelerator_model=model, accelerators=n, cpus=0.0, memory_gb=0.0)


def test_reservations_take_the_larger_use_per_resource_and_its_utilisation() -> None:
    totals = {"zhongwei": capacity_of(TOTAL, Resources())}
    live = {"zhongwei": capacity_of(TOTAL, Resources({"H20": 4}))}  # Ray sees 4 H20 busy
    a = available(live, [_held("A800", 3)], totals)["zhongwei"]  # 3 A800 reserved, not started yet
    assert a.free == {"H20": 4, "A800": 5}
    assert a.utilisation == utilisation(TOTAL, Resources({"H20": 4, "A800": 3})) == 7 / 16


def test_the_simulator_measures_the_same_utilisation() -> None:
    n = national()
    traces = TraceSet((BatchJob(0.0, 1800.0, 8, "shanghai"),), (), 3600.0, ("synthetic",))
    w = build_workload(traces, n, scaling=LoadScaling(None, None), window_s=3600.0)
    r = simulate(get_policy("westflow"), n, w)
    ((dc, _),) = r.batch_dc.items()
    total = next(d for d in n.data_centers if d.id == dc).accelerator_total
    assert r.util_dc[dc] == pytest.approx(8 / total * 1800 / 3600)
    assert all(u == 0 for d, u in r.util_dc.items() if d != dc)
    region = {d.id: d.region.value for d in n.data_centers}[dc]
    in_region = sum(d.accelerator_total for d in n.data_centers if d.region.value == region)
    assert r.util_region[region] == pytest.approx(8 * 1800 / (in_region * 3600))
