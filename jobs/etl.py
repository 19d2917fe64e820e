"""ETL: generate the seeded labelled dataset and write it to the region's bucket as Parquet.

    python -m jobs.etl --name synthetic --rows 1000000 --region west
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from jobs.backend import DeviceProbe
from jobs.entrypoint import (
    JobArgumentParser,
    JobContext,
    add_common,
    dataset_name,
    positive_float,
    positive_int,
    run_job,
)
from jobs.stores import Stores
from jobs.synthetic import SyntheticSpec, chunks, schema, teacher

__all__ = ["parser", "body", "main"]


def parser() -> JobArgumentParser:
    p = JobArgumentParser(prog="jobs.etl", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", type=dataset_name("--name"), default="synthetic")
    p.add_argument("--rows", type=positive_int("--rows"), default=1_000_000)
    p.add_argument("--features", type=positive_int("--features"), default=32)
    p.add_argument("--classes", type=positive_int("--classes", minimum=2), default=4)
    p.add_argument("--seed", type=positive_int("--seed", minimum=0), default=0)
    p.add_argument("--chunk-rows", type=positive_int("--chunk-rows"), default=65_536)
    p.add_argument("--noise", type=positive_float("--noise"), default=0.5,
                   help="Gumbel noise scale on the teacher's logits (higher = harder)")
    add_common(p)
    return p


def body(args: argparse.Namespace, ctx: JobContext) -> dict[str, Any]:
    spec = SyntheticSpec(args.rows, args.features, args.classes, args.seed, args.chunk_rows, args.noise)
    t = teacher(spec)
    ctx.reporter.info(f"generating {spec.rows:,} rows x {spec.features} features in chunks of "
                      f"{spec.chunk_rows:,} into {ctx.stores.bucket(ctx.region)}/{args.name}")
    t0 = time.perf_counter()
    info = ctx.stores.datasets.write(args.name, ctx.region, chunks(spec, t), schema=schema(spec))
    secs = time.perf_counter() - t0
    teacher_acc = t.stats["teacher_correct"] / spec.rows
    ctx.reporter.info(f"wrote {info.num_rows:,} rows, {info.size_bytes:,} bytes in {secs:.1f}s; "
                      f"teacher accuracy {teacher_acc:.4f}")
    return {
        "dataset": args.name, "region": ctx.region, "bucket": info.bucket,
        "num_rows": int(info.num_rows), "size_bytes": int(info.size_bytes),
        "checksum": str(info.checksum), "features": spec.features, "classes": spec.classes,
        "seed": spec.seed, "noise": spec.noise, "teacher_accuracy": round(teacher_acc, 6),
        "seconds": round(secs, 3), "rows_per_s": round(spec.rows / max(secs, 1e-9)),
        # Generation is host-side NumPy whatever the node has; say so next to the backend facts.
        "compute": "host numpy (generation)",
        **ctx.backend.metadata(),
    }


def main(argv: Sequence[str] | None = None, *, stores: Stores | None = None,
         probe: DeviceProbe | None = None) -> int:
    return run_job("etl", parser(), body, argv, stores=stores, probe=probe)


if __name__ == "__main__":
    sys.exit(main())
