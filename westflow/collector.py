"""Pausing CPython's cyclic garbage collector around work that allocates much and makes no cycles.

An admission cycle keeps about ten objects per decision alive (its result, each placement's lazy
explanation) and makes no reference cycles (reference counting frees everything it drops). With
the collector on, those survivors set off young-generation scans by the hundred and a scan of the
whole heap while the cycle runs: on the national admission bench 15-20 % of the cycle's CPU time.
Paused, the collector scans them once, after the cycle, as one young generation (~20 ms there).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused"]


@contextmanager
def paused() -> Iterator[None]:
    """Run the block with the cyclic collector off; it resumes after, unless it was off before.

    Process-wide: another thread's garbage cycles wait until the block ends (none is lost). Blocks
    may overlap across threads: the first to pause a running collector resumes it.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
