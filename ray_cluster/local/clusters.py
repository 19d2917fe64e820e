"""The local federation: several independent Ray clusters on this machine, one S3 server.

Each cluster of the profile (``configs/local.yaml`` ``clusters``) is a
:class:`~ray_cluster.local.launcher.LocalNetwork` of its own, in
``<state>/clusters/<name>/`` (a single-cluster profile's in ``<state>`` itself):
its own head (GCS, dashboard, Jobs API on its own 127.0.0.1 ports), token,
recorded process groups and Ray session dir. The
federation's state dir holds what all share: the embedded S3 server, the
reservation journal, and ``federation.json``, which records how to reach every
cluster (dashboard URL and token file, never the token) for the dispatcher
(:meth:`ray_cluster.federation.Federation.local`).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

import hostprocs as procs
from ray_cluster.local.launcher import LocalNetwork, NetworkStatus, start_services, stop_services
from ray_cluster.local.profile import LocalProfile, Ports
from westflow.errors import ClusterError

__all__ = ["LocalFederation", "FederationStatus", "FEDERATION_FILE", "RecordedCluster", "recorded_clusters"]

FEDERATION_FILE = "federation.json"


class RecordedCluster(BaseModel):
    """One cluster in ``federation.json``: where its Jobs API is, where its token file is, its DCs."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str
    dashboard_url: str
    address: str
    token_path: str
    data_centers: tuple[str, ...]
    serve_url: str = ""


class _Recorded(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    clusters: tuple[RecordedCluster, ...]


def recorded_clusters(state_dir: Path | str) -> tuple[RecordedCluster, ...]:
    """The clusters ``westflow up`` recorded in ``state_dir`` (none if it recorded no federation)."""
    try:
        return _Recorded.model_validate_json((Path(state_dir) / FEDERATION_FILE).read_bytes()).clusters
    except (OSError, ValueError, ValidationError):
        return ()


@dataclass(frozen=True, slots=True)
class FederationStatus:
    """Every cluster's status, in profile order."""

    clusters: tuple[tuple[str, NetworkStatus], ...]

    @property
    def running(self) -> bool:
        return any(st.running for _, st in self.clusters)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(d for _, st in self.clusters for d in st.missing)

    @property
    def rss_bytes(self) -> int:
        return sum(st.rss_bytes for _, st in self.clusters)


class LocalFederation:
    """The local profile's Ray clusters, started, stopped and read together (see the module doc).

    ``ports`` overrides clusters' fixed ports by name (tests pass free ones).
    """

    def __init__(self, state_dir: Path | str, profile: LocalProfile, *, ports: dict[str, Ports] | None = None,
                 workdir: Path | str | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.profile = profile.with_cluster_ports(ports) if ports else profile
        one = len(self.profile.clusters) == 1  # a single cluster lives in the state dir itself, as it always has
        self.clusters: dict[str, LocalNetwork] = {
            name: LocalNetwork(self.state_dir if one else self.state_dir / "clusters" / name,
                               self.profile.cluster(name), workdir=workdir, services=False)
            for name in self.profile.cluster_names}

    def cluster(self, name: str) -> LocalNetwork:
        try:
            return self.clusters[name]
        except KeyError:
            raise ClusterError(f"No local Ray cluster {name!r}; the profile has {sorted(self.clusters)}.") from None

    def cluster_of(self, dc: str) -> LocalNetwork:
        """The cluster whose nodes include ``dc``'s."""
        return self.clusters[self.profile.cluster_of(dc)]

    # -- up / down ----------------------------------------------------------
    def _record(self) -> None:
        rec = _Recorded(clusters=tuple(
            RecordedCluster(name=n, dashboard_url=c.dashboard_url, address=c.address, token_path=str(c.token_path),
                            data_centers=c.profile.dc_ids, serve_url=c.serve_url) for n, c in self.clusters.items()))
        tmp = self.state_dir / (FEDERATION_FILE + ".tmp")
        tmp.write_text(rec.model_dump_json(indent=2))
        tmp.replace(self.state_dir / FEDERATION_FILE)

    def _legacy(self) -> list[LocalNetwork]:
        """With several clusters: a single-cluster network started in the state dir itself (its ``ray.json``),
        by an older westflow or the single-cluster profile; it would hold the same ports."""
        if len(self.clusters) == 1:
            return []
        return [LocalNetwork(self.state_dir, self.profile.as_one_cluster(), services=False)]

    def up(self, *, timeout_s: float = 180.0) -> FederationStatus:
        """Start every cluster that is not running (idempotent; a lost cluster comes back without touching the
        others), then the S3 server; record how to reach each cluster."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for old in self._legacy():
            old.down()
        self._record()
        for c in self.clusters.values():
            c.up(timeout_s=timeout_s)
        start_services(self.state_dir)
        return self.status()

    def down(self) -> list[str]:
        """Stop exactly what ``up`` started in every cluster, and the S3 server; return the DCs stopped."""
        stop_services(self.state_dir)
        stopped = [dc for c in [*self.clusters.values(), *self._legacy()] for dc in c.down()]
        (self.state_dir / FEDERATION_FILE).unlink(missing_ok=True)
        return sorted(stopped)

    def remove_session_dirs(self) -> None:
        for c in self.clusters.values():
            c.remove_session_dir()

    def stop_node(self, dc: str, *, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop one DC's node in its cluster (a worker DC: the site goes dark; the head's DC: its cluster too)."""
        self.cluster_of(dc).stop_node(dc, sig=sig)

    def stop_cluster(self, name: str, *, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill cluster ``name``'s head node (GCS, dashboard, Jobs API): the whole cluster is lost."""
        c = self.cluster(name)
        c.stop_node(c.profile.dc_ids[0], sig=sig)

    # -- reading ------------------------------------------------------------
    def is_up(self) -> bool:
        return all(c.is_up() for c in self.clusters.values())

    def pids(self) -> list[int]:
        return [p for c in self.clusters.values() for p in c.pids()]

    def rss_bytes(self) -> int:
        return sum(c.rss_bytes() for c in self.clusters.values())

    def worker_rss_bytes(self) -> int:
        """Resident memory of every cluster's Ray workers (see :meth:`LocalNetwork.worker_pids`)."""
        return procs.rss_bytes([p for c in self.clusters.values() for p in c.worker_pids()])

    def pss_bytes(self) -> int:
        """Memory of every process of every cluster, pages shared between processes counted once."""
        return sum(c.pss_bytes() for c in self.clusters.values())

    def status(self) -> FederationStatus:
        return FederationStatus(tuple((n, c.status()) for n, c in self.clusters.items()))
