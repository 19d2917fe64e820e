"""Garbage collection: what failed or killed writes left in the westflow buckets.

A write that fails cleans up after itself (:mod:`storage.uploads`); a process
killed mid-write cannot. It leaves three kinds of debris, all unreachable from
any reader, and :func:`collect` removes each once it is older than a limit:

- multipart uploads in progress (never completed nor aborted) — aborted;
- dataset runs no manifest names (``datasets/<name>/runs/<run_id>/``, neither
  the published run nor the one before it, which readers may still hold) —
  their objects deleted;
- checkpoint arrays no marker names (``<prefix>/data/<step>-<token>.npz``
  whose ``<prefix>/step-<step>.json`` is missing or names other arrays) —
  deleted.

Committed data (a manifest and the runs it names, a marker and its arrays) is
never touched. The age limit keeps a write still under way safe: its newest
object, or its upload, is younger than the limit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from storage._objects import ObjectClient, StoredObject
from storage.s3_config import BUCKET_PREFIX, S3Config
from storage.s3_failures import s3_errors
from westflow.errors import ObjectMissing, StorageError

__all__ = ["Removal", "GcReport", "collect", "westflow_buckets", "DEFAULT_AGE_S"]

DEFAULT_AGE_S = 3600.0
_RUN = re.compile(r"^datasets/([^/]+)/runs/([^/]+)/")
_CHECKPOINT_DATA = re.compile(r"^(.+/)data/(\d{12})-[0-9a-f]{12}\.npz$")
_UNKNOWN = "\0unknown"   # a marker that could not be read: its step's arrays are kept


@dataclass(frozen=True, slots=True)
class Removal:
    """One thing removed (or, in a dry run, that would be).

    ``kind`` is ``upload`` (an upload in progress, aborted), ``run`` (an
    unpublished dataset run; ``key`` is its prefix) or ``checkpoint`` (arrays
    no marker names).
    """

    kind: str
    bucket: str
    key: str
    objects: int
    size_bytes: int
    age_s: float


@dataclass(frozen=True, slots=True)
class GcReport:
    """What :func:`collect` removed, and how many leftovers it left for being too young."""

    removed: tuple[Removal, ...]
    young: int
    buckets: tuple[str, ...]
    dry_run: bool
    older_than_s: float
    failures: tuple[str, ...] = field(default=())


def westflow_buckets(objects: ObjectClient) -> list[str]:
    """Every bucket whose name starts with ``westflow-``."""
    with s3_errors(objects.config.endpoint_url, action="list_buckets"):
        reply = objects.client.list_buckets()
    return sorted(b["Name"] for b in reply.get("Buckets", []) if b["Name"].startswith(BUCKET_PREFIX))


def collect(config: S3Config, *, older_than_s: float = DEFAULT_AGE_S, dry_run: bool = False,
            now: datetime | None = None) -> GcReport:
    """Abort stale uploads and delete unpublished runs and unreferenced checkpoint arrays."""
    if not older_than_s >= 0 or older_than_s == float("inf"):
        raise StorageError(f"Invalid older_than_s {older_than_s!r}; must be a finite number >= 0.")
    now = now or datetime.now(UTC)
    objects = ObjectClient(config)
    buckets = westflow_buckets(objects)
    gc = _Collector(objects, older_than_s, dry_run, now)
    for bucket in buckets:
        gc.uploads(bucket)
        listing = list(objects.objects(bucket, ""))
        gc.runs(bucket, listing)
        gc.checkpoints(bucket, listing)
    return GcReport(tuple(gc.removed), gc.young, tuple(buckets), dry_run, older_than_s,
                    tuple(gc.failures))


class _Collector:
    def __init__(self, objects: ObjectClient, older_than_s: float, dry_run: bool,
                 now: datetime) -> None:
        self.objects, self.older_than_s, self.dry_run, self.now = objects, older_than_s, dry_run, now
        self.removed: list[Removal] = []
        self.failures: list[str] = []
        self.young = 0

    def _age(self, when: datetime) -> float:
        return (self.now - when).total_seconds()

    def _old_enough(self, age_s: float) -> bool:
        if age_s >= self.older_than_s:
            return True
        self.young += 1
        return False

    def uploads(self, bucket: str) -> None:
        for upload in self.objects.open_uploads(bucket):
            age = self._age(upload.initiated)
            if not self._old_enough(age):
                continue
            if not self.dry_run:
                self.objects.abort_upload(bucket, upload)
            self.removed.append(Removal("upload", bucket, upload.key, 0, 0, age))

    def runs(self, bucket: str, listing: list[StoredObject]) -> None:
        by_run: dict[tuple[str, str], list[StoredObject]] = defaultdict(list)
        for obj in listing:
            m = _RUN.match(obj.key)
            if m:
                by_run[(m.group(1), m.group(2))].append(obj)
        published: dict[str, set[Any] | None] = {}
        for (name, run), objs in sorted(by_run.items()):
            if name not in published:
                published[name] = self._published_runs(bucket, name)
            runs = published[name]
            if runs is None or run in runs:
                continue
            age = min(self._age(o.modified) for o in objs)   # of its newest object
            if not self._old_enough(age):
                continue
            self._delete(bucket, [o.key for o in objs])
            self.removed.append(Removal("run", bucket, f"datasets/{name}/runs/{run}/", len(objs),
                                        sum(o.size for o in objs), age))

    def _published_runs(self, bucket: str, name: str) -> set[Any] | None:
        """The runs a dataset's manifest names; None if it cannot be read (then keep them all)."""
        key = f"datasets/{name}/manifest.json"
        try:
            manifest = self.objects.get_json(bucket, key)
        except ObjectMissing:
            return set()
        except StorageError as exc:
            self.failures.append(f"{bucket}/{key}: {exc}")
            return None
        return {manifest.get("run_id"), manifest.get("previous_run")}

    def checkpoints(self, bucket: str, listing: list[StoredObject]) -> None:
        referenced: dict[str, str | None] = {}
        for obj in listing:
            m = _CHECKPOINT_DATA.match(obj.key)
            if not m:
                continue
            marker_key = f"{m.group(1)}step-{m.group(2)}.json"
            if marker_key not in referenced:
                referenced[marker_key] = self._marker_data_key(bucket, marker_key)
            data_key = referenced[marker_key]
            if data_key == obj.key or data_key == _UNKNOWN:
                continue
            age = self._age(obj.modified)
            if not self._old_enough(age):
                continue
            self._delete(bucket, [obj.key])
            self.removed.append(Removal("checkpoint", bucket, obj.key, 1, obj.size, age))

    def _marker_data_key(self, bucket: str, key: str) -> str | None:
        """The arrays a marker names: None if there is no marker, :data:`_UNKNOWN` if unreadable."""
        try:
            marker = self.objects.get_json(bucket, key)
        except ObjectMissing:
            return None
        except StorageError as exc:
            self.failures.append(f"{bucket}/{key}: {exc}")
            return _UNKNOWN
        return str(marker.get("data_key"))

    def _delete(self, bucket: str, keys: list[str]) -> None:
        if self.dry_run:
            return
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i:i + 1000]]
            with s3_errors(self.objects.config.endpoint_url, bucket, keys[i], "delete_objects"):
                self.objects.client.delete_objects(Bucket=bucket,
                                                   Delete={"Objects": batch, "Quiet": True})
