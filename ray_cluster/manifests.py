"""Production manifests: the inventory rendered per named Ray cluster (docs/federation.md).

``westflow render kuberay`` writes, into one directory:

- ``kuberay-<cluster>.yaml`` per Ray cluster (a latency domain): a KubeRay ``RayCluster`` (``ray.io/v1``)
  named ``westflow-<cluster>``, so KubeRay's head Service is ``westflow-<cluster>-head-svc``; a CPU-only
  head (GCS, dashboard and Jobs API on the ports named below) and one worker group per data center (one
  per accelerator pool where a DC has several), each node's resources and labels in ``rayStartParams``
  (``resources``, ``labels``) and its labels on the pod too. Token auth: every pod of the cluster sets
  ``RAY_AUTH_MODE=token`` and reads ``RAY_AUTH_TOKEN`` from that cluster's own Secret (the inventory's
  token source, ``{secret: NAME, key: KEY}``; default ``westflow-<cluster>-ray-token``/``auth_token``),
  so no cluster accepts another's token.
- ``westflow-dispatcher.yaml``: the dispatcher's cluster config, a ``ConfigMap`` whose ``federation.yaml``
  lists per cluster its Jobs API (the head Service's dashboard port), the environment variable its token
  arrives in (``WESTFLOW_RAY_TOKEN_<CLUSTER>``) and its data centers, plus the Dagster instance's
  ``dagster.yaml`` (PostgreSQL storage); and a ``Deployment`` stub running the Dagster code location
  (``pipelines.definitions``, which composes the dispatcher) with every cluster's Secret mounted as its
  ``WESTFLOW_RAY_TOKEN_<CLUSTER>`` by ``secretKeyRef``. Its image is a placeholder
  (:data:`DISPATCHER_IMAGE`): this project installed on ``rayproject/ray`` of the same Ray version.

No Secret is rendered: tokens never pass through westflow. Every document is checked against the typed
models of :mod:`ray_cluster.kuberay_schema` before anything is written.

``westflow render launcher`` writes Ray cluster-launcher YAML: ``available_node_types``, one per DC (per
pool), with ``resources`` and ``labels``; the provider block is the operator's.

Every tag comes from :mod:`westflow.tags`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ray_cluster.federation import TOKEN_ENV_PREFIX, token_env
from ray_cluster.kuberay_schema import DASHBOARD_PORT_NAME, HEAD_SERVICE_SUFFIX, validate_document
from storage.s3_config import ENV_ACCESS_KEY, ENV_ENDPOINT, ENV_SECRET_KEY, ENV_STATE_DIR
from westflow.errors import ConfigError
from westflow.inventory import AcceleratorPool, DataCenter, Family, Network
from westflow.tags import ENV_DC, LABEL_DC, NodeTags, node_tags

__all__ = ["RAY_VERSION", "IMAGE", "NAMESPACE", "DISPATCHER", "DISPATCHER_IMAGE", "DISPATCHER_FILE",
           "TOKEN_ENV_PREFIX", "DEFAULT_TOKEN_KEY", "PORTS", "CODE_SERVER_PORT", "NodeGroup", "node_groups",
           "SecretRef", "DispatcherCluster", "DispatcherConfig", "k8s_name", "token_env", "token_secret",
           "jobs_api_url", "kuberay_cluster", "dispatcher_config", "dispatcher_config_map", "dispatcher_deployment",
           "controller_deployment", "CONTROLLER", "CONTROLLER_FILE", "ADMISSION_SECRET",
           "launcher_config", "render_kuberay", "render_launcher"]

RAY_VERSION = "2.60.0"
IMAGE = f"rayproject/ray:{RAY_VERSION}"
NAMESPACE = "westflow"  # the namespace configs/network.yaml's dashboard URLs name
DISPATCHER = "westflow-dispatcher"
DISPATCHER_FILE = f"{DISPATCHER}.yaml"
# Placeholder: an image of this project (`pip install .` plus dagster-postgres) on rayproject/ray:<RAY_VERSION>.
DISPATCHER_IMAGE = "REPLACE-WITH-YOUR-REGISTRY/westflow:latest"
DEFAULT_TOKEN_KEY = "auth_token"  # the key KubeRay's own token Secrets use (RAY_AUTH_TOKEN_SECRET_KEY)
PORTS = {"gcs-server": 6379, DASHBOARD_PORT_NAME: 8265, "client": 10001, "serve": 8000}  # the head's, as KubeRay
# names them; serve: Ray Serve's HTTP ingress, each cluster's serve_url in configs/network.yaml
CODE_SERVER_PORT = 4000  # the Dagster code location's gRPC port
DAGSTER_HOME = "/opt/dagster/dagster_home"
STATE_DIR = "/var/lib/westflow"
FEDERATION_DIR = "/etc/westflow"
PG_SECRET, S3_SECRET = "westflow-dagster-postgres", "westflow-s3"
ADMISSION_SECRET = "westflow-admission"  # key "url": the admission queue's PostgreSQL URL, shared by every host
ADMISSION_URL_ENV = "WESTFLOW_ADMISSION_URL"
CONTROLLER = "westflow-admission-controller"
CONTROLLER_FILE = f"{CONTROLLER}.yaml"
_PART_OF = {"app.kubernetes.io/part-of": "westflow"}
_K8S_ACCEL = {Family.CUDA: "nvidia.com/gpu", Family.CANN: "huawei.com/Ascend910"}


class NodeGroup:
    """One kind of node of a DC: its name, how many, and what each advertises."""

    def __init__(self, name: str, dc: DataCenter, pool: AcceleratorPool | None, replicas: int, tags: NodeTags):
        self.name, self.dc, self.pool, self.replicas, self.tags = name, dc, pool, replicas, tags


def node_groups(dc: DataCenter, network: Network) -> list[NodeGroup]:
    """One group per accelerator pool (named ``<dc>`` when the DC has one pool), or one CPU group."""
    if not dc.pools:
        return [NodeGroup(dc.id.replace("_", "-"), dc, None, 1,
                          node_tags(dc, network, accelerators={}, memory_bytes=int(dc.memory_gb * 2**30)))]
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


# -- names shared by the RayClusters, the dispatcher's config and its Deployment ----------------


class SecretRef(BaseModel):
    """One key of one Kubernetes Secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    key: str


