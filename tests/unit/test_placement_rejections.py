"""``Placement.rejected`` builds its losers on score when an item is first read, and reads as a tuple.

:class:`~westflow.placement.values.Rejections` holds the filters' rejections and the
losers' numbers; these tests hold it to the tuple of its items (equality both ways, hash,
repr, slicing, pickling, concatenation) and to the eager explanation it replaces.
"""

from __future__ import annotations

import copy
import pickle
import random
from typing import Any

import pytest

from benchmarks.placement_bench import synthetic_network
from tests.builders import make_spec, national
from westflow.capacity import DCCapacity, static_capacity
from westflow.errors import InfeasibleError
from westflow.inventory import Network
from westflow.placement import Reason, Rejection, WestflowPolicy, place
from westflow.placement.values import DearerRejection, Rejections
from westflow.spec import parse_spec

ACCELS = ["cpu", "cuda:1", "cuda:8", "cann:4", "any:16", "any:2", "H800:8", "A800:60", "any:1"]


class Counted:
    """A ``dearer`` builder that counts its calls."""

    def __init__(self, items: list[Rejection]) -> None:
        self.items, self.calls = items, 0

    def __call__(self) -> list[Rejection]:
        self.calls += 1
        return list(self.items)


def _parts() -> tuple[tuple[Rejection, ...], list[Rejection]]:
    head = (Rejection("zhongwei", Reason.LATENCY, "RTT 30.0 ms to shanghai > 20 ms"),
            Rejection("wuhu", Reason.UNAVAILABLE, "no live Ray node for this DC"))
    tail: list[Rejection] = [DearerRejection("guian", 1.234, 10.0, 0.5, 0.42),
                             DearerRejection("qingyang", 2.5, 11.0, 0.0, 0.7)]
    return head, tail


def test_losers_are_built_once_on_first_item_read_and_length_is_known_before() -> None:
    head, tail = _parts()
    build = Counted(tail)
    r = Rejections(head, build, len(tail))
    assert len(r) == 4 and bool(r) and build.calls == 0
    assert r[0] is head[0] and build.calls == 1
    assert list(r) == [*head, *tail] and r[-1] == tail[-1] and build.calls == 1
    assert Rejections(()) == () and not Rejections(()) and len(Rejections(head)) == 2


def test_reads_as_the_tuple_of_its_items() -> None:
    head, tail = _parts()
    eager = (*head, *tail)
    r = Rejections(head, Counted(tail), len(tail))
    assert r == eager and eager == r and not (r != eager) and r == Rejections(eager)
    assert r != eager[:3] and eager[:3] != r and r != list(eager) and r != Rejections(head)
    assert hash(r) == hash(eager) and repr(r) == repr(eager)
    assert r[1:3] == eager[1:3] and type(r[1:3]) is tuple
    assert r + ("x",) == (*eager, "x") and ("x",) + r == ("x", *eager)  # type: ignore[operator]
    assert tail[0] in r and r.index(tail[0]) == 2 and r.count(head[0]) == 1
    assert list(reversed(r)) == list(reversed(eager))
    for other in (pickle.loads(pickle.dumps(r)), copy.deepcopy(r), copy.copy(r)):
        assert type(other) is Rejections and other == r and [x.detail for x in other] == [x.detail for x in eager]


def _spec(rng: random.Random, net: Network, i: int) -> Any:
    d: dict[str, Any] = {"name": f"s{i}", "tier": rng.choice(["batch", "realtime"]),
                         "origin": rng.choice(net.city_ids), "accelerator": rng.choice(ACCELS),
                         "cpus": rng.choice([1, 16, 64]), "memory_gb": rng.choice([1, 64, 512]),
                         "duration_hours": rng.choice([0.1, 5.5]), "deadline_hours": rng.choice([None, 0.5, 9.0])}
    if rng.random() < 0.4:
        d["inputs"] = [{"name": "x", "region": rng.choice(["east", "west"]), "size_gb": rng.choice([0, 500])}]
    return parse_spec(d, net)


