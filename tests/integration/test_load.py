"""Load (issue 12): 1,000 concurrent steps through the production path, as real Ray Jobs.

Every step does what the Dagster resource does before its job runs
(:mod:`benchmarks.load_jobs`): one read of live capacity and totals through the
dashboard, one :meth:`~ray_cluster.reservations.Reservations.reserve` on one
journal, and, when placed, one :meth:`ray_cluster.dispatch.Dispatcher.submit`
of the command :func:`~ray_cluster.dispatch.entrypoint` builds, with the
placement's ``job_options()`` (entrypoint CPUs and pins) and a stable submission
id per step. 4 processes x 8 threads start together. The job's command
(:mod:`benchmarks.hold_job`) holds until the test creates its release file, so
nothing ends early. The local network has 40 accelerators; the steps ask for
far more.

What Ray holds for a placed step here: its job (Ray's job supervisor takes the
entrypoint resources: only the pins, see ``RayRequest.job_options``) and a
placement group made by this test for what the step's task takes beyond that
(its CPUs, GPUs, NPUs and memory; ``_bundle``). A job driver per step that
started the task itself would cost a Ray driver and worker each. Together they
hold exactly what the journal books: the step's CPUs, accelerators and memory,
once. ``test_a_placed_step_holds_in_ray_what_the_journal_books`` checks that a
real step (entrypoint plus task) holds no more: until this session a step's
job also held its entrypoint CPU and an Ascend step's NPUs, booking it twice.

Checked: every step placed, waiting or refused exactly once; Ray's job list
holds exactly one job per placed step (by submission id and by spec, within
this run's id prefix: the list persists across tests) and none for the others;
every job reaches RUNNING on a node of its DC (a job whose pins did not fit
would stay PENDING) and every placement group becomes ready there; Ray's
per-DC use, sampled while the jobs start, never exceeds its total and, once
settled, equals the journal's. Then the waiting steps drain round by round:
the running work is released, its reservations dropped, the waiting steps
placed again. Only the burst (:data:`JOB_ROUNDS`) goes through the whole
production path as real Ray Jobs: its 80 jobs take ~110 s to all reach RUNNING
on this 2-core machine (about a second of CPU each to start Ray's job
supervisor), after a ~40 s burst, so even one more round of jobs would not fit
the test's 4-minute budget. The drain rounds take the cheap path of issue 5
(reservation on a fresh GCS read, each placement held by a placement group of
its full task options). At the end every reservation is released, every job
SUCCEEDED, and Ray's accounting is back where it started.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.load_bench import IMPOSSIBLE, Attempt, Outcome, Submitters, make_specs
from benchmarks.load_jobs import JobSteps, Step, touch_all, watch_running
from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import JOB_DC, JOB_SPEC, TERMINAL
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
JOB_ROUNDS = 1  # the burst as real Ray Jobs (~150 s here); the drain rounds as placement groups
MAX_ROUNDS = 60  # the mix drains in about 12 rounds
RUNNING_TIMEOUT_S = 240.0  # liveness bound only: ~1 s of CPU per job start, 80 jobs, 2 cores
Usage = dict[str, dict[str, float]]


def _bundle(p: Placement, *, beside_job: bool) -> dict[str, float]:
    """The placement's task as one placement-group bundle: what a task with ``p.ray.task_options()``
    takes (CPUs, GPUs, NPUs, memory and the DC / rt / model pins). ``beside_job``: only what the
    step's job does not already hold through ``p.ray.job_options()`` (its entrypoint CPUs, and an
    Ascend step's NPUs, which sit in its entrypoint resources), so job and group together hold what
    the journal books: the step's CPUs, accelerators and memory once."""
    opts = p.ray.task_options()
    want = {**{k: float(v) for k, v in opts["resources"].items()}, "CPU": float(opts["num_cpus"]),
            "GPU": float(opts.get("num_gpus") or 0), "memory": float(opts.get("memory") or 0)}
    held: dict[str, float] = {}
    if beside_job:
        job = p.ray.job_options()
        held = {k: float(v) for k, v in job["entrypoint_resources"].items() if k in ("NPU", "GPU")}
        held["CPU"] = float(job["entrypoint_num_cpus"])
    pins = {k for k in opts["resources"] if k not in ("NPU", "GPU")}
    bundle = {k: v if k in pins else v - held.get(k, 0.0) for k, v in want.items()}
    return {k: v for k, v in bundle.items() if v > 0}


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


