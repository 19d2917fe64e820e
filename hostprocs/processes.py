"""Processes of this host, read through psutil: identity, liveness, ownership, memory.

A process is known by its pid *and* its start time (a pid is recycled, the pair
is not). Each ``ray start`` runs as the leader of a new session, so every daemon
it spawns (GCS, raylet, dashboard, agents, workers) keeps its process group id;
the launcher also puts a marker in their environment (``KEY=<random id>``), so
``westflow down`` signals only processes that provably belong to the network it
started, never whatever now holds a recycled pid or group id.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["ProcStat", "stat", "start_time", "running", "carries", "carrying", "writes_under", "members", "rss_bytes",
           "pss_bytes", "kill_members"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, PermissionError)
_STATE = {psutil.STATUS_RUNNING: "R", psutil.STATUS_SLEEPING: "S", psutil.STATUS_DISK_SLEEP: "D",
          psutil.STATUS_STOPPED: "T", psutil.STATUS_TRACING_STOP: "t", psutil.STATUS_ZOMBIE: "Z",
          psutil.STATUS_DEAD: "X", psutil.STATUS_IDLE: "I"}
_DEAD = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
Marker = tuple[str, str]  # an environment variable every process of ours carries: (name, value)


@dataclass(frozen=True, slots=True)
class ProcStat:
    state: str  # R, S, D, Z, X, ... (as in /proc/<pid>/stat)
    pgid: int
    start: int  # clock ticks after boot: with the pid, identifies the process


def stat(pid: int) -> ProcStat | None:
    """``pid``'s state, group and start time; None if it is gone (or cannot be read)."""
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            status, created = p.status(), p.create_time()
        pgid = os.getpgid(pid)
    except _GONE:
        return None
    ticks = round((created - psutil.boot_time()) * _CLK_TCK)
    return ProcStat(_STATE.get(status, "?"), pgid, ticks)


def start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch, as psutil says), or None if it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except _GONE:
        return None


def running(pid: int) -> bool:
    """Whether some thread of ``pid`` still runs.

    Not the leader's state alone: while a process exits its leader thread can be a
    zombie while another thread still holds its sockets, and its cmdline reads empty.
    Every handle that asks gets the same answer until the last thread is gone.
    """
    try:
        tids = [t.id for t in psutil.Process(pid).threads()]
    except _GONE:
        return False
    for tid in tids:
        try:
            if psutil.Process(tid).status() not in _DEAD:
                return True
        except _GONE:
            continue
    return False


def carries(pid: int, marker: Marker) -> bool:
    """Whether ``pid``'s environment holds ``name=value``.

    Read from ``/proc/<pid>/environ`` by hand, not ``psutil.Process.environ()``: psutil
    stops at the first empty entry, and Ray's agents and workers rename themselves
    (``setproctitle``: ``ray::DashboardAgent``, ``ray::IDLE``), which leaves empty entries
    before the real environment; psutil then reads ``{}`` and ``down`` left them running.
    """
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return f"{marker[0]}={marker[1]}".encode() in raw.split(b"\0")


def writes_under(pid: int, root: Path) -> bool:
    """Whether ``pid`` holds a file open under ``root`` (its logs, for a Ray process)."""
    try:
        files = psutil.Process(pid).open_files()
    except _GONE:
        return False
    prefix = str(root.resolve()) + os.sep
    return any(f.path.startswith(prefix) for f in files)


def members(pgid: int, marker: Marker, *, files_under: Path | None = None) -> list[int]:
    """Live (non-zombie) pids in process group ``pgid`` that are provably ours: they carry
    ``marker`` in their environment, or hold a file open under ``files_under``.

    The second proof is for processes whose environment cannot be read: Ray's dashboard
    agent renames itself with a title long enough to overwrite its whole environment
    block, but it keeps its log files, under the network's own session dir, open.
    """
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) != pgid or p.status() in _DEAD:
                continue
        except _GONE:
            continue
        if carries(p.pid, marker) or (files_under is not None and writes_under(p.pid, files_under)):
            out.append(p.pid)
    return out


def pss_bytes(pids: list[int]) -> int:
    """Sum of proportional set sizes of ``pids``: a page shared by n processes counts 1/n in each, so the sum is
    what they hold together (RSS sums count Ray's forked dashboard modules' shared pages once per process)."""
    total = 0
    for pid in pids:
        try:
            total += int(getattr(psutil.Process(pid).memory_full_info(), "pss", 0))
        except _GONE:
            continue
    return total


def rss_bytes(pids: list[int]) -> int:
    """Sum of resident set sizes of ``pids`` (shared pages counted once per process)."""
    total = 0
    for pid in pids:
        try:
            total += int(psutil.Process(pid).memory_info().rss)
        except _GONE:
            continue
    return total


def carrying(marker: Marker) -> list[int]:
    """Live (non-zombie) pids of any process group that carry ``marker`` in their environment."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() in _DEAD:
                continue
        except _GONE:
            continue
        if carries(p.pid, marker):
            out.append(p.pid)
    return out


def marked(marker: Marker, also: Marker) -> list[int]:
    """Live (non-zombie) pids of any process group that carry both ``marker`` and ``also``."""
    return [pid for pid in carrying(marker) if carries(pid, also)]


def kill_members(pgids: list[int], marker: Marker, *, files_under: Path | None = None,
                 grace_s: float = 8.0, sig: signal.Signals = signal.SIGTERM, also: Marker | None = None) -> None:
    """Send ``sig`` (SIGTERM by default) to our processes of every group, wait up to ``grace_s``, then SIGKILL
    what is left; ``sig=SIGKILL`` kills at once, with no chance to clean up (a node crash). ``also``: processes
    of any group that carry ``marker`` and ``also`` are signalled with them (Ray runs each worker and job
    driver in a process group of its own).

    Only processes that carry ``marker`` are signalled, one by one (never ``killpg``):
    a recorded group id that now names someone else's group is left alone.
    """
    for step in dict.fromkeys((sig, signal.SIGKILL)):
        deadline = time.monotonic() + (grace_s if step != signal.SIGKILL else 5.0)
        signalled: set[int] = set()
        while time.monotonic() < deadline:
            left = [pid for g in pgids for pid in members(g, marker, files_under=files_under)]
            left += [pid for pid in (marked(marker, also) if also else []) if pid not in left]
            if not left:
                return
            for pid in left:
                if pid not in signalled:  # also catches workers spawned meanwhile
                    try:
                        os.kill(pid, step)
                    except (ProcessLookupError, PermissionError):
                        pass
                    signalled.add(pid)
            time.sleep(0.2)
