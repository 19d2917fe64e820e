"""Declare a WorkloadSpec on a Dagster asset in one line.

    @westflow_asset(workload={"tier": "batch", "accelerator": "any:4", "duration_hours": 2})
    def nightly_training(context, westflow: WestflowResource): ...

The spec is validated when the definitions load: a bad one raises a
:class:`~westflow.errors.SpecError` naming the asset and the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from westflow.config import load_network
from westflow.errors import SpecError
from westflow.inventory import Network
from westflow.spec import WorkloadSpec, parse_spec

__all__ = ["SPEC_METADATA_KEY", "INPUTS_METADATA_KEY", "westflow_asset", "spec_of", "declared_inputs"]

SPEC_METADATA_KEY = "westflow/spec"
INPUTS_METADATA_KEY = "westflow/inputs"

_NETWORK: list[Network] = []


def _network() -> Network:
    if not _NETWORK:
        _NETWORK.append(load_network())
    return _NETWORK[0]


def validated_spec(asset_name: str, workload: Mapping[str, Any]) -> WorkloadSpec:
    """The WorkloadSpec of ``asset_name``; SpecError names the asset and the field."""
    data = {"name": asset_name.replace("_", "-"), **workload}
    return parse_spec(data, _network(), source=f"asset {asset_name!r}")


def westflow_asset(
    *,
    workload: Mapping[str, Any],
    inputs: Sequence[str] = (),
    **asset_kwargs: Any,
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """``dg.asset`` that carries a validated WorkloadSpec (and the datasets it reads)."""

    def decorate(fn: Callable[..., Any]) -> dg.AssetsDefinition:
        name = asset_kwargs.get("name") or fn.__name__
        spec = validated_spec(name, workload)
        metadata = dict(asset_kwargs.pop("metadata", {}) or {})
        metadata[SPEC_METADATA_KEY] = json.dumps(dict(workload), sort_keys=True)
        metadata[INPUTS_METADATA_KEY] = json.dumps(list(inputs))
        kinds = set(asset_kwargs.pop("kinds", set()) or set()) | {"ray", spec.tier}
        tags = dict(asset_kwargs.pop("tags", {}) or {})
        tags.setdefault("westflow/tier", spec.tier)
        tags.setdefault("westflow/accelerator", str(spec.accelerator).replace(":", "-"))
        return dg.asset(metadata=metadata, kinds=kinds, tags=tags, **asset_kwargs)(fn)

    return decorate


def spec_of(context: dg.AssetExecutionContext) -> WorkloadSpec:
    """Read back the spec declared on the executing asset."""
    key = context.asset_key
    meta = context.assets_def.metadata_by_key[key]
    raw = meta.get(SPEC_METADATA_KEY)
    if raw is None:
        raise SpecError("workload", None, "declared with @westflow_asset", problem="Missing",
                        source=f"asset {key.to_user_string()!r}")
    text = raw.value if isinstance(raw, dg.TextMetadataValue) else str(raw)
    return validated_spec(key.path[-1], json.loads(text))


def declared_inputs(context: dg.AssetExecutionContext) -> list[str]:
    raw = context.assets_def.metadata_by_key[context.asset_key].get(INPUTS_METADATA_KEY, "[]")
    text = raw.value if isinstance(raw, dg.TextMetadataValue) else str(raw)
    return list(json.loads(text))
