"""``westflow demo``: the whole story on this machine, end to end.

1. plan the example specs on the national inventory;
2. bring the local network up (two Ray clusters, a node per DC, + the S3 server) if it is not;
3. run a few Ray tasks placed by westflow, each in its DC's cluster, and show where Ray actually ran them;
4. materialise the Dagster pipelines across the clusters and show, per step, where it ran and why.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

from westflow.config import CONFIG_DIR, load_network
from westflow.placement import get_policy
from westflow.spec import load_spec, parse_spec
from westflow.text import table, why
from westflow_cli.admitting import queue_of, start_controller
from westflow_cli.localnet import add_args, network_of

TASKS = [
    {"name": "rt-scoring-shanghai", "tier": "realtime", "origin": "shanghai", "accelerator": "any:1"},
    {"name": "batch-etl", "tier": "batch", "origin": "beijing", "accelerator": "cpu"},
    {"name": "ascend-finetune", "tier": "batch", "origin": "guangzhou", "accelerator": "cann:2"},
    {"name": "cuda-embedding", "tier": "batch", "origin": "shanghai", "accelerator": "cuda:2"},
]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="plan, bring the local network up, run placed tasks and the pipelines")
    add_args(p)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the daily feature table")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--skip-pipelines", action="store_true", help="stop after the placed Ray tasks")
    p.set_defaults(func=run)


def _say(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def _plan(config_dir: Path) -> None:
    network = load_network(config_dir)
    rows = []
    for path in sorted((config_dir / "examples").glob("*.yaml")):
        p = get_policy("westflow").place(load_spec(path, network), network)
        rtt = "-" if p.rtt_ms is None else f"{p.rtt_ms:.1f}"
        rows.append((p.spec.name, p.spec.tier, p.spec.origin or "-", str(p.spec.accelerator), p.data_center,
                     p.region, rtt, f"{p.cost_cny:.2f}", why(p)))
    print(table(["spec", "tier", "origin", "needs", "placed in", "region", "RTT ms", "CNY", "why"], rows))


def _tasks(args: argparse.Namespace) -> None:
    """Place each task on the live capacity of every cluster, then run it as a Ray task in its cluster."""
    import ray

    from ray_cluster.federation import Federation
    from ray_cluster.live import where_am_i

    net = network_of(args)
    fed = Federation.local(net.state_dir)
    assert fed is not None  # `up` recorded it
    network = fed.grouped(load_network(args.config_dir or CONFIG_DIR))
    placed = {}
    for t in TASKS:
        spec = parse_spec(t, network)
        placed[spec.name] = get_policy("westflow").place(spec, network, fed.capacity_and_totals(network)[0])
    rows = []
    for name, cluster in net.clusters.items():  # one Ray driver per cluster: each is its own Ray
        mine = [p for p in placed.values() if p.ray_cluster == name]
        if not mine:
            continue
        cluster.init_driver(logging_level="ERROR", log_to_driver=False)
        try:
            probe = ray.remote(lambda: where_am_i())
            for p in mine:
                ran = ray.get(probe.options(**p.ray.task_options()).remote(), timeout=120)
                rtt = "-" if p.rtt_ms is None else f"{p.rtt_ms:.1f}"
                rows.append((p.spec.name, str(p.spec.accelerator), p.data_center, name, ran,
                             "yes" if ran == p.data_center else "NO", rtt, why(p)))
        finally:
            ray.shutdown()
    order = list(placed)
    rows.sort(key=lambda r: order.index(r[0]))
    print(table(["task", "needs", "placed in", "cluster", "ran in (Ray node)", "match", "RTT ms", "why"], rows))


def _pipelines(args: argparse.Namespace) -> int:
    import dagster as dg

    from pipelines.resources import WestflowResource
    from pipelines.run import materialize_pipeline, route_reports, step_reports

    net = network_of(args)  # the clusters `up` recorded in the state dir are where the steps go
    westflow = WestflowResource(state_dir=str(net.state_dir), config_dir=str(args.config_dir or CONFIG_DIR))
    t0 = time.monotonic()
    with warnings.catch_warnings():
        # Dagster marks Pipes' message readers as preview API (we pin the version); not the user's concern.
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        result = materialize_pipeline(westflow, rows=args.rows, epochs=args.epochs)
    reports = step_reports(result)
    print(table(["step", "tier", "placed in", "ran in", "cluster", "region", "RTT", "accelerator", "CNY", "why"],
                [(r.step, r.tier, r.placed_in, r.ran_in, r.cluster, r.region, r.rtt_ms, r.accelerator,
                  f"{r.cost_cny:.3f}", r.why) for r in reports]))
    print("\nRay jobs per cluster (each in its own cluster's dashboard):")
    for name, cluster in net.clusters.items():
        ids = [r.job_id for r in reports if r.cluster == name]
        print(f"  {name:<6} {cluster.dashboard_url}  {', '.join(ids) or '-'}")
    _routes(route_reports(result), Path(args.state_dir))
    _admissions(net.state_dir, result.run_id)
    print(f"\nDagster run {result.run_id} {'succeeded' if result.success else 'FAILED'} "
          f"in {time.monotonic() - t0:.0f} s; DAGSTER_HOME={Path(args.state_dir).resolve() / 'dagster'}")
    return 0 if result.success else 1


def _routes(routes: list[Any], state_dir: Path) -> None:
    """The live service's routes, and one real request to each (with the tenant's API key)."""
    from ray_cluster import api_keys

    if not routes:
        return
    print(f"\nLive service {routes[0].service!r} (model version {routes[0].model_version}), a Ray Serve route "
          "per city:")
    rows = []
    for r in routes:
        answer = "-"
        if r.health == "healthy":
            answer = _one_request(r.endpoint, api_keys.key_of(state_dir, r.service))
        rtt = f"{r.rtt_ms:.1f} ms" if r.rtt_ms is not None else "-"
        rows.append((r.city, r.health, r.data_center or "-", r.cluster or "-", rtt, r.replicas, r.endpoint or "-",
                     answer))
    print(table(["city", "health", "served from", "cluster", "RTT", "replicas", "endpoint", "one request"], rows))
    print(f'  curl -s -H "Authorization: Bearer $(westflow services key {routes[0].service})" '
          f"-d '{{\"features\": [0.1, ...]}}' {routes[0].endpoint}")


def _one_request(url: str, key: str) -> str:
    import json
    import urllib.error
    import urllib.request

    body = json.dumps({"features": [0.0] * 32}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Authorization": f"Bearer {key}"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            got = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"failed: {exc}"[:60]
    return f"class {got['prediction']} from {got['dc']} in {(time.perf_counter() - t0) * 1e3:.1f} ms"


def _admissions(state_dir: Path, run_id: str) -> None:
    """How the run's steps went through the admission queue (tenant, class, wait, who admitted them)."""
    queue = queue_of(state_dir)
    rows = [r for r in queue.rows() if r.key.startswith(f"{run_id}:")]
    if not rows:
        return
    print("\nAdmission (the queue in the state dir; `westflow queue --all`, `westflow tenants`):")
    out = []
    for r in sorted(rows, key=lambda r: r.submitted_at):
        by = next((d.controller for d in queue.decisions(r.key) if d.kind == "admitted"), "-")
        waited = f"{r.admitted_at - r.submitted_at:.1f} s" if r.admitted_at else "-"
        out.append((r.spec_name, r.tenant, r.priority_class, r.state, r.data_center or "-", waited, by))
    print(table(["step", "tenant", "priority", "state", "admitted at", "waited", "admitted by"], out))