def k8s_name(cluster: str) -> str:
    """The RayCluster's name: ``westflow-<cluster>`` (``_`` is not allowed in Kubernetes names)."""
    return f"westflow-{cluster}".replace("_", "-")


def token_secret(network: Network, cluster: str) -> SecretRef:
    """The Secret holding ``cluster``'s token: the inventory's ``{secret, key}``, else the default name."""
    source = network.cluster(cluster).token
    if source is not None and source.secret:
        return SecretRef(name=source.secret, key=source.key)
    return SecretRef(name=f"{k8s_name(cluster)}-ray-token", key=DEFAULT_TOKEN_KEY)


def jobs_api_url(cluster: str, namespace: str = NAMESPACE) -> str:
    """The cluster's Jobs API inside Kubernetes: its head Service's dashboard port."""
    return (f"http://{k8s_name(cluster)}{HEAD_SERVICE_SUFFIX}.{namespace}.svc.cluster.local:"
            f"{PORTS[DASHBOARD_PORT_NAME]}")


def _secret_env(name: str, ref: SecretRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


# -- the RayCluster of each latency domain ------------------------------------------------------


def _ray_env(labels: dict[str, str], secret: SecretRef) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "RAY_AUTH_MODE", "value": "token"}, _secret_env("RAY_AUTH_TOKEN", secret)]
    if LABEL_DC in labels:
        env.append({"name": ENV_DC, "value": labels[LABEL_DC]})
    return env


