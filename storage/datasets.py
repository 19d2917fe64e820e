"""The dataset catalogue: Parquet datasets in the region buckets, published atomically.

Layout in bucket ``westflow-<region>``::

    datasets/<name>/manifest.json                    the catalogue entry, written last
    datasets/<name>/runs/<run_id>/part-00000.parquet  data parts of one write

A write streams its parts under a fresh ``run_id`` (never under a name a reader
looks at), then publishes them with one PUT of ``manifest.json``; an S3 PUT is
all-or-nothing, so a reader sees the old version or the new one, never a mix,
and a failed or killed write leaves no manifest pointing at it. Readers only
open the files the manifest lists. Parts go up through
:class:`storage.uploads.StagedWrite`: a write that fails (the caller's batches
raising included) aborts the part in progress and deletes the parts it had
finished, so nothing of it remains; what a killed process leaves (an upload in
progress, finished parts) ``westflow storage gc`` removes. The catalogue is the set of manifests, so
it lives in S3 itself and survives a restart of the server.

After a new version is published, the parts of the version before the previous
one are deleted (the previous one stays, so a reader that fetched the old
manifest a moment ago can still finish), and so are parts of runs that never
got published and are older than :data:`ORPHAN_AGE_S`.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage._objects import ObjectClient
from storage.s3_config import REGIONS, S3Config, bucket_for_region
from storage.s3_failures import s3_errors
from storage.uploads import PartUpload, StagedWrite
from westflow.errors import BucketMissing, ObjectMissing, StorageError
from westflow.inventory import Region
from westflow.spec import DatasetRef

__all__ = ["DatasetInfo", "DatasetStore", "MANIFEST_FORMAT", "dataset_prefix"]

MANIFEST_FORMAT = "westflow.dataset/1"
ROW_GROUP_BYTES = 64 << 20    # in-memory batches buffered before one row group is written
PART_BYTES = 512 << 20        # a part file is closed and a new one started past this size
STREAM_BUFFER = 8 << 20       # bytes gathered before each write to the S3 stream
ORPHAN_AGE_S = 3600.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def dataset_prefix(name: str) -> str:
    """Key prefix of a dataset inside its bucket."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise StorageError(f"Invalid dataset name {name!r}; must be 1-128 characters of letters, "
                           "digits, '_', '-', '.' starting with a letter or digit.")
    return f"datasets/{name}/"


@dataclass(frozen=True)
class DatasetInfo:
    """One complete dataset: where it is, how big, its schema and checksum.

    ``files`` are S3 keys inside ``bucket`` (``bucket + '/' + key`` is the path
    for :meth:`DatasetStore.filesystem`); ``checksum`` is ``crc32:<hex>``, the
    CRC-32 of all parts' bytes in order; ``size_bytes`` is the bytes stored
    (what moving the dataset costs); ``created_at`` is ISO-8601 UTC.
    """

    name: str
    region: str
    bucket: str
    size_bytes: int
    num_rows: int
    schema: str
    checksum: str
    files: tuple[str, ...]
    created_at: str

    def as_ref(self) -> DatasetRef:
        """The placement engine's view of this dataset (name, region, size, bucket)."""
        return DatasetRef(self.name, Region(self.region), self.size_bytes, self.bucket)

    def paths(self) -> list[str]:
        """The parts as ``bucket/key`` paths for a ``pyarrow.fs.S3FileSystem``."""
        return [f"{self.bucket}/{key}" for key in self.files]


