"""What speaks to Ray: live capacity, job dispatch, the local network, manifests.

Built on the domain (:mod:`westflow`) and storage; knows nothing of Dagster.
"""
