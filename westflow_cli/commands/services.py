"""``westflow services``: live model endpoints per city, on Ray Serve in each city's latency bound.

    westflow services                          # services, cities, health, DCs, replicas, endpoints
    westflow services deploy SERVICE.yaml      # deploy or update (model version: the latest in S3)
    westflow services reconcile [--watch 10]   # move routes off lost DCs (once, or every N s)
    westflow services key TENANT               # the tenant's API key (made if it has none)
    westflow services remove NAME
"""

from __future__ import annotations

import argparse
import json
import time

from jobs.artifacts import load_model, model_version
from jobs.stores import s3_stores
from ray_cluster import api_keys
from ray_cluster.federation import Federation
from ray_cluster.serving import Services, describe
from storage import S3Config
from westflow.config import load_network
from westflow.errors import ClusterError
from westflow.inventory import Network
from westflow.service import load_service
from westflow.text import table
from westflow_cli.localnet import default_state_dir, federation_of

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("services", help="live model endpoints per city (Ray Serve): list, deploy, reconcile, keys")
    p.add_argument("--state-dir", default=default_state_dir(),
                   help="where `westflow up` recorded the clusters, and the services and keys live")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    actions = p.add_subparsers(dest="services_command", parser_class=type(p))
    d = actions.add_parser("deploy", help="deploy or update a service from its YAML")
    d.add_argument("service", help="service YAML: name, tenant, cities, model, accelerator, min/max_replicas")
    d.add_argument("--model-version", default=None, help="default: the latest model in S3")
    d.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every route to be healthy")
    r = actions.add_parser("reconcile", help="move routes whose DC is lost to another DC within the bound")
    r.add_argument("name", nargs="?", default=None)
    r.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="keep reconciling every SECONDS")
    k = actions.add_parser("key", help="print TENANT's API key (made now if it has none)")
    k.add_argument("tenant")
    k.add_argument("--new", action="store_true", help="issue an additional key")
    rm = actions.add_parser("remove", help="take a service down")
    rm.add_argument("name")
    p.set_defaults(func=run)


def _where(args: argparse.Namespace) -> tuple[Federation, Network]:
    net = load_network(args.config_dir) if args.config_dir else load_network()
    return federation_of(args.state_dir, net), net


def _services(args: argparse.Namespace) -> Services:
    return Services(args.state_dir, *_where(args))


def _listing(svc: Services, name: str | None, as_json: bool) -> str:
    rows = describe(svc.status(name))
    if as_json:
        return json.dumps(rows, indent=2)
    if not rows:
        return "no services (deploy one: westflow services deploy SERVICE.yaml)"
    return table(["service", "city", "health", "dc", "cluster", "RTT ms", "replicas", "endpoint", "why"],
                 [[r["service"], r["city"], r["health"], r["dc"] or "-", r["cluster"] or "-",
                   f"{r['rtt_ms']:.1f}" if r["rtt_ms"] is not None else "-", r["replicas"], r["endpoint"] or "-",
                   r["reason"]] for r in rows])


def run(args: argparse.Namespace) -> int:
    cmd = args.services_command
    if cmd == "key":
        had = api_keys.digests(args.state_dir)
        key = api_keys.issue(args.state_dir, args.tenant) if args.new else api_keys.key_of(args.state_dir,
                                                                                           args.tenant)
        if api_keys.key_digest(key) not in had and Services(args.state_dir, *_where(args)).records():
            _services(args).push_keys()  # running replicas learn the new key
        print(key)
        return 0
    if cmd == "deploy":  # the file is checked before any cluster is asked anything
        spec = load_service(args.service, load_network(args.config_dir) if args.config_dir else load_network())
    svc = _services(args)
    if cmd == "deploy":
        version = args.model_version
        if version is None:
            arrays, _ = load_model(s3_stores(S3Config.load(args.state_dir)), "west", spec.model)
            version = model_version(arrays)
        svc.deploy(spec, version)
        try:
            svc.wait(spec.name, lambda hs: all(h.health in ("healthy", "degraded") for h in hs),
                     timeout_s=args.timeout)
        finally:
            print(_listing(svc, spec.name, args.json))
        print(f"\nmodel {spec.model} version {version}; call a route with "
              f"-H \"Authorization: Bearer $(westflow services key {spec.tenant})\"")
        return 0
    if cmd == "reconcile":
        names = [args.name] if args.name else list(svc.records())
        while True:
            for n in names:
                before = svc.record(n).routes
                after = svc.reconcile(n).routes
                for city, r in after.items():
                    if r != before.get(city):
                        where = r.data_center if r.state == "placed" else "degraded"
                        print(f"{n} {city}: {before[city].data_center or 'degraded'} -> {where}", flush=True)
            if args.watch is None:
                break
            time.sleep(args.watch)
        print(_listing(svc, args.name, args.json))
        return 0
    if cmd == "remove":
        svc.record(args.name)
        svc.remove(args.name)
        print(f"removed {args.name}")
        return 0
    out = _listing(svc, None, args.json)
    print(out)
    if any(h.health not in ("healthy", "degraded") for h in svc.status()):
        raise ClusterError("Some routes are not serving (see the table). To fix: `westflow services reconcile`.")
    return 0
