"""A deterministic labelled dataset with a known ground truth, generated in chunks.

Features are Gaussian with per-feature scale and offset (so standardisation
matters); labels come from a fixed linear teacher on the standardised features
plus Gumbel noise, i.e. ``label ~ softmax(teacher(x) / noise)``. The teacher's
own accuracy on its noisy labels (``teacher_accuracy``) is the figure a trained
model should approach. Chunk ``i`` is drawn from ``(seed, i)`` alone, so the data
depend on (seed, rows, features, classes, chunk_rows) and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

__all__ = ["SyntheticSpec", "Teacher", "teacher", "schema", "feature_columns", "chunks",
           "LABEL", "ID", "is_eval"]

LABEL = "label"
ID = "id"


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    rows: int = 1_000_000
    features: int = 32
    classes: int = 4
    seed: int = 0
    chunk_rows: int = 65_536
    noise: float = 0.5


@dataclass(frozen=True, slots=True)
class Teacher:
    offset: np.ndarray
    scale: np.ndarray
    W: np.ndarray
    b: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)


def feature_columns(n: int) -> list[str]:
    return [f"f{i:02d}" for i in range(n)]


def schema(spec: SyntheticSpec) -> pa.Schema:
    return pa.schema([pa.field(ID, pa.int64())]
                     + [pa.field(c, pa.float32()) for c in feature_columns(spec.features)]
                     + [pa.field(LABEL, pa.int32())])


def teacher(spec: SyntheticSpec) -> Teacher:
    """The ground-truth model, a function of the seed and shape only."""
    rng = np.random.default_rng([spec.seed, 0x7EAC])
    f, k = spec.features, spec.classes
    offset = rng.uniform(-5, 5, f).astype(np.float32)
    scale = np.exp(rng.uniform(-1.5, 1.5, f)).astype(np.float32)
    W = (rng.standard_normal((f, k)) * (3.0 / np.sqrt(f))).astype(np.float32)
    b = (rng.standard_normal(k) * 0.3).astype(np.float32)
    return Teacher(offset, scale, W, b, {"teacher_correct": 0})


def is_eval(ids: np.ndarray) -> np.ndarray:
    """The hold-out split: every tenth row by id."""
    return (ids % 10) == 9


def chunks(spec: SyntheticSpec, t: Teacher | None = None) -> Iterator[pa.RecordBatch]:
    """RecordBatches of ``chunk_rows`` rows; ``t.stats`` counts the teacher's hits as it goes."""
    t = t or teacher(spec)
    sch = schema(spec)
    for i, start in enumerate(range(0, spec.rows, spec.chunk_rows)):
        m = min(spec.chunk_rows, spec.rows - start)
        rng = np.random.default_rng([spec.seed, 0xDA7A, i])
        Z = rng.standard_normal((m, spec.features), dtype=np.float32)
        logits = Z @ t.W + t.b
        gumbel = rng.gumbel(size=(m, spec.classes)).astype(np.float32)
        labels = np.argmax(logits + spec.noise * gumbel, axis=1).astype(np.int32)
        t.stats["teacher_correct"] += int(np.sum(np.argmax(logits, axis=1) == labels))
        X = Z * t.scale + t.offset
        arrays = [pa.array(np.arange(start, start + m, dtype=np.int64))]
        arrays += [pa.array(X[:, j]) for j in range(spec.features)]
        arrays.append(pa.array(labels))
        yield pa.RecordBatch.from_arrays(arrays, schema=sch)
        del X, Z