def _eager(p: Any, net: Network, cap: Any) -> tuple[Any, ...]:
    """The explanation written out by hand from the decision, DC by DC (each placed alone): the
    filters' rejection where it has none, else dearer by its score's gap to the winner's."""
    caps = cap or static_capacity(net)
    others: dict[str, Any] = {}
    for dc in net.data_centers:
        if dc.id == p.data_center:
            continue
        try:
            q = WestflowPolicy(prune=False).place(p.spec, net, {dc.id: caps[dc.id]})
        except InfeasibleError as exc:
            others[dc.id] = {r.data_center: r for r in exc.rejected}[dc.id]
            continue
        others[dc.id] = DearerRejection(dc.id, q.score - p.score, q.energy_cost_cny, q.transfer_cost_cny,
                                        caps[dc.id].utilisation)
    return tuple(others[r.data_center] for r in p.rejected)


@pytest.mark.parametrize("which", ["national", "synthetic-120"])  # 120 DCs: the pruned search, the columns
def test_lazy_explanation_equals_the_eager_one(which: str) -> None:
    net = national() if which == "national" else synthetic_network(120, seed=7)
    rng = random.Random(9)
    seen = 0
    for i in range(40 if which == "national" else 12):
        spec = _spec(rng, net, i)
        cap = None if i % 3 == 0 else {
            dc.id: DCCapacity({p.model: rng.choice([0, 3, 64]) for p in dc.pools}, dc.cpus, dc.memory_gb,
                              rng.random(), alive=rng.random() > 0.1) for dc in net.data_centers}
        try:
            p = place(spec, net, cap)
        except InfeasibleError:
            continue
        r = p.rejected
        assert isinstance(r, Rejections) and len(r) == len(net.data_centers) - 1
        assert {x.data_center for x in r} == set(net.dc_ids) - {p.data_center}
        assert r == _eager(p, net, cap)
        seen += 1
    assert seen >= 5


def test_a_placement_with_one_eligible_dc_reads_no_dearer() -> None:
    n = national()
    caps = {dc.id: DCCapacity({pl.model: 0 for pl in dc.pools}, dc.cpus, dc.memory_gb, 0.5) for dc in n.data_centers}
    only = n.data_centers[0]
    caps[only.id] = DCCapacity({pl.model: 64 for pl in only.pools}, only.cpus, only.memory_gb, 0.5)
    p = place(make_spec(accelerator=f"{only.pools[0].model}:1"), n, caps)
    assert p.data_center == only.id and all(r.reason is not Reason.DEARER for r in p.rejected)


def test_an_infeasible_error_writes_its_message_on_read_as_it_was_written_eagerly() -> None:
    net = national()
    spec = parse_spec({"name": "big", "accelerator": "H800:4096", "cpus": 1, "memory_gb": 1}, net)
    with pytest.raises(InfeasibleError) as info:
        place(spec, net)
    exc = info.value
    lines = "\n".join(f"  {r.data_center}: {r.reason.value}: {r.detail}" for r in exc.rejected)
    text = (f"No data center can run 'big' (tier {spec.tier!r}):\n{lines}\n"
            "To fix: relax or change the resource requirements, or wait for capacity.")
    assert len(exc.rejected) == len(net.data_centers)
    assert str(exc) == text and str(exc) == text  # (the second read is the kept one)
    assert exc.args == (text,) and repr(exc) == f"InfeasibleError({text!r})"


def test_an_infeasible_error_crosses_a_process_boundary() -> None:
    """Pickled (as a worker process or Ray hands it back): the same spec, reasons and message."""
    net = national()
    spec = parse_spec({"name": "big", "accelerator": "H800:4096", "cpus": 1, "memory_gb": 1}, net)
    with pytest.raises(InfeasibleError) as info:
        place(spec, net)
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is InfeasibleError
    assert back.spec == spec and back.rejected == info.value.rejected and str(back) == str(info.value)
