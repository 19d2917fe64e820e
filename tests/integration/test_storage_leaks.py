"""Failed and killed writes leave nothing behind: no object, no multipart upload in progress.

A write that fails (its data source raises mid-part or between parts, the
server rejects a part) cleans up itself; what a killed process or a server
that died mid-write leaves, ``westflow storage gc`` removes, and it never
touches committed datasets or checkpoints. Every fault lands at a barrier the
test observes in the bucket (a part listed, an upload open), never on a timer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from storage import CheckpointStore, DatasetStore, S3Config, SeaweedServer
from storage import datasets as datasets_mod
from storage import uploads as uploads_mod
from westflow.errors import ObjectMissing, StorageError
from westflow_cli.main import main

pytestmark = pytest.mark.integration

BUCKETS = ("westflow-east", "westflow-west")
ROWS = 50_000   # per batch: 800 kB of int64 + float64


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A server of this module's own: the tests compare whole bucket listings, and one kills it."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-leaks"), die_with_parent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def config(server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> S3Config:
    """Small sizes so a few MB cross every boundary: 12 MiB dataset parts of 5 MiB upload parts."""
    monkeypatch.setattr(datasets_mod, "ROW_GROUP_BYTES", 1 << 20)
    monkeypatch.setattr(datasets_mod, "STREAM_BUFFER", 1 << 20)
    monkeypatch.setattr(datasets_mod, "PART_BYTES", 12 << 20)
    monkeypatch.setattr(uploads_mod, "PART_BYTES", 5 << 20)
    monkeypatch.delenv("WESTFLOW_S3_ENDPOINT", raising=False)
    return server.start()


@pytest.fixture(autouse=True)
def empty_buckets(server: SeaweedServer) -> Iterator[None]:
    """Each test starts and ends with empty buckets (and says so if it did not)."""
    yield
    if server.is_running():
        client = server.config.boto3_client()
        for bucket in BUCKETS:
            for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])


def batch(i: int) -> pa.RecordBatch:
    rng = np.random.default_rng(i)
    return pa.record_batch({"id": np.arange(i * ROWS, (i + 1) * ROWS, dtype=np.int64),
                            "x": rng.random(ROWS)})


def keys(config: S3Config, bucket: str, prefix: str = "") -> list[str]:
    client = config.boto3_client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def uploads(config: S3Config, bucket: str, prefix: str = "") -> list[str]:
    reply = config.boto3_client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return sorted(u["Key"] for u in reply.get("Uploads", []))


def everything(config: S3Config) -> dict[str, tuple[list[str], list[str]]]:
    """Every object and every upload in progress, per bucket."""
    return {b: (keys(config, b), uploads(config, b)) for b in BUCKETS}


def part_listed(config: S3Config, prefix: str) -> bool:
    return any(k.endswith("/part-00000.parquet") for k in keys(config, "westflow-east", prefix))


def source(until: Callable[[], bool], then: Callable[[], None]) -> Iterator[pa.RecordBatch]:
    """Batches until ``until()`` holds after one was taken in, then ``then()``; fails if it never does."""
    for i in range(400):
        yield batch(i)
        if until():
            then()
            return
    raise AssertionError("the barrier was never reached")


def fail(message: str) -> Callable[[], None]:
    def raise_() -> None:
        raise RuntimeError(message)
    return raise_


# -- a failing write cleans up after itself ---------------------------------------------------


@pytest.mark.parametrize("where", ["mid-part", "between-parts"])
def test_source_failure_leaves_only_the_committed_version(config: S3Config, where: str) -> None:
    store = DatasetStore(config)
    old = store.write("leaky", "east", pa.Table.from_batches([batch(0)]))
    committed = everything(config)
    prefix = "datasets/leaky/runs/"

    def barrier() -> bool:
        if not part_listed(config, prefix):
            return False
        open_ = uploads(config, "westflow-east", prefix)
        # mid-part: part-00000 is done and part-00001 is a multipart upload in progress;
        # between-parts: part-00000 is done and part-00001 has not begun.
        return bool(open_) if where == "mid-part" else not open_

    with pytest.raises(RuntimeError, match="source died"):
        store.write("leaky", "east", source(barrier, fail("source died")))
    assert everything(config) == committed
    assert store.info("leaky", "east") == old and store.verify("leaky", "east")


def test_part_rejected_by_the_server_leaves_nothing(config: S3Config) -> None:
    """The server drops the upload in progress (as an operator's abort or a lifecycle rule
    would): the next part fails, and the write removes the parts it had completed."""
    store = DatasetStore(config)
    client = config.boto3_client()
    prefix = "datasets/rejected/runs/"

    def barrier() -> bool:
        return part_listed(config, prefix) and bool(uploads(config, "westflow-east", prefix))

    def abort_from_outside() -> None:
        for up in client.list_multipart_uploads(Bucket="westflow-east", Prefix=prefix)["Uploads"]:
            client.abort_multipart_upload(Bucket="westflow-east", Key=up["Key"], UploadId=up["UploadId"])

    def keeps_writing() -> Iterator[pa.RecordBatch]:
        yield from source(barrier, abort_from_outside)
        yield from (batch(i) for i in range(400, 440))

    with pytest.raises(StorageError):
        store.write("rejected", "east", keeps_writing())
    assert everything(config) == {b: ([], []) for b in BUCKETS}
    with pytest.raises(ObjectMissing):
        store.info("rejected", "east")


def test_failed_checkpoint_save_leaves_the_previous_step(config: S3Config) -> None:
    store = CheckpointStore(config, "westflow-west", "models/leaky/checkpoints")
    store.save(0, {"w": np.zeros(4)}, {"epoch": 0})
    committed = everything(config)

    class Unsavable:  # np.savez pickles object arrays; this one refuses
        def __reduce__(self) -> tuple[object, ...]:
            raise RuntimeError("array source died")

    big = np.random.default_rng(0).random(2_000_000)  # 16 MB: a multipart upload
    with pytest.raises(RuntimeError, match="array source died"):
        store.save(1, {"w": big, "bad": np.array([Unsavable()], dtype=object)}, {"epoch": 1})
    assert everything(config) == committed
    assert store.latest() == 0 and store.load()[1] == {"epoch": 0}


# -- what a killed process or a dead server leaves, gc removes -----------------------------------


_KILLED_WRITER = """
import sys, time
from pathlib import Path
import numpy as np, pyarrow as pa
from storage import CheckpointStore, DatasetStore, S3Config
from storage import datasets, uploads
from storage._objects import ObjectClient

