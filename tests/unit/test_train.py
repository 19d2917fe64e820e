"""Training, resume, batch and real-time scoring, the CLIs and Pipes — on in-memory stores."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs import batch_infer, etl, realtime_score, train
from jobs.artifacts import checkpoint_prefix, load_model
from jobs.backend import Assignment, numpy_backend
from jobs.dataio import load_labelled
from jobs.job_errors import ModelMismatch
from jobs.memstore import MemoryDatasetStore, memory_stores
from jobs.model import ModelConfig
from jobs.scoring import Scorer
from jobs.stores import Stores
from jobs.synthetic import SyntheticSpec, chunks, schema
from jobs.training import EpochStats, Interrupted, TrainConfig, fit
from tests.unit.test_backend import FakeProbe

ROWS = 20_000
REGION = ["--region", "west"]


def _data(rows: int = ROWS, seed: int = 0) -> MemoryDatasetStore:
    spec = SyntheticSpec(rows=rows, seed=seed, chunk_rows=4_096)
    store = MemoryDatasetStore()
    store.write("d", "west", chunks(spec), schema=schema(spec))
    return store


@pytest.fixture(scope="module")
def labelled() -> Any:
    return load_labelled(_data(), "d")


def _fit(labelled: Any, epochs: int, **kw: Any) -> Any:
    return fit(numpy_backend(), labelled.X, labelled.y, labelled.train_idx, labelled.eval_idx,
               ModelConfig(32, 4, 32), TrainConfig(epochs, 256, 0.1, 7), **kw)


def test_training_lowers_loss_and_reaches_accuracy(labelled: Any) -> None:
    r = _fit(labelled, 4)
    losses = [s.loss for s in r.history]
    assert losses == sorted(losses, reverse=True), losses
    assert losses[-1] < 0.6 * losses[0]
    # The teacher itself scores ~0.88 on its noisy labels; chance is 0.25.
    assert r.history[-1].eval_accuracy >= 0.80, r.history


def test_interrupted_run_resumes_to_identical_weights(labelled: Any) -> None:
    straight = _fit(labelled, 4)
    stores = memory_stores()
    ck = stores.checkpoints("west", "models/m/checkpoints")

    def preempt(s: EpochStats) -> None:
        if s.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        _fit(labelled, 4, checkpoints=ck, on_epoch=preempt)
    assert ck.latest() == 2
    resumed = _fit(labelled, 4, checkpoints=ck)
    assert resumed.resumed_from == 2 and [s.epoch for s in resumed.history] == [3, 4]
    for k in straight.params:
        assert np.array_equal(straight.params[k], resumed.params[k]), k


def test_checkpoint_from_another_run_is_refused(labelled: Any) -> None:
    ck = memory_stores().checkpoints("west", "x")
    _fit(labelled, 1, checkpoints=ck)
    with pytest.raises(ModelMismatch, match="different run"):
        fit(numpy_backend(), labelled.X, labelled.y, labelled.train_idx, labelled.eval_idx,
            ModelConfig(32, 4, 8), TrainConfig(2, 256, 0.1, 7), ck)


# -- the entrypoints, run in-process on memory stores ----------------------------------


def _result(caplog: pytest.LogCaptureFixture, job: str) -> dict[str, Any]:
    records = caplog.get_records("setup") + caplog.records
    lines = [r.getMessage() for r in records if r.name == f"jobs.{job}"
             and r.getMessage().startswith(f"{job} result ")]
    assert lines, f"no result line from {job}"
    out: dict[str, Any] = json.loads(lines[-1].split(" result ", 1)[1])
    return out


@pytest.fixture
def pipeline(caplog: pytest.LogCaptureFixture) -> Iterator[Stores]:
    """ETL'd memory stores with a trained model ``clf`` in region west."""
    caplog.set_level(logging.INFO)
    stores = memory_stores()
    assert etl.main(["--rows", str(ROWS), "--chunk-rows", "3000", *REGION], stores=stores) == 0
    assert train.main(["--epochs", "3", "--hidden", "16", "--batch-size", "256", *REGION],
                      stores=stores) == 0
    yield stores


