"""The Dagster resource's admission path on a real SQLite queue, with the Ray side faked at its seams.

What is faked: the federation's live capacity (a fixed snapshot) and the dispatcher (no Ray).
What runs is the product's: the resource's tenant rule, the ticket, the self-serve controller,
the cycle, the queue; failover and preemption through ``run_with_failover``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from admission.workqueue import AdmissionQueue
from pipelines import metadata as md
from pipelines import resources as res
from pipelines.resources import WestflowResource
from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import JobOutcome
from ray_cluster.failover import Attempt
from tests.builders import make_spec, national
from westflow.capacity import DCCapacity
from westflow.placement import Placement
from westflow.spec import WorkloadSpec


def _caps(free: int = 4) -> dict[str, DCCapacity]:
    """Every DC of the national inventory with ``free`` of each of its accelerator models."""
    return {d.id: DCCapacity(free={p.model: free for p in d.pools}, free_cpus=64, free_memory_gb=512,
                             utilisation=0.0) for d in national().data_centers}


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __getattr__(self, level: str) -> Any:
        return lambda msg: self.lines.append(f"{level}: {msg}")


class _Run:
    def __init__(self, tags: dict[str, str]) -> None:
        self.tags = tags


class _Ctx:
    """What WestflowResource reads from an AssetExecutionContext."""

    def __init__(self, run_id: str, step: str, tags: dict[str, str] | None = None) -> None:
        self.run_id, self.log, self.asset_key = run_id, _Log(), dg.AssetKey(step)
        self.run = _Run(tags or {})
        self.events: list[Any] = []
        self._step = step

    def get_step_execution_context(self) -> Any:
        class _S:
            class step:  # noqa: N801 - mimics StepExecutionContext.step.key
                key = self._step
        return _S

    def log_event(self, event: Any) -> None:
        self.events.append(event)


class _Dispatcher:
    access = ClusterAccess("http://dashboard", "t")
    verdict: str | None = "lost"

    def ran_in(self, job_id: str) -> str:
        return "somewhere"

    def node_loss_verdict(self, job_id: str, dc: str) -> str | None:
        return self.verdict and f"{dc} {self.verdict}"

    def logs(self, job_id: str) -> str:
        return "the job's log"


class _Federation:
    """The clusters as the resource composes them: a fixed live snapshot, one fake dispatcher."""

    def __init__(self, live: dict[str, DCCapacity]) -> None:
        self.live = live
        self.dispatcher_obj = _Dispatcher()
        self.scope = "fed-test"

    def grouped(self, network: Any) -> Any:
        return network

    def dispatcher(self, name: str) -> Any:
        return self.dispatcher_obj

    def read(self) -> dict[str, Any]:
        return {}  # (every cluster answered: nothing to read again)

    def capacity_and_totals(self, network: Any, reads: Any = None) -> tuple[dict[str, DCCapacity],
                                                                            dict[str, DCCapacity]]:
        return self.live, self.live


def _resource(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fed: _Federation, spec: WorkloadSpec,
              **kw: Any) -> WestflowResource:
    monkeypatch.setattr(WestflowResource, "federation", lambda self, log_fn=None: fed)
    monkeypatch.setattr(res, "declared_spec", lambda context, network: spec)
    monkeypatch.setattr(res, "declared_inputs", lambda context: [])
    monkeypatch.setattr(res, "declared_project", lambda context: None)  # ship no working dir
    return WestflowResource(state_dir=str(tmp_path), **kw)


def _holding(tmp_path: Path) -> list[str]:
    return [f"{r.data_center}/{r.accelerator_model}" for r in AdmissionQueue.local(tmp_path).holding()]


def test_run_is_admitted_through_the_queue_fails_over_and_releases(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    fed = _Federation(_caps(2))
    r = _resource(monkeypatch, tmp_path, fed, make_spec(name="train", accelerator="any:2"))
    seen: list[list[str]] = []

    def launch(self: WestflowResource, context: Any, d: Any, module: str, args: Any, p: Placement, n: int,
               code: Any = None, **kw: Any) -> Attempt[dict[str, Any]]:
        seen.append(_holding(tmp_path))
        return Attempt(p, JobOutcome(f"job-{n}", "FAILED" if len(seen) == 1 else "SUCCEEDED"), {})

    monkeypatch.setattr(WestflowResource, "launch", launch)
    ctx = _Ctx("run-1", "train")
    result = r.run(ctx, module="jobs.train")  # type: ignore[arg-type]
    assert len(seen) == 2 and len(seen[0]) == len(seen[1]) == 1  # the lost DC's hold went back to the queue first
    assert seen[0] != seen[1]
    assert result.metadata and result.metadata[md.DATA_CENTER] == seen[1][0].split("/")[0]
    assert result.metadata[md.TENANT] == "default" and result.metadata[md.PREEMPTIONS] == 0
    assert _holding(tmp_path) == []  # released when the job ended
    q = AdmissionQueue.local(tmp_path)
    key = str(result.metadata[md.QUEUE_KEY])
    assert key == "run-1:train"
    assert [d.kind for d in q.decisions(key)] == ["queued", "admitted", "requeued", "resumed", "finished"]
    assert any("queued as run-1:train" in line for line in ctx.log.lines)

    fed.dispatcher_obj.verdict = None  # a plain job failure: the step fails, its row too
    seen.clear()
    with pytest.raises(dg.Failure):
        r.run(_Ctx("run-2", "train"), module="jobs.train")  # type: ignore[arg-type]
    assert _holding(tmp_path) == []
    row = q.get("run-2:train")
    assert row is not None and row.state == "failed"


def test_a_step_that_must_wait_waits_and_runs_when_capacity_frees(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    live = {dc: c for dc, c in _caps(0).items()}
    live["zhongwei"] = DCCapacity(free={"H20": 2, "A800": 0}, free_cpus=64, free_memory_gb=512, utilisation=0.5)
    fed = _Federation(live)
    spec = make_spec(name="score", accelerator="H20:2")
    r = _resource(monkeypatch, tmp_path, fed, spec)
    first_runs, second_admitted = threading.Event(), threading.Event()
    order: list[str] = []

    def launch(self: WestflowResource, context: Any, d: Any, module: str, args: Any, p: Placement, n: int,
               code: Any = None, **kw: Any) -> Attempt[dict[str, Any]]:
        order.append(context.run_id)
        if context.run_id == "run-a":
            first_runs.set()
            assert not second_admitted.wait(1.0)  # b waits in the queue while a holds the only 2 H20
        return Attempt(p, JobOutcome(f"job-{context.run_id}", "SUCCEEDED"), {})

    monkeypatch.setattr(WestflowResource, "launch", launch)
    a = threading.Thread(target=lambda: r.run(_Ctx("run-a", "s"), module="jobs.train"))  # type: ignore[arg-type]
    a.start()
    assert first_runs.wait(30)
    ctx_b = _Ctx("run-b", "s")
    result = r.run(ctx_b, module="jobs.train")  # type: ignore[arg-type]
    second_admitted.set()
    a.join(30)
    assert order == ["run-a", "run-b"]
    assert result.metadata and result.metadata[md.DATA_CENTER] == "zhongwei" and result.metadata[md.WAIT_S] > 0
    assert any("waiting" in line and "zhongwei" in line for line in ctx_b.log.lines)


def test_the_tenant_comes_from_the_deployment_not_the_asset_author(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    fed = _Federation(_caps(4))
    launched: list[str] = []

    def launch(self: WestflowResource, context: Any, d: Any, module: str, args: Any, p: Placement, n: int,
               code: Any = None, **kw: Any) -> Attempt[dict[str, Any]]:
        launched.append(p.spec.tenant)
        return Attempt(p, JobOutcome("job", "SUCCEEDED"), {})

    monkeypatch.setattr(WestflowResource, "launch", launch)
    r = _resource(monkeypatch, tmp_path, fed, make_spec(name="s", accelerator="cuda:1"), tenant="recsys")
    assert r.run(_Ctx("r1", "s"), module="jobs.train").metadata[md.TENANT] == "recsys"  # type: ignore[arg-type,index]
    tagged = r.run(_Ctx("r2", "s", {res.TENANT_TAG: "retail-ai"}), module="jobs.train")  # type: ignore[arg-type]
    assert tagged.metadata and tagged.metadata[md.TENANT] == "retail-ai"
    with pytest.raises(dg.Failure, match="nobody"):  # a tag naming no configured tenant
        r.run(_Ctx("r3", "s", {res.TENANT_TAG: "nobody"}), module="jobs.train")  # type: ignore[arg-type]
    r = _resource(monkeypatch, tmp_path, fed, make_spec(name="s", tenant="recsys", accelerator="cuda:1"),
                  tenant="retail-ai")
    with pytest.raises(dg.Failure, match="names tenant 'recsys'"):  # the author cannot pick who pays
        r.run(_Ctx("r4", "s"), module="jobs.train")  # type: ignore[arg-type]
    assert launched == ["recsys", "retail-ai"]
    assert AdmissionQueue.local(tmp_path).get("r3:s") is None  # nothing was queued for the refused ones


def test_a_preempted_step_stops_its_job_waits_and_continues(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    live = _caps(0)
    live["zhangjiakou"] = DCCapacity(free={"A800": 8}, free_cpus=64, free_memory_gb=512, utilisation=0.0)
    fed = _Federation(live)
    be = make_spec(name="train", accelerator="A800:8", priority_class="best-effort")
    r = _resource(monkeypatch, tmp_path, fed, be, preemption_grace_s=0.0)
    stopped = threading.Event()
    attempts: list[str] = []

    class _Stoppable(_Dispatcher):
        def stop(self, job_id: str) -> None:
            stopped.set()

        def wait(self, job_id: str) -> JobOutcome:
            if job_id.endswith("-0"):  # the first attempt runs until stopped
                assert stopped.wait(60)
                return JobOutcome(job_id, "STOPPED", "stopped")
            return JobOutcome(job_id, "SUCCEEDED")

    fed.dispatcher_obj = _Stoppable()

    def launch(self: WestflowResource, context: Any, d: Any, module: str, args: Any, p: Placement, n: int,
               code: Any = None, preempted: threading.Event | None = None, grace_s: float = 0.0,
               ) -> Attempt[dict[str, Any]]:
        attempts.append(f"{context.run_id}@{p.data_center}")
        if context.run_id != "train-run":
            return Attempt(p, JobOutcome("rt-job", "SUCCEEDED"), {})
        job = f"job-{n}"
        done = threading.Event()
        watcher = threading.Thread(target=self._stop_when_preempted, args=(context, d, job, preempted, done, grace_s))
        watcher.start()
        try:
            return Attempt(p, d.wait(job), {})
        finally:
            done.set()
            watcher.join()

    monkeypatch.setattr(WestflowResource, "launch", launch)
    out: dict[str, Any] = {}
    ctx = _Ctx("train-run", "train")
    t = threading.Thread(target=lambda: out.update(r=r.run(ctx, module="jobs.train")))  # type: ignore[arg-type]
    t.start()
    q = AdmissionQueue.local(tmp_path)
    deadline = time.monotonic() + 60
    while not q.holding():  # the training is admitted and "runs"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    rt = make_spec(name="rt", tier="realtime", origin="beijing", accelerator="A800:8")
    r_rt = _resource(monkeypatch, tmp_path, fed, rt)
    rt_result = r_rt.run(_Ctx("rt-run", "rt"), module="jobs.etl")  # type: ignore[arg-type]
    t.join(60)
    assert not t.is_alive() and stopped.is_set()
    assert attempts == ["train-run@zhangjiakou", "rt-run@zhangjiakou", "train-run@zhangjiakou"]
    assert rt_result.metadata and rt_result.metadata[md.DATA_CENTER] == "zhangjiakou"
    result = out["r"]
    assert result.metadata[md.PREEMPTIONS] == 1
    assert any(md.PREEMPTED in e.metadata for e in ctx.events)
    kinds = [d.kind for d in q.decisions("train-run:train") if d.kind != "waiting"]
    assert kinds == ["queued", "admitted", "preempting", "requeued", "resumed", "finished"], kinds


def test_status_lists_what_admitted_steps_hold_and_what_waits(tmp_path: Path) -> None:
    from admission.controller import placement_summary
    from admission.lease import Leader
    from admission.rows import Admission, CycleWrite
    from admission.specjson import spec_to_json
    from ray_cluster.local import LocalNetwork, load_profile
    from westflow_cli.localnet import reservations_text

    net = LocalNetwork(tmp_path, load_profile(national()).as_one_cluster())
    assert "nothing running; 0 pending" in reservations_text(net)
    q = AdmissionQueue.local(tmp_path)
    spec = make_spec(name="x", accelerator="H20:2")
    for key in ("k1", "k2"):
        q.submit(key, tenant="default", priority_class="production", priority=0, spec_name="x",
                 spec_json=spec_to_json(spec), max_wait_s=60, owner="dagster run r1 step s1")
    lease = Leader(q, holder="t").acquire()
    assert lease is not None
    p = res.get_policy("westflow").place(spec, national())
    q.apply(CycleWrite(admitted=(Admission("k1", p.data_center, p.ray_cluster, p.region, "cuda", "H20", 2, 2.0,
                                           4.0, placement_summary(p), ""),)), lease)
    text = reservations_text(net)
    assert "k1" in text and p.data_center in text and "2 x H20" in text and "1 pending" in text
    assert "not running" in text  # no controller process: steps run the cycle themselves
