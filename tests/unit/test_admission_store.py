"""The durable admission store on a real SQLite file: transitions, fencing, migrations, concurrency, crashes.

The ``scenario_*`` and ``worker_*`` functions take a URL: tests/integration/test_admission_pg.py runs
the same ones against PostgreSQL. Worker processes are spawned (each imports this module).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from admission import (
    HOLDING,
    STATES,
    Admission,
    AdmissionQueue,
    CycleWrite,
    DatabaseError,
    Leader,
    Preemption,
    QueueError,
    Waiting,
    WorkloadRow,
)
from admission.database import current_revision, head_revision, migrate, open_engine, sqlite_url
from admission.rows import Base
from westflow.errors import WestflowError

SPAWN = mp.get_context("spawn")
BOUND_S = 60.0  # the most any poll below waits for another process


class Clock:
    """A clock the test moves (epoch seconds)."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def submit(q: AdmissionQueue, key: str, **overrides: Any) -> WorkloadRow:
    """Submit ``key`` with sensible defaults."""
    args: dict[str, Any] = {"tenant": "lab", "priority_class": "best-effort", "priority": 0, "spec_name": key,
                            "spec_json": json.dumps({"name": key}), "max_wait_s": 600.0, "owner": "run-1"}
    args.update(overrides)
    return q.submit(key, **args)


def admission(key: str, dc: str = "dc-a", **overrides: Any) -> Admission:
    """An admission of ``key`` at ``dc`` (2 GPUs, 8 CPUs, 32 GB)."""
    args: dict[str, Any] = {"key": key, "data_center": dc, "ray_cluster": f"ray-{dc}", "region": "north",
                            "family": "cuda", "accelerator_model": "A100", "accelerators": 2, "cpus": 8.0,
                            "memory_gb": 32.0, "placement": json.dumps({"data_center": dc}), "detail": "fits"}
    args.update(overrides)
    return Admission(**args)


def kinds(q: AdmissionQueue, key: str) -> list[str]:
    return [d.kind for d in q.decisions(key)]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "state")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(url: str, clock: Clock) -> Iterator[AdmissionQueue]:
    q = AdmissionQueue(url, clock=clock)
    yield q
    q.close()


# -- scenarios shared with the PostgreSQL tests -----------------------------------------------------------


def scenario_submit_is_idempotent(q: AdmissionQueue) -> None:
    first = submit(q, "job-1")
    again = submit(q, "job-1", tenant="other", priority=9, spec_json="{}")
    assert again == first and first.state == "pending" and first.attempts == 0
    assert kinds(q, "job-1") == ["queued"]
    q.finish("job-1", "cancelled", "user")
    with pytest.raises(QueueError, match="'job-1' is already cancelled") as err:
        submit(q, "job-1")
    assert (err.value.key, err.value.state) == ("job-1", "cancelled")
    assert isinstance(err.value, WestflowError)


def scenario_transitions(q: AdmissionQueue, clock: Clock) -> None:
    """pending -> admitted -> preempting -> requeued (age kept) -> resumed -> finished, each recorded once."""
    submitted = submit(q, "train").submitted_at
    submit(q, "serve", priority_class="realtime", priority=100)
    lease = Leader(q, holder="ctl-1", clock=clock).acquire()
    assert lease is not None
    clock.advance(5)
    assert q.apply(CycleWrite(admitted=(admission("train"),)), lease)
    row = q.get("train")
    assert row is not None and row.state == "admitted" and row.admitted_at == clock.t and row.data_center == "dc-a"
    assert (row.accelerators, row.cpus, row.memory_gb, row.family) == (2, 8.0, 32.0, "cuda")
    assert [r.key for r in q.holding()] == ["train"] and [r.key for r in q.pending()] == ["serve"]
    assert q.apply(CycleWrite(preempt=(Preemption("train", "serve", "realtime bound"),),
                              waiting=(Waiting("serve", '{"dc-a": "capacity"}'),)), lease)
    row = q.get("train")
    assert row is not None and row.state == "preempting" and row.preempted_by == "serve"
    serve = q.get("serve")
    assert serve is not None and serve.reasons == '{"dc-a": "capacity"}'
    clock.advance(5)
    back = q.requeue("train", exclude=["dc-b"], reason="checkpointed", preempted=True)
    assert (back.state, back.submitted_at, back.attempts, back.preemptions) == ("pending", submitted, 1, 1)
    assert back.exclude == ("dc-b",) and back.data_center is None and back.accelerators == 0
    assert back.preempted_by is None and back.placement is None and back.admitted_at is None
    assert q.apply(CycleWrite(admitted=(admission("serve"), admission("train", "dc-c"))), lease)
    assert kinds(q, "train") == ["queued", "admitted", "preempting", "requeued", "resumed"]
    assert kinds(q, "serve") == ["queued", "waiting", "admitted"]
    assert q.finish("train", "finished", "done")
    assert not q.finish("train", "failed")
    assert [r.key for r in q.holding()] == ["serve"]
    done = q.get("train")
    assert done is not None and done.state == "finished" and done.finished_at == clock.t
    assert kinds(q, "train")[-1] == "finished"
    assert {d.controller for d in q.decisions() if d.kind in ("admitted", "resumed", "preempting")} == {"ctl-1"}


