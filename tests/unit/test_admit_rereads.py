"""A cluster read that timed out is read again before a step is refused for it (issue 12: a busy dashboard
is not a lost cluster); a refused connection, or a step that fits nowhere, is refused at once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest

import pipelines.resources as res
import ray_cluster.federation as federation
from ray_cluster.federation import ClusterRead
from tests.builders import national
from westflow.errors import InfeasibleError
from westflow.placement import Reason, Rejection

NET = national()
SPEC = SimpleNamespace(name="s", tier="batch", origin=None)


class _Fed:
    """Reads answer as told, one per call; totals are all the same (only the reads matter here)."""

    def __init__(self, *reads: ClusterRead) -> None:
        self.reads, self.calls = list(reads), 0

    def read(self) -> dict[str, ClusterRead]:
        self.calls += 1
        r = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]
        return {r.name: r}

    def capacity_and_totals(self, network: Any, reads: dict[str, ClusterRead]) -> tuple[dict, dict]:
        return {}, {"ok": next(iter(reads.values())).reachable}


class _Ticket:
    """Never fits while the read it is given failed; admits once it answered."""

    def admit(self, spec: Any, *, totals: dict[str, bool], **kw: Any) -> str:
        if not totals["ok"]:
            raise InfeasibleError(SPEC, [Rejection("zhongwei", Reason.UNAVAILABLE, "cluster unreachable")])
        return "placed"


class _Context:
    run_id = "r"
    log = SimpleNamespace(warning=lambda m: None, error=lambda m: None)

    def get_step_execution_context(self) -> Any:
        return SimpleNamespace(step=SimpleNamespace(key="k"))


def _admit(fed: _Fed) -> Any:
    r = res.WestflowResource()
    return r._admit_if_it_fits(_Context(), _Ticket(), SPEC, NET, None, fed, frozenset())  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(federation.time, "sleep", lambda s: None)


def test_a_timed_out_read_is_read_again_and_the_step_is_admitted() -> None:
    slow, ok = ClusterRead("default", error="no answer within 1 s", timed_out=True), ClusterRead("default")
    fed = _Fed(slow, slow, ok)
    assert _admit(fed) == "placed" and fed.calls == 3


def test_a_cluster_that_never_answers_is_refused_after_the_bounded_rereads() -> None:
    fed = _Fed(ClusterRead("default", error="no answer within 1 s", timed_out=True))
    with pytest.raises(dg.Failure, match="no data center fits"):
        _admit(fed)
    assert fed.calls == 1 + federation.TOTALS_REREADS


def test_a_refused_connection_is_refused_at_once() -> None:
    fed = _Fed(ClusterRead("default", error="Ray dashboard http://127.0.0.1:1 did not answer"))
    with pytest.raises(dg.Failure, match="no data center fits"):
        _admit(fed)
    assert fed.calls == 1
