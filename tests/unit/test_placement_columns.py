"""The explanation over numpy columns is the full scan's, text for text and number for number.

Large networks explain a pruned decision with :func:`explain_dearer_columns` (the filter's
arithmetic and the one score over arrays); these tests hold it to the scalar explanation
(:func:`explain_dearer` of the full scan) on both inventories, under capacities with dead,
missing, full and over-target DCs, deadlines, data to move, CPU-only specs, NaN utilisation,
and snapshots that change a few DCs at a time (the columns are then updated, not rebuilt).
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import numpy as np
import pytest

from benchmarks.placement_bench import synthetic_network
from tests.builders import make_spec, national
from westflow.capacity import DCCapacity, static_capacity
from westflow.inventory import Network, PolicyWeights
from westflow.placement import Placement, place
from westflow.placement.explain import explain_dearer, explain_dearer_columns
from westflow.placement.filters import evaluate
from westflow.placement.score import score
from westflow.placement.tables import NetworkTables
from westflow.spec import WorkloadSpec, parse_spec
from westflow.tags import ray_request

ACCELS = ["cpu", "cuda:1", "cuda:8", "cann:4", "any:16", "any:2", "H800:8", "Ascend910B:2", "A800:60", "any:1",
          "cann:4000"]


def _spec(rng: random.Random, net: Network, i: int) -> WorkloadSpec:
    d: dict[str, Any] = {"name": f"s{i}", "tier": rng.choice(["batch", "realtime"]),
                         "origin": rng.choice(net.city_ids), "accelerator": rng.choice(ACCELS),
                         "cpus": rng.choice([1, 2, 16, 64]), "memory_gb": rng.choice([1, 64, 512]),
                         "duration_hours": rng.choice([0.1, 1, 5.5]),
                         "deadline_hours": rng.choice([None, None, 0.5, 2, 30])}
    if rng.random() < 0.5:
        d["inputs"] = [{"name": "x", "region": rng.choice(["east", "west"]), "size_gb": rng.choice([0, 500, 20000])}]
    return parse_spec(d, net)


def _dc_capacity(rng: random.Random, net: Network, dc_id: str) -> DCCapacity:
    dc = net.dc(dc_id)
    return DCCapacity({p.model: rng.choice([0, 1, 3, 8, 64, p.count]) for p in dc.pools},
                      rng.choice([0.0, 8.0, float(dc.cpus)]), rng.choice([4.0, float(dc.memory_gb)]),
                      rng.choice([0.0, 0.3, rng.random(), 0.95, 1.0, 1.5, math.nan]), alive=rng.random() > 0.05)


def _capacity(rng: random.Random, net: Network) -> dict[str, DCCapacity]:
    return {dc.id: _dc_capacity(rng, net, dc.id) for dc in net.data_centers if rng.random() > 0.03}


def _both(spec: WorkloadSpec, net: Network, caps: dict[str, DCCapacity],
          t: NetworkTables) -> tuple[Any, Any] | None:
    """(scalar explanation, columns explanation) of the full scan's westflow winner; None if infeasible."""
    bound = net.tiers[spec.tier].max_rtt_ms
    ev = evaluate(spec, net, caps, t, bound, weights=net.weights)
    if not ev.candidates:
        return None
    best = min(zip(ev.candidates, ev.scores, strict=True), key=lambda cs: (cs[1], cs[0].rtt_ms or 0.0))[0]
    scalar = explain_dearer(ev, best.index, caps, t, net.weights)
    return scalar, explain_dearer_columns(spec, net, caps, t, bound, best.index)


def _same(scalar: tuple[Any, ...], columns: tuple[Any, ...] | None) -> None:
    assert columns is not None
    assert [(type(r), r.data_center, r.reason, r.detail) for r in columns] == \
        [(type(r), r.data_center, r.reason, r.detail) for r in scalar]
    assert list(columns) == list(scalar)  # every number carried, exactly
    assert all(type(x) is float for r in columns if len(r) == 6 for x in r[2:4])  # Python floats, not numpy's