def scenario_fencing(q: AdmissionQueue, clock: Clock) -> None:
    """A deposed leader (stale epoch) writes nothing; the new one writes."""
    for k in ("a", "b"):
        submit(q, k)
    old = Leader(q, holder="ctl-old", ttl_s=5, clock=clock)
    new = Leader(q, holder="ctl-new", ttl_s=5, clock=clock)
    stale = old.acquire()
    assert stale is not None and stale.epoch >= 1 and new.acquire() is None
    clock.advance(6)  # old paused past its ttl
    taken = new.acquire()
    assert taken is not None and taken.epoch == stale.epoch + 1
    before = q.decisions()
    everything = CycleWrite(admitted=(admission("a"),), waiting=(Waiting("b", '{"x": "y"}'),), expire=("b",),
                            abandon=("a",))
    assert not q.apply(everything, stale)
    assert q.decisions() == before and {r.state for r in q.rows()} == {"pending"}
    assert old.renew(stale) is None and old.acquire() is None
    assert q.apply(CycleWrite(admitted=(admission("a"),)), taken)
    row = q.get("a")
    assert row is not None and row.state == "admitted"


def scenario_apply_only_from_expected_states(q: AdmissionQueue, clock: Clock) -> None:
    for k in ("p1", "p2", "p3", "gone", "idle"):
        submit(q, k)
    lease = Leader(q, holder="ctl", clock=clock).acquire()
    assert lease is not None
    q.finish("gone", "cancelled")  # cancelled while the controller decided
    write = CycleWrite(admitted=(admission("p1"), admission("p1", "dc-b"), admission("gone")),
                       preempt=(Preemption("p2", "p1", ""),), expire=("p1", "p2"), abandon=("idle",))
    assert q.apply(write, lease)
    states = {r.key: r.state for r in q.rows()}
    assert states == {"p1": "admitted", "p2": "expired", "p3": "pending", "gone": "cancelled", "idle": "abandoned"}
    p1 = q.get("p1")
    assert p1 is not None and p1.data_center == "dc-a"
    assert kinds(q, "p1") == ["queued", "admitted"] and kinds(q, "gone") == ["queued", "cancelled"]
    assert q.apply(write, lease)  # the same cycle again changes nothing
    assert Counter(d.kind for d in q.decisions()) == Counter(
        {"queued": 5, "admitted": 1, "expired": 1, "cancelled": 1, "abandoned": 1})
    assert not q.finish("p2") and not q.finish("idle")


# -- store basics ---------------------------------------------------------------------------------------


def test_sqlite_url_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_url(".westflow") == f"sqlite:///{tmp_path}/.westflow/admission.db"


def test_sqlite_engine_settings(url: str) -> None:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            got = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "busy_timeout",
                                                                                 "foreign_keys")}
    finally:
        engine.dispose()
    assert got["journal_mode"] == "wal" and int(got["busy_timeout"] or 0) >= 30_000 and got["foreign_keys"] == 1


@pytest.mark.parametrize(("bad", "says"), [
    ("", "Empty"),
    ("mysql://user:hunter2@db.example/queue", "Unsupported backend 'mysql'"),
    ("sqlite://", "Not a file path"),
    ("sqlite:///relative/admission.db", "Not a file path"),
    ("::not a url::", "Unparseable"),
    ("postgresql://user:hunter2@host", "No database"),
], ids=["empty", "mysql", "sqlite-memory", "sqlite-relative", "garbage", "pg-no-db"])
def test_bad_url_is_a_typed_error(bad: str, says: str) -> None:
    with pytest.raises(DatabaseError, match=says) as err:
        AdmissionQueue(bad)
    text = str(err.value)
    assert "hunter2" not in text and "sqlite:///<absolute path" in text and "postgresql://" in text
    assert isinstance(err.value, WestflowError)


