"""hostprocs: identity, liveness while exiting, and killing only what is provably ours."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hostprocs as procs
from ray_cluster.local import LocalNetwork, load_profile
from ray_cluster.local.launcher import ENV_NETWORK_ID, STATE_FILE
from tests.builders import national

MARK = ("WESTFLOW_TEST_MARK", "ours-1234")
# A session leader with one child; both sleep (the child inherits the environment).
FAMILY = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
         "time.sleep(60)"


def _spawn(code: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **(env or {})},
                            start_new_session=True)


def _wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def reaped() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed (their groups) and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        try:
            os.killpg(p.pid, 9)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)


def test_stat_names_state_group_and_a_stable_start() -> None:
    st = procs.stat(os.getpid())
    assert st is not None and st.state in ("R", "S") and st.pgid == os.getpgid(0)
    assert st == procs.stat(os.getpid()) and isinstance(st.start, int) and st.start > 0
    assert procs.stat(2**22 + 12345) is None  # above pid_max: never a process


def test_running_counts_an_exiting_process_until_its_last_thread_ends(
        reaped: list[subprocess.Popen[bytes]]) -> None:
    # The leader thread exits first (a zombie), another thread runs on: as weed does while it exits.
    p = _spawn("import ctypes, threading, time\n"
               "threading.Thread(target=time.sleep, args=(1.5,)).start()\n"
               "ctypes.CDLL(None).pthread_exit(None)\n")
    reaped.append(p)
    _wait_for(lambda: (st := procs.stat(p.pid)) is not None and st.state == "Z")
    assert procs.running(p.pid), "a thread still runs: not gone yet"
    _wait_for(lambda: not procs.running(p.pid))
    assert p.poll() is not None  # and only then can it be reaped


def test_members_and_kill_touch_only_marked_processes(reaped: list[subprocess.Popen[bytes]]) -> None:
    ours = _spawn(FAMILY, dict([MARK]))
    theirs = _spawn(FAMILY)  # another group, as a reused pgid would be: no marker
    reaped += [ours, theirs]
    _wait_for(lambda: len(procs.members(ours.pid, MARK)) == 2)
    assert procs.members(theirs.pid, MARK) == []
    assert procs.rss_bytes(procs.members(ours.pid, MARK)) > 1 << 20

    procs.kill_members([ours.pid, theirs.pid], MARK, grace_s=5)
    assert procs.members(ours.pid, MARK) == []
    assert ours.wait(timeout=5) is not None
    assert theirs.poll() is None and procs.running(theirs.pid)


def test_a_renamed_process_still_carries_its_marker(reaped: list[subprocess.Popen[bytes]]) -> None:
    """Ray's agents and workers rename themselves (setproctitle), leaving empty entries before
    their environment; psutil's ``environ()`` reads ``{}`` there, and ``down`` left them running.
    The same block here: an empty entry, then the marker (execve with a hand-made envp)."""
    code = ("import ctypes, sys\n"
            "libc = ctypes.CDLL(None)\n"
            "argv = (ctypes.c_char_p * 3)(b'/bin/sleep', b'60', None)\n"
            f"envp = (ctypes.c_char_p * 3)(b'', b'{MARK[0]}={MARK[1]}', None)\n"
            "libc.execve(b'/bin/sleep', argv, envp)\n")
    p = _spawn(code)
    reaped.append(p)
    _wait_for(lambda: procs.stat(p.pid) is not None and open(f"/proc/{p.pid}/comm").read().strip() == "sleep")
    import psutil

    assert psutil.Process(p.pid).environ() == {}  # what psutil reads of such a block
    assert procs.carries(p.pid, MARK) and procs.members(p.pid, MARK) == [p.pid]
    procs.kill_members([p.pid], MARK, grace_s=5)
    assert p.wait(timeout=5) is not None


def test_a_process_with_no_readable_environment_is_ours_by_the_files_it_writes(
        reaped: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """Ray's dashboard agent overwrites its whole environment with its title; it is known by its
    log files, open under the network's session dir. Another unmarked process is left alone."""
    session = tmp_path / "session"
    session.mkdir()
    log = session / "agent.out"
    ours = _spawn(f"import time; f = open({str(log)!r}, 'w'); time.sleep(60)", {"X": "1"})
    theirs = _spawn(f"import time; f = open({str(tmp_path / 'other.out')!r}, 'w'); time.sleep(60)")
    reaped += [ours, theirs]
    _wait_for(lambda: procs.writes_under(ours.pid, session))
    assert not procs.carries(ours.pid, MARK)
    assert procs.members(ours.pid, MARK) == []  # no marker, no files_under: not provably ours
    assert procs.members(ours.pid, MARK, files_under=session) == [ours.pid]
    assert procs.members(theirs.pid, MARK, files_under=session) == []
    procs.kill_members([ours.pid, theirs.pid], MARK, files_under=session, grace_s=5)
    assert ours.wait(timeout=5) is not None and theirs.poll() is None


def test_a_recorded_group_is_ours_only_with_the_network_id(
        tmp_path: Path, reaped: list[subprocess.Popen[bytes]]) -> None:
    ours = _spawn(FAMILY, {ENV_NETWORK_ID: "net-1"})
    reaped.append(ours)
    net = LocalNetwork(tmp_path, load_profile(national()).as_one_cluster())
    head = net.profile.dc_ids[0]
    _wait_for(lambda: len(procs.members(ours.pid, (ENV_NETWORK_ID, "net-1"))) == 2)
    for network_id, expected in (("net-1", {head: ours.pid}), ("net-2", {})):
        (tmp_path / STATE_FILE).write_text(json.dumps(
            {"network_id": network_id, "nodes": [{"dc": head, "pgid": ours.pid, "log": "x"}]}))
        assert net.recorded() == expected
    (tmp_path / STATE_FILE).write_text(json.dumps(
        {"network_id": "net-1", "nodes": [{"dc": head, "pgid": ours.pid, "log": "x"}]}))
    assert net.down() == [head]
    assert ours.wait(timeout=5) is not None and not (tmp_path / STATE_FILE).exists()


def test_down_with_a_stale_state_file_kills_nothing_of_others(
        tmp_path: Path, reaped: list[subprocess.Popen[bytes]]) -> None:
    other = _spawn(FAMILY)  # holds the pgid the stale ray.json names
    reaped.append(other)
    net = LocalNetwork(tmp_path, load_profile(national()).as_one_cluster())
    head = net.profile.dc_ids[0]
    (tmp_path / STATE_FILE).write_text(json.dumps(
        {"network_id": "an-old-network", "nodes": [{"dc": head, "pgid": other.pid, "log": "x"}]}))
    assert net.recorded() == {} and not net.is_up()
    assert net.down() == []
    assert other.poll() is None and procs.running(other.pid)
    assert ENV_NETWORK_ID.startswith("WESTFLOW_")
