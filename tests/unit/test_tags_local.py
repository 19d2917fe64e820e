"""Tag vocabulary, the local profile and the live-capacity snapshot (no Ray needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ray_cluster.live import NodeView, snapshot
from ray_cluster.local import load_profile, parse_profile
from ray_cluster.local.auth import client_env, ensure_token, export_lines
from tests.builders import make_spec, national
from westflow.errors import ConfigError
from westflow.placement import Reason, get_policy
from westflow.tags import (
    LABEL_DC,
    NODE_UNITS,
    NPU,
    dc_of_labels,
    dc_of_resources,
    dc_resource,
    rt_resource,
)


def test_local_profile_covers_east_west_cuda_and_ascend() -> None:
    prof = load_profile(national())
    regions = [national().dc(d).region.value for d in prof.dc_ids]
    assert regions.count("east") >= 2 and regions.count("west") >= 2
    tags = [prof.tags(d) for d in prof.dc_ids]
    assert any(t.num_gpus for t in tags) and any(t.resources.get(NPU) for t in tags)
    assert all(t.num_cpus == 2 for t in tags)


def test_node_tags_advertise_dc_region_rt_and_accelerators() -> None:
    t = load_profile(national()).tags("helinger")
    assert t.resources[dc_resource("helinger")] == NODE_UNITS
    assert t.resources["region:west"] == NODE_UNITS
    assert t.resources[rt_resource("beijing")] == NODE_UNITS
    assert t.num_gpus == 4 and t.resources[NPU] == 4
    assert t.labels[LABEL_DC] == "helinger"
    args = t.ray_start_args()
    assert json.loads(next(a for a in args if a.startswith("--resources="))[12:]) == t.resources
    assert "--labels=westflow.io/accelerator=cann_cuda,westflow.io/dc=helinger,westflow.io/region=west" in args


def test_rt_resources_match_the_latency_bound() -> None:
    n = national()
    for dc in load_profile(n).dc_ids:
        rts = {k[3:] for k in load_profile(n).tags(dc).resources if k.startswith("rt:")}
        assert rts == {c for c in n.city_ids if n.rtt(dc, c) <= 18.0}  # the 20 ms bound less its guard band


@pytest.mark.parametrize("data, field", [
    ({"data_centers": [{"id": "atlantis"}]}, "data_centers.0.id"),
    ({"data_centers": [{"id": "wuhu", "accelerators": {"H100": 4}}]}, "data_centers.0.accelerators"),
    ({"data_centers": [{"id": "wuhu"}], "colour": "red"}, "colour"),
    ({"data_centers": [{"id": "wuhu"}], "host": "10.1.2.3"}, "host"),
    ({"data_centers": [{"id": "wuhu"}], "host": "localhost"}, "host"),
    ({"data_centers": [{"id": "wuhu"}], "first_node_ip": "127.0.0.1"}, "first_node_ip"),
    ({"data_centers": [{"id": "wuhu"}], "first_node_ip": "192.0.2.2"}, "first_node_ip"),
    ({"data_centers": [{"id": "wuhu"}, {"id": "guian"}], "first_node_ip": "127.255.255.255"}, "first_node_ip"),
], ids=["unknown-dc", "unknown-model", "unknown-key", "host-not-loopback", "host-name", "node-ip-127.0.0.1",
        "node-ip-not-loopback", "node-ips-leave-127/8"])
def test_bad_profile_is_rejected(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_profile(data, national())
    assert err.value.field == field


def test_each_node_has_its_own_loopback_address() -> None:
    prof = load_profile(national())
    ips = [prof.node_ip(d) for d in prof.dc_ids]
    assert ips == [f"127.0.0.{i}" for i in range(2, 2 + len(ips))]
    assert prof.head_ip == "127.0.0.2" and prof.host == "127.0.0.1"
    moved = parse_profile({"data_centers": [{"id": "wuhu"}, {"id": "guian"}], "first_node_ip": "127.0.1.9"},
                          national())
    assert [moved.node_ip(d) for d in moved.dc_ids] == ["127.0.1.9", "127.0.1.10"]


def test_bad_node_ip_names_field_value_and_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"first_node_ip.*'127\.0\.0\.1'.*loopback.*other than 127\.0\.0\.1"):
        parse_profile({"data_centers": [{"id": "wuhu"}], "first_node_ip": "127.0.0.1"}, national())


def test_dc_of_labels_and_resources() -> None:
    assert dc_of_labels({LABEL_DC: "wuhu"}) == "wuhu"
    assert dc_of_labels({}) is None
    assert dc_of_resources({"CPU": 2, "dc:guian": 1000}) == "guian"


def _view(dc: str, *, gpu: float = 0, gpu_free: float = 0, alive: bool = True, model: str = "H20") -> NodeView:
    total = {"CPU": 2.0, "memory": 2.0**36, dc_resource(dc): 1000.0, "GPU": gpu,
             f"accelerator_type:{model}": 1000.0}
    avail = dict(total, GPU=gpu_free, CPU=1.0)
    return NodeView(f"node-{dc}", alive, total, avail, {LABEL_DC: dc})


def test_snapshot_reads_free_accelerators_and_drops_dead_nodes() -> None:
    cap = snapshot(national(), [_view("zhongwei", gpu=8, gpu_free=2), _view("helinger", gpu=4, alive=False)])
    assert set(cap) == {"zhongwei"}
    assert cap["zhongwei"].free == {"H20": 2}
    assert cap["zhongwei"].free_cpus == 1.0 and cap["zhongwei"].free_memory_gb == 64.0
    assert cap["zhongwei"].utilisation == pytest.approx(0.75)


def test_full_dc_moves_placement_and_missing_dc_is_unavailable() -> None:
    views = [_view("zhongwei", gpu=8, gpu_free=0), _view("zhangjiakou", gpu=8, gpu_free=8, model="A800")]
    p = get_policy("westflow").place(make_spec(accelerator={"cuda": 2}, cpus=1, memory_gb=1), national(),
                                     snapshot(national(), views))
    assert p.data_center == "zhangjiakou"
    reasons = {r.data_center: r.reason for r in p.rejected}
    assert reasons["zhongwei"] is Reason.CAPACITY and reasons["helinger"] is Reason.UNAVAILABLE


def test_token_is_private_and_never_in_export_lines(tmp_path: Any) -> None:
    path = ensure_token(tmp_path)
    token = path.read_text()
    assert len(token) == 64 and (path.stat().st_mode & 0o777) == 0o600
    assert ensure_token(tmp_path).read_text() == token  # stable across calls
    lines = export_lines(tmp_path, "http://127.0.0.1:8265")
    assert "export RAY_AUTH_MODE=token" in lines and not any(token in line for line in lines)
    env = client_env(tmp_path, {"RAY_AUTH_TOKEN": "stale"})
    assert env["RAY_AUTH_TOKEN_PATH"] == str(path) and "RAY_AUTH_TOKEN" not in env


def test_a_token_file_others_can_read_is_made_private_again(tmp_path: Any) -> None:
    import os

    path = ensure_token(tmp_path)
    token = path.read_text()
    os.chmod(path, 0o644)
    assert ensure_token(tmp_path).read_text() == token and (path.stat().st_mode & 0o777) == 0o600


def test_ray_temp_dir_is_private_and_not_predictable(tmp_path: Any) -> None:
    import os
    import stat
    from pathlib import Path

    from ray_cluster.local import LocalNetwork
    from westflow.config import load_network

    state = tmp_path / ("long-state-dir-" + "x" * 40)  # too long for Ray's socket paths: a dir in /tmp
    net = LocalNetwork(state, load_profile(load_network()).as_one_cluster())
    assert net._temp_dir() == state / "ray-session"  # nothing made before the network starts
    made = net._temp_dir(create=True)
    private = made.parent
    try:
        st = os.lstat(private)
        assert stat.S_ISDIR(st.st_mode) and (st.st_mode & 0o777) == 0o700 and st.st_uid == os.getuid()
        assert private.name.startswith("wf-") and private == Path(os.readlink(state / "ray-session"))
        made.mkdir(mode=0o777)  # Ray makes its own temp dir 0777: the private parent still guards it
        os.chmod(made, 0o777)
        assert net._temp_dir(create=True) == made and net._temp_dir() == made
        os.chmod(private, 0o755)  # someone opened the parent up (or pre-created it): never used again
        again = net._temp_dir(create=True)
        assert again.parent != private and (os.lstat(again.parent).st_mode & 0o777) == 0o700
        net.remove_session_dir()
        assert not again.parent.exists() and not (state / "ray-session").exists()
    finally:
        import shutil

        shutil.rmtree(private, ignore_errors=True)


def test_request_pins_dc_and_rt_for_realtime() -> None:
    p = get_policy("westflow").place(make_spec(tier="realtime", origin="beijing", accelerator={"cuda": 1}),
                                     national())
    opts = p.ray.task_options()
    assert opts["resources"][dc_resource(p.data_center)] > 0 and opts["resources"][rt_resource("beijing")] > 0
    assert opts["label_selector"] == {LABEL_DC: p.data_center}
    assert p.ray.job_options()["entrypoint_label_selector"] == {LABEL_DC: p.data_center}
