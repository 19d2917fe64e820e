"""Where models and checkpoints live, and loading a saved model back."""

from __future__ import annotations

from typing import Any

import numpy as np

from jobs.errors import ModelMismatch
from jobs.stores import Stores

__all__ = ["model_prefix", "checkpoint_prefix", "load_model", "save_model"]


def model_prefix(model: str) -> str:
    return f"models/{model}/final"


def checkpoint_prefix(model: str) -> str:
    return f"models/{model}/checkpoints"


def save_model(stores: Stores, region: str, model: str, step: int,
               arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """Save the final model (a one-step checkpoint under ``models/<model>/final``)."""
    stores.checkpoints(region, model_prefix(model)).save(step, arrays, meta)
    return f"s3://{stores.bucket(region)}/{model_prefix(model)}"


def load_model(stores: Stores, region: str, model: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The latest saved version of ``model`` in ``region``'s bucket."""
    store = stores.checkpoints(region, model_prefix(model))
    if store.latest() is None:
        raise ModelMismatch(f"No saved model {model!r} in bucket {stores.bucket(region)!r} "
                            f"under {model_prefix(model)!r}. To fix: run jobs.train --model {model} "
                            "first, or pass the --region it was trained in.")
    arrays, meta = store.load()
    for key in ("mu", "sigma", "features", "model"):
        if key not in arrays and key not in meta:
            raise ModelMismatch(f"Saved model {model!r} lacks {key!r}; it was not written by jobs.train.")
    return arrays, meta
