"""Typed models of the Kubernetes objects ``westflow render kuberay`` writes: the subset of fields it uses.

Field names are the APIs' own (camelCase) and every model forbids unknown keys, so a misspelt or
misplaced field (``workerGroupSpec``, ``secretKeyref``, ``rayStartParams`` on a container) fails here
instead of being pruned silently by the API server (a structural CRD drops unknown fields). A field
the Kubernetes API has but westflow never writes is rejected too: add it here, from the source below,
when the manifests start writing it.

Sources of the field names and shapes:

- ``RayCluster`` (``ray.io/v1``): ray-project/kuberay ``ray-operator/apis/ray/v1/raycluster_types.go``
  (``RayClusterSpec``: ``headGroupSpec``, ``workerGroupSpecs``, ``rayVersion``; ``HeadGroupSpec``:
  ``serviceType``, ``rayStartParams``, ``template``; ``WorkerGroupSpec``: ``groupName``, ``replicas``,
  ``minReplicas``, ``maxReplicas``, ``rayStartParams``, ``template``) and the CRD generated from it,
  ``ray-operator/config/crd/bases/ray.io_rayclusters.yaml`` (``rayStartParams``: an object whose values
  are strings; quantities: the int-or-string pattern copied below). KubeRay names the head Service
  ``<cluster>-head-svc`` and shortens any name over 50 characters
  (``ray-operator/controllers/ray/utils/util.go``: ``GenerateHeadServiceName``, ``CheckName``); the
  dashboard port is named ``dashboard``, 8265 by default (``utils/constant.go``).
- Pod template, container, ``env``/``valueFrom.secretKeyRef``, ``resources``, ``ports``,
  ``volumeMounts``, ``volumes``: Kubernetes ``core/v1`` (kubernetes/api ``core/v1/types.go``:
  ``PodTemplateSpec``, ``PodSpec``, ``Container``, ``EnvVar``, ``EnvVarSource``, ``SecretKeySelector``,
  ``ResourceRequirements``, ``ContainerPort``, ``VolumeMount``, ``Volume``, ``ConfigMapVolumeSource``,
  ``EmptyDirVolumeSource``), the same schema the RayCluster CRD embeds for ``template``.
- ``ConfigMap`` (``v1``, ``data``): kubernetes/api ``core/v1/types.go``; ``Deployment`` (``apps/v1``:
  ``replicas``, ``selector.matchLabels``, ``strategy.type``, ``template``): kubernetes/api
  ``apps/v1/types.go`` and apimachinery ``meta/v1`` ``ObjectMeta``/``LabelSelector``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["RayClusterDoc", "ConfigMapDoc", "DeploymentDoc", "ObjectMeta", "PodTemplateSpec", "EnvVar",
           "HEAD_SERVICE_SUFFIX", "MAX_HEAD_SERVICE_NAME", "DASHBOARD_PORT_NAME", "validate_document"]

HEAD_SERVICE_SUFFIX = "-head-svc"
MAX_HEAD_SERVICE_NAME = 50  # KubeRay CheckName: longer names are cut from the front (util.go)
DASHBOARD_PORT_NAME = "dashboard"

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # RFC 1123 label: names of containers, ports, groups
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"  # core/v1 EnvVar name (C_IDENTIFIER, relaxed since 1.26)
_DATA_KEY = r"^[-._a-zA-Z0-9]+$"  # keys of a ConfigMap's data and of a Secret (SecretKeySelector.key)
_QUANTITY = re.compile(  # the int-or-string quantity pattern of the RayCluster CRD
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class _K8s(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _labels(labels: dict[str, str]) -> dict[str, str]:
    """Kubernetes label rules: ``[prefix/]name`` (name <= 63), value <= 63, both alphanumeric at the ends."""
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not re.match(_DNS_SUBDOMAIN, prefix))) or len(name) > 63 \
                or not _LABEL_NAME.match(name):
            raise ValueError(f"invalid label key {key!r}")
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise ValueError(f"invalid value {value!r} of label {key!r}")
    return labels


Labels = Annotated[dict[str, str], AfterValidator(_labels)]


class ObjectMeta(_K8s):
    name: str = Field(pattern=_DNS_SUBDOMAIN, max_length=253)
    namespace: str | None = Field(default=None, pattern=_DNS_LABEL, max_length=63)
    labels: Labels = Field(default_factory=dict)


class TemplateMeta(_K8s):
    """A pod template's metadata: labels only (the pods get their names from their owner)."""

    labels: Labels = Field(default_factory=dict)


