"""The admission controller as `westflow up` runs it: a process of its own, on the live federation, HA.

Two `westflow controller` processes share the federation's SQLite queue. Only the leader
admits (a step's ticket here never runs the cycle itself); SIGKILL of the leader hands the
lease to the other within its lifetime (5 s) plus a cycle; SIGTERM gives the lease up at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from admission.controller import lease_name
from admission.lease import Leader
from admission.tickets import StepTicket
from admission.workqueue import AdmissionQueue
from ray_cluster.federation import Federation
from ray_cluster.local import LocalFederation
from tests.builders import make_spec
from westflow.config import CONFIG_DIR, load_network
from westflow.placement import get_policy
from westflow.tenants import load_tenants
from westflow_cli.admitting import MARKER_ENV, controller_pid, start_controller, stop_controller

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 60.0


def _holder(queue: AdmissionQueue, state: Path) -> str | None:
    fed = Federation.local(state)
    assert fed is not None
    lease = Leader(queue, holder="observer", name=lease_name(fed.scope)).current()
    return lease.holder if lease is not None else None


def _until(what: str, done: object, timeout_s: float = BOUND_S) -> float:
    start = time.monotonic()
    while not done():  # type: ignore[operator]
        assert time.monotonic() - start < timeout_s, f"{what} did not happen within {timeout_s:g} s"
        time.sleep(0.1)
    return time.monotonic() - start


def _admit(fed_state: Path, queue: AdmissionQueue, name: str) -> tuple[str, str]:
    """A step admitted by whoever leads (its ticket runs no cycle itself): ``(data center, admitted by)``."""
    base = load_network()
    fed = Federation.local(fed_state)
    assert fed is not None
    network = fed.grouped(base)
    _, totals = fed.capacity_and_totals(network)
    tenants = load_tenants(CONFIG_DIR, models={p.model for dc in network.data_centers for p in dc.pools})
    ticket = StepTicket(queue, name, controller=None, poll_s=0.1, scope=fed.scope)
    try:
        p = ticket.admit(make_spec(name=name, accelerator="cpu", cpus=0.1, memory_gb=0.1), network=network,
                         policy=get_policy("westflow"), totals=totals, tenants=tenants, owner="test")
    finally:
        ticket.finish()
    by = next(d.controller for d in queue.decisions(name) if d.kind == "admitted")
    return p.data_center, by


def test_controllers_as_processes_one_leads_and_the_other_takes_over(ray_federation: LocalFederation) -> None:
    state = ray_federation.state_dir
    queue = AdmissionQueue.local(state)
    first = start_controller(state)
    assert controller_pid(state) == first and start_controller(state) == first  # idempotent
    second = subprocess.Popen([sys.executable, "-m", "westflow_cli.main", "controller", "--state-dir", str(state)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, MARKER_ENV: "second"})
    try:
        _until("a leader", lambda: _holder(queue, state) is not None)
        leader = _holder(queue, state)
        assert leader is not None and leader.endswith((f":{first}", f":{second.pid}"))
        dc, by = _admit(state, queue, "proc-1")
        assert by == leader and dc in ray_federation.profile.dc_ids

        killed, survivor = (first, second.pid) if leader.endswith(f":{first}") else (second.pid, first)
        os.kill(killed, signal.SIGKILL)
        took = _until("the takeover", lambda: (_holder(queue, state) or "").endswith(f":{survivor}"))
        assert took <= 10.0, f"the other controller took over after {took:.1f} s"
        _, by = _admit(state, queue, "proc-2")
        assert by.endswith(f":{survivor}")
    finally:
        stop_controller(state)
        second.terminate()
        second.wait(BOUND_S)
    _until("the lease given up", lambda: _holder(queue, state) is None)  # SIGTERM: released, not left to expire
    assert controller_pid(state) is None


def test_the_exporter_says_what_westflow_status_says(ray_federation: LocalFederation) -> None:
    """One scrape of `westflow exporter --once` against the federation, beside `westflow status`'s read."""
    from prometheus_client.parser import text_string_to_metric_families

    out = subprocess.run([sys.executable, "-m", "westflow_cli.main", "exporter", "--once", "--state-dir",
                          str(ray_federation.state_dir)], cwd=ROOT, capture_output=True, text=True, timeout=BOUND_S)
    assert out.returncode == 0, out.stderr
    got: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(out.stdout):
        for s in fam.samples:
            if s.name in ("westflow_dc_accelerators_capacity", "westflow_dc_up"):
                got[(s.name, s.labels["dc"])] = got.get((s.name, s.labels["dc"]), 0.0) + s.value
    # status lists every node Ray knows, dead ones too (a DC an earlier test restarted has a dead node
    # beside its new one): a DC is up when a node of it is alive, and its capacity is its live nodes'.
    rows = [d for _, st in ray_federation.status().clusters for d in st.dcs]
    assert rows and {d.dc for d in rows} == set(ray_federation.profile.dc_ids)
    for dc in ray_federation.profile.dc_ids:
        alive = [d for d in rows if d.dc == dc and d.alive]
        assert got[("westflow_dc_up", dc)] == (1.0 if alive else 0.0), dc
        assert got.get(("westflow_dc_accelerators_capacity", dc), 0.0) == sum(d.accel_total for d in alive), dc


def test_the_leading_controller_meters_a_job_whose_step_died_before_writing_its_record(
        ray_federation: LocalFederation) -> None:
    """A westflow Ray job ends and nobody meters it (its step's process died between the job's end and the
    record's commit); the leading `westflow controller` reconciles Ray's job table and writes exactly one record,
    with Ray's own start and end."""
    from admission.metering import Meter
    from ray_cluster.metering_sync import job_metadata

    state = ray_federation.state_dir
    fed = Federation.local(state)
    assert fed is not None
    network = fed.grouped(load_network())
    live, _ = fed.capacity_and_totals(network)
    p = get_policy("westflow").place(make_spec(name="orphan-meter", accelerator="any:1", cpus=0.1, memory_gb=0.1),
                                     network, live)
    dispatcher = fed.dispatcher(p.ray_cluster)
    job_id = f"wf-orphan-meter-{os.getpid()}-{time.time_ns()}"
    dispatcher.submit(p, f"{sys.executable} -c 'import time; time.sleep(1)'", env={}, submission_id=job_id,
                      metadata=job_metadata(p, run_id="run-orphan", step="orphan_step"))
    client = dispatcher.client()
    _until("the job's end", lambda: str(getattr(client.get_job_info(job_id).status, "value", "")) == "SUCCEEDED")
    queue = AdmissionQueue.local(state)
    meter = Meter(queue)
    assert meter.known([job_id]) == set()  # the step never wrote it
    proc = subprocess.Popen([sys.executable, "-m", "westflow_cli.main", "controller", "--state-dir", str(state),
                             "--meter-every", "0.5"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _until("the reconciler's record", lambda: meter.known([job_id]) == {job_id})
    finally:
        proc.terminate()
        proc.wait(BOUND_S)
    info = client.get_job_info(job_id)
    [rec] = [r for r in meter.records() if r.ray_job_id == job_id]
    assert (rec.start, rec.end) == (info.start_time / 1000.0, info.end_time / 1000.0)
    assert (rec.run_id, rec.step, rec.status, rec.data_center) == ("run-orphan", "orphan_step", "SUCCEEDED",
                                                                   p.data_center)
    assert rec.accelerators == 1 and abs(rec.accelerator_hours - (rec.end - rec.start) / 3600) <= 0.01 * rec.hours