state, mode, ready, go = sys.argv[1:5]
datasets.ROW_GROUP_BYTES = datasets.STREAM_BUFFER = 1 << 20
datasets.PART_BYTES = 12 << 20
uploads.PART_BYTES = 5 << 20
config = S3Config.load(state)
client = config.boto3_client()

def pause():
    Path(ready).write_text(mode)
    while not Path(go).exists():  # never created: the test kills us here
        time.sleep(0.05)

def paused_before(fn, when=lambda *a, **k: True):
    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            pause()
        return fn(*args, **kwargs)
    return wrapper

if mode == "dataset":  # part-00000 complete, part-00001 a multipart upload in progress
    def source():
        for i in range(400):
            rng = np.random.default_rng(i)
            yield pa.record_batch({"id": np.arange(i * 50_000, (i + 1) * 50_000), "x": rng.random(50_000)})
            keys = [o["Key"] for o in client.list_objects_v2(
                Bucket="westflow-east", Prefix="datasets/killed/").get("Contents", [])]
            ups = client.list_multipart_uploads(Bucket="westflow-east", Prefix="datasets/killed/")
            if any(k.endswith("part-00000.parquet") for k in keys) and ups.get("Uploads"):
                pause()
    DatasetStore(config).write("killed", "east", source())
else:
    if mode == "checkpoint-upload":  # the arrays' upload begun, not completed
        uploads.PartUpload.commit = paused_before(uploads.PartUpload.commit)
    else:  # "checkpoint-marker": the arrays complete, their marker not yet written
        ObjectClient.put_json = paused_before(ObjectClient.put_json,
                                              lambda self, bucket, key, data: key.endswith(".json"))
    big = np.random.default_rng(1).random(2_000_000)
    CheckpointStore(config, "westflow-west", "models/m/checkpoints").save(7, {"w": big}, {})
