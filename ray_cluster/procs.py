"""Processes on Linux, read from /proc: state, who belongs to a node, how much RSS.

Each ``ray start`` runs as the leader of a new session, so every daemon it
spawns (GCS, raylet, dashboard, agents, workers) keeps its process group id
after it exits. ``westflow down`` signals exactly those groups.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcStat", "stat", "running", "group_members", "group_alive", "rss_bytes", "kill_groups"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
_DEAD = ("Z", "X")


@dataclass(frozen=True, slots=True)
class ProcStat:
    state: str  # R, S, D, Z, X, ...
    pgid: int
    start: int  # clock ticks after boot: with the pid, identifies the process


def _parse(raw: str) -> ProcStat:
    fields = raw[raw.rindex(")") + 2:].split()
    return ProcStat(fields[0], int(fields[2]), int(fields[19]))


def stat(pid: int) -> ProcStat | None:
    """``pid``'s state, group and start time; None if it is gone (or /proc cannot say)."""
    try:
        return _parse(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def running(pid: int) -> bool:
    """Whether some thread of ``pid`` still runs (not exited: a leader thread may be a zombie alone)."""
    for task in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            if _parse(task.read_text()).state not in _DEAD:
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = stat(int(entry))
            if st is not None and st.state != "Z" and st.pgid == pgid:
                out.append(int(entry))
    return out


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def rss_bytes(pids: list[int]) -> int:
    """Sum of resident set sizes of ``pids`` (shared pages counted once per process)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def kill_groups(pgids: list[int], *, grace_s: float = 8.0) -> None:
    """SIGTERM every group, wait up to ``grace_s``, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for g in pgids:
            try:
                os.killpg(g, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(group_alive(g) for g in pgids):
            time.sleep(0.2)
        if not any(group_alive(g) for g in pgids):
            return
