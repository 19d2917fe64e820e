"""``westflow network``: the RTT matrix marks eligibility with the guard band; ``--sensitivity``."""

from __future__ import annotations

import pytest

from westflow_cli.main import main


def test_network_marks_eligibility_with_the_guard_band(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["network"]) == 0
    out = capsys.readouterr().out
    assert "<= 18 ms: the 20 ms bound less a 2 ms guard band" in out
    matrix = out[out.index("RTT (ms) to demand cities"):]
    line = next(ln for ln in matrix.splitlines() if ln.startswith("zhangjiakou"))
    assert "19.2 " in line and "19.2*" not in line  # to shanghai: inside the guard band
    assert "3.4*" in line  # to beijing


def test_network_sensitivity_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["network", "--sensitivity"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = next(ln for ln in lines if ln.startswith("DC"))
    assert head.split() == ["DC", "city", "RTT", "1.3x", "RTT", "1.5x", "RTT", "2.1x",
                            "eligible", "1.3x", "eligible", "1.5x", "eligible", "2.1x"]
    row = next(ln for ln in lines if ln.startswith("zhangjiakou") and " shanghai " in ln)
    assert row.split() == ["zhangjiakou", "shanghai", "16.8", "19.2", "26.5", "yes", "no", "no"]
    assert not any(ln.startswith("chongqing") and " chongqing " in ln for ln in lines)
    assert "1.3x-2.1x" in out and "(DC, city) pairs change eligibility" in out
