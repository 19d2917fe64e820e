"""Live services, the pure parts: the service spec, placement per city, keys, the replica's answer."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs.artifacts import model_version, save_model
from jobs.endpoint import ModelEndpoint, check_key
from jobs.memstore import memory_stores
from jobs.model import ModelConfig, init_params
from ray_cluster import api_keys
from ray_cluster.serve_api import serve_config
from westflow.capacity import static_capacity
from westflow.config import load_network
from westflow.errors import ClusterError, SpecError
from westflow.service import load_service, parse_service, plan_city, plan_service

NET = load_network()
BASE: dict[str, Any] = {"name": "recs", "tenant": "shop", "cities": ["shanghai", "chengdu"], "model": "clf",
                        "accelerator": "any:1", "cpus": 1, "memory_gb": 2, "min_replicas": 1, "max_replicas": 4}


@pytest.mark.parametrize(("change", "field"), [
    ({"colour": "red"}, "colour"),
    ({"cities": []}, "cities"),
    ({"cities": ["shanghai", "paris"]}, "cities[1]"),
    ({"cities": ["shanghai", "shanghai"]}, "cities"),
    ({"min_replicas": 0}, "min_replicas"),
    ({"min_replicas": True}, "min_replicas"),
    ({"min_replicas": 3, "max_replicas": 2}, "max_replicas"),
    ({"max_replicas": 10**6}, "max_replicas"),
    ({"model": "clf/../x"}, "model"),
    ({"model": "clf٣"}, "model"),
    ({"accelerator": {"family": "tpu", "count": 1}}, "accelerator.family"),
    ({"cpus": float("nan")}, "cpus"),
    ({"target_ongoing_requests": 0}, "target_ongoing_requests"),
], ids=["unknown-key", "no-city", "unknown-city", "duplicate-city", "zero-min", "bool-min", "min-over-max",
        "huge-max", "model-path", "model-non-ascii", "accelerator", "nan-cpus", "zero-target"])
def test_bad_service_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_service({**BASE, **change}, NET)
    assert exc.value.field == field


def test_missing_name_and_file_source(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        parse_service({k: v for k, v in BASE.items() if k != "name"}, NET)
    assert exc.value.field == "name"
    f = tmp_path / "svc.yaml"
    f.write_text("name: recs\ncities: [shanghai]\nmodel: clf\nmin_replicas: -1\n")
    with pytest.raises(SpecError) as exc:
        load_service(f, NET)
    assert exc.value.field == "min_replicas" and str(f) in str(exc.value)
    f.write_text("a: &a [1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]\n")
    with pytest.raises(SpecError):
        load_service(f, NET)


def test_each_city_is_placed_within_its_own_bound() -> None:
    spec = parse_service(BASE, NET)
    plans = plan_service(spec, NET, static_capacity(NET))
    assert set(plans) == {"shanghai", "chengdu"}
    for city, plan in plans.items():
        assert plan.placement is not None and not plan.degraded
        assert NET.rtt(plan.placement.data_center, city) <= 20.0
        req = plan.replica_request
        assert req is not None and req.resources[f"dc:{plan.placement.data_center}"] > 0
        assert req.resources[f"rt:{city}"] > 0 and req.num_cpus == 1
    assert plans["shanghai"].placement.data_center != plans["chengdu"].placement.data_center  # type: ignore[union-attr]


def test_replicas_grow_only_as_far_as_the_dc_has_room() -> None:
    spec = parse_service({**BASE, "cities": ["shanghai"], "accelerator": "cpu", "cpus": 2, "memory_gb": 0,
                          "max_replicas": 64}, NET)
    caps = static_capacity(NET)
    first = plan_city(spec, "shanghai", NET, caps)
    assert first.placement is not None
    dc = first.placement.data_center
    caps = {**caps, dc: replace(caps[dc], free_cpus=7.0)}
    plan = plan_city(spec, "shanghai", NET, {d: c for d, c in caps.items()})
    if plan.placement is not None and plan.placement.data_center == dc:
        assert plan.max_replicas == 3  # 7 free CPUs hold three 2-CPU replicas
    assert plan.min_replicas == 1


def test_min_replicas_must_fit_now() -> None:
    spec = parse_service({**BASE, "cities": ["shanghai"], "accelerator": "cpu", "cpus": 2, "memory_gb": 0,
                          "min_replicas": 3, "max_replicas": 3}, NET)
    caps = {d: replace(c, free_cpus=5.0) for d, c in static_capacity(NET).items()}
    plan = plan_city(spec, "shanghai", NET, caps)
    assert plan.degraded
    assert "capacity" in plan.reasons()


def test_a_lost_dc_is_left_and_a_city_without_another_is_degraded() -> None:
    spec = parse_service({**BASE, "cities": ["shanghai"]}, NET)
    caps = static_capacity(NET)
    first = plan_city(spec, "shanghai", NET, caps)
    assert first.placement is not None
    moved = plan_city(spec, "shanghai", NET, caps, exclude=[first.placement.data_center])
    assert moved.placement is not None and moved.placement.data_center != first.placement.data_center
    within = [d for d in NET.dc_ids if NET.rtt(d, "shanghai") <= 20.0]
    gone = plan_city(spec, "shanghai", NET, caps, exclude=within)
    assert gone.degraded and gone.placement is None
    reasons = dict(line.split(": ", 1) for line in gone.reasons().splitlines())
    assert set(reasons) == set(NET.dc_ids)
    for d in within:
        assert reasons[d].startswith("unavailable")
    assert all(reasons[d].startswith(("latency", "accelerator")) for d in NET.dc_ids if d not in within)


@pytest.mark.parametrize(("header", "status"), [
    (None, 401), ("", 401), ("Basic abc", 401), ("Bearer nope", 401), ("Bearer k-other", 403),
    ("Bearer k-shop", 200), ("Bearer  k-shop ", 200)])
def test_check_key(header: str | None, status: int) -> None:
    keys = {api_keys.key_digest("k-shop"): "shop", api_keys.key_digest("k-other"): "other"}
    assert check_key(header, keys, "shop") == status


def test_keys_are_private_and_only_digests_leave(tmp_path: Path) -> None:
    key = api_keys.key_of(tmp_path, "shop")
    assert api_keys.key_of(tmp_path, "shop") == key  # the same key until another is issued
    path = tmp_path / api_keys.KEYS_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    second = api_keys.issue(tmp_path, "shop")
    assert path.stat().st_mode & 0o777 == 0o600 and second != key
    got = api_keys.digests(tmp_path)
    assert got == {api_keys.key_digest(key): "shop", api_keys.key_digest(second): "shop"}
    assert key not in json.dumps(got)
    with pytest.raises(SpecError):
        api_keys.issue(tmp_path, "../etc")


def test_serve_config_binds_the_ingress_it_is_given() -> None:
    cfg = serve_config([{"name": "a"}], "http://127.0.0.1:8001")
    assert cfg["http_options"] == {"host": "127.0.0.1", "port": 8001} and cfg["proxy_location"] == "HeadOnly"
    assert cfg["applications"] == [{"name": "a"}]
    with pytest.raises(ClusterError):
        serve_config([], "127.0.0.1:8001")
    k8s = serve_config([], "http://westflow-west-head-svc.westflow.svc.cluster.local:8000")
    assert k8s["http_options"] == {"port": 8000}  # Serve's own default host inside the pod


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> tuple[ModelEndpoint, str]:
    monkeypatch.setenv("WESTFLOW_REGION", "east")
    stores = memory_stores()
    cfg = ModelConfig(n_features=4, n_classes=3, hidden=8)
    arrays = {**init_params(cfg, 1), "mu": np.zeros(4, np.float32), "sigma": np.ones(4, np.float32)}
    save_model(stores, "east", "clf", 1, arrays, {"model": {"n_features": 4, "n_classes": 3, "hidden": 8},
                                                  "features": ["a", "b", "c", "d"]})
    ep = ModelEndpoint("clf", "shop", "shanghai", stores=stores)
    version = model_version(arrays)
    ep.reconfigure({"model_version": version, "keys": {api_keys.key_digest("k"): "shop",
                                                       api_keys.key_digest("x"): "rival"}})
    return ep, version


def test_the_replica_scores_only_with_the_tenants_key(endpoint: tuple[ModelEndpoint, str]) -> None:
    ep, version = endpoint
    body = json.dumps({"features": [0.1, 0.2, 0.3, 0.4]}).encode()
    assert ep.answer(None, body)[0] == 401
    assert ep.answer("Bearer x", body)[0] == 403
    assert ep.scored == 0  # refused requests cost no model call
    status, out = ep.answer("Bearer k", body)
    assert status == 200 and out["model_version"] == version and len(out["probabilities"]) == 3
    assert ep.scored == 1
    assert ep.answer("Bearer k", b"not json")[0] == 400
    assert ep.answer("Bearer k", json.dumps({"features": [1.0]}).encode())[0] == 400
    assert ep.scored == 1


def test_the_replica_refuses_a_model_version_s3_does_not_hold(endpoint: tuple[ModelEndpoint, str]) -> None:
    ep, version = endpoint
    ep.reconfigure({"model_version": version, "keys": {}})  # same version: nothing reloaded
    with pytest.raises(RuntimeError, match="not the 000000000000"):
        ep.reconfigure({"model_version": "000000000000", "keys": {}})
    assert ep.version == version  # still serving the model it had
