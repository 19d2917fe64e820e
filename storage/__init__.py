"""westflow's object-storage layer: S3 via boto3 and pyarrow, SeaweedFS embedded.

- :class:`S3Config` — endpoint and credentials (from env, or a server's state dir);
- :func:`bucket_for_region` — one bucket per region, ``westflow-east``/``westflow-west``;
- :class:`SeaweedServer` — the embedded SeaweedFS S3 server on 127.0.0.1;
- :class:`DatasetStore` / :class:`DatasetInfo` — the Parquet dataset catalogue,
  with atomic, streaming writes; ``DatasetInfo.as_ref()`` feeds placement;
- :class:`CheckpointStore` — per-step job checkpoints, resume from the latest.

Every failure is a :class:`westflow.errors.StorageError` subclass
(EndpointUnreachable, BucketMissing, AccessDenied, ObjectMissing), raised
within bounded time.
"""

from storage.checkpoints import CheckpointStore
from storage.datasets import DatasetInfo, DatasetStore
from storage.s3_config import S3Config, bucket_for_region
from storage.server import DEFAULT_STATE_DIR, SeaweedServer, ensure_buckets

__all__ = [
    "S3Config",
    "bucket_for_region",
    "SeaweedServer",
    "DatasetStore",
    "DatasetInfo",
    "CheckpointStore",
    "ensure_buckets",
    "DEFAULT_STATE_DIR",
]
