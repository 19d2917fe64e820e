"""In-memory stores with the DatasetStore / CheckpointStore API, for tests and dry runs.

Writes are atomic like the real ones: a dataset appears only once its whole
iterable has been consumed; arrays are copied in and out so callers cannot
alias stored state.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from jobs.stores import Stores, bucket_for
from westflow.errors import ObjectMissing

__all__ = ["MemoryDatasetInfo", "MemoryDatasetStore", "MemoryCheckpointStore", "memory_stores"]


@dataclass(frozen=True, slots=True)
class MemoryDatasetInfo:
    name: str
    region: str
    bucket: str
    size_bytes: int
    num_rows: int
    schema: str
    checksum: str
    files: tuple[str, ...]
    created_at: str


def _checksum(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


class MemoryDatasetStore:
    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], pa.Table] = {}
        self.infos: dict[tuple[str, str], MemoryDatasetInfo] = {}
        self.peak_batch_rows = 0

    def write(self, name: str, region: str, data: pa.Table | Iterable[pa.RecordBatch], *,
              schema: pa.Schema | None = None) -> MemoryDatasetInfo:
        if isinstance(data, pa.Table):
            table = data
        else:
            batches = []
            for b in data:
                self.peak_batch_rows = max(self.peak_batch_rows, b.num_rows)
                batches.append(b)
            table = pa.Table.from_batches(batches, schema=schema)
        info = MemoryDatasetInfo(name, region, bucket_for(region), table.nbytes, table.num_rows,
                                 table.schema.to_string(), "sha256:" + _checksum(table),
                                 (f"datasets/{name}/part-00000.parquet",),
                                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.tables[(region, name)] = table
        self.infos[(region, name)] = info
        return info

    def _key(self, name: str, region: str | None) -> tuple[str, str]:
        for key in self.tables:
            if key[1] == name and (region is None or key[0] == region):
                return key
        raise ObjectMissing(f"dataset {name!r} not found", endpoint="memory",
                            bucket=bucket_for(region) if region else "", key=name)

    def read(self, name: str, region: str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        t = self.tables[self._key(name, region)]
        return t.select(columns) if columns else t

    def iter_batches(self, name: str, region: str | None = None,
                     batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        yield from self.tables[self._key(name, region)].to_batches(max_chunksize=batch_size)

    def info(self, name: str, region: str | None = None) -> MemoryDatasetInfo:
        return self.infos[self._key(name, region)]


@dataclass
class MemoryCheckpointStore:
    bucket: str
    prefix: str
    steps: dict[int, tuple[dict[str, np.ndarray], dict[str, Any]]] = field(default_factory=dict)

    def save(self, step: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.steps[step] = ({k: np.array(v, copy=True) for k, v in arrays.items()}, dict(meta))

    def latest(self) -> int | None:
        return max(self.steps) if self.steps else None

    def load(self, step: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        step = self.latest() if step is None else step
        if step is None or step not in self.steps:
            raise ObjectMissing(f"checkpoint step {step!r} not found", endpoint="memory",
                                bucket=self.bucket, key=self.prefix)
        arrays, meta = self.steps[step]
        return {k: np.array(v, copy=True) for k, v in arrays.items()}, dict(meta)


def memory_stores() -> Stores:
    """A fresh set of in-memory stores; checkpoint stores persist per (bucket, prefix)."""
    ckpts: dict[tuple[str, str], MemoryCheckpointStore] = {}

    def checkpoints(region: str, prefix: str) -> MemoryCheckpointStore:
        key = (bucket_for(region), prefix)
        if key not in ckpts:
            ckpts[key] = MemoryCheckpointStore(*key)
        return ckpts[key]

    return Stores(MemoryDatasetStore(), checkpoints, bucket_for)
