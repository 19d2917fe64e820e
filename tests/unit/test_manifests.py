"""Rendered KubeRay, dispatcher and cluster-launcher YAML: typed, tagged, and agreeing with the inventory."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from pipelines.deployments import westflow_resource
from ray_cluster.federation import Federation
from ray_cluster.kuberay_schema import ConfigMapDoc, DeploymentDoc, EnvVar, RayClusterDoc, validate_document
from ray_cluster.manifests import (
    CONTROLLER_FILE,
    DISPATCHER,
    DISPATCHER_FILE,
    NAMESPACE,
    PORTS,
    DispatcherConfig,
    k8s_name,
    render_kuberay,
    render_launcher,
    token_env,
)
from tests.builders import national
from tests.unit.test_cli_fuzz import write_small_config
from westflow.config import CONFIG_DIR, load_network, load_yaml
from westflow.errors import ConfigError
from westflow.inventory import Network
from westflow.latency import great_circle_km, modelled_ms
from westflow.tags import LABEL_DC, dc_resource

ROOT = Path(__file__).resolve().parents[2]


def _render(n: Network, out: Path) -> tuple[dict[str, RayClusterDoc], ConfigMapDoc, DeploymentDoc]:
    """Every rendered document through its typed model: RayClusters by cluster name, the dispatcher's two."""
    rays: dict[str, RayClusterDoc] = {}
    others: list[Any] = []
    for path in render_kuberay(n, out):
        for doc in yaml.safe_load_all(path.read_text()):
            typed = validate_document(doc)
            if isinstance(typed, RayClusterDoc):
                assert typed.metadata.name == k8s_name(path.stem.removeprefix("kuberay-"))
                rays[path.stem.removeprefix("kuberay-")] = typed
            elif path.name == CONTROLLER_FILE:
                assert isinstance(typed, DeploymentDoc)
            else:
                assert path.name == DISPATCHER_FILE
                others.append(typed)
    cm, dep = others
    assert isinstance(cm, ConfigMapDoc) and isinstance(dep, DeploymentDoc)
    return rays, cm, dep


def _secrets(env: list[EnvVar], var: str) -> set[tuple[str, str]]:
    return {(e.valueFrom.secretKeyRef.name, e.valueFrom.secretKeyRef.key) for e in env
            if e.name == var and e.valueFrom is not None}


def test_kuberay_one_file_per_cluster_with_each_dc_tagged(tmp_path: Path) -> None:
    n = national()
    rays, _, _ = _render(n, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"kuberay-{c}.yaml" for c in n.ray_clusters()] + [DISPATCHER_FILE, CONTROLLER_FILE])
    seen = set()
    for cluster, doc in rays.items():
        for g in doc.spec.workerGroupSpecs:
            params = g.rayStartParams
            res = json.loads(params["resources"].strip('"').replace('\\"', '"'))
            labels = dict(kv.split("=", 1) for kv in params["labels"].split(","))
            dc = labels[LABEL_DC]
            seen.add(dc)
            assert n.dc(dc).ray_cluster == cluster
            assert res[dc_resource(dc)] > 0 and res[f"region:{n.dc(dc).region.value}"] > 0
            assert g.template.metadata.labels[LABEL_DC] == dc
            env = {e.name for e in g.template.spec.containers[0].env}
            assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "WESTFLOW_DC"} <= env
    assert seen == set(n.dc_ids)


@pytest.mark.parametrize("config", ["national", "small"])
def test_each_cluster_reads_its_own_token_secret(tmp_path: Path, config: str) -> None:
    """Head and workers of a cluster: token mode, the token from that cluster's Secret only (none shared)."""
    n = national() if config == "national" else load_network(write_small_config(tmp_path / "cfg"))
    rays, _, _ = _render(n, tmp_path / "out")
    used: dict[tuple[str, str], str] = {}
    for cluster, doc in rays.items():
        source = n.cluster(cluster).token
        expected = ((source.secret, source.key) if source and source.secret
                    else (f"westflow-{cluster}-ray-token", "auth_token"))
        pods = [doc.spec.headGroupSpec.template] + [g.template for g in doc.spec.workerGroupSpecs]
        for pod in pods:
            env = pod.spec.containers[0].env
            assert [e.value for e in env if e.name == "RAY_AUTH_MODE"] == ["token"]
            assert _secrets(env, "RAY_AUTH_TOKEN") == {expected}
        assert used.setdefault(expected, cluster) == cluster, f"{cluster} and {used[expected]} share {expected}"
    assert len(used) == len(rays) == len(n.ray_clusters())


