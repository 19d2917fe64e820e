"""Checked command-line values: argparse ``type=`` functions and the output directory.

A bad value ends in exit 2 with one line naming the flag, the value and what is allowed
(argparse prints an ``ArgumentTypeError`` as ``argument --days: ...``), never a traceback
deep in the simulator or a report of nonsense.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

from westflow.errors import SpecError, field_message

__all__ = ["number", "whole", "out_dir", "writable_dir"]


def _bad(text: str, allowed: str, problem: str = "Invalid") -> argparse.ArgumentTypeError:
    """argparse prints it after the flag: ``argument --days: Out of range value 'nan'; must be ...``."""
    return argparse.ArgumentTypeError(field_message("value", text, allowed, problem=problem))


def number(*, low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``); ASCII digits only."""
    allowed = f"a finite number {'>' if low_open else '>='} {low:g} and <= {high:g}"

    def parse(text: str) -> float:
        try:
            if not text.isascii():  # float() reads '٣' as 3.0
                raise ValueError(text)
            value = float(text)
        except ValueError:
            raise _bad(text, allowed) from None
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise _bad(text, allowed, "Out of range")
        return value

    return parse


def whole(*, low: int, high: int) -> Callable[[str], int]:
    """An integer in ``[low, high]``, written in ASCII digits."""
    allowed = f"an integer >= {low} and <= {high}"

    def parse(text: str) -> int:
        t = text.strip()
        if not t.isascii() or not t.lstrip("+-").isdigit() or len(t) > 20:
            raise _bad(text, allowed)
        value = int(t)
        if not low <= value <= high:
            raise _bad(text, allowed, "Out of range")
        return value

    return parse


def out_dir() -> Callable[[str], Path]:
    """A directory to write into: not empty, not an existing file (created and probed by :func:`writable_dir`)."""
    def parse(text: str) -> Path:
        if not text.strip() or "\0" in text:
            raise _bad(text, "a directory path")
        p = Path(text)
        if p.exists() and not p.is_dir():
            raise _bad(text, "a directory (or a path to create), not an existing file")
        return p

    return parse


def writable_dir(flag: str, path: Path) -> Path:
    """Create ``path`` if needed and prove it takes a file; SpecError (exit 2) naming ``flag`` otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpecError(flag, str(path), f"a directory westflow can create and write into ({reason})",
                        problem="Cannot write") from None
    return path
