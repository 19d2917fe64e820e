"""The admission cycle (issue 14): quota, borrowing and reclaim, region quotas, fair share, priority,
preemption, and that every ask ends in exactly one outcome. On the national inventory, with free
capacity built per test (every DC full but the ones a test opens)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import national
from westflow.admission_cycle import (
    CONFIG,
    PREEMPTION,
    QUOTA,
    Ask,
    CycleResult,
    Held,
    VictimIndex,
    admission_cycle,
    default_priority_class,
    held_of,
    held_per_dc,
)
from westflow.capacity import DCCapacity, Resources
from westflow.errors import ConfigError
from westflow.placement import get_policy
from westflow.spec import parse_spec
from westflow.tenants import Tenants, parse_tenants

N = national()
MODELS = {p.model for d in N.data_centers for p in d.pools}
REGION = {d.id: d.region.value for d in N.data_centers}
CLASSES = [{"name": "realtime", "value": 1000}, {"name": "production", "value": 100},
           {"name": "best-effort", "value": 0, "preemptible": True}]
ALL = ["realtime", "production", "best-effort"]
BIG = {"cpus": 10_000, "memory_gb": 100_000}


def tenants(*specs: Mapping[str, Any]) -> Tenants:
    """Tenants in one cohort ``c`` (unless a spec says ``cohort: None``), every class allowed."""
    rows = []
    for s in specs:
        row: dict[str, Any] = {"cohort": "c", "priority_classes": ALL, **s}
        if row["cohort"] is None:
            del row["cohort"]
        rows.append(row)
    return parse_tenants({"priority_classes": CLASSES, "cohorts": [{"name": "c"}], "tenants": rows,
                          "default_tenant": rows[0]["name"]}, models=MODELS)


def quota(cuda: int = 0, cann: int = 0, **more: int) -> dict[str, Any]:
    acc = {k: v for k, v in {"cuda": cuda, "cann": cann, **more}.items() if v}
    return {"accelerators": acc, **BIG}


def caps(**free: int) -> dict[str, DCCapacity]:
    """Every DC with nothing free but CPUs and memory, except ``dc=n``: n free in each of its pools."""
    out = {}
    for d in N.data_centers:
        n = free.get(d.id, 0)
        out[d.id] = DCCapacity({p.model: n for p in d.pools}, float(d.cpus), d.memory_gb, 0.5)
    return out


def ask(key: str, tenant: str, accelerator: str = "cuda:8", cls: str = "production", at: float = 0.0,
        exclude: frozenset[str] = frozenset(), **spec: Any) -> Ask:
    data = {"name": "s", "tenant": tenant, "accelerator": accelerator, "cpus": 1, "memory_gb": 1, **spec}
    return Ask(key, parse_spec(data, N), cls, at, exclude)


def held(key: str, tenant: str, dc: str, model: str, n: int, cls: str = "best-effort", at: float = 0.0,
         preempting: bool = False) -> Held:
    fam = next(p.family.value for d in N.data_centers for p in d.pools if p.model == model)
    return Held(key, tenant, cls, dc, REGION[dc], fam, Resources({model: n}, 1.0, 1.0), at, preempting)


def run(pending: Sequence[Ask], hold: Sequence[Held], t: Tenants, capacity: Mapping[str, DCCapacity],
        policy: str = "westflow") -> CycleResult:
    return admission_cycle(pending, hold, tenants=t, network=N, capacity=capacity, policy=get_policy(policy))


def keys(r: CycleResult) -> tuple[list[str], list[str], list[str]]:
    return [a.key for a in r.admitted], [w.key for w in r.waiting], [p.key for p in r.preempt]


def reasons(r: CycleResult, key: str) -> dict[str, str]:
    return dict(next(w for w in r.waiting if w.key == key).reasons)


# -- quota ----------------------------------------------------------------------------------------


def test_a_tenant_at_its_quota_waits_while_another_is_admitted() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=8), "cohort": None}, {"name": "b", "quota": quota(cuda=8)})
    hold = [held("a-run", "a", "zhongwei", "H20", 8, "production")]
    r = run([ask("a1", "a", at=1.0), ask("b1", "b", at=2.0)], hold, t, caps(zhongwei=64))
    assert keys(r) == (["b1"], ["a1"], [])
    assert reasons(r, "a1") == {QUOTA: "tenant a: cuda 8/8 used, 8 asked"}


def test_borrowing_up_to_the_limit_and_only_what_the_cohort_leaves_unused() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=8), "borrowing_limit": {"accelerators": {"cuda": 8}}},
                {"name": "b", "quota": quota(cuda=16)})
    r = run([ask(f"a{i}", "a", at=float(i)) for i in range(3)], [], t, caps(zhongwei=64))
    assert keys(r)[:2] == (["a0", "a1"], ["a2"])
    assert [a.borrowed for a in r.admitted] == [False, True]
    assert reasons(r, "a2") == {QUOTA: "tenant a: cuda 16/8 used, 8 asked, may borrow 8"}
    # b uses 12 of its 16: a may borrow only the 4 left unused
    hold = [held("b-run", "b", "zhongwei", "H20", 12, "production"), held("a-run", "a", "zhongwei", "H20", 8)]
    r = run([ask("a-big", "a", "cuda:8"), ask("a-small", "a", "cuda:4", at=1.0)], hold, t, caps(zhongwei=64))
    assert keys(r)[:2] == (["a-small"], ["a-big"])
    assert "cohort c has 4 of 24 unused to lend" in reasons(r, "a-big")[QUOTA]


def test_a_tenant_without_quota_for_a_family_cannot_use_it() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=8), "cohort": None})
    r = run([ask("a1", "a", "cann:4"), ask("a2", "a", "any:4")], [], t, caps(wuhu=64, zhongwei=64))
    assert keys(r)[:2] == (["a2"], ["a1"])
    assert r.admitted[0].placement.accelerator_model == "H20"
    assert reasons(r, "a1") == {QUOTA: "tenant a has no quota for cann (Ascend910B)"}


def test_a_model_quota_limits_that_model_and_the_family_quota_the_rest() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=16, H20=4), "cohort": None})
    r = run([ask("a1", "a", "cuda:8")], [], t, caps(zhongwei=64, yrd_demo=64))
    # zhongwei's H20 (its cheapest) is out of the H20 quota: its A800 pool takes it, or another DC
    assert keys(r)[0] == ["a1"] and r.admitted[0].placement.accelerator_model != "H20"


def test_a_region_quota_caps_use_in_that_region_without_borrowing() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=64), "regions": {"east": {"accelerators": {"cuda": 8}}}},
                {"name": "b", "quota": quota(cuda=64)})
    hold = [held("a-east", "a", "yrd_demo", "H800", 8, "production")]
    capacity = caps(yrd_demo=64, zhongwei=64)
    r = run([ask("a1", "a", "cuda:8", tier="realtime", origin="shanghai"), ask("a2", "a", "cuda:8")], hold, t,
            capacity)
    # realtime from Shanghai may only use eastern DCs: the region quota makes it wait; batch goes west
    assert keys(r)[:2] == (["a2"], ["a1"])
    assert r.admitted[0].placement.region == "west"
    why = reasons(r, "a1")
    assert why["yrd_demo"] == "unavailable: quota: tenant a: cuda 8/8 used in region east, 8 asked"
    assert why["zhongwei"].startswith("latency:")  # beyond the bound: its latency reason, not quota's
    assert not r.preempt  # quota is never a reason to preempt


def test_unknown_tenant_or_class_is_a_typed_error_and_such_an_ask_waits_on_config() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=8), "priority_classes": ["production"]})
    with pytest.raises(ConfigError) as exc:
        t.check("mallory", "production")
    assert exc.value.field == "tenant"
    with pytest.raises(ConfigError) as exc:
        t.check("a", "realtime")
    assert exc.value.field == "priority_class"
    r = run([ask("m", "mallory"), ask("rt", "a", cls="realtime"), ask("ok", "a")], [], t, caps(zhongwei=64))
    assert keys(r)[:2] == (["ok"], ["m", "rt"])
    assert "Unknown tenant 'mallory'" in reasons(r, "m")[CONFIG]
    assert "Not allowed priority_class 'realtime'" in reasons(r, "rt")[CONFIG]


def test_default_priority_class() -> None:
    assert default_priority_class(parse_spec({"name": "s"})) == "production"
    assert default_priority_class(parse_spec({"name": "s", "tier": "realtime", "origin": "beijing"})) == "realtime"
    assert default_priority_class(parse_spec({"name": "s", "priority_class": "best-effort"})) == "best-effort"


# -- order and fair share -------------------------------------------------------------------------


def test_priority_first_then_fair_share_then_age() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=64)}, {"name": "b", "quota": quota(cuda=64), "weight": 2})
    hold = [held("a-run", "a", "helinger", "H800", 16, "production"),
            held("b-run", "b", "helinger", "H800", 16, "production")]  # shares: a 16/64, b 16/64/2
    pending = [ask("a-old", "a", at=0.0), ask("b-new", "b", at=5.0), ask("be", "a", cls="best-effort", at=-9.0),
               ask("rt", "a", cls="realtime", at=9.0, tier="realtime", origin="beijing"),
               ask("b-newer", "b", at=6.0)]
    r = run(pending, hold, t, caps(zhangjiakou=64, helinger=64))
    # b (share 0.125) twice before a (0.25): after b's two, b's share is 0.25; then a-old's age wins
    assert [a.key for a in r.admitted] == ["rt", "b-new", "b-newer", "a-old", "be"]


def test_the_spec_priority_orders_a_tenants_own_work_and_ties_of_share_never_passing_a_lower_share() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=64)}, {"name": "b", "quota": quota(cuda=64)})
    hold = [held("a-run", "a", "helinger", "H800", 16, "production")]  # shares: a 16/64, b 0
    pending = [ask("a-old", "a", at=0.0), ask("a-urgent", "a", at=9.0, priority=5),
               ask("b-low", "b", at=8.0, priority=-3)]
    # room for one 8-GPU job: b's lower share goes first whatever a's priority says
    assert [a.key for a in run(pending, hold, t, caps(zhangjiakou=8)).admitted] == ["b-low"]
    # room for all: b (share 0), then b at 8/64 and a at 16/64, a's own by priority before age
    assert [a.key for a in run(pending, hold, t, caps(zhangjiakou=64)).admitted] == ["b-low", "a-urgent", "a-old"]
    # equal shares: the higher priority first across tenants too, before age
    even = [ask("a-old", "a", at=0.0), ask("b-high", "b", at=5.0, priority=1)]
    assert [a.key for a in run(even, [], t, caps(zhangjiakou=8)).admitted] == ["b-high"]


def test_the_queue_lists_in_the_cycles_order_with_the_spec_priority() -> None:
    from westflow.tenants import Pending, admission_order

    t = tenants({"name": "a", "quota": quota(cuda=64)}, {"name": "b", "quota": quota(cuda=64)})
    pending = [Pending("a-old", "a", "production", 0.0), Pending("a-urgent", "a", "production", 9.0, priority=5),
               Pending("b-low", "b", "production", 8.0, priority=-3)]
    order = admission_order(pending, {"a": {"H800": 16.0, "cuda": 16.0}}, t)
    assert [p.key for p in order] == ["b-low", "a-urgent", "a-old"]


def test_a_workload_that_does_not_fit_does_not_block_later_ones() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=512)})
    r = run([ask("huge", "a", "cuda:64", at=0.0), ask("small", "a", "cuda:8", at=1.0)], [], t, caps(zhongwei=8))
    assert keys(r)[:2] == (["small"], ["huge"])
    assert reasons(r, "huge")["zhongwei"] == "capacity: 64 x cuda asked, 8 free"


def test_weights_two_to_one_flooding_one_pool_converge_to_two_to_one_accelerator_hours() -> None:
    # One pool of 96 H800 (yrd_demo); both tenants keep 40 asks of 4 H800 for 1-3 h pending at every
    # cycle. Equal nominal quotas (48 each, the pool), free to borrow; the share is use / nominal / weight.
    # Preemptions are carried out (the victim stops; its hours not run are not counted): reclaim within
    # nominal must not undo the weights.
    free_to_borrow = {"accelerators": {"cuda": 96}}
    t = tenants({"name": "heavy", "weight": 2, "quota": quota(cuda=48), "borrowing_limit": free_to_borrow},
                {"name": "light", "weight": 1, "quota": quota(cuda=48), "borrowing_limit": free_to_borrow})
    running: dict[str, tuple[int, Held]] = {}  # key -> (end step, row)
    hours = {"heavy": 0.0, "light": 0.0}
    made = {"heavy": 0, "light": 0}
    pending: dict[str, list[Ask]] = {"heavy": [], "light": []}
    preempted = 0
    for step in range(80):
        for name, queue in pending.items():
            while len(queue) < 40:
                i = made[name] = made[name] + 1
                queue.append(ask(f"{name}-{i}", name, "H800:4", at=float(i), duration_hours=1 + i % 3))
        running = {k: r for k, r in running.items() if r[0] > step}
        hold = [r[1] for r in running.values()]
        capacity = caps()
        capacity["yrd_demo"] = DCCapacity({"H800": 96 - int(sum(h.resources.accelerator_count for h in hold))},
                                          4096.0, 32768.0, 0.0)
        r = run(pending["heavy"] + pending["light"], hold, t, capacity)
        for a in r.admitted:
            tenant = a.placement.spec.tenant
            pending[tenant] = [p for p in pending[tenant] if p.key != a.key]
            d = a.placement.spec.duration_hours
            running[a.key] = (step + int(d), held_of(a.placement, a.key, tenant, "production", a.family, float(step)))
            if step >= 10:  # past the first fill
                hours[tenant] += 4 * d
        for victim in (v for p in r.preempt for v in p.victims):
            end, row = running.pop(victim)
            preempted += 1
            if step >= 10:
                hours[row.tenant] -= 4 * (end - step)
        assert all(p.placement.data_center == "yrd_demo" for p in r.admitted)
    ratio = hours["heavy"] / hours["light"]
    assert 2 * 0.9 <= ratio <= 2 * 1.1, (ratio, hours, preempted)


# -- preemption -----------------------------------------------------------------------------------


def rt(key: str, tenant: str, accelerator: str = "H800:8", origin: str = "shanghai", **kw: Any) -> Ask:
    return ask(key, tenant, accelerator, "realtime", tier="realtime", origin=origin, **kw)


def test_preemption_takes_borrowed_work_of_others_before_own_best_effort() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=64)}, {"name": "b", "quota": quota(cuda=8)})
    hold = [held("own", "a", "yrd_demo", "H800", 8, at=5.0),
            held("b-nominal", "b", "yrd_demo", "H800", 8, at=1.0),
            held("b-borrowed", "b", "yrd_demo", "H800", 8, at=2.0)]  # b uses 16 of 8: borrows 8
    r = run([rt("rt", "a")], hold, t, caps())
    assert keys(r) == ([], ["rt"], ["rt"])
    p = r.preempt[0]
    assert (p.data_center, len(p.victims)) == ("yrd_demo", 1)
    assert p.victims[0].startswith("b-")  # borrowed work first
    assert "borrowed by b" in p.reason
    assert reasons(r, "rt")[PREEMPTION] == p.reason


def test_preemption_takes_own_best_effort_when_no_one_borrows() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=64)}, {"name": "b", "quota": quota(cuda=64)})
    hold = [held("b-be", "b", "yrd_demo", "H800", 8, at=9.0), held("own-old", "a", "yrd_demo", "H800", 8, at=1.0),
            held("own-new", "a", "yrd_demo", "H800", 8, at=2.0),
            held("own-prod", "a", "yrd_demo", "H800", 8, "production", at=3.0)]
    r = run([rt("rt", "a")], hold, t, caps())
    assert [p.victims for p in r.preempt] == [("own-new",)]  # the newest own best-effort; never b's, never production
    assert "own best-effort" in r.preempt[0].reason


def test_preemption_never_takes_more_than_another_tenant_borrowed() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=64)}, {"name": "b", "quota": quota(cuda=8)})
    hold = [held("b-big", "b", "yrd_demo", "H800", 16, at=1.0)]  # b borrows 8, holds one job of 16
    r = run([rt("rt", "a")], hold, t, caps())
    assert keys(r) == ([], ["rt"], [])
    hold = [held("b-1", "b", "yrd_demo", "H800", 8, at=1.0), held("b-2", "b", "yrd_demo", "H800", 8, at=2.0)]
    r = run([rt("rt16", "a", "H800:16")], hold, t, caps())  # 16 needed, b borrows 8: not enough
    assert not r.preempt


def test_reclaim_never_undoes_the_weights() -> None:
    # b (weight 3) borrows 8 past its nominal 8 but its weighted share, 16 / 8 / 3, is below what a's
    # would be after the ask, 8 / 8 / 1: no reclaim
    t = tenants({"name": "a", "quota": quota(cuda=8)},
                {"name": "b", "weight": 3, "quota": quota(cuda=8), "borrowing_limit": {"accelerators": {"cuda": 8}}})
    hold = [held("b-1", "b", "yrd_demo", "H800", 8, "production", at=1.0),
            held("b-2", "b", "yrd_demo", "H800", 8, "production", at=2.0)]
    assert not run([ask("a1", "a", "H800:8")], hold, t, caps()).preempt


def test_reclaim_within_nominal_displaces_borrowed_production_up_to_what_was_borrowed() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=8)},
                {"name": "b", "quota": quota(cuda=8), "borrowing_limit": {"accelerators": {"cuda": 8}}})
    hold = [held("b-1", "b", "yrd_demo", "H800", 8, "production", at=1.0),
            held("b-2", "b", "yrd_demo", "H800", 8, "production", at=2.0)]
    r = run([ask("a1", "a", "H800:8")], hold, t, caps())
    assert [(p.key, p.victims) for p in r.preempt] == [("a1", ("b-2",))]  # the newest, within what b borrowed
    assert "borrowed by b" in r.preempt[0].reason
    # a best-effort ask of a's never displaces production work, even borrowed
    r = run([ask("a-be", "a", "H800:8", "best-effort")], hold, t, caps())
    assert not r.preempt
    # past its nominal quota, a's ask reclaims nothing (it would borrow, and the cohort has nothing to lend)
    hold_a = [*hold, held("a-run", "a", "zhongwei", "H20", 8, "production")]
    r = run([ask("a3", "a", "H800:8")], hold_a, t, caps())
    assert keys(r)[0] == [] and not r.preempt
    assert QUOTA in reasons(r, "a3")


def test_what_another_tenant_may_give_back_is_read_again_once_it_borrows_more_within_the_cycle() -> None:
    # a's realtime ask finds nothing to preempt: b's best-effort b-1 is within b's nominal quota. Then b's
    # production ask is admitted and b borrows 8; a's production ask (a searches after b: its weighted share,
    # 8/64/0.1, is above b's 8/8) may now take b-1, which stands for what b borrows
    t = tenants({"name": "a", "weight": 0.1, "quota": quota(cuda=64)},
                {"name": "b", "quota": quota(cuda=8), "borrowing_limit": {"accelerators": {"cuda": 16}}})
    hold = [held("a-run", "a", "helinger", "H800", 8, "production"), held("b-1", "b", "yrd_demo", "H800", 8)]
    r = run([rt("a-rt", "a"), ask("b-prod", "b", "H20:8"), ask("a-prod", "a", "H800:8", at=1.0)], hold, t,
            caps(zhongwei=8))
    assert [a.key for a in r.admitted] == ["b-prod"] and r.admitted[0].borrowed
    assert [(p.key, p.victims) for p in r.preempt] == [("a-prod", ("b-1",))]

def test_preemption_never_for_latency_or_accelerator() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=4096, cann=4096)})
    # best-effort fills western helinger (beyond 20 ms of Shanghai); the eastern DCs are full of production
    hold = [held("west-be", "a", "helinger", "H800", 64), held("east-prod", "a", "yrd_demo", "H800", 64, "production")]
    r = run([rt("rt", "a")], hold, t, caps())
    assert not r.preempt
    why = reasons(r, "rt")
    assert why["helinger"].startswith("latency:") and why["yrd_demo"].startswith("capacity:")
    # an accelerator no eligible DC has: nothing to preempt for either
    r = run([rt("rt-a", "a", "Ascend910B:8", origin="beijing")], [held("zj-be", "a", "zhangjiakou", "A800", 64)], t,
            caps())
    assert not r.preempt


def test_preemption_picks_the_dc_needing_fewest_victims_and_skips_preempting_rows() -> None:
    # shaoguan (16.8 ms from shanghai), not zhangjiakou (19.2 ms: inside the realtime guard band)
    t = tenants({"name": "a", "quota": quota(cuda=4096)})
    hold = [held("yrd-1", "a", "yrd_demo", "H800", 4, at=1.0), held("yrd-2", "a", "yrd_demo", "H800", 4, at=2.0),
            held("sg-1", "a", "shaoguan", "H20", 8, at=3.0)]
    r = run([rt("rt", "a", "cuda:8")], hold, t, caps())
    assert [(p.data_center, p.victims) for p in r.preempt] == [("shaoguan", ("sg-1",))]
    hold[2] = held("sg-1", "a", "shaoguan", "H20", 8, at=3.0, preempting=True)
    r = run([rt("rt2", "a", "cuda:8")], hold, t, caps())
    assert [(p.data_center, sorted(p.victims)) for p in r.preempt] == [("yrd_demo", ["yrd-1", "yrd-2"])]
    r = run([rt("rt3", "a", "cuda:8", )], hold, t, caps())
    assert r.preempt  # independent cycles decide alike


def test_an_ask_awaiting_preemption_preempts_no_more_and_two_asks_do_not_share_victims() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=4096)})
    hold = [held("be-1", "a", "yrd_demo", "H800", 8, at=1.0), held("be-2", "a", "yrd_demo", "H800", 8, at=2.0)]
    waiting = rt("rt", "a")
    r = run([Ask(waiting.key, waiting.spec, "realtime", 0.0, awaiting_preemption=True)], hold, t, caps())
    assert keys(r) == ([], ["rt"], [])
    assert "waiting for preempted work" in reasons(r, "rt")[PREEMPTION]
    r = run([rt("x", "a", at=0.0), rt("y", "a", at=1.0), rt("z", "a", at=2.0)], hold, t, caps())
    assert [p.victims for p in r.preempt] == [("be-2",), ("be-1",)]
    assert keys(r)[1] == ["x", "y", "z"]


def test_excluded_dcs_are_never_chosen() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=512)})
    a = ask("a", "a", "cuda:8")
    a = Ask(a.key, a.spec, a.priority_class, 0.0, exclude=frozenset({"zhongwei"}))
    r = run([a], [], t, caps(zhongwei=64, helinger=64))
    assert r.admitted[0].placement.data_center == "helinger"
    r = run([a], [], t, caps(zhongwei=64))
    assert reasons(r, "a")["zhongwei"].startswith("unavailable: excluded")


def test_the_cycle_subtracts_what_it_admits() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=512)})
    r = run([ask(f"a{i}", "a", "cuda:8", at=float(i)) for i in range(5)], [], t, caps(helinger=16))
    assert keys(r)[:2] == (["a0", "a1"], ["a2", "a3", "a4"])
    per_dc = held_per_dc(held_of(a.placement, a.key, "a", "production", a.family, 0.0) for a in r.admitted)
    assert per_dc["helinger"].accelerators == {"H800": 16}


# -- every ask in exactly one outcome -------------------------------------------------------------

TENANTS = tenants({"name": "a", "quota": quota(cuda=16, cann=8), "borrowing_limit": {"accelerators": {"cuda": 8}},
                   "regions": {"east": {"accelerators": {"cuda": 4}}}},
                  {"name": "b", "quota": quota(cuda=8, cann=16), "weight": 2},
                  {"name": "c", "quota": quota(cuda=4), "cohort": None, "priority_classes": ["best-effort"]})
DCS = [d.id for d in N.data_centers]
_ask = st.builds(
    lambda i, tenant, acc, cls, rt_city, at, excl: ask(
        f"k{i}", tenant, acc, cls, at, excl, **({"tier": "realtime", "origin": rt_city} if rt_city else {})),
    st.integers(0, 10**6), st.sampled_from(["a", "b", "c", "nobody"]),
    st.sampled_from(["cuda:4", "cann:8", "any:2", "H800:8", "cpu", "any:64"]),
    st.sampled_from(ALL), st.sampled_from([None, "shanghai", "beijing", "chengdu"]), st.floats(0, 100),
    st.frozensets(st.sampled_from(DCS), max_size=2))
_held = st.builds(
    lambda i, tenant, dc, cls, n, at, pre: held(f"h{i}", tenant, dc, next(p.model for d in N.data_centers
                                                                         if d.id == dc for p in d.pools), n, cls,
                                                 at, pre),
    st.integers(0, 10**6), st.sampled_from(["a", "b", "c"]), st.sampled_from(DCS), st.sampled_from(ALL),
    st.sampled_from([1, 4, 8]), st.floats(0, 100), st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ask, max_size=25, unique_by=lambda a: a.key), st.lists(_held, max_size=15, unique_by=lambda h: h.key),
       st.dictionaries(st.sampled_from(DCS), st.sampled_from([0, 2, 8, 16]), max_size=6))
def test_every_ask_ends_in_exactly_one_outcome(pending: list[Ask], hold: list[Held], free: dict[str, int]) -> None:
    r = run(pending, hold, TENANTS, caps(**free))
    admitted, waiting, preempting = keys(r)
    assert sorted(admitted + waiting) == sorted(a.key for a in pending)
    assert set(preempting) <= set(waiting)
    victims = [v for p in r.preempt for v in p.victims]
    assert len(victims) == len(set(victims))  # no victim twice
    live = {h.key for h in hold if not h.preempting}
    assert set(victims) <= live
    used: dict[tuple[str, str], float] = {}
    for a in r.admitted:
        p = a.placement
        assert p.data_center not in next(x for x in pending if x.key == a.key).exclude
        if p.accelerator_model:
            k = (p.data_center, p.accelerator_model)
            used[k] = used.get(k, 0) + p.spec.accelerator.count
    for (dc, _model), n in used.items():
        assert n <= free.get(dc, 0)  # never over capacity


# -- deferral ---------------------------------------------------------------------------------------

EVENING = 1_795_950_000.0  # 2026-11-29 19:00 Asia/Shanghai: the evening peak


def test_a_deferred_step_waits_until_its_start_then_is_admitted() -> None:
    from datetime import datetime, timedelta, timezone

    from westflow.admission_cycle import DEFERRED

    deadline = datetime.fromtimestamp(EVENING + 30 * 3600, timezone(timedelta(hours=8))).isoformat()
    t = tenants({"name": "a", "quota": quota(cuda=64)})
    a = ask("late", "a", "H800:8", duration_hours=4, deadline=deadline)
    r = admission_cycle([a], [], tenants=t, network=N, capacity=caps(yrd_demo=8, helinger=8),
                        policy=get_policy("westflow"), now=EVENING)
    assert keys(r) == ([], ["late"], [])
    why = reasons(r, "late")
    assert why[DEFERRED].startswith("deferred ") and "valley band" in why[DEFERRED]
    start = float(next(v for k, v in why.items() if k != DEFERRED).split()[2])
    later = admission_cycle([a], [], tenants=t, network=N, capacity=caps(yrd_demo=8, helinger=8),
                            policy=get_policy("westflow"), now=start)
    assert keys(later) == (["late"], [], [])
    assert later.admitted[0].placement.start_at == start
    now = admission_cycle([ask("now", "a", "H800:8", duration_hours=4)], [], tenants=t, network=N,
                          capacity=caps(yrd_demo=8, helinger=8), policy=get_policy("westflow"), now=EVENING)
    assert keys(now) == (["now"], [], [])  # no deadline: admitted at once



def test_within_a_class_work_with_a_deadline_is_due_at_its_latest_start_and_other_work_at_its_submission() -> None:
    from datetime import datetime, timedelta, timezone

    def due(key: str, submitted: float, finish_in_h: float | None) -> Ask:
        extra = {} if finish_in_h is None else {"deadline": datetime.fromtimestamp(
            EVENING + finish_in_h * 3600, timezone(timedelta(hours=8))).isoformat()}
        return ask(key, "a", "H800:1024", at=submitted, duration_hours=1, **extra)

    t = tenants({"name": "a", "quota": quota(cuda=4096)})
    # one helinger H800 pool (1,024) free: the first in order takes it; the rest wait
    for asks, first in (([due("old", EVENING - 600, None), due("tight", EVENING - 60, 1.0)], "old"),
                        ([due("slack", EVENING - 600, 3.0), due("tight", EVENING - 60, 1.0)], "tight")):
        r = admission_cycle(asks, [], tenants=t, network=N, capacity=caps(helinger=1024),
                            policy=get_policy("westflow"), now=EVENING)
        assert [a.key for a in r.admitted] == [first], [a.key for a in asks]


# -- the victim index a caller keeps across cycles (the simulator) --------------------------------


def _snapshot(index: VictimIndex) -> dict[str, Any]:
    """What preemption reads of an index: per DC, each bucket's rows, sums and bounds, and the DC's most."""
    return {dc: ({k: (sorted(r.held.key for r in b.rows), b.acc, b.cpus, b.memory_gb, b.least, b.most)
                  for k, b in here.items()}, index.most(dc))
            for dc, here in index.buckets.items()} | {"preempting": sorted(index.preempting)}


def test_a_kept_victim_index_equals_one_built_from_the_rows_it_holds() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=64)}, {"name": "b", "quota": quota(cuda=64)})
    rng = random.Random(7)
    kept, rows = VictimIndex(t), {}
    for i in range(400):
        if rows and rng.random() < 0.45:
            key = rng.choice(sorted(rows))
            kept.remove(key)
            del rows[key]
        else:
            dc, model = rng.choice([("yrd_demo", "H800"), ("shaoguan", "H20"), ("zhongwei", "H20")])
            h = held(f"h{i}", rng.choice("ab"), dc, model, rng.choice((1, 2, 4, 8)),
                     cls=rng.choice(("best-effort", "production")), at=float(i), preempting=rng.random() < 0.1)
            kept.add(h)
            rows[h.key] = h
        assert _snapshot(kept) == _snapshot(VictimIndex(t, rows.values()))  # (bounds exact after removals)


def test_a_cycle_reads_a_kept_index_and_never_changes_it() -> None:
    t = tenants({"name": "a", "quota": quota(cuda=4096)})
    hold = [held("be-1", "a", "yrd_demo", "H800", 8, at=1.0), held("be-2", "a", "yrd_demo", "H800", 8, at=2.0)]
    index = VictimIndex(t, hold)
    before = _snapshot(index)
    pending = [rt("x", "a", at=0.0), rt("y", "a", at=1.0)]
    r = admission_cycle(pending, hold, tenants=t, network=N, capacity=caps(), policy=get_policy("westflow"),
                        victims=index)
    assert [p.victims for p in r.preempt] == [("be-2",), ("be-1",)]
    assert r == run(pending, hold, t, caps())  # the same as a cycle building its own
    assert _snapshot(index) == before
