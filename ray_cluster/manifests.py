"""Production manifests: the inventory rendered per named Ray cluster.

- KubeRay ``RayCluster`` (``ray.io/v1``): a CPU-only head group and one worker
  group per data center (one per accelerator pool where a DC has several),
  each node's resources and labels in ``rayStartParams`` (``resources``,
  ``labels``) and its labels on the pod too.
- Ray cluster launcher YAML: ``available_node_types``, one per DC (per pool),
  with ``resources`` and ``labels``; the provider block is the operator's.

Every tag comes from :mod:`westflow.tags`. Token auth: every pod reads
``RAY_AUTH_TOKEN`` from the Secret ``westflow-ray-token`` (key ``token``) and
sets ``RAY_AUTH_MODE=token``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from westflow.inventory import AcceleratorPool, DataCenter, Family, Network
from westflow.tags import ENV_DC, LABEL_DC, NodeTags, node_tags

__all__ = ["RAY_VERSION", "IMAGE", "TOKEN_SECRET", "NodeGroup", "node_groups", "kuberay_cluster",
           "launcher_config", "render_kuberay", "render_launcher"]

RAY_VERSION = "2.60.0"
IMAGE = f"rayproject/ray:{RAY_VERSION}"
TOKEN_SECRET = "westflow-ray-token"
_K8S_ACCEL = {Family.CUDA: "nvidia.com/gpu", Family.CANN: "huawei.com/Ascend910"}


class NodeGroup:
    """One kind of node of a DC: its name, how many, and what each advertises."""

    def __init__(self, name: str, dc: DataCenter, pool: AcceleratorPool | None, replicas: int, tags: NodeTags):
        self.name, self.dc, self.pool, self.replicas, self.tags = name, dc, pool, replicas, tags


def node_groups(dc: DataCenter, network: Network) -> list[NodeGroup]:
    """One group per accelerator pool (named ``<dc>`` when the DC has one pool), or one CPU group."""
    if not dc.pools:
        return [NodeGroup(dc.id, dc, None, 1, node_tags(dc, network, accelerators={},
                                                          memory_bytes=int(dc.memory_gb * 2**30)))]
    nodes = {p.model: max(1, math.ceil(p.count / p.per_node)) for p in dc.pools}
    total_nodes = sum(nodes.values())
    out = []
    for p in dc.pools:
        cpus = max(1, dc.cpus // total_nodes)
        mem = int(dc.memory_gb / total_nodes * 2**30)
        tags = node_tags(dc, network, num_cpus=cpus, accelerators={p.model: p.per_node}, memory_bytes=mem)
        name = dc.id if len(dc.pools) == 1 else f"{dc.id}-{p.model}"
        out.append(NodeGroup(name.replace("_", "-").lower(), dc, p, nodes[p.model], tags))
    return out


def _env(labels: dict[str, str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}}}]
    if LABEL_DC in labels:
        env.append({"name": ENV_DC, "value": labels[LABEL_DC]})
    return env


def _pod(container: str, cpus: int, mem_gib: int, labels: dict[str, str],
         accel: tuple[str, int] | None = None) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": str(cpus), "memory": f"{mem_gib}Gi"}
    if accel:
        limits[accel[0]] = accel[1]
    return {"metadata": {"labels": dict(labels)},
            "spec": {"containers": [{"name": container, "image": IMAGE, "env": _env(labels),
                                     "resources": {"limits": limits, "requests": dict(limits)}}]}}


def kuberay_cluster(name: str, network: Network) -> dict[str, Any]:
    """The RayCluster of named Ray cluster ``name`` (its DCs from the inventory)."""
    dcs = network.ray_clusters()[name]
    groups = []
    for dc in dcs:
        for g in node_groups(dc, network):
            t = g.tags
            accel = None
            if g.pool is not None:
                accel = (_K8S_ACCEL[g.pool.family], g.pool.per_node)
            groups.append({
                "groupName": g.name, "replicas": g.replicas, "minReplicas": 0, "maxReplicas": g.replicas,
                "rayStartParams": t.ray_start_params(),
                "template": _pod("ray-worker", t.num_cpus, max(1, (t.memory_bytes or 0) // 2**30), t.labels, accel),
            })
    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": f"westflow-{name}".replace("_", "-"), "labels": {"app.kubernetes.io/part-of": "westflow"}},
        "spec": {
            "rayVersion": RAY_VERSION,
            # KubeRay exposes the dashboard to its Service itself; token auth guards it (docs/security.md).
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                              "template": _pod("ray-head", 4, 16, {"app.kubernetes.io/part-of": "westflow"})},
            "workerGroupSpecs": groups,
        },
    }


def launcher_config(name: str, network: Network) -> dict[str, Any]:
    """Ray cluster-launcher YAML of named Ray cluster ``name``."""
    types: dict[str, Any] = {"head": {"resources": {"CPU": 0}, "node_config": {}, "min_workers": 0,
                                      "max_workers": 0}}
    for dc in network.ray_clusters()[name]:
        for g in node_groups(dc, network):
            res = g.tags.all_resources()
            res.pop("memory", None)  # the launcher reads memory from the instance type
            types[g.name] = {"resources": res, "labels": dict(g.tags.labels), "node_config": {},
                             "min_workers": 0, "max_workers": g.replicas}
    return {
        "cluster_name": f"westflow-{name}".replace("_", "-"),
        "max_workers": sum(t["max_workers"] for t in types.values()),
        "provider": {"type": "local", "head_ip": "REPLACE-WITH-HEAD-IP", "worker_ips": []},
        "auth": {"ssh_user": "ray"},
        "head_node_type": "head",
        "available_node_types": types,
        "initialization_commands": [],
        "setup_commands": [f"pip install 'ray[default]=={RAY_VERSION}'"],
        # The dashboard stays on the head's loopback: reach it with `ray dashboard` (an SSH tunnel).
        "head_start_ray_commands": ["ray stop", "RAY_AUTH_MODE=token ray start --head --port=6379 "
                                    "--autoscaling-config=~/ray_bootstrap_config.yaml"],
        "worker_start_ray_commands": ["ray stop", "RAY_AUTH_MODE=token ray start --address=$RAY_HEAD_IP:6379"],
    }


_HEADER = ("# Generated by `westflow render {kind}` from {source}; edit the inventory, not this file.\n"
           "# Ray cluster {name!r}: data centers {dcs}.\n")


def _write(out_dir: Path, kind: str, network: Network, doc_of: Any) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dcs in network.ray_clusters().items():
        path = out_dir / f"{kind}-{name}.yaml"
        head = _HEADER.format(kind=kind, source=network.source or "network.yaml", name=name,
                              dcs=", ".join(d.id for d in dcs))
        path.write_text(head + yaml.safe_dump(doc_of(name, network), sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


def render_kuberay(network: Network, out_dir: Path) -> list[Path]:
    """One RayCluster YAML per named Ray cluster; returns the files written."""
    return _write(out_dir, "kuberay", network, kuberay_cluster)


def render_launcher(network: Network, out_dir: Path) -> list[Path]:
    """One cluster-launcher YAML per named Ray cluster; returns the files written."""
    return _write(out_dir, "launcher", network, launcher_config)
