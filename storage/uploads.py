"""The one write path to S3: objects staged under a write's own prefix, removed if the write fails.

- :class:`PartUpload` — a file-like sink for one object, sent as a multipart
  upload (parts in the background, bounded in number) or, when small, as one
  PUT on :meth:`~PartUpload.commit`. The object appears only on ``commit``;
  :meth:`~PartUpload.abort` waits for the parts in flight, then aborts the
  upload, so nothing of it remains (neither a truncated object nor an
  in-progress upload). pyarrow's own S3 stream cannot do that: closing it,
  even from its destructor, completes whatever it holds.
- :class:`StagedWrite` — a context manager around every object one logical
  write stages. If the block raises (an S3 error, the caller's own data source
  failing, ``KeyboardInterrupt``), it aborts the open uploads and deletes the
  objects it committed, then re-raises the original error. What a killed
  process leaves is for :mod:`storage.gc` (``westflow storage gc``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Any

from storage._objects import ObjectClient
from storage.s3_failures import s3_errors
from westflow.errors import ObjectMissing, StorageError

__all__ = ["PartUpload", "StagedWrite", "PART_BYTES", "MAX_IN_FLIGHT"]

PART_BYTES = 5 << 20   # S3's minimum part (as pyarrow's); doubled every 1,000 parts (S3 allows 10,000)
MAX_IN_FLIGHT = 4      # parts uploading at once (memory held: this many parts plus one buffer)
_MAX_PARTS = 10_000
_GROWTH_EVERY = 1_000


class PartUpload:
    """One object written through ``write()``; visible only after :meth:`commit`."""

    def __init__(self, objects: ObjectClient, bucket: str, key: str, *,
                 part_bytes: int | None = None, max_in_flight: int | None = None) -> None:
        part_bytes = PART_BYTES if part_bytes is None else part_bytes
        max_in_flight = MAX_IN_FLIGHT if max_in_flight is None else max_in_flight
        if part_bytes < 5 << 20:
            raise StorageError(f"Invalid part_bytes {part_bytes!r}; must be >= 5 MiB (S3's minimum "
                               "part size).", bucket=bucket, key=key)
        self.objects, self.bucket, self.key = objects, bucket, key
        self.part_bytes, self.max_in_flight = part_bytes, max(1, max_in_flight)
        self.upload_id: str | None = None
        self.state = "open"   # open -> committed | aborted
        self.size = 0
        self._buffer = bytearray()
        self._parts: list[tuple[int, Future[str]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PartUpload({self.bucket!r}, {self.key!r}, {self.state}, {self.size} bytes)"

    # -- file-like -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state != "open"

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.state != "open":
            raise StorageError(f"Write to a {self.state} upload.", bucket=self.bucket, key=self.key)
        view = memoryview(data).cast("B")
        self._buffer += view
        self.size += view.nbytes
        while len(self._buffer) >= (size := self._next_part_bytes()):
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._send(chunk)
        return view.nbytes

    def _next_part_bytes(self) -> int:
        """Parts grow as an object does, so 10,000 of them reach S3's 5 TiB object limit."""
        return self.part_bytes << (len(self._parts) // _GROWTH_EVERY)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Closing without :meth:`commit` aborts: an unfinished object never appears."""
        if self.state == "open":
            self.abort()

    # -- commit / abort ------------------------------------------------------------------

    def _call(self, action: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        with s3_errors(self.objects.config.endpoint_url, self.bucket, self.key, action):
            return fn(Bucket=self.bucket, Key=self.key, **kwargs)

    def _send(self, chunk: bytes) -> None:
        client = self.objects.client
        if self.upload_id is None:
            self.upload_id = self._call("create_multipart_upload",
                                        client.create_multipart_upload)["UploadId"]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="westflow-s3-part")
        number = len(self._parts) + 1
        if number > _MAX_PARTS:
            raise StorageError(f"Object exceeds {_MAX_PARTS} parts (S3's limit). To fix: write it "
                               "in smaller pieces.", bucket=self.bucket, key=self.key)
        self._wait_for_room()
        self._parts.append((number, self._pool.submit(self._upload_part, number, chunk)))

    def _upload_part(self, number: int, chunk: bytes) -> str:
        reply = self._call("upload_part", self.objects.client.upload_part, UploadId=self.upload_id,
                           PartNumber=number, Body=chunk)
        return str(reply["ETag"])

    def _wait_for_room(self) -> None:
        """Block while ``max_in_flight`` parts are uploading; raise the first part that failed."""
        pending = [f for _, f in self._parts if not f.done()]
        while len(pending) >= self.max_in_flight:
            wait(pending, return_when="FIRST_COMPLETED")
            pending = [f for _, f in self._parts if not f.done()]
        for _, f in self._parts:
            if f.done() and f.exception() is not None:
                f.result()

    def commit(self) -> None:
        """Send what is left and complete the object; on any failure the upload is aborted."""
        if self.state != "open":
            raise StorageError(f"Commit of a {self.state} upload.", bucket=self.bucket, key=self.key)
        try:
            if self.upload_id is None:
                self._call("put_object", self.objects.client.put_object, Body=bytes(self._buffer))
            else:
                if self._buffer or not self._parts:
                    self._send(bytes(self._buffer))
                parts = [{"PartNumber": n, "ETag": f.result()} for n, f in self._parts]
                self._call("complete_multipart_upload", self.objects.client.complete_multipart_upload,
                           UploadId=self.upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self.abort()
            raise
        self._buffer = bytearray()
        self.state = "committed"
        self._shutdown()

    def abort(self) -> bool:
        """Drop the object: wait for parts in flight, then abort the upload. True if nothing remains
        of it on the server (False: the server could not be reached; ``westflow storage gc`` will)."""
        with self._lock:
            if self.state == "aborted":
                return True
            self.state = "aborted"
        self._buffer = bytearray()
        for _, f in self._parts:
            f.cancel()
        # Parts already sending finish first: an UploadPart landing after the abort could
        # leave a part behind on some servers.
        wait([f for _, f in self._parts])
        self._shutdown()
        if self.upload_id is None:
            return True
        try:
            self._call("abort_multipart_upload", self.objects.client.abort_multipart_upload,
                       UploadId=self.upload_id)
        except ObjectMissing:
            return True   # NoSuchUpload: already gone
        except StorageError:
            return False
        return True

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class StagedWrite:
    """Every object of one write under ``prefix`` (unique to the write); all removed if it fails.

    ``with StagedWrite(objects, bucket, prefix, published=check) as staged:`` then
    ``staged.open(key)`` for each object, ``upload.commit()`` when it is whole,
    and last the publishing PUT (a manifest, a marker) outside the prefix.
    ``published()`` says whether that PUT took effect; it is asked only on failure.
    """

    def __init__(self, objects: ObjectClient, bucket: str, prefix: str, *,
                 published: Callable[[], bool] | None = None,
                 part_bytes: int | None = None, max_in_flight: int | None = None) -> None:
        if not prefix:
            raise StorageError("A staged write needs a non-empty prefix of its own.", bucket=bucket)
        self.objects, self.bucket, self.prefix = objects, bucket, prefix
        self.published = published
        self.part_bytes, self.max_in_flight = part_bytes, max_in_flight
        self.uploads: list[PartUpload] = []
        self.cleaned: bool | None = None   # after a failure: True if nothing of it remains

    def __repr__(self) -> str:
        return f"StagedWrite({self.bucket!r}, {self.prefix!r}, {len(self.uploads)} objects)"

    def __enter__(self) -> StagedWrite:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is not None and not self._maybe_published():
            self.discard()

    def _maybe_published(self) -> bool:
        """Whether the write may have been published despite the error (a commit PUT whose
        reply was lost): then its objects stay, and gc removes them only if nothing refers to them."""
        if self.published is None:
            return False
        try:
            return self.published()
        except StorageError:
            self.cleaned = False
            return True   # cannot tell: leave it to `westflow storage gc`, which checks

    def open(self, key: str) -> PartUpload:
        """A new object of this write; ``key`` must lie under the write's prefix."""
        if not key.startswith(self.prefix):
            raise StorageError(f"Staged key {key!r} is outside the write's prefix {self.prefix!r}.",
                               bucket=self.bucket, key=key)
        upload = PartUpload(self.objects, self.bucket, key, part_bytes=self.part_bytes,
                            max_in_flight=self.max_in_flight)
        self.uploads.append(upload)
        return upload

    def discard(self) -> bool:
        """Abort every open upload and delete everything under the prefix (best effort: the server
        may be why the write failed). True if nothing of the write remains."""
        clean = all([u.abort() for u in self.uploads if u.state == "open"])
        try:
            self.objects.abort_uploads(self.bucket, self.prefix)
            self.objects.delete_prefix(self.bucket, self.prefix)
            clean = clean and not any(True for _ in self.objects.keys(self.bucket, self.prefix))
        except StorageError:
            clean = False
        self.cleaned = clean
        return clean