@pytest.mark.parametrize("which", ["national", "synthetic-1000"])
def test_columns_explain_as_the_full_scan(which: str) -> None:
    net = national() if which == "national" else synthetic_network(1000, seed=5)
    t = NetworkTables(net)
    rng = random.Random(7)
    checked = 0
    for i in range(150 if which == "national" else 60):
        caps = _capacity(rng, net) if i % 4 else dict(static_capacity(net))
        got = _both(_spec(rng, net, i), net, caps, t)
        if got is not None:
            _same(*got)
            checked += 1
    assert checked > 30


def test_columns_follow_a_snapshot_that_changes_a_few_dcs_at_a_time() -> None:
    net = synthetic_network(300, seed=3)
    t = NetworkTables(net)
    rng = random.Random(3)
    caps = _capacity(rng, net)
    first = t.capacity_columns(caps)
    assert t.capacity_columns(dict(caps)) is first  # the same DCCapacity objects: reused
    ids = [dc.id for dc in net.data_centers]
    fixed = [_spec(rng, net, 100 + k) for k in range(4)]
    requests = [(t.pool_columns(parse_spec({"name": "r", "accelerator": a}, net)), int(a.split(":")[1]))
                for a in ("any:2", "cuda:8", "cann:4", "H800:8")]
    for i in range(40):
        caps = dict(caps)
        for dc_id in rng.sample(ids, rng.choice([1, 2, 5])):
            caps[dc_id] = _dc_capacity(rng, net, dc_id)
        if i % 10 == 3:
            caps.pop(rng.choice(ids), None)  # a DC no longer seen
        cols = t.capacity_columns(caps)
        fresh = type(cols).of(cols.held, t.models)
        for name in ("alive", "free", "free_cpus", "free_memory_gb", "utilisation"):
            np.testing.assert_array_equal(getattr(cols, name), getattr(fresh, name))
        assert list(cols.utilisation_values) == list(fresh.utilisation_values)  # the snapshot's own objects
        for pools, count in requests:  # a request's fits, patched from the last columns' where they changed
            for a, b in zip(cols.fit(pools, count), fresh.fit(pools, count), strict=True):
                np.testing.assert_array_equal(a, b)
        for spec in [*fixed, _spec(rng, net, i)]:
            got = _both(spec, net, caps, t)
            if got is not None:
                _same(*got)


def test_score_on_arrays_is_the_score_on_each_float() -> None:
    rng = random.Random(1)
    w = PolicyWeights(fill_bonus=0.15, hour_value_cny=3.0)
    rows = [(rng.uniform(0, 50), rng.choice([0.0, 1.7]), rng.choice([0.0, 0.4]),
             rng.choice([0.0, 0.3, 0.65, 0.9, 1.2, math.nan, rng.random()]), rng.choice([0.65, 0.8]))
            for _ in range(500)]
    cols = [np.array(c, dtype=np.float64) for c in zip(*rows, strict=True)]
    arrays = score(cols[0], cols[1], cols[2], cols[3], cols[4], w).tolist()
    assert arrays == [score(e, tc, th, u, tgt, w) for e, tc, th, u, tgt in rows]


def test_the_ray_request_is_one_value_per_shape() -> None:
    dc = national().data_centers[0]
    kw: dict[str, Any] = {"family": dc.pools[0].family, "model": dc.pools[0].model, "count": 20,
                          "per_node": 8, "cpus": 4, "memory_gb": 64, "realtime_origin": "beijing"}
    a = ray_request(dc, **kw)
    assert ray_request(dc, **kw) is a
    assert a.as_dict()["bundles"] and a.resources[f"dc:{dc.id}"] == 0.001
    b = ray_request(dc, **{**kw, "realtime_origin": None})
    assert b is not a and "rt:beijing" not in b.resources and "rt:beijing" in a.resources


def test_placement_constructor_takes_the_fields_in_order() -> None:
    p = place(make_spec(accelerator="any:2"), national())
    names = [f.name for f in dataclasses.fields(Placement)]
    assert Placement(*(getattr(p, n) for n in names)) == p
    q = dataclasses.replace(p, policy="other")
    assert (q.policy, q.rejected, q.ray, q.score) == ("other", p.rejected, p.ray, p.score)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.policy = "x"  # type: ignore[misc]
