"""Tenants, quotas and the admission order (issue 14's first slice): configs/tenants.yaml and the pure parts."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from westflow.config import CONFIG_DIR, load_network
from westflow.errors import ConfigError
from westflow.tenants import Admission, Pending, admission_order, dominant_share, load_tenants, parse_tenants

MODELS = {p.model for d in load_network().data_centers for p in d.pools}
RAW: dict[str, Any] = yaml.safe_load((CONFIG_DIR / "tenants.yaml").read_text())


def test_the_shipped_tenants_load() -> None:
    t = load_tenants(CONFIG_DIR, models=MODELS)
    assert t.default_tenant == "default" and set(t.tenants) >= {"default", "recsys", "retail-ai"}
    recsys = t.tenant("recsys")
    assert recsys.weight == 2 and recsys.cohort == "national"
    assert recsys.regions["east"].accelerators == {"cuda": 2, "cann": 2}
    assert t.priority_classes["best-effort"].preemptible and not t.priority_classes["realtime"].preemptible
    assert {x.name for x in t.members("national")} == set(t.tenants)


def test_an_unknown_tenant_is_a_typed_error_naming_the_known_ones() -> None:
    t = load_tenants(CONFIG_DIR, models=MODELS)
    with pytest.raises(ConfigError) as exc:
        t.tenant("mallory")
    assert exc.value.field == "tenant" and "recsys" in str(exc.value)


def _broken(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(RAW)
    *parents, last = path.split(".")
    node: Any = data
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "field"), [
    ("tenants.1.weight", 0, "tenants.1.weight"),
    ("tenants.1.weight", math.nan, "tenants.1.weight"),
    ("tenants.1.cohort", "atlantis", "tenants.1.cohort"),
    ("tenants.1.priority_classes.0", "urgent", "tenants.1.priority_classes.0"),
    ("tenants.1.quota.accelerators", {"tpu": 4}, "tenants.1.quota.accelerators.tpu"),
    ("tenants.1.quota.accelerators", {"cuda": -1}, "tenants.1.quota.accelerators.cuda"),
    ("tenants.1.quota.cpus", "lots", "tenants.1.quota.cpus"),
    ("tenants.1.regions", {"north": {"cpus": 1}}, "tenants.1.regions.north"),
    ("tenants.1.colour", "red", "tenants.1.colour"),
    ("tenants.2.name", "recsys", "tenants.2.name"),
    ("priority_classes.1.name", "realtime", "priority_classes.1.name"),
    ("default_tenant", "nobody", "default_tenant"),
    ("tenants.1.quota", _DELETE, "tenants.1.quota"),
    ("admission.default_max_wait", "forever", "admission.default_max_wait"),
    ("admission.default_max_wait", "0s", "admission.default_max_wait"),
    ("admission.default_max_wait", "31d", "admission.default_max_wait"),
    ("admission.cycle_interval_s", 0, "admission.cycle_interval_s"),
    ("admission.stale_after_s", -1, "admission.stale_after_s"),
    ("admission.preemption_grace_s", "30s", "admission.preemption_grace_s"),
    ("admission.tick", 1, "admission.tick"),
], ids=["zero-weight", "nan-weight", "unknown-cohort", "unknown-priority", "unknown-accelerator",
        "negative-quota", "string-cpus", "unknown-region", "unknown-key", "duplicate-tenant", "duplicate-priority",
        "unknown-default", "no-quota", "wait-word", "wait-zero", "wait-over-30-days", "zero-interval",
        "negative-stale", "grace-string", "unknown-admission-key"])
def test_a_bad_tenants_file_names_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_tenants(_broken(path, value), models=MODELS, file="tenants.yaml")
    assert exc.value.field == field
    assert "tenants.yaml" in str(exc.value)


def test_the_admission_section_and_its_defaults() -> None:
    t = load_tenants(CONFIG_DIR, models=MODELS)
    assert t.admission == Admission(default_max_wait_s=3600.0, cycle_interval_s=1.0, stale_after_s=60.0,
                                    preemption_grace_s=30.0)
    data = copy.deepcopy(RAW)
    del data["admission"]
    assert parse_tenants(data, models=MODELS).admission == Admission()
    data["admission"] = {"default_max_wait": "30m", "cycle_interval_s": 2}
    got = parse_tenants(data, models=MODELS).admission
    assert (got.default_max_wait_s, got.cycle_interval_s, got.stale_after_s) == (1800.0, 2.0, 60.0)
    data["admission"] = {"default_max_wait": 90}
    assert parse_tenants(data, models=MODELS).admission.default_max_wait_s == 90.0


def test_check_names_an_unknown_tenant_or_a_class_the_tenant_may_not_use() -> None:
    t = load_tenants(CONFIG_DIR, models=MODELS)
    t.check("recsys", "realtime")
    with pytest.raises(ConfigError) as exc:
        t.check("mallory", "production")
    assert exc.value.field == "tenant" and exc.value.value == "mallory"
    with pytest.raises(ConfigError) as exc:
        t.check("retail-ai", "realtime")  # a class that exists, not allowed for this tenant
    assert exc.value.field == "priority_class" and "Not allowed" in str(exc.value)
    assert exc.value.allowed == ["production", "best-effort"]
    with pytest.raises(ConfigError) as exc:
        t.check("recsys", "gold")
    assert exc.value.field == "priority_class" and "Unknown" in str(exc.value)


def test_a_region_quota_limits_only_what_it_writes() -> None:
    data = _broken("tenants.1.regions", {"east": {"accelerators": {"cuda": 2}}})
    t = parse_tenants(data, models=MODELS).tenant("recsys")
    assert t.regions["east"].limits() == {"cuda": 2.0}
    assert t.quota.limits() == t.quota.dimensions()  # the network-wide quota written in full


def test_borrowing_needs_a_cohort() -> None:
    data = _broken("tenants.2.borrowing_limit", {"cpus": 4})
    del data["tenants"][2]["cohort"]
    with pytest.raises(ConfigError) as exc:
        parse_tenants(data, models=MODELS)
    assert exc.value.field == "tenants.2.borrowing_limit"


def test_hostile_tenants_file(tmp_path: Path) -> None:
    (tmp_path / "tenants.yaml").write_text("a: &a [1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                                          "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c]\n"
                                          * 1)
    with pytest.raises(ConfigError):
        load_tenants(tmp_path, models=MODELS)


def test_dominant_share_is_the_highest_use_over_quota_divided_by_weight() -> None:
    t = load_tenants(CONFIG_DIR, models=MODELS)
    recsys = t.tenant("recsys")  # cuda 8, cpus 32, weight 2
    assert dominant_share({}, recsys) == 0
    assert dominant_share({"cuda": 4, "cpus": 4}, recsys) == pytest.approx(0.5 / 2)
    assert dominant_share({"cuda": 1, "cpus": 32}, recsys) == pytest.approx(1.0 / 2)
    # use is charged to the family and the model; only what the quota names counts
    assert dominant_share({"cuda": 2, "H800": 2}, recsys) == pytest.approx(2 / 8 / 2)
    assert dominant_share({"H800": 64}, recsys) == 0
    zero = parse_tenants(_broken("tenants.1.quota.accelerators", {"cuda": 0, "cann": 8}), models=MODELS)
    assert dominant_share({"cuda": 1}, zero.tenant("recsys")) == math.inf  # a zero quota used: all borrowed


def test_admission_order_priority_then_fair_share_then_age() -> None:
    t = load_tenants(CONFIG_DIR, models=MODELS)
    usage = {"recsys": {"cuda": 4}, "retail-ai": {"cuda": 4}}  # recsys 4/8 over weight 2 = 0.25; retail 0.5
    pending = [
        Pending("retail-old", "retail-ai", "production", 1.0),
        Pending("recsys-new", "recsys", "production", 5.0),
        Pending("default-be", "default", "best-effort", 0.0),
        Pending("recsys-rt", "recsys", "realtime", 9.0),
        Pending("retail-new", "retail-ai", "production", 2.0),
    ]
    got = [p.key for p in admission_order(pending, usage, t)]
    assert got == ["recsys-rt", "recsys-new", "retail-old", "retail-new", "default-be"]
    # within a class and share, work with a deadline is due at its latest start, other work at its submission
    pending += [Pending("retail-due", "retail-ai", "production", 3.0, due_at=1.5),
                Pending("retail-slack", "retail-ai", "production", 0.5, due_at=99.0)]
    got = [p.key for p in admission_order(pending, usage, t)]
    assert got == ["recsys-rt", "recsys-new", "retail-old", "retail-due", "retail-new", "retail-slack", "default-be"]
