"""The lazy parts of a Placement (losers' text, Ray request) behave like eager fields."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from tests.builders import make_spec, national
from westflow.capacity import full_capacity
from westflow.placement import Placement, Reason, get_policy


def test_losers_text_reflects_the_capacity_at_decision_time() -> None:
    n = national()
    caps = full_capacity(n)
    p = get_policy("westflow").place(make_spec(accelerator="any:8"), n, caps)
    before = {r.data_center: r.detail for r in p.rejected}
    q = get_policy("westflow").place(make_spec(accelerator="any:8"), n, caps)
    caps.clear()  # the caller changes its mapping after the decision
    assert {r.data_center: r.detail for r in q.rejected} == before
    assert all(r.reason is Reason.DEARER for r in q.rejected)
    assert "0% used" in next(iter(before.values()))


def test_placement_pickles_copies_and_compares() -> None:
    n = national()
    p = get_policy("east-first").place(make_spec(accelerator="cuda:8", tier="realtime", origin="beijing"), n)
    for other in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p), dataclasses.replace(p)):
        assert other == p
        assert other.rejected == p.rejected and other.ray == p.ray
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.rejected = ()  # type: ignore[misc]
    names = [f.name for f in dataclasses.fields(Placement)]
    assert names[-5:] == ["rejected", "ray", "start_at", "start_note", "tariff"]
