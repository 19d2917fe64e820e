"""The Prometheus exporter over a fixed capacity snapshot and a real SQLite queue; the Grafana dashboard
queries only what it exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from admission.lease import Leader
from admission.rows import Admission, CycleWrite
from admission.specjson import spec_to_json
from admission.workqueue import AdmissionQueue
from tests.builders import make_spec, national
from westflow.capacity import DCCapacity
from westflow_cli.metrics import METRICS, NetworkCollector

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "westflow.json"


def _scrape(tmp_path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    net = national()
    totals = {"zhongwei": DCCapacity({"H20": 8}, 16, 128, 0.0), "guian": DCCapacity({"Ascend910B": 8}, 16, 128, 0.0)}
    live = {"zhongwei": DCCapacity({"H20": 6}, 16, 128, 0.25), "guian": DCCapacity({}, 0, 0, 0.0, alive=False)}
    q = AdmissionQueue.local(tmp_path)
    spec = make_spec(name="s", tenant="recsys", accelerator="H20:2")
    for key in ("a", "b"):
        q.submit(key, tenant="recsys", priority_class="production", priority=0, spec_name="s",
                 spec_json=spec_to_json(spec), max_wait_s=60, owner="t")
    lease = Leader(q, holder="t").acquire()
    assert lease is not None
    q.apply(CycleWrite(admitted=(Admission("a", "zhongwei", "ningxia", "west", "cuda", "H20", 2, 1.0, 1.0, "{}",
                                           ""),)), lease)
    registry = CollectorRegistry()
    registry.register(NetworkCollector(net, lambda: (live, totals), q, lambda: {"recsys": (12.5, 30.25)}))
    text = generate_latest(registry).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):  # the exposition format parses
        for s in fam.samples:
            out.setdefault(s.name.removesuffix("_total"), []).append((s.labels, s.value))
    return out


def test_the_scrape_parses_and_says_what_the_network_and_the_queue_hold(tmp_path: Path) -> None:
    got = _scrape(tmp_path)
    assert set(METRICS) <= set(got)
    zw = {"dc": "zhongwei", "cluster": national().dc("zhongwei").ray_cluster, "region": "west"}
    assert ({**zw, "model": "H20"}, 8.0) in got["westflow_dc_accelerators_capacity"]
    assert ({**zw, "model": "H20"}, 2.0) in got["westflow_dc_accelerators_used"]
    assert (zw, 0.25) in got["westflow_dc_utilisation"] and (zw, 1.0) in got["westflow_dc_up"]
    up = {labels["dc"]: v for labels, v in got["westflow_dc_up"]}
    assert up["guian"] == 0.0 and up["zhangjiakou"] == 0.0  # Ray says dead, or not read at all: down
    work = {(lb["tenant"], lb["state"]): v for lb, v in got["westflow_queue_workloads"]}
    assert work == {("recsys", "admitted"): 1.0, ("recsys", "pending"): 1.0}
    decided = {(lb["tenant"], lb["kind"]): v for lb, v in got["westflow_queue_decisions"]}
    assert decided[("recsys", "queued")] == 2.0 and decided[("recsys", "admitted")] == 1.0
    assert got["westflow_tenant_cny"] == [({"tenant": "recsys"}, 30.25)]


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    named = {m for e in exprs for m in re.findall(r"\bwestflow_[a-z_]+", e)}
    assert named and named <= set(METRICS), named - set(METRICS)
    assert set(METRICS) <= named  # and every metric has a panel
