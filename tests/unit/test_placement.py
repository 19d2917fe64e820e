"""Placement: tiers, accelerator families, capacity, cost, every rejection explained."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from tests.builders import make_spec, national
from westflow.capacity import static_capacity
from westflow.errors import InfeasibleError
from westflow.inventory import Family, Region
from westflow.placement import POLICY_NAMES, Reason, get_policy
from westflow.tags import rt_resource

ACCELS = ["cpu", "cuda:1", "cann:1", "any:1", "any:8", "H20:2"]


@pytest.mark.parametrize("policy", [p for p in POLICY_NAMES if p != "cheapest"])
@pytest.mark.parametrize("accel", ACCELS)
def test_realtime_from_beijing_never_beyond_20ms(policy: str, accel: str) -> None:
    n = national()
    pol = get_policy(policy, seed=7)
    for _ in range(20):  # round-robin and random visit several DCs
        p = pol.place(make_spec(tier="realtime", origin="beijing", accelerator=accel), n)
        assert p.rtt_ms is not None and p.rtt_ms <= 20.0
        assert p.within_tier
        assert p.ray.resources[rt_resource("beijing")] > 0


def test_cheapest_baseline_honestly_breaks_the_tier() -> None:
    n = national()
    p = get_policy("cheapest").place(make_spec(tier="realtime", origin="shanghai", accelerator="cuda:1"), n)
    assert p.rtt_ms is not None and p.rtt_ms > 20.0
    assert not p.within_tier


def test_realtime_rejections_name_the_latency() -> None:
    p = get_policy("westflow").place(make_spec(tier="realtime", origin="shanghai", accelerator="cuda:1"), national())
    latency = {r.data_center: r.detail for r in p.rejected if r.reason is Reason.LATENCY}
    assert "guian" in latency and "> 18 ms (20 ms bound less 2 ms guard band)" in latency["guian"]
    assert p.data_center not in latency


def test_batch_any_goes_west_under_westflow() -> None:
    n = national()
    for accel in ["any:1", "any:8", "any:32", "cpu"]:
        p = get_policy("westflow").place(make_spec(accelerator=accel, origin="shanghai"), n)
        assert p.region == Region.WEST.value, accel


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_family_is_respected(policy: str) -> None:
    n = national()
    pol = get_policy(policy, seed=3)
    for fam in ["cuda", "cann"]:
        for _ in range(15):
            p = pol.place(make_spec(accelerator=f"{fam}:4"), n)
            assert Family(fam) in n.dc(p.data_center).families
            assert p.family is Family(fam)
            rejected = {r.data_center: r.reason for r in p.rejected}
            for d in n.data_centers:
                if Family(fam) not in d.families:
                    assert rejected[d.id] is Reason.ACCELERATOR


def test_every_other_dc_has_a_reason() -> None:
    n = national()
    p = get_policy("westflow").place(make_spec(accelerator="cuda:8", origin="beijing"), n)
    assert sorted([r.data_center for r in p.rejected] + [p.data_center]) == sorted(n.dc_ids)


def test_energy_and_cost_formula() -> None:
    n = national()
    spec = make_spec(accelerator="H20:4", cpus=10, duration_hours=2)
    p = get_policy("westflow").place(spec, n)
    dc = n.dc(p.data_center)
    pool = next(x for x in dc.pools if x.model == p.accelerator_model)
    kwh = (pool.watts * 4 + dc.cpu_watts * 10) / 1000 * 2 * dc.pue
    assert p.energy_kwh == pytest.approx(kwh)
    assert p.cost_cny == pytest.approx(kwh * dc.price_cny_kwh)


def test_full_dc_sends_work_to_the_next_eligible_one() -> None:
    n = national()
    spec = make_spec(accelerator="H20:8")
    first = get_policy("westflow").place(spec, n)
    caps = dict(static_capacity(n))
    caps[first.data_center] = replace(caps[first.data_center], free={first.accelerator_model or "": 0})
    second = get_policy("westflow").place(spec, n, caps)
    assert second.data_center != first.data_center
    reasons = {r.data_center: r.reason for r in second.rejected}
    assert reasons[first.data_center] is Reason.CAPACITY


def test_dead_dc_is_not_offered() -> None:
    n = national()
    spec = make_spec(accelerator="any:1")
    first = get_policy("westflow").place(spec, n)
    caps = {k: v for k, v in static_capacity(n).items() if k != first.data_center}
    second = get_policy("westflow").place(spec, n, caps)
    assert second.data_center != first.data_center
    assert {r.data_center: r.reason for r in second.rejected}[first.data_center] is Reason.UNAVAILABLE


def test_impossible_spec_raises_with_every_dc_reason() -> None:
    n = national()
    spec = make_spec(tier="realtime", origin="shanghai", accelerator="cann:4000")
    with pytest.raises(InfeasibleError) as exc:
        get_policy("westflow").place(spec, n)
    assert exc.value.spec == spec
    assert sorted(r.data_center for r in exc.value.rejected) == sorted(n.dc_ids)
    assert {r.reason for r in exc.value.rejected} <= {Reason.LATENCY, Reason.ACCELERATOR, Reason.CAPACITY}


def test_gang_spec_gets_bundles_pinned_to_one_dc() -> None:
    p = get_policy("westflow").place(make_spec(accelerator="cann:20"), national())
    assert len(p.ray.bundles) == 3
    assert all(b[f"dc:{p.data_center}"] > 0 for b in p.ray.bundles)
    assert sum(b.get("NPU", 0) for b in p.ray.bundles) == 20


def test_round_robin_cycles_and_random_is_seeded() -> None:
    n = national()
    rr = get_policy("round-robin")
    seen = {rr.place(make_spec(accelerator="any:1"), n).data_center for _ in range(12)}
    assert len(seen) >= 5
    a = [get_policy("random", seed=5).place(make_spec(), n).data_center for _ in range(1)]
    b = [get_policy("random", seed=5).place(make_spec(), n).data_center for _ in range(1)]
    assert a == b
    r = get_policy("random", seed=9)
    assert len({r.place(make_spec(), n).data_center for _ in itertools.repeat(None, 30)}) > 1


def test_east_first_picks_the_nearest_eastern_dc() -> None:
    p = get_policy("east-first").place(make_spec(accelerator="cuda:1", origin="guangzhou"), national())
    assert p.data_center == "shaoguan"
