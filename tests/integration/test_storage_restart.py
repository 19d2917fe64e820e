"""Server lifecycle: restarts keep the catalogue; a SIGKILL mid-write publishes nothing."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from storage import DatasetStore, S3Config, SeaweedServer
from storage import datasets as datasets_mod
from westflow.errors import ObjectMissing, StorageError

pytestmark = pytest.mark.integration


def big_table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"id": np.arange(rows, dtype=np.int64), "x": rng.random(rows),
                     "y": rng.random(rows)})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A server of this module's own: these tests stop, restart and kill it."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-restart"), die_with_parent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_start_is_idempotent_and_state_is_private(server: SeaweedServer) -> None:
    config = server.start()
    assert server.is_running()
    again = SeaweedServer(server.state_dir)  # a second handle (e.g. another CLI call)
    assert again.start() == config and again.pid == server.pid
    assert S3Config.load(server.state_dir) == config
    assert config.secret_key not in repr(config) and config.secret_key not in repr(server)
    for name in ("credentials.json", "s3.json", "server.json"):
        mode = stat.S_IMODE((server.base / name).stat().st_mode)
        assert mode == 0o600, name
    assert config.secret_key not in (server.base / "weed.log").read_text()
    assert config.endpoint_url.startswith("http://127.0.0.1:")


def test_catalogue_survives_restart(server: SeaweedServer) -> None:
    config = server.start()
    store = DatasetStore(config)
    table = big_table(20_000, seed=1)
    info = store.write("survivor", "west", table)
    start = time.monotonic()
    SeaweedServer(server.state_dir).stop(timeout_s=15)  # by the pid recorded in the state dir
    assert time.monotonic() - start < 15 and not server.is_running()
    restarted = server.start()
    assert restarted == config  # same ports and credentials: old clients keep working
    assert info in store.list()
    assert store.read("survivor").equals(table)
    assert store.verify("survivor")


def test_sigkill_mid_multipart_write_publishes_nothing(
    server: SeaweedServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(datasets_mod, "ROW_GROUP_BYTES", 2 << 20)
    config = server.start()
    store = DatasetStore(config)
    client = config.boto3_client()
    table = big_table(800_000, seed=7)  # ~19 MB of columns, several multipart parts
    batches = table.to_batches(max_chunksize=100_000)
    uploads_seen: list[int] = []

    def killed_midway() -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(batches):
            if i == 5:
                ups = client.list_multipart_uploads(Bucket="westflow-east").get("Uploads", [])
                uploads_seen.append(len(ups))
                assert server.pid is not None
                os.kill(server.pid, signal.SIGKILL)
            yield batch

    start = time.monotonic()
    with pytest.raises(StorageError):
        store.write("fault", "east", killed_midway())
    print(f"failed write took {time.monotonic() - start:.1f} s")
    assert time.monotonic() - start < 60
    assert uploads_seen and uploads_seen[0] >= 1, "the kill must land inside a multipart upload"
    assert not server.is_running()

    server.start()
    with pytest.raises(ObjectMissing):
        store.info("fault", "east")
    assert "fault" not in [i.name for i in store.list()]

    info = store.write("fault", "east", iter(batches), schema=table.schema)  # the retry
    assert info.num_rows == table.num_rows
    assert store.read("fault", "east").equals(table)
    assert store.verify("fault", "east")
