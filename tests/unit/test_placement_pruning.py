"""The pruned search of large networks decides exactly as the full scan does."""

from __future__ import annotations

import importlib.util
import math
import random
from dataclasses import replace
from typing import Any

import pytest

from tests.conftest import ROOT
from westflow.capacity import DCCapacity
from westflow.errors import InfeasibleError
from westflow.inventory import Network
from westflow.placement import Placement, WestflowPolicy
from westflow.spec import WorkloadSpec, parse_spec

_spec = importlib.util.spec_from_file_location("placement_bench", ROOT / "benchmarks" / "placement_bench.py")
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

ACCELS = ["cpu", "cuda:1", "cuda:8", "cann:4", "any:16", "any:2", "H800:8", "Ascend910B:2", "A800:60", "any:1"]


def _outcome(policy: WestflowPolicy, spec: Any, net: Network, cap: dict[str, DCCapacity]) -> list[Any]:
    try:
        p = policy.place(spec, net, cap)
        return [p.as_dict(), p.score, repr(p.rejected)]
    except InfeasibleError as e:
        return ["infeasible", str(e), repr(e.rejected)]


@pytest.mark.parametrize("seed", [1, 2], ids=["seed1", "seed2"])
def test_pruned_search_equals_full_scan_on_1000_dcs(seed: int) -> None:
    net = bench.synthetic_network(1000, seed=9)
    rng = random.Random(seed)
    fast, full = WestflowPolicy(prune=True), WestflowPolicy(prune=False)
    for i in range(120):
        spec = _random_spec(rng, net, i, ["batch", "realtime"])
        cap = {dc.id: DCCapacity({p.model: rng.choice([0, 3, 8, 64]) for p in dc.pools}, dc.cpus, dc.memory_gb,
                                 rng.random(), alive=rng.random() > 0.05)
               for dc in net.data_centers}
        assert _outcome(fast, spec, net, cap) == _outcome(full, spec, net, cap), spec


