"""CLI support for admission: the queue the flags name, and the controller process ``westflow up`` starts.

The controller runs as ``westflow controller`` in a process of its own (a new session, its
output in ``<state>/controller.log``), recorded in ``<state>/controller.json`` with its pid,
start time and a random marker in its environment: ``down`` signals it only when all three
still match, never a process that reuses its pid.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import hostprocs as procs
from admission.controller import as_held
from admission.rows import HOLDING, WorkloadRow
from admission.workqueue import AdmissionQueue
from westflow.admission_cycle import ledger_of
from westflow.config import CONFIG_DIR
from westflow.inventory import Network
from westflow.tenants import Ledger, Tenants, load_tenants

__all__ = ["queue_of", "tenants_of", "start_controller", "stop_controller", "controller_pid", "ADMISSION_URL_ENV",
           "CONTROLLER_FILE", "MARKER_ENV", "ledger_for"]

ADMISSION_URL_ENV = "WESTFLOW_ADMISSION_URL"
CONTROLLER_FILE = "controller.json"
MARKER_ENV = "WESTFLOW_CONTROLLER_MARK"


def queue_of(state_dir: str | Path, url: str | None = None) -> AdmissionQueue:
    """``url``, else ``$WESTFLOW_ADMISSION_URL``, else the SQLite queue in the state dir."""
    url = url or os.environ.get(ADMISSION_URL_ENV)
    return AdmissionQueue(url) if url else AdmissionQueue.local(state_dir)


def tenants_of(config_dir: str | None, network: Network) -> Tenants:
    return load_tenants(config_dir or CONFIG_DIR, models={p.model for dc in network.data_centers for p in dc.pools})


def _record(state_dir: Path) -> dict[str, object]:
    try:
        data = json.loads((state_dir / CONTROLLER_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def controller_pid(state_dir: str | Path) -> int | None:
    """The pid of the controller ``up`` started here, if that very process still runs."""
    rec = _record(Path(state_dir))
    pid, start, mark = rec.get("pid"), rec.get("pid_start"), rec.get("marker")
    if not isinstance(pid, int) or not isinstance(mark, str):
        return None
    if procs.start_time(pid) != start or not procs.carries(pid, (MARKER_ENV, mark)) or not procs.running(pid):
        return None
    return pid


def start_controller(state_dir: str | Path, *, config_dir: str | None = None, url: str | None = None) -> int:
    """Start ``westflow controller`` for this state dir unless it runs; its pid."""
    state = Path(state_dir).resolve()
    running = controller_pid(state)
    if running is not None:
        return running
    state.mkdir(parents=True, exist_ok=True)
    mark = secrets.token_hex(8)
    cmd = [sys.executable, "-m", "westflow_cli.main"]
    if config_dir:
        cmd += ["--config-dir", config_dir]
    cmd += ["controller", "--state-dir", str(state)]
    if url:
        cmd += ["--db", url]
    env = dict(os.environ, **{MARKER_ENV: mark})
    with open(state / "controller.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    tmp = state / (CONTROLLER_FILE + ".tmp")
    tmp.write_text(json.dumps({"pid": proc.pid, "pid_start": procs.start_time(proc.pid), "marker": mark,
                               "started_at": time.time()}))
    tmp.replace(state / CONTROLLER_FILE)
    return proc.pid


def stop_controller(state_dir: str | Path, timeout_s: float = 15.0) -> bool:
    """Stop the controller ``up`` started (SIGTERM: it gives its lease up; SIGKILL after ``timeout_s``)."""
    state = Path(state_dir)
    pid = controller_pid(state)
    (state / CONTROLLER_FILE).unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while procs.running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if procs.running(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def ledger_for(tenants: Tenants, rows: Iterable[WorkloadRow]) -> Ledger:
    """What the holding rows use, per tenant (the cycle's own :class:`~westflow.tenants.Ledger`)."""
    return ledger_of(tenants, [as_held(r) for r in rows if r.state in HOLDING])
