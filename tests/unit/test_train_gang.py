"""Gang planning and the one-data-center check, without Ray."""

from __future__ import annotations

import pytest

from jobs.gang import check_one_dc, plan_gang, worker_options
from jobs.job_errors import GangError, JobArgumentError
from westflow.tags import NPU, PIN, dc_resource


def _bundle(dc: str = "zhongwei", gpus: float = 8, key: str = "GPU") -> dict[str, float]:
    return {key: gpus, "CPU": 1.0, dc_resource(dc): PIN}


@pytest.mark.parametrize(("bundles", "per_node", "strategy"), [
    ([_bundle(), _bundle()], 8, "PACK"),
    ([_bundle(gpus=4), _bundle(gpus=4)], 8, "STRICT_PACK"),
    ([_bundle(key=NPU), _bundle(key=NPU, gpus=2)], 16, "STRICT_PACK"),
    ([_bundle(), _bundle()], None, "PACK"),
], ids=["two-nodes", "one-node", "npu-one-node", "unknown-node-size"])
def test_strategy(bundles: list[dict[str, float]], per_node: int | None, strategy: str) -> None:
    plan = plan_gang(bundles, per_node)
    assert (plan.strategy, plan.dc) == (strategy, "zhongwei")


def test_bundles_across_data_centers_are_refused() -> None:
    with pytest.raises(JobArgumentError, match="bundles that all pin the same dc"):
        plan_gang([_bundle("zhongwei"), _bundle("qingyang")])
    with pytest.raises(JobArgumentError, match="non-empty"):
        plan_gang([])


def test_worker_consumes_exactly_its_bundle() -> None:
    assert worker_options(_bundle(gpus=2)) == {"num_cpus": 1.0, "num_gpus": 2,
                                                "resources": {"dc:zhongwei": PIN}}
    assert worker_options(_bundle(key=NPU, gpus=4)) == {
        "num_cpus": 1.0, "resources": {NPU: 4, "dc:zhongwei": PIN}}


def test_check_one_dc() -> None:
    res = {"n1": {"dc:zhongwei": 1000.0, "GPU": 8.0}, "n2": {"dc:zhongwei": 1000.0},
           "n3": {"dc:qingyang": 1000.0}}
    check_one_dc({0: "n1", 1: "n2"}, res, "zhongwei")
    with pytest.raises(GangError, match="left data center 'zhongwei'") as e:
        check_one_dc({0: "n1", 1: "n3"}, res, "zhongwei")
    assert e.value.nodes == {0: "zhongwei", 1: "qingyang"}