def test_network_yaml_dashboard_urls_are_the_rendered_head_services(tmp_path: Path) -> None:
    """configs/network.yaml reaches each cluster at the head Service KubeRay makes for the rendered RayCluster."""
    n = national()
    rays, cm, _ = _render(n, tmp_path)
    fed = {c.name: c for c in DispatcherConfig.model_validate(yaml.safe_load(cm.data["federation.yaml"])).clusters}
    for cluster, doc in rays.items():
        url = n.cluster(cluster).dashboard_url
        assert url is not None, f"network.yaml gives no dashboard_url for {cluster}"
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == (
            "http", f"{doc.head_service()}.{doc.metadata.namespace}.svc.cluster.local", doc.dashboard_port())
        assert doc.metadata.namespace == NAMESPACE
        assert fed[cluster].jobs_api == url


@pytest.mark.parametrize("config", ["national", "small"])
def test_dispatcher_config_and_deployment_agree_with_the_clusters(tmp_path: Path, config: str) -> None:
    n = national() if config == "national" else load_network(write_small_config(tmp_path / "cfg"))
    rays, cm, dep = _render(n, tmp_path / "out")
    fed = DispatcherConfig.model_validate(yaml.safe_load(cm.data["federation.yaml"]))
    assert [c.name for c in fed.clusters] == list(n.ray_clusters())
    pod = dep.spec.template.spec
    env = pod.containers[0].env
    for c in fed.clusters:
        assert c.data_centers == [d.id for d in n.ray_clusters()[c.name]]
        assert c.token_env == f"WESTFLOW_RAY_TOKEN_{c.name.upper()}"
        ray_secret = _secrets(rays[c.name].spec.headGroupSpec.template.spec.containers[0].env, "RAY_AUTH_TOKEN")
        assert _secrets(env, c.token_env) == ray_secret == {(c.token_secret.name, c.token_secret.key)}
        assert urlsplit(c.jobs_api).hostname == f"{rays[c.name].head_service()}.{NAMESPACE}.svc.cluster.local"
    # The ConfigMap reaches the pod, and dagster.yaml (PostgreSQL storage) reads only variables the pod sets.
    assert {v.configMap.name for v in pod.volumes or () if v.configMap} == {cm.metadata.name} == {DISPATCHER}
    dagster = yaml.safe_load(cm.data["dagster.yaml"])
    db = dagster["storage"]["postgres"]["postgres_db"]
    assert set(db) == {"hostname", "username", "password", "db_name", "port"}
    assert {v["env"] for v in db.values() if isinstance(v, dict)} <= {e.name for e in env}
    assert dep.spec.replicas == 1 and dep.spec.strategy is not None and dep.spec.strategy.type == "Recreate"


