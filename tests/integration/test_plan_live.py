"""``westflow plan --live`` places on the running network's capacity, not the inventory's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ray_cluster.local import LocalNetwork
from westflow_cli.main import main

pytestmark = pytest.mark.integration


def test_plan_live_only_offers_dcs_with_live_nodes(ray_network: LocalNetwork, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: live\ntier: realtime\norigin: chengdu\naccelerator: cann:2\ncpus: 1\nmemory_gb: 1\n")
    # the network's access from the environment (as `westflow up` prints it), then from its state dir
    monkeypatch.setenv("WESTFLOW_RAY_ADDRESS", ray_network.dashboard_url)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(ray_network.token_path))
    assert main(["plan", str(spec), "--json", "--live", "--state-dir", str(tmp_path / "no-network-here")]) == 0
    from_env = json.loads(capsys.readouterr().out)
    for var in ("WESTFLOW_RAY_ADDRESS", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    assert main(["plan", str(spec), "--json", "--live", "--state-dir", str(ray_network.state_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert from_env["data_center"] == out["data_center"]
    local = set(ray_network.profile.dc_ids)
    assert out["data_center"] == "guian"  # the one local Ascend site within 20 ms of Chengdu
    assert out["data_center"] in local
    unavailable = {r["data_center"] for r in out["rejected"] if r["reason"] == "unavailable"}
    assert unavailable == {"yrd_demo", "shaoguan", "tianfu", "chongqing", "qingyang"}
    assert main(["plan", str(spec), "--json"]) == 0  # the inventory plan: Qingyang is not running here
    assert json.loads(capsys.readouterr().out)["data_center"] == "qingyang"
