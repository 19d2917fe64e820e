"""Security (issue 5): token auth required, S3 credentials required, no secret leaks, bindings.

Every claim of docs/security.md, on the live local network. Only loopback
addresses are contacted, and the test checks that Ray does the same.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from ray_cluster.local import LocalNetwork
from storage import DatasetStore, S3Config, SeaweedServer
from tests import secret_scan
from westflow.errors import AccessDenied

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
DOC = ROOT / "docs" / "security.md"
SECRET_FILES = ("auth_token", "s3/credentials.json", "s3/s3.json")
API_PATHS = ("/api/jobs/", "/api/v0/nodes", "/api/cluster_status", "/nodes?view=summary", "/api/version")
# Prometheus ports Ray fixes; a network started while another holds them runs without them.
FIXED_PORT_KINDS = {"autoscaler-metrics": 44217, "dashboard-metrics": 44227}


def _http(url: str, token: str | None = None, *, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _no_auth_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any Ray token setting (and a HOME without ~/.ray)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    return {**env, "HOME": str(home), **extra}


@pytest.fixture(scope="module")
def token(ray_network: LocalNetwork) -> str:
    return ray_network.token_path.read_text().strip()


@pytest.fixture(scope="module")
def s3(ray_network: LocalNetwork) -> S3Config:
    return S3Config.load(ray_network.state_dir)


# -- token authentication ---------------------------------------------------------------------


@pytest.mark.parametrize("path", API_PATHS, ids=[p.strip("/").split("?")[0].replace("/", "-") for p in API_PATHS])
def test_dashboard_and_jobs_api_refuse_requests_without_the_token(ray_network: LocalNetwork, token: str,
                                                                   path: str) -> None:
    url = ray_network.dashboard_url + path
    assert _http(url)[0] == 401
    assert _http(url, "0" * len(token))[0] == 403
    assert _http(url, token)[0] == 200


def test_jobs_api_submit_without_the_token_creates_no_job(ray_network: LocalNetwork, token: str) -> None:
    sub_id = f"unauth-{time.time_ns()}"
    body = json.dumps({"entrypoint": "echo pwned", "submission_id": sub_id}).encode()
    assert _http(ray_network.dashboard_url + "/api/jobs/", data=body)[0] == 401
    assert _http(ray_network.dashboard_url + "/api/jobs/", "wrong", data=body)[0] == 403
    assert _http(ray_network.dashboard_url + f"/api/jobs/{sub_id}", token)[0] == 404


def test_ray_job_submit_without_the_token_is_refused(ray_network: LocalNetwork, tmp_path: Path) -> None:
    sub_id = f"unauth-cli-{time.time_ns()}"
    cmd = [RAY, "job", "submit", "--address", ray_network.dashboard_url, "--submission-id", sub_id,
           "--no-wait", "--", "echo", "pwned"]
    for env in (_no_auth_env(tmp_path), _no_auth_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
        assert out.returncode != 0, out.stdout
        assert "AuthenticationError" in out.stderr or "Unauthorized" in out.stderr, out.stderr[-2000:]
    assert sub_id not in {j.submission_id for j in ray_network.job_client().list_jobs()}


def test_gcs_refuses_a_client_without_the_token(ray_network: LocalNetwork, tmp_path: Path) -> None:
    out = subprocess.run([RAY, "status", "--address", ray_network.address], capture_output=True, text=True,
                         env=_no_auth_env(tmp_path), timeout=120, cwd=tmp_path)
    assert out.returncode != 0
    assert "InvalidAuthToken" in out.stderr or "AuthenticationError" in out.stderr, out.stderr[-2000:]


def test_dashboard_agent_http_refuses_requests_without_the_token(ray_driver: LocalNetwork, token: str) -> None:
    import ray

    for node in ray.nodes():
        if node["Alive"]:
            url = f"http://{node['NodeManagerAddress']}:{node['DashboardAgentListenPort']}/api/job_agent/jobs/"
            assert _http(url, data=b"{}")[0] == 401


# -- S3 credentials ---------------------------------------------------------------------------


def test_s3_refuses_wrong_or_missing_credentials(s3: S3Config) -> None:
    for bad in (dataclasses.replace(s3, secret_key=s3.secret_key[::-1]),
                dataclasses.replace(s3, access_key="WF" + "0" * 18)):
        with pytest.raises(AccessDenied):
            DatasetStore(bad).list()
        with pytest.raises(ClientError) as info:
            bad.boto3_client().list_objects_v2(Bucket="westflow-east")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    anonymous = boto3.session.Session().client(
        "s3", endpoint_url=s3.endpoint_url, region_name=s3.region_name,
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
    with pytest.raises(ClientError) as info:
        anonymous.list_objects_v2(Bucket="westflow-east")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    DatasetStore(s3).list()  # the right credentials still work


# -- no secret in logs, job environments or the repository ------------------------------------


def test_secret_files_are_private_and_git_ignored(ray_network: LocalNetwork) -> None:
    for name in SECRET_FILES + ("s3/server.json",):
        mode = stat.S_IMODE((ray_network.state_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
    secrets = [f".westflow/{name}" for name in SECRET_FILES]
    ignored = subprocess.run(["git", "check-ignore", *secrets], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == secrets, ".westflow/ must be git-ignored"
    tracked = subprocess.run(["git", "ls-files", ".westflow"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked == ""


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                yield p


def _leaks(paths: Iterator[Path], needles: dict[str, bytes]) -> list[str]:
    return secret_scan.leaks(paths, needles)  # from a child process: see tests/secret_scan.py


# Shapes a committed secret would have, whoever generated it.
_SECRET_SHAPES = [re.compile(p) for p in (
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    rb"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+_-]{20,}",
    rb"(?i)RAY_AUTH_TOKEN\s*[:=]\s*['\"]?[0-9a-f]{32,}",
    rb"(?i)WESTFLOW_S3_SECRET_KEY\s*[:=]\s*['\"]?[A-Za-z0-9_-]{20,}",
)]


def test_no_token_or_key_in_logs_job_env_or_repo(ray_driver: LocalNetwork, token: str, s3: S3Config) -> None:
    import ray
    from ray.job_submission import JobStatus

    net = ray_driver
    # A real job that uses S3 the way westflow hands it over: the state dir, not the keys.
    code = ("from storage import S3Config, DatasetStore; "
            "print('datasets', len(DatasetStore(S3Config.discover()).list()))")
    client = net.job_client()
    sub_id = client.submit_job(entrypoint=f"python -c \"{code}\"", runtime_env={"env_vars": {
        "WESTFLOW_STATE_DIR": str(net.state_dir), "PYTHONPATH": str(ROOT)}})
    deadline = time.monotonic() + 180
    while not client.get_job_status(sub_id).is_terminal():
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(1)
    logs = client.get_job_logs(sub_id)
    assert client.get_job_status(sub_id) == JobStatus.SUCCEEDED, logs[-2000:]
    assert "datasets" in logs

    needles = {"Ray token": token.encode(), "S3 secret": s3.secret_key.encode(),
               "S3 access key": s3.access_key.encode()}
    texts = {"job logs": logs.encode(), "Jobs API job list": _http(net.dashboard_url + "/api/jobs/", token)[1],
             "Jobs API job": _http(net.dashboard_url + f"/api/jobs/{sub_id}", token)[1]}
    for node in ray.nodes():  # the Prometheus exporter answers without a token: it must not carry one
        if node["Alive"]:
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
            texts[f"metrics :{node['MetricsExportPort']}"] = _http(url)[1]
    leaks = [f"{what} in {where}" for where, t in texts.items() for what, n in needles.items() if n in t]

    session = net.session_dir.resolve()
    assert any(session.glob("session_*/logs/*.out")), f"no Ray logs found under {session}"
    state_files = [*_files(net.state_dir / "logs"), *_files(session), net.state_dir / "s3" / "weed.log"]
    leaks += _leaks(iter(state_files), needles)

    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    repo_files = [ROOT / f for f in listed if f and (ROOT / f).is_file()]
    assert len(repo_files) > 50
    leaks += _leaks(iter(repo_files), needles)
    for p in repo_files:
        data = p.read_bytes()
        leaks += [f"secret-shaped text {rx.pattern!r} in {p}" for rx in _SECRET_SHAPES if rx.search(data)]
    assert leaks == []


# -- listening sockets ------------------------------------------------------------------------


def _tcp_sockets(*, listening: bool) -> dict[int, list[tuple[tuple[str, int], tuple[str, int]]]]:
    """Socket inode -> (local, remote) (address, port) of TCP sockets, listening or not (IPv4 and IPv6)."""
    out: dict[int, list[tuple[tuple[str, int], tuple[str, int]]]] = {}

    def endpoint(text: str, family: int) -> tuple[str, int]:
        hex_addr, hex_port = text.split(":")
        raw = bytes.fromhex(hex_addr)
        # the kernel prints each 32-bit word in host (little-endian) order
        addr = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
        return socket.inet_ntop(family, addr), int(hex_port, 16)

    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if (f[3] == "0A") == listening:
                out.setdefault(int(f[9]), []).append((endpoint(f[1], family), endpoint(f[2], family)))
    return out


def _listening() -> dict[int, list[tuple[str, int]]]:
    """Socket inode -> (address, port) of every TCP socket in LISTEN state."""
    return {inode: [local for local, _ in ends] for inode, ends in _tcp_sockets(listening=True).items()}


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address)
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def _scope(address: str, node_ips: set[str]) -> str:
    ip = _ip(address)
    if ip.is_unspecified:
        return "all interfaces"
    if str(ip) == "127.0.0.1":
        return "127.0.0.1"
    return "node IP" if str(ip) in node_ips else f"other address {ip}"


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def _descendants(roots: set[int]) -> set[int]:
    kids, seen, todo = _children(), set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += kids.get(pid, [])
    return seen


def _sockets(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _documented() -> dict[str, set[str]]:
    """kind -> the scopes docs/security.md says it binds."""
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|[^|]*\|[^|]*\| ([^|]+) \|", DOC.read_text(), re.M)
    scopes = {"127.0.0.1": {"127.0.0.1"}, "all interfaces": {"all interfaces"}, "node IP": {"node IP"},
              "node IP + 127.0.0.1": {"node IP", "127.0.0.1"}}
    return {kind: scopes[where.strip()] for kind, where in rows}


def test_listening_sockets_match_docs_security(ray_driver: LocalNetwork,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    net = ray_driver
    weed = SeaweedServer(net.state_dir).pid
    assert weed is not None
    names = {"NodeManagerPort": "raylet", "ObjectManagerPort": "object-manager",
             "MetricsExportPort": "metrics-export", "MetricsAgentPort": "dashboard-agent-grpc",
             "DashboardAgentListenPort": "dashboard-agent-http", "RuntimeEnvAgentPort": "runtime-env-agent"}
    by_port = {net.profile.ports.gcs: "gcs", net.profile.ports.dashboard: "dashboard",
               net.profile.ports.client_server: "ray-client-server", net.profile.ports.serve: "serve"}
    node_ips = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    assert node_ips == {net.profile.node_ip(dc) for dc in net.profile.dc_ids}
    assert all(_ip(ip).is_loopback and ip != "127.0.0.1" for ip in node_ips)
    for node in ray.nodes():
        if node["Alive"]:
            by_port.update({node[k]: kind for k, kind in names.items()})

    class _Idle:
        def pid(self) -> int:
            return os.getpid()

    actor: Any = ray.remote(num_cpus=0)(_Idle).remote()  # a live worker while the sockets are read
    try:
        worker = ray.get(actor.pid.remote(), timeout=120)
        ours = _descendants(set(net.pids()) | {weed})
        assert worker in ours
        listening = _listening()
        seen: dict[str, set[str]] = {}
        for pid in ours | {os.getpid()}:
            for inode in _sockets(pid) & listening.keys():
                for address, port in listening[inode]:
                    cmd = _cmdline(pid)
                    if pid == weed:
                        kind = "s3"
                    elif pid == os.getpid():
                        kind = "driver"
                    elif port in by_port:
                        kind = by_port[port]
                    elif "monitor.py" in cmd and port == FIXED_PORT_KINDS["autoscaler-metrics"]:
                        kind = "autoscaler-metrics"
                    elif "dashboard.py" in cmd and port == FIXED_PORT_KINDS["dashboard-metrics"]:
                        kind = "dashboard-metrics"
                    elif cmd.startswith("ray::"):  # a core worker's gRPC server, in a worker or an agent
                        kind = "worker"
                    else:
                        kind = f"unknown ({cmd[:80]} port {port})"
                    seen.setdefault(kind, set()).add(_scope(address, node_ips))
    finally:
        ray.kill(actor)

    doc = _documented()
    taken_elsewhere = {kind for kind, port in FIXED_PORT_KINDS.items() if kind not in seen and _held_by_other(port)}
    if "serve" not in seen:  # Serve's proxy listens once a live service is deployed (test_services checks it)
        taken_elsewhere.add("serve")
    report = "\n".join(f"  {k}: {sorted(v)}" for k, v in sorted(seen.items()))
    assert set(seen) == set(doc) - taken_elsewhere, f"observed:\n{report}"
    for kind, scopes in seen.items():
        assert scopes == doc[kind], f"{kind} binds {sorted(scopes)}; docs/security.md says {sorted(doc[kind])}"
    assert seen["dashboard"] == {"127.0.0.1"} and seen["s3"] == {"127.0.0.1"}
    with capsys.disabled():
        print(f"\nlistening sockets of the network (kind: scopes):\n{report}")


def test_ray_traffic_stays_on_loopback(ray_driver: LocalNetwork) -> None:
    """Every TCP connection of the network's processes (and of this driver) is loopback to loopback."""
    import ray

    net = ray_driver

    @ray.remote(num_cpus=0.01)
    def where() -> str:
        return str(ray.get_runtime_context().get_node_id())

    per_dc = [where.options(resources={f"dc:{dc}": 0.001}).remote() for dc in net.profile.dc_ids]
    assert len(set(ray.get(per_dc, timeout=120))) == len(net.profile.dc_ids)  # traffic between all nodes
    weed = SeaweedServer(net.state_dir).pid
    ours = _descendants(set(net.pids()) | ({weed} if weed else set())) | {os.getpid()}
    connections = _tcp_sockets(listening=False)
    seen = [(pid, local, remote) for pid in ours for inode in _sockets(pid) & connections.keys()
            for local, remote in connections[inode]]
    assert len(seen) > 2 * len(net.profile.dc_ids), "expected gRPC connections between the nodes"
    off = [f"pid {pid} ({_cmdline(pid)[:60]}): {local} -> {remote}" for pid, local, remote in seen
           if not (_ip(local[0]).is_loopback and _ip(remote[0]).is_loopback)]
    assert not off, "traffic off loopback:\n" + "\n".join(off[:20])


def _held_by_other(port: int) -> bool:
    """Whether something outside this test's network listens on ``port`` (another network's head)."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0