def _pod(container: str, cpus: int, mem_gib: int, labels: dict[str, str], secret: SecretRef,
         accel: tuple[str, int] | None = None, ports: dict[str, int] | None = None) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": str(cpus), "memory": f"{mem_gib}Gi"}
    if accel:
        limits[accel[0]] = accel[1]
    spec: dict[str, Any] = {"name": container, "image": IMAGE, "env": _ray_env(labels, secret)}
    if ports:
        spec["ports"] = [{"name": n, "containerPort": p} for n, p in ports.items()]
    spec["resources"] = {"limits": limits, "requests": dict(limits)}
    return {"metadata": {"labels": dict(labels)}, "spec": {"containers": [spec]}}


def kuberay_cluster(name: str, network: Network) -> dict[str, Any]:
    """The RayCluster of named Ray cluster ``name`` (its DCs from the inventory, its own token Secret)."""
    secret = token_secret(network, name)
    instance = {**_PART_OF, "app.kubernetes.io/instance": k8s_name(name)}
    groups = []
    for dc in network.ray_clusters()[name]:
        for g in node_groups(dc, network):
            t = g.tags
            accel = (_K8S_ACCEL[g.pool.family], g.pool.per_node) if g.pool is not None else None
            groups.append({
                "groupName": g.name, "replicas": g.replicas, "minReplicas": 0, "maxReplicas": g.replicas,
                "rayStartParams": t.ray_start_params(),
                "template": _pod("ray-worker", t.num_cpus, max(1, (t.memory_bytes or 0) // 2**30),
                                 {**instance, **t.labels}, secret, accel),
            })
    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": k8s_name(name), "namespace": NAMESPACE, "labels": instance},
        "spec": {
            "rayVersion": RAY_VERSION,
            # The dashboard's bind address is left to the KubeRay operator (it binds the head pod's interfaces so
            # the ClusterIP Service reaches the Jobs API); token auth guards it. westflow sets no wildcard itself.
            "headGroupSpec": {"serviceType": "ClusterIP",
                              "rayStartParams": {"num-cpus": "0"},
                              "template": _pod("ray-head", 4, 16, instance, secret, ports=PORTS)},
            "workerGroupSpecs": groups,
        },
    }


# -- the dispatcher: its cluster config and a Deployment stub -----------------------------------


class DispatcherCluster(BaseModel):
    """One Ray cluster as the dispatcher reaches it: Jobs API, where its token is, what it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    jobs_api: str
    token_env: str
    token_secret: SecretRef
    data_centers: list[str]


class DispatcherConfig(BaseModel):
    """The ``federation.yaml`` of the dispatcher's ConfigMap."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    clusters: list[DispatcherCluster]


def dispatcher_config(network: Network) -> DispatcherConfig:
    """Every Ray cluster of the inventory with its Jobs API Service, token variable and Secret, and DCs."""
    return DispatcherConfig(clusters=[
        DispatcherCluster(name=name, description=network.cluster(name).description, jobs_api=jobs_api_url(name),
                          token_env=token_env(name), token_secret=token_secret(network, name),
                          data_centers=[d.id for d in dcs])
        for name, dcs in network.ray_clusters().items()])


def _dagster_yaml() -> dict[str, Any]:
    """The Dagster instance in PostgreSQL (dagster-postgres ``storage.postgres``), each field from the env."""
    db = {f: {"env": f"DAGSTER_PG_{f.upper()}"} for f in ("hostname", "username", "password", "db_name")}
    return {"storage": {"postgres": {"postgres_db": {**db, "port": 5432}}}}


def dispatcher_config_map(network: Network) -> dict[str, Any]:
    """The dispatcher's cluster config (``federation.yaml``) and the Dagster instance (``dagster.yaml``)."""
    fed = dispatcher_config(network).model_dump(mode="json")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": DISPATCHER, "namespace": NAMESPACE, "labels": dict(_PART_OF)},
            "data": {"federation.yaml": _dump(fed), "dagster.yaml": _dump(_dagster_yaml())}}


