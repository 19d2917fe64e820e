"""Live-service figures (issue 18): westflow's service path against a bare Ray Serve deployment.

Starts the local federation (configs/local.yaml) on free ports in a temp state dir, trains a small model
into its S3, then:

1. **Latency and throughput**: the westflow service for one city (placement, pinned replica, API key checked
   per request) against a bare Serve deployment of the same model, scoring the same way, pinned to the same
   DC's node, behind the same cluster ingress, without the key check. 1 and 8 concurrent clients, each on
   one keep-alive HTTP connection; rounds alternate. Prints p50/p99 latency and requests/s, and the ratios
   westflow / bare (goal <= 1.10).
2. **Rolling model update** under 4 clients: failed requests (goal 0), and when clients saw the switch.
3. **Recovery** after the serving DC's node is SIGKILLed: the time until the city's route answers again from
   another DC within its bound (westflow reconciles every 0.5 s, as ``westflow services reconcile --watch``).

    .venv/bin/python -m benchmarks.serve_bench [--requests 1500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import statistics
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from jobs import etl, train
from jobs.artifacts import load_model, model_version, save_model
from jobs.stores import Stores, s3_stores
from ray_cluster import api_keys
from ray_cluster.federation import Federation
from ray_cluster.local import LocalFederation, Ports, free_port, load_profile
from ray_cluster.serve_api import ServeApi, serve_config
from ray_cluster.serving import Services, app_name, healthy
from storage import S3Config
from westflow.config import load_network
from westflow.service import parse_service

ROOT = Path(__file__).resolve().parent.parent
MODEL, CITY, FEATURES = "bench_clf", "chengdu", 16
BODY = json.dumps({"features": [0.3] * FEATURES}).encode()


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _client(url: str, key: str | None, n: int, out: list[float], failed: list[str],
            versions: list[tuple[float, str]] | None = None) -> None:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            conn.request("POST", u.path, BODY, headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            failed.append(repr(exc)[:120])
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            continue
        out.append(time.perf_counter() - t0)
        if resp.status != 200:
            failed.append(f"{resp.status} {data[:100]!r}")
        elif versions is not None:
            versions.append((time.monotonic(), json.loads(data)["model_version"]))
    conn.close()


def load(url: str, key: str | None, clients: int, per_client: int) -> tuple[list[float], float, list[str]]:
    """Latencies (s), requests/s and failures of ``clients`` concurrent clients."""
    lat: list[float] = []
    failed: list[str] = []
    threads = [threading.Thread(target=_client, args=(url, key, per_client, lat, failed)) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, len(lat) / (time.perf_counter() - t0), failed


def bare_app(dc: str, state_dir: Path) -> dict[str, Any]:
    """The same model scored the same way, pinned to the same DC, without westflow's key check."""
    return {"name": "bare", "route_prefix": "/bare", "import_path": "benchmarks.serve_bare:build",
            "args": {"model": MODEL}, "runtime_env": {"env_vars": {"WESTFLOW_STATE_DIR": str(state_dir)}},
            "deployments": [{"name": "bare", "ray_actor_options": {"num_cpus": 0.5,
                                                                   "resources": {f"dc:{dc}": 0.001}},
                             "num_replicas": 1}]}


def _train(st: Stores) -> None:
    region = ["--region", "west"]
    assert etl.main(["--name", "bench_features", "--rows", "4000", "--features", str(FEATURES), *region],
                    stores=st) == 0
    assert train.main(["--dataset", "bench_features", "--model", MODEL, "--epochs", "1", "--run-id", "b",
                       *region], stores=st) == 0


