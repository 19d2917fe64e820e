"""DatasetStore and CheckpointStore against a real SeaweedFS server."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage import CheckpointStore, DatasetStore, S3Config, bucket_for_region
from storage import datasets as datasets_mod
from westflow.errors import ObjectMissing, StorageError

pytestmark = pytest.mark.integration


def make_table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": np.arange(rows, dtype=np.int64),
        "value": rng.random(rows),
        "city": pa.array([f"c{i % 7}" for i in range(rows)]),
    })


def test_parquet_round_trip(dataset_store: DatasetStore) -> None:
    table = make_table(50_000)
    info = dataset_store.write("roundtrip", "east", table)
    assert (info.name, info.region, info.bucket) == ("roundtrip", "east", "westflow-east")
    assert info.num_rows == 50_000 and info.size_bytes > 0
    assert info.checksum.startswith("crc32:") and len(info.files) == 1
    assert "value: double" in info.schema
    assert dataset_store.read("roundtrip", "east").equals(table)
    assert dataset_store.read("roundtrip").equals(table)  # region None: found in every bucket
    assert dataset_store.read("roundtrip", columns=["id"]).column_names == ["id"]
    assert dataset_store.info("roundtrip") == info
    assert dataset_store.verify("roundtrip")
    batches = list(dataset_store.iter_batches("roundtrip", batch_size=10_000))
    assert sum(b.num_rows for b in batches) == 50_000
    assert pa.Table.from_batches(batches).equals(table)


def test_streaming_write_rolls_parts(dataset_store: DatasetStore,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets_mod, "ROW_GROUP_BYTES", 200_000)
    monkeypatch.setattr(datasets_mod, "PART_BYTES", 300_000)
    table = make_table(120_000, seed=1)
    seen: list[int] = []

    def batches() -> Iterator[pa.RecordBatch]:
        for b in table.to_batches(max_chunksize=10_000):
            seen.append(b.num_rows)
            yield b

    info = dataset_store.write("parts", "west", batches())
    assert len(info.files) > 1 and sum(seen) == 120_000
    assert dataset_store.read("parts", "west").equals(table)
    assert sum(b.num_rows for b in dataset_store.iter_batches("parts")) == 120_000


def test_boto3_and_pyarrow_see_the_same_objects(dataset_store: DatasetStore,
                                                s3_config: S3Config) -> None:
    table = make_table(1_000)
    info = dataset_store.write("shared", "east", table)
    client = s3_config.boto3_client()
    listed = client.list_objects_v2(Bucket=info.bucket, Prefix="datasets/shared/")["Contents"]
    boto_keys = {o["Key"]: o["Size"] for o in listed}
    assert set(info.files) | {"datasets/shared/manifest.json"} == set(boto_keys)
    fs = dataset_store.filesystem()
    for key in info.files:
        assert fs.get_file_info(f"{info.bucket}/{key}").size == boto_keys[key]
        body = client.get_object(Bucket=info.bucket, Key=key)["Body"].read()
        with fs.open_input_file(f"{info.bucket}/{key}") as f:
            assert f.read() == body
    assert sum(boto_keys[k] for k in info.files) == info.size_bytes
    # An object written by boto3 is read by pyarrow, and the other way round.
    client.put_object(Bucket=info.bucket, Key="datasets/shared/extra.bin", Body=b"boto3")
    with fs.open_input_file(f"{info.bucket}/datasets/shared/extra.bin") as f:
        assert f.read() == b"boto3"
    pq.write_table(table, f"{info.bucket}/datasets/shared/extra.parquet", filesystem=fs)
    head = client.head_object(Bucket=info.bucket, Key="datasets/shared/extra.parquet")
    assert head["ContentLength"] > 0


def test_catalogue_lists_only_complete_datasets(dataset_store: DatasetStore,
                                                s3_config: S3Config) -> None:
    dataset_store.write("cat-a", "east", make_table(10))
    dataset_store.write("cat-b", "west", make_table(20))
    # A write that never published its manifest: parts exist, the dataset does not.
    s3_config.boto3_client().put_object(
        Bucket="westflow-east", Key="datasets/cat-c/runs/x/part-00000.parquet", Body=b"half")
    names = {(i.region, i.name) for i in dataset_store.list()}
    assert {("east", "cat-a"), ("west", "cat-b")} <= names
    assert ("east", "cat-c") not in names
    assert [i.name for i in dataset_store.list("west") if i.name.startswith("cat-")] == ["cat-b"]
    with pytest.raises(ObjectMissing):
        dataset_store.info("cat-c", "east")
    dataset_store.delete("cat-c", "east")
    dataset_store.delete("cat-a", "east")
    with pytest.raises(ObjectMissing):
        dataset_store.read("cat-a")
    with pytest.raises(ObjectMissing):
        dataset_store.delete("cat-a", "east")


def test_replace_is_atomic_and_collects_old_parts(dataset_store: DatasetStore,
                                                  s3_config: S3Config) -> None:
    v1 = dataset_store.write("replace", "east", make_table(100, seed=1))
    v2 = dataset_store.write("replace", "east", make_table(200, seed=2))
    assert dataset_store.info("replace").num_rows == 200
    # v1 stays readable one version longer (a reader that fetched its manifest can finish).
    fs = dataset_store.filesystem()
    assert fs.get_file_info(f"westflow-east/{v1.files[0]}").size > 0
    v3 = dataset_store.write("replace", "east", make_table(300, seed=3))
    assert fs.get_file_info(f"westflow-east/{v1.files[0]}").type.name == "NotFound"
    assert fs.get_file_info(f"westflow-east/{v2.files[0]}").size > 0
    assert dataset_store.read("replace").equals(make_table(300, seed=3))
    assert v3.checksum != v2.checksum
    # Same data, same bytes: the checksum identifies content, not the run.
    assert dataset_store.write("replace", "east", make_table(300, seed=3)).checksum == v3.checksum


def test_failed_write_leaves_nothing(dataset_store: DatasetStore, s3_config: S3Config,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets_mod, "ROW_GROUP_BYTES", 100_000)
    old = dataset_store.write("fails", "east", make_table(10))

    def broken() -> Iterator[pa.RecordBatch]:
        yield from make_table(50_000).to_batches(max_chunksize=5_000)[:5]
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        dataset_store.write("fails", "east", broken())
    assert dataset_store.info("fails") == old  # the old version is untouched
    keys = [o["Key"] for o in s3_config.boto3_client().list_objects_v2(
        Bucket="westflow-east", Prefix="datasets/fails/")["Contents"]]
    assert sorted(keys) == sorted([*old.files, "datasets/fails/manifest.json"])


def test_empty_and_schema_checks(dataset_store: DatasetStore) -> None:
    schema = pa.schema([("a", pa.int64())])
    info = dataset_store.write("empty", "west", iter([]), schema=schema)
    assert info.num_rows == 0
    assert dataset_store.read("empty").schema == schema
    with pytest.raises(StorageError, match="schema"):
        dataset_store.write("empty2", "west", iter([]))
    bad = [pa.record_batch({"a": [1]}), pa.record_batch({"b": [1.0]})]
    with pytest.raises(StorageError, match="differs"):
        dataset_store.write("mixed", "west", iter(bad))
    with pytest.raises(ObjectMissing):
        dataset_store.info("mixed")


def test_same_name_in_two_regions_needs_region(dataset_store: DatasetStore) -> None:
    dataset_store.write("twice", "east", make_table(5))
    dataset_store.write("twice", "west", make_table(6))
    with pytest.raises(StorageError, match="several regions"):
        dataset_store.info("twice")
    assert dataset_store.info("twice", "west").num_rows == 6


def test_checkpoints_resume_from_latest_complete(s3_config: S3Config) -> None:
    store = CheckpointStore(s3_config, bucket_for_region("west"), "jobs/ckpt-test")
    assert store.latest() is None
    with pytest.raises(ObjectMissing):
        store.load()
    w = np.zeros((4, 3))
    for epoch in range(3):  # a training loop: one checkpoint per epoch
        w = w + 1
        key = store.save(epoch, {"w": w, "b": np.arange(3)}, {"epoch": epoch, "loss": 1.0 / (epoch + 1)})
        assert key == f"jobs/ckpt-test/step-{epoch:012d}.json"
    # A save killed mid-way: the arrays got uploaded, the marker never did.
    s3_config.boto3_client().put_object(Bucket="westflow-west",
                                         Key="jobs/ckpt-test/data/000000000003-dead.npz",
                                         Body=b"partial")
    assert store.steps() == [0, 1, 2] and store.latest() == 2
    arrays, meta = store.load()
    assert meta == {"epoch": 2, "loss": pytest.approx(1 / 3)}
    np.testing.assert_array_equal(arrays["w"], np.full((4, 3), 3.0))
    arrays1, meta1 = store.load(1)
    assert meta1["epoch"] == 1 and arrays1["w"][0, 0] == 2.0
    store.save(2, {"w": np.full((2,), 9.0)}, {"epoch": 2, "redo": True})  # replace a step
    assert store.load(2)[1]["redo"] is True
    with pytest.raises(StorageError, match="JSON"):
        store.save(4, {}, {"bad": object()})
