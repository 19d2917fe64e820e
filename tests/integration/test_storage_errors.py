"""Every storage failure is a typed error, and it comes within a bounded time."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from storage import CheckpointStore, DatasetStore, S3Config
from storage.s3_failures import s3_errors
from storage.server import free_port
from westflow.errors import (
    AccessDenied,
    BucketMissing,
    EndpointUnreachable,
    ObjectMissing,
    StorageError,
)

pytestmark = pytest.mark.integration

BOUND_S = 10.0


def within(bound_s: float, error: type[StorageError], call: Callable[[], Any]) -> StorageError:
    start = time.monotonic()
    with pytest.raises(error) as info:
        call()
    elapsed = time.monotonic() - start
    assert elapsed < bound_s, f"{error.__name__} took {elapsed:.1f} s"
    return info.value


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_endpoint_refused(s3_config: S3Config) -> None:
    dead = dataclasses.replace(s3_config, endpoint_url=f"http://127.0.0.1:{free_port()}")
    store = DatasetStore(dead)
    err = within(BOUND_S, EndpointUnreachable, lambda: store.info("x", "east"))
    assert err.endpoint == dead.endpoint_url and err.bucket == "westflow-east"
    within(BOUND_S, EndpointUnreachable, lambda: store.write("x", "east", pa.table({"a": [1]})))
    within(BOUND_S, EndpointUnreachable, store.list)
    within(BOUND_S, EndpointUnreachable,
           lambda: CheckpointStore(dead, "westflow-east", "j").save(0, {}, {}))

    def arrow_read() -> None:  # pyarrow's own client goes through the same translation
        with s3_errors(dead.endpoint_url, "westflow-east", "x"):
            store.filesystem().open_input_file("westflow-east/x")

    within(BOUND_S, EndpointUnreachable, arrow_read)


def test_endpoint_that_never_answers(s3_config: S3Config, black_hole: int) -> None:
    hole = dataclasses.replace(s3_config, endpoint_url=f"http://127.0.0.1:{black_hole}",
                               connect_timeout_s=1.0, read_timeout_s=1.0, max_attempts=2)
    within(BOUND_S, EndpointUnreachable, lambda: DatasetStore(hole).info("x", "east"))
    fs = hole.filesystem()

    def arrow_read() -> None:
        with s3_errors(hole.endpoint_url, "westflow-east", "x"):
            fs.open_input_file("westflow-east/x")

    within(BOUND_S, EndpointUnreachable, arrow_read)


def test_bucket_missing(s3_config: S3Config) -> None:
    store = CheckpointStore(s3_config, "westflow-nosuchbucket", "job")
    err = within(BOUND_S, BucketMissing, store.steps)
    assert err.bucket == "westflow-nosuchbucket"
    within(BOUND_S, BucketMissing, lambda: store.load(0))
    # save checks before it uploads anything (SeaweedFS would create the bucket on PUT)
    within(BOUND_S, BucketMissing, lambda: store.save(0, {"a": np.ones(2)}, {}))
    within(BOUND_S, BucketMissing, store.steps)


@pytest.mark.parametrize("field", ["secret_key", "access_key"], ids=["bad-secret", "bad-key"])
def test_bad_credentials(s3_config: S3Config, dataset_store: DatasetStore, field: str) -> None:
    dataset_store.write("creds", "east", pa.table({"a": [1, 2]}))
    bad = dataclasses.replace(s3_config, **{field: "WRONG0000000000"})
    store = DatasetStore(bad)
    within(BOUND_S, AccessDenied, lambda: store.info("creds", "east"))
    within(BOUND_S, AccessDenied, lambda: store.read("creds", "east"))
    within(BOUND_S, AccessDenied, lambda: store.write("creds2", "east", pa.table({"a": [1]})))
    within(BOUND_S, AccessDenied, lambda: store.list("east"))
    fs = bad.filesystem()

    def arrow_read() -> None:
        info = dataset_store.info("creds", "east")
        with s3_errors(bad.endpoint_url, info.bucket, info.files[0]):
            fs.open_input_file(info.paths()[0]).read()

    within(BOUND_S, AccessDenied, arrow_read)


def test_object_missing(s3_config: S3Config, dataset_store: DatasetStore) -> None:
    err = within(BOUND_S, ObjectMissing, lambda: dataset_store.info("nope", "east"))
    assert err.key == "datasets/nope/manifest.json" and err.bucket == "westflow-east"
    within(BOUND_S, ObjectMissing, lambda: dataset_store.read("nope"))
    within(BOUND_S, ObjectMissing, lambda: list(dataset_store.iter_batches("nope")))
    within(BOUND_S, ObjectMissing,
           lambda: CheckpointStore(s3_config, "westflow-east", "none").load())
    within(BOUND_S, ObjectMissing,
           lambda: CheckpointStore(s3_config, "westflow-east", "none").load(7))

    # A part listed by the manifest but gone from the bucket.
    info = dataset_store.write("lost-part", "east", pa.table({"a": [1]}))
    s3_config.boto3_client().delete_object(Bucket=info.bucket, Key=info.files[0])
    within(BOUND_S, ObjectMissing, lambda: dataset_store.read("lost-part"))
