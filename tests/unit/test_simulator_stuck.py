"""Stuck asks are let in again exactly when some event may let a cycle admit them or preempt for them: each
path (capacity where the ask fits, quota lent by the cohort, the tenant's own release, victims by priority or
to reclaim) frees them, and events that cannot do not (the engine's reference comparisons are in
test_simulator_speed)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.builders import make_spec, national
from westflow.admission_cycle import Ask, Held
from westflow.capacity import DCCapacity, Resources
from westflow.simulator.stuck import StuckAsks
from westflow.tenants import Ledger, Tenants, parse_tenants

N = national()
MODELS = {p.model for d in N.data_centers for p in d.pools}
REGION = {d.id: d.region.value for d in N.data_centers}
POOLS = {d.id: [p.model for p in d.pools] for d in N.data_centers}
FAMILY = {p.model: p.family.value for d in N.data_centers for p in d.pools}
BIG = {"cuda": 100_000, "cann": 100_000}


def _tenants(a: dict[str, Any] | None = None, b: dict[str, Any] | None = None) -> Tenants:
    """Tenants ``a`` and ``b`` in one cohort, quotas on CPUs (accelerators never bind) unless told otherwise."""
    def tenant(name: str, extra: dict[str, Any] | None) -> dict[str, Any]:
        quota = {"accelerators": BIG, "cpus": 100, "memory_gb": 10**6}
        t: dict[str, Any] = {"name": name, "cohort": "c", "quota": quota,
                             "borrowing_limit": {"cpus": 1000}, "priority_classes": ["production", "best-effort"]}
        t.update(extra or {})
        return t
    return parse_tenants({
        "priority_classes": [{"name": "realtime", "value": 1000}, {"name": "production", "value": 100},
                             {"name": "best-effort", "value": 0, "preemptible": True}],
        "cohorts": [{"name": "c"}], "tenants": [tenant("a", a), tenant("b", b)], "default_tenant": "a"},
        models=MODELS)


class _World:
    """A stuck set over a capacity and a ledger the test sets by hand."""

    def __init__(self, tenants: Tenants, room: int = 0) -> None:
        self.caps = {dc: DCCapacity({}, 0.0, 0.0, 1.0) for dc in POOLS}
        for dc in POOLS:
            self.room(dc, room)
        self.ledger = Ledger(tenants)
        self.stuck = StuckAsks(N, tenants, self.ledger, lambda: self.caps)
        self.rows = 0

    def room(self, dc: str, n: int) -> None:
        """``n`` accelerators free in each pool of ``dc``, with the CPUs and memory of ``n`` 1-GPU asks."""
        self.caps[dc] = DCCapacity(dict.fromkeys(POOLS[dc], n), 2.0 * n, 16.0 * n, 0.5)

    def row(self, tenant: str, dc: str, cpus: float, cls: str = "realtime") -> Held:
        """A held row (by default of a class no batch ask may preempt)."""
        self.rows += 1
        model = POOLS[dc][0]
        return Held(f"r{self.rows}", tenant, cls, dc, REGION[dc], FAMILY[model], Resources.of(model, 1, cpus, 8.0), 0.0)

    def hold(self, row: Held) -> Held:
        self.ledger.add(row.tenant, row.region, row.family, row.resources)
        self.stuck.held(row)
        return row

    def release(self, row: Held) -> None:
        self.ledger.add(row.tenant, row.region, row.family, row.resources, -1)
        self.stuck.released(row)

    def stick(self, tenant: str = "a", accelerator: str = "cuda:8", cls: str = "best-effort") -> str:
        n = int(accelerator.split(":")[1])
        ask = Ask(f"ask{len(self.stuck)}", make_spec(name="j", tenant=tenant, accelerator=accelerator, cpus=2 * n,
                                                     memory_gb=16 * n), cls, 0.0)
        self.stuck.stick([ask], self.stuck.tick)
        return ask.key

    def stuck_after_loosen(self, key: str) -> bool:
        self.stuck.loosen()
        return key in self.stuck


def test_capacity_frees_an_ask_only_where_it_fits() -> None:
    w = _World(_tenants())
    w.hold(w.row("a", "zhongwei", 100.0))
    key = w.stick(accelerator="cuda:8")
    assert w.stuck_after_loosen(key)  # nothing happened
    w.room("wuhu", 64)  # Ascend only
    w.release(w.hold(w.row("b", "wuhu", 2.0)))
    assert w.stuck_after_loosen(key)
    w.room("tianfu", 4)  # CUDA, too little
    w.release(w.hold(w.row("b", "tianfu", 2.0)))
    assert w.stuck_after_loosen(key)
    w.room("tianfu", 8)
    w.release(w.hold(w.row("b", "tianfu", 2.0)))
    assert not w.stuck_after_loosen(key)


def test_a_cohort_members_release_lends_quota_anywhere() -> None:
    # a is past its nominal 100 CPUs and the cohort has nothing left to lend; b's release at a full DC
    # leaves capacity where it was (free elsewhere) but lends a the CPUs it needs
    w = _World(_tenants(), room=64)
    w.hold(w.row("a", "zhongwei", 90.0))
    b = w.hold(w.row("b", "zhongwei", 100.0))
    w.hold(w.row("b", "zhongwei", 20.0))
    key = w.stick(accelerator="cuda:8")  # 16 CPUs: 90 + 16 > 100, cohort 210 + 16 > 200
    assert w.stuck_after_loosen(key)
    w.room("zhongwei", 0)
    w.release(w.hold(w.row("b", "zhongwei", 2.0)))  # lends too little
    assert w.stuck_after_loosen(key)
    w.release(b)
    assert not w.stuck_after_loosen(key)


def test_the_tenants_own_release_within_its_borrowing_limit() -> None:
    w = _World(_tenants(a={"borrowing_limit": {"cpus": 20}}), room=64)
    mine = w.hold(w.row("a", "zhongwei", 110.0))
    w.hold(w.row("a", "zhongwei", 2.0))
    key = w.stick(accelerator="cuda:8")  # 112 + 16 > 100 + 20
    assert w.stuck_after_loosen(key)
    w.room("zhongwei", 0)
    w.release(mine)
    assert not w.stuck_after_loosen(key)


def test_a_region_quota_rules_out_the_only_room() -> None:
    w = _World(_tenants(a={"regions": {"east": {"cpus": 50}}}))
    w.room("tianfu", 64)  # east: the only room
    mine = w.hold(w.row("a", "zhangjiakou", 40.0))
    key = w.stick(accelerator="cuda:8")  # 40 + 16 > 50 in east
    w.release(w.hold(w.row("b", "tianfu", 2.0)))
    assert w.stuck_after_loosen(key)
    w.release(mine)  # at a full DC
    assert not w.stuck_after_loosen(key)


def test_new_work_of_a_cohort_member_may_be_reclaimed() -> None:
    w = _World(_tenants())
    key = w.stick(accelerator="cuda:8")  # within its nominal quota, nothing free, nothing to reclaim
    assert w.stuck_after_loosen(key)
    w.hold(w.row("b", "zhongwei", 2.0))  # (real-time work: not to be reclaimed)
    assert w.stuck_after_loosen(key)
    w.hold(w.row("b", "zhongwei", 2.0, cls="best-effort"))
    assert not w.stuck_after_loosen(key)


def test_new_work_is_not_reclaimed_by_a_tenant_past_its_nominal_quota() -> None:
    w = _World(_tenants())
    w.hold(w.row("a", "zhongwei", 100.0))
    key = w.stick(accelerator="cuda:8")
    w.hold(w.row("b", "zhongwei", 2.0, cls="best-effort"))
    assert w.stuck_after_loosen(key)


def test_the_tenants_own_release_brings_it_within_nominal_to_reclaim() -> None:
    w = _World(_tenants())
    mine = w.hold(w.row("a", "zhongwei", 100.0))
    w.hold(w.row("b", "zhongwei", 2.0, cls="best-effort"))
    key = w.stick(accelerator="cuda:8")
    assert w.stuck_after_loosen(key)  # past its nominal quota: no reclaim; nothing free
    w.release(mine)  # capacity stays full
    assert not w.stuck_after_loosen(key)


@pytest.mark.parametrize(("cls", "freed"), [("production", True), ("best-effort", False)],
                         ids=["higher-class-preempts", "same-class-does-not"])
def test_lower_class_work_may_be_preempted(cls: str, freed: bool) -> None:
    w = _World(_tenants())
    w.hold(w.row("a", "zhongwei", 100.0))  # past nominal: no reclaim
    key = w.stick(accelerator="cuda:8", cls=cls)
    assert w.stuck_after_loosen(key)
    w.hold(w.row("a", "zhongwei", 2.0, cls="best-effort"))
    assert w.stuck_after_loosen(key) is not freed


def test_a_class_the_tenant_may_not_use_stays_stuck() -> None:
    w = _World(_tenants(), room=64)
    key = w.stick(accelerator="cuda:8", cls="realtime")
    w.release(w.hold(w.row("b", "zhongwei", 2.0)))
    assert w.stuck_after_loosen(key)


def test_discarded_and_freed_asks_leave_the_set() -> None:
    w = _World(_tenants())
    keys = [w.stick(), w.stick()]
    w.stuck.discard(keys[0])
    assert keys[0] not in w.stuck and keys[1] in w.stuck and len(w.stuck) == 1
    w.room("tianfu", 8)
    w.release(w.hold(w.row("b", "tianfu", 2.0)))
    w.stuck.loosen()
    assert len(w.stuck) == 0


def _due(w: _World, key: str, now: float, *, hours: float, slack_h: float) -> str:
    """Stick an ask of ``hours`` whose deadline is ``slack_h`` hours after it could finish if started at ``now``."""
    spec = make_spec(name="j", tenant="a", accelerator="cuda:8", cpus=16, memory_gb=128, duration_hours=hours,
                     deadline=datetime.fromtimestamp(now + (hours + slack_h) * 3600, tz=UTC))
    w.stuck.stick([Ask(key, spec, "best-effort", 0.0)], w.stuck.tick)
    return key


@pytest.mark.parametrize(("slack_h", "freed"), [(0.1, False), (5.0, True), (-0.5, True)],
                         ids=["must-start-now", "may-defer", "misses-its-deadline"])
def test_room_for_one_frees_the_most_urgent_and_whatever_may_not_take_room(slack_h: float, freed: bool) -> None:
    # room for one 8-GPU ask: the most urgent fixed ask gets it; an ask the policy may defer (its deadline
    # leaves more than deadline_margin x duration spare) or one that misses its deadline takes no room
    w = _World(_tenants())
    w.hold(w.row("a", "zhongwei", 100.0))  # past nominal: no reclaim
    now = 1.8e9
    first = _due(w, "first", now, hours=1.0, slack_h=0.05)
    other = _due(w, "other", now, hours=1.0, slack_h=slack_h)
    w.room("tianfu", 8)
    w.release(w.hold(w.row("b", "tianfu", 2.0)))
    w.stuck.loosen(now)
    assert first not in w.stuck
    assert (other not in w.stuck) is freed
    w.room("tianfu", 0)  # the cycle placed the first there; the one left is judged again (no event since)
    w.stuck.loosen(now)
    assert (other not in w.stuck) is freed