def test_unreachable_database_names_the_masked_url(tmp_path: Path) -> None:
    url = f"postgresql://westflow:s3cret@/queue?host={tmp_path}/no-server-here"
    with pytest.raises(DatabaseError, match="unreachable") as err:
        AdmissionQueue(url)
    assert "s3cret" not in str(err.value) and "westflow:***@" in str(err.value)


def test_submit_is_idempotent(queue: AdmissionQueue) -> None:
    scenario_submit_is_idempotent(queue)


@pytest.mark.parametrize(("field", "value"), [
    ("priority_class", ""), ("max_wait_s", -1.0), ("max_wait_s", float("nan")), ("priority", "high"),
    ("tenant", "x" * 300), ("exclude", ["dc-a", ""]), ("owner", "line\nbreak"),
], ids=["empty-class", "negative-wait", "nan-wait", "text-priority", "long-tenant", "empty-exclude", "control-owner"])
def test_submit_checks_its_fields(queue: AdmissionQueue, field: str, value: Any) -> None:
    with pytest.raises(QueueError, match=field):
        submit(queue, "job", **{field: value})
    assert queue.get("job") is None


def test_states_and_kinds_are_validated(queue: AdmissionQueue) -> None:
    with pytest.raises(QueueError, match="must be one of: pending, deferred, admitted"):
        queue.rows(["running"])
    submit(queue, "job")
    with pytest.raises(QueueError, match="must be one of: finished, failed, cancelled"):
        queue.finish("job", "expired")
    with pytest.raises(QueueError, match="Unknown key 'nope'"):
        queue.finish("nope")
    with pytest.raises(QueueError, match="'job' is pending, not holding"):
        queue.requeue("job", reason="x")
    with pytest.raises(QueueError, match="accelerators"):
        admission("job", accelerators=-1)
    with pytest.raises(sa.exc.IntegrityError):  # the schema checks too
        with queue.engine.begin() as conn:
            conn.execute(sa.text("UPDATE workloads SET state = 'running'"))


def test_rows_are_oldest_first(queue: AdmissionQueue, clock: Clock) -> None:
    for k in ("c", "a", "b"):
        submit(queue, k)
        clock.advance(1)
    submit(queue, "z")
    submit(queue, "y")  # submitted at the same time as z: ordered by key
    assert [r.key for r in queue.pending()] == ["c", "a", "b", "y", "z"]
    assert queue.rows(["admitted"]) == [] and set(STATES) >= set(HOLDING)


def test_heartbeat_returns_the_row(queue: AdmissionQueue, clock: Clock) -> None:
    submit(queue, "job")
    clock.advance(7)
    row = queue.heartbeat("job")
    assert row is not None and row.heartbeat_at == clock.t and row.state == "pending"
    assert queue.heartbeat("unknown") is None


def test_transitions(queue: AdmissionQueue, clock: Clock) -> None:
    scenario_transitions(queue, clock)


def test_fencing(queue: AdmissionQueue, clock: Clock) -> None:
    scenario_fencing(queue, clock)


def test_apply_only_from_expected_states(queue: AdmissionQueue, clock: Clock) -> None:
    scenario_apply_only_from_expected_states(queue, clock)


def test_waiting_records_only_changes(queue: AdmissionQueue, clock: Clock) -> None:
    submit(queue, "job")
    lease = Leader(queue, holder="ctl", clock=clock).acquire()
    assert lease is not None
    for reasons in ('{"dc-a": "quota"}', '{"dc-a": "quota"}', '{"dc-a": "capacity"}'):
        assert queue.apply(CycleWrite(waiting=(Waiting("job", reasons),)), lease)
    assert [d.detail for d in queue.decisions("job") if d.kind == "waiting"] == ['{"dc-a": "quota"}',
                                                                                 '{"dc-a": "capacity"}']


def test_finish_frees_what_it_held(queue: AdmissionQueue, clock: Clock) -> None:
    submit(queue, "job")
    lease = Leader(queue, holder="ctl", clock=clock).acquire()
    assert lease is not None and queue.apply(CycleWrite(admitted=(admission("job"),)), lease)
    assert [r.key for r in queue.holding()] == ["job"]
    assert queue.finish("job", "failed", "OOM")
    assert queue.holding() == [] and queue.counts() == {"failed": 1}
    last = queue.decisions("job")[-1]
    assert (last.kind, last.data_center, last.detail) == ("failed", "dc-a", "OOM")


