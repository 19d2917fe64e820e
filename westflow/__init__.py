"""westflow's domain: the national network, workload specs, capacity, placement, simulator.

Pure Python (numpy at most): it imports none of ray, dagster, boto3 or pyarrow,
which an import-linter contract in ``pyproject.toml`` holds.
"""
