"""The entrypoints as standalone processes against a real SeaweedFS S3 (``python -m jobs.X``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs.artifacts import checkpoint_prefix, load_model
from jobs.stores import s3_stores
from storage import CheckpointStore, DatasetStore, S3Config, bucket_for_region

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROWS = "20000"


def _run(config: S3Config, *argv: str, module: bool = True) -> dict[str, Any]:
    """Run one job as its own process; return the metadata from its result line."""
    env = {**os.environ, **config.env(), "WESTFLOW_REGION": "west", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("DAGSTER_PIPES_CONTEXT", None)
    head = [sys.executable, "-m", argv[0]] if module else [sys.executable, argv[0]]
    out = subprocess.run([*head, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in reversed(out.stderr.splitlines()) if " result {" in ln)
    result: dict[str, Any] = json.loads(line.split(" result ", 1)[1])
    return result


@pytest.fixture
def names(dataset_store: DatasetStore) -> dict[str, str]:
    """Unique dataset and model names (datasets are removed by ``dataset_store``)."""
    tag = uuid.uuid4().hex[:8]
    return {"data": f"syn-{tag}", "model": f"clf-{tag}", "cut": f"cut-{tag}", "out": f"out-{tag}"}


def test_etl_train_resume_infer_score_on_s3(s3_config: S3Config, dataset_store: DatasetStore,
                                            names: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    etl = _run(s3_config, "jobs/etl.py", "--name", names["data"], "--rows", ROWS,
               "--chunk-rows", "4096", module=False)
    info = dataset_store.info(names["data"], "west")
    assert etl["num_rows"] == info.num_rows == int(ROWS)
    assert etl["checksum"] == info.checksum and info.bucket == bucket_for_region("west")

    common = ["--dataset", names["data"], "--epochs", "3", "--hidden", "16", "--batch-size", "256"]
    straight = _run(s3_config, "jobs.train", *common, "--model", names["model"])
    assert straight["complete"] and len(straight["loss_per_epoch"]) == 3
    assert straight["final_eval_accuracy"] > 0.75

    cut = _run(s3_config, "jobs.train", *common, "--model", names["cut"], "--stop-after", "1")
    assert cut["complete"] is False
    ck = CheckpointStore(s3_config, bucket_for_region("west"), checkpoint_prefix(names["cut"]))
    assert ck.latest() == 1
    resumed = _run(s3_config, "jobs.train", *common, "--model", names["cut"])
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs_this_run"] == 2
    for k, v in s3_config.env().items():
        monkeypatch.setenv(k, v)
    stores = s3_stores()
    a, _ = load_model(stores, "west", names["model"])
    b, _ = load_model(stores, "west", names["cut"])
    assert all(np.array_equal(a[k], b[k]) for k in a), "resumed weights differ"

    first = _run(s3_config, "jobs.batch_infer", "--model", names["model"], "--dataset",
                 names["data"], "--output", names["out"])
    again = _run(s3_config, "jobs.batch_infer", "--model", names["model"], "--dataset",
                 names["data"], "--output", names["out"] + "-2")
    assert first["predictions_sha256"] == again["predictions_sha256"]
    t1, t2 = dataset_store.read(names["out"], "west"), dataset_store.read(names["out"] + "-2", "west")
    assert t1.equals(t2) and t1.num_rows == int(ROWS)

    rt = _run(s3_config, "jobs.realtime_score", "--model", names["model"], "--dataset",
              names["data"], "--requests", "2000")
    assert rt["requests"] == 2000 and rt["latency_p50_us"] <= rt["latency_p99_us"]
    assert rt["backend"] == "numpy"


def test_bad_args_fail_fast_without_s3() -> None:
    out = subprocess.run([sys.executable, "-m", "jobs.train", "--epochs", "0", "--region", "west"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Out of range --epochs 0; must be an integer >= 1." in out.stderr
