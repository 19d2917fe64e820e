"""One decision, whichever path takes it: the pruned search on the national inventory equals the full scan,
and the rejections that write their text on read behave like plain values."""

from __future__ import annotations

import copy
import pickle
import random
from typing import Any

import pytest

from tests.builders import make_spec, national
from westflow.capacity import DCCapacity, static_capacity
from westflow.errors import InfeasibleError
from westflow.placement import Reason, Rejection, WestflowPolicy, get_policy, place
from westflow.placement.values import DearerRejection, ShortRejection
from westflow.spec import parse_spec

ACCELS = ["cpu", "cuda:1", "cuda:8", "cann:4", "any:16", "any:2", "H20:2", "A800:60", "any:1", "cann:4000"]


def _outcome(policy: WestflowPolicy, spec: Any, cap: Any) -> list[Any]:
    try:
        p = policy.place(spec, national(), cap)
        return [p.as_dict(), p.score, repr(p.rejected)]
    except InfeasibleError as e:
        return ["infeasible", str(e)]


def test_pruned_search_on_the_national_inventory_equals_the_full_scan() -> None:
    n = national()
    rng = random.Random(5)
    fast, full = WestflowPolicy(prune=True), WestflowPolicy(prune=False)
    for i in range(300):
        d: dict[str, Any] = {"name": f"s{i}", "tier": rng.choice(["batch", "realtime"]),
                             "origin": rng.choice(n.city_ids), "accelerator": rng.choice(ACCELS),
                             "cpus": rng.choice([1, 16]), "memory_gb": rng.choice([1, 64]),
                             "duration_hours": rng.choice([0.1, 5.5]),
                             "deadline_hours": rng.choice([None, 0.5, 9.0])}
        if rng.random() < 0.4:
            d["inputs"] = [{"name": "x", "region": rng.choice(["east", "west"]), "size_gb": rng.choice([0, 500])}]
        spec = parse_spec(d, n)
        cap = None if i % 3 == 0 else {
            dc.id: DCCapacity({p.model: rng.choice([0, 3, 64]) for p in dc.pools}, dc.cpus, dc.memory_gb,
                              rng.random(), alive=rng.random() > 0.1) for dc in n.data_centers}
        assert _outcome(fast, spec, cap) == _outcome(full, spec, cap), d


def test_place_is_the_westflow_policy() -> None:
    spec = make_spec(accelerator="any:8")
    a, b = place(spec, national()), get_policy("westflow").place(spec, national())
    assert a.as_dict() == b.as_dict()


def test_rejections_written_on_read_are_values() -> None:
    short = ShortRejection("wuhu", 8, "H20", 3)
    dearer = DearerRejection("guian", 1.234, 10.0, 0.5, 0.42)
    plain = Rejection("zhongwei", Reason.LATENCY, "RTT 30.0 ms to shanghai > 20 ms")
    assert (short.data_center, short.reason, short.detail) == ("wuhu", Reason.CAPACITY, "8 x H20 asked, 3 free")
    assert dearer.reason is Reason.DEARER
    assert dearer.detail == "dearer by 1.23 CNY (energy 10.00 + transfer 0.50, 42% used)"
    assert plain.detail.startswith("RTT")
    for r in (short, dearer, plain):
        for other in (pickle.loads(pickle.dumps(r)), copy.deepcopy(r), copy.copy(r)):
            assert other == r and type(other) is type(r) and other.detail == r.detail
        assert isinstance(r, Rejection) and r.detail in repr(r)


def test_a_full_dc_reads_how_many_were_asked_and_free() -> None:
    n = national()
    caps = dict(static_capacity(n))
    caps["zhongwei"] = DCCapacity({p.model: 1 for p in n.dc("zhongwei").pools}, 64, 512, 0.5)
    p = place(make_spec(accelerator="cuda:4"), n, caps)
    why = {r.data_center: r for r in p.rejected}["zhongwei"]
    assert why.reason is Reason.CAPACITY and why.detail.startswith("4 x cuda asked, 1 free")


def _twins_network(coords: list[tuple[float, float]]) -> Any:
    """DCs alike in everything but their place (so alike in score), and one city at (30, 110)."""
    from westflow.config import build_network
    dcs = [{"id": f"dc{i}", "name": f"DC {i}", "hub": "h", "region": "west", "lat": lat, "lon": lon, "pue": 1.2,
            "price_cny_kwh": 0.4, "ray_cluster": "c0", "cpus": 64, "memory_gb": 512,
            "accelerators": [{"family": "cuda", "model": "H20", "count": 64, "watts": 400}],
            "utilisation_baseline": 0.5} for i, (lat, lon) in enumerate(coords)]
    net = {"ray_clusters": [{"name": "c0"}], "data_centers": dcs,
           "transfer": [{"from": a, "to": b, "bandwidth_gbps": 10, "cost_cny_per_gb": 0.3}
                        for a in ("east", "west") for b in ("east", "west")],
           "cities": [{"id": "here", "name": "Here", "lat": 30.0, "lon": 110.0}]}
    tiers = {"tiers": [{"name": "realtime", "max_rtt_ms": 20}, {"name": "batch", "max_rtt_ms": None}]}
    return build_network(net, tiers)


@pytest.mark.parametrize("prune", [False, True])
def test_equal_scores_go_to_the_nearer_dc_then_to_the_one_listed_first(prune: bool) -> None:
    spec_of = {"name": "s", "tier": "batch", "origin": "here", "accelerator": "cuda:1"}
    far, near = (36.0, 104.0), (31.0, 111.0)
    n = _twins_network([far, near, far, near])
    p = WestflowPolicy(prune=prune).place(parse_spec(spec_of, n), n)
    assert p.data_center == "dc1"
    assert [(r.data_center, r.reason, r.detail.split(" (")[0]) for r in p.rejected] == [
        (d, Reason.DEARER, "dearer by 0.00 CNY") for d in ("dc0", "dc2", "dc3")]
    n = _twins_network([far, far, far])
    assert WestflowPolicy(prune=prune).place(parse_spec(spec_of, n), n).data_center == "dc0"
