"""Benchmarks, each run as ``python -m benchmarks.<name>``.

Each prints ratios against a baseline run in the same process.
"""