class _ChecksumSink:
    """File-like pass-through to one part's upload that counts and CRC-32s what is written.

    CRC-32 (as S3's own integrity checksums) costs ~1 % of a write here;
    SHA-256 on this class of CPU (no SHA extensions) cost ~10 %. Closing it
    does not commit the part (pyarrow closes it on every path); ``discarding``
    drops writes, so an abandoned Parquet writer can close without error.
    """

    def __init__(self, upload: PartUpload, running: int) -> None:
        self.upload = upload
        self.crc = 0
        self.running = running  # CRC-32 of every part so far, this one included
        self.size = 0
        self.closed = False
        self.discarding = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if self.discarding:
            return view.nbytes
        self.crc = zlib.crc32(view, self.crc)
        self.running = zlib.crc32(view, self.running)
        self.size += view.nbytes
        self.upload.write(view)
        return view.nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class _PartWriter:
    """Streams record batches into numbered Parquet parts, each one object of a staged write."""

    def __init__(self, staged: StagedWrite, schema: pa.Schema) -> None:
        self.staged, self.schema = staged, schema
        self.parts: list[dict[str, Any]] = []
        self.num_rows = 0
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._sink: _ChecksumSink | None = None
        self.crc32 = 0  # of all parts' bytes, in order
        self._out: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._key = ""

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.schema.equals(self.schema):
            raise StorageError(f"Record batch schema {batch.schema!r} differs from the dataset "
                               f"schema {self.schema!r}. To fix: cast every batch to one schema.")
        self._buffer.append(batch)
        self._buffered += batch.nbytes
        self.num_rows += batch.num_rows
        if self._buffered >= ROW_GROUP_BYTES:
            self._flush()

    def _open(self) -> pq.ParquetWriter:
        self._key = f"{self.staged.prefix}part-{len(self.parts):05d}.parquet"
        self._sink = _ChecksumSink(self.staged.open(self._key), self.crc32)
        self._out = pa.BufferedOutputStream(pa.PythonFile(self._sink, mode="w"), STREAM_BUFFER)
        self._writer = pq.ParquetWriter(self._out, self.schema)
        return self._writer

    def _flush(self) -> None:
        writer = self._writer or self._open()
        if self._buffer:
            writer.write_table(pa.Table.from_batches(self._buffer, self.schema))
        self._buffer, self._buffered = [], 0
        if self._out is not None and self._out.tell() >= PART_BYTES:
            self._close_part()

    def _close_part(self) -> None:
        if self._writer is None or self._out is None or self._sink is None:
            return
        self._writer.close()
        self._out.close()
        self._sink.upload.commit()  # the part now exists, unlisted until the manifest names it
        self.parts.append({"key": self._key, "size": self._sink.size,
                           "crc32": f"{self._sink.crc:08x}"})
        self.crc32 = self._sink.running
        self._writer = self._out = self._sink = None

    def finish(self) -> list[dict[str, Any]]:
        self._flush()
        if not self.parts or self._writer is not None:
            if self._writer is None:
                self._open()  # an empty dataset still gets one part carrying its schema
            self._close_part()
        return self.parts

    def abandon(self) -> None:
        """Drop the part being written: its upload is aborted, nothing more is sent."""
        writer, out, sink = self._writer, self._out, self._sink
        self._writer = self._out = self._sink = None
        self._buffer = []
        if sink is not None:
            sink.discarding = True
            sink.upload.abort()
        for f in (writer, out):
            if f is not None:
                try:
                    f.close()
                except Exception:  # noqa: BLE001 - whatever the writer's state, the part is gone
                    pass
        if writer is not None:
            writer.is_open = False  # else its __del__ retries the close


def _batches(data: pa.Table | Iterable[pa.RecordBatch],
             schema: pa.Schema | None) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if isinstance(data, pa.Table):
        table = data if schema is None else data.cast(schema)
        return table.schema, iter(table.to_batches())
    it = iter(data)
    if schema is not None:
        return schema, it
    first = next(it, None)
    if first is None:
        raise StorageError("Cannot infer the schema of an empty batch stream. "
                           "To fix: pass schema=.")

    def chain() -> Iterator[pa.RecordBatch]:
        yield first
        yield from it

    return first.schema, chain()


