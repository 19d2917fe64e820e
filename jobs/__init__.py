"""westflow's workloads: Ray job entrypoints (etl, train, batch_infer, realtime_score, gang)
and the one array backend they compute with.

Importing this package imports neither Ray, CuPy nor torch, and needs no GPU.
"""