def dispatcher_deployment(network: Network) -> dict[str, Any]:
    """The code location (and so the dispatcher) as one pod: every cluster's token by ``secretKeyRef``.

    One replica, replaced by ``Recreate`` (the code location serves one Dagster deployment); its steps queue in
    the admission database (PostgreSQL, ``$WESTFLOW_ADMISSION_URL`` from a Secret) shared with the controllers.
    """
    labels = {**_PART_OF, "app.kubernetes.io/name": DISPATCHER}
    fed = dispatcher_config(network)
    env: list[dict[str, Any]] = [{"name": "DAGSTER_HOME", "value": DAGSTER_HOME},
                                 # pipelines/deployments.py: every cluster of the inventory, tokens from the env
                                 {"name": "WESTFLOW_DEPLOYMENT", "value": "federation"},
                                 {"name": ENV_STATE_DIR, "value": STATE_DIR}]
    env += [_secret_env(c.token_env, c.token_secret) for c in fed.clusters]
    env.append(_secret_env(ADMISSION_URL_ENV, SecretRef(name=ADMISSION_SECRET, key="url")))
    env += [{"name": "DAGSTER_PG_HOSTNAME", "value": f"postgres.{NAMESPACE}.svc.cluster.local"},  # placeholder
            {"name": "DAGSTER_PG_USERNAME", "value": "dagster"}, {"name": "DAGSTER_PG_DB_NAME", "value": "dagster"},
            _secret_env("DAGSTER_PG_PASSWORD", SecretRef(name=PG_SECRET, key="password"))]
    env += [_secret_env(var, SecretRef(name=S3_SECRET, key=key)) for var, key in
            ((ENV_ENDPOINT, "endpoint"), (ENV_ACCESS_KEY, "access_key"), (ENV_SECRET_KEY, "secret_key"))]
    # The gRPC server listens on the pod's own IP only (what its ClusterIP Service forwards to; Kubernetes
    # expands $(POD_IP) from the downward API), not on every interface.
    env.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    container = {
        "name": "code-location", "image": DISPATCHER_IMAGE,
        "command": ["dagster", "api", "grpc", "--module-name", "pipelines.definitions",
                    "--host", "$(POD_IP)", "--port", str(CODE_SERVER_PORT)],
        "env": env, "ports": [{"name": "grpc", "containerPort": CODE_SERVER_PORT}],
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
        "volumeMounts": [
            {"name": "dagster-home", "mountPath": DAGSTER_HOME},
            {"name": "config", "mountPath": f"{DAGSTER_HOME}/dagster.yaml", "subPath": "dagster.yaml",
             "readOnly": True},
            {"name": "config", "mountPath": FEDERATION_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR}],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": DISPATCHER, "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": DISPATCHER}},
                     "strategy": {"type": "Recreate"},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container],
                                           "volumes": [{"name": "dagster-home", "emptyDir": {}},
                                                       {"name": "config", "configMap": {"name": DISPATCHER}},
                                                       {"name": "state", "emptyDir": {}}]}}}}


def controller_deployment(network: Network) -> dict[str, Any]:
    """The admission controller, two replicas: one leads (a lease in the admission database), the other takes
    over within the lease's lifetime when the leader's pod dies. It reads every cluster's live capacity with
    that cluster's token, as the dispatcher does."""
    labels = {**_PART_OF, "app.kubernetes.io/name": CONTROLLER}
    env: list[dict[str, Any]] = [{"name": ENV_STATE_DIR, "value": STATE_DIR},
                                 _secret_env(ADMISSION_URL_ENV, SecretRef(name=ADMISSION_SECRET, key="url"))]
    env += [_secret_env(c.token_env, c.token_secret) for c in dispatcher_config(network).clusters]
    container = {
        "name": "controller", "image": DISPATCHER_IMAGE,
        "command": ["westflow", "controller", "--clusters", "inventory", "--state-dir", STATE_DIR],
        "env": env,
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": CONTROLLER, "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app.kubernetes.io/name": CONTROLLER}},
                     "strategy": {"type": "RollingUpdate"},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container],
                                           "volumes": [{"name": "state", "emptyDir": {}}]}}}}


# -- Ray cluster launcher -----------------------------------------------------------------------


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
        "cluster_name": k8s_name(name),
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


# -- writing ------------------------------------------------------------------------------------

