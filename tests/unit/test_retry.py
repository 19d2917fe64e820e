"""Retry policy: transient faults retried with backoff and logged; permanent ones fail at once."""

from __future__ import annotations

import pytest

from ray_cluster.retry import RetryPolicy, TransientError, is_transient, retry_call
from westflow.errors import EndpointUnreachable, InfeasibleError, ObjectMissing


def test_transient_fault_is_retried_with_growing_backoff() -> None:
    calls, sleeps, logs = [], [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("submission refused")
        return "ok"

    out = retry_call(flaky, RetryPolicy(attempts=4, base_s=0.5, factor=2, jitter=0), what="submit",
                     log_fn=logs.append, sleep=sleeps.append)
    assert out == "ok" and len(calls) == 3
    assert sleeps == [0.5, 1.0]
    assert len(logs) == 2 and "attempt 1/4" in logs[0] and "submission refused" in logs[0]


def test_gives_up_after_the_bound() -> None:
    sleeps: list[float] = []
    with pytest.raises(EndpointUnreachable):
        retry_call(lambda: (_ for _ in ()).throw(EndpointUnreachable("down", endpoint="http://127.0.0.1:1")),
                   RetryPolicy(attempts=3, base_s=1, max_s=1.5, jitter=0), what="s3", log_fn=lambda m: None,
                   sleep=sleeps.append)
    assert sleeps == [1, 1.5]


@pytest.mark.parametrize("exc", [ObjectMissing("gone", bucket="b", key="k"), ValueError("bad")],
                         ids=["data-missing", "bug"])
def test_permanent_fault_fails_at_once(exc: Exception) -> None:
    calls: list[int] = []

    def boom() -> None:
        calls.append(1)
        raise exc

    with pytest.raises(type(exc)):
        retry_call(boom, RetryPolicy(attempts=5), what="x", sleep=lambda s: None)
    assert calls == [1]


def test_classification() -> None:
    assert is_transient(TimeoutError()) and is_transient(ConnectionError())
    assert not is_transient(InfeasibleError.__new__(InfeasibleError))
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
