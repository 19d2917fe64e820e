"""The national network on this machine: profile, token auth, Ray nodes."""

from ray_cluster.local.auth import client_env, ensure_token, export_lines
from ray_cluster.local.clusters import (
    FEDERATION_FILE,
    FederationStatus,
    LocalFederation,
    RecordedCluster,
    recorded_clusters,
)
from ray_cluster.local.launcher import (
    DCStatus,
    LocalNetwork,
    NetworkStatus,
    free_port,
    recorded_serve_url,
    start_services,
    stop_services,
)
from ray_cluster.local.profile import LocalCluster, LocalDC, LocalProfile, Ports, load_profile, parse_profile

__all__ = [
    "LocalNetwork", "NetworkStatus", "DCStatus", "LocalProfile", "LocalDC", "Ports", "load_profile",
    "parse_profile", "free_port", "start_services", "stop_services", "client_env", "ensure_token",
    "export_lines", "LocalFederation", "FederationStatus", "RecordedCluster", "recorded_clusters", "FEDERATION_FILE",
    "LocalCluster", "recorded_serve_url",
]