def _new_version(st: Stores) -> str:
    arrays, meta = load_model(st, "west", MODEL)
    meta.pop("loaded_from_region", None)
    arrays = {k: v + np.float32(0.01) if k.startswith("b") else v for k, v in arrays.items()}
    save_model(st, "west", MODEL, int(meta["epochs"]), arrays, meta)
    return model_version(arrays)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1500, help="requests per round and client count")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="westflow-serve-bench-"))
    net = load_network()
    profile = load_profile(net)
    fed_local = LocalFederation(state, profile, workdir=ROOT, ports={
        n: Ports(gcs=free_port(), dashboard=free_port(), client_server=free_port(), serve=free_port())
        for n in profile.cluster_names})
    try:
        fed_local.up()
        st = s3_stores(S3Config.load(state))
        _train(st)
        arrays, _ = load_model(st, "west", MODEL)
        key = api_keys.key_of(state, "bench")
        fed = Federation.local(state)
        assert fed is not None
        svc = Services(state, fed, net)
        spec = parse_service({"name": "bench", "tenant": "bench", "cities": [CITY], "model": MODEL,
                              "accelerator": "cpu", "cpus": 0.5, "memory_gb": 0, "min_replicas": 1,
                              "max_replicas": 1}, net)
        rec = svc.deploy(spec, model_version(arrays))
        svc.wait("bench", healthy, timeout_s=240)
        route = rec.routes[CITY]
        member = fed.members[route.cluster]
        # westflow's application and the bare one, side by side on the same cluster and DC
        apps = [*svc.applications(route.cluster), bare_app(route.data_center, state)]
        ServeApi(member.access).put(serve_config(apps, member.serve_url))
        bare_url = member.serve_url + "/bare"
        deadline = time.monotonic() + 240
        while load(bare_url, None, 1, 1)[2]:
            if time.monotonic() > deadline:
                raise TimeoutError("the bare deployment never answered")
            time.sleep(0.5)
        print(f"service {app_name('bench', CITY)} at {route.data_center} ({route.cluster}, {route.rtt_ms:.1f} ms "
              f"to {CITY}); bare deployment on the same node")
        print(f"{'clients':>7} {'path':<9} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
        for clients in (1, 8):
            per = max(1, args.requests // clients)
            got: dict[str, list[tuple[list[float], float]]] = {"westflow": [], "bare": []}
            for _ in range(args.rounds):
                for name, url, k in (("westflow", route.endpoint, key), ("bare", bare_url, None)):
                    lat, rps, failed = load(url, k, clients, per)
                    assert not failed, failed[:3]
                    got[name].append((lat, rps))
            stats = {}
            for name, rounds in got.items():
                lat = [x for r in rounds for x in r[0]]
                stats[name] = (_pct(lat, 0.5) * 1e3, _pct(lat, 0.99) * 1e3, statistics.median(r[1] for r in rounds))
                print(f"{clients:>7} {name:<9} {stats[name][0]:8.2f} {stats[name][1]:8.2f} {stats[name][2]:8.0f}")
            w, b = stats["westflow"], stats["bare"]
            print(f"{clients:>7} ratio     p50 {w[0] / b[0]:.3f}  p99 {w[1] / b[1]:.3f}  throughput "
                  f"{b[2] / w[2]:.3f} (bare/westflow; goal <= 1.10 each)")

        # 2. rolling update under load
        new = _new_version(st)
        lat, failed, versions = [], [], []
        threads = [threading.Thread(target=_client, args=(route.endpoint, key, 600, lat, failed, versions))
                   for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        t_roll = time.monotonic()
        svc.deploy(spec, new)
        for t in threads:
            t.join()
        first_new = min((t for t, v in versions if v == new), default=None)
        print(f"rolling update under 4 clients: {len(lat)} requests, {len(failed)} failed"
              + (f"; first answer from the new model {first_new - t_roll:.2f} s after the deploy call"
                 if first_new else "; the new model was not seen (raise the request count)"))

        # 3. recovery after the serving DC is lost
        lost = svc.record("bench").routes[CITY].data_center
        t0 = time.monotonic()
        fed_local.stop_node(lost, sig=signal.SIGKILL)
        served_by = ""
        while not served_by:
            caps, _ = fed.capacity_and_totals(svc.network)
            if lost not in caps or not caps[lost].alive:
                svc.reconcile("bench")
            got_lat: list[float] = []
            got_failed: list[str] = []
            versions2: list[tuple[float, str]] = []
            _client(route.endpoint, key, 1, got_lat, got_failed, versions2)
            if versions2:
                r = svc.record("bench").routes[CITY]
                if r.data_center != lost:
                    served_by = r.data_center
            if time.monotonic() - t0 > 300:
                raise TimeoutError("the route never recovered")
            time.sleep(0.5)
        print(f"serving DC {lost} SIGKILLed: {CITY} served again from {served_by} after "
              f"{time.monotonic() - t0:.1f} s (Ray declares the node dead, westflow re-places, Serve starts the "
              "replica)")
    finally:
        fed_local.down()
        fed_local.remove_session_dirs()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
