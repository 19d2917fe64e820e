"""The federation's pure parts: the local profile's clusters, the grouping of DCs into clusters, the capacity
of an unreachable cluster in the rejection table, token sources, and the bounded concurrent read."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ray_cluster.access import ClusterAccess
from ray_cluster.federation import ClusterRead, Federation, Member, token_of
from ray_cluster.live import NodeView
from ray_cluster.local import LocalFederation, Ports, load_profile, parse_profile
from ray_cluster.retry import RetryPolicy
from westflow.config import load_network
from westflow.errors import ClusterError, ConfigError, InfeasibleError
from westflow.inventory import Network, RayCluster, TokenSource
from westflow.placement import get_policy
from westflow.spec import parse_spec
from westflow.tags import node_tags


@pytest.fixture(scope="module")
def network() -> Network:
    return load_network()


def _access(port: int = 1) -> ClusterAccess:
    return ClusterAccess(f"http://127.0.0.1:{port}", "t" * 64)


def test_the_default_local_profile_is_two_clusters_with_their_own_heads_and_ports(network: Network) -> None:
    prof = load_profile(network)
    assert prof.cluster_names == ("east", "west")
    east, west = prof.cluster("east"), prof.cluster("west")
    assert east.dc_ids == ("zhangjiakou", "wuhu") and west.dc_ids == ("helinger", "guian", "zhongwei")
    assert len({east.ports.gcs, east.ports.dashboard, east.ports.client_server,
                west.ports.gcs, west.ports.dashboard, west.ports.client_server}) == 6
    # node addresses stay unique over the whole federation; each head is its cluster's first DC
    ips = [prof.cluster(c).node_ip(d) for c in prof.cluster_names for d in prof.cluster(c).dc_ids]
    assert ips == [f"127.0.0.{i}" for i in range(2, 7)]
    assert east.head_ip == "127.0.0.2" and west.head_ip == "127.0.0.4"
    assert prof.cluster_of("zhongwei") == "west" and prof.cluster_of("wuhu") == "east"
    one = prof.as_one_cluster()
    assert one.cluster_names == ("local",) and one.dc_ids == prof.dc_ids and one.ports == east.ports


def test_placement_names_the_local_cluster_of_its_dc(network: Network) -> None:
    grouped = load_profile(network).grouped_network
    spec = parse_spec({"name": "t", "tier": "batch", "accelerator": "cuda:2"}, grouped)
    p = get_policy("westflow").place(spec, grouped)
    assert p.ray_cluster == grouped.dc(p.data_center).ray_cluster
    assert {grouped.dc(d).ray_cluster for d in ("helinger", "guian", "zhongwei")} == {"west"}
    assert {grouped.dc(d).ray_cluster for d in ("zhangjiakou", "wuhu")} == {"east"}
    # a DC the profile does not run keeps the inventory's cluster
    others = [d for d in network.dc_ids if d not in load_profile(network).dc_ids]
    assert all(grouped.dc(d).ray_cluster == network.dc(d).ray_cluster for d in others)


@pytest.mark.parametrize("data, field", [
    ({"clusters": [{"name": "a", "ports": {"gcs": 7000, "dashboard": 7001, "client_server": 7002},
                    "data_centers": [{"id": "wuhu"}]}],
      "data_centers": [{"id": "guian"}]}, "clusters"),
    ({}, "clusters"),
    ({"clusters": [{"name": "a", "ports": {"gcs": 7000, "dashboard": 7001, "client_server": 7002},
                    "data_centers": [{"id": "wuhu"}]},
                   {"name": "a", "ports": {"gcs": 7010, "dashboard": 7011, "client_server": 7012},
                    "data_centers": [{"id": "guian"}]}]}, "clusters.1.name"),
    ({"clusters": [{"name": "a", "ports": {"gcs": 7000, "dashboard": 7001, "client_server": 7002},
                    "data_centers": [{"id": "wuhu"}]},
                   {"name": "b", "ports": {"gcs": 7010, "dashboard": 7001, "client_server": 7012},
                    "data_centers": [{"id": "guian"}]}]}, "clusters.1.ports.dashboard"),
    ({"clusters": [{"name": "a", "ports": {"gcs": 7000, "dashboard": 7001, "client_server": 7002},
                    "data_centers": [{"id": "wuhu"}]},
                   {"name": "b", "ports": {"gcs": 7010, "dashboard": 7011, "client_server": 7012},
                    "data_centers": [{"id": "wuhu"}]}]}, "clusters.1.data_centers.0.id"),
], ids=["both-forms", "neither-form", "duplicate-name", "shared-port", "dc-in-two-clusters"])
def test_bad_federation_profile_names_the_field(network: Network, data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_profile(data, network)
    assert err.value.field == field


def test_local_federation_keeps_each_cluster_in_its_own_state_dir(network: Network, tmp_path: Any) -> None:
    fed = LocalFederation(tmp_path, load_profile(network), ports={"west": Ports(7100, 7101, 7102)})
    east, west = fed.cluster("east"), fed.cluster("west")
    assert east.state_dir == tmp_path.resolve() / "clusters" / "east"
    assert east.token_path != west.token_path
    assert west.dashboard_url == "http://127.0.0.1:7101" and east.dashboard_url == "http://127.0.0.1:8265"
    assert fed.cluster_of("zhongwei") is west
    with pytest.raises(ClusterError, match="No local Ray cluster 'north'"):
        fed.cluster("north")
    assert fed.status().running is False


def _view(dc: str, network: Network, gpus: float = 8.0, used: float = 0.0) -> NodeView:
    t = node_tags(network.dc(dc), network, num_cpus=2, accelerators={network.dc(dc).pools[0].model: int(gpus)},
                  memory_bytes=64 * 2**30)
    total = {"CPU": 2.0, "memory": float(64 * 2**30), **{k: float(v) for k, v in t.resources.items()}}
    if t.num_gpus:
        total["GPU"] = float(t.num_gpus)
    avail = dict(total)
    if "GPU" in avail:
        avail["GPU"] -= used
    return NodeView(f"node-{dc}", True, total, avail, dict(t.labels))


def test_an_unreachable_cluster_makes_its_dcs_ineligible_with_the_reason(network: Network) -> None:
    fed = Federation([Member("east", _access(1), ("zhangjiakou", "wuhu")),
                      Member("west", _access(2), ("helinger", "guian", "zhongwei"))])
    grouped = fed.grouped(network)
    reads = {"east": ClusterRead("east", (_view("zhangjiakou", grouped),)),
             "west": ClusterRead("west", error="Ray dashboard http://127.0.0.1:2 did not answer GET /api/v0/nodes")}
    caps, totals = fed.capacity_and_totals(grouped, reads)
    for dc in ("helinger", "guian", "zhongwei"):
        assert not caps[dc].alive and caps[dc].why.startswith("cluster unreachable: west: Ray dashboard")
    assert caps["zhangjiakou"].alive
    spec = parse_spec({"name": "train", "tier": "batch", "accelerator": "cuda:2"}, grouped)
    p = get_policy("westflow").place(spec, grouped, caps)
    assert p.data_center == "zhangjiakou" and p.ray_cluster == "east"
    why = {r.data_center: r.detail for r in p.rejected}
    assert why["zhongwei"].startswith("cluster unreachable: west: ")
    assert why["yrd_demo"] == "no live Ray node for this DC"  # not in this federation: as before
    # nothing eligible: the error's table says the same
    h20 = parse_spec({"name": "h20", "tier": "batch", "accelerator": {"family": "cuda", "model": "H20", "count": 1}},
                     grouped)
    with pytest.raises(InfeasibleError) as err:
        get_policy("westflow").place(h20, grouped, caps)
    assert {r.data_center: r.detail for r in err.value.rejected}["zhongwei"].startswith("cluster unreachable: west")


def test_a_single_cluster_runs_every_dc_under_the_inventory_names(network: Network) -> None:
    fed = Federation.single(_access(), network)
    grouped = fed.grouped(network)
    assert {d.ray_cluster for d in grouped.data_centers} == {"default"}
    assert fed.dispatcher("default") is fed.dispatcher("default")
    with pytest.raises(ClusterError, match="No Ray cluster 'jjj' in this federation"):
        fed.dispatcher("jjj")


def test_token_sources_name_where_the_token_is_never_the_token(tmp_path: Any) -> None:
    c = RayCluster("west", dashboard_url="http://127.0.0.1:1")
    assert token_of(c, TokenSource(env="MY_TOKEN"), {"MY_TOKEN": "abc"}) == "abc"
    assert token_of(c, TokenSource(secret="westflow-west-ray-token"), {"WESTFLOW_RAY_TOKEN_WEST": "s3cr"}) == "s3cr"
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    assert token_of(c, TokenSource(file=str(f)), {}) == "from-file"
    with pytest.raises(ClusterError, match=r"\$WESTFLOW_RAY_TOKEN_WEST is empty or unset"):
        token_of(c, TokenSource(secret="westflow-west-ray-token"), {})


def test_inventory_clusters_say_how_to_reach_them(network: Network) -> None:
    assert all(c.dashboard_url and c.token and c.token.secret for c in network.clusters)
    env = {f"WESTFLOW_RAY_TOKEN_{c.name.upper()}": f"tok-{c.name}" for c in network.clusters}
    fed = Federation.of_network(network, env)
    assert fed.names == tuple(c.name for c in network.clusters)
    assert fed.access("jjj").token == "tok-jjj"
    assert fed.access("jjj").dashboard_url == "http://westflow-jjj-head-svc.westflow.svc.cluster.local:8265"


class _Slow(http.server.BaseHTTPRequestHandler):
    hold = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.hold.wait(10)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def silent_server() -> Iterator[int]:
    """A dashboard that accepts the connection and never answers (until the test ends)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        _Slow.hold.set()
        server.shutdown()
        _Slow.hold.clear()


