"""Reservations: racing placements never over-commit; nothing lost or duplicated."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.builders import make_spec, national
from westflow.capacity import DCCapacity
from westflow.ledger import Decision, Ledger, Status
from westflow.spec import WorkloadSpec


def _tight() -> dict[str, DCCapacity]:
    """Every DC with 4 free accelerators per pool and plenty of CPU."""
    n = national()
    return {d.id: DCCapacity(free={p.model: 4 for p in d.pools}, free_cpus=64, free_memory_gb=512,
                             utilisation=0.5) for d in n.data_centers}


def test_concurrent_requests_for_the_last_accelerators_do_not_both_win() -> None:
    n = national()
    ledger = Ledger(n, _tight())
    total_free = sum(sum(c.free.values()) for c in _tight().values())
    specs = [make_spec(name=f"job-{i}", accelerator="any:2") for i in range(400)]
    start = threading.Event()

    def go(spec: WorkloadSpec) -> Decision:
        start.wait()  # release all threads at once so they race
        return ledger.submit(spec)

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(go, s) for s in specs]
        start.set()
        decisions = [f.result(timeout=60) for f in futures]
    assert len(decisions) == 400
    assert len({d.ticket for d in decisions}) == 400  # none duplicated
    counts = Counter(d.status for d in decisions)
    assert counts[Status.PLACED] == total_free // 2
    assert counts[Status.QUEUED] == 400 - total_free // 2
    for dc, cap in ledger.capacity().items():
        assert all(v >= 0 for v in cap.free.values()), dc  # never over-committed
    per_dc: Counter[tuple[str, str | None]] = Counter()
    for d in decisions:
        if d.placement:
            per_dc[(d.placement.data_center, d.placement.accelerator_model)] += 2
    for (dc, model), used in per_dc.items():
        assert used <= 4
        assert ledger.reserved(dc)[model] == used


def test_release_places_queued_work_in_priority_order() -> None:
    n = national()
    caps = {k: DCCapacity(free={m: 0 for m in c.free}, free_cpus=64, free_memory_gb=512, utilisation=0.5)
            for k, c in _tight().items()}
    caps["zhongwei"] = DCCapacity(free={"H20": 2, "A800": 0}, free_cpus=64, free_memory_gb=512, utilisation=0.3)
    ledger = Ledger(n, caps)
    first = ledger.submit(make_spec(name="first", accelerator="cuda:2"))
    low = ledger.submit(make_spec(name="low", accelerator="cuda:2", priority=0))
    high = ledger.submit(make_spec(name="high", accelerator="cuda:2", priority=5))
    assert first.status is Status.PLACED and first.placement and first.placement.data_center == "zhongwei"
    assert low.status is Status.QUEUED and high.status is Status.QUEUED
    assert "capacity" in {r.reason.value for r in low.rejected}
    placed = ledger.release(first.ticket)
    assert [d.spec.name for d in placed] == ["high"]
    assert ledger.queued() == [low.ticket]


def test_impossible_work_is_refused_with_reasons() -> None:
    ledger = Ledger(national(), _tight())
    d = ledger.submit(make_spec(tier="realtime", origin="shanghai", accelerator="cann:8"))
    assert d.status is Status.REFUSED
    assert len(d.rejected) == 10


def test_lost_dc_gets_no_more_work() -> None:
    ledger = Ledger(national(), _tight())
    a = ledger.submit(make_spec(accelerator="any:1"))
    assert a.placement is not None
    ledger.mark_lost(a.placement.data_center)
    b = ledger.submit(make_spec(accelerator="any:1"))
    assert b.placement is not None and b.placement.data_center != a.placement.data_center
