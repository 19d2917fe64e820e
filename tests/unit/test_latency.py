"""Latency model: physical floor, modelled RTT, measured overrides."""

from __future__ import annotations

import copy

import pytest

from tests.builders import national
from westflow.config import CONFIG_DIR, build_network, load_yaml
from westflow.errors import ConfigError
from westflow.latency import floor_ms, great_circle_km, modelled_ms


@pytest.mark.parametrize(
    ("dc", "city", "floor", "tol"),
    [("guian", "beijing", 17.6, 0.3), ("helinger", "beijing", 3.9, 0.3)],
    ids=["guian-beijing", "helinger-beijing"],
)
def test_physical_floor_matches_reference(dc: str, city: str, floor: float, tol: float) -> None:
    n = national()
    d, c = n.dc(dc), n.city(city)
    assert floor_ms(great_circle_km(d.lat, d.lon, c.lat, c.lon)) == pytest.approx(floor, abs=tol)


def test_modelled_rtt_is_above_the_floor_everywhere() -> None:
    n = national()
    for d in n.data_centers:
        for c in n.cities:
            km = great_circle_km(d.lat, d.lon, c.lat, c.lon)
            assert n.rtt(d.id, c.id) >= floor_ms(km)
            assert n.rtt(d.id, c.id) == pytest.approx(modelled_ms(km, 1.5, 1.0))


def test_realtime_eligibility_is_per_site_and_city_not_a_west_label() -> None:
    n = national()
    beijing = set(n.serves_realtime("helinger"))
    assert "beijing" in beijing and "shanghai" not in beijing
    assert "shanghai" not in n.serves_realtime("guian")
    assert "chengdu" in n.serves_realtime("guian")


def _raw() -> tuple[dict, dict]:
    return load_yaml(CONFIG_DIR / "network.yaml"), load_yaml(CONFIG_DIR / "tiers.yaml")


def test_measured_rtt_overrides_the_model() -> None:
    net, tiers = _raw()
    net = copy.deepcopy(net)
    net["latency"]["measured"] = [{"dc": "guian", "city": "beijing", "rtt_ms": 33.0}]
    assert build_network(net, tiers).rtt("guian", "beijing") == 33.0


def test_measured_rtt_below_the_floor_is_rejected() -> None:
    net, tiers = _raw()
    net = copy.deepcopy(net)
    net["latency"]["measured"] = [{"dc": "guian", "city": "beijing", "rtt_ms": 12.0}]
    with pytest.raises(ConfigError) as exc:
        build_network(net, tiers)
    assert exc.value.field == "latency.measured.0.rtt_ms"
    assert exc.value.value == 12.0
    assert "physical floor 17.5" in str(exc.value) or "physical floor 17.6" in str(exc.value)
