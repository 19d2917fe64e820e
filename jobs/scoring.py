"""A loaded model on a backend: score many rows (batch) or one request (real time)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jobs.backend import Backend
from jobs.job_errors import ModelMismatch
from jobs.model import ModelConfig, param_names, predict_proba

__all__ = ["Scorer"]


class Scorer:
    """Holds a saved model's arrays on the backend's device."""

    def __init__(self, backend: Backend, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.backend = backend
        self.config = ModelConfig(**meta["model"])
        self.features: list[str] = list(meta["features"])
        keys = (*param_names(self.config), "mu", "sigma")
        self._model = {k: backend.asarray(arrays[k]) for k in keys}

    def score_batch(self, X: np.ndarray) -> np.ndarray:
        """Probabilities (rows, classes) for a host float32 matrix of raw features."""
        if X.ndim != 2 or X.shape[1] != self.config.n_features:
            raise ModelMismatch(f"Expected rows of {self.config.n_features} features, got shape "
                                f"{X.shape!r}. To fix: send the training feature columns "
                                f"{self.features!r}.")
        p = predict_proba(self.backend.xp, self._model, self.backend.asarray(X))
        return self.backend.to_numpy(p)

    def score_one(self, features: Sequence[float] | np.ndarray) -> tuple[int, np.ndarray]:
        """One request: the predicted class and its probabilities."""
        row = np.asarray(features, dtype=np.float32).reshape(1, -1)
        p = self.score_batch(row)[0]
        return int(np.argmax(p)), p
