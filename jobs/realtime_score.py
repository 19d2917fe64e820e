"""Real-time scoring: answer single requests with the saved model, report p50/p99 latency.

    python -m jobs.realtime_score --model clf --dataset synthetic --requests 10000 --region west
    echo '{"id": 1, "features": [0.1, ...]}' | python -m jobs.realtime_score --model clf --serve

Latency is the in-process time of one ``Scorer.score_one`` call (no network),
measured with ``perf_counter_ns`` over ``--requests`` rows of ``--dataset``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from jobs.artifacts import load_model
from jobs.backend import DeviceProbe
from jobs.dataio import iter_ids_features
from jobs.entrypoint import JobArgumentParser, JobContext, add_common, dataset_name, positive_int, run_job
from jobs.job_errors import JobArgumentError
from jobs.scoring import Scorer
from jobs.stores import Stores

__all__ = ["parser", "body", "main", "latency_stats", "serve"]


def parser() -> JobArgumentParser:
    p = JobArgumentParser(prog="jobs.realtime_score", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=dataset_name("--model"), default="clf")
    p.add_argument("--dataset", type=dataset_name("--dataset"), default="synthetic",
                   help="where the benchmark requests come from (its first --requests rows)")
    p.add_argument("--requests", type=positive_int("--requests"), default=10_000)
    p.add_argument("--warmup", type=positive_int("--warmup", minimum=0), default=200)
    p.add_argument("--serve", action="store_true",
                   help="answer JSON lines from stdin on stdout instead of benchmarking")
    add_common(p)
    return p


def latency_stats(ns: np.ndarray) -> dict[str, float]:
    us = ns.astype(np.float64) / 1e3
    return {"latency_p50_us": round(float(np.percentile(us, 50)), 2),
            "latency_p99_us": round(float(np.percentile(us, 99)), 2),
            "latency_mean_us": round(float(us.mean()), 2),
            "latency_max_us": round(float(us.max()), 2)}


def serve(scorer: Scorer, inp: TextIO, out: TextIO) -> int:
    """Answer ``{"id", "features"}`` lines with ``{"id", "prediction", "probabilities"}``."""
    n = 0
    for lineno, line in enumerate(inp, 1):
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            feats = req["features"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise JobArgumentError(f"stdin line {lineno}", line.strip()[:80],
                                   'a JSON object {"id": ..., "features": [...]}') from None
        label, p = scorer.score_one(feats)
        out.write(json.dumps({"id": req.get("id"), "prediction": label,
                              "probabilities": [float(v) for v in p]}) + "\n")
        out.flush()
        n += 1
    return n


def body(args: argparse.Namespace, ctx: JobContext) -> dict[str, Any]:
    arrays, meta = load_model(ctx.stores, ctx.region, args.model)
    scorer = Scorer(ctx.backend, arrays, meta)
    base = {"model": args.model, "region": ctx.region, "model_from_region": meta.get("loaded_from_region"),
            **ctx.backend.metadata()}
    if args.serve:
        return {**base, "served": serve(scorer, sys.stdin, sys.stdout)}
    want = args.requests + args.warmup
    rows: list[np.ndarray] = []
    got = 0
    for _, X in iter_ids_features(ctx.stores.datasets, args.dataset, None, scorer.features, 8192):
        rows.append(X[: want - got])
        got += rows[-1].shape[0]
        if got >= want:
            break
    R = np.concatenate(rows) if rows else np.empty((0, len(scorer.features)), np.float32)
    if R.shape[0] <= args.warmup:
        raise JobArgumentError("--requests", args.requests,
                               f"at most {max(R.shape[0] - args.warmup, 0)} (rows in {args.dataset!r})")
    for r in R[: args.warmup]:
        scorer.score_one(r)
    timed = R[args.warmup:]
    ns = np.empty(timed.shape[0], np.int64)
    labels = np.empty(timed.shape[0], np.int32)
    for i, r in enumerate(timed):
        t0 = time.perf_counter_ns()
        labels[i], _ = scorer.score_one(r)
        ns[i] = time.perf_counter_ns() - t0
    stats = latency_stats(ns)
    ctx.reporter.info(f"{timed.shape[0]:,} single requests: p50 {stats['latency_p50_us']} us, "
                      f"p99 {stats['latency_p99_us']} us on {ctx.backend.name}")
    return {**base, "dataset": args.dataset, "requests": int(timed.shape[0]), **stats,
            "class_counts": np.bincount(labels, minlength=scorer.config.n_classes).tolist()}


def main(argv: Sequence[str] | None = None, *, stores: Stores | None = None,
         probe: DeviceProbe | None = None) -> int:
    return run_job("realtime_score", parser(), body, argv, stores=stores, probe=probe)


if __name__ == "__main__":
    sys.exit(main())
