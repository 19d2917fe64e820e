"""Hypothesis: malformed specs and configs give typed errors, never another exception."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import national
from westflow.config import CONFIG_DIR, build_network, load_yaml
from westflow.errors import ConfigError, InfeasibleError, SpecError
from westflow.placement import get_policy
from westflow.spec import SPEC_KEYS, parse_spec

VALID: dict[str, Any] = {"name": "fuzz", "tier": "batch", "origin": "beijing", "accelerator": "any:2",
                         "cpus": 4, "memory_gb": 8, "duration_hours": 1}
NET = load_yaml(CONFIG_DIR / "network.yaml")
TIERS = load_yaml(CONFIG_DIR / "tiers.yaml")

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)

# Values that are wrong for each spec field, whatever else the spec says.
BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from(["", " x", "a/b", "é" * 3]) | st.integers() | st.none(),
    "tier": st.text(min_size=1, max_size=8).filter(lambda t: t.lower() not in ("batch", "realtime")) | st.integers(),
    "origin": st.text(min_size=1, max_size=8).filter(lambda t: t.lower() not in national().city_ids) | st.integers(),
    "accelerator": st.sampled_from(["gpu", "H800", "cuda:-1", ":", "cpu:2", 7, [1]])
    | st.builds(lambda n: {"family": "cuda", "count": n}, st.integers(max_value=-1) | st.integers(min_value=5000)),
    "cpus": st.integers(max_value=0) | st.text(max_size=3) | st.just(float("inf")),
    "memory_gb": st.integers(max_value=-1) | st.just(float("nan")) | st.booleans(),
    "duration_hours": st.floats(max_value=0) | st.text(min_size=1, max_size=3),
    "priority": st.floats(allow_nan=False).filter(lambda f: not f.is_integer()) | st.text(max_size=2),
    "inputs": st.sampled_from([{"a": 1}, [{"name": "x"}], [{"name": "x", "region": "south", "size_gb": 1}], "x"]),
}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(BAD_VALUES)), data=st.data())
def test_malformed_spec_field_gives_spec_error_naming_it(field: str, data: st.DataObject) -> None:
    value = data.draw(BAD_VALUES[field])
    spec = {**VALID, field: value}
    try:
        parse_spec(spec, national())
    except SpecError as exc:
        assert exc.field.split(".")[0] == field
        assert field in str(exc)
    else:
        raise AssertionError(f"accepted bad {field}={value!r}")


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from([*SPEC_KEYS, "gpus", "zone"]), junk, max_size=8) | junk)
def test_any_input_is_placed_or_typed_error(raw: Any) -> None:
    try:
        spec = parse_spec(raw, national())
    except SpecError:
        return
    try:
        get_policy("westflow").place(spec, national())
    except InfeasibleError:
        pass


PATHS = [("data_centers", 0, "pue"), ("data_centers", 1, "cpus"), ("data_centers", 2, "accelerators", 0, "count"),
         ("data_centers", 3, "region"), ("cities", 0, "lat"), ("latency", "route_inflation"),
         ("transfer", 0, "bandwidth_gbps"), ("data_centers", 4, "ray_cluster"), ("data_centers", 5, "id")]


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A copy of network.yaml's data with the field at ``path`` set to ``value``."""
    net = copy.deepcopy(NET)
    node = net
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return net


@settings(max_examples=300)
@given(path=st.sampled_from(PATHS), value=junk)
def test_any_config_mutation_builds_or_gives_config_error(path: tuple[Any, ...], value: Any) -> None:
    try:
        build_network(_with(path, value), TIERS)
    except ConfigError as exc:
        assert exc.file == "network.yaml"


@settings(max_examples=100)
@given(path=st.sampled_from(PATHS[:3] + PATHS[5:7]),
       value=st.floats(max_value=-0.001) | st.text(min_size=1, max_size=4))
def test_negative_or_textual_numbers_are_config_errors(path: tuple[Any, ...], value: Any) -> None:
    try:
        build_network(_with(path, value), TIERS)
    except ConfigError as exc:
        assert exc.field == ".".join(map(str, path))
    else:
        raise AssertionError(f"accepted {path}={value!r}")
