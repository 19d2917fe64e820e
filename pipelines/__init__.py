"""westflow's Dagster code location (``workspace.yaml`` loads ``pipelines.definitions``)."""
