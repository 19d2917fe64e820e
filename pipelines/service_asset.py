"""A Dagster asset that deploys (or rolls) a live service: what the resource's ``serve`` does.

The service's replicas are placed per city (:mod:`ray_cluster.serving`), the model
served is the latest one in S3 (by version digest), and the materialisation
records, per city: DC, cluster, RTT, replicas, endpoint, health, and the model
version now served. A city no DC can take is recorded as degraded with every
DC's reason; if no city is served the step fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from jobs.artifacts import load_model, model_version
from jobs.stores import s3_stores
from ray_cluster.federation import Federation
from ray_cluster.serving import RouteHealth, Services
from storage import S3Config
from westflow.errors import ClusterError, SpecError, StorageError
from westflow.inventory import Network
from westflow.service import parse_service

__all__ = ["deploy_service", "SERVICE", "MODEL_VERSION", "ROUTES", "route_key"]

SERVICE = "westflow/service"
MODEL_VERSION = "westflow/model_version"
ROUTES = "westflow/routes"


def route_key(city: str, what: str) -> str:
    """Per-city metadata key, e.g. ``westflow/shanghai/dc``."""
    return f"westflow/{city}/{what}"


def _table(routes: list[RouteHealth]) -> str:
    rows = ["| city | health | DC | cluster | RTT ms | replicas | endpoint |", "|---|---|---|---|---|---|---|"]
    for h in routes:
        r = h.route
        rtt = f"{r.rtt_ms:.1f}" if r.rtt_ms is not None else "-"
        rows.append(f"| {h.city} | {h.health} | {r.data_center or '-'} | {r.cluster or '-'} | {rtt} | "
                    f"{len(h.replica_dcs)} ({r.min_replicas}-{r.max_replicas}) | {r.endpoint or '-'} |")
    return "\n".join(rows)


def deploy_service(context: dg.AssetExecutionContext, state_dir: Path, federation: Federation, network: Network,
                   service: Mapping[str, Any], *, timeout_s: float) -> dg.MaterializeResult:
    """Deploy or update ``service`` (loose form, as a service YAML) and wait until every city settles."""
    try:
        spec = parse_service(service, network)
        arrays, _ = load_model(s3_stores(S3Config.load(state_dir)), "east", spec.model)
    except (SpecError, StorageError) as exc:
        raise dg.Failure(description=f"westflow cannot deploy service {service.get('name')!r}: {exc}",
                         allow_retries=False) from exc
    version = model_version(arrays)
    services = Services(state_dir, federation, network)
    try:
        services.deploy(spec, version)
        health = services.wait(spec.name, lambda hs: all(h.health in ("healthy", "degraded") for h in hs),
                               timeout_s=timeout_s)
    except ClusterError as exc:
        raise dg.Failure(description=f"westflow could not bring service {spec.name!r} up: {exc}") from exc
    meta: dict[str, Any] = {SERVICE: spec.name, MODEL_VERSION: version, ROUTES: dg.MetadataValue.md(_table(health))}
    for h in health:
        r = h.route
        meta[route_key(h.city, "health")] = h.health
        if r.state == "degraded":
            meta[route_key(h.city, "reason")] = dg.MetadataValue.md("```\n" + r.reason + "\n```")
            context.log.warning(f"westflow: service {spec.name} is degraded for {h.city}:\n{r.reason}")
            continue
        meta.update({route_key(h.city, "dc"): r.data_center, route_key(h.city, "cluster"): r.cluster,
                     route_key(h.city, "rtt_ms"): round(r.rtt_ms or 0.0, 2),
                     route_key(h.city, "replicas"): len(h.replica_dcs),
                     route_key(h.city, "endpoint"): dg.MetadataValue.url(r.endpoint)})
        context.log.info(f"westflow: {spec.name} for {h.city}: {r.data_center} ({r.cluster}, "
                         f"{r.rtt_ms:.1f} ms), {len(h.replica_dcs)} replica(s) at {r.endpoint}, model {version}")
    if all(h.health == "degraded" for h in health):
        raise dg.Failure(description=f"Service {spec.name!r} is degraded in every city: no DC within any "
                                     "city's bound can take it.", metadata=meta)
    return dg.MaterializeResult(metadata=meta)
