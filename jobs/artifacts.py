"""Where models and checkpoints live, and loading a saved model back."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from jobs.job_errors import ModelMismatch
from jobs.stores import CheckpointStoreLike, Stores

__all__ = ["model_prefix", "checkpoint_prefix", "load_model", "save_model", "model_version", "RegionalCheckpoints",
           "REGIONS"]

REGIONS = ("east", "west")


class RegionalCheckpoints:
    """Checkpoints written to the local region, read from whichever region holds the latest.

    A step moved to another region (failover, or scoring in the east what was trained in
    the west) resumes from, or loads, the newest complete checkpoint wherever it is.
    """

    def __init__(self, stores: Stores, region: str, prefix: str) -> None:
        self.region = region
        self.local = stores.checkpoints(region, prefix)
        self._all = {r: (self.local if r == region else stores.checkpoints(r, prefix))
                     for r in (region, *(x for x in REGIONS if x != region))}
        self.source_region: str | None = None

    def latest(self) -> int | None:
        best: tuple[int, str] | None = None
        for r, store in self._all.items():
            step = store.latest()
            if step is not None and (best is None or step > best[0]):
                best = (step, r)
        self.source_region = best[1] if best else None
        return best[0] if best else None

    def load(self, step: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if step is None:
            step = self.latest()
        if self.source_region is None:
            self.latest()
        store: CheckpointStoreLike = self._all[self.source_region or self.region]
        return store.load(step)

    def save(self, step: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Any:
        return self.local.save(step, arrays, meta)


def model_prefix(model: str) -> str:
    return f"models/{model}/final"


def checkpoint_prefix(model: str, run_id: str | None = None) -> str:
    """Where a training run checkpoints. With ``run_id`` (a Dagster run), each run starts fresh and
    only a retry or failover of the same run resumes; without, every run of ``model`` resumes."""
    return f"models/{model}/checkpoints" if run_id is None else f"models/{model}/runs/{run_id}/checkpoints"


def save_model(stores: Stores, region: str, model: str, step: int,
               arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """Save the final model (a one-step checkpoint under ``models/<model>/final``)."""
    stores.checkpoints(region, model_prefix(model)).save(step, arrays, meta)
    return f"s3://{stores.bucket(region)}/{model_prefix(model)}"


def load_model(stores: Stores, region: str, model: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The latest saved version of ``model``: ``region``'s bucket first, else the other region's.

    ``meta["loaded_from_region"]`` says where it came from.
    """
    store = RegionalCheckpoints(stores, region, model_prefix(model))
    if store.latest() is None:
        raise ModelMismatch(f"No saved model {model!r} in any region's bucket under {model_prefix(model)!r}. "
                            f"To fix: run jobs.train --model {model} first.")
    arrays, meta = store.load()
    meta = {**meta, "loaded_from_region": store.source_region}
    for key in ("mu", "sigma", "features", "model"):
        if key not in arrays and key not in meta:
            raise ModelMismatch(f"Saved model {model!r} lacks {key!r}; it was not written by jobs.train.")
    return arrays, meta


def model_version(arrays: dict[str, np.ndarray]) -> str:
    """A model's version: 12 hex digits of a digest of its arrays (names, dtypes, shapes, bytes).

    The same model gives the same version wherever it was loaded from; any retraining that
    changes a weight gives another.
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]