def _within_totals() -> None:
    """One sample of Ray's accounting: no DC uses more than it has."""
    used, total = _ray_usage()
    for dc in used:
        for k in KEYS:
            assert used[dc][k] <= total[dc][k] + 1e-9, f"{dc} over-committed on {k}: {used[dc][k]} > {total[dc][k]}"


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


def _await_accounting(want: Usage, base: Usage, timeout_s: float = 60.0) -> None:
    """Wait until Ray's usage (above ``base``) equals ``want`` in every DC; used <= total at every read."""
    deadline = time.monotonic() + timeout_s
    while True:
        _within_totals()
        got = _delta(_ray_usage()[0], base)
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
    """Wait until the dashboard (what a step's live read sees; it lags the GCS) shows ``want``."""
    deadline = time.monotonic() + timeout_s
    while _ray_usage(net.reader())[0] != want:
        if time.monotonic() > deadline:
            pytest.fail(f"the dashboard never showed the load released: {_ray_usage(net.reader())[0]}")
        time.sleep(0.25)


def _live(network: Network, base_used: dict[str, Resources]) -> tuple[Capacity, Capacity]:
    """Live capacity and totals from the GCS (the cheap rounds); what earlier tests still hold
    (``base_used``, nothing when this file runs alone) is taken off the totals: it is not ours to give."""
    live, totals = capacity_and_totals(network, DriverReader())
    return live, {dc: capacity_of(t.resources(), base_used[dc]) for dc, t in totals.items() if dc in base_used}


class _Holder:
    """Placement groups that hold each placed step's task resources in Ray until released."""

    def __init__(self, node_dc: dict[str, str]) -> None:
        self.node_dc = node_dc
        self.groups: dict[str, Any] = {}

    def hold(self, placed: list[Attempt], *, beside_job: bool, timeout_s: float = 60.0) -> None:
        """Create a group per placement and wait until Ray has reserved every one in its DC."""
        import ray
        from ray.util import placement_group_table
        from ray.util.placement_group import placement_group

        if not placed:
            return
        made = {}
        for a in placed:
            assert a.placement is not None and a.ticket and a.ticket not in self.groups, a
            made[a.ticket] = placement_group([_bundle(a.placement, beside_job=beside_job)], strategy="STRICT_PACK")
        self.groups.update(made)  # released by release_all() whatever happens next
        ready, pending = ray.wait([pg.ready() for pg in made.values()], num_returns=len(made), timeout=timeout_s)
        assert not pending, (f"{len(pending)} of {len(made)} placements never fitted in Ray: "
                             "the journal promised capacity Ray does not have")
        for a in placed:
            assert a.placement is not None and a.ticket
            nodes = placement_group_table(made[a.ticket])["bundles_to_node_id"]
            assert {self.node_dc[n] for n in nodes.values()} == {a.placement.data_center}, a.ticket

    def release(self, ticket: str) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.groups.pop(ticket))

    def release_all(self) -> None:
        for ticket in list(self.groups):
            self.release(ticket)


