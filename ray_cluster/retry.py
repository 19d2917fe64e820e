"""Bounded retries with exponential backoff for transient faults.

Transient: a Ray Job submission refused or timing out, an S3 endpoint that
does not answer. Permanent: a spec that cannot be placed, data that is
missing, a bad credential — those fail at once with their reason.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from westflow.errors import (
    AccessDenied,
    BucketMissing,
    ConfigError,
    EndpointUnreachable,
    InfeasibleError,
    ObjectMissing,
    SpecError,
)

__all__ = ["RetryPolicy", "TransientError", "is_transient", "retry_call"]

T = TypeVar("T")
log = logging.getLogger("westflow.retry")


class TransientError(Exception):
    """Wrap a fault that is worth retrying."""


_PERMANENT: tuple[type[BaseException], ...] = (
    SpecError, ConfigError, InfeasibleError, ObjectMissing, BucketMissing, AccessDenied,
)
_TRANSIENT: tuple[type[BaseException], ...] = (
    TransientError, EndpointUnreachable, ConnectionError, TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True for faults a retry may cure; permanent ones are never retried."""
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, _TRANSIENT):
        return True
    # requests/urllib3/botocore connection faults, named to avoid importing them here
    name = type(exc).__name__
    if name in {"ConnectTimeout", "ReadTimeout", "ConnectTimeoutError", "ReadTimeoutError",
                "EndpointConnectionError", "ConnectionClosedError", "NewConnectionError"}:
        return True
    # requests' ConnectionError is an OSError, not the builtin ConnectionError (Ray's Jobs API client)
    return name == "ConnectionError" and type(exc).__module__.startswith("requests")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` tries in all; sleeps ``base_s * factor**n`` (capped, jittered) between."""

    attempts: int = 4
    base_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Invalid attempts {self.attempts!r}; must be >= 1.")
        if self.base_s < 0 or self.max_s < 0 or self.factor < 1:
            raise ValueError("Invalid backoff: base_s and max_s must be >= 0 and factor >= 1.")

    @classmethod
    def spanning(cls, seconds: float, *, base_s: float = 0.5, max_s: float = 4.0) -> RetryPolicy:
        """The fewest attempts whose backoff (without jitter) waits at least ``seconds`` in all."""
        policy = cls(attempts=1, base_s=base_s, max_s=max_s, jitter=0.0)
        waited, n = 0.0, 1
        while waited < seconds:
            waited += policy.delay(n)
            n += 1
        return cls(attempts=n, base_s=base_s, max_s=max_s, jitter=0.0)

    def total_s(self) -> float:
        """How long all the retries wait, without jitter."""
        return sum(self.delay(n) for n in range(1, self.attempts))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        d = min(self.max_s, self.base_s * self.factor ** (retry - 1))
        if self.jitter and rng is not None:
            d *= 1 + rng.uniform(-self.jitter, self.jitter)
        return d


def retry_call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    log_fn: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Call ``fn``; retry transient faults per ``policy``, logging each retry."""
    say = log_fn or log.warning
    rng = random.Random()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except BaseException as exc:
            if not transient(exc) or attempt == policy.attempts:
                if attempt > 1:
                    say(f"{what}: giving up after {attempt} attempts: {type(exc).__name__}: {exc}")
                raise
            wait = policy.delay(attempt, rng)
            say(f"{what}: attempt {attempt}/{policy.attempts} failed ({type(exc).__name__}: {exc}); "
                f"retrying in {wait:.2f} s")
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
