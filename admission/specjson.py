"""A workload spec as the queue stores it: JSON text, read back into the same validated :class:`WorkloadSpec`."""

from __future__ import annotations

import json
from typing import Any

from westflow.errors import SpecError
from westflow.inventory import Family, Region
from westflow.spec import AcceleratorRequest, DatasetRef, WorkloadSpec

__all__ = ["spec_to_json", "spec_from_json"]


def spec_to_json(spec: WorkloadSpec) -> str:
    """The spec's every field as JSON (stable key order)."""
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True, allow_nan=False)


def spec_from_json(text: str) -> WorkloadSpec:
    """The spec :func:`spec_to_json` wrote, validated again; a SpecError names what is wrong."""
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError("<queued spec>", text[:80], "the JSON the queue wrote", problem="Unreadable") from exc
    if not isinstance(data, dict):
        raise SpecError("<queued spec>", type(data).__name__, "a JSON object")
    acc = data.get("accelerator") or {}
    data["accelerator"] = AcceleratorRequest(Family(acc.get("family", "cpu")), acc.get("count", 0), acc.get("model"))
    data["inputs"] = tuple(DatasetRef(i["name"], Region(i["region"]), i["size_bytes"], i.get("bucket"))
                           for i in data.get("inputs") or ())
    return WorkloadSpec(**data)