class _Jobs:
    """This run's Ray jobs: which step each is, checks on Ray's job list, release."""

    def __init__(self, client: Any, prefix: str, release_dir: Path, node_dc: dict[str, str]) -> None:
        self.client, self.prefix, self.release_dir, self.node_dc = client, prefix, release_dir, node_dc
        self.running: dict[str, Attempt] = {}  # submission id -> the step's attempt, until released
        self.ever: dict[str, Attempt] = {}  # every job this run submitted
        self.to_running: list[float] = []  # seconds from submission to first seen RUNNING

    def mine(self) -> list[Any]:
        return [j for j in self.client.list_jobs() if (j.submission_id or "").startswith(self.prefix + "-")]

    def start(self, steps: list[Step]) -> None:
        """The placed steps' jobs: every one RUNNING on a node of its DC, Ray's use sampled meanwhile;
        Ray's job list holds exactly one job per placed step of this run and nothing else."""
        new = {s.submission_id: s for s in steps if s.submission_id}
        assert not new.keys() & self.ever.keys(), "a submission id given twice"
        self.running.update({sid: s.attempt for sid, s in new.items()})
        self.ever.update({sid: s.attempt for sid, s in new.items()})
        watch = watch_running(self.client, list(new), timeout_s=RUNNING_TIMEOUT_S, poll_s=0.5,
                              on_poll=_within_totals, prefix=self.prefix + "-")
        never = {sid: watch.status.get(sid) for sid in new if sid not in watch.running_at}
        assert not never, f"{len(never)} placed jobs never ran (over-commit: their pins did not fit): {never}"
        self.to_running += [watch.running_at[sid] - s.submitted for sid, s in new.items()]
        jobs = self.mine()
        assert Counter(j.submission_id for j in jobs) == Counter(list(self.ever)), "jobs lost or doubled in Ray's list"
        assert Counter(j.metadata.get(JOB_SPEC) for j in jobs) == Counter(a.spec.name for a in self.ever.values())
        for j in jobs:
            if j.submission_id in new:
                a = self.ever[j.submission_id]
                assert a.placement is not None
                assert str(getattr(j.status, "value", j.status)) == "RUNNING", (j.submission_id, j.status)
                assert j.metadata.get(JOB_DC) == a.placement.data_center
                assert self.node_dc.get(j.driver_node_id or "") == a.placement.data_center, (
                    f"{j.submission_id} placed in {a.placement.data_center} ran on node {j.driver_node_id}")

    def release(self, timeout_s: float = 120.0) -> list[str]:
        """End the running jobs; each must succeed. Returns their reservation tickets."""
        ids = list(self.running)
        touch_all(self.release_dir, ids)
        deadline = time.monotonic() + timeout_s
        while True:
            status = {j.submission_id: str(getattr(j.status, "value", j.status)) for j in self.mine()}
            if all(status.get(sid) in TERMINAL for sid in ids):
                break
            assert time.monotonic() < deadline, f"released jobs did not end: {Counter(status[s] for s in ids)}"
            time.sleep(0.5)
        assert Counter(status[sid] for sid in ids) == Counter({"SUCCEEDED": len(ids)})
        tickets = [a.ticket for a in (self.running.pop(sid) for sid in ids)]
        assert all(tickets)
        return [t for t in tickets if t]

    def stop_all(self) -> None:
        """After a failure: end every job of this run (released, and stopped if it has not run yet)."""
        touch_all(self.release_dir, self.ever)
        for j in self.mine():
            if str(getattr(j.status, "value", j.status)) not in TERMINAL:
                self.client.stop_job(j.submission_id)


def _check_journal(journal: Reservations, totals: Capacity, held: Iterable[str]) -> None:
    """The journal holds exactly the held tickets, and no DC's pool is booked past its total."""
    got = journal.held()
    assert sorted(r.ticket for r in got) == sorted(held)
    for dc, total in totals.items():
        mine = Resources.total(r.resources for r in got if r.data_center == dc)
        left = capacity_of(total.resources(), mine)
        assert min(left.free.values(), default=0) >= 0 and left.free_cpus >= -1e-9, (dc, left)


def _check_answers(network: Network, kinds: list[tuple[str, Any]], attempts: list[Attempt]) -> None:
    """Every step answered once, from every process; refused exactly when it fits no DC even empty."""
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


