"""Thin Parquet/Arrow glue: datasets into host arrays, predictions out as RecordBatches."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jobs.job_errors import ModelMismatch
from jobs.model import standardizer
from jobs.stores import DatasetStoreLike
from jobs.synthetic import ID, LABEL, is_eval

__all__ = ["Labelled", "feature_names", "batch_features", "load_labelled", "prediction_schema",
           "prediction_batch"]


@dataclass
class Labelled:
    X: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    features: list[str]
    train_idx: np.ndarray
    eval_idx: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray


def feature_names(schema: pa.Schema) -> list[str]:
    """Every float column is a feature; ``id`` and ``label`` are not."""
    return [f.name for f in schema if f.name not in (ID, LABEL) and pa.types.is_floating(f.type)]


def batch_features(batch: pa.RecordBatch, features: list[str]) -> np.ndarray:
    """A (rows, features) float32 matrix from one batch (one copy, column by column)."""
    missing = [c for c in features if c not in batch.schema.names]
    if missing:
        raise ModelMismatch(f"Dataset lacks feature columns {missing!r} the model was trained on. "
                            "To fix: score a dataset with the training schema.")
    out = np.empty((batch.num_rows, len(features)), np.float32)
    for j, c in enumerate(features):
        out[:, j] = batch.column(c).to_numpy(zero_copy_only=False)
    return out


def load_labelled(store: DatasetStoreLike, name: str, region: str | None = None) -> Labelled:
    """Read a labelled dataset into one preallocated float32 matrix, standardised in place.

    Mean/std come from the training rows only; nothing is held twice.
    """
    n = int(store.info(name, region).num_rows)
    batches = iter(store.iter_batches(name, region))
    first = next(batches, None)
    if first is None:
        raise ModelMismatch(f"Dataset {name!r} is empty. To fix: rerun the ETL that writes it.")
    features = feature_names(first.schema)  # shape known from the first batch; allocate once
    X = np.empty((n, len(features)), np.float32)
    y = np.empty((n,), np.int64)
    ids = np.empty((n,), np.int64)
    s1, s2 = np.zeros(len(features)), np.zeros(len(features))
    n_train = row = 0
    for batch in itertools.chain([first], batches):
        m = batch.num_rows
        if row + m > n:
            break
        X[row:row + m] = batch_features(batch, features)
        y[row:row + m] = batch.column(LABEL).to_numpy(zero_copy_only=False)
        ids[row:row + m] = batch.column(ID).to_numpy(zero_copy_only=False)
        tr = X[row:row + m][~is_eval(ids[row:row + m])].astype(np.float64)
        s1 += tr.sum(axis=0)
        s2 += (tr * tr).sum(axis=0)
        n_train += tr.shape[0]
        row += m
    if row != n:
        raise ModelMismatch(f"Dataset {name!r} read {row}+ rows, its catalogue says {n}. "
                            "To fix: rerun the ETL that writes it.")
    st = standardizer(s1, s2, n_train)
    X -= st["mu"]
    X /= st["sigma"]
    mask = is_eval(ids)
    return Labelled(X, y, ids, features, np.flatnonzero(~mask), np.flatnonzero(mask),
                    st["mu"], st["sigma"])


def prediction_schema(n_classes: int) -> pa.Schema:
    return pa.schema([pa.field(ID, pa.int64()), pa.field("prediction", pa.int32()),
                      pa.field("confidence", pa.float32())]
                     + [pa.field(f"p{k}", pa.float32()) for k in range(n_classes)])


def prediction_batch(ids: np.ndarray, probs: np.ndarray) -> pa.RecordBatch:
    k = probs.shape[1]
    cols = [pa.array(ids.astype(np.int64)), pa.array(np.argmax(probs, axis=1).astype(np.int32)),
            pa.array(probs.max(axis=1).astype(np.float32))]
    cols += [pa.array(probs[:, j].astype(np.float32)) for j in range(k)]
    return pa.RecordBatch.from_arrays(cols, schema=prediction_schema(k))


def iter_ids_features(store: DatasetStoreLike, name: str, region: str | None,
                      features: list[str], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for batch in store.iter_batches(name, region, batch_size=batch_size):
        yield batch.column(ID).to_numpy(zero_copy_only=False), batch_features(batch, features)