class SecretKeySelector(_K8s):
    name: str = Field(pattern=_DNS_SUBDOMAIN, max_length=253)
    key: str = Field(pattern=_DATA_KEY, max_length=253)


class ObjectFieldSelector(_K8s):
    fieldPath: str = Field(pattern=r"^(status\.podIP|metadata\.name|metadata\.namespace)$")


class EnvVarSource(_K8s):
    """Exactly one of a Secret's key or one of the pod's own fields (downward API)."""

    secretKeyRef: SecretKeySelector | None = None
    fieldRef: ObjectFieldSelector | None = None

    @model_validator(mode="after")
    def _one_ref(self) -> EnvVarSource:
        if (self.secretKeyRef is None) == (self.fieldRef is None):
            raise ValueError("valueFrom needs exactly one of secretKeyRef, fieldRef")
        return self


class EnvVar(_K8s):
    """One variable: a literal ``value`` or a ``valueFrom`` reference, never both (core/v1 rejects both)."""

    name: str = Field(pattern=_ENV_NAME)
    value: str | None = None
    valueFrom: EnvVarSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.valueFrom is None):
            raise ValueError(f"env {self.name!r} needs exactly one of value, valueFrom")
        return self


def _quantities(values: dict[str, int | str]) -> dict[str, int | str]:
    for resource, q in values.items():
        if isinstance(q, bool) or (isinstance(q, int) and q < 0) or (isinstance(q, str) and not _QUANTITY.match(q)):
            raise ValueError(f"invalid quantity {q!r} of {resource!r}")
    return values


Quantities = Annotated[dict[str, int | str], AfterValidator(_quantities)]


class ResourceRequirements(_K8s):
    limits: Quantities = Field(default_factory=dict)
    requests: Quantities = Field(default_factory=dict)


class ContainerPort(_K8s):
    name: str = Field(pattern=_DNS_LABEL, max_length=15)  # IANA_SVC_NAME: at most 15 characters
    containerPort: int = Field(ge=1, le=65535)


class VolumeMount(_K8s):
    name: str = Field(pattern=_DNS_LABEL, max_length=63)
    mountPath: str = Field(pattern=r"^/")
    subPath: str | None = None
    readOnly: bool | None = None


