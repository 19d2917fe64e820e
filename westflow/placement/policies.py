"""All placement policies behind one signature, and the registry the CLI uses.

Baselines (peers of :class:`~westflow.placement.WestflowPolicy`):

- ``east-first``: eastern DCs first, nearest to the origin (what users do today);
- ``cheapest``: lowest energy + transfer cost, blind to latency (it may break tiers);
- ``round-robin``: the eligible DCs in turn;
- ``random``: a seeded draw among the eligible DCs.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Sequence

from westflow.inventory import Region
from westflow.placement.core import Policy, WestflowPolicy
from westflow.placement.values import Candidate, Context, Placement, Reason, Rejection

__all__ = [
    "EastFirstPolicy",
    "CheapestPolicy",
    "RoundRobinPolicy",
    "RandomPolicy",
    "POLICY_NAMES",
    "get_policy",
    "place",
]


class EastFirstPolicy(Policy):
    """Key ``(not east, RTT to origin, inventory order)``."""

    name = "east-first"

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        return (float(c.dc.region is not Region.EAST), c.rtt_ms or 0.0, float(c.index))

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        # min(cands, key=_key) inlined: the hot loop of every decision
        east = Region.EAST
        best, best_key = cands[0], (2.0, 0.0, 0.0)
        for c in cands:
            key = (float(c.dc.region is not east), c.rtt_ms or 0.0, float(c.index))
            if key < best_key:
                best, best_key = c, key
        return best

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        if c.dc.region is not best.dc.region:
            return Rejection(c.dc.id, Reason.NOT_CHOSEN, "not in the east")
        return Rejection(c.dc.id, Reason.NOT_CHOSEN,
                         f"farther: RTT {c.rtt_ms or 0:.1f} ms vs {best.rtt_ms or 0:.1f} ms")


class CheapestPolicy(Policy):
    """Key ``(energy + transfer cost, inventory order)``; ignores the latency tier."""

    name = "cheapest"
    respect_latency = False

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        return (c.cost_cny, float(c.index))

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        # min(cands, key=_key) inlined: the hot loop of every decision
        best, best_cost = cands[0], cands[0].energy_cost_cny + cands[0].transfer_cost_cny
        for c in cands:
            cost = c.energy_cost_cny + c.transfer_cost_cny
            if cost < best_cost:  # ties keep the earlier (lower index) candidate
                best, best_cost = c, cost
        return best


class RoundRobinPolicy(Policy):
    """The eligible DCs in turn (one shared, thread-safe counter)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        return cands[next(self._turn) % len(cands)]

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        return (float(c.index),)

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        return Rejection(c.dc.id, Reason.NOT_CHOSEN, f"round-robin turn went to {best.dc.id}")


class RandomPolicy(Policy):
    """A seeded uniform draw among the eligible DCs."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _choose(self, cands: Sequence[Candidate], ctx: Context) -> Candidate:
        with self._lock:
            return self._rng.choice(list(cands))

    def _key(self, c: Candidate, ctx: Context) -> tuple[float, ...]:
        return (float(c.index),)

    def _lost(self, c: Candidate, best: Candidate, ctx: Context) -> Rejection:
        return Rejection(c.dc.id, Reason.NOT_CHOSEN, f"random draw went to {best.dc.id}")


_FACTORIES = {
    "westflow": WestflowPolicy,
    "east-first": EastFirstPolicy,
    "cheapest": CheapestPolicy,
    "round-robin": RoundRobinPolicy,
    "random": RandomPolicy,
}
POLICY_NAMES = tuple(_FACTORIES)


def get_policy(name: str, *, seed: int = 0) -> Policy:
    """A fresh policy instance by name."""
    from westflow.errors import SpecError

    if name not in _FACTORIES:
        raise SpecError("policy", name, POLICY_NAMES, problem="Unknown")
    if name == "random":
        return RandomPolicy(seed)
    return _FACTORIES[name]()


_DEFAULT = WestflowPolicy()


def place(spec, network, capacity=None) -> Placement:  # type: ignore[no-untyped-def]
    """Place with the westflow policy (the signature every policy shares)."""
    return _DEFAULT.place(spec, network, capacity)
