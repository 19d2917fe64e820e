"""Load (issue 5): 1,000 concurrent placements against the live local network.

The local network has 40 accelerators; the 1,000 requests ask for far more.
Every placed request is held in Ray as a placement group built from its Ray
request (same resources and pins as ``task_options()``), so Ray's own
accounting, not the ledger's, says whether a DC was over-committed: a
placement the DC cannot hold would never become ready. Then everything is
released round by round; queued work must be placed as capacity frees, and
Ray's accounting must return to where it started.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest

from benchmarks.load_bench import IMPOSSIBLE, make_specs, submit_concurrently
from ray_cluster.live import DriverReader, live_capacity
from ray_cluster.local import LocalNetwork
from westflow.inventory import Family, Network
from westflow.ledger import Decision, Ledger, Status
from westflow.placement import Placement

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REQUESTS = 1000
THREADS = 32
KEYS = ("CPU", "GPU", "NPU")
MAX_ROUNDS = 60  # the mix drains in about 25 rounds
Usage = dict[str, dict[str, float]]


def _bundle(p: Placement) -> dict[str, float]:
    """The placement's Ray request as one placement-group bundle: what a task with
    ``p.ray.task_options()`` takes (CPUs, GPUs, NPUs, memory and the DC / rt / model pins)."""
    opts = p.ray.task_options()
    bundle = {"CPU": float(opts["num_cpus"]), **{k: float(v) for k, v in opts["resources"].items()}}
    if opts.get("num_gpus"):
        bundle["GPU"] = float(opts["num_gpus"])
    if opts.get("memory"):
        bundle["memory"] = float(opts["memory"])
    return bundle


def _ray_usage() -> tuple[Usage, Usage]:
    """Per DC: (used, total) of CPU/GPU/NPU, from Ray's per-node accounting in the GCS."""
    used: Usage = {}
    total: Usage = {}
    for n in DriverReader().nodes():
        if n.alive and n.dc:
            u, t = used.setdefault(n.dc, dict.fromkeys(KEYS, 0.0)), total.setdefault(n.dc, dict.fromkeys(KEYS, 0.0))
            for k in KEYS:
                u[k] += n.used(k)
                t[k] += n.total.get(k, 0.0)
    return used, total


def _ledger_usage(network: Network, ledger: Ledger, dcs: Iterable[str]) -> Usage:
    """Per DC: what the ledger has reserved, in Ray's units (GPU for CUDA models, NPU for Ascend)."""
    out: Usage = {dc: dict.fromkeys(KEYS, 0.0) for dc in dcs}
    for p in ledger.held().values():
        out[p.data_center]["CPU"] += p.spec.cpus
    for dc in out:
        families = {pool.model: pool.family for pool in network.dc(dc).pools}
        for model, n in ledger.reserved(dc).items():
            out[dc]["GPU" if families[model] is Family.CUDA else "NPU"] += n
    return out


def _delta(used: Usage, base: Usage) -> Usage:
    return {dc: {k: round(used[dc][k] - base[dc][k], 6) for k in KEYS} for dc in used}


def _await_accounting(want: Usage, base: Usage, timeout_s: float = 30.0) -> None:
    """Wait until Ray's usage (above ``base``) equals ``want`` in every DC; used <= total at every read."""
    deadline = time.monotonic() + timeout_s
    while True:
        used, total = _ray_usage()
        for dc in used:
            for k in KEYS:
                assert used[dc][k] <= total[dc][k] + 1e-9, f"{dc} over-committed on {k}: {used[dc][k]} > {total[dc][k]}"
        got = _delta(used, base)
        if got == {dc: {k: round(v, 6) for k, v in r.items()} for dc, r in want.items()}:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"Ray's accounting never matched the ledger:\nRay    {got}\nledger {want}")
        time.sleep(0.2)


class _Holder:
    """Placement groups that hold each placed decision's resources in Ray until released."""

    def __init__(self, node_dc: dict[str, str]) -> None:
        self.node_dc = node_dc
        self.groups: dict[str, Any] = {}

    def hold(self, decisions: list[Decision], timeout_s: float = 60.0) -> None:
        """Create a group per decision and wait until Ray has reserved every one in its DC."""
        import ray
        from ray.util import placement_group_table
        from ray.util.placement_group import placement_group

        if not decisions:
            return
        made = {}
        for d in decisions:
            assert d.placement is not None and d.ticket not in self.groups, d
            made[d.ticket] = placement_group([_bundle(d.placement)], strategy="STRICT_PACK")
        ready, pending = ray.wait([pg.ready() for pg in made.values()], num_returns=len(made), timeout=timeout_s)
        assert not pending, (f"{len(pending)} of {len(made)} placements never fitted in Ray: "
                             "the ledger promised capacity Ray does not have")
        for d in decisions:
            assert d.placement is not None
            nodes = placement_group_table(made[d.ticket])["bundles_to_node_id"]
            assert {self.node_dc[n] for n in nodes.values()} == {d.placement.data_center}, d.ticket
        self.groups.update(made)

    def release(self, ticket: str) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.groups.pop(ticket))

    def release_all(self) -> None:
        for ticket in list(self.groups):
            self.release(ticket)


