"""Placement: one public surface for every caller (CLI, Dagster resource, simulator).

``place(spec, network, capacity) -> Placement`` with the westflow policy, or
``get_policy(name).place(...)`` for a baseline; an impossible spec raises
:class:`~westflow.errors.InfeasibleError` carrying every data center's reason.
"""

from westflow.placement.core import Policy, WestflowPolicy
from westflow.placement.policies import (
    POLICY_NAMES,
    CheapestPolicy,
    EastFirstPolicy,
    RandomPolicy,
    RoundRobinPolicy,
    get_policy,
    place,
)
from westflow.placement.values import Candidate, Context, Placement, Reason, Rejection

__all__ = [
    "place", "get_policy", "POLICY_NAMES", "Policy", "WestflowPolicy", "EastFirstPolicy", "CheapestPolicy",
    "RoundRobinPolicy", "RandomPolicy", "Placement", "Rejection", "Reason", "Candidate", "Context",
]
