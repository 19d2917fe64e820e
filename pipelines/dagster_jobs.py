"""Asset jobs: the whole recsys pipeline, nightly training, the utilisation report."""

from __future__ import annotations

import dagster as dg

__all__ = ["recsys_pipeline", "nightly_training_job", "utilisation_job", "ALL_JOBS"]

recsys_pipeline = dg.define_asset_job(
    "recsys_pipeline", selection=dg.AssetSelection.groups("recsys"),
    description="Features -> training -> batch and real-time scoring, each placed by westflow.")
nightly_training_job = dg.define_asset_job(
    "nightly_training_job", selection=dg.AssetSelection.assets("nightly_training", "realtime_scoring"),
    description="Retrain, then roll the live service to the new model.")
utilisation_job = dg.define_asset_job(
    "utilisation_job", selection=dg.AssetSelection.assets("network_utilisation"))
ALL_JOBS = [recsys_pipeline, nightly_training_job, utilisation_job]
