"""`westflow queue`, `westflow tenants` and `westflow controller --once` on a real SQLite queue (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from admission.controller import placement_summary
from admission.lease import Leader
from admission.rows import Admission, CycleWrite, Waiting
from admission.specjson import spec_to_json
from admission.workqueue import AdmissionQueue
from tests.builders import make_spec, national
from westflow.placement import get_policy
from westflow_cli.main import main


@pytest.fixture
def queue(tmp_path: Path) -> AdmissionQueue:
    """Three rows: recsys admitted at zhongwei with 2 H20, retail-ai and default pending (one with reasons)."""
    q = AdmissionQueue.local(tmp_path)
    for key, tenant in (("a", "recsys"), ("b", "retail-ai"), ("c", "default")):
        spec = make_spec(name=f"step-{key}", tenant=tenant, accelerator="H20:2")
        q.submit(key, tenant=tenant, priority_class="production", priority=0, spec_name=spec.name,
                 spec_json=spec_to_json(spec), max_wait_s=600, owner="test")
    lease = Leader(q, holder="cli-test").acquire()
    assert lease is not None
    p = get_policy("westflow").place(make_spec(name="step-a", tenant="recsys", accelerator="H20:2"), national())
    assert q.apply(CycleWrite(
        admitted=(Admission("a", p.data_center, p.ray_cluster, p.region, "cuda", "H20", 2, 2.0, 4.0,
                            placement_summary(p), "within quota"),),
        waiting=(Waiting("b", json.dumps({"zhongwei": "no free capacity: H20 0 of 2", "quota": "ok"})),)), lease)
    return q


def test_queue_lists_pending_in_admission_order_with_why(queue: AdmissionQueue, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln[:1].isdigit() and "pending," not in ln]
    # equal priority: the tenant with the lower dominant share first (both use nothing), then age
    assert [ln.split()[1] for ln in lines] == ["b", "c"]
    assert "zhongwei: no free capacity" in out and "not yet considered" in out
    assert "2 pending, 1 admitted" in out
    assert main(["queue", "--state-dir", str(tmp_path), "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["a"]["state"] == "admitted" and rows["b"]["position"] == 1 and rows["a"]["position"] is None


def test_queue_why_shows_reasons_and_decisions(queue: AdmissionQueue, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "--state-dir", str(tmp_path), "--why", "b"]) == 0
    out = capsys.readouterr().out
    assert "retail-ai" in out and "no free capacity" in out and "queued" in out and "waiting" in out
    assert main(["queue", "--state-dir", str(tmp_path), "--why", "nope"]) == 4
    assert "No queue entry 'nope'" in capsys.readouterr().err


def test_tenants_shows_quota_use_borrowed_and_lent(queue: AdmissionQueue, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tenants", "--state-dir", str(tmp_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    cuda = {r["tenant"]: r for r in got["tenants"] if r["resource"] == "cuda"}
    assert cuda["recsys"]["used"] == 2 and cuda["recsys"]["quota"] == 8 and cuda["recsys"]["borrowed"] == 0
    assert got["admitted"]["recsys"] == 1 and got["pending"]["retail-ai"] == 1
    assert main(["tenants", "--state-dir", str(tmp_path)]) == 0
    assert "borrowed" in capsys.readouterr().out


@pytest.mark.parametrize("url", ["sqlite:///relative.db", "mysql://u@h/q", "postgresql://u@h/", "::nonsense::", " "])
def test_a_bad_queue_url_is_bad_input_in_one_line_naming_it(url: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "--db", url, "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("westflow: error: ") and "admission database URL" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_database_that_does_not_answer_is_a_failure_not_bad_input(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://u@/q?host={tmp_path}"  # a Unix socket dir with no server in it: nothing on TCP
    assert main(["queue", "--db", url, "--state-dir", str(tmp_path)]) == 4
    err = capsys.readouterr().err
    assert err.startswith("westflow: failed: ") and "unreachable" in err and "Traceback" not in err
