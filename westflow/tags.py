"""The one place that spells Ray tags: custom resources, labels, request options.

A data center's nodes advertise::

    dc:<id>, region:<east|west>, rt:<city> ...   (NODE_UNITS each; a request of PIN pins)
    GPU (num_gpus) for CUDA pools, NPU for Ascend pools, accelerator_type:<model>
    labels westflow.io/dc, westflow.io/region, westflow.io/accelerator

A placement becomes a :class:`RayRequest` that pins the chosen data center and,
for real-time work, also requires ``rt:<origin>``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from westflow.inventory import DataCenter, Family, Network

__all__ = [
    "PIN",
    "NODE_UNITS",
    "LABEL_DC",
    "LABEL_REGION",
    "LABEL_ACCELERATOR",
    "NPU",
    "dc_resource",
    "region_resource",
    "rt_resource",
    "accelerator_type_resource",
    "NodeTags",
    "node_tags",
    "RayRequest",
    "ray_request",
    "dc_of_resources",
    "dc_of_labels",
    "GPU",
    "CPU",
    "accelerator_label",
    "ENV_DC",
    "ENV_NODE_IP",
]

PIN = 0.001
NODE_UNITS = 1000
NPU = "NPU"
GPU = "GPU"
CPU = "CPU"
LABEL_DC = "westflow.io/dc"
LABEL_REGION = "westflow.io/region"
LABEL_ACCELERATOR = "westflow.io/accelerator"
# Set on every process of a DC's node (raylet -> workers -> job entrypoints). A job's
# driver process runs on the node Ray chose for its entrypoint, but ``ray.init()`` inside it
# may attach to another raylet on the same IP (local mode), so its labels can mislead.
ENV_DC = "WESTFLOW_DC"
# The node's own IP, also set on every process of the node: ``ray.init(_node_ip_address=...)``
# with it makes a job's driver attach to its own node's raylet (see ``live.init_here``).
ENV_NODE_IP = "WESTFLOW_NODE_IP"


def dc_resource(dc_id: str) -> str:
    return f"dc:{dc_id}"


def region_resource(region: str) -> str:
    return f"region:{region}"


def rt_resource(city_id: str) -> str:
    return f"rt:{city_id}"


def accelerator_type_resource(model: str) -> str:
    return f"accelerator_type:{model}"


def dc_of_resources(resources: dict[str, float]) -> str | None:
    """The data center a node belongs to, read from its resources."""
    for k in resources:
        if k.startswith("dc:"):
            return k[3:]
    return None


def dc_of_labels(labels: dict[str, str]) -> str | None:
    """The data center a node belongs to, read from its labels."""
    return labels.get(LABEL_DC) or None


@dataclass(frozen=True, slots=True)
class NodeTags:
    """What one Ray node of a data center advertises."""

    dc: str
    num_cpus: int
    num_gpus: int
    resources: dict[str, float]
    labels: dict[str, str]
    memory_bytes: int | None = None

    def labels_arg(self) -> str:
        """Labels as ``ray start --labels`` takes them: ``k=v,k=v``."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))

    def ray_start_args(self) -> list[str]:
        """Flags for ``ray start`` (values JSON-encoded as Ray expects)."""
        args = [f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}",
                f"--resources={json.dumps(self.resources, sort_keys=True)}",
                f"--labels={self.labels_arg()}"]
        if self.memory_bytes:
            args.append(f"--memory={self.memory_bytes}")
        return args

    def ray_start_params(self) -> dict[str, str]:
        """KubeRay ``rayStartParams``: every value a string; ``resources`` quoted for the shell."""
        return {"num-cpus": str(self.num_cpus), "num-gpus": str(self.num_gpus),
                "resources": '"' + json.dumps(self.resources, sort_keys=True).replace('"', '\\"') + '"',
                "labels": self.labels_arg()}

    def all_resources(self) -> dict[str, float]:
        """Every resource the node offers, as the cluster launcher's node types declare them."""
        out: dict[str, float] = {CPU: self.num_cpus, **self.resources}
        if self.num_gpus:
            out[GPU] = self.num_gpus
        if self.memory_bytes:
            out["memory"] = self.memory_bytes
        return out


def accelerator_label(dc: DataCenter) -> str:
    fams = sorted({p.family.value for p in dc.pools}) or [Family.CPU.value]
    return "_".join(fams)


def node_tags(
    dc: DataCenter,
    network: Network,
    *,
    num_cpus: int | None = None,
    accelerators: dict[str, int] | None = None,
    memory_bytes: int | None = None,
) -> NodeTags:
    """Ray node settings for ``dc``; ``accelerators`` (model -> count) overrides the pools."""
    counts = accelerators if accelerators is not None else {p.model: p.count for p in dc.pools}
    resources: dict[str, float] = {
        dc_resource(dc.id): NODE_UNITS,
        region_resource(dc.region.value): NODE_UNITS,
    }
    for city in network.serves_realtime(dc.id):
        resources[rt_resource(city)] = NODE_UNITS
    gpus = 0
    for pool in dc.pools:
        n = counts.get(pool.model, 0)
        if n <= 0:
            continue
        resources[accelerator_type_resource(pool.model)] = NODE_UNITS
        if pool.family is Family.CUDA:
            gpus += n
        else:
            resources[NPU] = resources.get(NPU, 0) + n
    labels = {LABEL_DC: dc.id, LABEL_REGION: dc.region.value, LABEL_ACCELERATOR: accelerator_label(dc)}
    return NodeTags(dc.id, num_cpus if num_cpus is not None else dc.cpus, gpus, resources, labels, memory_bytes)


