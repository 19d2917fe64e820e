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

from westflow.config import CONFIG_DIR, load_network
from westflow.placement import get_policy
from westflow.spec import load_spec, parse_spec
from westflow.text import table, why
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
    from pipelines.run import materialize_pipeline, step_reports

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
    print(f"\nDagster run {result.run_id} {'succeeded' if result.success else 'FAILED'} "
          f"in {time.monotonic() - t0:.0f} s; DAGSTER_HOME={Path(args.state_dir).resolve() / 'dagster'}")
    return 0 if result.success else 1


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
    _say("3. Ray tasks placed by westflow, and where Ray ran them")
    _tasks(args)
    if args.skip_pipelines:
        return 0
    _say("4. Dagster pipelines across the clusters: where each step ran and why")
    rc = _pipelines(args)
    print(f"local network after the pipelines: {net.rss_bytes() / 2**30:.2f} GiB RSS over all Ray processes "
          f"({net.pss_bytes() / 2**30:.2f} GiB PSS)")
    _say("next")
    print("westflow status            # per-DC use, dashboard URL, export lines, what running steps hold\n"
          "westflow ui                # Dagster UI + daemon on http://127.0.0.1:3000 (schedules fire)\n"
          "westflow down              # stop what `up` started")
    return rc
