"""Job checkpoints: save one per step (e.g. per epoch), resume from the latest complete one.

Layout under ``<bucket>/<prefix>/``::

    step-000000000012.json          marker: meta, data key, size, sha256 — written last
    data/000000000012-<run>.npz     the arrays (numpy .npz, no pickle)

A step counts only once its marker exists, and the marker is one PUT written
after the arrays are fully uploaded, so a job killed mid-save leaves the
previous step as the latest. Saving a step again replaces it atomically. A
save that fails removes its arrays and aborts their upload
(:class:`storage.uploads.StagedWrite`); arrays a killed job left, which no
marker names, are removed by ``westflow storage gc``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import tempfile
from datetime import UTC, datetime
from typing import Any

import numpy as np

from storage._objects import ObjectClient
from storage.s3_config import S3Config
from storage.uploads import StagedWrite
from westflow.errors import ObjectMissing, StorageError

__all__ = ["CheckpointStore", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "westflow.checkpoint/1"
_MARKER = re.compile(r"^step-(\d{12})\.json$")
_SPOOL = 64 << 20   # arrays beyond this spill to a temp file instead of memory
_CHUNK = 8 << 20
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,255}$")


class CheckpointStore:
    """Checkpoints of one job under ``bucket``/``prefix``."""

    def __init__(self, config: S3Config, bucket: str, prefix: str) -> None:
        prefix = prefix.strip("/")
        if not _PREFIX.match(prefix) or ".." in prefix:
            raise StorageError(f"Invalid checkpoint prefix {prefix!r}; must be 1-256 characters "
                               "of letters, digits, '_', '-', '.', '/'.", bucket=bucket)
        self.config = config
        self.bucket = bucket
        self.prefix = prefix + "/"
        self._objects = ObjectClient(config)

    def __repr__(self) -> str:
        return f"CheckpointStore({self.config.endpoint_url!r}, {self.bucket!r}, {self.prefix!r})"

    def _marker(self, step: int) -> str:
        return f"{self.prefix}step-{step:012d}.json"

    def save(self, step: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
        """Store ``arrays`` and ``meta`` as ``step``; returns the marker key. Atomic."""
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 10**12:
            raise StorageError(f"Invalid checkpoint step {step!r}; must be an integer in "
                               "[0, 10**12).", bucket=self.bucket, key=self.prefix)
        try:
            meta_text = json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise StorageError(f"Checkpoint meta is not JSON-serialisable ({exc}). To fix: "
                               "keep meta to str/int/float/bool/list/dict.",
                               bucket=self.bucket, key=self._marker(step)) from None
        old = self._marker_or_none(step)
        data_key = f"{self.prefix}data/{step:012d}-{secrets.token_hex(6)}.npz"

        def published() -> bool:
            current = self._marker_or_none(step)
            return current is not None and current.get("data_key") == data_key

        # The arrays are staged under their own key; if anything fails before the marker
        # is written, the upload is aborted and the key deleted.
        with StagedWrite(self._objects, self.bucket, data_key, published=published) as staged:
            upload = staged.open(data_key)
            sha = hashlib.sha256()
            with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as f:
                np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
                size = f.tell()
                f.seek(0)
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    sha.update(chunk)
                    upload.write(chunk)
            upload.commit()
            marker = {
                "format": CHECKPOINT_FORMAT, "step": step, "data_key": data_key, "size": size,
                "sha256": sha.hexdigest(), "arrays": sorted(arrays),
                "meta": json.loads(meta_text),
                "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }
            self._objects.put_json(self.bucket, self._marker(step), marker)  # the commit point
        if old and old.get("data_key") != data_key:
            self._objects.delete_prefix_quietly(self.bucket, old["data_key"])
        return self._marker(step)

    def _marker_or_none(self, step: int) -> dict[str, Any] | None:
        try:
            return self._objects.get_json(self.bucket, self._marker(step))
        except ObjectMissing:
            return None

    def steps(self) -> list[int]:
        """Every complete step, ascending."""
        found = []
        for key in self._objects.keys(self.bucket, self.prefix + "step-"):
            m = _MARKER.match(key[len(self.prefix):])
            if m:
                found.append(int(m.group(1)))
        return sorted(found)

    def latest(self) -> int | None:
        """The latest complete step, or None if there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def load(self, step: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and meta of ``step`` (default: the latest); ObjectMissing if there is none."""
        if step is None:
            step = self.latest()
            if step is None:
                raise ObjectMissing("No complete checkpoint yet. To fix: save one first, or start "
                                    "from scratch.", endpoint=self.config.endpoint_url,
                                    bucket=self.bucket, key=self.prefix)
        marker = self._objects.get_json(self.bucket, self._marker(step))
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as f:
            self._objects.download(self.bucket, marker["data_key"], f)
            f.seek(0)
            sha = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
            if sha.hexdigest() != marker["sha256"]:
                raise StorageError(f"Checkpoint step {step} fails its sha256 check.",
                                   endpoint=self.config.endpoint_url, bucket=self.bucket,
                                   key=marker["data_key"])
            f.seek(0)
            with np.load(f, allow_pickle=False) as npz:  # type: ignore[arg-type]
                arrays = {k: npz[k] for k in npz.files}
        return arrays, marker["meta"]