class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors/aliases, multi-line strings (a ConfigMap's files) as ``|`` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _str)


def _dump(*docs: Any) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False)


_HEADER = "# Generated by `westflow render {kind}` from {source}; edit the inventory, not this file.\n"


def _source(network: Network) -> str:
    return network.source or "network.yaml"


def _checked(network: Network, where: str, value: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``docs`` after each passed its typed model; a failure names the inventory entry it came from."""
    for doc in docs:
        try:
            validate_document(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            why = f"{'.'.join(str(p) for p in first['loc']) or 'the document'}: {first['msg']}"
        except ValueError as exc:
            why = str(exc)
        else:
            continue
        raise ConfigError(_source(network), where, value, problem="Cannot render",
                          fix=f"change it in the inventory: the rendered {doc.get('kind')} would be invalid at "
                          f"{why}.") from None
    return docs


def _write_all(out_dir: Path, files: dict[str, str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _secret_hint(ref: SecretRef) -> str:
    return (f"#   kubectl -n {NAMESPACE} create secret generic {ref.name} "
            f"--from-literal={ref.key}=\"$(openssl rand -hex 32)\"\n")


def _own_secrets(network: Network) -> None:
    """No two clusters read one token Secret: a token taken from one would open the other."""
    seen: dict[SecretRef, str] = {}
    for name in network.ray_clusters():
        ref = token_secret(network, name)
        if ref in seen:
            raise ConfigError(_source(network), f"ray_clusters.{name}.token.secret", ref.name,
                              f"a Secret (or key) no other cluster uses; {seen[ref]!r} reads it",
                              problem="Shared", fix="give each Ray cluster its own token Secret.")
        seen[ref] = name


def render_kuberay(network: Network, out_dir: Path) -> list[Path]:
    """A RayCluster YAML per named Ray cluster and the dispatcher's YAML; returns the files written.

    Every document is built and checked before the first file is written.
    """
    _own_secrets(network)
    files: dict[str, str] = {}
    head = _HEADER.format(kind="kuberay", source=_source(network))
    for name, dcs in network.ray_clusters().items():
        (doc,) = _checked(network, f"ray_clusters.{name}", name, [kuberay_cluster(name, network)])
        files[f"kuberay-{name}.yaml"] = (
            head + f"# Ray cluster {name!r}: data centers {', '.join(d.id for d in dcs)}.\n"
            f"# Its token Secret (never rendered), made once per cluster:\n" + _secret_hint(token_secret(network, name))
            + _dump(doc))
    docs = _checked(network, "ray_clusters", ", ".join(network.ray_clusters()),
                    [dispatcher_config_map(network), dispatcher_deployment(network)])
    files[DISPATCHER_FILE] = (
        head + "# The dispatcher's cluster config (federation.yaml) and the Dagster code location that runs it.\n"
        f"# Its image is a placeholder: {DISPATCHER_IMAGE}. Secrets it reads (never rendered): every cluster's\n"
        f"# token Secret, {PG_SECRET} (password), {S3_SECRET} (endpoint, access_key, secret_key).\n"
        + _dump(*docs))
    (ctl,) = _checked(network, "ray_clusters", ", ".join(network.ray_clusters()), [controller_deployment(network)])
    files[CONTROLLER_FILE] = (
        head + "# The admission controller (`westflow controller`), two replicas, one leading. Secrets it reads\n"
        f"# (never rendered): {ADMISSION_SECRET} (url: postgresql+psycopg://...), every cluster's token Secret.\n"
        + _dump(ctl))
    return _write_all(out_dir, files)


def render_launcher(network: Network, out_dir: Path) -> list[Path]:
    """One cluster-launcher YAML per named Ray cluster; returns the files written."""
    head = _HEADER.format(kind="launcher", source=_source(network))
    return _write_all(out_dir, {
        f"launcher-{name}.yaml": head + f"# Ray cluster {name!r}: data centers {', '.join(d.id for d in dcs)}.\n"
        + _dump(launcher_config(name, network))
        for name, dcs in network.ray_clusters().items()})
