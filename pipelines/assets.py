"""The data scientists' pipelines: features, training, batch scoring, and a live scoring service.

Each batch asset declares its WorkloadSpec in one line; the westflow resource
places it and runs the real work (a ``jobs/`` entrypoint) as a Ray Job there.
The real-time asset deploys a live service instead (Ray Serve, a route per city).
"""


import dagster as dg

from pipelines.resources import WestflowResource
from pipelines.workload import westflow_asset

__all__ = ["daily_features", "nightly_training", "batch_inference", "realtime_scoring", "RAY_ASSETS",
           "FeaturesConfig", "TrainingConfig", "TRAINING_WORKLOAD", "train_model", "ServiceConfig", "MODEL",
           "FEATURES", "PREDICTIONS", "SERVICE"]

FEATURES, MODEL, PREDICTIONS, SERVICE = "daily_features", "recsys_clf", "recsys_predictions", "recsys"


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


class ServiceConfig(dg.Config):
    cities: list[str] = ["shanghai", "chengdu"]
    min_replicas: int = 1
    max_replicas: int = 2


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


TRAINING_WORKLOAD = {"tier": "batch", "origin": "beijing", "accelerator": {"family": "any", "count": 2}, "cpus": 1,
                     "memory_gb": 4, "duration_hours": 2}


def train_model(context: dg.AssetExecutionContext, config: TrainingConfig, westflow: WestflowResource,
                dataset: str = FEATURES) -> dg.MaterializeResult:
    """The training step's body: jobs.train on ``dataset``, checkpointed under the Dagster run."""
    return westflow.run(context, module="jobs.train", args=[
        "--dataset", dataset, "--model", config.model, "--epochs", str(config.epochs),
        "--batch-size", str(config.batch_size), "--hidden", str(config.hidden), "--seed", str(config.seed),
        "--run-id", context.run_id])


@westflow_asset(
    workload=TRAINING_WORKLOAD, inputs=[FEATURES], deps=[daily_features], group_name="recsys",
    description="Nightly model training (minibatch SGD), checkpoint per epoch; any accelerator family.",
)
def nightly_training(context: dg.AssetExecutionContext, config: TrainingConfig,
                     westflow: WestflowResource) -> dg.MaterializeResult:
    return train_model(context, config, westflow)


@westflow_asset(
    workload={"tier": "batch", "origin": "beijing", "accelerator": "any:1", "cpus": 1, "memory_gb": 4,
              "duration_hours": 1},
    inputs=[FEATURES], deps=[nightly_training], group_name="recsys",
    description="Score the feature table with the trained model; predictions as Parquet.",
)
def batch_inference(context: dg.AssetExecutionContext, westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.run(context, module="jobs.batch_infer", args=[
        "--model", MODEL, "--dataset", FEATURES, "--output", PREDICTIONS])


@dg.asset(
    deps=[nightly_training], group_name="recsys", kinds={"ray"},
    description="Live recommendation scoring: a Ray Serve endpoint per city (Shanghai, Chengdu), each served "
                "from a DC within 20 ms of it; rolls to the model nightly training wrote last.",
)
def realtime_scoring(context: dg.AssetExecutionContext, config: ServiceConfig,
                     westflow: WestflowResource) -> dg.MaterializeResult:
    return westflow.serve(context, {
        "name": SERVICE, "tenant": SERVICE, "cities": config.cities, "model": MODEL, "accelerator": "any:1",
        "cpus": 0.5, "memory_gb": 1, "min_replicas": config.min_replicas, "max_replicas": config.max_replicas})


RAY_ASSETS = [daily_features, nightly_training, batch_inference, realtime_scoring]