class DatasetStore:
    """Write, read, list and delete Parquet datasets in the region buckets."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self._objects = ObjectClient(config)
        self._fs: pafs.S3FileSystem | None = None

    def __repr__(self) -> str:
        return f"DatasetStore({self.config!r})"

    def filesystem(self) -> pafs.S3FileSystem:
        """The ``pyarrow.fs.S3FileSystem`` this store reads and writes through."""
        if self._fs is None:
            self._fs = self.config.filesystem()
        return self._fs

    # -- writing -------------------------------------------------------------------------

    def write(self, name: str, region: str, data: pa.Table | Iterable[pa.RecordBatch], *,
              schema: pa.Schema | None = None) -> DatasetInfo:
        """Write ``data`` as dataset ``name`` in ``region``; visible only once complete.

        Batches are written as they arrive (at most one row group is held in
        memory). An existing dataset of that name is replaced atomically.
        """
        prefix = dataset_prefix(name)
        bucket = bucket_for_region(region)
        old = self._manifest_or_none(bucket, name)
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)
        run_prefix = f"{prefix}runs/{run_id}/"
        schema, batches = _batches(data, schema)

        def published() -> bool:
            current = self._manifest_or_none(bucket, name)
            return current is not None and current.get("run_id") == run_id

        # A failure anywhere below (the caller's iterator included) aborts the part being
        # uploaded and deletes the parts already written, unless the manifest went out.
        with StagedWrite(self._objects, bucket, run_prefix, published=published) as staged:
            writer = _PartWriter(staged, schema)
            try:
                for batch in batches:  # the caller's iterator: its own errors pass through as they are
                    with s3_errors(self.config.endpoint_url, bucket, run_prefix, "write dataset part"):
                        writer.add(batch)
                with s3_errors(self.config.endpoint_url, bucket, run_prefix, "write dataset part"):
                    parts = writer.finish()
            except BaseException:
                writer.abandon()
                raise
            manifest = {
                "format": MANIFEST_FORMAT, "name": name, "region": region, "bucket": bucket,
                "run_id": run_id, "previous_run": old.get("run_id") if old else None,
                "num_rows": writer.num_rows, "size_bytes": sum(p["size"] for p in parts),
                "checksum": f"crc32:{writer.crc32:08x}", "schema": str(schema),
                "schema_ipc": base64.b64encode(schema.serialize().to_pybytes()).decode(),
                "parts": parts, "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }
            self._objects.put_json(bucket, prefix + "manifest.json", manifest)  # the publish step
        self._collect(bucket, prefix, keep={run_id, manifest["previous_run"]},
                      gone=old.get("previous_run") if old else None)
        return _info(manifest)

    def _collect(self, bucket: str, prefix: str, keep: set[Any], gone: str | None) -> None:
        """Delete unpublished old runs and the version two writes back (best effort)."""
        try:
            runs = self._objects.subprefixes(bucket, prefix + "runs/")
        except StorageError:
            return
        now = time.time()
        for run in runs:
            if run in keep:
                continue
            if run == gone or _run_age_s(run, now) > ORPHAN_AGE_S:
                self._objects.delete_prefix_quietly(bucket, f"{prefix}runs/{run}/")

    # -- reading -------------------------------------------------------------------------

    def _manifest_or_none(self, bucket: str, name: str) -> dict[str, Any] | None:
        try:
            return self._objects.get_json(bucket, dataset_prefix(name) + "manifest.json")
        except ObjectMissing:
            return None

    def _manifest(self, name: str, region: str | None) -> dict[str, Any]:
        key = dataset_prefix(name) + "manifest.json"
        if region is not None:
            return self._objects.get_json(bucket_for_region(region), key)
        found: list[dict[str, Any]] = []
        missing_buckets: list[BucketMissing] = []
        for r in REGIONS:
            try:
                found.append(self._objects.get_json(bucket_for_region(r), key))
            except ObjectMissing:
                continue
            except BucketMissing as exc:
                missing_buckets.append(exc)
        if len(found) > 1:
            raise StorageError(f"Dataset {name!r} exists in several regions "
                               f"({', '.join(m['region'] for m in found)}). "
                               "To fix: pass region=.", endpoint=self.config.endpoint_url, key=key)
        if found:
            return found[0]
        if len(missing_buckets) == len(REGIONS):
            raise missing_buckets[0]
        raise ObjectMissing(f"No complete dataset {name!r} in any region "
                            f"({', '.join(REGIONS)}).", endpoint=self.config.endpoint_url, key=key)

    def info(self, name: str, region: str | None = None) -> DatasetInfo:
        """The catalogue entry; ObjectMissing if absent or not yet complete."""
        return _info(self._manifest(name, region))

    def read(self, name: str, region: str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """The whole dataset (or ``columns`` of it) as one table."""
        m = self._manifest(name, region)
        paths = [f"{m['bucket']}/{p['key']}" for p in m["parts"]]
        with s3_errors(self.config.endpoint_url, m["bucket"], paths[0], "read dataset"):
            if len(paths) == 1:
                return pq.read_table(paths[0], filesystem=self.filesystem(), columns=columns,
                                     schema=_schema(m))
            return pq.read_table(paths, filesystem=self.filesystem(), columns=columns,
                                 schema=_schema(m))

    def iter_batches(self, name: str, region: str | None = None,
                     batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        """Stream the dataset batch by batch (one row group in memory at a time)."""
        m = self._manifest(name, region)
        fs = self.filesystem()
        for part in m["parts"]:
            path = f"{m['bucket']}/{part['key']}"
            with s3_errors(self.config.endpoint_url, m["bucket"], part["key"], "read dataset"):
                with fs.open_input_file(path) as f:
                    yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size)

    def verify(self, name: str, region: str | None = None) -> bool:
        """Re-read every part and check its size and CRC-32 against the manifest."""
        m = self._manifest(name, region)
        running = 0
        for part in m["parts"]:
            crc = size = 0
            for chunk in self._objects.iter_object(m["bucket"], part["key"]):
                crc = zlib.crc32(chunk, crc)
                running = zlib.crc32(chunk, running)
                size += len(chunk)
            if size != part["size"] or f"{crc:08x}" != part["crc32"]:
                return False
        return m["checksum"] == f"crc32:{running:08x}"

    def list(self, region: str | None = None) -> list[DatasetInfo]:
        """Every complete dataset in ``region`` (or in all regions), sorted by region, name."""
        out: list[DatasetInfo] = []
        for r in REGIONS if region is None else (region,):
            bucket = bucket_for_region(r)
            for name in self._objects.subprefixes(bucket, "datasets/"):
                try:
                    out.append(_info(self._objects.get_json(bucket, f"datasets/{name}/manifest.json")))
                except ObjectMissing:
                    continue  # a write in progress or a failed one: not in the catalogue
        return sorted(out, key=lambda i: (i.region, i.name))

    def delete(self, name: str, region: str) -> None:
        """Remove the dataset: its manifest first (it vanishes at once), then its parts."""
        prefix = dataset_prefix(name)
        bucket = bucket_for_region(region)
        had_manifest = self._manifest_or_none(bucket, name) is not None
        if had_manifest:
            self._objects.delete(bucket, prefix + "manifest.json")
        removed = self._objects.delete_prefix(bucket, prefix)
        if not had_manifest and not removed:
            raise ObjectMissing(f"No dataset {name!r} in region {region!r}.",
                                endpoint=self.config.endpoint_url, bucket=bucket, key=prefix)


def _schema(m: dict[str, Any]) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(m["schema_ipc"])))


def _info(m: dict[str, Any]) -> DatasetInfo:
    if m.get("format") != MANIFEST_FORMAT:
        raise StorageError(f"Unknown manifest format {m.get('format')!r}; must be "
                           f"{MANIFEST_FORMAT!r}.", bucket=str(m.get("bucket", "")))
    return DatasetInfo(
        name=m["name"], region=m["region"], bucket=m["bucket"], size_bytes=int(m["size_bytes"]),
        num_rows=int(m["num_rows"]), schema=m["schema"], checksum=m["checksum"],
        files=tuple(p["key"] for p in m["parts"]), created_at=m["created_at"],
    )


def _run_age_s(run_id: str, now: float) -> float:
    try:
        started = datetime.strptime(run_id.split("-", 1)[0], "%Y%m%dT%H%M%S%fZ")
    except ValueError:
        return 0.0  # not one of ours: never collect it
    return now - started.replace(tzinfo=UTC).timestamp()
