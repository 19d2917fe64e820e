"""The data scientists' pipelines: features, training, batch and real-time scoring.

Each asset declares its WorkloadSpec in one line; the westflow resource
places it and runs the real work (a ``jobs/`` entrypoint) as a Ray Job there.
"""


import dagster as dg

from pipelines.resources import WestflowResource
from pipelines.workload import westflow_asset

__all__ = ["daily_features", "nightly_training", "batch_inference", "realtime_scoring", "RAY_ASSETS",
           "FeaturesConfig", "TrainingConfig", "ScoringConfig", "MODEL", "FEATURES", "PREDICTIONS"]

FEATURES, MODEL, PREDICTIONS = "daily_features", "recsys_clf", "recsys_predictions"


class FeaturesConfig(dg.Config):
    dataset: str = FEATURES
    rows: int = 1_000_000
    features: int = 32
    seed: int = 0


class TrainingConfig(dg.Config):
    model: str = MODEL
    epochs: int = 3
    batch_size: int = 1024
    hidden: int = 64
    seed: int = 0


class ScoringConfig(dg.Config):
    requests: int = 2_000


@westflow_asset(
    workload={"tier": "batch", "origin": "beijing", "accelerator": "cpu", "cpus": 1, "memory_gb": 2,
              "duration_hours": 0.5},
    group_name="recsys", description="Daily labelled feature table (ETL), Parquet in S3.",
)
def daily_features(context: dg.AssetExecutionContext, config: FeaturesConfig,
                   westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.run(context, module="jobs.etl", args=[
        "--name", config.dataset, "--rows", str(config.rows), "--features", str(config.features),
        "--seed", str(config.seed)])


@westflow_asset(
    workload={"tier": "batch", "origin": "beijing", "accelerator": {"family": "any", "count": 2}, "cpus": 1,
              "memory_gb": 4, "duration_hours": 2},
    inputs=[FEATURES], deps=[daily_features], group_name="recsys",
    description="Nightly model training (minibatch SGD), checkpoint per epoch; any accelerator family.",
)
def nightly_training(context: dg.AssetExecutionContext, config: TrainingConfig,
                     westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.run(context, module="jobs.train", args=[
        "--dataset", FEATURES, "--model", config.model, "--epochs", str(config.epochs),
        "--batch-size", str(config.batch_size), "--hidden", str(config.hidden), "--seed", str(config.seed),
        "--run-id", context.run_id])


@westflow_asset(
    workload={"tier": "batch", "origin": "beijing", "accelerator": "any:1", "cpus": 1, "memory_gb": 4,
              "duration_hours": 1},
    inputs=[FEATURES], deps=[nightly_training], group_name="recsys",
    description="Score the feature table with the trained model; predictions as Parquet.",
)
def batch_inference(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.run(context, module="jobs.batch_infer", args=[
        "--model", MODEL, "--dataset", FEATURES, "--output", PREDICTIONS])


@westflow_asset(
    workload={"tier": "realtime", "origin": "shanghai", "accelerator": "any:1", "cpus": 1, "memory_gb": 2,
              "duration_hours": 1},
    deps=[nightly_training], group_name="recsys",
    description="Real-time scoring for users in Shanghai: must run within 20 ms of Shanghai.",
)
def realtime_scoring(context: dg.AssetExecutionContext, config: ScoringConfig,
                     westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.run(context, module="jobs.realtime_score", args=[
        "--model", MODEL, "--dataset", FEATURES, "--requests", str(config.requests)])


RAY_ASSETS = [daily_features, nightly_training, batch_inference, realtime_scoring]
