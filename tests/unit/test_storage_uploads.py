"""The write path's bookkeeping (storage.uploads) against a fake S3 client, and `westflow storage gc`'s
argument parsing and report. The same paths run against real SeaweedFS in
tests/integration/test_storage_leaks.py."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from storage import S3Config
from storage import uploads as uploads_mod
from storage._objects import ObjectClient
from storage.gc import GcReport, Removal
from storage.uploads import PartUpload, StagedWrite
from westflow.errors import StorageError
from westflow_cli.commands.storage import duration_s, report_text
from westflow_cli.main import main

MIB = 1 << 20


class FakeS3:
    """Just enough of a boto3 S3 client: objects, multipart uploads and a log of calls."""

    def __init__(self, fail_part: int | None = None, hold: threading.Event | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.keys: dict[str, str] = {}
        self.log: list[str] = []
        self.fail_part, self.hold = fail_part, hold
        self.in_flight = 0
        self.parts_seen: list[tuple[int, int]] = []  # (number, size), in arrival order
        self.aborted_with_parts_in_flight = False
        self._lock = threading.Lock()

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        self.log.append(f"put {Key}")
        self.objects[Key] = bytes(Body)
        return {}

    def create_multipart_upload(self, Bucket: str, Key: str) -> dict[str, Any]:
        upload_id = f"u{len(self.keys)}"
        self.uploads[upload_id], self.keys[upload_id] = {}, Key
        self.log.append(f"create {Key}")
        return {"UploadId": upload_id}

    def upload_part(self, Bucket: str, Key: str, UploadId: str, PartNumber: int, Body: bytes) -> dict[str, Any]:
        with self._lock:
            self.in_flight += 1
        try:
            if self.hold is not None:
                self.hold.wait()
            if PartNumber == self.fail_part:
                raise ClientError({"Error": {"Code": "InternalError", "Message": "disk full"}}, "UploadPart")
            if UploadId not in self.uploads:
                raise ClientError({"Error": {"Code": "NoSuchUpload", "Message": "gone"}}, "UploadPart")
            self.uploads[UploadId][PartNumber] = bytes(Body)
            self.parts_seen.append((PartNumber, len(Body)))
            return {"ETag": f"e{PartNumber}"}
        finally:
            with self._lock:
                self.in_flight -= 1

    def complete_multipart_upload(self, Bucket: str, Key: str, UploadId: str,
                                  MultipartUpload: dict[str, Any]) -> dict[str, Any]:
        parts = self.uploads.pop(UploadId)
        numbers = [p["PartNumber"] for p in MultipartUpload["Parts"]]
        assert [p["ETag"] for p in MultipartUpload["Parts"]] == [f"e{n}" for n in numbers]
        self.objects[Key] = b"".join(parts[n] for n in numbers)
        self.log.append(f"complete {Key} {numbers}")
        return {}

    def abort_multipart_upload(self, Bucket: str, Key: str, UploadId: str) -> dict[str, Any]:
        self.aborted_with_parts_in_flight |= self.in_flight > 0
        self.uploads.pop(UploadId, None)
        self.log.append(f"abort {Key}")
        return {}

    def get_paginator(self, name: str) -> Any:
        fake = self

        class Pages:
            def paginate(self, Bucket: str, Prefix: str = "", **_: Any) -> Iterator[dict[str, Any]]:
                if name == "list_objects_v2":
                    yield {"Contents": [{"Key": k, "Size": len(v), "LastModified": datetime.now(UTC)}
                                        for k, v in sorted(fake.objects.items()) if k.startswith(Prefix)]}
                else:
                    yield {"Uploads": [{"Key": fake.keys[u], "UploadId": u, "Initiated": datetime.now(UTC)}
                                       for u in fake.uploads if fake.keys[u].startswith(Prefix)]}

        return Pages()

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:
        for obj in Delete["Objects"]:
            self.objects.pop(obj["Key"], None)
            self.log.append(f"delete {obj['Key']}")
        return {}

    class exceptions:  # noqa: N801 - as boto3 spells it
        NoSuchUpload = type("NoSuchUpload", (Exception,), {})


def objects_of(fake: FakeS3) -> ObjectClient:
    return ObjectClient(S3Config("http://127.0.0.1:9", "AK", "SK"), client=fake)


def test_a_small_object_is_one_put_at_commit() -> None:
    fake = FakeS3()
    up = PartUpload(objects_of(fake), "b", "k")
    up.write(b"x" * MIB)
    assert fake.log == [] and not up.closed
    up.commit()
    assert fake.log == ["put k"] and fake.objects["k"] == b"x" * MIB and up.state == "committed"


def test_a_large_object_goes_in_parts_and_appears_at_commit() -> None:
    fake = FakeS3()
    up = PartUpload(objects_of(fake), "b", "k", part_bytes=5 * MIB)
    data = bytes(range(256)) * (12 * MIB // 256)
    for i in range(0, len(data), 3 * MIB):
        up.write(data[i:i + 3 * MIB])
    assert "k" not in fake.objects and fake.log == ["create k"]
    up.commit()
    assert fake.log == ["create k", "complete k [1, 2, 3]"] and fake.objects["k"] == data


def test_parts_grow_so_the_part_count_stays_within_s3s_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads_mod, "_GROWTH_EVERY", 2)   # doubles every 2 parts instead of 1,000
    fake = FakeS3()
    up = PartUpload(objects_of(fake), "b", "k", part_bytes=5 * MIB)
    up.write(b"x" * 51 * MIB)
    up.commit()
    sizes = [size for _, size in sorted(fake.parts_seen)]
    assert sizes == [5 * MIB, 5 * MIB, 10 * MIB, 10 * MIB, 20 * MIB, 1 * MIB]


def test_a_failed_part_aborts_the_upload_and_raises_typed() -> None:
    fake = FakeS3(fail_part=2)
    up = PartUpload(objects_of(fake), "b", "k", part_bytes=5 * MIB)
    with pytest.raises(StorageError, match="disk full"):
        up.write(b"x" * 11 * MIB)
        up.commit()
    assert fake.log == ["create k", "abort k"] and fake.uploads == {} and fake.objects == {}
    assert up.state == "aborted"
    with pytest.raises(StorageError, match="aborted"):
        up.write(b"more")


def test_abort_waits_for_the_parts_in_flight() -> None:
    hold = threading.Event()
    fake = FakeS3(hold=hold)
    up = PartUpload(objects_of(fake), "b", "k", part_bytes=5 * MIB)
    up.write(b"x" * 10 * MIB)   # two parts, both held in upload_part

    def release_once_aborting() -> None:
        while up.state != "aborted":
            threading.Event().wait(0.001)
        hold.set()

    helper = threading.Thread(target=release_once_aborting)
    helper.start()
    assert up.abort() is True
    helper.join()
    assert not fake.aborted_with_parts_in_flight and fake.log[-1] == "abort k" and fake.uploads == {}


def test_close_without_commit_aborts() -> None:
    fake = FakeS3()
    up = PartUpload(objects_of(fake), "b", "k", part_bytes=5 * MIB)
    up.write(b"x" * 6 * MIB)
    up.close()
    assert fake.log == ["create k", "abort k"] and up.closed and fake.objects == {}


def test_part_size_below_the_s3_minimum_is_refused() -> None:
    with pytest.raises(StorageError, match="part_bytes 1048576; must be >= 5 MiB"):
        PartUpload(objects_of(FakeS3()), "b", "k", part_bytes=MIB)


def test_staged_write_removes_everything_it_wrote_on_failure() -> None:
    fake = FakeS3()
    fake.objects["run/0/other-write"] = b"x"   # under a different prefix: untouched
    with pytest.raises(RuntimeError, match="source died"):
        with StagedWrite(objects_of(fake), "b", "run/1/", published=lambda: False) as staged:
            first = staged.open("run/1/part-0")
            first.write(b"a")
            first.commit()
            second = staged.open("run/1/part-1")
            second.write(b"b" * 6 * MIB)
            raise RuntimeError("source died")
    assert fake.objects == {"run/0/other-write": b"x"} and fake.uploads == {}
    assert staged.cleaned is True and second.state == "aborted"


@pytest.mark.parametrize("published", [lambda: True, lambda: (_ for _ in ()).throw(StorageError("down"))],
                         ids=["published", "cannot-tell"])
def test_staged_write_keeps_what_may_have_been_published(published: Any) -> None:
    fake = FakeS3()
    with pytest.raises(RuntimeError):
        with StagedWrite(objects_of(fake), "b", "run/1/", published=published) as staged:
            part = staged.open("run/1/part-0")
            part.write(b"a")
            part.commit()
            raise RuntimeError("the manifest PUT's reply was lost")
    assert fake.objects == {"run/1/part-0": b"a"}   # gc decides later, against the manifest


def test_staged_key_outside_the_prefix_is_refused() -> None:
    with pytest.raises(StorageError, match="outside the write's prefix"):
        StagedWrite(objects_of(FakeS3()), "b", "run/1/").open("run/2/part-0")


@pytest.mark.parametrize(("text", "seconds"), [("0", 0.0), ("90", 90.0), ("90s", 90.0), ("30m", 1800.0),
                                               ("1h", 3600.0), ("1.5h", 5400.0), ("2d", 172800.0)])
def test_duration(text: str, seconds: float) -> None:
    assert duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "-1h", "1w", "nan", "inf", "1e400", "١h", "h", "1 h 2"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be a number >= 0"):
        duration_s(text)


def test_gc_flag_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["storage", "gc", "--older-than", "soon"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--older-than" in err and "'soon'" in err and "Traceback" not in err


def test_gc_report_text() -> None:
    report = GcReport(removed=(Removal("upload", "westflow-east", "datasets/d/runs/r/part-00001.parquet", 0, 0, 7200),
                               Removal("run", "westflow-east", "datasets/d/runs/r/", 2, 12_000_000, 7300)),
                      young=1, buckets=("westflow-east", "westflow-west"), dry_run=True, older_than_s=3600)
    text = report_text(report)
    assert "would abort upload  westflow-east/datasets/d/runs/r/part-00001.parquet" in text
    assert "would delete run    westflow-east/datasets/d/runs/r/  (2 object(s), 12.0 MB, 2.0 h old)" in text
    assert text.endswith("would remove: 1 upload(s) in progress, 2 object(s), 12.0 MB in westflow-east, "
                         "westflow-west; 1 leftover(s) younger than 1.0 h kept")
