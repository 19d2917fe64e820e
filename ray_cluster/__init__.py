"""westflow's network model, placement engine and Ray glue.

Importing this package imports neither Ray nor Dagster.
"""
