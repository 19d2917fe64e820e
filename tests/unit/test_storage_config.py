"""Storage pieces that need no server: config, buckets, names, error translation, commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError

from storage import (
    CheckpointStore,
    DatasetInfo,
    S3Config,
    SeaweedServer,
    bucket_for_region,
)
from storage.datasets import dataset_prefix
from storage.s3_config import region_for_bucket
from storage.s3_failures import translate
from westflow.errors import (
    AccessDenied,
    BucketMissing,
    EndpointUnreachable,
    ObjectMissing,
    StorageError,
)
from westflow.inventory import Region
from westflow.spec import DatasetRef

ENV = {"WESTFLOW_S3_ENDPOINT": "http://127.0.0.1:9000", "WESTFLOW_S3_ACCESS_KEY": "AK",
       "WESTFLOW_S3_SECRET_KEY": "very-secret"}


def make_config(**kw: object) -> S3Config:
    return S3Config(**{"endpoint_url": "http://127.0.0.1:9000", "access_key": "AK",  # type: ignore[arg-type]
                       "secret_key": "very-secret", **kw})


def test_from_env_round_trips_through_env() -> None:
    config = S3Config.from_env(ENV)
    assert config == make_config()
    assert S3Config.from_env(config.env()) == config
    assert config.env()["WESTFLOW_S3_SECRET_KEY"] == "very-secret"


@pytest.mark.parametrize("missing", sorted(ENV), ids=lambda v: v.lower())
def test_from_env_names_the_missing_variable(missing: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(StorageError, match=missing):
        S3Config.from_env(env)


def test_secret_never_in_repr() -> None:
    config = make_config()
    assert "very-secret" not in repr(config) and "very-secret" not in str(config)
    assert "very-secret" not in repr(CheckpointStore(config, "westflow-east", "job"))


@pytest.mark.parametrize("bad", [{"endpoint_url": "127.0.0.1:9000"}, {"secret_key": ""},
                                 {"max_attempts": 0}, {"read_timeout_s": 0}],
                         ids=["no-scheme", "no-secret", "no-attempts", "no-timeout"])
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(StorageError):
        make_config(**bad)


def test_load_reads_server_state(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="SeaweedServer"):
        S3Config.load(tmp_path)
    (tmp_path / "s3").mkdir()
    (tmp_path / "s3" / "credentials.json").write_text(
        json.dumps({"access_key": "AK", "secret_key": "very-secret"}))
    (tmp_path / "s3" / "server.json").write_text(
        json.dumps({"endpoint_url": "http://127.0.0.1:9000", "pid": None}))
    assert S3Config.load(tmp_path) == make_config()


def test_buckets_per_region() -> None:
    assert bucket_for_region("east") == "westflow-east"
    assert bucket_for_region("west") == "westflow-west"
    assert region_for_bucket("westflow-west") == "west"
    with pytest.raises(StorageError, match="'north'; must be one of: east, west"):
        bucket_for_region("north")
    with pytest.raises(StorageError):
        region_for_bucket("other")


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-lead", "x" * 200, "a..b"])
def test_dataset_names_are_checked(name: str) -> None:
    with pytest.raises(StorageError, match="Invalid dataset name"):
        dataset_prefix(name)


def test_dataset_info_as_ref() -> None:
    info = DatasetInfo("d", "west", "westflow-west", 42, 1, "a: int64", "sha256:0",
                       ("datasets/d/runs/r/part-00000.parquet",), "2026-01-01T00:00:00+00:00")
    assert info.as_ref() == DatasetRef("d", Region.WEST, 42, "westflow-west")
    assert info.paths() == ["westflow-west/datasets/d/runs/r/part-00000.parquet"]


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "GetObject")


@pytest.mark.parametrize(("exc", "typed"), [
    (client_error("NoSuchBucket"), BucketMissing),
    (client_error("NoSuchKey"), ObjectMissing),
    (client_error("404"), ObjectMissing),
    (client_error("AccessDenied"), AccessDenied),
    (client_error("InvalidAccessKeyId"), AccessDenied),
    (client_error("SignatureDoesNotMatch"), AccessDenied),
    (client_error("403"), AccessDenied),
    (client_error("ServiceUnavailable"), EndpointUnreachable),
    (client_error("Weird"), StorageError),
    (EndpointConnectionError(endpoint_url="http://x"), EndpointUnreachable),
    (ConnectTimeoutError(endpoint_url="http://x"), EndpointUnreachable),
    (FileNotFoundError(2, "Path does not exist"), ObjectMissing),
    (OSError("AWS Error ACCESS_DENIED during HeadObject operation"), AccessDenied),
    (OSError("AWS Error INVALID_ACCESS_KEY_ID during CreateMultipartUpload"), AccessDenied),
    (OSError("AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7"),
     EndpointUnreachable),
    (OSError("AWS Error NO_SUCH_BUCKET during ListObjectsV2"), BucketMissing),
    (OSError("something else"), StorageError),
], ids=lambda v: type(v).__name__ if isinstance(v, type) else None)
def test_translate(exc: BaseException, typed: type[StorageError]) -> None:
    err = translate(exc, endpoint="http://e", bucket="b", key="k")
    assert type(err) is typed
    assert (err.endpoint, err.bucket, err.key) == ("http://e", "b", "k")


def test_server_command_is_local_and_light(tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path)
    ports = {name: 20000 + i for i, name in enumerate(
        ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc"))}
    cmd = server._command("weed", ports, tmp_path / "s3.json")
    assert "-ip=127.0.0.1" in cmd and "-ip.bind=127.0.0.1" in cmd
    assert "-master.telemetry=false" in cmd  # never phones home
    assert "-s3.port.iceberg=0" in cmd and "-s3.port.lance=0" in cmd
    assert any(a.startswith("-master.volumeSizeLimitMB=") for a in cmd)
    assert f"-s3.port={ports['s3']}" in cmd and f"-s3.config={tmp_path / 's3.json'}" in cmd
    assert not server.is_running() and server.pid is None
    server.stop()  # nothing recorded: a no-op


def test_checkpoint_arguments_are_checked() -> None:
    with pytest.raises(StorageError, match="prefix"):
        CheckpointStore(make_config(), "westflow-east", "../up")
    store = CheckpointStore(make_config(), "westflow-east", "job")
    with pytest.raises(StorageError, match="step"):
        store.save(-1, {}, {})
    with pytest.raises(StorageError, match="JSON"):
        store.save(0, {}, {"x": object()})


def test_discover_prefers_env_then_state_dir(tmp_path: Path) -> None:
    from storage.s3_config import S3Config

    env = {"WESTFLOW_S3_ENDPOINT": "http://127.0.0.1:9", "WESTFLOW_S3_ACCESS_KEY": "a",
           "WESTFLOW_S3_SECRET_KEY": "b", "WESTFLOW_STATE_DIR": str(tmp_path)}
    assert S3Config.discover(env).endpoint_url == "http://127.0.0.1:9"
    (tmp_path / "s3").mkdir()
    (tmp_path / "s3" / "credentials.json").write_text('{"access_key": "k", "secret_key": "s"}')
    (tmp_path / "s3" / "server.json").write_text('{"endpoint_url": "http://127.0.0.1:8"}')
    found = S3Config.discover({"WESTFLOW_STATE_DIR": str(tmp_path)})
    assert (found.endpoint_url, found.access_key) == ("http://127.0.0.1:8", "k")
    with pytest.raises(StorageError, match="WESTFLOW_S3_ENDPOINT"):
        S3Config.discover({})
