"""The training loop: minibatch SGD with a checkpoint per epoch and exact resume.

Epoch ``e`` shuffles with :func:`jobs.model.epoch_permutation` (seed, e) and
checkpoints the float32 parameters at its end as step ``e + 1``; a run that finds
step ``s`` in its checkpoint store restarts at epoch ``s`` and therefore ends with
bit-identical weights to an uninterrupted run on the same backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from jobs.backend import Backend
from jobs.job_errors import JobArgumentError, ModelMismatch
from jobs.model import (
    ModelConfig,
    epoch_permutation,
    forward,
    init_params,
    loss_and_grads,
    sgd_update,
)
from jobs.stores import CheckpointStoreLike

__all__ = ["TrainConfig", "EpochStats", "FitResult", "Interrupted", "fit", "accuracy", "resume_point",
           "save_epoch"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 1024
    lr: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise JobArgumentError("--epochs", self.epochs, "an integer >= 1")
        if self.batch_size < 1:
            raise JobArgumentError("--batch-size", self.batch_size, "an integer >= 1")
        if not self.lr > 0:
            raise JobArgumentError("--lr", self.lr, "a number > 0")


@dataclass(frozen=True, slots=True)
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    eval_accuracy: float
    seconds: float


@dataclass
class FitResult:
    params: dict[str, np.ndarray]
    history: list[EpochStats] = field(default_factory=list)
    resumed_from: int | None = None
    complete: bool = True


class Interrupted(Exception):
    """Raised by an ``on_epoch`` hook to stop a run after its checkpoint (tests, preemption)."""


def _signature(model: ModelConfig, cfg: TrainConfig, n_train: int) -> dict[str, Any]:
    return {"model": model.as_dict(), "train": asdict(cfg) | {"epochs": None}, "n_train": n_train}


def resume_point(checkpoints: CheckpointStoreLike | None, model: ModelConfig, cfg: TrainConfig,
                 n_train: int) -> tuple[dict[str, np.ndarray], int | None]:
    """Host parameters to start from and the epoch they end (None: a fresh start, seeded init).

    Raises :class:`ModelMismatch` when the latest checkpoint was written by another model or config.
    """
    params = init_params(model, cfg.seed)
    if checkpoints is None or (step := checkpoints.latest()) is None:
        return params, None
    arrays, meta = checkpoints.load(step)
    sig = _signature(model, cfg, n_train)
    if meta.get("signature") != sig:
        raise ModelMismatch(
            f"Checkpoint step {step} was written by a different run {meta.get('signature')!r}, "
            f"not {sig!r}. To fix: train under a new --model name.")
    return {k: arrays[k] for k in params}, int(meta["epoch"])


def save_epoch(checkpoints: CheckpointStoreLike | None, stats: EpochStats, params: dict[str, np.ndarray],
               model: ModelConfig, cfg: TrainConfig, n_train: int,
               extra: dict[str, np.ndarray] | None = None) -> None:
    """Checkpoint the host parameters at the end of epoch ``stats.epoch`` (step = that epoch)."""
    if checkpoints is None:
        return
    checkpoints.save(stats.epoch, {**params, **(extra or {})},
                     {"epoch": stats.epoch, "signature": _signature(model, cfg, n_train), "loss": stats.loss,
                      "accuracy": stats.accuracy, "eval_accuracy": stats.eval_accuracy})


def accuracy(backend: Backend, params: dict[str, Any], X: Any, idx: np.ndarray,
             y: Any, chunk: int = 65536) -> float:
    """Share of rows ``idx`` of device arrays ``X``/``y`` the model gets right."""
    xp = backend.xp
    if len(idx) == 0:
        return float("nan")
    correct = 0
    for s in range(0, len(idx), chunk):
        i = backend.asarray(idx[s:s + chunk])
        pred = xp.argmax(forward(xp, params, xp.take(X, i, axis=0)), axis=1)
        correct += int(backend.to_numpy(xp.sum(xp.astype(pred == xp.take(y, i), xp.int64))))
    return correct / len(idx)


def fit(
    backend: Backend,
    X: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    eval_idx: np.ndarray,
    model: ModelConfig,
    cfg: TrainConfig,
    checkpoints: CheckpointStoreLike | None = None,
    *,
    extra: dict[str, np.ndarray] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    stop_after: int | None = None,
) -> FitResult:
    """Train on standardised host arrays ``X``/``y``; rows ``train_idx`` train, ``eval_idx`` score.

    ``extra`` arrays (e.g. mu/sigma) ride along in every checkpoint. ``stop_after``
    ends this run after that many epochs (a preemption stand-in); running again resumes.
    """
    xp = backend.xp
    params_host, resumed = resume_point(checkpoints, model, cfg, len(train_idx))
    start = resumed or 0
    params = {k: backend.asarray(v) for k, v in params_host.items()}
    Xd, yd = backend.asarray(X), backend.asarray(y)
    result = FitResult(params_host, resumed_from=resumed)
    run = 0
    for epoch in range(start, cfg.epochs):
        if stop_after is not None and run >= stop_after:
            result.complete = False
            break
        t0 = time.perf_counter()
        perm = backend.asarray(train_idx[epoch_permutation(cfg.seed, epoch, len(train_idx))])
        loss_sum = xp.asarray(0.0, dtype=xp.float64, device=_dev(Xd))
        correct_sum = 0
        for s in range(0, len(train_idx), cfg.batch_size):
            i = perm[s:s + cfg.batch_size]
            loss, correct, grads = loss_and_grads(xp, params, xp.take(Xd, i, axis=0), xp.take(yd, i))
            params = sgd_update(xp, params, grads, cfg.lr)
            loss_sum = loss_sum + xp.astype(loss, xp.float64) * i.shape[0]
            correct_sum = correct_sum + correct
        n = len(train_idx)
        params_host = {k: backend.to_numpy(v) for k, v in params.items()}
        stats = EpochStats(epoch + 1, float(backend.to_numpy(loss_sum)) / n,
                           int(backend.to_numpy(xp.asarray(correct_sum))) / n,
                           accuracy(backend, params, Xd, eval_idx, yd), time.perf_counter() - t0)
        save_epoch(checkpoints, stats, params_host, model, cfg, len(train_idx), extra)
        result.params = params_host
        result.history.append(stats)
        run += 1
        if on_epoch is not None:
            on_epoch(stats)
    return result


def _dev(a: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(a)
