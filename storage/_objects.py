"""Plain object work through boto3, every failure a typed StorageError.

A thin seam over one boto3 client: JSON get/put (manifests, checkpoint
markers), streamed downloads, listings, deletes, and the multipart uploads in
progress (listed and aborted). Writes of data go through :mod:`storage.uploads`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from storage.s3_config import S3Config
from storage.s3_failures import s3_errors
from westflow.errors import StorageError

__all__ = ["ObjectClient", "StoredObject", "OpenUpload"]

_CHUNK = 8 << 20


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object in a listing."""

    key: str
    size: int
    modified: datetime


@dataclass(frozen=True, slots=True)
class OpenUpload:
    """A multipart upload begun and neither completed nor aborted."""

    key: str
    upload_id: str
    initiated: datetime


class ObjectClient:
    """boto3 calls on one endpoint with westflow's errors."""

    def __init__(self, config: S3Config, client: Any = None) -> None:
        """``client``: a boto3 S3 client to use (default: one built from ``config`` on first use)."""
        self.config = config
        self._client: Any = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.config.boto3_client()
        return self._client

    def _errors(self, bucket: str, key: str, action: str) -> Any:
        return s3_errors(self.config.endpoint_url, bucket, key, action)

    def get_json(self, bucket: str, key: str) -> dict[str, Any]:
        """Fetch and parse a JSON object."""
        with self._errors(bucket, key, "get_object"):
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise StorageError(f"Object is not valid JSON ({exc}).", endpoint=self.config.endpoint_url,
                               bucket=bucket, key=key) from None
        if not isinstance(data, dict):
            raise StorageError("Object is not a JSON mapping.", endpoint=self.config.endpoint_url,
                               bucket=bucket, key=key)
        return data

    def put_json(self, bucket: str, key: str, data: dict[str, Any]) -> None:
        """Write a JSON object in one PUT (atomic: readers see all of it or nothing)."""
        body = json.dumps(data, indent=1, sort_keys=True).encode()
        with self._errors(bucket, key, "put_object"):
            self.client.put_object(Bucket=bucket, Key=key, Body=body,
                                   ContentType="application/json")

    def download(self, bucket: str, key: str, fileobj: IO[bytes]) -> None:
        """Stream an object into a file object."""
        with self._errors(bucket, key, "get_object"):
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(_CHUNK):
                fileobj.write(chunk)

    def iter_object(self, bucket: str, key: str) -> Iterator[bytes]:
        """An object's bytes in chunks."""
        with self._errors(bucket, key, "get_object"):
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            yield from body.iter_chunks(_CHUNK)

    def delete(self, bucket: str, key: str) -> None:
        with self._errors(bucket, key, "delete_object"):
            self.client.delete_object(Bucket=bucket, Key=key)

    def keys(self, bucket: str, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``."""
        with self._errors(bucket, prefix, "list_objects_v2"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"]

    def objects(self, bucket: str, prefix: str) -> Iterator[StoredObject]:
        """Every object under ``prefix`` with its size and last-modified time."""
        with self._errors(bucket, prefix, "list_objects_v2"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    yield StoredObject(obj["Key"], int(obj["Size"]), obj["LastModified"])

    def open_uploads(self, bucket: str, prefix: str = "") -> list[OpenUpload]:
        """The multipart uploads in progress under ``prefix``."""
        out = []
        with self._errors(bucket, prefix, "list_multipart_uploads"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=bucket, Prefix=prefix)
            for page in pages:
                for up in page.get("Uploads", []):
                    out.append(OpenUpload(up["Key"], up["UploadId"], up["Initiated"]))
        return out

    def abort_upload(self, bucket: str, upload: OpenUpload) -> None:
        """Abort one upload in progress (its parts are dropped); gone already is fine."""
        with self._errors(bucket, upload.key, "abort_multipart_upload"):
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=upload.key,
                                                   UploadId=upload.upload_id)
            except self.client.exceptions.NoSuchUpload:
                pass

    def abort_uploads(self, bucket: str, prefix: str) -> int:
        """Abort every upload in progress under ``prefix``; returns how many."""
        uploads = self.open_uploads(bucket, prefix)
        for upload in uploads:
            self.abort_upload(bucket, upload)
        return len(uploads)

    def subprefixes(self, bucket: str, prefix: str) -> list[str]:
        """The names one level below ``prefix`` ('a/' under 'p/' gives 'a')."""
        out = []
        with self._errors(bucket, prefix, "list_objects_v2"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for cp in page.get("CommonPrefixes", []):
                    out.append(cp["Prefix"][len(prefix):].rstrip("/"))
        return out

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many."""
        keys = list(self.keys(bucket, prefix))
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i:i + 1000]]
            with self._errors(bucket, prefix, "delete_objects"):
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def delete_prefix_quietly(self, bucket: str, prefix: str) -> None:
        """Best-effort clean-up (the server may be the reason we are cleaning up)."""
        try:
            self.delete_prefix(bucket, prefix)
        except StorageError:
            pass
