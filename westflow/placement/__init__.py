"""Placement: one public surface for every caller (CLI, Dagster resource, simulator, ledger).

``place(spec, network, capacity) -> Placement`` with the westflow policy, or
``get_policy(name).place(...)`` for a baseline; an impossible spec raises
:class:`~westflow.errors.InfeasibleError` carrying every data center's reason.

Modules, one concept each: :mod:`~westflow.placement.values` (Placement, Rejection,
...), :mod:`~westflow.placement.tables` (per-network precomputed tables),
:mod:`~westflow.placement.filters` (liveness, latency, accelerator, capacity,
deadline), :mod:`~westflow.placement.score` (the westflow score, written once),
:mod:`~westflow.placement.search` (the pruned search of large networks),
:mod:`~westflow.placement.explain` (why every other DC lost),
:mod:`~westflow.placement.policies` (the policies and their registry).
"""

from westflow.capacity import Capacity
from westflow.inventory import Network
from westflow.placement.policies import (
    POLICY_NAMES,
    CheapestPolicy,
    EastFirstPolicy,
    Policy,
    RandomPolicy,
    RoundRobinPolicy,
    WestflowPolicy,
    get_policy,
)
from westflow.placement.values import Candidate, Context, Placement, Reason, Rejection
from westflow.spec import WorkloadSpec

__all__ = [
    "place", "get_policy", "POLICY_NAMES", "Policy", "WestflowPolicy", "EastFirstPolicy", "CheapestPolicy",
    "RoundRobinPolicy", "RandomPolicy", "Placement", "Rejection", "Reason", "Candidate", "Context",
]

_DEFAULT = WestflowPolicy()


def place(spec: WorkloadSpec, network: Network, capacity: Capacity | None = None, *,
          now: float | None = None) -> Placement:
    """Place ``spec`` with the westflow policy (the signature every policy's ``place`` shares); ``now``
    (epoch s) places it in time too (time-of-use prices, deferral: :mod:`westflow.placement.timing`)."""
    return _DEFAULT.place(spec, network, capacity, now=now)
