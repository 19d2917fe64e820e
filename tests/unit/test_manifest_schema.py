"""The typed KubeRay/Kubernetes models reject what the API would drop or refuse: a misspelt field fails."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import pytest
from pydantic import ValidationError

from ray_cluster.kuberay_schema import (
    ConfigMapDoc,
    DeploymentDoc,
    RayClusterDoc,
    validate_document,
)
from ray_cluster.manifests import dispatcher_config_map, dispatcher_deployment, kuberay_cluster
from tests.builders import national

Doc = dict[str, Any]


@lru_cache(maxsize=1)
def _docs() -> tuple[Doc, Doc, Doc]:
    """A rendered RayCluster (with a multi-pool DC), the dispatcher's ConfigMap and its Deployment."""
    n = national()
    return kuberay_cluster("yrd", n), dispatcher_config_map(n), dispatcher_deployment(n)


def _rename(node: dict[str, Any], old: str, new: str) -> None:
    node[new] = node.pop(old)


def _worker(doc: Doc) -> Doc:
    return doc["spec"]["workerGroupSpecs"][0]  # type: ignore[no-any-return]


def _container(pod_owner: Doc) -> Doc:
    return pod_owner["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def _head(doc: Doc) -> Doc:
    return doc["spec"]["headGroupSpec"]  # type: ignore[no-any-return]


# (which document, how it is broken): every one is a mistake a hand edit or a renderer change could make.
BROKEN: dict[str, tuple[int, Callable[[Doc], None]]] = {
    "workerGroupSpec (singular)": (0, lambda d: _rename(d["spec"], "workerGroupSpecs", "workerGroupSpec")),
    "groupname": (0, lambda d: _rename(_worker(d), "groupName", "groupname")),
    "rayStartParam": (0, lambda d: _rename(_head(d), "rayStartParams", "rayStartParam")),
    "maxReplica": (0, lambda d: _rename(_worker(d), "maxReplicas", "maxReplica")),
    "rayversion": (0, lambda d: _rename(d["spec"], "rayVersion", "rayversion")),
    "secretKeyref": (0, lambda d: _rename(_container(_worker(d))["env"][1]["valueFrom"], "secretKeyRef",
                                          "secretKeyref")),
    "valuefrom": (0, lambda d: _rename(_container(_worker(d))["env"][1], "valueFrom", "valuefrom")),
    "resources.limit": (0, lambda d: _rename(_container(_worker(d))["resources"], "limits", "limit")),
    "containerport": (0, lambda d: _rename(_container(_head(d))["ports"][1], "containerPort", "containerport")),
    "rayStartParams on the container": (0, lambda d: _container(_worker(d)).update(rayStartParams={})),
    "serviceType typo value": (0, lambda d: _head(d).update(serviceType="ClusterIp")),
    "rayStartParams value not a string": (0, lambda d: _head(d)["rayStartParams"].update({"num-cpus": 0})),
    "env with value and valueFrom": (0, lambda d: _container(_worker(d))["env"][1].update(value="x")),
    "quantity '16 GiB'": (0, lambda d: _container(_head(d))["resources"]["limits"].update(memory="16 GiB")),
    "replicas over maxReplicas": (0, lambda d: _worker(d).update(replicas=_worker(d)["maxReplicas"] + 1)),
    "groupName with '_'": (0, lambda d: _worker(d).update(groupName="yrd_demo")),
    "two groups of one name": (0, lambda d: d["spec"]["workerGroupSpecs"].append(copy.deepcopy(_worker(d)))),
    "label value with '/'": (0, lambda d: _worker(d)["template"]["metadata"]["labels"].update({"a": "b/c"})),
    "head Service name cut by KubeRay": (0, lambda d: d["metadata"].update(name="westflow-" + "x" * 40)),
    "datas": (1, lambda d: _rename(d, "data", "datas")),
    "ConfigMap key with '/'": (1, lambda d: d["data"].update({"a/b": "x"})),
    "matchlabels": (2, lambda d: _rename(d["spec"]["selector"], "matchLabels", "matchlabels")),
    "selector not matching the pod labels": (2, lambda d: d["spec"]["selector"]["matchLabels"].update(app="other")),
    "volumeMount": (2, lambda d: _rename(_container(d["spec"]), "volumeMounts", "volumeMount")),
    "mount of an unknown volume": (2, lambda d: _container(d["spec"])["volumeMounts"][0].update(name="nope")),
    "configmap volume": (2, lambda d: _rename(d["spec"]["template"]["spec"]["volumes"][1], "configMap", "configmap")),
    "two env of one name": (2, lambda d: _container(d["spec"])["env"].append(dict(_container(d["spec"])["env"][0]))),
    "kind misspelt": (2, lambda d: d.update(kind="Deploymnet")),
}


def test_rendered_documents_pass_and_are_typed() -> None:
    ray, cm, dep = _docs()
    assert isinstance(validate_document(ray), RayClusterDoc)
    assert isinstance(validate_document(cm), ConfigMapDoc)
    assert isinstance(validate_document(dep), DeploymentDoc)


@pytest.mark.parametrize("which,breaks", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_document_fails(which: int, breaks: Callable[[Doc], None]) -> None:
    doc = copy.deepcopy(_docs()[which])
    validate_document(copy.deepcopy(doc))  # the unbroken document passes, so the break is what fails
    breaks(doc)
    with pytest.raises((ValidationError, ValueError)):
        validate_document(doc)


def test_unknown_extra_field_names_the_path() -> None:
    doc = copy.deepcopy(_docs()[0])
    _rename(_container(_worker(doc))["env"][1]["valueFrom"], "secretKeyRef", "secretKeyref")
    with pytest.raises(ValidationError) as err:
        validate_document(doc)
    assert "spec.workerGroupSpecs.0.template.spec.containers.0.env.1.valueFrom.secretKeyref" in str(err.value)
    assert "Extra inputs are not permitted" in str(err.value)