@dataclass(frozen=True, slots=True)
class RayRequest:
    """The exact Ray request of a placement, as task and Jobs API options."""

    resources: dict[str, float]
    num_cpus: float
    num_gpus: int = 0
    memory_bytes: int = 0
    label_selector: dict[str, str] = field(default_factory=dict)
    bundles: tuple[dict[str, float], ...] = ()
    strategy: str = "PACK"

    def task_options(self) -> dict[str, Any]:
        """Options for ``ray.remote(...).options(**opts)``."""
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "resources": dict(self.resources)}
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        if self.memory_bytes:
            opts["memory"] = self.memory_bytes
        if self.label_selector:
            opts["label_selector"] = dict(self.label_selector)
        return opts

    def job_options(self) -> dict[str, Any]:
        """Keyword arguments for ``JobSubmissionClient.submit_job``.

        The entrypoint holds only the pins (DC, region, rt:<origin>, accelerator
        model: fractions of a node's unit), no CPU and no accelerator: the step's
        CPUs and accelerators are taken once, by the task its driver starts
        (``task_options()``), as the reservation journal books them. Holding them
        in the entrypoint too would book a step twice in Ray (an Ascend step asking
        for all of a DC's NPUs could never start its task).
        """
        pins = {k: v for k, v in self.resources.items() if k != NPU}
        opts: dict[str, Any] = {"entrypoint_num_cpus": 0, "entrypoint_resources": pins}
        if self.label_selector:
            opts["entrypoint_label_selector"] = dict(self.label_selector)
        return opts

    def submit_flags(self) -> str:
        """The equivalent ``ray job submit`` flags."""
        o = self.job_options()
        parts = [f"--entrypoint-num-cpus={o['entrypoint_num_cpus']}",
                 "--entrypoint-resources=" + shlex.quote(json.dumps(o["entrypoint_resources"], sort_keys=True))]
        if "entrypoint_label_selector" in o:
            parts.append("--entrypoint-label-selector="
                         + shlex.quote(json.dumps(o["entrypoint_label_selector"], sort_keys=True)))
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "resources": dict(self.resources), "num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
            "memory_bytes": self.memory_bytes, "label_selector": dict(self.label_selector),
            "bundles": [dict(b) for b in self.bundles], "strategy": self.strategy,
            "job": self.job_options(),
        }


_MEMO: dict[tuple[Any, ...], RayRequest] = {}
_MEMO_MAX = 4096  # distinct request shapes kept; past it the memo starts afresh


def ray_request(
    dc: DataCenter,
    *,
    family: Family,
    model: str | None,
    count: int,
    per_node: int,
    cpus: float,
    memory_gb: float,
    realtime_origin: str | None,
) -> RayRequest:
    """The Ray request that pins ``dc`` (and ``rt:<origin>`` for real-time work).

    Memoised per request shape (the request reads only ``dc.id`` of the DC): equal
    arguments give the same :class:`RayRequest`, shared by every placement of that
    shape. It is a frozen value; its mappings are read-only by contract (every method
    that hands one out copies it).
    """
    key = (dc.id, family, model, count, per_node, cpus, memory_gb, realtime_origin)
    got = _MEMO.get(key)
    if got is None:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        got = _MEMO[key] = _build_request(dc.id, family, model, count, per_node, cpus, memory_gb, realtime_origin)
    return got


def _build_request(dc_id: str, family: Family, model: str | None, count: int, per_node: int, cpus: float,
                   memory_gb: float, realtime_origin: str | None) -> RayRequest:
    pins: dict[str, float] = {dc_resource(dc_id): PIN}
    if realtime_origin:
        pins[rt_resource(realtime_origin)] = PIN
    accel: dict[str, float] = {}
    gpus = 0
    if family is not Family.CPU and model:
        pins[accelerator_type_resource(model)] = PIN
        if family is Family.CUDA:
            gpus = count
        else:
            accel[NPU] = float(count)
    bundles: tuple[dict[str, float], ...] = ()
    if count > per_node:
        full, rest = divmod(count, per_node)
        sizes = [per_node] * full + ([rest] if rest else [])
        key = "GPU" if family is Family.CUDA else NPU
        bundles = tuple({key: float(n), "CPU": 1.0, dc_resource(dc_id): PIN} for n in sizes)
    return RayRequest(
        resources={**pins, **accel},
        num_cpus=float(cpus),
        num_gpus=gpus,
        memory_bytes=int(memory_gb * 2**30),
        label_selector={LABEL_DC: dc_id},
        bundles=bundles,
    )