class Container(_K8s):
    name: str = Field(pattern=_DNS_LABEL, max_length=63)
    image: str = Field(min_length=1)
    command: list[str] | None = None
    env: list[EnvVar] = Field(default_factory=list)
    ports: list[ContainerPort] | None = None
    resources: ResourceRequirements | None = None
    volumeMounts: list[VolumeMount] | None = None

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [e.name for e in env]
        if len(names) != len(set(names)):
            raise ValueError(f"env names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
        return env


class ConfigMapVolumeSource(_K8s):
    name: str = Field(pattern=_DNS_SUBDOMAIN, max_length=253)


class EmptyDirVolumeSource(_K8s):
    pass


class Volume(_K8s):
    name: str = Field(pattern=_DNS_LABEL, max_length=63)
    configMap: ConfigMapVolumeSource | None = None
    emptyDir: EmptyDirVolumeSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        if (self.configMap is None) == (self.emptyDir is None):
            raise ValueError(f"volume {self.name!r} needs exactly one of configMap, emptyDir")
        return self


class PodSpec(_K8s):
    containers: list[Container] = Field(min_length=1)
    volumes: list[Volume] | None = None

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> PodSpec:
        known = {v.name for v in self.volumes or ()}
        for c in self.containers:
            for m in c.volumeMounts or ():
                if m.name not in known:
                    raise ValueError(f"container {c.name!r} mounts unknown volume {m.name!r}; volumes: {sorted(known)}")
        return self


class PodTemplateSpec(_K8s):
    metadata: TemplateMeta = Field(default_factory=TemplateMeta)
    spec: PodSpec


# -- RayCluster (ray.io/v1) ----------------------------------------------------------------------


class HeadGroupSpec(_K8s):
    serviceType: Literal["ClusterIP", "NodePort", "LoadBalancer"] | None = None
    rayStartParams: dict[str, str]
    template: PodTemplateSpec


class WorkerGroupSpec(_K8s):
    groupName: str = Field(pattern=_DNS_LABEL, max_length=63)
    replicas: int = Field(ge=0, le=2**31 - 1)
    minReplicas: int = Field(ge=0, le=2**31 - 1)
    maxReplicas: int = Field(ge=0, le=2**31 - 1)
    rayStartParams: dict[str, str]
    template: PodTemplateSpec

    @model_validator(mode="after")
    def _bounds(self) -> WorkerGroupSpec:
        if not self.minReplicas <= self.replicas <= self.maxReplicas:
            raise ValueError(f"group {self.groupName!r}: need minReplicas <= replicas <= maxReplicas, got "
                             f"{self.minReplicas} <= {self.replicas} <= {self.maxReplicas}")
        return self


class RayClusterSpec(_K8s):
    rayVersion: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    headGroupSpec: HeadGroupSpec
    workerGroupSpecs: list[WorkerGroupSpec] = Field(default_factory=list)

    @field_validator("workerGroupSpecs")
    @classmethod
    def _unique_groups(cls, groups: list[WorkerGroupSpec]) -> list[WorkerGroupSpec]:
        names = [g.groupName for g in groups]
        if len(names) != len(set(names)):
            raise ValueError(f"groupName repeats: {sorted(n for n in set(names) if names.count(n) > 1)}")
        return groups


class RayClusterDoc(_K8s):
    apiVersion: Literal["ray.io/v1"]
    kind: Literal["RayCluster"]
    metadata: ObjectMeta
    spec: RayClusterSpec

    @model_validator(mode="after")
    def _service_name_kept(self) -> RayClusterDoc:
        if len(self.metadata.name + HEAD_SERVICE_SUFFIX) > MAX_HEAD_SERVICE_NAME:
            raise ValueError(f"RayCluster name {self.metadata.name!r} is too long: KubeRay cuts its head Service "
                             f"name (over {MAX_HEAD_SERVICE_NAME} characters) and the Jobs API URL would not match")
        return self

    def head_service(self) -> str:
        """The head Service KubeRay makes for this cluster: ``<name>-head-svc``."""
        return self.metadata.name + HEAD_SERVICE_SUFFIX

    def dashboard_port(self) -> int:
        """The head container's port named ``dashboard`` (the Jobs API), KubeRay's 8265 if none is named."""
        for port in self.spec.headGroupSpec.template.spec.containers[0].ports or ():
            if port.name == DASHBOARD_PORT_NAME:
                return port.containerPort
        return 8265


# -- ConfigMap (v1), Deployment (apps/v1) --------------------------------------------------------


class ConfigMapDoc(_K8s):
    apiVersion: Literal["v1"]
    kind: Literal["ConfigMap"]
    metadata: ObjectMeta
    data: dict[str, str]

    @field_validator("data")
    @classmethod
    def _keys(cls, data: dict[str, str]) -> dict[str, str]:
        for key in data:
            if not re.match(_DATA_KEY, key) or len(key) > 253:
                raise ValueError(f"invalid ConfigMap key {key!r}")
        return data


class LabelSelector(_K8s):
    matchLabels: Labels = Field(min_length=1)


class DeploymentStrategy(_K8s):
    type: Literal["Recreate", "RollingUpdate"]


class DeploymentSpec(_K8s):
    replicas: int = Field(ge=0)
    selector: LabelSelector
    strategy: DeploymentStrategy | None = None
    template: PodTemplateSpec

    @model_validator(mode="after")
    def _selector_matches(self) -> DeploymentSpec:
        labels = self.template.metadata.labels
        missing = {k: v for k, v in self.selector.matchLabels.items() if labels.get(k) != v}
        if missing:
            raise ValueError(f"selector does not match the template's labels: {missing}")
        return self


class DeploymentDoc(_K8s):
    apiVersion: Literal["apps/v1"]
    kind: Literal["Deployment"]
    metadata: ObjectMeta
    spec: DeploymentSpec


_KINDS: dict[tuple[str, str], type[_K8s]] = {
    ("ray.io/v1", "RayCluster"): RayClusterDoc,
    ("v1", "ConfigMap"): ConfigMapDoc,
    ("apps/v1", "Deployment"): DeploymentDoc,
}


def validate_document(doc: Any) -> RayClusterDoc | ConfigMapDoc | DeploymentDoc:
    """The typed model of one rendered document; raises ``pydantic.ValidationError`` or ``ValueError``."""
    if not isinstance(doc, dict):
        raise ValueError(f"a manifest document must be a mapping, got {type(doc).__name__}")
    model = _KINDS.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
    if model is None:
        raise ValueError(f"unknown apiVersion/kind {doc.get('apiVersion')!r}/{doc.get('kind')!r}; westflow writes: "
                         + ", ".join(f"{a}/{k}" for a, k in _KINDS))
    return cast(RayClusterDoc | ConfigMapDoc | DeploymentDoc, model.model_validate(doc))
