"""Process groups on Linux, read from /proc: who belongs to a node, how much RSS.

Each ``ray start`` runs as the leader of a new session, so every daemon it
spawns (GCS, raylet, dashboard, agents, workers) keeps its process group id
after it exits. ``westflow down`` signals exactly those groups.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["group_members", "group_alive", "rss_bytes", "kill_groups"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, int] | None:
    """(pgid, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[2]), int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] == pgid:
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
