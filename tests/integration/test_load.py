"""Load (issue 5): 1,000 concurrent placements on the production reservation path, live network.

Every request is a :meth:`~ray_cluster.reservations.Reservations.reserve` on one
journal (what the Dagster resource does for a step), from 4 processes x 8 threads
released at once, on the live capacity and totals read from the local Ray network
(:func:`ray_cluster.live.capacity_and_totals`). The local network has 40
accelerators; the requests ask for far more. Every placed request is held in Ray
as a placement group built from its Ray request (same resources and pins as
``task_options()``), so Ray's own accounting, not the journal's, says whether a
DC was over-committed: a placement the DC cannot hold would never become ready.
Then everything is released round by round and the waiting requests placed again
on a fresh read of live capacity, until none is left; Ray's accounting must
return to where it started.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.load_bench import IMPOSSIBLE, Attempt, Outcome, Submitters, make_specs
from ray_cluster.live import DriverReader, capacity_and_totals
from ray_cluster.local import LocalNetwork
from ray_cluster.reservations import Reservation, Reservations
from westflow.capacity import Capacity, Resources, capacity_of
from westflow.inventory import Family, Network
from westflow.placement import Placement

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REQUESTS = 1000
PROCESSES = 4
THREADS = 8
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


def _ray_usage(reader: Any = None) -> tuple[Usage, Usage]:
    """Per DC: (used, total) of CPU/GPU/NPU, from Ray's per-node accounting in the GCS (or ``reader``'s view)."""
    used: Usage = {}
    total: Usage = {}
    for n in (reader or DriverReader()).nodes():
        if n.alive and n.dc:
            u, t = used.setdefault(n.dc, dict.fromkeys(KEYS, 0.0)), total.setdefault(n.dc, dict.fromkeys(KEYS, 0.0))
            for k in KEYS:
                u[k] += n.used(k)
                t[k] += n.total.get(k, 0.0)
    return used, total


def _journal_usage(network: Network, held: Iterable[Reservation], dcs: Iterable[str]) -> Usage:
    """Per DC: what the journal holds, in Ray's units (GPU for CUDA models, NPU for Ascend)."""
    out: Usage = {dc: dict.fromkeys(KEYS, 0.0) for dc in dcs}
    for r in held:
        out[r.data_center]["CPU"] += r.cpus
        if r.accelerator_model:
            family = next(p.family for p in network.dc(r.data_center).pools if p.model == r.accelerator_model)
            out[r.data_center]["GPU" if family is Family.CUDA else "NPU"] += r.accelerators
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
            pytest.fail(f"Ray's accounting never matched the journal:\nRay     {got}\njournal {want}")
        time.sleep(0.2)


def _settled_usage(timeout_s: float = 60.0) -> Usage:
    """Ray's usage once it has settled: the same in three reads in a row, 0.5 s apart. A task an
    earlier test finished returns its resources a moment after its result (seen: 0.01 CPU), and a
    base read in that moment would make every later comparison off by that much."""
    deadline = time.monotonic() + timeout_s
    reads: list[Usage] = []
    while time.monotonic() < deadline:
        reads = [*reads[-2:], _ray_usage()[0]]
        if len(reads) == 3 and reads[0] == reads[1] == reads[2]:
            return reads[0]
        time.sleep(0.5)
    pytest.fail(f"Ray's usage never settled before the load test: {reads}")


def _await_dashboard(net: LocalNetwork, want: Usage, timeout_s: float = 60.0) -> None:
    """Wait until the dashboard (what the Dagster resource reads; it lags the GCS) shows ``want``
    again, so the next test's steps are not placed on the load test's stale usage."""
    deadline = time.monotonic() + timeout_s
    while _ray_usage(net.reader())[0] != want:
        if time.monotonic() > deadline:
            pytest.fail(f"the dashboard never showed the load released: {_ray_usage(net.reader())[0]}")
        time.sleep(0.5)


def _live(network: Network, base_used: dict[str, Resources]) -> tuple[Capacity, Capacity]:
    """Live capacity and totals as the Dagster resource reads them; what earlier tests still hold
    (``base_used``, nothing when this file runs alone) is taken off the totals: it is not ours to give."""
    live, totals = capacity_and_totals(network, DriverReader())
    return live, {dc: capacity_of(t.resources(), base_used[dc]) for dc, t in totals.items() if dc in base_used}


class _Holder:
    """Placement groups that hold each placed request's resources in Ray until released."""

    def __init__(self, node_dc: dict[str, str]) -> None:
        self.node_dc = node_dc
        self.groups: dict[str, Any] = {}

    def hold(self, placed: list[Attempt], timeout_s: float = 60.0) -> None:
        """Create a group per placement and wait until Ray has reserved every one in its DC."""
        import ray
        from ray.util import placement_group_table
        from ray.util.placement_group import placement_group

        if not placed:
            return
        made = {}
        for a in placed:
            assert a.placement is not None and a.ticket and a.ticket not in self.groups, a
            made[a.ticket] = placement_group([_bundle(a.placement)], strategy="STRICT_PACK")
        ready, pending = ray.wait([pg.ready() for pg in made.values()], num_returns=len(made), timeout=timeout_s)
        assert not pending, (f"{len(pending)} of {len(made)} placements never fitted in Ray: "
                             "the journal promised capacity Ray does not have")
        for a in placed:
            assert a.placement is not None and a.ticket
            nodes = placement_group_table(made[a.ticket])["bundles_to_node_id"]
            assert {self.node_dc[n] for n in nodes.values()} == {a.placement.data_center}, a.ticket
        self.groups.update(made)

    def release(self, ticket: str) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.groups.pop(ticket))

    def release_all(self) -> None:
        for ticket in list(self.groups):
            self.release(ticket)


