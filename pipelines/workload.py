"""Declare a WorkloadSpec on a Dagster asset in one line.

    @westflow_asset(workload={"tier": "batch", "accelerator": "any:4", "duration_hours": 2})
    def nightly_training(context, westflow: WestflowResource): ...

The asset also records its project root (the nearest directory above the
module that defines it with a ``workspace.yaml``, ``pyproject.toml``,
``requirements.txt`` ...): the code the resource ships with the step.

The spec is validated when the definitions load, against the configured network
(``$WESTFLOW_CONFIG_DIR``, default ``configs/``): a bad one raises a
:class:`~westflow.errors.SpecError` naming the asset and the field. The asset
carries the declared spec (loose form, with its name) as metadata; at run time
the resource parses it once, against its own ``config_dir``
(:func:`declared_spec`).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

import dagster as dg

from pipelines.metadata import ACCELERATOR, INPUTS, PROJECT, SPEC, TIER
from ray_cluster.shipping import project_root
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import SpecError
from westflow.inventory import Network
from westflow.spec import WorkloadSpec, parse_spec

__all__ = ["CONFIG_DIR_ENV", "westflow_asset", "declared_spec", "declared_inputs", "declared_project",
           "configured_network"]

CONFIG_DIR_ENV = "WESTFLOW_CONFIG_DIR"


@cache
def _network(config_dir: str) -> Network:
    return load_network(config_dir)


def configured_network() -> Network:
    """The network definitions are checked against: ``$WESTFLOW_CONFIG_DIR``, default ``configs/``."""
    return _network(os.environ.get(CONFIG_DIR_ENV) or str(CONFIG_DIR))


def westflow_asset(
    *,
    workload: Mapping[str, Any],
    inputs: Sequence[str] = (),
    **asset_kwargs: Any,
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """``dg.asset`` that carries a validated WorkloadSpec (and the datasets it reads)."""

    def decorate(fn: Callable[..., Any]) -> dg.AssetsDefinition:
        name = asset_kwargs.get("name") or fn.__name__
        data = {"name": name.replace("_", "-"), **workload}
        spec = parse_spec(data, configured_network(), source=f"asset {name!r}")
        metadata = dict(asset_kwargs.pop("metadata", {}) or {})
        metadata[SPEC] = json.dumps(data, sort_keys=True)
        metadata[INPUTS] = json.dumps(list(inputs))
        source = inspect.getsourcefile(fn)
        if source:
            metadata.setdefault(PROJECT, str(project_root(source)))
        kinds = set(asset_kwargs.pop("kinds", set()) or set()) | {"ray", spec.tier}
        tags = dict(asset_kwargs.pop("tags", {}) or {})
        tags.setdefault(TIER, spec.tier)
        tags.setdefault(ACCELERATOR, str(spec.accelerator).replace(":", "-"))
        return dg.asset(metadata=metadata, kinds=kinds, tags=tags, **asset_kwargs)(fn)

    return decorate


def _text(context: dg.AssetExecutionContext, key: str) -> str | None:
    raw = context.assets_def.metadata_by_key[context.asset_key].get(key)
    if raw is None:
        return None
    return str(raw.value if isinstance(raw, dg.TextMetadataValue) else raw)


def declared_spec(context: dg.AssetExecutionContext, network: Network) -> WorkloadSpec:
    """The executing asset's declared spec, parsed against ``network`` (the resource's)."""
    text = _text(context, SPEC)
    name = context.asset_key.to_user_string()
    if text is None:
        raise SpecError("workload", None, "declared with @westflow_asset", problem="Missing",
                        source=f"asset {name!r}")
    return parse_spec(json.loads(text), network, source=f"asset {name!r}")


def declared_inputs(context: dg.AssetExecutionContext) -> list[str]:
    """The dataset names the executing asset declared it reads."""
    return list(json.loads(_text(context, INPUTS) or "[]"))


def declared_project(context: dg.AssetExecutionContext) -> str | None:
    """The project root the executing asset was defined in (its code travels with the step)."""
    return _text(context, PROJECT)
