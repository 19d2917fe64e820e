"""The admission store on a real PostgreSQL 16 (PyPI ``pgserver``, Unix socket only) and on SQLite.

The core behaviours run on both backends (the scenarios of tests/unit/test_admission_store.py);
then 1,000 concurrent submissions from 4 processes while two leaders admit, and leaders racing
for the lease in separate processes, the winner killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from admission import AdmissionQueue, CycleWrite, Leader, Waiting
from admission.database import sqlite_url
from tests.fixtures.postgres import Postgres
from tests.unit.test_admission_store import (
    BOUND_S,
    SPAWN,
    Clock,
    admission,
    scenario_apply_only_from_expected_states,
    scenario_concurrent_migrations,
    scenario_fencing,
    scenario_killed_writer,
    scenario_submit_is_idempotent,
    scenario_threads_submit,
    scenario_transitions,
    submit,
)

pytestmark = pytest.mark.integration

N = 1_000
PROCESSES = 4
THREADS = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "state")
    url: str = request.getfixturevalue("pg_url")
    return url


def test_postgres_listens_on_no_tcp_port(pg_server: Postgres, pg_url: str) -> None:
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW listen_addresses").scalar() == ""
            assert conn.exec_driver_sql("SHOW server_version").scalar().startswith("16.")
    finally:
        engine.dispose()
    postmaster = psutil.Process(pg_server.pid)
    pids = {postmaster.pid} | {c.pid for c in postmaster.children(recursive=True)}
    listening = [c for c in psutil.net_connections(kind="inet") if c.pid in pids]
    assert listening == []
    assert (pg_server.socket_dir / ".s.PGSQL.5432").is_socket()


def test_postgres_sessions_cannot_sit_in_a_transaction(pg_url: str) -> None:
    """A client lost mid-transaction (its host gone, no FIN) is cut off by the server, freeing the lease row."""
    with AdmissionQueue(pg_url) as q, q.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "1min"


# -- the core behaviours on both backends ---------------------------------------------------------------


def test_submit_is_idempotent(any_url: str) -> None:
    with AdmissionQueue(any_url) as q:
        scenario_submit_is_idempotent(q)


def test_transitions(any_url: str) -> None:
    clock = Clock()
    with AdmissionQueue(any_url, clock=clock) as q:
        scenario_transitions(q, clock)


def test_fencing(any_url: str) -> None:
    clock = Clock()
    with AdmissionQueue(any_url, clock=clock) as q:
        scenario_fencing(q, clock)


def test_apply_only_from_expected_states(any_url: str) -> None:
    clock = Clock()
    with AdmissionQueue(any_url, clock=clock) as q:
        scenario_apply_only_from_expected_states(q, clock)


def test_threads_submit_concurrently(any_url: str) -> None:
    with AdmissionQueue(any_url) as q:
        scenario_threads_submit(q)


def test_processes_migrating_at_once(any_url: str) -> None:
    scenario_concurrent_migrations(any_url)


def test_killed_writer_leaves_nothing_half_written(any_url: str) -> None:
    scenario_killed_writer(any_url)


# -- 1,000 concurrent submissions while two leaders admit ----------------------------------------------------


def key(i: int) -> str:
    return f"w-{i:04d}"


def worker_submit(url: str, proc: int, barrier: Any, results: Any) -> None:
    """Submit this process's quarter of the keys, and 25 of the next one's (racing it), from threads."""
    try:
        q = AdmissionQueue(url)
        mine = [i for i in range(N) if i % PROCESSES == proc]
        theirs = [i for i in range(N) if i % PROCESSES == (proc + 1) % PROCESSES][:25]
        barrier.wait(timeout=BOUND_S)
        with ThreadPoolExecutor(THREADS) as pool:
            rows = list(pool.map(lambda i: submit(q, key(i), owner=f"proc-{proc}"), mine + theirs))
        q.close()
        results.put(("submitted", proc, len(rows)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", proc, repr(exc)))


def worker_lead(url: str, holder: str, wanted: list[int], barrier: Any, submitted: Any, results: Any) -> None:
    """Admit ``wanted`` keys as they appear, 100 per cycle, giving the lease up after each cycle.

    After each release, applying with the released lease must write nothing (fencing under contention).
    """
    try:
        q = AdmissionQueue(url)
        leader = Leader(q, holder=holder, ttl_s=2.0)
        mine = {key(i) for i in wanted}
        cycles = fenced = 0
        barrier.wait(timeout=BOUND_S)
        deadline = time.monotonic() + 5 * BOUND_S
        while time.monotonic() < deadline:
            done = submitted.is_set()  # read before the queue: every key is in it once this is set
            lease = leader.acquire()
            if lease is None:
                time.sleep(0.002)
                continue
            todo = sorted(r.key for r in q.pending() if r.key in mine)
            if not todo and done:
                leader.release(lease)
                break
            write = CycleWrite(admitted=tuple(admission(k, dc=holder) for k in todo[:100]))
            assert q.apply(write, lease)
            cycles += 1
            leader.release(lease)
            fenced += not q.apply(write, lease)
        q.close()
        results.put(("led", holder, cycles, fenced))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", holder, repr(exc)))


def test_thousand_submissions_from_four_processes(pg_url: str) -> None:
    AdmissionQueue(pg_url).close()  # migrated before the race (migrating at once is tested above)
    a = [i for i in range(0, 700) if i % 10]  # keys i % 10 == 0 are never admitted: they wait
    b = [i for i in range(300, N) if i % 10]  # 300..699 wanted by both leaders
    barrier, submitted, results = SPAWN.Barrier(PROCESSES + 2), SPAWN.Event(), SPAWN.Queue()
    procs = [SPAWN.Process(target=worker_submit, args=(pg_url, p, barrier, results)) for p in range(PROCESSES)]
    procs += [SPAWN.Process(target=worker_lead, args=(pg_url, holder, keys, barrier, submitted, results))
              for holder, keys in (("leader-a", a), ("leader-b", b))]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=5 * BOUND_S) for _ in range(PROCESSES)]
        assert sorted(got) == [("submitted", p, N // PROCESSES + 25) for p in range(PROCESSES)]
        submitted.set()
        led = [results.get(timeout=5 * BOUND_S) for _ in range(2)]
    finally:
        for p in procs:
            p.join(timeout=BOUND_S)
            if p.is_alive():
                p.kill()
    assert sorted(r[:2] for r in led) == [("led", "leader-a"), ("led", "leader-b")], led
    assert all(cycles >= 1 and fenced == cycles for _, _, cycles, fenced in led), led

    with AdmissionQueue(pg_url) as q:
        closer = Leader(q, holder="closer").acquire()
        assert closer is not None
        assert q.apply(CycleWrite(waiting=tuple(Waiting(r.key, '{"dc": "capacity"}') for r in q.pending())), closer)
        rows = {r.key: r for r in q.rows()}
        decisions = q.decisions(limit=10 * N)
        with q.engine.connect() as conn:
            count, distinct = conn.execute(sa.text("SELECT count(*), count(DISTINCT key) FROM workloads")).one()

    assert (count, distinct) == (N, N) and set(rows) == {key(i) for i in range(N)}
    by_kind = {kind: Counter(d.key for d in decisions if d.kind == kind) for kind in ("queued", "admitted",
                                                                                     "waiting")}
    assert by_kind["queued"] == {key(i): 1 for i in range(N)}
    should_admit = {key(i) for i in (*a, *b)}
    assert by_kind["admitted"] == {k: 1 for k in should_admit}  # each exactly once
    assert {k for k, r in rows.items() if r.state == "admitted"} == should_admit
    waiting = {k for k, r in rows.items() if r.state == "pending"}
    assert waiting == {key(i) for i in range(0, N, 10)}
    assert all(rows[k].reasons == '{"dc": "capacity"}' for k in waiting) and by_kind["waiting"] == {
        k: 1 for k in waiting}
    assert len(decisions) == N + len(should_admit) + len(waiting)
    for d in decisions:
        if d.kind == "admitted":
            assert d.controller in ("leader-a", "leader-b") and rows[d.key].data_center == d.controller


# -- leaders racing in separate processes ------------------------------------------------------------------


def worker_race(url: str, holder: str, barrier: Any, results: Any) -> None:
    """Race for the lease: the winner renews until killed; the loser polls until it takes over."""
    q = AdmissionQueue(url)
    leader = Leader(q, holder=holder, ttl_s=2.0)
    barrier.wait(timeout=BOUND_S)
    lease = leader.acquire()
    results.put(("raced", holder, None if lease is None else lease.epoch))
    if lease is not None:
        while lease is not None:  # until SIGKILL
            time.sleep(0.1)
            lease = leader.renew(lease)
        results.put(("lost", holder, None))  # only if it lost the lease while alive
        return
    deadline = time.monotonic() + BOUND_S
    while lease is None and time.monotonic() < deadline:
        time.sleep(0.05)
        lease = leader.acquire()
    results.put(("took over", holder, None if lease is None else lease.epoch))
    q.close()


def test_leaders_race_and_take_over(any_url: str) -> None:
    AdmissionQueue(any_url).close()
    barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
    procs = {h: SPAWN.Process(target=worker_race, args=(any_url, h, barrier, results)) for h in ("one", "two")}
    for p in procs.values():
        p.start()
    try:
        raced = [results.get(timeout=BOUND_S) for _ in procs]
        winners = [h for _, h, epoch in raced if epoch is not None]
        assert len(winners) == 1 and {e for *_, e in raced} == {1, None}, raced
        winner, loser = winners[0], ({"one", "two"} - set(winners)).pop()
        pid = procs[winner].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        took = results.get(timeout=2 * BOUND_S)
        while took[0] == "lost":  # the winner stalled past its ttl before the kill (a loaded host): still one holder
            took = results.get(timeout=2 * BOUND_S)
        assert took == ("took over", loser, 2)
    finally:
        for p in procs.values():
            p.join(timeout=BOUND_S)
            if p.is_alive():
                p.kill()
    with AdmissionQueue(any_url) as q:
        lease = Leader(q, holder="observer").current()
        assert lease is None or lease.holder == loser


@pytest.mark.parametrize("trial", range(10))
def test_killing_the_leading_controller_mid_cycle_on_postgres(pg_url: str, tmp_path: Path, trial: int) -> None:
    """The controller crash trial of tests/unit/test_admission_controller.py, against PostgreSQL."""
    from tests.unit.test_admission_controller import crash_trial

    crash_trial(pg_url, tmp_path, trial)
