"""Deadlines in the spec and placement in time: start_after, deadline, deferral to cheaper hours."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from admission.specjson import spec_from_json, spec_to_json
from tests.builders import make_spec, national
from westflow.errors import InfeasibleError, SpecError
from westflow.placement import Reason, get_policy, place
from westflow.spec import parse_spec
from westflow.text import placement_text

CST = timezone(timedelta(hours=8))
H = 3600.0
NOW = datetime(2026, 11, 29, 19, 0, tzinfo=CST).timestamp()  # the evening peak everywhere


def iso(hours_from_now: float) -> str:
    return datetime.fromtimestamp(NOW + hours_from_now * H, CST).isoformat()


# -- the spec --------------------------------------------------------------------------------------


def test_start_after_and_deadline_are_parsed_at_the_edge_and_kept_aware() -> None:
    s = parse_spec({"name": "a", "start_after": "2026-11-30T08:00:00+08:00", "deadline": "2026-12-01T00:00:00Z"})
    assert s.start_after == datetime(2026, 11, 30, 8, tzinfo=CST)
    assert s.deadline is not None and s.deadline.utcoffset() == timedelta(0)
    assert spec_from_json(spec_to_json(s)) == s  # the queue's JSON reads back the same spec
    assert make_spec().deadline is None and make_spec().start_after is None


@pytest.mark.parametrize(("data", "field", "problem"), [
    ({"deadline": "2026-11-30T08:00:00"}, "deadline", "Naive"),
    ({"start_after": datetime(2026, 11, 30, 8)}, "start_after", "Naive"),
    ({"deadline": "next tuesday"}, "deadline", "Invalid"),
    ({"deadline": 1_800_000_000}, "deadline", "Invalid"),
    ({"start_after": iso(5), "deadline": iso(4)}, "deadline", "Out of range"),
    ({"tier": "realtime", "origin": "beijing", "start_after": iso(1)}, "start_after", "Invalid"),
], ids=["naive-text", "naive-datetime", "not-a-time", "a-number", "deadline-before-start", "realtime-start-after"])
def test_bad_times_are_spec_errors_naming_the_field(data: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec({"name": "a", **data})
    assert exc.value.field == field
    assert str(exc.value).startswith(problem), str(exc.value)


# -- placement in time ------------------------------------------------------------------------------


def batch(**kw: Any) -> Any:
    return make_spec(accelerator="H800:8", duration_hours=4, **kw)


def test_a_batch_step_with_a_deadline_is_deferred_to_the_valley_and_says_so() -> None:
    n = national()
    p = place(batch(deadline=iso(30)), n, now=NOW)
    at_once = place(batch(), n, now=NOW)  # no deadline: it runs now, priced at the daily mean
    assert p.start_at is not None and p.start_at > NOW
    assert p.deferred(NOW) and not at_once.deferred(NOW)
    dc = n.dc(p.data_center)
    assert dc.tariff is not None
    assert dc.tariff.period_at(p.start_at).band.value == "valley"
    assert p.energy_cost_cny < at_once.energy_cost_cny
    assert p.start_note.startswith("deferred ") and f"valley band in {p.data_center}" in p.start_note
    assert "cheaper than now" in p.start_note
    assert p.as_dict()["start_at"] == round(p.start_at, 3) and p.as_dict()["start_note"] == p.start_note
    assert f"  starts        {p.start_note}" in placement_text(p).splitlines()  # `westflow plan` says so
    assert "starts" not in placement_text(at_once)


def test_the_deferred_run_still_ends_by_the_deadline_with_its_margin() -> None:
    n = national()
    deadline = NOW + 16 * H
    p = place(batch(deadline=iso(16)), n, now=NOW)
    assert p.start_at is not None
    margin = n.weights.deadline_margin
    assert p.start_at + (p.transfer_hours + 4 * (1 + margin)) * H <= deadline + 1e-6


def test_a_deadline_too_close_for_a_later_start_runs_now() -> None:
    p = place(batch(deadline=iso(4.5)), national(), now=NOW)
    assert p.start_at == NOW and not p.deferred(NOW) and p.start_note == ""


def test_a_deadline_no_dc_can_meet_is_infeasible_with_deadline_reasons() -> None:
    with pytest.raises(InfeasibleError) as exc:
        place(batch(deadline=iso(3)), national(), now=NOW)
    assert any(r.reason is Reason.DEADLINE and "deadline" in r.detail for r in exc.value.rejected)


def test_realtime_steps_are_never_deferred() -> None:
    s = make_spec(tier="realtime", origin="beijing", accelerator="cuda:1", duration_hours=2, deadline=iso(30))
    p = place(s, national(), now=NOW)
    assert p.start_at == NOW and not p.deferred(NOW)


def test_start_after_holds_a_step_back_even_without_tariffs_in_play() -> None:
    p = place(batch(start_after=iso(2)), national(), now=NOW)
    assert p.start_at == pytest.approx(NOW + 2 * H)
    assert p.start_note.startswith("starts at start_after")


@pytest.mark.parametrize("policy", ["east-first", "cheapest", "round-robin", "random"])
def test_baselines_run_at_once_priced_at_the_hour(policy: str) -> None:
    p = get_policy(policy).place(batch(deadline=iso(30)), national(), now=NOW)
    assert p.start_at == NOW and p.start_note == ""


def test_without_a_clock_and_without_times_placement_is_as_before() -> None:
    n = national()
    p = place(batch(), n)
    dc = n.dc(p.data_center)
    assert p.start_at is None
    assert p.energy_cost_cny == pytest.approx(p.energy_kwh * dc.price_cny_kwh)


def test_re_placing_at_the_chosen_start_admits_it_there_and_then() -> None:
    n = national()
    s = batch(deadline=iso(30))
    first = place(s, n, now=NOW)
    assert first.start_at is not None
    again = place(s, n, now=first.start_at)
    assert (again.data_center, again.start_at) == (first.data_center, first.start_at)
    assert not again.deferred(first.start_at)


@pytest.mark.parametrize("hour", [3, 9, 15, 19, 23], ids=lambda h: f"{h:02d}h")
def test_a_step_without_times_lands_in_the_same_dc_at_the_same_price_whatever_the_hour(hour: int) -> None:
    # The controller passes its clock to every placement: a step with no window must not move with the hour
    # (tests and users would see east win at night and west by day), only a windowed one is placed in time.
    n = national()
    now = datetime(2026, 11, 29, hour, 0, tzinfo=CST).timestamp()
    p, flat = place(batch(), n, now=now), place(batch(), n)
    assert (p.data_center, p.start_at, p.energy_cost_cny) == (flat.data_center, None, flat.energy_cost_cny)
