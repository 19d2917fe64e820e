"""Batch inference: score a dataset with the saved model, write predictions as Parquet.

    python -m jobs.batch_infer --model clf --dataset synthetic --output synthetic-scored --region west
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from jobs.artifacts import load_model, model_prefix
from jobs.backend import DeviceProbe
from jobs.dataio import iter_ids_features, prediction_batch, prediction_schema
from jobs.entrypoint import JobArgumentParser, JobContext, add_common, dataset_name, positive_int, run_job
from jobs.scoring import Scorer
from jobs.stores import Stores

__all__ = ["parser", "body", "main"]


def parser() -> JobArgumentParser:
    p = JobArgumentParser(prog="jobs.batch_infer", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=dataset_name("--model"), default="clf")
    p.add_argument("--dataset", type=dataset_name("--dataset"), default="synthetic")
    p.add_argument("--output", type=dataset_name("--output"), default=None,
                   help="output dataset name (default <dataset>-scored-<model>)")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=65_536)
    add_common(p)
    return p


def body(args: argparse.Namespace, ctx: JobContext) -> dict[str, Any]:
    arrays, meta = load_model(ctx.stores, ctx.region, args.model)
    scorer = Scorer(ctx.backend, arrays, meta)
    output = args.output or f"{args.dataset}-scored-{args.model}"
    digest = hashlib.sha256()
    counts = {"rows": 0}

    def batches() -> Iterator[pa.RecordBatch]:
        for ids, X in iter_ids_features(ctx.stores.datasets, args.dataset, None, scorer.features,
                                        args.batch_size):
            b = prediction_batch(ids, scorer.score_batch(X))
            for col in b.columns:  # content hash of what we wrote, independent of the store
                for buf in col.buffers():
                    if buf is not None:
                        digest.update(buf)
            counts["rows"] += b.num_rows
            yield b

    t0 = time.perf_counter()
    info = ctx.stores.datasets.write(output, ctx.region, batches(),
                                     schema=prediction_schema(scorer.config.n_classes))
    secs = time.perf_counter() - t0
    ctx.reporter.info(f"scored {counts['rows']:,} rows of {args.dataset} in {secs:.2f}s "
                      f"-> {info.bucket}/{output}")
    return {
        "model": args.model, "model_uri": f"s3://{ctx.stores.bucket(ctx.region)}/{model_prefix(args.model)}",
        "dataset": args.dataset, "output": output, "region": ctx.region, "bucket": info.bucket,
        "num_rows": int(info.num_rows), "size_bytes": int(info.size_bytes),
        "checksum": str(info.checksum), "predictions_sha256": digest.hexdigest(),
        "seconds": round(secs, 3), "rows_per_s": round(counts["rows"] / max(secs, 1e-9)),
        **ctx.backend.metadata(),
    }


def main(argv: Sequence[str] | None = None, *, stores: Stores | None = None,
         probe: DeviceProbe | None = None) -> int:
    return run_job("batch_infer", parser(), body, argv, stores=stores, probe=probe)


if __name__ == "__main__":
    sys.exit(main())
