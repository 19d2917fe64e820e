"""Time-of-use tariffs: the price at an instant and over a run, the cheapest start, the config schema,
and the one energy formula placement, its explanation and metering share."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.builders import national
from westflow.config import CONFIG_DIR, build_network, load_yaml
from westflow.energy import energy_cost_cny, energy_kwh, price_over
from westflow.errors import ConfigError
from westflow.tariffs import Band, Period, Tariff

CST = timezone(timedelta(hours=8))
H = 3600.0


def at(hour: float, day: int = 30) -> float:
    """Epoch seconds of 2026-11-``day`` ``hour``:00 in Asia/Shanghai."""
    return datetime(2026, 11, day, tzinfo=CST).timestamp() + hour * H


def simple() -> Tariff:
    """Valley 00-08 at 0.2, peak 08-20 at 0.8, flat 20-24 at 0.5."""
    return Tariff("t", (Period(0, 8 * H, Band.VALLEY, 0.2), Period(8 * H, 20 * H, Band.PEAK, 0.8),
                        Period(20 * H, 24 * H, Band.FLAT, 0.5)))


@pytest.mark.parametrize(("hour", "price", "band"), [(0, 0.2, Band.VALLEY), (7.99, 0.2, Band.VALLEY),
                                                     (8, 0.8, Band.PEAK), (19.5, 0.8, Band.PEAK),
                                                     (20, 0.5, Band.FLAT), (23.99, 0.5, Band.FLAT)],
                         ids=["midnight", "end-of-valley", "peak-starts", "peak", "flat-starts", "before-midnight"])
def test_price_at_reads_local_shanghai_hours(hour: float, price: float, band: Band) -> None:
    t = simple()
    assert t.price_at(at(hour)) == price
    assert t.period_at(at(hour)).band is band


def test_mean_price_integrates_over_bands_and_days() -> None:
    t = simple()
    assert t.mean_price(at(2), 4) == pytest.approx(0.2)
    assert t.mean_price(at(6), 4) == pytest.approx((2 * 0.2 + 2 * 0.8) / 4)  # across a band change
    assert t.mean_price(at(22), 4) == pytest.approx((2 * 0.5 + 2 * 0.2) / 4)  # across midnight
    assert t.mean_price(at(0), 48) == pytest.approx(t.daily_mean)  # whole days
    assert t.daily_mean == pytest.approx((8 * 0.2 + 12 * 0.8 + 4 * 0.5) / 24)
    assert t.mean_price(at(9), 0) == 0.8  # a run of no length: the price then


def test_cheapest_start_finds_the_valley_and_keeps_the_earliest_on_a_tie() -> None:
    t = simple()
    start, price = t.cheapest_start(at(10), at(10) + 20 * H, 3)
    assert start == at(24) and price == pytest.approx(0.2)  # the next valley's start
    assert t.cheapest_start(at(1), at(4), 2) == (at(1), pytest.approx(0.2))  # already cheapest: now
    start, _ = t.cheapest_start(at(10), at(17), 6)  # the run may end at the peak's end, not later
    assert start == at(17)
    assert t.cheapest_start(at(10), at(10), 3) == (at(10), pytest.approx(0.8))  # no room: the earliest


def test_a_tariff_must_cover_the_day() -> None:
    with pytest.raises(ValueError, match="midnight"):
        Tariff("t", (Period(0, 8 * H, Band.VALLEY, 0.2),))
    with pytest.raises(ValueError, match="cover the day"):
        Tariff("t", (Period(0, 8 * H, Band.VALLEY, 0.2), Period(9 * H, 24 * H, Band.PEAK, 0.8)))


def test_the_shipped_tariffs_keep_each_dc_s_flat_price_as_their_daily_mean() -> None:
    n = national()
    for dc in n.data_centers:
        assert dc.tariff is not None, dc.id
        assert dc.tariff.daily_mean == pytest.approx(dc.price_cny_kwh)
        assert {p.band for p in dc.tariff.periods} == {Band.PEAK, Band.FLAT, Band.VALLEY}


def test_one_energy_formula_for_floats_and_columns() -> None:
    import numpy as np

    assert energy_kwh(700.0 * 8, 10.0, 16, 2.0, 1.2) == (700.0 * 8 + 10.0 * 16) / 1000 * 2.0 * 1.2
    cols = energy_kwh(np.array([5600.0, 400.0]), np.array([10.0, 10.0]), 16, 2.0, np.array([1.2, 1.1]))
    assert cols.tolist() == [energy_kwh(5600.0, 10.0, 16, 2.0, 1.2), energy_kwh(400.0, 10.0, 16, 2.0, 1.1)]
    assert energy_cost_cny(10.0, 0.5) == 5.0  # no tariff: the flat price
    assert energy_cost_cny(10.0, 0.5, simple(), at(1), 2) == pytest.approx(2.0)
    assert price_over(0.5, simple(), None, 2) == 0.5  # no start known: the flat price


# -- the config schema ------------------------------------------------------------------------------


def _raw() -> tuple[Any, Any]:
    return load_yaml(CONFIG_DIR / "network.yaml"), load_yaml(CONFIG_DIR / "tiers.yaml")


def _build(edit: Any) -> None:
    net, tiers = _raw()
    net = copy.deepcopy(net)
    edit(net)
    build_network(net, tiers)


def _hours(net: Any, k: int) -> list[dict[str, Any]]:
    hours: list[dict[str, Any]] = copy.deepcopy(net["tariffs"][k]["hours"])
    net["tariffs"][k]["hours"] = hours
    return hours


@pytest.mark.parametrize(("edit", "field"), [
    (lambda n: n["tariffs"][0].update(colour="red"), "tariffs.0.colour"),
    (lambda n: n["tariffs"][0]["prices"].update(peak=-1.0), "tariffs.0.prices.peak"),
    (lambda n: n["tariffs"][0]["prices"].update(lunch=0.3), "tariffs.0.prices.lunch"),
    (lambda n: _hours(n, 0)[1].update({"from": "09:00"}), "tariffs.0.hours.1.from"),
    (lambda n: _hours(n, 0)[0].update({"to": "25:00"}), "tariffs.0.hours.0.to"),
    (lambda n: _hours(n, 0).pop(), "tariffs.0.hours"),
    (lambda n: n["tariffs"][0]["prices"].pop("valley"), "tariffs.0.hours.0.band"),
    (lambda n: n["data_centers"][0].update(tariff="atlantis"), "data_centers.0.tariff"),
    (lambda n: n["tariffs"][1].update(id=n["tariffs"][0]["id"]), "tariffs.1.id"),
    (lambda n: n["tariffs"][0].update(carbon_g_kwh=-5), "tariffs.0.carbon_g_kwh"),
], ids=["unknown-key", "negative-price", "unknown-band", "gap", "bad-hour", "short-day", "unpriced-band",
        "unknown-tariff", "duplicate-id", "negative-carbon"])
def test_bad_tariffs_are_config_errors_naming_the_field(edit: Any, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _build(edit)
    assert exc.value.field.startswith(field), str(exc.value)


def test_a_dc_without_a_tariff_pays_its_flat_price_and_carbon_is_optional() -> None:
    net, tiers = _raw()
    net = copy.deepcopy(net)
    net["data_centers"][0].pop("tariff")
    net["tariffs"][1]["carbon_g_kwh"] = 550.0
    n = build_network(net, tiers)
    assert n.data_centers[0].tariff is None
    assert n.data_centers[1].tariff is not None and n.data_centers[1].tariff.carbon_g_kwh == 550.0
