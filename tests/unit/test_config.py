"""Config loading: schema, cross-field checks, typed errors naming file, field and value."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from westflow.config import CONFIG_DIR, build_network, load_network, load_yaml
from westflow.errors import ConfigError
from westflow.inventory import Family, Region

NET = load_yaml(CONFIG_DIR / "network.yaml")
TIERS = load_yaml(CONFIG_DIR / "tiers.yaml")


def test_national_inventory_has_the_ten_clusters_and_eight_cities() -> None:
    n = load_network()
    assert set(n.dc_ids) == {"zhangjiakou", "yrd_demo", "wuhu", "shaoguan", "tianfu", "chongqing",
                             "helinger", "guian", "qingyang", "zhongwei"}
    assert {"beijing", "shanghai", "guangzhou", "shenzhen", "chengdu", "chongqing", "hangzhou",
            "wuhan"} <= set(n.city_ids)
    west = {d.id for d in n.data_centers if d.region is Region.WEST}
    assert west == {"helinger", "guian", "qingyang", "zhongwei"}
    for d in n.data_centers:
        assert d.pue <= (1.25 if d.region is Region.EAST else 1.2)
    # The hardware mix: CUDA-only work cannot go everywhere, nor Ascend-only work.
    assert any(Family.CUDA not in d.families for d in n.data_centers)
    assert any(Family.CANN not in d.families for d in n.data_centers)
    assert any(Family.CANN in d.families and d.region is Region.EAST for d in n.data_centers)
    assert any(Family.CANN in d.families and d.region is Region.WEST for d in n.data_centers)
    assert n.tiers["realtime"].max_rtt_ms == 20 and n.tiers["batch"].max_rtt_ms is None


def _mutate(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    net = copy.deepcopy(NET)
    fn(net)
    return net


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, Any]] = [
    ("unknown-key", lambda n: n["data_centers"][0].update(colour="red"), "data_centers.0.colour", "red"),
    ("duplicate-dc", lambda n: n["data_centers"].append(copy.deepcopy(n["data_centers"][0])),
     "data_centers.10.id", "zhangjiakou"),
    ("duplicate-city", lambda n: n["cities"].append(copy.deepcopy(n["cities"][0])), "cities.10.id", "beijing"),
    ("unknown-cluster", lambda n: n["data_centers"][1].update(ray_cluster="mars"),
     "data_centers.1.ray_cluster", "mars"),
    ("unknown-measured-city", lambda n: n["latency"].update(measured=[{"dc": "guian", "city": "paris", "rtt_ms": 50}]),
     "latency.measured.0.city", "paris"),
    ("unknown-measured-dc", lambda n: n["latency"].update(measured=[{"dc": "mars", "city": "beijing", "rtt_ms": 50}]),
     "latency.measured.0.dc", "mars"),
    ("negative-count", lambda n: n["data_centers"][0]["accelerators"][0].update(count=-8),
     "data_centers.0.accelerators.0.count", -8),
    ("pue-below-one", lambda n: n["data_centers"][2].update(pue=0.9), "data_centers.2.pue", 0.9),
    ("bad-family", lambda n: n["data_centers"][0]["accelerators"][0].update(family="rocm"),
     "data_centers.0.accelerators.0.family", "rocm"),
    ("negative-cpus", lambda n: n["data_centers"][3].update(cpus=-1), "data_centers.3.cpus", -1),
    ("missing-region", lambda n: n["data_centers"][4].pop("region"), "data_centers.4.region", None),
]


@pytest.mark.parametrize(("mutate", "field", "value"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_names_file_field_and_value(
    mutate: Callable[[dict[str, Any]], None], field: str, value: Any
) -> None:
    with pytest.raises(ConfigError) as exc:
        build_network(_mutate(mutate), TIERS)
    assert exc.value.field == field
    assert exc.value.value == value
    assert exc.value.file == "network.yaml"
    assert field in str(exc.value)


def test_tiers_must_name_batch_and_realtime() -> None:
    with pytest.raises(ConfigError) as exc:
        build_network(NET, {"tiers": [{"name": "gold", "max_rtt_ms": 5}]})
    assert exc.value.file == "tiers.yaml"


def test_extra_tier_from_config_is_usable() -> None:
    tiers = copy.deepcopy(TIERS)
    tiers["tiers"].append({"name": "interactive", "max_rtt_ms": 10})
    n = build_network(NET, tiers)
    assert n.tiers["interactive"].max_rtt_ms == 10


def test_unreadable_and_non_yaml_files(tmp_path: Any) -> None:
    (tmp_path / "network.yaml").write_text("data_centers: [unclosed")
    (tmp_path / "tiers.yaml").write_text("tiers: []")
    with pytest.raises(ConfigError) as exc:
        load_network(tmp_path)
    assert exc.value.field == "<yaml>"
    with pytest.raises(ConfigError):
        load_network(tmp_path / "missing")