def _check_journal(journal: Reservations, network: Network, totals: Capacity, holder: _Holder) -> None:
    """The journal holds exactly the held tickets, and no DC's pool is booked past its total."""
    held = journal.held()
    assert sorted(r.ticket for r in held) == sorted(holder.groups)
    for dc, total in totals.items():
        mine = Resources.total(r.resources for r in held if r.data_center == dc)
        left = capacity_of(total.resources(), mine)
        assert min(left.free.values(), default=0) >= 0 and left.free_cpus >= -1e-9, (dc, left)


def test_1000_concurrent_reservations_never_over_commit_and_none_is_lost(
        ray_driver: LocalNetwork, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    network = ray_driver.profile.network
    holder = _Holder({n.node_id: str(n.dc) for n in DriverReader().nodes() if n.dc})
    base = _settled_usage()  # whatever earlier tests still hold is not ours
    live0, totals0 = capacity_and_totals(network, DriverReader())
    base_used = {dc: totals0[dc].resources().minus(live0[dc].resources()) for dc in totals0}
    assert sorted(live0) == sorted(ray_driver.profile.dc_ids)
    free = sum(sum(c.free.values()) for c in live0.values())
    kinds = make_specs(REQUESTS)
    asked = sum(s.accelerator.count for _, s in kinds)
    assert asked > free, "the load must ask for more accelerators than are free"
    journal = Reservations(tmp_path / "reservations.json")
    t_start = time.perf_counter()
    with Submitters(journal.path, network, processes=PROCESSES, threads=THREADS) as subs:
        try:
            live, totals = _live(network, base_used)
            attempts, elapsed = subs.attempt([s for _, s in kinds], live, totals)

            # Every request answered exactly once, from more than one process.
            assert [a.spec for a in attempts] == [s for _, s in kinds]
            counts = Counter(a.outcome for a in attempts)
            assert counts[Outcome.PLACED] and counts[Outcome.WAITING] and counts[Outcome.REFUSED]
            assert len({a.pid for a in attempts}) == PROCESSES
            for (kind, _), a in zip(kinds, attempts, strict=True):
                assert (a.outcome is Outcome.REFUSED) == (kind in IMPOSSIBLE), (kind, a.outcome)
                if a.outcome is Outcome.PLACED:
                    assert a.placement is not None and a.placement.within_tier and a.ticket
                else:
                    assert a.placement is None and a.ticket is None and a.rejected, a
                    assert {r.data_center for r in a.rejected} == set(network.dc_ids), "a reason for every DC"
            placed = [a for a in attempts if a.outcome is Outcome.PLACED]
            assert len({a.ticket for a in placed}) == len(placed), "a ticket given twice"

            # Ray holds every placement where the journal put it, and its accounting agrees with the journal.
            holder.hold(placed)
            _check_journal(journal, network, totals, holder)
            _await_accounting(_journal_usage(network, journal.held(), base), base)

            # Release round by round; the waiting requests are placed on a fresh read of live capacity.
            placed_specs = Counter(a.spec.name for a in placed)
            waiting = [a.spec for a in attempts if a.outcome is Outcome.WAITING]
            rounds = 0
            t_drain = time.perf_counter()
            while holder.groups:
                rounds += 1
                assert rounds <= MAX_ROUNDS, f"{len(waiting)} still waiting after {MAX_ROUNDS} rounds"
                for ticket in list(holder.groups):
                    holder.release(ticket)
                    assert journal.release(ticket), ticket
                _await_accounting(_journal_usage(network, journal.held(), base), base)
                live, totals = _live(network, base_used)
                new = subs.attempt(waiting, live, totals)[0] if waiting else []
                assert not [a for a in new if a.outcome is Outcome.REFUSED]
                done = [a for a in new if a.outcome is Outcome.PLACED]
                placed_specs.update(a.spec.name for a in done)
                waiting = [a.spec for a in new if a.outcome is Outcome.WAITING]
                holder.hold(done)
                _check_journal(journal, network, totals, holder)
                _await_accounting(_journal_usage(network, journal.held(), base), base)
            drain_s = time.perf_counter() - t_drain

            assert waiting == [] and journal.held() == ()
            assert set(placed_specs) == {s.name for k, s in kinds if k not in IMPOSSIBLE}
            assert max(placed_specs.values()) == 1, "a request was placed twice"
            _await_accounting({dc: dict.fromkeys(KEYS, 0.0) for dc in base}, base)
        finally:
            holder.release_all()
            _await_dashboard(ray_driver, base)
    with capsys.disabled():
        print(f"\nload: {REQUESTS} reservations on one journal from {PROCESSES} processes x {THREADS} threads "
              f"in {elapsed:.3f} s = {REQUESTS / elapsed:,.0f} decisions/s (placed {counts[Outcome.PLACED]}, "
              f"waiting {counts[Outcome.WAITING]}, refused {counts[Outcome.REFUSED]}; {asked} accelerators asked, "
              f"{free:g} free); drain: {rounds} rounds held in Ray, {drain_s:.1f} s; "
              f"test body {time.perf_counter() - t_start:.1f} s")
