"""The westflow resource per deployment, chosen by ``$WESTFLOW_DEPLOYMENT``.

- ``local`` (default): the network on this machine. Cluster access comes from
  the environment at run time (``$WESTFLOW_RAY_ADDRESS`` or ``$RAY_ADDRESS``,
  ``$RAY_AUTH_TOKEN_PATH``): ``westflow up`` prints those lines and
  ``westflow ui`` sets them for Dagster.
- ``cluster``: a remote Ray cluster; address and token are required secrets,
  read through ``dg.EnvVar`` (``$WESTFLOW_RAY_ADDRESS``, ``$RAY_AUTH_TOKEN``), so
  the UI shows their names, never their values.

Both read ``$WESTFLOW_STATE_DIR`` (reservation journal, S3 config),
``$WESTFLOW_CONFIG_DIR`` and ``$WESTFLOW_POLICY``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from pipelines.resources import ROOT, WestflowResource
from pipelines.workload import CONFIG_DIR_ENV
from ray_cluster.access import ADDRESS_ENV, TOKEN_ENV
from westflow.config import CONFIG_DIR
from westflow.errors import ConfigError

__all__ = ["DEPLOYMENT_ENV", "DEPLOYMENTS", "westflow_resource"]

DEPLOYMENT_ENV = "WESTFLOW_DEPLOYMENT"
DEPLOYMENTS = ("local", "cluster")


def westflow_resource(env: Mapping[str, str] | None = None) -> WestflowResource:
    """The resource of the deployment ``env`` names (default: this process's environment)."""
    env = os.environ if env is None else env
    deployment = env.get(DEPLOYMENT_ENV) or "local"
    state_dir = env.get("WESTFLOW_STATE_DIR") or str(ROOT / ".westflow")
    config_dir = env.get(CONFIG_DIR_ENV) or str(CONFIG_DIR)
    policy = env.get("WESTFLOW_POLICY") or "westflow"
    if deployment == "local":
        return WestflowResource(state_dir=state_dir, config_dir=config_dir, policy=policy)
    if deployment == "cluster":
        return WestflowResource(ray_address=dg.EnvVar(ADDRESS_ENV), ray_auth_token=dg.EnvVar(TOKEN_ENV),
                                state_dir=state_dir, config_dir=config_dir, policy=policy)
    raise ConfigError(f"${DEPLOYMENT_ENV}", "deployment", deployment, DEPLOYMENTS,
                      fix=f"unset {DEPLOYMENT_ENV} (local) or set it to one of those.")