def test_1000_concurrent_steps_through_the_jobs_api_never_over_commit_and_none_is_lost(
        ray_driver: LocalNetwork, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    network = ray_driver.profile.network
    node_dc = {n.node_id: str(n.dc) for n in DriverReader().nodes() if n.dc}
    holder = _Holder(node_dc)
    base = _settled_usage()  # whatever earlier tests still hold is not ours
    live0, totals0 = capacity_and_totals(network, DriverReader())
    base_used = {dc: totals0[dc].resources().minus(live0[dc].resources()) for dc in totals0}
    assert sorted(live0) == sorted(ray_driver.profile.dc_ids)
    _await_dashboard(ray_driver, base)  # the steps' live reads start from what Ray holds now
    free = sum(sum(c.free.values()) for c in live0.values())
    kinds = make_specs(REQUESTS)
    asked = sum(s.accelerator.count for _, s in kinds)
    assert asked > free, "the load must ask for more accelerators than are free"
    journal = Reservations(tmp_path / "reservations.json")
    release = tmp_path / "release"
    release.mkdir()
    prefix = f"wf-load-{secrets.token_hex(4)}"
    jobs = _Jobs(ray_driver.job_client(), prefix, release, node_dc)
    access = ClusterAccess.resolve()  # as the resource resolves it: the fixture exported the network's
    t_start = time.perf_counter()
    with JobSteps(journal.path, network, access, release, prefix=prefix, processes=PROCESSES, threads=THREADS) as js, \
            Submitters(journal.path, network, processes=PROCESSES, threads=THREADS) as subs:
        try:
            steps, elapsed = js.run([s for _, s in kinds])
            attempts = [s.attempt for s in steps]
            _check_answers(network, kinds, attempts)
            assert not [s.error for s in steps if s.error], "a placed step's submission failed"
            counts = Counter(a.outcome for a in attempts)
            placed = [s for s in steps if s.outcome is Outcome.PLACED]
            assert all(s.submission_id for s in placed) and not [s for s in steps if s.submission_id and
                                                                 s.outcome is not Outcome.PLACED]

            # Ray runs every placed step's job in its DC and holds its task's accelerators there;
            # its accounting agrees with the journal.
            t_jobs = time.perf_counter()
            jobs.start(placed)
            burst_running_s = time.perf_counter() - t_jobs
            holder.hold([s.attempt for s in placed], beside_job=True)
            _check_journal(journal, totals0, [s.attempt.ticket or "" for s in placed])
            _await_accounting(_journal_usage(network, journal.held(), base), base)

            # Release round by round; the waiting steps are placed again on a fresh read of live capacity.
            placed_specs = Counter(s.attempt.spec.name for s in placed)
            waiting = [a.spec for a in attempts if a.outcome is Outcome.WAITING]
            rounds, job_rounds = 0, 1
            t_drain = time.perf_counter()
            while holder.groups:
                rounds += 1
                assert rounds <= MAX_ROUNDS, f"{len(waiting)} still waiting after {MAX_ROUNDS} rounds"
                for ticket in jobs.release():
                    holder.release(ticket)
                    assert journal.release(ticket), ticket
                for ticket in list(holder.groups):
                    holder.release(ticket)
                    assert journal.release(ticket), ticket
                _await_accounting(_journal_usage(network, journal.held(), base), base)
                if not waiting:
                    break
                if job_rounds < JOB_ROUNDS:  # the production path again: live read (dashboard), reserve, submit
                    job_rounds += 1
                    _await_dashboard(ray_driver, base)
                    new_steps = js.run(waiting)[0]
                    assert not [s.error for s in new_steps if s.error]
                    new = [s.attempt for s in new_steps]
                    done_steps = [s for s in new_steps if s.outcome is Outcome.PLACED]
                    jobs.start(done_steps)
                    holder.hold([s.attempt for s in done_steps], beside_job=True)
                else:  # the cheap path: reservation on a fresh GCS read, held by a placement group
                    live, totals = _live(network, base_used)
                    new = subs.attempt(waiting, live, totals)[0]
                    holder.hold([a for a in new if a.outcome is Outcome.PLACED], beside_job=False)
                assert not [a for a in new if a.outcome is Outcome.REFUSED]
                done = [a for a in new if a.outcome is Outcome.PLACED]
                placed_specs.update(a.spec.name for a in done)
                waiting = [a.spec for a in new if a.outcome is Outcome.WAITING]
                _check_journal(journal, totals0, holder.groups)
                _await_accounting(_journal_usage(network, journal.held(), base), base)
            drain_s = time.perf_counter() - t_drain

            assert waiting == [] and journal.held() == () and not jobs.running
            assert set(placed_specs) == {s.name for k, s in kinds if k not in IMPOSSIBLE}
            assert max(placed_specs.values()) == 1, "a step was placed twice"
            final = jobs.mine()
            assert sorted(j.submission_id for j in final) == sorted(jobs.ever), "a job lost or doubled"
            assert {str(getattr(j.status, "value", j.status)) for j in final} == {"SUCCEEDED"}
            _await_accounting({dc: dict.fromkeys(KEYS, 0.0) for dc in base}, base)
        finally:
            jobs.stop_all()
            holder.release_all()
            _await_dashboard(ray_driver, base)
    waits = sorted(jobs.to_running)
    with capsys.disabled():
        print(f"\nload: {REQUESTS} steps (live read, reservation, Ray Job) from {PROCESSES} processes x {THREADS} "
              f"threads in {elapsed:.1f} s = {REQUESTS / elapsed:,.0f} steps/s (placed {counts[Outcome.PLACED]}, "
              f"waiting {counts[Outcome.WAITING]}, refused {counts[Outcome.REFUSED]}; {asked} accelerators asked, "
              f"{free:g} free); burst's jobs all RUNNING {burst_running_s:.1f} s later; {len(jobs.ever)} Ray jobs in "
              f"{job_rounds} rounds, submission to RUNNING p50 {waits[len(waits) // 2]:.1f} s, max {waits[-1]:.1f} s; "
              f"drain: {rounds} rounds ({job_rounds - 1} as jobs), {drain_s:.1f} s; "
              f"test body {time.perf_counter() - t_start:.1f} s")


class HeldTwice(AssertionError):
    """A DC's placed steps would hold more in Ray than it has, though the journal says they fit."""


def _job_and_task(p: Placement) -> dict[str, float]:
    """CPUs, GPUs and NPUs a placed step holds in Ray while it runs: its job's entrypoint
    (``job_options()``) plus the task its driver starts (``task_options()``, as jobs/entrypoint.py does)."""
    job, task = p.ray.job_options(), p.ray.task_options()
    out = {"CPU": float(job["entrypoint_num_cpus"]) + float(task["num_cpus"]),
           "GPU": float(task.get("num_gpus") or 0), "NPU": float(task["resources"].get("NPU", 0))}
    out["GPU"] += float(job["entrypoint_resources"].get("GPU", 0))
    out["NPU"] += float(job["entrypoint_resources"].get("NPU", 0))
    return out


def test_a_placed_step_holds_in_ray_what_the_journal_books(ray_driver: LocalNetwork, tmp_path: Path) -> None:
    """A burst reserved on live capacity: per DC, the CPUs, GPUs and NPUs its placed steps take in Ray
    while they run (job entrypoint plus task) fit what Ray says the DC has."""
    network = ray_driver.profile.network
    live, totals = capacity_and_totals(network, DriverReader())
    _, ray_total = _ray_usage()
    journal = Reservations(tmp_path / "reservations.json")
    with Submitters(journal.path, network, processes=0, threads=THREADS) as subs:
        attempts = subs.attempt([s for _, s in make_specs(REQUESTS)], live, totals)[0]
    placed = [a.placement for a in attempts if a.placement is not None]
    assert placed
    booked = _journal_usage(network, journal.held(), ray_total)
    in_ray: Usage = {dc: dict.fromkeys(KEYS, 0.0) for dc in ray_total}
    for p in placed:
        for k, v in _job_and_task(p).items():
            in_ray[p.data_center][k] += v
    for dc in ray_total:
        for k in KEYS:  # the journal keeps its own word
            assert booked[dc][k] <= ray_total[dc][k] + 1e-9, (dc, k, booked[dc][k], ray_total[dc][k])
    over = {f"{dc} {k}": (in_ray[dc][k], ray_total[dc][k]) for dc in ray_total for k in KEYS
            if in_ray[dc][k] > ray_total[dc][k] + 1e-9}
    if over:
        raise HeldTwice(f"placed steps would hold more in Ray than the DC has (held, total): {over}; "
                        f"the journal booked {booked}")
