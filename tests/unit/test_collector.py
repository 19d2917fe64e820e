"""``collector.paused``: the cyclic collector is off inside, back as it was after (also on an error)."""

from __future__ import annotations

import gc

import pytest

from westflow import collector


@pytest.mark.parametrize("on", [True, False], ids=["was-on", "was-off"])
def test_the_collector_is_off_inside_and_as_it_was_after(on: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if on else gc.disable)()
        with collector.paused():
            assert not gc.isenabled()
        assert gc.isenabled() is on
        with pytest.raises(ZeroDivisionError), collector.paused():
            _ = 1 / 0
        assert gc.isenabled() is on
    finally:
        (gc.enable if was else gc.disable)()


def test_nested_blocks_resume_only_at_the_outer_end() -> None:
    assert gc.isenabled()
    with collector.paused():
        with collector.paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