def test_cancel_owner(queue: AdmissionQueue) -> None:
    submit(queue, "a", owner="run-1")
    submit(queue, "b", owner="run-1")
    submit(queue, "c", owner="run-2")
    queue.finish("b")
    assert queue.cancel_owner("run-1", "run died") == ("a",)
    assert {r.key: r.state for r in queue.rows()} == {"a": "cancelled", "b": "finished", "c": "pending"}


def test_decisions_latest_first_cut_oldest_first_order(queue: AdmissionQueue) -> None:
    for i in range(5):
        submit(queue, f"k{i}")
    got = queue.decisions(limit=3)
    assert [d.key for d in got] == ["k2", "k3", "k4"] and [d.id for d in got] == sorted(d.id for d in got)
    assert [d.key for d in queue.decisions("k1")] == ["k1"]


# -- the lease ------------------------------------------------------------------------------------------


def test_lease_take_renew_release(queue: AdmissionQueue, clock: Clock) -> None:
    a = Leader(queue, holder="a", ttl_s=5, clock=clock)
    b = Leader(queue, holder="b", ttl_s=5, clock=clock)
    assert a.current() is None
    la = a.acquire()
    assert la is not None and la.epoch == 1 and la.expires_at == clock.t + 5
    assert b.acquire() is None and a.current() == la
    clock.advance(3)
    again = a.acquire()  # already ours: same epoch, renewed
    assert again is not None and again.epoch == 1 and again.expires_at == clock.t + 5
    renewed = a.renew(again)
    assert renewed is not None and renewed.epoch == 1
    a.release(renewed)
    assert a.current() is None
    lb = b.acquire()
    assert lb is not None and lb.epoch == 2 and a.renew(renewed) is None
    a.release(renewed)  # a lost lease: releasing it changes nothing
    assert b.current() == lb
    clock.advance(5.01)
    assert b.current() is None
    la2 = a.acquire()
    assert la2 is not None and la2.epoch == 3


@pytest.mark.parametrize("ttl", [0, -1, float("inf")], ids=["zero", "negative", "inf"])
def test_lease_ttl_is_checked(queue: AdmissionQueue, ttl: float) -> None:
    with pytest.raises(QueueError, match="ttl_s"):
        Leader(queue, holder="a", ttl_s=ttl)


# -- migrations -----------------------------------------------------------------------------------------


def test_migrate_twice_is_a_no_op(queue: AdmissionQueue) -> None:
    submit(queue, "kept")
    assert current_revision(queue.engine) == head_revision()
    migrate(queue.engine)
    again = AdmissionQueue(queue.url)
    try:
        assert current_revision(again.engine) == head_revision() and again.get("kept") is not None
    finally:
        again.close()


def test_migrations_match_the_models(queue: AdmissionQueue) -> None:
    with queue.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def worker_open(url: str, barrier: Any, results: Any) -> None:
    """Open (so migrate) the queue at ``url`` as soon as every worker is ready; report ok or the error."""
    try:
        barrier.wait(timeout=BOUND_S)
        q = AdmissionQueue(url)
        q.close()
        results.put("ok")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, with where it came from
        results.put("".join(traceback.format_exception(exc.__cause__ or exc)[-8:]))