def test_render_writes_nothing_when_a_manifest_would_be_invalid(tmp_path: Path) -> None:
    """A cluster name whose head Service KubeRay would cut: a typed error naming it, and no file at all."""
    long = "x" * 40
    n = national().regrouped({"zhangjiakou": long}, ())
    with pytest.raises(ConfigError) as err:
        render_kuberay(n, tmp_path / "out")
    assert f"ray_clusters.{long}" in str(err.value) and "too long" in str(err.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


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


def test_the_dispatcher_resolves_every_cluster_from_the_rendered_deployment_env(tmp_path: Path) -> None:
    """What the dispatcher pod gets (each token variable the Deployment fills from a Secret) is what the
    dispatcher reads: :meth:`Federation.of_network` over configs/network.yaml reaches every cluster at the
    rendered Jobs API with that cluster's own token."""
    n = national()
    _, cm, dep = _render(n, tmp_path)
    config = {c.name: c for c in DispatcherConfig.model_validate(yaml.safe_load(cm.data["federation.yaml"])).clusters}
    env = {e.name: f"token-of-{e.valueFrom.secretKeyRef.name}" for e in dep.spec.template.spec.containers[0].env
           if e.valueFrom is not None and e.valueFrom.secretKeyRef is not None}
    fed = Federation.of_network(n, env=env)
    assert set(fed.names) == set(config) == set(n.ray_clusters())
    for name, c in config.items():
        access = fed.access(name)
        assert access.dashboard_url == c.jobs_api
        assert access.token == f"token-of-{c.token_secret.name}"


def test_federation_doc_rtt_table_is_the_latency_model() -> None:
    """docs/federation.md's DC-to-DC RTTs are what westflow.latency gives for configs/network.yaml."""
    n = national()
    latency = load_yaml(CONFIG_DIR / "network.yaml")["latency"]
    lines = (ROOT / "docs" / "federation.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("<!-- rtt-table"))
    table = itertools.takewhile(lambda line: line.startswith("|"), lines[start + 1:])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    header, body = rows[0][1:], rows[2:]
    assert sorted(header) == sorted(n.dc_ids) and [r[0].split(" ")[0] for r in body] == header
    for row in body:
        a, cluster = row[0].split(" ")
        assert cluster == f"({n.dc(a).ray_cluster})"
        for b, cell in zip(header, row[1:], strict=True):
            if a == b:
                continue
            da, db = n.dc(a), n.dc(b)
            km = great_circle_km(da.lat, da.lon, db.lat, db.lon)
            want = modelled_ms(km, latency["route_inflation"], latency["equipment_overhead_ms"])
            assert cell == f"{want:.1f}", (a, b)


def test_two_clusters_cannot_share_a_token_secret(tmp_path: Path) -> None:
    n = national()
    jjj, yrd = n.cluster("jjj"), n.cluster("yrd")
    assert jjj.token is not None and yrd.token is not None
    shared = dataclasses.replace(n, clusters=tuple(dataclasses.replace(c, token=jjj.token) if c.name == "yrd" else c
                                                   for c in n.clusters))
    with pytest.raises(ConfigError) as err:
        render_kuberay(shared, tmp_path / "out")
    assert "ray_clusters.yrd.token.secret 'westflow-jjj-ray-token'" in str(err.value) and "'jjj'" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_the_code_location_runs_the_federation_deployment(tmp_path: Path) -> None:
    """The Deployment's plain variables select the pipelines' ``federation`` deployment (every inventory cluster)."""
    _, _, dep = _render(national(), tmp_path)
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env if e.value is not None}
    resource = westflow_resource(env)
    assert resource.clusters == "inventory" and resource.state_dir == env["WESTFLOW_STATE_DIR"]


def test_each_clusters_serve_url_is_its_head_services_serve_port() -> None:
    """The live services' routes (docs/services.md) reach each cluster where the rendered head exposes Serve."""
    net = load_network(CONFIG_DIR)
    for c in net.clusters:
        assert c.serve_url and c.dashboard_url, c.name
        serve, dash = urlsplit(c.serve_url), urlsplit(c.dashboard_url)
        assert serve.hostname == dash.hostname and serve.port == PORTS["serve"], c


def test_the_code_location_binds_its_pod_ip_only(tmp_path: Path) -> None:
    _, _, dep = _render(national(), tmp_path)
    container = dep.spec.template.spec.containers[0]
    assert container.command[container.command.index("--host") + 1] == "$(POD_IP)"
    pod_ip = next(e for e in container.env if e.name == "POD_IP")
    assert pod_ip.valueFrom is not None and pod_ip.valueFrom.fieldRef is not None
    assert pod_ip.valueFrom.fieldRef.fieldPath == "status.podIP"


def test_the_admission_controller_runs_two_replicas_on_the_shared_queue_with_every_token(tmp_path: Path) -> None:
    n = national()
    _render(n, tmp_path)
    (doc,) = list(yaml.safe_load_all((tmp_path / CONTROLLER_FILE).read_text()))
    dep = validate_document(doc)
    assert isinstance(dep, DeploymentDoc) and dep.spec.replicas == 2  # one leads, one waits to take over
    (c,) = dep.spec.template.spec.containers
    assert c.command[:4] == ["westflow", "controller", "--clusters", "inventory"]
    env = {e.name: e for e in c.env}
    url = env["WESTFLOW_ADMISSION_URL"].valueFrom
    assert url is not None and url.secretKeyRef is not None and url.secretKeyRef.name == "westflow-admission"
    for cluster in n.ray_clusters():
        assert token_env(cluster) in env
    _, _, dispatcher = _render(n, tmp_path / "again")
    (code,) = dispatcher.spec.template.spec.containers
    assert "WESTFLOW_ADMISSION_URL" in {e.name for e in code.env}  # the steps queue in the same database