def test_1000_concurrent_placements_never_over_commit_and_none_is_lost(
        ray_driver: LocalNetwork, capsys: pytest.CaptureFixture[str]) -> None:
    network = ray_driver.profile.network
    nodes = DriverReader().nodes()
    holder = _Holder({n.node_id: str(n.dc) for n in nodes if n.dc})
    base, totals = _ray_usage()  # whatever earlier tests still hold is not ours
    capacity = live_capacity(network, DriverReader())
    assert sorted(capacity) == sorted(ray_driver.profile.dc_ids)
    free = sum(sum(c.free.values()) for c in capacity.values())
    kinds = make_specs(REQUESTS)
    asked = sum(s.accelerator.count for _, s in kinds)
    assert asked > free, "the load must ask for more accelerators than are free"
    ledger = Ledger(network, capacity)
    t_start = time.perf_counter()
    try:
        decisions, elapsed = submit_concurrently(ledger, [s for _, s in kinds], THREADS)

        # Every request answered exactly once: no loss, no duplicate ticket.
        assert len(decisions) == REQUESTS
        assert [d.spec for d in decisions] == [s for _, s in kinds]
        assert len({d.ticket for d in decisions}) == REQUESTS
        counts = Counter(d.status for d in decisions)
        assert counts[Status.PLACED] + counts[Status.QUEUED] + counts[Status.REFUSED] == REQUESTS
        assert counts[Status.PLACED] and counts[Status.QUEUED] and counts[Status.REFUSED]
        for (kind, _), d in zip(kinds, decisions, strict=True):
            assert (d.status is Status.REFUSED) == (kind in IMPOSSIBLE), (kind, d.status, d.reason)
            if d.status is Status.PLACED:
                assert d.placement is not None and d.placement.within_tier
            else:
                assert d.placement is None and d.reason and d.rejected, d
                assert {r.data_center for r in d.rejected} == set(network.dc_ids), "a reason for every DC"
        assert sorted(ledger.queued()) == sorted(d.ticket for d in decisions if d.status is Status.QUEUED)

        # Ray holds every placement where the ledger put it, and its accounting agrees with the ledger.
        placed = [d for d in decisions if d.status is Status.PLACED]
        holder.hold(placed)
        _await_accounting(_ledger_usage(network, ledger, base), base)

        # Release round by round: queued work is placed as capacity frees, each ticket once.
        placed_tickets = Counter(d.ticket for d in placed)
        rounds = 0
        t_drain = time.perf_counter()
        while holder.groups:
            rounds += 1
            assert rounds <= MAX_ROUNDS, f"queue still holds {len(ledger.queued())} after {MAX_ROUNDS} rounds"
            new: list[Decision] = []
            for ticket in list(holder.groups):
                holder.release(ticket)
                new += ledger.release(ticket)
            assert all(d.status is Status.PLACED for d in new)
            placed_tickets.update(d.ticket for d in new)
            holder.hold(new)
            _await_accounting(_ledger_usage(network, ledger, base), base)
        drain_s = time.perf_counter() - t_drain

        assert ledger.queued() == [] and dict(ledger.held()) == {}
        assert set(placed_tickets) == {d.ticket for d in decisions if d.status is not Status.REFUSED}
        assert max(placed_tickets.values()) == 1, "a ticket was placed twice"
        _await_accounting({dc: dict.fromkeys(KEYS, 0.0) for dc in base}, base)
        assert _ray_usage()[1] == totals
    finally:
        holder.release_all()
    with capsys.disabled():
        print(f"\nload: {REQUESTS} decisions from {THREADS} threads in {elapsed:.3f} s = "
              f"{REQUESTS / elapsed:,.0f} decisions/s (placed {counts[Status.PLACED]}, "
              f"queued {counts[Status.QUEUED]}, refused {counts[Status.REFUSED]}; {asked} accelerators asked, "
              f"{free:g} free); drain: {rounds} rounds held in Ray, {drain_s:.1f} s; "
              f"test body {time.perf_counter() - t_start:.1f} s")
