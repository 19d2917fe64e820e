"""The filters of placement: liveness, latency tier, accelerator, capacity, deadline.

:func:`evaluate` turns a spec and a capacity snapshot into the eligible DCs
(each a :class:`~westflow.placement.values.Candidate`'s fields, costed: energy and
data transfer) and a :class:`~westflow.placement.values.Rejection` for every other
DC; :func:`in_order` merges the rejections into inventory order. Pure Python.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import NamedTuple

from westflow.capacity import Capacity, DCCapacity
from westflow.energy import energy_cost_cny, energy_kwh
from westflow.inventory import AcceleratorPool, Network, PolicyWeights, Region
from westflow.placement.score import score
from westflow.placement.tables import NetworkTables, Ranked, Row, wanted
from westflow.placement.timing import Window
from westflow.placement.values import Candidate, CandidateFields, Reason, Rejection, ShortRejection, candidate_of
from westflow.spec import WorkloadSpec

__all__ = ["Evaluation", "evaluate", "transfer", "in_order", "down"]

_FIRST, _SECOND = itemgetter(0), itemgetter(1)


class Evaluation(NamedTuple):
    """The filter's answer: the eligible DCs (each a :class:`Candidate`'s fields, a plain tuple), latency
    rejections, other rejections (each in inventory order), each eligible DC's westflow score where
    it was asked for (else empty), and, placing in time, each eligible DC's start by inventory index
    (else empty)."""

    eligible: list[CandidateFields]
    late: tuple[Ranked, ...]
    rejected: list[Ranked]
    scores: list[float]
    starts: dict[int, float]

    @property
    def candidates(self) -> list[Candidate]:
        """The eligible DCs as :class:`Candidate` s."""
        return list(map(candidate_of, self.eligible))


_evaluation: Callable[[tuple[list[CandidateFields], tuple[Ranked, ...], list[Ranked], list[float],
                             dict[int, float]]], Evaluation] = \
    functools.partial(tuple.__new__, Evaluation)  # Evaluation(...) without its Python-level __new__


def transfer(spec: WorkloadSpec, network: Network, region: Region) -> tuple[float, float]:
    """(hours, CNY) to move the spec's inputs into ``region``."""
    t_hours = t_cost = 0.0
    for ds in spec.inputs:
        if ds.region is not region:
            link = network.transfer[(ds.region, region)]
            t_hours += ds.size_bytes * 8 / (link.bandwidth_gbps * 1e9) / 3600
            t_cost += ds.size_bytes / 1e9 * link.cost_cny_per_gb
    return t_hours, t_cost


def evaluate(spec: WorkloadSpec, network: Network, caps: Capacity, tables: NetworkTables,
             latency_bound: float | None, rows: Sequence[Row] | None = None,
             moves: dict[Region, tuple[float, float]] | None = None,
             weights: PolicyWeights | None = None, timing: Window | None = None) -> Evaluation:
    """Filter the DCs and cost the eligible ones.

    Every DC within ``latency_bound`` of the origin (the full scan), or only ``rows``
    (the pruned search's next few, from :meth:`NetworkTables.rows` of this spec; their
    latency is then the caller's business); ``moves`` memoises the transfer per region
    across calls of one decision. With ``weights``, each candidate's
    :func:`~westflow.placement.score.score` too. With ``timing``, each candidate's start
    (:meth:`~westflow.placement.timing.Window.start`): its energy is priced over the hours it
    then runs, and a DC where it cannot finish by the spec's deadline is rejected.
    """
    if rows is None:
        rows, late = tables.rows(spec, latency_bound)
    else:
        late = ()
    count = spec.accelerator.count
    cpus, mem, hours = spec.cpus, spec.memory_gb, spec.duration_hours
    inputs, deadline = spec.inputs, spec.deadline_hours
    cands: list[CandidateFields] = []
    add = cands.append
    scores: list[float] = []
    keep = scores.append
    rejected: list[Ranked] = []
    reject = rejected.append
    starts: dict[int, float] = {}
    get = caps.get
    memo = {} if moves is None else moves
    pool: AcceleratorPool | None
    t_hours = t_cost = 0.0
    for i, dc, dc_id, rtt, cpu_watts, pue, price, pools, target, no_pool in rows:
        cap = get(dc_id)
        if cap is None or not cap.alive:
            reject((i, down(tables.unavailable[i], cap)))
            continue
        if pools is None:  # a CPU-only request
            kw = 0.0
            pool = None
        else:
            free = cap.free
            most = -1
            for pool in pools:
                f = free.get(pool.model, 0)
                if f >= count:
                    break
                if most < 0 or f > most:
                    most = f
            else:
                reject((i, no_pool or ShortRejection(dc_id, count, wanted(spec), most)))
                continue
            kw = pool.watts * count
        if cap.free_cpus < cpus or cap.free_memory_gb < mem:
            reject((i, Rejection(dc_id, Reason.CAPACITY, f"{cpus:g} CPUs / {mem:g} GB asked, "
                                 f"{cap.free_cpus:g} / {cap.free_memory_gb:g} free")))
            continue
        if inputs:
            move = memo.get(dc.region)
            if move is None:
                move = memo[dc.region] = transfer(spec, network, dc.region)
            t_hours, t_cost = move
        if deadline is not None and t_hours + hours > deadline:
            reject((i, Rejection(dc_id, Reason.DEADLINE,
                                 f"{t_hours:.2f} h transfer + {hours:g} h run > {deadline:g} h")))
            continue
        if timing is not None:
            when = timing.start(dc.tariff, price, t_hours, hours)
            if when is None:
                reject((i, Rejection(dc_id, Reason.DEADLINE, timing.missed(t_hours, hours))))
                continue
            starts[i], price = when
        kwh = energy_kwh(kw, cpu_watts, cpus, hours, pue)
        cost = energy_cost_cny(kwh, price)
        add((i, dc, pool, rtt, kwh, cost, t_hours, t_cost))
        if weights is not None:
            keep(score(cost, t_cost, t_hours, cap.utilisation, target, weights))
    return _evaluation((cands, late, rejected, scores, starts))


def down(unavailable: Rejection, cap: DCCapacity | None) -> Rejection:
    """A DC that is not alive: "no live Ray node", or what its capacity says (its cluster unreachable)."""
    if cap is None or not cap.why:
        return unavailable
    return Rejection(unavailable.data_center, Reason.UNAVAILABLE, cap.why)


def in_order(late: Sequence[Ranked], rest: Sequence[Ranked], caps: Capacity,
             unavailable: Sequence[Rejection]) -> tuple[Rejection, ...]:
    """The latency and other rejections merged into inventory order.

    Liveness is checked before latency, so a DC beyond the bound that is also down
    reads "unavailable".
    """
    if not late:
        return tuple(map(_SECOND, rest))
    both: list[Ranked] = []
    add = both.append
    get = caps.get
    for i, r in late:
        cap = get(r.data_center)
        add((i, r) if cap is not None and cap.alive else (i, down(unavailable[i], cap)))
    if rest:
        both.extend(rest)
        both.sort(key=_FIRST)
    return tuple(map(_SECOND, both))
