"""westflow's S3 path vs raw pyarrow on the same SeaweedFS server, in one run.

Writes a Parquet dataset (>= 200 MB) through ``DatasetStore.write`` and through
``pyarrow.parquet.write_table`` on a bare ``pyarrow.fs.S3FileSystem``, then
reads the same object back through ``DatasetStore.read`` and through
``pyarrow.parquet.read_table``. Runs are paired, alternating which goes first;
the median of the paired ratios counts. Prints
MB/s for both and the ratio westflow time / raw time (goal <= 1.05).

    .venv/bin/python -m benchmarks.s3_bench [--rows 10000000] [--repeats 5]

It starts (and stops) its own server in a temporary directory on free ports.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage import DatasetStore, SeaweedServer

GOAL = 1.05


def make_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({
        "id": np.arange(rows, dtype=np.int64),
        "x": rng.random(rows),
        "y": rng.standard_normal(rows),
    })


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(label: str, mb: float, ours: list[float], raw: list[float]) -> float:
    """Print MB/s (median run) and the median of the paired time ratios.

    Runs are paired and alternate in order, so load from other processes on a
    shared machine falls on both sides of each ratio.
    """
    ratio = statistics.median(o / r for o, r in zip(ours, raw, strict=True))
    t_ours, t_raw = statistics.median(ours), statistics.median(raw)
    verdict = "ok" if ratio <= GOAL else f"over the {GOAL} goal"
    print(f"{label:5s} westflow {mb / t_ours:7.1f} MB/s   raw pyarrow {mb / t_raw:7.1f} MB/s   "
          f"ratio {ratio:.3f} ({verdict})")
    print(f"      runs (s): westflow {', '.join(f'{t:.2f}' for t in ours)}; "
          f"raw {', '.join(f'{t:.2f}' for t in raw)}")
    return ratio


def paired(n: int, ours: Callable[[], object], raw: Callable[[], object],
           ) -> tuple[list[float], list[float]]:
    """Time ``n`` pairs, alternating which side goes first."""
    t_ours, t_raw = [], []
    for i in range(n):
        if i % 2 == 0:
            t_ours.append(timed(ours))
            t_raw.append(timed(raw))
        else:
            t_raw.append(timed(raw))
            t_ours.append(timed(ours))
    return t_ours, t_raw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows (24 bytes each)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    table = make_table(args.rows)
    with tempfile.TemporaryDirectory(prefix="westflow-s3-bench-") as tmp:
        server = SeaweedServer(Path(tmp), die_with_parent=True)
        config = server.start()
        try:
            store = DatasetStore(config)
            fs = config.filesystem()  # a separate, bare client for the raw path
            raw_path = "westflow-east/bench/raw.parquet"

            w_ours, w_raw = paired(args.repeats, lambda: store.write("bench", "east", table),
                                   lambda: pq.write_table(table, raw_path, filesystem=fs))
            info = store.info("bench", "east")
            mb = info.size_bytes / 1e6
            print(f"dataset: {table.num_rows:,} rows, {table.nbytes / 1e6:.0f} MB in memory, "
                  f"{mb:.0f} MB of Parquet; raw file {fs.get_file_info(raw_path).size / 1e6:.0f} MB; "
                  f"endpoint {config.endpoint_url}")
            if mb < 200:
                print("warning: dataset under 200 MB; raise --rows")

            part = info.paths()[0]  # raw pyarrow reads the very object westflow reads
            store.read("bench", "east")  # warm-up, untimed: connections, server caches
            pq.read_table(part, filesystem=fs)
            r_ours, r_raw = paired(max(7, args.repeats), lambda: store.read("bench", "east"),
                                   lambda: pq.read_table(part, filesystem=fs))
            assert store.read("bench", "east").equals(table)

            write_ratio = report("write", mb, w_ours, w_raw)
            read_ratio = report("read", mb, r_ours, r_raw)
        finally:
            server.stop()
    return 0 if max(write_ratio, read_ratio) <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
