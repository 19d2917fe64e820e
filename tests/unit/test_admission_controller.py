"""The admission controller and a step's ticket on a real SQLite queue, with a fixed capacity in place of Ray.

What runs is the product's: :class:`admission.controller.Controller` (lease, reads, the one
``admission_cycle``, the fenced write) and :class:`admission.tickets.StepTicket` (submit, wait,
self-serve cycle, heartbeat, requeue, finish). Only the capacity read is a fixed snapshot; the
live one is in tests/integration/test_admission_live.py.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from admission.controller import Controller
from admission.rows import CycleWrite
from admission.specjson import spec_from_json, spec_to_json
from admission.tickets import QueueTimeout, StepTicket
from admission.workqueue import AdmissionQueue
from tests.builders import make_spec
from westflow.capacity import Capacity, Resources, capacity_of
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import ConfigError, InfeasibleError
from westflow.inventory import Network
from westflow.placement import get_policy
from westflow.spec import WorkloadSpec
from westflow.tenants import Tenants, load_tenants

SPAWN = mp.get_context("spawn")
BOUND_S = 60.0


def _network() -> Network:
    return load_network()


def _tenants(network: Network) -> Tenants:
    return load_tenants(CONFIG_DIR, models={p.model for dc in network.data_centers for p in dc.pools})


# The local profile's sizes (configs/local.yaml), not the national inventory's thousands: quotas bind.
SIZES = {"zhongwei": ("H20", 8), "zhangjiakou": ("A800", 8)}


def _capacity(network: Network, dcs: tuple[str, ...]) -> Capacity:
    return {dc: capacity_of(Resources({SIZES[dc][0]: SIZES[dc][1]}, 16, 128), Resources()) for dc in dcs}


def _controller(queue: AdmissionQueue, network: Network, dcs: tuple[str, ...], *, holder: str = "ctl-a",
                ttl_s: float = 5.0, clock: Callable[[], float] = time.time,
                before_commit: Callable[[CycleWrite], None] | None = None) -> Controller:
    cap = _capacity(network, dcs)
    return Controller(queue, tenants=_tenants(network), network=network, policy=get_policy("westflow"),
                      capacity=lambda: (cap, cap), holder=holder, ttl_s=ttl_s, clock=clock,
                      before_commit=before_commit)


def _submit(queue: AdmissionQueue, key: str, spec: WorkloadSpec, pclass: str = "production",
            max_wait_s: float | None = 3600.0) -> None:
    queue.submit(key, tenant=spec.tenant, priority_class=pclass, priority=spec.priority, spec_name=spec.name,
                 spec_json=spec_to_json(spec), max_wait_s=max_wait_s, owner="test")


ZW = ("zhongwei",)  # H20 x (inventory count) CUDA only, in the west


def _h20(network: Network) -> int:
    return SIZES["zhongwei"][1]


def test_a_spec_survives_the_queue_unchanged() -> None:
    spec = make_spec(name="rt", tier="realtime", origin="shanghai", accelerator="cuda:2", max_wait="30m",
                     priority_class="realtime",
                     inputs=[{"name": "feats", "region": "west", "size_bytes": 10}])
    assert spec_from_json(spec_to_json(spec)) == spec


def test_the_controller_admits_what_fits_and_the_rest_waits_with_reasons(tmp_path: Path) -> None:
    net = _network()
    n = _h20(net)
    q = AdmissionQueue.local(tmp_path)
    for i in range(3):
        _submit(q, f"w{i}", make_spec(name=f"w{i}", accelerator=f"H20:{n // 2}", cpus=1, memory_gb=1))
    report = _controller(q, net, ZW).cycle()
    assert report.led and report.written and sorted(report.admitted) == ["w0", "w1"]
    rows = {r.key: r for r in q.rows()}
    assert rows["w0"].state == rows["w1"].state == "admitted" and rows["w0"].data_center == "zhongwei"
    assert rows["w2"].state == "pending"
    assert "capacity" in json.loads(rows["w2"].reasons or "{}")["zhongwei"].lower()
    q.finish("w0")
    assert _controller(q, net, ZW).cycle().admitted == ("w2",)  # what w0 held is free again


def test_one_controller_leads_and_a_fenced_write_writes_nothing(tmp_path: Path) -> None:
    net = _network()
    q = AdmissionQueue.local(tmp_path)
    _submit(q, "w", make_spec(name="w", accelerator="H20:1", cpus=1, memory_gb=1))
    now = [1_000.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    stale: list[CycleWrite] = []

    def slow(write: CycleWrite) -> None:  # while A decides, its lease runs out and B takes over
        stale.append(write)
        now[0] += 10
        assert b.cycle().led

    a = _controller(q, net, ZW, holder="a", ttl_s=5, clock=clock, before_commit=slow)
    b = _controller(q, net, ZW, holder="b", ttl_s=5, clock=clock)
    report = a.cycle()
    assert report.led and not report.written and stale[0].admitted  # A decided, but wrote nothing
    row = q.get("w")
    assert row is not None and row.state == "admitted"
    assert [d.controller for d in q.decisions("w") if d.kind == "admitted"] == ["b"]  # admitted once, by B


def test_a_silent_owner_is_abandoned_and_frees_what_it_held(tmp_path: Path) -> None:
    net = _network()
    n = _h20(net)
    now = [1_000.0]
    q = AdmissionQueue(f"sqlite:///{tmp_path / 'q.db'}", clock=lambda: now[0])
    _submit(q, "gone", make_spec(name="gone", accelerator=f"H20:{n}", cpus=1, memory_gb=1))
    ctl = _controller(q, net, ZW, clock=lambda: now[0])
    assert ctl.cycle().admitted == ("gone",)
    _submit(q, "next", make_spec(name="next", accelerator=f"H20:{n}", cpus=1, memory_gb=1))
    now[0] += 30
    q.heartbeat("next")
    assert ctl.cycle().admitted == ()
    now[0] += 40  # "gone" has not beaten for 70 s (stale after 60); "next" for 40
    report = ctl.cycle()  # in the same cycle what "gone" held is free for "next"
    assert report.abandoned == ("gone",) and report.admitted == ("next",)
    gone = q.get("gone")
    assert gone is not None and gone.state == "abandoned"


def test_work_past_its_max_wait_expires_with_every_dcs_last_reason(tmp_path: Path) -> None:
    net = _network()
    n = _h20(net)
    q = AdmissionQueue.local(tmp_path)
    _submit(q, "big", make_spec(name="big", accelerator=f"H20:{n}", cpus=1, memory_gb=1))
    _submit(q, "late", make_spec(name="late", accelerator="H20:1", cpus=1, memory_gb=1), max_wait_s=0.5)
    ctl = _controller(q, net, ZW)
    assert ctl.cycle().admitted == ("big",)
    deadline = time.monotonic() + BOUND_S
    while (row := q.get("late")) is not None and row.state == "pending":
        assert time.monotonic() < deadline
        ctl.cycle()
        time.sleep(0.2)
    assert row is not None and row.state == "expired"
    assert "zhongwei" in (row.detail or "")


def test_a_ticket_runs_the_cycle_itself_when_no_controller_leads(tmp_path: Path) -> None:
    net = _network()
    q = AdmissionQueue.local(tmp_path)
    ticket = StepTicket(q, "step-1", controller=_controller(q, net, ZW, holder="step"), poll_s=0.05)
    events: list[str] = []
    ticket._on_event = lambda kind, text: events.append(kind)
    cap = _capacity(net, ZW)
    p = ticket.admit(make_spec(name="s", accelerator="H20:2", cpus=1, memory_gb=1), network=net,
                     policy=get_policy("westflow"), totals=cap, tenants=_tenants(net), owner="test")
    assert p.data_center == "zhongwei" and p.accelerator_model == "H20"
    assert events[:2] == ["queued", "admitted"]
    ticket.finish()
    row = q.get("step-1")
    assert row is not None and row.state == "finished"


def test_a_ticket_fails_at_once_on_what_could_never_fit_and_on_an_unknown_tenant(tmp_path: Path) -> None:
    net = _network()
    q = AdmissionQueue.local(tmp_path)
    cap = _capacity(net, ZW)
    ticket = StepTicket(q, "never", controller=_controller(q, net, ZW), poll_s=0.05)
    with pytest.raises(InfeasibleError):  # Ascend is not at zhongwei: waiting would never help
        ticket.admit(make_spec(name="x", accelerator="cann:1"), network=net, policy=get_policy("westflow"),
                     totals=cap, tenants=_tenants(net), owner="test")
    with pytest.raises(ConfigError, match="nobody"):
        ticket.admit(make_spec(name="x", tenant="nobody", accelerator="H20:1"), network=net,
                     policy=get_policy("westflow"), totals=cap, tenants=_tenants(net), owner="test")
    with pytest.raises(ConfigError, match="priority"):  # retail-ai may not use realtime
        ticket.admit(make_spec(name="x", tenant="retail-ai", accelerator="H20:1", priority_class="realtime"),
                     network=net, policy=get_policy("westflow"), totals=cap, tenants=_tenants(net), owner="test")
    assert q.get("never") is None  # nothing was queued


def test_a_ticket_not_admitted_within_max_wait_says_why(tmp_path: Path) -> None:
    net = _network()
    n = _h20(net)
    q = AdmissionQueue.local(tmp_path)
    _submit(q, "hog", make_spec(name="hog", accelerator=f"H20:{n}", cpus=1, memory_gb=1))
    ctl = _controller(q, net, ZW)
    ctl.cycle()
    ctl.release()
    ticket = StepTicket(q, "late", controller=_controller(q, net, ZW), poll_s=0.05)
    with pytest.raises(QueueTimeout) as exc:
        ticket.admit(make_spec(name="late", accelerator="H20:1", cpus=1, memory_gb=1, max_wait=1), network=net,
                     policy=get_policy("westflow"), totals=_capacity(net, ZW), tenants=_tenants(net), owner="t")
    assert exc.value.state == "expired" and "zhongwei" in exc.value.reasons


def test_realtime_work_preempts_best_effort_and_the_victim_resumes_after_it(tmp_path: Path) -> None:
    """The whole protocol on one DC: admit the batch, preempt it for realtime, requeue, admit realtime, resume."""
    net = _network()
    dc = "zhangjiakou"
    a800 = SIZES[dc][1]
    q = AdmissionQueue.local(tmp_path)
    ctl = _controller(q, net, (dc,))
    train = StepTicket(q, "train", heartbeat_s=0.05)
    train.submit(make_spec(name="train", accelerator=f"A800:{a800}", cpus=1, memory_gb=1),
                 priority_class="best-effort", max_wait_s=3600, owner="test")
    assert ctl.cycle().admitted == ("train",)
    rt = make_spec(name="rt", tier="realtime", origin="beijing", accelerator=f"A800:{a800}", cpus=1, memory_gb=1)
    _submit(q, "rt", rt, "realtime")
    report = ctl.cycle()
    assert report.preempting == ("train",) and report.admitted == ()
    assert train.preempted.wait(BOUND_S) and train.preempted_by == "rt"
    assert ctl.cycle().preempting == ()  # not twice while the victim winds down
    train.requeue(reason="preempted by rt")  # its job stopped: back to the queue, age kept
    assert ctl.cycle().admitted == ("rt",)
    row = q.get("train")
    assert row is not None and row.state == "pending" and row.preemptions == 1
    q.finish("rt")
    assert ctl.cycle().admitted == ("train",)
    kinds = [d.kind for d in q.decisions("train")]
    assert kinds[:3] == ["queued", "admitted", "preempting"] and "resumed" in kinds
    train.finish()


# -- crash safety: SIGKILL of the leading controller in the middle of a cycle ----------------------------------


def _crashing_controller(url: str, dcs: tuple[str, ...], barrier: str) -> None:
    """A controller process that signals at its commit point and waits there (the test kills it)."""
    net = _network()
    q = AdmissionQueue(url)

    def pause(write: CycleWrite) -> None:
        tmp = Path(barrier + ".tmp")  # whole or absent: the test reads it the moment it exists
        tmp.write_text(json.dumps(sorted(a.key for a in write.admitted)))
        tmp.replace(barrier)
        time.sleep(BOUND_S)

    _controller(q, net, dcs, holder=f"doomed-{os.getpid()}", ttl_s=1.0, before_commit=pause).cycle()


def crash_trial(url: str, tmp_path: Path, trial: int) -> None:
    """One trial: 12 steps for 8 H20; the leader dies at its commit; the next admits each once, none over."""
    net = _network()
    n = _h20(net)
    q = AdmissionQueue(url)
    keys = [f"t{trial}-{i}" for i in range(12)]
    for k in keys:
        _submit(q, k, make_spec(name=k, accelerator="H20:1", cpus=0.1, memory_gb=0.1))
    barrier = tmp_path / f"barrier-{trial}"
    proc = SPAWN.Process(target=_crashing_controller, args=(url, ZW, str(barrier)))
    proc.start()
    deadline = time.monotonic() + BOUND_S
    while not barrier.exists():
        assert proc.is_alive() and time.monotonic() < deadline, "the controller never reached its commit"
        time.sleep(0.02)
    assert len(json.loads(barrier.read_text())) == min(n, 12)  # it had decided
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(BOUND_S)
    assert all(r.state == "pending" for r in q.rows() if r.key in keys)  # nothing of its cycle was written
    successor = _controller(q, net, ZW, holder="successor", ttl_s=1.0)
    while not successor.cycle().led:  # the dead leader's lease runs out (1 s)
        assert time.monotonic() < deadline, "no takeover"
        time.sleep(0.1)
    for _ in range(3):
        successor.cycle()
    rows = [r for r in q.rows() if r.key in keys]
    admitted = [r for r in rows if r.state == "admitted"]
    assert len(admitted) == min(n, 12) and len(rows) == 12  # none lost
    assert sum(r.accelerators for r in admitted) <= n  # none over capacity
    for k in keys:
        assert [d.kind for d in q.decisions(k)].count("admitted") <= 1  # none admitted twice
        q.finish(k)


@pytest.mark.parametrize("trial", range(10))
def test_killing_the_leader_mid_cycle_loses_nothing_and_admits_nothing_twice(tmp_path: Path, trial: int) -> None:
    crash_trial(f"sqlite:///{tmp_path / 'q.db'}", tmp_path, trial)


def test_two_federations_sharing_one_database_never_admit_each_others_work(tmp_path: Path) -> None:
    """Each controller reads only its own clusters' capacity: it must admit only its own scope's steps."""
    net = _network()
    q = AdmissionQueue.local(tmp_path)
    spec = make_spec(name="s", accelerator="H20:1", cpus=1, memory_gb=1)
    for key, scope in (("east-step", "fed-east"), ("west-step", "fed-west")):
        q.submit(key, tenant="default", priority_class="production", priority=0, spec_name="s",
                 spec_json=spec_to_json(spec), max_wait_s=60, owner="t", scope=scope)
    cap = _capacity(net, ZW)
    east = Controller(q, tenants=_tenants(net), network=net, policy=get_policy("westflow"),
                      capacity=lambda: (cap, cap), holder="east", scope="fed-east")
    west = Controller(q, tenants=_tenants(net), network=net, policy=get_policy("westflow"),
                      capacity=lambda: (cap, cap), holder="west", scope="fed-west")
    assert east.cycle().admitted == ("east-step",)
    assert west.cycle().admitted == ("west-step",)  # each leads its own scope's lease at the same time
    assert east.leader.current() is not None and west.leader.current() is not None


def test_a_portable_step_runs_on_the_pool_the_cycle_charged_not_the_dcs_favourite(tmp_path: Path) -> None:
    # helinger has H800 and Ascend910B; on an empty DC the policy prefers the cheaper Ascend pool. With
    # Ascend full, the cycle admits the step on H800: the ticket's placement must be H800 too (the CI's
    # load test caught steps told Ascend while the queue charged H800).
    net = _network()
    policy = get_policy("westflow")
    spec = make_spec(name="portable", accelerator="any:1", cpus=1, memory_gb=1)
    favourite = policy.place(spec, net, {"helinger": capacity_of(
        Resources({"H800": 8, "Ascend910B": 8}, 16, 128), Resources())})
    other = ({"H800", "Ascend910B"} - {favourite.accelerator_model}).pop()
    live = {"helinger": capacity_of(Resources({"H800": 8, "Ascend910B": 8}, 16, 128),
                                    Resources({str(favourite.accelerator_model): 8}))}
    totals = {"helinger": capacity_of(Resources({"H800": 8, "Ascend910B": 8}, 16, 128), Resources())}
    q = AdmissionQueue.local(tmp_path)
    ctl = Controller(q, tenants=_tenants(net), network=net, policy=policy, capacity=lambda: (live, totals),
                     holder="step")
    ticket = StepTicket(q, "portable-1", controller=ctl, poll_s=0.05)
    p = ticket.admit(spec, network=net, policy=policy, totals=totals, tenants=_tenants(net), owner="test")
    row = q.get("portable-1")
    assert row is not None and row.state == "admitted"
    assert (row.data_center, row.accelerator_model) == ("helinger", other)
    assert (p.data_center, p.accelerator_model) == ("helinger", other)
    ticket.finish()
