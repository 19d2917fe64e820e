"""Train: MLP / logistic regression by minibatch SGD, a checkpoint per epoch, resume on restart.

    python -m jobs.train --dataset synthetic --model clf --epochs 5 --region west

Run it again after an interruption and it resumes from the latest checkpoint in
``s3://westflow-<region>/models/<model>/checkpoints``; the final model goes to
``models/<model>/final``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jobs.artifacts import RegionalCheckpoints, checkpoint_prefix, save_model
from jobs.backend import DeviceProbe
from jobs.dataio import load_labelled
from jobs.entrypoint import (
    JobArgumentParser,
    JobContext,
    add_common,
    dataset_name,
    positive_float,
    positive_int,
    run_job,
)
from jobs.job_errors import JobArgumentError
from jobs.model import ModelConfig
from jobs.stores import Stores
from jobs.training import EpochStats, TrainConfig, fit

__all__ = ["parser", "body", "main"]

# Test hook, hidden from --help and off unless given: "--test-hold-after-epoch EPOCH[,EPOCH...]:DIR" holds the
# job after each of those epochs' checkpoint until DIR/go exists (tests kill a node at a known point with it),
# and keeps DIR/trained-<job> up to date: the epochs this job trained (a test counts them over every attempt).
HOLD_FLAG = "--test-hold-after-epoch"
HOLD_BOUND_S = 600.0


def _hold_point(text: str) -> tuple[tuple[int, ...], Path]:
    """``EPOCH[,EPOCH...]:DIR`` of ``--test-hold-after-epoch`` as ``(epochs, directory)``."""
    epochs, _, where = text.partition(":")
    parts = epochs.split(",")
    if not where or not all(p.isascii() and p.isdigit() and int(p) >= 1 for p in parts):
        raise JobArgumentError(HOLD_FLAG, text, "EPOCH[,EPOCH...]:DIR with epochs >= 1 (a test hook)")
    return tuple(int(p) for p in parts), Path(where)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _hold(epoch: int, trained: list[int], where: Path, ctx: JobContext) -> None:
    """After ``epoch``'s checkpoint: write ``<where>/held-<epoch>`` (the epochs this job trained, comma-separated)
    and ``<where>/held`` (the epoch), then wait for ``<where>/go`` (bounded)."""
    _write(where / f"held-{epoch}", ",".join(map(str, trained)))
    _write(where / "held", str(epoch))
    ctx.reporter.warning(f"{HOLD_FLAG}: holding after epoch {epoch} until {where / 'go'} exists "
                         f"(at most {HOLD_BOUND_S:.0f}s)")
    deadline = time.monotonic() + HOLD_BOUND_S
    while not (where / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def parser() -> JobArgumentParser:
    p = JobArgumentParser(prog="jobs.train", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=dataset_name("--dataset"), default="synthetic")
    p.add_argument("--model", type=dataset_name("--model"), default="clf")
    p.add_argument("--hidden", type=positive_int("--hidden", minimum=0), default=64,
                   help="hidden width of the MLP; 0 = multinomial logistic regression")
    p.add_argument("--epochs", type=positive_int("--epochs"), default=5)
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=1024)
    p.add_argument("--lr", type=positive_float("--lr"), default=0.1)
    p.add_argument("--seed", type=positive_int("--seed", minimum=0), default=0)
    p.add_argument("--stop-after", type=positive_int("--stop-after"), default=None,
                   help="stop after N epochs in this run (stands in for preemption)")
    p.add_argument("--run-id", type=dataset_name("--run-id"), default=None,
                   help="checkpoint under this run (Dagster passes its run id); default: resume any run")
    p.add_argument(HOLD_FLAG, dest="hold", type=_hold_point, default=None, help=argparse.SUPPRESS)
    add_common(p)
    return p


def body(args: argparse.Namespace, ctx: JobContext) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = load_labelled(ctx.stores.datasets, args.dataset)
    n_classes = int(data.y.max()) + 1 if len(data.y) else 2
    model = ModelConfig(len(data.features), max(n_classes, 2), args.hidden)
    cfg = TrainConfig(args.epochs, args.batch_size, args.lr, args.seed)
    load_s = time.perf_counter() - t0
    ctx.reporter.info(f"loaded {len(data.y):,} rows x {len(data.features)} features in {load_s:.1f}s "
                      f"({len(data.train_idx):,} train / {len(data.eval_idx):,} eval); {model}")
    ckpts = RegionalCheckpoints(ctx.stores, ctx.region, checkpoint_prefix(args.model, args.run_id))
    hold: tuple[tuple[int, ...], Path] | None = args.hold
    trained: list[int] = []
    this_job = f"trained-{os.getpid()}-{time.time_ns()}"

    def on_epoch(s: EpochStats) -> None:
        ctx.reporter.info(f"epoch {s.epoch}/{cfg.epochs}: loss {s.loss:.4f} train acc "
                          f"{s.accuracy:.4f} eval acc {s.eval_accuracy:.4f} ({s.seconds:.2f}s)")
        trained.append(s.epoch)
        if hold is not None:  # called after the epoch's checkpoint is saved
            _write(hold[1] / this_job, ",".join(map(str, trained)))
            if s.epoch in hold[0]:
                _hold(s.epoch, trained, hold[1], ctx)

    result = fit(ctx.backend, data.X, data.y, data.train_idx, data.eval_idx, model, cfg, ckpts,
                 extra={"mu": data.mu, "sigma": data.sigma}, on_epoch=on_epoch,
                 stop_after=args.stop_after)
    if result.resumed_from is not None:
        ctx.reporter.info(f"resumed from checkpoint epoch {result.resumed_from} "
                          f"(from region {ckpts.source_region})")
    md: dict[str, Any] = {
        "model": args.model, "dataset": args.dataset, "region": ctx.region,
        "rows": len(data.y), "features": len(data.features), "hidden": args.hidden,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
        "resumed_from_epoch": result.resumed_from if result.resumed_from is not None else -1,
        "epochs_this_run": len(result.history), "complete": result.complete,
        "loss_per_epoch": [round(s.loss, 6) for s in result.history],
        "accuracy_per_epoch": [round(s.accuracy, 6) for s in result.history],
        "eval_accuracy_per_epoch": [round(s.eval_accuracy, 6) for s in result.history],
        "seconds_per_epoch": [round(s.seconds, 3) for s in result.history],
        "checkpoints": f"s3://{ctx.stores.bucket(ctx.region)}/{checkpoint_prefix(args.model, args.run_id)}",
        **ctx.backend.metadata(),
    }
    if result.history:
        md["final_eval_accuracy"] = round(result.history[-1].eval_accuracy, 6)
        md["mean_seconds_per_epoch"] = round(float(np.mean([s.seconds for s in result.history])), 3)
    if result.complete:
        meta = {"model": model.as_dict(), "features": data.features, "dataset": args.dataset,
                "epochs": cfg.epochs, "seed": cfg.seed, "backend": ctx.backend.name}
        md["model_uri"] = save_model(ctx.stores, ctx.region, args.model, cfg.epochs,
                                     {**result.params, "mu": data.mu, "sigma": data.sigma}, meta)
        ctx.reporter.info(f"saved model to {md['model_uri']}")
    else:
        ctx.reporter.warning(f"stopped after {len(result.history)} epochs (--stop-after); "
                             "run again to resume from the checkpoint")
    return md


def main(argv: Sequence[str] | None = None, *, stores: Stores | None = None,
         probe: DeviceProbe | None = None) -> int:
    return run_job("train", parser(), body, argv, stores=stores, probe=probe)


if __name__ == "__main__":
    sys.exit(main())