def scenario_concurrent_migrations(url: str, n: int = 4) -> None:
    barrier, results = SPAWN.Barrier(n), SPAWN.Queue()
    procs = [SPAWN.Process(target=worker_open, args=(url, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=BOUND_S) for _ in procs]
    for p in procs:
        p.join(timeout=BOUND_S)
    assert got == ["ok"] * n
    engine = open_engine(url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_processes_migrating_at_once(url: str) -> None:
    scenario_concurrent_migrations(url)


# -- concurrency and crashes ----------------------------------------------------------------------------


def scenario_threads_submit(q: AdmissionQueue, threads: int = 8, keys: int = 40) -> None:
    """Every thread submits every key: one row and one ``queued`` decision per key."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(timeout=BOUND_S)
            for i in range(keys):
                submit(q, f"key-{i:03d}")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=BOUND_S)
    assert errors == []
    assert len(q.rows()) == keys
    assert Counter(d.key for d in q.decisions(limit=10 * keys)) == {f"key-{i:03d}": 1 for i in range(keys)}


def test_threads_submit_concurrently(queue: AdmissionQueue) -> None:
    scenario_threads_submit(queue)


def worker_apply_then_hang(url: str, keys: list[str], ready: Any) -> None:
    """Lead, and start applying admissions of ``keys``; block right before the commit (the parent kills us)."""
    q = AdmissionQueue(url)
    lease = Leader(q, holder="doomed", ttl_s=1.0).acquire()
    assert lease is not None

    def hang(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DECISIONS"):
            ready.set()  # every row update of the cycle is done, in the open transaction
            time.sleep(10 * BOUND_S)

    sa.event.listen(q.engine, "before_cursor_execute", hang)
    q.apply(CycleWrite(admitted=tuple(admission(k) for k in keys)), lease)


def scenario_killed_writer(url: str) -> None:
    """A leader SIGKILLed inside its cycle's transaction leaves nothing; a successor takes over after ttl."""
    keys = [f"job-{i}" for i in range(10)]
    q = AdmissionQueue(url)
    try:
        for k in keys:
            submit(q, k)
        before = q.decisions()
        ready = SPAWN.Event()
        proc = SPAWN.Process(target=worker_apply_then_hang, args=(url, keys, ready))
        proc.start()
        try:
            assert ready.wait(timeout=BOUND_S), "the writer never reached its transaction"
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.join(timeout=BOUND_S)
        assert proc.exitcode == -signal.SIGKILL
        assert {r.state for r in q.rows()} == {"pending"} and q.decisions() == before
        successor = Leader(q, holder="successor", ttl_s=1.0)
        deadline = time.monotonic() + BOUND_S
        lease = successor.acquire()
        while lease is None and time.monotonic() < deadline:
            time.sleep(0.05)
            lease = successor.acquire()
        assert lease is not None and lease.epoch == 2  # the doomed writer's renewal rolled back too
        assert q.apply(CycleWrite(admitted=tuple(admission(k) for k in keys)), lease)
        assert {r.state for r in q.rows()} == {"admitted"}
        assert Counter(d.kind for d in q.decisions()) == {"queued": 10, "admitted": 10}
    finally:
        q.close()


def test_killed_writer_leaves_nothing_half_written(url: str) -> None:
    scenario_killed_writer(url)


def _downgrade(url: str, revision: str) -> None:
    """Alembic downgrade to ``revision`` on SQLite, foreign keys off around it (as ``migrate`` upgrades)."""
    from alembic import command
    from alembic.config import Config

    from admission.database import MIGRATIONS

    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            raw.execute("PRAGMA foreign_keys = OFF")  # outside a transaction, or SQLite ignores it
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            with conn.begin():
                command.downgrade(cfg, revision)
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    finally:
        engine.dispose()


def test_downgrading_placement_in_time_keeps_a_deferred_row_as_pending_and_upgrading_restores_it(
        queue: AdmissionQueue, url: str) -> None:
    submit(queue, "later")
    submit(queue, "now")
    with queue.engine.begin() as conn:
        conn.execute(sa.text("UPDATE workloads SET state = 'deferred', start_at = 1.0e9, start_note = 'valley' "
                             "WHERE key = 'later'"))
    queue.close()
    _downgrade(url, "r0003")
    engine = open_engine(url)
    try:
        assert current_revision(engine) == "r0003"
        with engine.connect() as conn:
            rows: dict[str, str] = dict(conn.execute(sa.text("SELECT key, state FROM workloads")).tuples().all())
            columns = {c[1] for c in conn.exec_driver_sql("PRAGMA table_info(workloads)").all()}
        assert rows == {"later": "pending", "now": "pending"}
        assert not {"start_at", "start_note"} & columns
        migrate(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    Base.metadata) == []
    finally:
        engine.dispose()
    again = AdmissionQueue(url)
    try:
        assert current_revision(again.engine) == head_revision()
        later = again.get("later")
        assert later is not None and later.state == "pending" and later.start_at is None
    finally:
        again.close()


def test_every_migration_downgrades_to_an_empty_database_and_upgrades_back(queue: AdmissionQueue, url: str) -> None:
    queue.close()
    _downgrade(url, "base")
    engine = open_engine(url)
    try:
        assert current_revision(engine) is None
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    Base.metadata) == []
    finally:
        engine.dispose()