def run(args: argparse.Namespace) -> int:
    config_dir = Path(args.config_dir or CONFIG_DIR)
    _say("1. plan: the example specs on the national network (10 DCs)")
    _plan(config_dir)
    _say("2. up: the local network (Ray clusters of a node per DC, S3 server), all on loopback")
    net = network_of(args)
    fst = net.up()
    for name, st in fst.clusters:
        ips = [net.profile.node_ip(d.dc) for d in st.dcs]
        print(f"Ray cluster {name}: {len(st.dcs)} nodes alive ({', '.join(d.dc for d in st.dcs)}) on "
              f"{', '.join(ips)}; dashboard {st.dashboard_url}")
    print(f"{fst.rss_bytes / 2**30:.2f} GiB RSS over all Ray processes ({net.pss_bytes() / 2**30:.2f} GiB PSS: "
          "pages they share counted once)")
    pid = start_controller(net.state_dir, config_dir=args.config_dir)
    print(f"admission controller pid {pid} (the queue: SQLite in {net.state_dir / 'admission.db'})")
    _say("3. Ray tasks placed by westflow, and where Ray ran them")
    _tasks(args)
    if args.skip_pipelines:
        return 0
    _say("4. Dagster pipelines across the clusters: where each step ran and why")
    rc = _pipelines(args)
    print(f"local network after the pipelines: {net.rss_bytes() / 2**30:.2f} GiB RSS over all Ray processes "
          f"({net.pss_bytes() / 2**30:.2f} GiB PSS); its Ray workers (idle workers, the live service's Serve "
          f"controllers, proxies and replicas) {net.worker_rss_bytes() / 2**30:.2f} GiB RSS besides")
    _say("next")
    print("westflow status            # per-DC use, dashboard URL, export lines, what running steps hold\n"
          "westflow queue             # pending and admitted work, and why each waits; westflow tenants: quotas\n"
          "westflow services          # the live service: cities, DCs, replicas, endpoints, health\n"
          "westflow ui                # Dagster UI + daemon on http://127.0.0.1:3000 (schedules fire)\n"
          "westflow down              # stop what `up` started")
    return rc