def test_a_silent_cluster_is_unreachable_when_its_time_is_up(network: Network, silent_server: int) -> None:
    fed = Federation([Member("west", _access(silent_server), ("zhongwei",))], timeout_s=0.3)
    t0 = time.monotonic()
    reads = fed.read()
    took = time.monotonic() - t0
    assert not reads["west"].reachable and "west" in reads
    assert took < 5.0  # bounded by the timeout, not by the server (which holds for 10 s)


def test_retry_policy_spanning_waits_at_least_the_window() -> None:
    p = RetryPolicy.spanning(20.0)
    assert p.total_s() >= 20.0 and RetryPolicy(attempts=p.attempts - 1, base_s=0.5, max_s=4.0,
                                                 jitter=0).total_s() < 20.0


class _GatedReader:
    """A dashboard reader whose ``nodes()`` blocks until the test opens the gate; counts the reads sent."""

    calls = 0
    entered = threading.Event()
    gate = threading.Event()

    def __init__(self, url: str, token: str | None, *, timeout_s: float) -> None:
        pass

    def nodes(self) -> list[NodeView]:
        type(self).calls += 1
        type(self).entered.set()
        assert type(self).gate.wait(30), "the test never opened the gate"
        return [NodeView("n1", True, {"CPU": 4.0}, {"CPU": 4.0}, {}, True)]


def test_reads_made_while_one_is_in_flight_join_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray_cluster.federation as federation

    class Reader(_GatedReader):
        calls, entered, gate = 0, threading.Event(), threading.Event()

    monkeypatch.setattr(federation, "DashboardReader", Reader)
    fed = Federation([Member("west", _access(), ("zhongwei",))], timeout_s=30)
    got: list[dict[str, ClusterRead]] = []
    first = threading.Thread(target=lambda: got.append(fed.read()))
    first.start()
    assert Reader.entered.wait(30)
    others = [threading.Thread(target=lambda: got.append(fed.read())) for _ in range(5)]
    for t in others:
        t.start()
    deadline = time.monotonic() + 30
    while (fed._flight.joined if fed._flight else 0) < 5:  # every other read waits on the one in flight
        assert time.monotonic() < deadline, "the reads did not join the one in flight"
        time.sleep(0.01)
    Reader.gate.set()
    for t in [first, *others]:
        t.join(30)
    assert Reader.calls == 1 and len(got) == 6
    assert all(r["west"].reachable and [n.node_id for n in r["west"].nodes] == ["n1"] for r in got)
    fed.read()  # none in flight: a new read is sent
    assert Reader.calls == 2
