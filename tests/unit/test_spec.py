"""WorkloadSpec: loose forms at the edge, one canonical form, typed errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import make_spec, national
from westflow.errors import SpecError
from westflow.inventory import Family, Region
from westflow.spec import AcceleratorRequest, load_spec, parse_spec


@pytest.mark.parametrize(
    ("loose", "canonical"),
    [
        ("H800:8", AcceleratorRequest(Family.CUDA, 8, "H800")),
        ("Ascend910B:4", AcceleratorRequest(Family.CANN, 4, "Ascend910B")),
        ("cann:4", AcceleratorRequest(Family.CANN, 4)),
        ({"cann": 4}, AcceleratorRequest(Family.CANN, 4)),
        ({"H20": 2}, AcceleratorRequest(Family.CUDA, 2, "H20")),
        ({"family": "any", "count": 8}, AcceleratorRequest(Family.ANY, 8)),
        ("cpu", AcceleratorRequest()),
        (None, AcceleratorRequest()),
    ],
    ids=["model-str", "ascend-model", "family-str", "family-dict", "model-dict", "full", "cpu", "absent"],
)
def test_loose_accelerator_forms_become_canonical(loose: Any, canonical: AcceleratorRequest) -> None:
    assert make_spec(accelerator=loose).accelerator == canonical


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"tier": "gold"}, "tier"),
        ({"origin": "paris"}, "origin"),
        ({"tier": "realtime"}, "origin"),
        ({"accelerator": {"family": "rocm", "count": 1}}, "accelerator.family"),
        ({"accelerator": {"family": "cuda", "count": -1}}, "accelerator.count"),
        ({"accelerator": {"family": "cpu", "count": 2}}, "accelerator.count"),
        ({"accelerator": "H800:x"}, "accelerator"),
        ({"cpus": 0}, "cpus"),
        ({"duration_hours": "long"}, "duration_hours"),
        ({"memory_gb": float("nan")}, "memory_gb"),
        ({"gpus": 3}, "gpus"),
        ({"name": "bad name!"}, "name"),
        ({"inputs": [{"name": "d", "region": "north", "size_gb": 1}]}, "inputs.0.region"),
    ],
    ids=["tier", "origin", "realtime-no-origin", "family", "neg-count", "cpu-count", "bad-str", "cpus",
         "duration-type", "nan", "unknown-key", "name", "input-region"],
)
def test_bad_spec_gives_typed_error_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec({"name": "s", "accelerator": "cpu", **overrides}, national())
    assert exc.value.field == field
    assert field in str(exc.value)


def test_unknown_tier_lists_the_allowed_ones() -> None:
    with pytest.raises(SpecError, match=r"Unknown tier 'gold'; must be one of: batch, realtime"):
        parse_spec({"name": "s", "tier": "gold"}, national())


def test_spec_is_frozen_and_copy_validates() -> None:
    spec = make_spec()
    with pytest.raises(AttributeError):
        spec.cpus = 4  # type: ignore[misc]
    assert spec.copy(cpus=8).cpus == 8
    with pytest.raises(SpecError):
        spec.copy(cpus=-1)


def test_inputs_are_parsed_with_region_and_size() -> None:
    spec = make_spec(inputs=[{"name": "clicks", "region": "east", "size_gb": 2.5}])
    assert spec.inputs[0].region is Region.EAST
    assert spec.inputs[0].size_bytes == 2_500_000_000


def test_load_spec_names_the_file(tmp_path: Any) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("name: s\ntier: gold\n")
    with pytest.raises(SpecError) as exc:
        load_spec(p, national())
    assert str(p) in str(exc.value) and exc.value.field == "tier"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"origin": "paris"}, "Unknown origin 'paris'; must be one of: beijing, shanghai"),
        ({"cpus": 0}, "Out of range cpus 0; must be > 0 and <= 4096."),
        ({"memory_gb": float("inf")}, "Invalid memory_gb inf; must be a finite number."),
        ({"duration_hours": "long"}, "Invalid duration_hours 'long'; must be a number."),
        ({"cpus": True}, "Invalid cpus True; must be a number."),
        ({"priority": 2.5}, "Invalid priority 2.5; must be a whole number."),
        ({"priority": 2000.0}, "Out of range priority 2000; must be >= -1000 and <= 1000."),
        ({"priority": "1"}, "Invalid priority '1'; must be an integer."),
        ({"tier": "realtime"}, "Missing origin None; must be a city id when tier is realtime. To fix: say where"),
        ({"accelerator": {"family": "cpu", "count": 2}},
         "Invalid accelerator.count 2; must be 0 when family is cpu. To fix: ask for family cuda, cann or any"),
        ({"accelerator": {"family": "cuda", "count": 0}},
         "Invalid accelerator.count 0; must be >= 1 when family is cuda. To fix: use family cpu"),
        ({"accelerator": {"family": "cpu", "model": "H800"}},
         "Invalid accelerator.model 'H800'; must be absent when family is cpu."),
        ({"accelerator": {"family": "cuda", "count": 5000}},
         "Out of range accelerator.count 5000; must be >= 0 and <= 4096."),
        ({"gpus": 3}, "Unknown key gpus 3; must be one of: name, tenant, tier, origin, accelerator, cpus"),
        ({"tenant": "a/b"}, "Invalid tenant 'a/b'; must be 1-63 characters of letters, digits, '_', '-', '.'."),
        ({"inputs": [{"name": "d", "region": "east"}]}, "Invalid inputs.0.size_gb None; must be a number."),
        ({"inputs": [{"name": "d", "region": "east", "size_gb": 1, "zone": 2}]},
         "Unknown key in inputs.0.zone {'name': 'd', 'region': 'east', 'size_gb': 1, 'zone': 2}; must be one of: "
         "name, region, size_gb, size_bytes, bucket."),
        ({"inputs": [{"region": "east", "size_gb": 1}]}, "Invalid inputs.0.name None; must be a dataset name."),
        ({"inputs": [{"name": "d", "region": "east", "size_bytes": -1}]},
         "Out of range inputs.0.size_bytes -1; must be >= 0 and <= 1e+18."),
    ],
)
def test_messages_name_field_value_and_what_is_allowed(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec({"name": "s", "accelerator": "cpu", **overrides}, national(), source="s.yaml")
    assert str(exc.value).startswith("s.yaml: " + message)


def test_specs_are_values_hashable_and_canonical() -> None:
    a, b = make_spec(accelerator={"count": 2.0}), make_spec(accelerator="any:2")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.accelerator.count == 2 and isinstance(a.accelerator.count, int) and str(a.accelerator) == "any:2"
    with pytest.raises(AttributeError):
        a.accelerator.count = 3  # type: ignore[misc]
    with pytest.raises(SpecError, match="Unknown key gpus 1"):
        a.copy(gpus=1)


def test_names_end_at_their_last_character() -> None:
    with pytest.raises(SpecError) as exc:
        make_spec(name="step\n")
    assert exc.value.field == "name"


@pytest.mark.parametrize(("written", "seconds"), [
    (90, 90.0), (0.5, 0.5), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), (" 1.5h ", 5400.0), ("30d", 2592000.0),
    (None, None),
], ids=["int", "float", "s", "m", "h", "spaces", "30-days", "absent"])
def test_max_wait_takes_seconds_or_a_duration(written: Any, seconds: float | None) -> None:
    spec = make_spec(max_wait=written)
    assert spec.max_wait == seconds and spec.max_wait_s == seconds


@pytest.mark.parametrize(("written", "problem"), [
    ("0s", "Out of range"), (0, "Out of range"), (-5, "Out of range"), ("31d", "Out of range"),
    (float("nan"), "Out of range"), (float("inf"), "Out of range"), ("٣m", "Invalid"), ("2 hours", "Invalid"),
    ("90", "Invalid"), (True, "Invalid"), ([1], "Invalid"),
], ids=["zero-str", "zero", "negative", "over-30-days", "nan", "inf", "non-ascii-digit", "word-unit", "no-unit",
        "bool", "list"])
def test_bad_max_wait_names_field_value_and_allowed(written: Any, problem: str) -> None:
    with pytest.raises(SpecError) as exc:
        make_spec(max_wait=written)
    assert exc.value.field == "max_wait"
    assert exc.value.value is written  # the value as written, quoted back
    assert str(exc.value).startswith(f"{problem} max_wait")
    assert "30m" in str(exc.value) or "2592000" in str(exc.value)


def test_priority_class_is_a_name_checked_later_not_here() -> None:
    assert make_spec().priority_class is None
    assert make_spec(priority_class="no-such-class").priority_class == "no-such-class"  # tenants.yaml decides
    with pytest.raises(SpecError) as exc:
        make_spec(priority_class="not a name")
    assert exc.value.field == "priority_class"


def test_the_admission_fields_do_not_change_placement() -> None:
    from westflow.placement import place

    base = place(make_spec(accelerator="any:8"), national())
    other = place(make_spec(accelerator="any:8", max_wait="2h", priority_class="best-effort"), national())
    assert (other.data_center, other.score, other.rejected) == (base.data_center, base.score, base.rejected)
