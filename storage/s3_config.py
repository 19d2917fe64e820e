"""S3 connection settings, the region → bucket map, and the two clients built from them.

One :class:`S3Config` feeds both clients westflow uses: boto3 for plain object
work (manifests, checkpoints, listings) and ``pyarrow.fs.S3FileSystem`` for
Parquet. Both get short connect timeouts and a bounded number of attempts, so
an unreachable endpoint is a typed error within seconds, never a hang.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from westflow.errors import StorageError
from westflow.inventory import Region

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = [
    "S3Config",
    "bucket_for_region",
    "region_for_bucket",
    "REGIONS",
    "BUCKET_PREFIX",
    "ENV_ENDPOINT",
    "ENV_ACCESS_KEY",
    "ENV_SECRET_KEY",
    "ENV_REGION",
    "ENV_STATE_DIR",
    "STATE_SUBDIR",
]

BUCKET_PREFIX = "westflow-"
REGIONS: tuple[str, ...] = tuple(r.value for r in Region)
ENV_ENDPOINT = "WESTFLOW_S3_ENDPOINT"
ENV_ACCESS_KEY = "WESTFLOW_S3_ACCESS_KEY"
ENV_SECRET_KEY = "WESTFLOW_S3_SECRET_KEY"
ENV_REGION = "WESTFLOW_S3_REGION"
ENV_STATE_DIR = "WESTFLOW_STATE_DIR"
# Where SeaweedServer keeps its files inside the westflow state dir (``.westflow/``).
STATE_SUBDIR = "s3"
CREDENTIALS_FILE = "credentials.json"
SERVER_FILE = "server.json"


def bucket_for_region(region: str) -> str:
    """The bucket holding a region's data: ``east`` → ``westflow-east``."""
    if region not in REGIONS:
        raise StorageError(f"Unknown region {region!r}; must be one of: {', '.join(REGIONS)}.")
    return BUCKET_PREFIX + region


def region_for_bucket(bucket: str) -> str:
    """Inverse of :func:`bucket_for_region`."""
    region = bucket.removeprefix(BUCKET_PREFIX)
    if not bucket.startswith(BUCKET_PREFIX) or region not in REGIONS:
        allowed = ", ".join(bucket_for_region(r) for r in REGIONS)
        raise StorageError(f"Bucket {bucket!r} belongs to no region; must be one of: {allowed}.",
                           bucket=bucket)
    return region


@dataclass(frozen=True)
class S3Config:
    """Where the S3 endpoint is and how to sign for it.

    The timeouts bound every call: ``connect_timeout_s`` per connection attempt,
    ``read_timeout_s`` per socket read, ``max_attempts`` tries in all (first one
    included). The secret never appears in ``repr``.
    """

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    region_name: str = "us-east-1"
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 30.0
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if not self.endpoint_url.startswith(("http://", "https://")):
            raise StorageError(
                f"Invalid endpoint_url {self.endpoint_url!r}; must start with http:// or https://.",
                endpoint=self.endpoint_url,
            )
        if not self.access_key or not self.secret_key:
            raise StorageError("Missing S3 credentials; access_key and secret_key must be set.",
                               endpoint=self.endpoint_url)
        if self.max_attempts < 1 or self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise StorageError(
                f"Invalid timeouts ({self.connect_timeout_s!r}, {self.read_timeout_s!r}, "
                f"{self.max_attempts!r}); must be > 0 s and >= 1 attempt.",
                endpoint=self.endpoint_url,
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Config:
        """Read ``WESTFLOW_S3_ENDPOINT``/``_ACCESS_KEY``/``_SECRET_KEY`` (and optional ``_REGION``)."""
        env = os.environ if environ is None else environ
        values = {}
        for var in (ENV_ENDPOINT, ENV_ACCESS_KEY, ENV_SECRET_KEY):
            value = env.get(var, "")
            if not value:
                raise StorageError(
                    f"Missing environment variable {var}; set {ENV_ENDPOINT}, {ENV_ACCESS_KEY} "
                    f"and {ENV_SECRET_KEY}. To fix: export them, or run `westflow up` and use "
                    "S3Config.load('.westflow')."
                )
            values[var] = value
        return cls(values[ENV_ENDPOINT], values[ENV_ACCESS_KEY], values[ENV_SECRET_KEY],
                   env.get(ENV_REGION) or "us-east-1")

    @classmethod
    def discover(cls, environ: Mapping[str, str] | None = None) -> S3Config:
        """``WESTFLOW_S3_*`` when set, else the server recorded in ``$WESTFLOW_STATE_DIR``.

        The state-dir path is what westflow hands a Ray job on this machine, so no
        credential ever travels in a job's runtime environment (which Ray shows).
        """
        env = os.environ if environ is None else environ
        if env.get(ENV_ENDPOINT) or not env.get(ENV_STATE_DIR):
            return cls.from_env(env)
        return cls.load(env[ENV_STATE_DIR])

    @classmethod
    def load(cls, state_dir: Path | str) -> S3Config:
        """The credentials and endpoint a :class:`SeaweedServer` generated in ``state_dir``."""
        base = Path(state_dir) / STATE_SUBDIR
        try:
            creds = json.loads((base / CREDENTIALS_FILE).read_text())
            server = json.loads((base / SERVER_FILE).read_text())
            return cls(server["endpoint_url"], creds["access_key"], creds["secret_key"])
        except (OSError, ValueError, KeyError) as exc:
            raise StorageError(
                f"No S3 server state in {str(base)!r} ({type(exc).__name__}). "
                "To fix: start one with SeaweedServer(state_dir).start() or `westflow up`."
            ) from None

    def env(self) -> dict[str, str]:
        """The ``WESTFLOW_S3_*`` variables, e.g. for a Ray job's ``runtime_env``."""
        return {
            ENV_ENDPOINT: self.endpoint_url,
            ENV_ACCESS_KEY: self.access_key,
            ENV_SECRET_KEY: self.secret_key,
            ENV_REGION: self.region_name,
        }

    def boto3_client(self) -> Any:
        """A boto3 S3 client with short timeouts and bounded retries (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region_name,
            config=Config(
                connect_timeout=self.connect_timeout_s,
                read_timeout=self.read_timeout_s,
                retries={"max_attempts": self.max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},
                signature_version="s3v4",
            ),
        )

    def filesystem(self) -> pyarrow.fs.S3FileSystem:
        """A ``pyarrow.fs.S3FileSystem`` on the same endpoint, timeouts and retry budget."""
        from urllib.parse import urlsplit

        import pyarrow.fs as pafs

        url = urlsplit(self.endpoint_url)
        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region_name,
            scheme=url.scheme,
            endpoint_override=url.netloc,
            connect_timeout=self.connect_timeout_s,
            request_timeout=self.read_timeout_s,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
            allow_bucket_creation=False,
            allow_bucket_deletion=False,
            check_directory_existence_before_creation=False,
        )
