"""The reservation journal: racing placements across processes never over-commit a data center."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ray_cluster.reservations import JournalError, Reservation, Reservations, available
from tests.builders import make_spec, national
from westflow.capacity import Capacity, DCCapacity
from westflow.errors import ConfigError, InfeasibleError
from westflow.placement import Placement, Reason, get_policy
from westflow.spec import WorkloadSpec

if TYPE_CHECKING:
    pass

# Dagster and the pipelines are imported inside the tests that use them: the worker processes
# below are spawned, and each imports this module.

POLICY = get_policy("westflow")
ANY2 = {"accelerator": "any:2"}


def _caps(free: int = 4, *, cpus: float = 64, memory_gb: float = 512, util: float = 0.0) -> dict[str, DCCapacity]:
    """Every DC of the national inventory with ``free`` of each of its accelerator models."""
    return {d.id: DCCapacity(free={p.model: free for p in d.pools}, free_cpus=cpus, free_memory_gb=memory_gb,
                             utilisation=util) for d in national().data_centers}


def _decide(spec: WorkloadSpec, delay_s: float = 0.0) -> Any:
    def decide(caps: Capacity) -> Placement:
        if delay_s:
            time.sleep(delay_s)  # a slow decision widens the window two unlocked processes would race in
        return POLICY.place(spec, national(), caps)
    return decide


def _slots(caps: Capacity, per: int) -> int:
    return sum(n // per for c in caps.values() for n in c.free.values())


# -- two steps racing for the last accelerators of a DC ---------------------------------------


def test_the_second_of_two_racing_reservations_does_not_take_the_same_last_accelerators(tmp_path: Path) -> None:
    journal = Reservations(tmp_path / "reservations.json")
    live = _caps(2)  # the dashboard's (lagging) view: it does not change between the two decisions
    spec = make_spec(**ANY2)
    t1, p1 = journal.reserve(live, _decide(spec), owner="step-1", totals=live)
    t2, p2 = journal.reserve(live, _decide(spec), owner="step-2", totals=live)
    assert t1 != t2
    assert (p1.data_center, p1.accelerator_model) != (p2.data_center, p2.accelerator_model)
    # without the journal, the same snapshot gives the same answer twice: the race this closes
    assert POLICY.place(spec, national(), live).data_center == p1.data_center


def test_the_last_accelerators_go_once_then_the_request_is_refused_with_reasons(tmp_path: Path) -> None:
    journal = Reservations(tmp_path / "reservations.json")
    live = _caps(0)
    live["zhongwei"] = DCCapacity(free={"H20": 2, "A800": 0}, free_cpus=64, free_memory_gb=512, utilisation=0.9)
    spec = make_spec(accelerator="cuda:2")
    _, p = journal.reserve(live, _decide(spec), owner="first", totals=live)
    assert (p.data_center, p.accelerator_model) == ("zhongwei", "H20")
    with pytest.raises(InfeasibleError) as exc:
        journal.reserve(live, _decide(spec), owner="second", totals=live)
    why = {r.data_center: r for r in exc.value.rejected}["zhongwei"]
    assert why.reason is Reason.CAPACITY and "0 free" in why.detail
    assert [r.owner for r in journal.held()] == ["first"]


def test_removing_the_state_dir_mid_decision_keeps_the_bookings_exclusive(tmp_path: Path) -> None:
    """The state dir is removed while step A decides; step B then books in the recreated dir.

    Before: A wrote its journal over B's, and both held the last 2 H20 GPUs of zhongwei.
    """
    import shutil
    import threading

    state = tmp_path / "state"
    live = _caps(0)
    live["zhongwei"] = DCCapacity(free={"H20": 2, "A800": 0}, free_cpus=64, free_memory_gb=512, utilisation=0.9)
    other = next(d for d in national().data_centers if d.id != "zhongwei" and d.pools[0].family.value == "cuda")
    live[other.id] = DCCapacity(free={other.pools[0].model: 2}, free_cpus=64, free_memory_gb=512, utilisation=0.95)
    spec = make_spec(accelerator="cuda:2")
    b_done = threading.Event()
    calls: list[str] = []

    def b() -> None:
        Reservations(state / "reservations.json").reserve(live, _decide(spec), owner="B", totals=live)
        b_done.set()

    def a_decides(caps: Capacity) -> Placement:
        calls.append("A")
        if len(calls) == 1:  # the fault, at a fixed point: mid-decision, under A's lock
            shutil.rmtree(state)
            threading.Thread(target=b).start()
            assert b_done.wait(30), "B did not book"
        return POLICY.place(spec, national(), caps)

    _, pa = Reservations(state / "reservations.json").reserve(live, a_decides, owner="A", totals=live)
    held = Reservations(state / "reservations.json").held()
    assert sorted(r.owner for r in held) == ["A", "B"]  # neither booking overwrote the other
    booked = [(r.data_center, r.accelerator_model) for r in held]
    assert len(set(booked)) == 2, booked  # never both on the last 2 H20s
    assert calls == ["A", "A"] and (pa.data_center, pa.accelerator_model) in booked


def test_sequential_reservations_fill_every_pool_exactly_once(tmp_path: Path) -> None:
    journal = Reservations(tmp_path / "reservations.json")
    live = _caps(2)
    placed = [journal.reserve(live, _decide(make_spec(**ANY2)), owner=f"s{i}", totals=live)[1]
              for i in range(_slots(live, 2))]
    assert set(Counter((p.data_center, p.accelerator_model) for p in placed).values()) == {1}
    with pytest.raises(InfeasibleError):
        journal.reserve(live, _decide(make_spec(**ANY2)), owner="one too many", totals=live)


# -- real concurrency: several processes, one journal -----------------------------------------


def _worker(path: str, barrier: Any, done: Any, out: Any) -> None:
    """Reserve 'any:2' until nothing fits; stay alive (holding) until the parent has looked."""
    journal = Reservations(path)
    live = _caps(4)
    got = []
    barrier.wait(120)  # start together
    try:
        for _ in range(_slots(live, 2) + 1):  # bounded: an over-committing journal fails fast
            t, p = journal.reserve(live, _decide(make_spec(**ANY2), delay_s=0.002), owner=f"pid {os.getpid()}",
                                   totals=live)
            got.append((t, p.data_center, p.accelerator_model, os.getpid()))
    except InfeasibleError:
        pass
    out.put(got)
    barrier.wait(120)  # everyone has finished reserving
    done.wait(120)  # the parent has read the journal: exit without releasing


def test_processes_racing_on_one_journal_never_over_commit_a_data_center(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    path = str(tmp_path / "reservations.json")
    workers = 4
    barrier, done, out = ctx.Barrier(workers + 1), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, barrier, done, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        barrier.wait(120)  # release them at once
        results = [out.get(timeout=120) for _ in procs]
        barrier.wait(120)
        held = Reservations(path).held()
    finally:
        done.set()
        for p in procs:
            p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    got = [g for r in results for g in r]
    assert sum(1 for r in results if r) >= 2  # more than one process took part in the race
    assert len(got) == len({g[0] for g in got}) == _slots(_caps(4), 2)  # none duplicated, all filled
    per_pool = Counter((dc, model) for _, dc, model, _ in got)
    assert max(per_pool.values()) * 2 <= 4  # no pool over-committed
    assert sorted(r.ticket for r in held) == sorted(g[0] for g in got)  # the journal agrees
    assert {r.pid for r in held} == {g[3] for g in got}
    # the workers exited without releasing: their reservations are stale now
    assert Reservations(path).held() == ()


# -- release, staleness ------------------------------------------------------------------------


def test_release_frees_the_capacity_and_is_idempotent(tmp_path: Path) -> None:
    journal = Reservations(tmp_path / "reservations.json")
    live = _caps(0)
    live["zhongwei"] = DCCapacity(free={"H20": 2, "A800": 0}, free_cpus=64, free_memory_gb=512, utilisation=0.5)
    spec = make_spec(accelerator="cuda:2")
    ticket, _ = journal.reserve(live, _decide(spec), owner="a", totals=live)
    with pytest.raises(InfeasibleError):
        journal.reserve(live, _decide(spec), owner="b", totals=live)
    assert journal.release(ticket) is True
    assert journal.release(ticket) is False  # again: nothing to do, no error
    assert journal.release("r-never") is False
    assert journal.held() == ()
    _, p = journal.reserve(live, _decide(spec), owner="b", totals=live)
    assert p.data_center == "zhongwei"


def test_hold_releases_when_the_block_ends_or_fails(tmp_path: Path) -> None:
    journal = Reservations(tmp_path / "reservations.json")
    live = _caps(2)
    with journal.hold(live, _decide(make_spec(**ANY2)), owner="ctx", totals=live) as (ticket, p):
        assert [(r.ticket, r.data_center, r.accelerators) for r in journal.held()] == [(ticket, p.data_center, 2)]
    assert journal.held() == ()
    with pytest.raises(RuntimeError), journal.hold(live, _decide(make_spec(**ANY2)), owner="ctx", totals=live):
        raise RuntimeError("the step failed")
    assert journal.held() == ()


def _hold_then_exit(path: str, ready: Any, go: Any) -> None:
    live = _caps(0)
    live["zhongwei"] = DCCapacity(free={"H20": 2, "A800": 0}, free_cpus=64, free_memory_gb=512, utilisation=0.5)
    Reservations(path).reserve(live, _decide(make_spec(accelerator="cuda:2")), owner="doomed", totals=live)
    ready.set()
    go.wait(120)  # then exit without releasing, as a killed step would


def test_reservations_of_a_dead_process_are_dropped(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    path = tmp_path / "reservations.json"
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_then_exit, args=(str(path), ready, go))
    child.start()
    live = _caps(0)
    live["zhongwei"] = DCCapacity(free={"H20": 2, "A800": 0}, free_cpus=64, free_memory_gb=512, utilisation=0.5)
    spec = make_spec(accelerator="cuda:2")
    try:
        assert ready.wait(120)
        journal = Reservations(path)
        assert [(r.owner, r.pid) for r in journal.held()] == [("doomed", child.pid)]
        with pytest.raises(InfeasibleError):  # alive: its reservation holds
            journal.reserve(live, _decide(spec), owner="me", totals=live)
    finally:
        go.set()
        child.join(60)
    assert child.exitcode == 0
    assert journal.held() == ()
    ticket, p = journal.reserve(live, _decide(spec), owner="me", totals=live)
    assert p.data_center == "zhongwei"
    assert [r.ticket for r in journal.held()] == [ticket]
    assert "doomed" not in path.read_text()  # the stale entry is gone from the file too


def test_a_recycled_pid_does_not_keep_a_reservation(tmp_path: Path) -> None:
    path = tmp_path / "reservations.json"
    journal = Reservations(path)
    live = _caps(2)
    journal.reserve(live, _decide(make_spec(**ANY2)), owner="me", totals=live)
    (entry,) = journal.held()
    assert entry.pid == os.getpid()
    data = json.loads(path.read_text())
    data["reservations"][0]["pid_start"] = (entry.pid_start or 0) + 1  # same pid, another process
    path.write_text(json.dumps(data))
    assert journal.held() == ()


def test_reservations_older_than_the_ttl_are_dropped(tmp_path: Path) -> None:
    now = [1000.0]
    journal = Reservations(tmp_path / "reservations.json", ttl_s=60, clock=lambda: now[0])
    live = _caps(2)
    journal.reserve(live, _decide(make_spec(**ANY2)), owner="old", totals=live)
    now[0] += 60
    assert [r.owner for r in journal.held()] == ["old"]
    now[0] += 1
    assert journal.held() == ()


# -- nothing recorded on failure; corrupt journals -----------------------------------------------


def test_an_infeasible_decision_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "reservations.json"
    journal = Reservations(path)
    live = _caps(2)
    journal.reserve(live, _decide(make_spec(**ANY2)), owner="first", totals=live)
    before, stat = path.read_bytes(), path.stat()
    impossible = make_spec(tier="realtime", origin="shanghai", accelerator="cann:8")
    with pytest.raises(InfeasibleError):
        journal.reserve(live, _decide(impossible), owner="second", totals=live)
    with pytest.raises(ZeroDivisionError):
        journal.reserve(live, lambda caps: 1 // 0, owner="third", totals=live)  # type: ignore[arg-type, return-value]
    after = path.stat()
    assert path.read_bytes() == before and (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert [r.owner for r in journal.held()] == ["first"]
    assert sorted(os.listdir(tmp_path)) == ["reservations.json", "reservations.json.lock"]  # no temporary left


def _entry_json(**over: Any) -> str:
    row = {"ticket": "r-1", "owner": "o", "pid": os.getpid(), "pid_start": None, "created": time.time(),
           "spec": "s", "data_center": "zhongwei", "accelerator_model": "H20", "accelerators": 2, "cpus": 1.0,
           "memory_gb": 1.0, **over}
    return json.dumps({"version": 1, "reservations": [row]})


@pytest.mark.parametrize(("text", "names"), [
    ("{not json", "JSON at line 1 column 2"),
    ("", "JSON at line 1 column 1"),
    ("[]", "<root>"),
    ('{"version": 2, "reservations": []}', "version"),
    ('{"version": 1, "reservations": {}}', "reservations"),
    (_entry_json(pid="abc"), "reservations.0.pid 'abc'"),
    (_entry_json(accelerators=-2), "reservations.0.accelerators -2"),
    (_entry_json(cpus=None), "reservations.0.cpus None"),
    (_entry_json(extra=1), "reservations.0 'extra'"),
])
def test_a_corrupt_journal_is_a_typed_error_naming_the_file_and_the_fault(tmp_path: Path, text: str,
                                                                           names: str) -> None:
    path = tmp_path / "reservations.json"
    path.write_text(text)
    journal = Reservations(path)
    live = _caps(2)
    for act in (journal.held, lambda: journal.release("r-1"),
                lambda: journal.reserve(live, _decide(make_spec(**ANY2)), owner="x", totals=live)):
        with pytest.raises(JournalError) as exc:
            act()
        assert isinstance(exc.value, ConfigError)
        assert str(path) in str(exc.value) and names in str(exc.value), str(exc.value)
        assert "To fix: remove" in str(exc.value)
    assert path.read_text() == text  # left for a person to look at


def test_a_missing_journal_is_empty(tmp_path: Path) -> None:
    assert Reservations(tmp_path / "state" / "reservations.json").held() == ()


# -- effective use = max(live used, reserved) ------------------------------------------------------


def _held(dc: str, model: str | None, n: int, cpus: float = 0.0, mem: float = 0.0) -> Reservation:
    return Reservation(ticket=f"r-{dc}-{n}", owner="o", pid=1, pid_start=None, created=0.0, spec="s",
                       data_center=dc, accelerator_model=model, accelerators=n, cpus=cpus, memory_gb=mem)


def test_free_is_total_minus_the_larger_of_live_use_and_reservations() -> None:
    totals = {"zhongwei": DCCapacity(free={"H20": 8, "A800": 8}, free_cpus=64, free_memory_gb=512, utilisation=0)}
    # Ray sees 3 H20, 10 CPUs and 100 GB in use (the started jobs)
    live = {"zhongwei": DCCapacity(free={"H20": 5, "A800": 8}, free_cpus=54, free_memory_gb=412, utilisation=0.2),
            "helinger": DCCapacity(free={"H800": 4}, free_cpus=2, free_memory_gb=8, utilisation=0.1)}
    # reservations below live use (their jobs started, Ray already counts them): not counted twice
    a = available(live, [_held("zhongwei", "H20", 2, cpus=4, mem=50), _held("zhongwei", "H20", 1)], totals)
    assert a["zhongwei"].free == {"H20": 5, "A800": 8}
    assert (a["zhongwei"].free_cpus, a["zhongwei"].free_memory_gb) == (54, 412)
    assert a["zhongwei"].utilisation == 0.2
    assert a["helinger"] == live["helinger"]  # nothing reserved there
    # reservations above live use (not visible to Ray yet): they decide
    b = available(live, [_held("zhongwei", "H20", 6, cpus=20, mem=300), _held("zhongwei", "A800", 1)], totals)
    assert b["zhongwei"].free == {"H20": 2, "A800": 7}
    assert (b["zhongwei"].free_cpus, b["zhongwei"].free_memory_gb) == (44, 212)
    assert b["zhongwei"].utilisation == pytest.approx(7 / 16)
    # without the DC's total, reservations are subtracted from the snapshot (taken before they started)
    c = available(live, [_held("zhongwei", "H20", 2, cpus=4)])
    assert c["zhongwei"].free == {"H20": 3, "A800": 8} and c["zhongwei"].free_cpus == 50
    # a DC absent from the live snapshot stays absent (unavailable), whatever is reserved there
    assert "guian" not in available(live, [_held("guian", "Ascend910B", 8)], totals)
