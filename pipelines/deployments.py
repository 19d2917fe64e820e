"""The westflow resource per deployment, chosen by ``$WESTFLOW_DEPLOYMENT``.

- ``local`` (default): the network on this machine. The local federation
  ``westflow up`` recorded in the state dir (``federation.json``: every
  cluster's dashboard URL and token file) is used as it is at run time, so a
  project outside this repository needs no exports; a single cluster named in
  the environment (``$WESTFLOW_RAY_ADDRESS`` or ``$RAY_ADDRESS``,
  ``$RAY_AUTH_TOKEN_PATH``) wins over it; a single-cluster network recorded in
  ``ray.json`` is configured explicitly.
- ``cluster``: one remote Ray cluster; address and token are required secrets,
  read through ``dg.EnvVar`` (``$WESTFLOW_RAY_ADDRESS``, ``$RAY_AUTH_TOKEN``), so
  the UI shows their names, never their values.
- ``federation``: every Ray cluster of ``configs/network.yaml`` that names its
  ``dashboard_url`` and token source (docs/federation.md); a Secret's token
  arrives as ``$WESTFLOW_RAY_TOKEN_<NAME>``.

Both read ``$WESTFLOW_STATE_DIR`` (reservation journal, S3 config),
``$WESTFLOW_CONFIG_DIR`` and ``$WESTFLOW_POLICY``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from pipelines.resources import ROOT, WestflowResource
from pipelines.workload import CONFIG_DIR_ENV
from ray_cluster.access import ADDRESS_ENV, RAY_ADDRESS_ENV, TOKEN_ENV
from ray_cluster.local import recorded_clusters
from ray_cluster.local.auth import TOKEN_FILE
from westflow.config import CONFIG_DIR
from westflow.errors import ConfigError

__all__ = ["DEPLOYMENT_ENV", "DEPLOYMENTS", "westflow_resource"]

DEPLOYMENT_ENV = "WESTFLOW_DEPLOYMENT"
DEPLOYMENTS = ("local", "cluster", "federation")


def westflow_resource(env: Mapping[str, str] | None = None) -> WestflowResource:
    """The resource of the deployment ``env`` names (default: this process's environment)."""
    env = os.environ if env is None else env
    deployment = env.get(DEPLOYMENT_ENV) or "local"
    state_dir = env.get("WESTFLOW_STATE_DIR") or str(ROOT / ".westflow")
    config_dir = env.get(CONFIG_DIR_ENV) or str(CONFIG_DIR)
    policy = env.get("WESTFLOW_POLICY") or "westflow"
    if deployment == "local":
        url, token_path = (None, None) if env.get(ADDRESS_ENV) or env.get(RAY_ADDRESS_ENV) or recorded_clusters(
            state_dir) else _recorded_network(Path(state_dir))
        return WestflowResource(state_dir=state_dir, config_dir=config_dir, policy=policy, ray_address=url,
                                ray_auth_token_path=token_path)
    if deployment == "federation":
        return WestflowResource(clusters="inventory", state_dir=state_dir, config_dir=config_dir, policy=policy)
    if deployment == "cluster":
        return WestflowResource(ray_address=dg.EnvVar(ADDRESS_ENV), ray_auth_token=dg.EnvVar(TOKEN_ENV),
                                state_dir=state_dir, config_dir=config_dir, policy=policy)
    raise ConfigError(f"${DEPLOYMENT_ENV}", "deployment", deployment, DEPLOYMENTS,
                      fix=f"unset {DEPLOYMENT_ENV} (local) or set it to one of those.")


def _recorded_network(state_dir: Path) -> tuple[str | None, str | None]:
    """The dashboard URL and token file of the local network ``westflow up`` recorded in ``state_dir``."""
    try:
        url = json.loads((state_dir / "ray.json").read_text())["dashboard_url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    token = state_dir / TOKEN_FILE
    return (str(url), str(token)) if token.is_file() else (None, None)
