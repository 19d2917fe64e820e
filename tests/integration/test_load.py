"""Load (issues 12 and 14): 1,000 concurrent steps through the admission queue, as real Ray Jobs.

Every step does what the Dagster resource does before its job runs
(:mod:`benchmarks.load_jobs`, with ``WestflowResource``'s own federation, grouped network,
tenants, queue and policy): one read of live capacity and totals through the dashboard, then
``StepTicket.admit`` on one PostgreSQL queue (pgserver on a Unix socket: the store of a
multi-host deployment; SQLite's one writer saturates under this load, see below): the never-fits
check (refused at once), a queued row, and a wait in which, while no controller leads, the step
runs the admission cycle itself on live capacity read through the dashboard (a ``Controller``
built as ``WestflowResource.controller`` builds it). When admitted, the step submits one
:meth:`ray_cluster.dispatch.Dispatcher.submit` of the command
:func:`~ray_cluster.dispatch.entrypoint` builds, with the placement's ``job_options()`` and a
stable submission id. 4 processes x 8 threads start together. The job's command
(:mod:`benchmarks.hold_job`) holds until the test creates its release file, so nothing ends
early. The local network has 40 accelerators; the steps that fit it ask for 875.

What is simulated. Each thread stands for a step process (Dagster's multiprocess executor), so
each has its own controller holder. A step stops waiting once a cycle has decided it
(``admit``'s ``cancelled`` hook, set by its ticket's first ``waiting`` event): a Dagster step
would wait on, but the thread is needed for the next step; its row stays pending and its
process keeps its ticket beating, every 30 s (``LOAD_HEARTBEAT_S``), not the resource's 2 s.
750 live tickets at 2 s (or 10 s) saturate SQLite's one writer here while Ray starts the burst's
jobs (heartbeats waited seconds, cycles lost their lease waiting to write, and a waiting step's
own poll failed with ``database is locked``: 3 of 4 runs); on PostgreSQL at 2 s the 375 writes
a second took so much of the 2 cores that the burst took 250 s and 5 of the burst's Ray jobs
were still PENDING 240 s later. A step ends when the test says so: its process then finishes
its ticket (``StepTicket.finish``). What Ray holds for an
admitted step: its job (the supervisor takes only the pins, see ``RayRequest.job_options``)
and a placement group made by this test for what the step's task takes beyond that (its
CPUs, GPUs, NPUs and memory; ``_bundle``). ``test_an_admitted_step_holds_in_ray_what_the_queue_holds``
checks that a real step (entrypoint plus task) holds no more than its queue row.

Checked: every step admitted, waiting or refused exactly once, refused exactly when it fits no
DC even empty (and then never queued), a reason for every DC otherwise; the queue holds one row
per queued step and no other, ``admitted`` exactly for the admitted steps, each at the DC and
accelerator model of the placement its step got; Ray's job list holds exactly one job per
admitted step (by submission id and by spec, within this run's id prefix: the list persists
across tests) and none for the others; every job reaches RUNNING on a node of its DC and every
placement group becomes ready there; Ray's per-DC use, sampled while the jobs start, never
exceeds its total and, once settled, equals what the queue holds. Then the waiting steps drain
round by round: the admitted steps end, a controller in the test process (as ``westflow
controller`` would be; capacity read from the GCS, the dashboard lagging seconds behind) runs
one cycle, and what it admits is held by placement groups of what each row holds (a second round
of real jobs does not fit the test's budget: ~1 s of CPU per job start on 2 cores). At the end
every row is ``finished``, each admitted once (one ``admitted`` decision, no ``resumed``),
nothing holds, every job SUCCEEDED, and Ray's accounting is back where it started.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from admission.controller import Controller
from admission.database import sqlite_url
from admission.rows import WorkloadRow
from admission.specjson import spec_from_json, spec_to_json
from admission.tickets import admitted_placement
from admission.workqueue import AdmissionQueue
from benchmarks.load_bench import (
    IMPOSSIBLE,
    LOAD_HEARTBEAT_S,
    Attempt,
    Outcome,
    await_final,
    end_all,
    make_specs,
    percentile,
    queue_key,
)
from benchmarks.load_jobs import JobSteps, Production, Step, touch_all, watch_running
from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import JOB_DC, JOB_SPEC, TERMINAL
from ray_cluster.live import DriverReader, capacity_and_totals
from ray_cluster.local import LocalNetwork
from westflow.admission_cycle import default_priority_class
from westflow.capacity import Capacity, Resources, capacity_of
from westflow.inventory import Family, Network
from westflow.placement import Placement

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REQUESTS = 1000
PROCESSES = 4
THREADS = 8
KEYS = ("CPU", "GPU", "NPU")
MAX_ROUNDS = 40  # the mix asks for 875 accelerators of 40: at least 22 rounds
RUNNING_TIMEOUT_S = 600.0  # liveness bound only: 80 job starts on 2 cores took up to 263 s after the burst
Usage = dict[str, dict[str, float]]


def _bundle(p: Placement, *, beside_job: bool) -> dict[str, float]:
    """The placement's task as one placement-group bundle: what a task with ``p.ray.task_options()``
    takes (CPUs, GPUs, NPUs, memory and the DC / rt / model pins). ``beside_job``: only what the
    step's job does not already hold through ``p.ray.job_options()`` (its entrypoint pins), so job
    and group together hold what the queue's row holds: the step's CPUs, accelerators and memory once."""
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


def _queue_usage(network: Network, held: Iterable[WorkloadRow], dcs: Iterable[str]) -> Usage:
    """Per DC: what the queue's holding rows hold, in Ray's units (GPU for CUDA models, NPU for Ascend)."""
    out: Usage = {dc: dict.fromkeys(KEYS, 0.0) for dc in dcs}
    for r in held:
        assert r.data_center is not None
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
            pytest.fail(f"Ray's accounting never matched the queue's:\nRay   {got}\nqueue {want}")
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


def _gcs_capacity(network: Network, base_used: dict[str, Resources]) -> tuple[Capacity, Capacity]:
    """Live capacity and totals from the GCS (the drain's controller); what earlier tests still hold
    (``base_used``, nothing when this file runs alone) is taken off the totals: it is not ours to give."""
    live, totals = capacity_and_totals(network, DriverReader())
    return live, {dc: capacity_of(t.resources(), base_used[dc]) for dc, t in totals.items() if dc in base_used}


def _placement_of(prod: Production, row: WorkloadRow) -> Placement:
    """What an admitted row holds, as a placement: ``place()`` on its DC with only its accelerator model
    (a drained step's group, and ``test_an_admitted_step_holds_in_ray_what_the_queue_holds``)."""
    p = admitted_placement(row, spec_from_json(row.spec_json), prod.network, prod.policy)
    assert not _agrees(p, row), _agrees(p, row)
    return p


def _agrees(p: Placement, row: WorkloadRow | None) -> str:
    """'' if the step's placement holds what its row holds (DC, accelerator model and count), else why not."""
    if row is None or row.state != "admitted":
        return f"{p.spec.name}: its row is {row.state if row else 'missing'}, not admitted"
    count = p.spec.accelerator.count if p.accelerator_model else 0
    got, held = (p.data_center, p.accelerator_model, count), (row.data_center, row.accelerator_model, row.accelerators)
    return "" if got == held else f"{p.spec.name}: the queue holds {held}, the step got a placement on {got}"


class _Holder:
    """Placement groups that hold each admitted step's task resources in Ray until released."""

    def __init__(self, node_dc: dict[str, str]) -> None:
        self.node_dc = node_dc
        self.groups: dict[str, Any] = {}

    def hold(self, admitted: dict[str, Placement], *, beside_job: bool, timeout_s: float = 60.0) -> None:
        """Create a group per admitted step (queue key -> placement) and wait until Ray has reserved
        every one in its DC."""
        import ray
        from ray.util import placement_group_table
        from ray.util.placement_group import placement_group

        if not admitted:
            return
        made = {}
        for key, p in admitted.items():
            assert key not in self.groups, key
            made[key] = placement_group([_bundle(p, beside_job=beside_job)], strategy="STRICT_PACK")
        self.groups.update(made)  # released by release_all() whatever happens next
        ready, pending = ray.wait([pg.ready() for pg in made.values()], num_returns=len(made), timeout=timeout_s)
        assert not pending, (f"{len(pending)} of {len(made)} admissions never fitted in Ray: "
                             "the queue promised capacity Ray does not have")
        for key, p in admitted.items():
            nodes = placement_group_table(made[key])["bundles_to_node_id"]
            assert {self.node_dc[n] for n in nodes.values()} == {p.data_center}, key

    def release_all(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for key in list(self.groups):
            remove_placement_group(self.groups.pop(key))


class _Jobs:
    """This run's Ray jobs: which step each is, checks on Ray's job list, release."""

    def __init__(self, client: Any, prefix: str, release_dir: Path, node_dc: dict[str, str]) -> None:
        self.client, self.prefix, self.release_dir, self.node_dc = client, prefix, release_dir, node_dc
        self.running: dict[str, Attempt] = {}  # submission id -> the step's attempt, until released
        self.ever: dict[str, Attempt] = {}  # every job this run submitted
        self.to_running: list[float] = []  # seconds from the Ray submission to first seen RUNNING
        self.from_admit: list[float] = []  # seconds from the step's StepTicket.admit call to first seen RUNNING

    def mine(self) -> list[Any]:
        return [j for j in self.client.list_jobs() if (j.submission_id or "").startswith(self.prefix + "-")]

    def start(self, steps: list[Step]) -> None:
        """The admitted steps' jobs: every one RUNNING on a node of its DC, Ray's use sampled meanwhile;
        Ray's job list holds exactly one job per admitted step of this run and nothing else."""
        new = {s.submission_id: s for s in steps if s.submission_id}
        assert not new.keys() & self.ever.keys(), "a submission id given twice"
        self.running.update({sid: s.attempt for sid, s in new.items()})
        self.ever.update({sid: s.attempt for sid, s in new.items()})
        watch = watch_running(self.client, list(new), timeout_s=RUNNING_TIMEOUT_S, poll_s=0.5,
                              on_poll=_within_totals, prefix=self.prefix + "-")
        never = {sid: watch.status.get(sid) for sid in new if sid not in watch.running_at}
        assert not never, f"{len(never)} admitted jobs never ran (over-commit: their pins did not fit): {never}"
        self.to_running += [watch.running_at[sid] - s.submitted for sid, s in new.items()]
        self.from_admit += [watch.running_at[sid] - s.attempt.started for sid, s in new.items()]
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
                    f"{j.submission_id} admitted at {a.placement.data_center} ran on node {j.driver_node_id}")

    def release(self, timeout_s: float = 120.0) -> list[str]:
        """End the running jobs; each must succeed. Returns their steps' queue keys."""
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
        return [self.running.pop(sid).key for sid in ids]

    def stop_all(self) -> None:
        """After a failure: end every job of this run, also those a failed burst never reported (released,
        and stopped if it has not ended)."""
        mine = self.mine()
        touch_all(self.release_dir, {*self.ever, *(j.submission_id for j in mine)})
        for j in mine:
            if str(getattr(j.status, "value", j.status)) not in TERMINAL:
                self.client.stop_job(j.submission_id)


def _check_within(queue: AdmissionQueue, totals: Capacity) -> None:
    """No DC's pool is held past its total by the queue's own accounting."""
    held = queue.holding()
    for dc, total in totals.items():
        mine = Resources.total(Resources.of(r.accelerator_model, r.accelerators, r.cpus, r.memory_gb)
                               for r in held if r.data_center == dc)
        left = capacity_of(total.resources(), mine)
        assert min(left.free.values(), default=0) >= 0 and left.free_cpus >= -1e-9, (dc, left)


def _check_answers(network: Network, kinds: list[tuple[str, Any]], attempts: list[Attempt],
                   queue: AdmissionQueue) -> None:
    """Every step answered once, from every process; refused exactly when it fits no DC even empty (and
    never queued); the queue holds a row per queued step, admitted exactly where its step was told."""
    assert [a.spec for a in attempts] == [s for _, s in kinds]
    counts = Counter(a.outcome for a in attempts)
    assert counts[Outcome.ADMITTED] and counts[Outcome.WAITING] and counts[Outcome.REFUSED]
    assert len({a.pid for a in attempts}) == PROCESSES
    assert len({a.key for a in attempts}) == len(attempts), "a queue key given twice"
    rows = {r.key: r for r in queue.rows()}
    assert set(rows) == {a.key for a in attempts if a.outcome is not Outcome.REFUSED}, "rows lost or extra"
    disagree = []
    for (kind, _), a in zip(kinds, attempts, strict=True):
        assert (a.outcome is Outcome.REFUSED) == (kind in IMPOSSIBLE), (kind, a.outcome)
        if a.outcome is Outcome.REFUSED:
            assert {r.data_center for r in a.rejected} == set(network.dc_ids), "a reason for every DC"
        elif a.outcome is Outcome.WAITING:
            assert a.placement is None and rows[a.key].state == "pending", (a.key, rows[a.key].state)
            assert set(network.dc_ids) <= a.reasons.keys(), f"a reason for every DC: {a.reasons}"
        else:
            assert a.placement is not None and a.placement.within_tier
            disagree += [why] if (why := _agrees(a.placement, rows[a.key])) else []
    assert not disagree, (f"{len(disagree)} admitted steps got a placement other than what the queue holds "
                          f"for them (StepTicket.admit):\n" + "\n".join(disagree[:10]))
    assert {k for k, r in rows.items() if r.state == "admitted"} == {
        a.key for a in attempts if a.outcome is Outcome.ADMITTED}, "a row admitted whose step was not told"


def _check_history(queue: AdmissionQueue, keys: Sequence[str]) -> None:
    """Every row finished, admitted exactly once (no resume), queued and finished once; nothing holds."""
    rows = {r.key: r for r in queue.rows()}
    assert sorted(rows) == sorted(keys)
    assert Counter(r.state for r in rows.values()) == Counter({"finished": len(keys)}), queue.counts()
    assert queue.holding() == []
    kinds = Counter((d.key, d.kind) for d in queue.decisions(limit=10**7) if d.kind != "waiting")
    for key in keys:
        got = {k: kinds[(key, k)] for k in ("queued", "admitted", "resumed", "finished")}
        assert got == {"queued": 1, "admitted": 1, "resumed": 0, "finished": 1}, (key, got)


@pytest.mark.timeout(1200)  # a liveness bound: 416-653 s on 2 shared cores, where 80 held jobs' supervisors take most
def test_1000_concurrent_steps_through_the_queue_never_over_commit_and_none_is_lost(
        ray_driver: LocalNetwork, tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_url: str) -> None:
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
    access = ClusterAccess.resolve()  # as the resource resolves it: the fixture exported the network's
    # The queue of many hosts (PostgreSQL, as a multi-host deployment runs it): 750 live tickets beating from
    # 4 processes saturate SQLite's single writer on 2 cores (3 of 4 runs lost a write to 'database is locked').
    url = pg_url
    prod = Production.of(access, tmp_path / "state", admission_url=url)  # migrates the queue before the load
    queue = prod.queue
    release, ends = tmp_path / "release", tmp_path / "ends"
    release.mkdir()
    ends.mkdir()
    prefix = f"wf-load-{secrets.token_hex(4)}"
    jobs = _Jobs(ray_driver.job_client(), prefix, release, node_dc)
    ctl = Controller(queue, tenants=prod.tenants, network=prod.network, policy=prod.policy, holder="load-controller",
                     capacity=lambda: _gcs_capacity(prod.network, base_used), scope=prod.federation.scope)
    t_start = time.perf_counter()
    with JobSteps(access, tmp_path / "state", url, release, ends, prefix=prefix, processes=PROCESSES,
                  threads=THREADS, heartbeat_s=LOAD_HEARTBEAT_S) as js:
        try:
            steps, elapsed = js.run([s for _, s in kinds])
            assert not [s.error for s in steps if s.error], "an admitted step's submission failed"
            attempts = [s.attempt for s in steps]
            _check_answers(prod.network, kinds, attempts, queue)
            counts = Counter(a.outcome for a in attempts)
            admitted = [s for s in steps if s.outcome is Outcome.ADMITTED]
            assert all(s.submission_id for s in admitted) and not [s for s in steps if s.submission_id and
                                                                   s.outcome is not Outcome.ADMITTED]

            # Ray runs every admitted step's job in its DC and holds its task's accelerators there;
            # its accounting agrees with the queue's.
            t_jobs = time.perf_counter()
            jobs.start(admitted)
            burst_running_s = time.perf_counter() - t_jobs
            holder.hold({s.attempt.key: s.attempt.placement for s in admitted if s.attempt.placement},
                        beside_job=True)
            _check_within(queue, totals0)
            _await_accounting(_queue_usage(network, queue.holding(), base), base)

            # Round by round: the admitted steps end, one controller cycle admits waiting steps on a fresh read.
            rounds, t_drain = 0, time.perf_counter()
            while True:
                held = [r.key for r in queue.holding()]
                if jobs.running:
                    assert sorted(jobs.release()) == sorted(held)
                holder.release_all()
                end_all(ends, held)
                await_final(queue, held)
                _await_accounting({dc: dict.fromkeys(KEYS, 0.0) for dc in base}, base)
                if not queue.pending():
                    break
                rounds += 1
                assert rounds <= MAX_ROUNDS, f"{len(queue.pending())} still waiting after {MAX_ROUNDS} rounds"
                report = ctl.cycle()
                assert report.led and report.written and report.admitted, report.line()
                assert not (report.preempting or report.expired or report.abandoned), report.line()
                now = {k: _placement_of(prod, r) for k in report.admitted if (r := queue.get(k)) is not None}
                _check_within(queue, totals0)
                holder.hold(now, beside_job=False)
                _await_accounting(_queue_usage(network, queue.holding(), base), base)
            ctl.release()
            drain_s = time.perf_counter() - t_drain

            _check_history(queue, [a.key for a in attempts if a.outcome is not Outcome.REFUSED])
            final = jobs.mine()
            assert sorted(j.submission_id for j in final) == sorted(jobs.ever), "a job lost or doubled"
            assert {str(getattr(j.status, "value", j.status)) for j in final} == {"SUCCEEDED"}
            _await_accounting({dc: dict.fromkeys(KEYS, 0.0) for dc in base}, base)
        finally:
            jobs.stop_all()
            holder.release_all()
            ctl.release()
            _await_dashboard(ray_driver, base)
    waits = sorted(jobs.to_running)
    decided = [a.decided_s for a in attempts]
    with capsys.disabled():
        print(f"\nload: {REQUESTS} steps (live read, StepTicket.admit on the queue, Ray Job) from {PROCESSES} "
              f"processes x {THREADS} threads in {elapsed:.1f} s = {REQUESTS / elapsed:,.0f} steps/s (admitted "
              f"{counts[Outcome.ADMITTED]}, waiting {counts[Outcome.WAITING]}, refused {counts[Outcome.REFUSED]}; "
              f"{asked} accelerators asked, {free:g} free); admit to decision p50 {percentile(decided, 0.5):.1f} s, "
              f"p99 {percentile(decided, 0.99):.1f} s; burst's jobs all RUNNING {burst_running_s:.1f} s later, "
              f"Ray submission to RUNNING p50 {percentile(waits, 0.5):.1f} s, max {waits[-1]:.1f} s (from the admit "
              f"call p50 {percentile(jobs.from_admit, 0.5):.1f} s, max {max(jobs.from_admit):.1f} s); "
              f"drain: {rounds} controller cycles, {drain_s:.1f} s; test body {time.perf_counter() - t_start:.1f} s")


class HeldTwice(AssertionError):
    """A DC's admitted steps would hold more in Ray than it has, though the queue says they fit."""


def _job_and_task(p: Placement) -> dict[str, float]:
    """CPUs, GPUs and NPUs an admitted step holds in Ray while it runs: its job's entrypoint
    (``job_options()``) plus the task its driver starts (``task_options()``, as jobs/entrypoint.py does)."""
    job, task = p.ray.job_options(), p.ray.task_options()
    out = {"CPU": float(job["entrypoint_num_cpus"]) + float(task["num_cpus"]),
           "GPU": float(task.get("num_gpus") or 0), "NPU": float(task["resources"].get("NPU", 0))}
    out["GPU"] += float(job["entrypoint_resources"].get("GPU", 0))
    out["NPU"] += float(job["entrypoint_resources"].get("NPU", 0))
    return out


def test_an_admitted_step_holds_in_ray_what_the_queue_holds(ray_driver: LocalNetwork, tmp_path: Path) -> None:
    """One admission cycle over the whole load on live capacity: per DC, the CPUs, GPUs and NPUs its
    admitted steps take in Ray while they run (job entrypoint plus task, of what each row holds as a
    placement) fit what Ray says the DC has."""
    prod = Production.of(ClusterAccess.resolve(), tmp_path / "state", admission_url=sqlite_url(tmp_path / "state"))
    network, queue = prod.network, prod.queue
    _, ray_total = _ray_usage()
    for kind, s in make_specs(REQUESTS):
        if kind not in IMPOSSIBLE:
            queue.submit(queue_key("held", s), tenant=s.tenant, priority_class=default_priority_class(s),
                         priority=s.priority, spec_name=s.name, spec_json=spec_to_json(s), max_wait_s=None,
                         owner="load test", scope=prod.federation.scope)
    report = prod.controller("held-test").cycle()
    assert report.written and report.admitted
    rows = queue.holding()
    placed = {r.key: _placement_of(prod, r) for r in rows}
    booked = _queue_usage(network, rows, ray_total)
    in_ray: Usage = {dc: dict.fromkeys(KEYS, 0.0) for dc in ray_total}
    for p in placed.values():
        for k, v in _job_and_task(p).items():
            in_ray[p.data_center][k] += v
    for dc in ray_total:
        for k in KEYS:  # the queue keeps its own word
            assert booked[dc][k] <= ray_total[dc][k] + 1e-9, (dc, k, booked[dc][k], ray_total[dc][k])
    over = {f"{dc} {k}": (in_ray[dc][k], ray_total[dc][k]) for dc in ray_total for k in KEYS
            if in_ray[dc][k] > ray_total[dc][k] + 1e-9}
    if over:
        raise HeldTwice(f"admitted steps would hold more in Ray than the DC has (held, total): {over}; the queue "
                        f"holds {booked}")
    queue.close()