def test_etl_streams_chunks_and_reports(pipeline: Stores, caplog: pytest.LogCaptureFixture) -> None:
    md = _result(caplog, "etl")
    assert md["num_rows"] == ROWS and md["bucket"] == "westflow-west"
    assert pipeline.datasets.peak_batch_rows <= 3000  # type: ignore[attr-defined]
    assert 0.8 < md["teacher_accuracy"] < 0.95
    assert md["backend"] == "numpy" and md["backend_fallback"] is False


def test_train_cli_reports_epochs_and_saves_model(pipeline: Stores,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    md = _result(caplog, "train")
    assert len(md["loss_per_epoch"]) == 3 and md["complete"] is True
    assert md["loss_per_epoch"][-1] < md["loss_per_epoch"][0]
    assert md["final_eval_accuracy"] > 0.75
    arrays, meta = load_model(pipeline, "west", "clf")
    assert meta["model"] == {"n_features": 32, "n_classes": 4, "hidden": 16}
    assert set(arrays) == {"W1", "b1", "W2", "b2", "mu", "sigma"}


def test_train_cli_resume_equals_straight_run(pipeline: Stores) -> None:
    args = ["--epochs", "3", "--hidden", "16", "--batch-size", "256", *REGION]
    assert train.main([*args, "--model", "cut", "--stop-after", "1"], stores=pipeline) == 0
    assert pipeline.checkpoints("west", checkpoint_prefix("cut")).latest() == 1
    with pytest.raises(ModelMismatch):
        load_model(pipeline, "west", "cut")  # not saved until complete
    assert train.main([*args, "--model", "cut"], stores=pipeline) == 0
    a, _ = load_model(pipeline, "west", "cut")
    b, _ = load_model(pipeline, "west", "clf")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_batch_inference_is_reproducible(pipeline: Stores, caplog: pytest.LogCaptureFixture) -> None:
    assert batch_infer.main(["--output", "p1", *REGION], stores=pipeline) == 0
    first = _result(caplog, "batch_infer")
    assert batch_infer.main(["--output", "p2", *REGION], stores=pipeline) == 0
    second = _result(caplog, "batch_infer")
    assert first["predictions_sha256"] == second["predictions_sha256"]
    assert first["checksum"] == second["checksum"] and first["num_rows"] == ROWS
    assert pipeline.datasets.read("p1").equals(pipeline.datasets.read("p2"))


def test_realtime_answers_match_batch(pipeline: Stores, caplog: pytest.LogCaptureFixture) -> None:
    assert batch_infer.main(["--output", "p", *REGION], stores=pipeline) == 0
    preds = pipeline.datasets.read("p").slice(0, 500)
    arrays, meta = load_model(pipeline, "west", "clf")
    scorer = Scorer(numpy_backend(), arrays, meta)
    rows = pipeline.datasets.read("synthetic", columns=scorer.features).slice(0, 500)
    X = np.column_stack([rows.column(c).to_numpy() for c in scorer.features])
    probs = np.column_stack([preds.column(f"p{k}").to_numpy() for k in range(4)])
    for i in range(500):
        label, p = scorer.score_one(X[i])
        assert label == preds.column("prediction")[i].as_py()
        np.testing.assert_allclose(p, probs[i], rtol=1e-5, atol=1e-7)
    assert realtime_score.main(["--requests", "500", "--warmup", "10", *REGION], stores=pipeline) == 0
    md = _result(caplog, "realtime_score")
    assert md["requests"] == 500 and 0 < md["latency_p50_us"] <= md["latency_p99_us"]


def test_job_on_logical_gpu_says_it_ran_numpy(pipeline: Stores,
                                              caplog: pytest.LogCaptureFixture) -> None:
    probe = FakeProbe(Assignment(gpus=("0",), source="ray"), cuda="cudaErrorNoDevice")
    assert batch_infer.main(["--output", "g", *REGION], stores=pipeline, probe=probe) == 0
    md = _result(caplog, "batch_infer")
    assert md["accelerator_assigned"] == "cuda" and md["accelerator_mode"] == "logical"
    assert md["backend"] == "numpy" and md["backend_fallback"] is True
    assert any("ran NumPy in place of CUDA" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


@pytest.mark.parametrize(("job", "argv", "needle"), [
    (etl, ["--rows", "0", *REGION], "Out of range --rows 0; must be an integer >= 1."),
    (etl, ["--rows", "many", *REGION], "Invalid --rows 'many'"),
    (etl, ["--rows", "10"], "Missing --region None; must be one of: east, west."),
    (etl, ["--region", "north"], "Invalid --region 'north'; must be one of: east, west."),
    (train, ["--lr", "-1", *REGION], "Out of range --lr -1.0"),
    (train, ["--backend", "tpu", *REGION], "Invalid --backend 'tpu'"),
    (batch_infer, ["--dataset", "a/b", *REGION], "Invalid --dataset 'a/b'"),
    (realtime_score, ["--frobnicate", *REGION], "Unrecognized arguments: --frobnicate."),
], ids=["rows-zero", "rows-text", "no-region", "bad-region", "lr", "backend", "name", "unknown"])
def test_bad_arguments_exit_2_with_a_clear_message(
    job: Any, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WESTFLOW_REGION", raising=False)
    assert job.main(argv, stores=memory_stores()) == 2
    assert needle in capsys.readouterr().err


def test_region_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WESTFLOW_REGION", "east")
    stores = memory_stores()
    assert etl.main(["--rows", "100"], stores=stores) == 0
    assert stores.datasets.info("synthetic", "east").bucket == "westflow-east"


def test_missing_model_is_a_typed_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert batch_infer.main(["--model", "nope", *REGION], stores=memory_stores()) == 1
    assert "No saved model 'nope'" in capsys.readouterr().err


# -- Dagster Pipes -------------------------------------------------------------------------


@pytest.fixture
def pipes_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The env a Dagster launcher sets: context inline, messages to a file."""
    from dagster_pipes import PipesContext, encode_param

    context = {"asset_keys": ["scored"], "code_version_by_asset_key": None,
               "provenance_by_asset_key": None, "partition_key": None,
               "partition_key_range": None, "partition_time_window": None,
               "run_id": "r1", "job_name": "j", "retry_number": 0, "extras": {}}
    messages = tmp_path / "messages.jsonl"
    monkeypatch.setenv("DAGSTER_PIPES_CONTEXT", encode_param({"data": context}))
    monkeypatch.setenv("DAGSTER_PIPES_MESSAGES", encode_param({"path": str(messages)}))
    PipesContext._instance = None  # the singleton of an earlier in-process job
    yield messages
    PipesContext._instance = None


def test_reports_through_pipes_when_dagster_launched_it(pipeline: Stores, pipes_env: Path) -> None:
    probe = FakeProbe(Assignment(npus=("0",), source="ray"), npu="torch_npu does not import")
    assert batch_infer.main(["--output", "q", *REGION], stores=pipeline, probe=probe) == 0
    msgs = [json.loads(line) for line in pipes_env.read_text().splitlines()]
    methods = [m["method"] for m in msgs]
    assert methods[0] == "opened" and methods[-1] == "closed"
    logs = [m["params"]["message"] for m in msgs if m["method"] == "log"]
    assert any("ran NumPy in place of CANN" in line for line in logs)
    (mat,) = [m["params"] for m in msgs if m["method"] == "report_asset_materialization"]
    assert mat["asset_key"] == "scored"
    md = {k: v["raw_value"] for k, v in mat["metadata"].items()}
    assert md["backend"] == "numpy" and md["accelerator_assigned"] == "cann"
    assert md["backend_fallback"] is True and md["num_rows"] == ROWS
