"""Rendered KubeRay and cluster-launcher YAML parse back with every DC's tags."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ray_cluster.manifests import render_kuberay, render_launcher
from tests.builders import national
from westflow.tags import LABEL_DC, dc_resource


def test_kuberay_one_file_per_cluster_with_each_dc_tagged(tmp_path: Path) -> None:
    n = national()
    paths = render_kuberay(n, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"kuberay-{c}.yaml" for c in n.ray_clusters())
    seen = set()
    for path in paths:
        doc = yaml.safe_load(path.read_text())
        assert doc["kind"] == "RayCluster" and doc["apiVersion"] == "ray.io/v1"
        for g in doc["spec"]["workerGroupSpecs"]:
            params = g["rayStartParams"]
            res = json.loads(params["resources"].strip('"').replace('\\"', '"'))
            labels = dict(kv.split("=", 1) for kv in params["labels"].split(","))
            dc = labels[LABEL_DC]
            seen.add(dc)
            assert n.dc(dc).ray_cluster == path.stem.removeprefix("kuberay-")
            assert res[dc_resource(dc)] > 0 and res[f"region:{n.dc(dc).region.value}"] > 0
            assert g["template"]["metadata"]["labels"][LABEL_DC] == dc
            env = {e["name"] for e in g["template"]["spec"]["containers"][0]["env"]}
            assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "WESTFLOW_DC"} <= env
    assert seen == set(n.dc_ids)


def test_launcher_node_types_per_dc(tmp_path: Path) -> None:
    n = national()
    seen = set()
    for path in render_launcher(n, tmp_path):
        doc = yaml.safe_load(path.read_text())
        for name, t in doc["available_node_types"].items():
            if name == "head":
                continue
            dc = t["labels"][LABEL_DC]
            seen.add(dc)
            assert t["resources"][dc_resource(dc)] > 0
            pools = n.dc(dc).pools
            assert t["resources"].get("GPU", 0) or t["resources"].get("NPU", 0) or not pools
    assert seen == set(n.dc_ids)
