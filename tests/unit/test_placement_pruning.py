"""The pruned search of large networks decides exactly as the full scan does."""

from __future__ import annotations

import importlib.util
import random
from typing import Any

import pytest

from tests.conftest import ROOT
from westflow.capacity import DCCapacity
from westflow.errors import InfeasibleError
from westflow.inventory import Network
from westflow.placement import WestflowPolicy
from westflow.spec import parse_spec

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
        d: dict[str, Any] = {"name": f"s{i}", "tier": rng.choice(["batch", "realtime"]),
                             "origin": rng.choice(net.city_ids), "accelerator": rng.choice(ACCELS),
                             "cpus": rng.choice([1, 2, 16]), "memory_gb": rng.choice([1, 64]),
                             "duration_hours": rng.choice([0.1, 1, 5.5])}
        if rng.random() < 0.4:
            d["inputs"] = [{"name": "x", "region": rng.choice(["east", "west"]), "size_gb": rng.choice([0, 500])}]
        spec = parse_spec(d, net)
        cap = {dc.id: DCCapacity({p.model: rng.choice([0, 3, 8, 64]) for p in dc.pools}, dc.cpus, dc.memory_gb,
                                 rng.random(), alive=rng.random() > 0.05)
               for dc in net.data_centers}
        assert _outcome(fast, spec, net, cap) == _outcome(full, spec, net, cap), d


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