"""


def kill_mid_write(state_dir: Path, mode: str, tmp_path: Path) -> None:
    """Run a writer in a child process until it reaches ``mode``'s barrier, then SIGKILL it."""
    ready, go = tmp_path / f"{mode}.ready", tmp_path / f"{mode}.go"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(state_dir), mode, str(ready), str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while not ready.exists():
            if proc.poll() is not None:
                raise AssertionError(f"writer ({mode}) exited {proc.returncode} before its barrier:\n"
                                     f"{proc.stdout.read().decode() if proc.stdout else ''}")
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()


def gc(state_dir: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    capsys.readouterr()
    assert main(["storage", "gc", "--state-dir", str(state_dir), *flags]) == 0
    return capsys.readouterr().out


def test_gc_removes_what_killed_writers_left_and_keeps_committed_data(
    server: SeaweedServer, config: S3Config, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    datasets, ckpts = DatasetStore(config), CheckpointStore(config, "westflow-west", "models/m/checkpoints")
    datasets.write("kept", "east", pa.Table.from_batches([batch(1)]))
    kept = datasets.write("kept", "east", pa.Table.from_batches([batch(2)]))  # and its previous run
    ckpts.save(0, {"w": np.ones(3)}, {"epoch": 0})
    committed = everything(config)

    for mode in ("dataset", "checkpoint-upload", "checkpoint-marker"):
        kill_mid_write(server.state_dir, mode, tmp_path)
    left = everything(config)
    assert uploads(config, "westflow-east", "datasets/killed/runs/")           # part-00001, open
    assert keys(config, "westflow-east", "datasets/killed/runs/")              # part-00000, complete
    assert uploads(config, "westflow-west", "models/m/checkpoints/data/000000000007-")
    assert keys(config, "westflow-west", "models/m/checkpoints/data/000000000007-")
    assert ckpts.latest() == 0 and "killed" not in [i.name for i in datasets.list()]

    young = gc(server.state_dir, capsys)  # default --older-than 1h: all of it is seconds old
    assert everything(config) == left and "removed: 0 upload(s) in progress, 0 object(s)" in young
    dry = gc(server.state_dir, capsys, "--older-than", "0", "--dry-run")
    assert everything(config) == left and "would abort upload" in dry

    out = gc(server.state_dir, capsys, "--older-than", "0")
    assert everything(config) == committed, out
    assert "abort upload  westflow-east/datasets/killed/runs/" in out
    assert "delete run    westflow-east/datasets/killed/runs/" in out
    assert "delete arrays westflow-west/models/m/checkpoints/data/000000000007-" in out
    assert datasets.info("kept", "east") == kept and datasets.verify("kept", "east")
    assert ckpts.load()[1] == {"epoch": 0}
    assert gc(server.state_dir, capsys, "--older-than", "0").startswith("removed: 0 upload(s)")


def test_server_killed_mid_write_then_gc_and_retry(
    server: SeaweedServer, config: S3Config, capsys: pytest.CaptureFixture[str],
) -> None:
    store = DatasetStore(config)
    prefix = "datasets/outage/runs/"

    def barrier() -> bool:
        return part_listed(config, prefix) and bool(uploads(config, "westflow-east", prefix))

    def kill_server() -> None:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)

    def dies_midway() -> Iterator[pa.RecordBatch]:
        yield from source(barrier, kill_server)
        yield from (batch(i) for i in range(400, 440))

    with pytest.raises(StorageError):
        store.write("outage", "east", dies_midway())
    server.start()
    # The write could not clean up a server that was gone: its debris is still there ...
    assert uploads(config, "westflow-east", prefix) and keys(config, "westflow-east", prefix)
    gc(server.state_dir, capsys, "--older-than", "0")
    assert everything(config) == {b: ([], []) for b in BUCKETS}   # ... until gc
    info = store.write("outage", "east", iter([batch(i) for i in range(20)]), schema=batch(0).schema)
    assert info.num_rows == 20 * ROWS and store.verify("outage", "east")
