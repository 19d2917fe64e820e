"""Placement in time in the admission store: the ``deferred`` state, end to end on a real SQLite queue.

A batch step with a deadline, queued in the evening peak, is placed by the controller's cycle to
start in the morning valley band: its row is ``deferred`` with ``start_at`` and ``start_note``;
cycles before the start leave it so (its ``max_wait`` counts from the start), the first cycle at or
after it admits it. The step's ticket tells ``deferred until ...``; ``westflow queue`` shows it; the
migration r0004 upgrades a database at r0003 that holds rows.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from admission.database import _config, current_revision, head_revision, migrate, open_engine, write_transaction
from admission.tickets import StepTicket, admitted_placement
from admission.workqueue import AdmissionQueue
from tests.builders import make_spec
from tests.unit.test_admission_controller import BOUND_S, ZW, _controller, _network, _submit
from westflow.placement import get_policy
from westflow.spec import WorkloadSpec
from westflow_cli.main import main

EVENING = 1_795_950_000.0  # 2026-11-29 19:00 Asia/Shanghai: the evening peak
MORNING = "2026-11-30 09:00 Asia/Shanghai"  # the valley band zhongwei's cheapest 4 h start from


class Clock:
    """The queue's and the controller's clock, moved by the test (epoch seconds)."""

    def __init__(self, t: float = EVENING) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _late(name: str = "late") -> WorkloadSpec:
    """A 4 h batch step on a whole zhongwei (H20 x 8) that must finish within 30 h of the evening peak."""
    deadline = datetime.fromtimestamp(EVENING + 30 * 3600, timezone(timedelta(hours=8))).isoformat()
    return make_spec(name=name, accelerator="H20:8", cpus=1, memory_gb=1, duration_hours=4, deadline=deadline)


def _deferred(tmp_path: Path, *, max_wait_s: float = 600.0) -> tuple[AdmissionQueue, Clock, float]:
    """The queue after one evening cycle deferred ``late``; and its start."""
    clock = Clock()
    q = AdmissionQueue.local(tmp_path, clock=clock)
    _submit(q, "late", _late(), max_wait_s=max_wait_s)
    report = _controller(q, _network(), ZW, clock=clock).cycle()
    assert report.admitted == () and report.deferred == 1
    row = q.get("late")
    assert row is not None and row.start_at is not None
    return q, clock, row.start_at


def test_a_batch_step_with_a_deadline_placed_at_peak_is_stored_deferred_with_its_start(tmp_path: Path) -> None:
    q, _clock, start = _deferred(tmp_path)
    row = q.get("late")
    assert row is not None and row.state == "deferred"
    assert start == EVENING + 14 * 3600  # 09:00 the next morning
    assert row.start_note == "deferred 14 h to the 09:00 valley band in zhongwei: 67 % cheaper than now"
    assert json.loads(row.reasons or "{}")["deferred"] == row.start_note
    assert row.data_center is None and q.holding() == []  # a deferred step holds nothing
    assert [d.kind for d in q.decisions("late")] == ["queued", "deferred"]
    assert q.decisions("late")[-1].detail.startswith(f"starts {MORNING}: deferred 14 h")
    assert [r.key for r in q.pending()] == ["late"]  # still a candidate of every cycle
    assert q.tally() == {("default", "production", "deferred"): 1}  # westflow_queue_workloads{state="deferred"}


def test_a_cycle_before_the_start_leaves_it_deferred_and_one_at_the_start_admits_it(tmp_path: Path) -> None:
    q, clock, start = _deferred(tmp_path, max_wait_s=600.0)  # max_wait far shorter than the 14 h deferral
    ctl = _controller(q, _network(), ZW, clock=clock)
    for t in (EVENING + 3600, start - 60):
        clock.t = t
        assert q.heartbeat("late") is not None  # the owner beats a deferred row as a pending one
        report = ctl.cycle()
        assert report.admitted == () and report.expired == () and report.abandoned == ()
        row = q.get("late")
        assert row is not None and row.state == "deferred" and row.start_at == start
    assert [d.kind for d in q.decisions("late")] == ["queued", "deferred"]  # the same start: no new decision
    clock.t = start
    q.heartbeat("late")
    assert ctl.cycle().admitted == ("late",)
    row = q.get("late")
    assert row is not None and row.state == "admitted" and row.data_center == "zhongwei"
    assert [d.kind for d in q.decisions("late")] == ["queued", "deferred", "admitted"]


def test_max_wait_counts_from_the_start_when_it_must_wait_for_capacity_then(tmp_path: Path) -> None:
    clock = Clock(EVENING - 1)
    q = AdmissionQueue.local(tmp_path, clock=clock)
    _submit(q, "late", _late(), max_wait_s=600.0)
    clock.t = EVENING
    # no deadline, a lower class (so placed after late, which is deferred: within a class an ask with a
    # deadline is due at its latest start, after work submitted now): runs now
    _submit(q, "hog", make_spec(name="hog", accelerator="H20:8", cpus=1, memory_gb=1), pclass="best-effort")
    ctl = _controller(q, _network(), ZW, clock=clock)
    report = ctl.cycle()
    assert report.admitted == ("hog",) and report.deferred == 1
    row = q.get("late")
    assert row is not None and row.state == "deferred" and row.start_at is not None
    start = row.start_at
    for t, state in ((start, "pending"), (start + 599, "pending"), (start + 601, "expired")):
        clock.t = t
        q.heartbeat("late")
        q.heartbeat("hog")
        ctl.cycle()
        row = q.get("late")
        assert row is not None and row.state == state, (t - start, row)
    assert row.start_at == start and "zhongwei" in (row.detail or "")  # it waited for hog's capacity
    # at its start it preempts best-effort hog, whose owner never stops it: it waits for it, then expires
    assert [d.kind for d in q.decisions("late")] == ["queued", "deferred", "waiting", "waiting", "expired"]
    assert [d.kind for d in q.decisions("hog")] == ["queued", "admitted", "preempting"]


def test_a_deferred_row_whose_owner_is_gone_is_abandoned(tmp_path: Path) -> None:
    q, clock, start = _deferred(tmp_path)
    clock.t = EVENING + 61  # no heartbeat for 61 s (stale after 60)
    report = _controller(q, _network(), ZW, clock=clock).cycle()
    assert report.abandoned == ("late",)
    row = q.get("late")
    assert row is not None and row.state == "abandoned"


def test_the_ticket_tells_deferred_until_its_start_then_admitted(tmp_path: Path) -> None:
    clock = Clock()
    q = AdmissionQueue.local(tmp_path, clock=clock)
    _submit(q, "late", _late())
    events: list[tuple[str, str]] = []

    def on_event(kind: str, text: str) -> None:
        events.append((kind, text))
        if kind == "deferred":  # the night passes while the step waits (its heartbeat keeps it alive)
            row = q.get("late")
            assert row is not None and row.start_at is not None
            clock.t = row.start_at
            q.heartbeat("late")

    ticket = StepTicket(q, "late", controller=_controller(q, _network(), ZW, clock=clock), poll_s=0.01,
                        on_event=on_event)
    bound = time.monotonic() + BOUND_S
    waited = ticket.wait(cancelled=lambda: time.monotonic() > bound)
    assert waited.row.state == "admitted"
    assert [k for k, _ in events] == ["deferred", "admitted"]
    start = waited.row.start_at
    assert start is not None and waited.row.admitted_at == start
    placed = admitted_placement(waited.row, _late(), _network(), get_policy("westflow"))
    assert placed.data_center == "zhongwei" and placed.start_at == start and not placed.deferred(start)
    assert events[0][1] == (f"deferred until {MORNING}: deferred 14 h to the 09:00 valley band in zhongwei: "
                            "67 % cheaper than now")


def test_westflow_queue_shows_a_deferred_step_with_its_start_and_note(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _deferred(tmp_path)[0].close()
    assert main(["queue", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if " late " in ln)
    assert line.split()[0] == "1" and " deferred " in line  # a candidate, in admission order
    assert f"starts {MORNING}: deferred 14 h to the 09:00 valley band" in line
    assert "0 pending, 1 deferred, 0 admitted" in out
    assert main(["queue", "--state-dir", str(tmp_path), "--why", "late"]) == 0
    why = capsys.readouterr().out
    # (the CLI's age is from the wall clock, the submission from the test's: any age)
    assert re.search(rf"deferred, submitted [0-9dhms]+ ago, starts {MORNING}", why) and "valley band" in why
    assert main(["queue", "--state-dir", str(tmp_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)[0]
    assert got["state"] == "deferred" and got["start_at"] == EVENING + 14 * 3600 and got["position"] == 1
    assert main(["tenants", "--state-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pending"]["default"] == 1  # waiting, holding no quota


# -- migration r0004 -------------------------------------------------------------------------------------

_ROW = ("INSERT INTO workloads (key, tenant, priority_class, priority, spec_name, spec_json, state, submitted_at, "
        "max_wait_s, exclude, owner, heartbeat_at, admitted_at, data_center, accelerators, cpus, memory_gb, "
        "preemptions, attempts, scope) VALUES (:key, 'lab', 'production', 0, :key, '{}', :state, 1.0, 60.0, "
        "'[\"guian\"]', 'run-1', 2.0, :admitted_at, :dc, 2, 8.0, 32.0, 0, 1, 'fed')")


def test_migrating_a_database_at_r0003_keeps_its_rows_and_allows_deferred(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'admission.db'}"
    engine = open_engine(url)
    try:
        with write_transaction(engine) as conn:
            command.upgrade(_config(conn), "r0003")
        with write_transaction(engine) as conn:
            conn.execute(sa.text(_ROW), {"key": "waits", "state": "pending", "admitted_at": None, "dc": None})
            conn.execute(sa.text(_ROW), {"key": "runs", "state": "admitted", "admitted_at": 3.0, "dc": "zhongwei"})
            conn.execute(sa.text("INSERT INTO decisions (at, key, kind, detail, controller) VALUES "
                                 "(1.0, 'waits', 'queued', 'lab/production', 'run-1'), "
                                 "(3.0, 'runs', 'admitted', 'fits', 'ctl')"))
        assert current_revision(engine) == "r0003"
        with pytest.raises(sa.exc.IntegrityError), write_transaction(engine) as conn:  # r0003 knows no deferred
            conn.execute(sa.text("UPDATE workloads SET state = 'deferred' WHERE key = 'waits'"))
        migrate(engine)
        assert current_revision(engine) == head_revision() == "r0004"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # set back after the rebuild
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    finally:
        engine.dispose()
    q = AdmissionQueue(url)
    try:
        rows = {r.key: r for r in q.rows()}
        assert set(rows) == {"waits", "runs"}
        assert rows["runs"].state == "admitted" and rows["runs"].data_center == "zhongwei"
        assert rows["waits"].exclude == ("guian",) and rows["waits"].scope == "fed"
        assert rows["waits"].start_at is None and rows["waits"].start_note is None
        assert [(d.key, d.kind) for d in q.decisions()] == [("waits", "queued"), ("runs", "admitted")]
        with q.engine.begin() as conn:  # the new CHECK constraints allow the new state and decision kind
            conn.execute(sa.text("UPDATE workloads SET state = 'deferred', start_at = 5.0 WHERE key = 'waits'"))
            conn.execute(sa.text("INSERT INTO decisions (at, key, kind, detail, controller) "
                                 "VALUES (5.0, 'waits', 'deferred', 'x', 'ctl')"))
        with pytest.raises(sa.exc.IntegrityError), q.engine.begin() as conn:  # and still refuse others
            conn.execute(sa.text("UPDATE workloads SET state = 'running'"))
        assert q.pending("fed")[0].state == "deferred"
    finally:
        q.close()
