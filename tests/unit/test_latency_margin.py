"""An honest latency margin: the tier guard band, measured overrides, sensitivity to route inflation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.builders import make_spec, national
from westflow.config import CONFIG_DIR, build_network, load_yaml
from westflow.errors import ConfigError
from westflow.inventory import BATCH, REALTIME, Network
from westflow.latency import DEFAULT_GUARD_BAND
from westflow.latency_margin import INFLATIONS, realtime_margin, rtt_at, sensitivity
from westflow.placement import get_policy
from westflow.placement.values import Reason


def _raw() -> tuple[dict[str, Any], dict[str, Any]]:
    return copy.deepcopy(load_yaml(CONFIG_DIR / "network.yaml")), copy.deepcopy(load_yaml(CONFIG_DIR / "tiers.yaml"))


def _with_guard(guard: float | None) -> Network:
    net, tiers = _raw()
    rt = next(t for t in tiers["tiers"] if t["name"] == REALTIME)
    rt.pop("guard_band_ms", None)
    if guard is not None:
        rt["guard_band_ms"] = guard
    return build_network(net, tiers)


def test_shipped_realtime_tier_keeps_ten_percent_headroom() -> None:
    rt = national().tiers[REALTIME]
    assert (rt.max_rtt_ms, rt.guard_band_ms, rt.limit_ms) == (20.0, 2.0, 18.0)
    assert national().tiers[BATCH].limit_ms is None


def test_guard_band_defaults_to_a_tenth_of_the_bound() -> None:
    assert DEFAULT_GUARD_BAND == 0.10
    assert _with_guard(None).tiers[REALTIME].limit_ms == pytest.approx(18.0)


@pytest.mark.parametrize("origin", ["shanghai", "hangzhou", "guangzhou", "wuhan"])
@pytest.mark.parametrize("accelerator", ["cuda:1", "any:1"])
def test_realtime_is_never_placed_inside_the_guard_band(origin: str, accelerator: str) -> None:
    # Without the guard band these went to zhangjiakou (19.2, 19.9 ms), tianfu (19.3) and zhongwei (18.1).
    p = get_policy("westflow").place(make_spec(tier="realtime", origin=origin, accelerator=accelerator), national())
    assert p.rtt_ms is not None and p.rtt_ms <= 18.0
    assert p.within_tier


def test_guard_band_zero_restores_the_bare_bound() -> None:
    p = get_policy("westflow").place(make_spec(tier="realtime", origin="shanghai", accelerator="cuda:1"),
                                     _with_guard(0))
    assert p.data_center == "zhangjiakou" and 19.0 < (p.rtt_ms or 0) <= 20.0


def test_latency_rejection_says_the_rtt_the_bound_and_the_guard_band() -> None:
    p = get_policy("westflow").place(make_spec(tier="realtime", origin="shanghai", accelerator="cuda:1"), national())
    latency = {r.data_center: r.detail for r in p.rejected if r.reason is Reason.LATENCY}
    assert latency["zhangjiakou"] == "RTT 19.2 ms to shanghai > 18 ms (20 ms bound less 2 ms guard band)"


def test_serves_realtime_keeps_the_guard_band() -> None:
    n = national()
    assert "shanghai" not in n.serves_realtime("zhangjiakou")  # 19.2 ms
    assert "shanghai" in _with_guard(0).serves_realtime("zhangjiakou")


def test_tier_admits_up_to_its_limit() -> None:
    rt = national().tiers[REALTIME]
    assert rt.admits(18.0) and not rt.admits(18.01) and national().tiers[BATCH].admits(1e6)


@pytest.mark.parametrize(
    ("tier", "guard", "field"),
    [(REALTIME, 20, "guard_band_ms"), (REALTIME, 25.5, "guard_band_ms"), (BATCH, 1, "guard_band_ms"),
     (REALTIME, -1, "guard_band_ms")],
    ids=["equal-to-bound", "above-bound", "on-unbounded-tier", "negative"],
)
def test_bad_guard_band_is_a_config_error(tier: str, guard: float, field: str) -> None:
    net, tiers = _raw()
    i, t = next((i, t) for i, t in enumerate(tiers["tiers"]) if t["name"] == tier)
    t["guard_band_ms"] = guard
    with pytest.raises(ConfigError) as exc:
        build_network(net, tiers)
    assert exc.value.field == f"tiers.{i}.{field}"
    assert exc.value.value == guard


def test_measured_rtt_inside_the_limit_makes_a_pair_eligible() -> None:
    net, tiers = _raw()
    net["latency"]["measured"] = [{"dc": "zhangjiakou", "city": "shanghai", "rtt_ms": 17.5}]
    n = build_network(net, tiers)
    assert n.latency.measured == frozenset({("zhangjiakou", "shanghai")})
    assert "shanghai" in n.serves_realtime("zhangjiakou")


def test_a_pair_measured_twice_is_a_config_error() -> None:
    net, tiers = _raw()
    net["latency"]["measured"] = [{"dc": "guian", "city": "beijing", "rtt_ms": 33.0},
                                  {"dc": "guian", "city": "beijing", "rtt_ms": 35.0}]
    with pytest.raises(ConfigError) as exc:
        build_network(net, tiers)
    assert exc.value.field == "latency.measured.1"
    assert "guian->beijing" in str(exc.value)


def test_the_latency_model_is_kept_on_the_network() -> None:
    lat = national().latency
    assert (lat.route_inflation, lat.equipment_overhead_ms, lat.measured) == (1.5, 1.0, frozenset())


def test_rtt_at_the_configured_inflation_is_the_matrix() -> None:
    n = national()
    for (dc, city), rtt in n.rtt_ms.items():
        assert rtt_at(n, dc, city, 1.5) == pytest.approx(rtt)


def test_sensitivity_lists_the_pairs_whose_eligibility_moves() -> None:
    rows = {(r.dc, r.city): r for r in sensitivity(national())}
    zs = rows[("zhangjiakou", "shanghai")]
    assert zs.inflations == INFLATIONS == (1.3, 1.5, 2.1)
    assert [round(x, 1) for x in zs.rtt_ms] == [16.8, 19.2, 26.5]
    assert zs.eligible == (True, False, False) and zs.changes and not zs.measured
    assert ("chongqing", "chongqing") not in rows  # 1 ms: eligible at any inflation
    assert ("zhongwei", "shanghai") not in rows  # never eligible
    every = sensitivity(national(), changing_only=False)
    assert len(every) == len(national().data_centers) * len(national().cities)
    assert all(r.changes for r in rows.values())


def test_a_measured_pair_does_not_move_with_the_inflation() -> None:
    net, tiers = _raw()
    net["latency"]["measured"] = [{"dc": "zhangjiakou", "city": "shanghai", "rtt_ms": 17.5}]
    n = build_network(net, tiers)
    assert ("zhangjiakou", "shanghai") not in {(r.dc, r.city) for r in sensitivity(n)}
    row = next(r for r in sensitivity(n, changing_only=False) if (r.dc, r.city) == ("zhangjiakou", "shanghai"))
    assert row.measured and row.rtt_ms == (17.5, 17.5, 17.5)


def test_a_tier_without_a_bound_is_insensitive() -> None:
    assert sensitivity(national(), BATCH) == ()


def test_realtime_margin_is_the_distribution_and_the_stress_count() -> None:
    n = national()
    placed = {("chongqing", "chongqing"): 6.0, ("helinger", "wuhan"): 3.0, ("zhangjiakou", "shanghai"): 1.0}
    m = realtime_margin(n, placed)
    assert m.total == 10.0 and (m.bound_ms, m.limit_ms) == (20.0, 18.0)
    assert {b.label: b.weight for b in m.bins} == {
        "<= 5 ms": 6.0, "5-10 ms": 0.0, "10-15 ms": 0.0, "15-18 ms": 3.0, "18-20 ms": 1.0, "> 20 ms": 0.0}
    assert m.p50_ms == pytest.approx(n.rtt("chongqing", "chongqing"))
    assert m.p95_ms == pytest.approx(n.rtt("zhangjiakou", "shanghai"))
    assert m.max_ms == pytest.approx(19.22, abs=0.01)
    assert m.in_guard_band == 1.0 and m.beyond_bound == 0.0
    assert m.stress_inflation == 2.1
    assert m.beyond_bound_at_stress == 4.0 and m.share_beyond_bound_at_stress == pytest.approx(0.4)
    assert m.stressed_pairs == (("helinger", "wuhan", 3.0), ("zhangjiakou", "shanghai", 1.0))


def test_realtime_margin_of_nothing_is_empty() -> None:
    m = realtime_margin(national(), {})
    assert m.total == 0.0 and m.p50_ms is None and m.max_ms is None and m.share_beyond_bound_at_stress == 0.0
    assert sum(b.weight for b in m.bins) == 0.0


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")], ids=["negative", "nan", "inf"])
def test_realtime_margin_rejects_bad_weights(weight: float) -> None:
    with pytest.raises(ValueError, match="chongqing->chongqing"):
        realtime_margin(national(), {("chongqing", "chongqing"): weight})
