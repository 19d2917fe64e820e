"""The westflow CLI: plan output, JSON keys, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from westflow.config import CONFIG_DIR
from westflow_cli.main import EXIT_BAD_INPUT, EXIT_INFEASIBLE, main

EXAMPLES = sorted((CONFIG_DIR / "examples").glob("*.yaml"))


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_plan_json_has_the_documented_keys(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(spec), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ["data_center", "region", "rtt_ms", "energy_kwh", "cost_cny", "ray", "rejected"]:
        assert key in out
    assert "resources" in out["ray"]
    assert f"dc:{out['data_center']}" in out["ray"]["resources"]
    assert all({"data_center", "reason"} <= set(r) for r in out["rejected"])
    assert len(out["rejected"]) == 9


def test_example_decisions(capsys: pytest.CaptureFixture[str]) -> None:
    main(["plan", str(CONFIG_DIR / "examples" / "realtime_scoring.yaml"), "--json"])
    rt = json.loads(capsys.readouterr().out)
    assert rt["rtt_ms"] <= 20 and rt["ray"]["resources"]["rt:shanghai"] > 0
    main(["plan", str(CONFIG_DIR / "examples" / "ascend_batch.yaml"), "--json"])
    asc = json.loads(capsys.readouterr().out)
    assert asc["accelerator_family"] == "cann" and asc["region"] == "west"


def test_plan_text_explains_each_loser(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(CONFIG_DIR / "examples" / "cuda_batch.yaml")]) == 0
    out = capsys.readouterr().out
    assert "placed in" in out and "ray job submit --entrypoint-num-cpus" in out
    assert "no cuda here" in out


def test_bad_spec_exits_2_with_field_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntier: gold\n")
    assert main(["plan", str(p)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "tier" in err and "'gold'" in err and "batch, realtime" in err


def test_infeasible_spec_exits_3_with_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "big.yaml"
    p.write_text("name: big\ntier: realtime\norigin: shanghai\naccelerator: cann:5000\n")
    assert main(["plan", str(p)]) == EXIT_BAD_INPUT  # 5000 > the 4096 a spec may ask for
    p.write_text("name: big\ntier: realtime\norigin: shanghai\naccelerator: cann:4000\n")
    assert main(["plan", str(p)]) == EXIT_INFEASIBLE
    err = capsys.readouterr().err
    assert "guian: latency" in err and "yrd_demo: accelerator" in err


def test_unknown_policy_and_missing_file_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plan", "x.yaml", "--policy", "greedy"])
    assert exc.value.code == EXIT_BAD_INPUT
    assert main(["plan", "/nonexistent.yaml"]) == EXIT_BAD_INPUT


def test_network_prints_matrix_with_marks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["network"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("helinger") and "*" in ln)
    assert "6.9*" in line
    assert "guian" in out and "beijing" in out
