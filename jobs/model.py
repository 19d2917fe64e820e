"""The math of the workloads, written once against the Python array API.

A 2-layer MLP (``hidden > 0``) or multinomial logistic regression (``hidden == 0``)
with softmax cross-entropy, trained by plain minibatch SGD. Every function takes
``xp`` (an array-API namespace) and arrays that live on its device; parameter
initialisation and the per-epoch shuffle are drawn on the host from
``(seed, ...)`` so every backend, and every resumed run, sees the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "ModelConfig",
    "Params",
    "param_names",
    "init_params",
    "standardizer",
    "standardize",
    "forward",
    "loss_and_grads",
    "sgd_update",
    "predict_proba",
    "epoch_permutation",
    "flops_per_step",
]

Params = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Shape of the model: inputs, classes and hidden width (0 = logistic regression)."""

    n_features: int
    n_classes: int
    hidden: int = 64

    def __post_init__(self) -> None:
        for name in ("n_features", "n_classes", "hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"Invalid {name} {v!r}; must be an integer >= 0.")
        if self.n_features < 1 or self.n_classes < 2:
            raise ValueError(f"Invalid shape {self!r}; need n_features >= 1 and n_classes >= 2.")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def param_names(cfg: ModelConfig) -> tuple[str, ...]:
    return ("W1", "b1", "W2", "b2") if cfg.hidden else ("W", "b")


def init_params(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """He-initialised float32 weights on the host, from ``seed`` alone."""
    rng = np.random.default_rng([seed, 0x1D17])
    f, k, h = cfg.n_features, cfg.n_classes, cfg.hidden
    if not h:
        return {"W": np.zeros((f, k), np.float32), "b": np.zeros((k,), np.float32)}
    return {
        "W1": (rng.standard_normal((f, h)) * np.sqrt(2.0 / f)).astype(np.float32),
        "b1": np.zeros((h,), np.float32),
        "W2": (rng.standard_normal((h, k)) * np.sqrt(1.0 / h)).astype(np.float32),
        "b2": np.zeros((k,), np.float32),
    }


def standardizer(sum_: np.ndarray, sumsq: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Mean and std (float32) from running float64 sums; std floored so constants don't blow up."""
    mu = sum_ / max(n, 1)
    var = np.maximum(sumsq / max(n, 1) - mu * mu, 0.0)
    sigma = np.maximum(np.sqrt(var), 1e-6)
    return {"mu": mu.astype(np.float32), "sigma": sigma.astype(np.float32)}


def standardize(xp: Any, X: Any, mu: Any, sigma: Any) -> Any:
    return (X - mu) / sigma


def _relu_mask(xp: Any, h: Any) -> Any:
    return xp.astype(h > 0, h.dtype)


def forward(xp: Any, params: Mapping[str, Any], X: Any) -> Any:
    """Logits for a batch ``X`` of shape (n, features)."""
    if "W" in params:
        return X @ params["W"] + params["b"]
    h = X @ params["W1"] + params["b1"]
    a = h * _relu_mask(xp, h)
    return a @ params["W2"] + params["b2"]


def _log_softmax(xp: Any, z: Any) -> tuple[Any, Any]:
    m = xp.max(z, axis=1, keepdims=True)
    e = xp.exp(z - m)
    s = xp.sum(e, axis=1, keepdims=True)
    return z - m - xp.log(s), e / s


def _one_hot(xp: Any, y: Any, k: int, dtype: Any) -> Any:
    classes = xp.arange(k, dtype=y.dtype, device=_device(y))
    return xp.astype(y[:, None] == classes[None, :], dtype)


def _device(a: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(a)


def loss_and_grads(xp: Any, params: Mapping[str, Any], X: Any, y: Any) -> tuple[Any, Any, Params]:
    """Mean cross-entropy, number correct, and gradients of the mean loss (device arrays)."""
    n = X.shape[0]
    hidden = "W1" in params
    if hidden:
        h = X @ params["W1"] + params["b1"]
        mask = _relu_mask(xp, h)
        a = h * mask
        z = a @ params["W2"] + params["b2"]
    else:
        z = X @ params["W"] + params["b"]
    k = z.shape[1]
    logp, p = _log_softmax(xp, z)
    onehot = _one_hot(xp, y, k, z.dtype)
    loss = -xp.sum(logp * onehot) / n
    correct = xp.sum(xp.astype(xp.argmax(z, axis=1) == y, xp.int64))
    dz = (p - onehot) / n
    if not hidden:
        return loss, correct, {"W": X.T @ dz, "b": xp.sum(dz, axis=0)}
    da = dz @ params["W2"].T
    dh = da * mask
    grads = {"W1": X.T @ dh, "b1": xp.sum(dh, axis=0), "W2": a.T @ dz, "b2": xp.sum(dz, axis=0)}
    return loss, correct, grads


def sgd_update(xp: Any, params: Mapping[str, Any], grads: Mapping[str, Any], lr: float) -> Params:
    """One plain SGD step (a new dict; arrays are not mutated)."""
    return {k: params[k] - lr * grads[k] for k in params}


def predict_proba(xp: Any, model: Mapping[str, Any], X: Any) -> Any:
    """Class probabilities for raw features ``X`` (the model carries mu/sigma)."""
    Z = standardize(xp, X, model["mu"], model["sigma"])
    _, p = _log_softmax(xp, forward(xp, model, Z))
    return p


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle of epoch ``epoch``: a function of (seed, epoch) only, so resume is exact."""
    return np.random.default_rng([seed, 0xE90C, epoch]).permutation(n)


def flops_per_step(batch: int, cfg: ModelConfig) -> float:
    """Matmul FLOPs of one forward+backward step (2*m*n*k per matmul)."""
    f, k, h = cfg.n_features, cfg.n_classes, cfg.hidden
    if not h:
        return 2.0 * batch * f * k * 2  # forward + dW
    fwd = 2.0 * batch * (f * h + h * k)
    bwd = 2.0 * batch * (h * k * 2 + f * h)  # dW2, da, dW1 (dX not needed)
    return fwd + bwd
