"""The storage seam of the workloads: the DatasetStore / CheckpointStore API as protocols.

Jobs take a :class:`Stores`; :func:`s3_stores` builds the real one from
``storage`` (imported lazily), tests pass :mod:`jobs.memstore`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

__all__ = ["DatasetStoreLike", "CheckpointStoreLike", "Stores", "s3_stores", "bucket_for"]


class DatasetStoreLike(Protocol):
    def write(self, name: str, region: str, data: pa.Table | Iterable[pa.RecordBatch], *,
              schema: pa.Schema | None = None) -> Any: ...

    def read(self, name: str, region: str | None = None,
             columns: list[str] | None = None) -> pa.Table: ...

    def iter_batches(self, name: str, region: str | None = None,
                     batch_size: int = 65536) -> Iterator[pa.RecordBatch]: ...

    def info(self, name: str, region: str | None = None) -> Any: ...


class CheckpointStoreLike(Protocol):
    def save(self, step: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Any: ...

    def latest(self) -> int | None: ...

    def load(self, step: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Stores:
    """Where a job reads and writes: datasets, and checkpoint stores by (region, prefix)."""

    datasets: DatasetStoreLike
    checkpoints: Callable[[str, str], CheckpointStoreLike]
    bucket: Callable[[str], str]


def bucket_for(region: str) -> str:
    """The region's bucket name (same rule as ``storage.bucket_for_region``)."""
    return f"westflow-{region}"


def s3_stores(config: Any = None) -> Stores:
    """The real stores of ``config`` (a ``storage.S3Config``); by default ``WESTFLOW_S3_*`` from the environment,
    else ``$WESTFLOW_STATE_DIR``'s server."""
    from storage import CheckpointStore, DatasetStore, S3Config, bucket_for_region

    config = config or S3Config.discover()

    def checkpoints(region: str, prefix: str) -> CheckpointStoreLike:
        store: CheckpointStoreLike = CheckpointStore(config, bucket_for_region(region), prefix)
        return store

    return Stores(DatasetStore(config), checkpoints, bucket_for_region)
