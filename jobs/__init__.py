"""westflow's workloads: Ray job entrypoints (etl, train, batch_infer, realtime_score, gang)
and the one array backend they compute with. Run one as ``python -m jobs.<name>``.

Importing this package imports neither Ray, CuPy nor torch, and needs no GPU.
"""

import os

# Before NumPy loads (``python -m jobs.x`` imports this package first): minibatch matmuls
# are too small for BLAS threads, which only add contention (1M x 32 epoch: 3.2 s on one
# thread vs 17-41 s on two on a busy node, same bits). Set OPENBLAS_NUM_THREADS to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