@pytest.mark.parametrize("head", [1, 5])
def test_pruned_search_past_its_sorted_head_equals_full_scan(head: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The search sorts only the smallest bounds up front; going past them gives the same decisions."""
    import westflow.placement.search as search

    monkeypatch.setattr(search, "HEAD", head)
    net = bench.synthetic_network(300, seed=4)
    rng = random.Random(head)
    fast, full = WestflowPolicy(prune=True), WestflowPolicy(prune=False)
    for i in range(40):
        spec = parse_spec({"name": f"s{i}", "tier": "batch", "accelerator": rng.choice(ACCELS),
                           "cpus": rng.choice([1, 16]), "duration_hours": rng.choice([0.1, 5.5])}, net)
        cap = {dc.id: DCCapacity({p.model: rng.choice([0, 3, 64]) for p in dc.pools}, dc.cpus, dc.memory_gb,
                                 rng.random(), alive=rng.random() > 0.3)
               for dc in net.data_centers}
        assert _outcome(fast, spec, net, cap) == _outcome(full, spec, net, cap)


def _utilisation(rng: random.Random) -> float:
    return rng.choice([0.0, 0.3, 0.64, 0.65, 0.9, 1.0, math.nan, rng.random(), rng.random()])


def _random_spec(rng: random.Random, net: Network, i: int, tiers: list[str]) -> WorkloadSpec:
    """A random step spec (tier from ``tiers``; inputs for some)."""
    d: dict[str, Any] = {"name": f"s{i}", "tier": rng.choice(tiers),
                         "origin": rng.choice(net.city_ids), "accelerator": rng.choice(ACCELS),
                         "cpus": rng.choice([1, 2, 16]), "memory_gb": rng.choice([1, 64]),
                         "duration_hours": rng.choice([0.1, 1, 5.5])}
    if rng.random() < 0.4:
        d["inputs"] = [{"name": "x", "region": rng.choice(["east", "west"]), "size_gb": rng.choice([0, 500])}]
    return parse_spec(d, net)


def test_pruned_search_on_snapshots_changed_in_place_equals_full_scan() -> None:
    """The bound reads each DC's capacity and utilisation from columns kept per snapshot mapping; mappings
    changed in place between decisions (as the admission cycle's views are), a few DCs or many at a
    time, decide as the full scan, and explain the decision as the snapshot was when it was made."""
    net = bench.synthetic_network(300, seed=5)
    rng = random.Random(7)
    fast, full = WestflowPolicy(prune=True), WestflowPolicy(prune=False)

    def entry(dc: Any) -> DCCapacity:
        return DCCapacity({p.model: rng.choice([0, 1, 3, 8, 64]) for p in dc.pools}, rng.choice([dc.cpus, 8, 1]),
                          rng.choice([dc.memory_gb, 32]), _utilisation(rng), alive=rng.random() > 0.05)

    views = [{dc.id: entry(dc) for dc in net.data_centers} for _ in range(3)]
    checked = 0
    for i in range(160):
        cap = rng.choice(views)
        for dc in rng.sample(net.data_centers, rng.choice([1, 1, 2, 5, 40, 200])):
            cap[dc.id] = entry(dc)
        if i == 80:  # a negative utilisation: the bound does not hold, the full scan decides
            cap[net.data_centers[0].id] = replace(cap[net.data_centers[0].id], utilisation=-0.5)
        spec = _random_spec(rng, net, i, ["batch", "batch", "realtime"])
        outcomes: list[Placement | list[str]] = []
        for policy in (fast, full):
            try:
                outcomes.append(policy.place(spec, net, cap))
            except InfeasibleError as e:
                outcomes.append(["infeasible", str(e), repr(e.rejected)])
        for dc in rng.sample(net.data_centers, 3):  # changed after the decision: its explanation is not
            cap[dc.id] = entry(dc)
        got = [[p.as_dict(), p.score, repr(p.rejected)] if not isinstance(p, list) else p for p in outcomes]
        assert got[0] == got[1], spec
        checked += not isinstance(outcomes[0], list)
    assert checked > 80


def test_pruned_search_visits_every_dc_that_ties_the_best_score() -> None:
    """Twins (alike in price, power and utilisation, so in score) beyond the search's first batches: the
    bound of each equals its score less the rounding margin, so the search still visits them all and the
    nearest, listed last, wins; one twin left at a lower utilisation wins on its fill bonus, wherever listed."""
    from westflow.config import build_network
    coords = [(36.0 + i / 100, 104.0) for i in range(99)] + [(31.0, 111.0)]
    dcs = [{"id": f"dc{i:03d}", "name": f"DC {i}", "hub": "h", "region": "west", "lat": lat, "lon": lon,
            "pue": 1.2, "price_cny_kwh": 0.4, "ray_cluster": "c0", "cpus": 64, "memory_gb": 512,
            "accelerators": [{"family": "cuda", "model": "H20", "count": 64, "watts": 400}],
            "utilisation_baseline": 0.5} for i, (lat, lon) in enumerate(coords)]
    net = build_network({"ray_clusters": [{"name": "c0"}], "data_centers": dcs,
                         "transfer": [{"from": a, "to": b, "bandwidth_gbps": 10, "cost_cny_per_gb": 0.3}
                                      for a in ("east", "west") for b in ("east", "west")],
                         "cities": [{"id": "here", "name": "Here", "lat": 30.0, "lon": 110.0}]},
                        {"tiers": [{"name": "realtime", "max_rtt_ms": 20}, {"name": "batch", "max_rtt_ms": None}]},
                        {"fill_bonus": 0.15})
    spec = parse_spec({"name": "s", "tier": "batch", "origin": "here", "accelerator": "cuda:1"}, net)
    fast, full = WestflowPolicy(prune=True), WestflowPolicy(prune=False)
    cap = {dc.id: DCCapacity({"H20": 32}, 64, 512, 0.5) for dc in net.data_centers}
    assert fast.place(spec, net, cap).data_center == full.place(spec, net, cap).data_center == "dc099"
    cap["dc040"] = DCCapacity({"H20": 32}, 64, 512, 0.4999)
    assert _outcome(fast, spec, net, cap) == _outcome(full, spec, net, cap)
    assert fast.place(spec, net, cap).data_center == "dc040"
