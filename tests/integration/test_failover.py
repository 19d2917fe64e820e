"""The failover matrix (issue 12): nightly_training through Dagster loses the data center running it.

Every kill point is a barrier, never a timer: the job holds right after an epoch's
checkpoint (jobs.train's ``--test-hold-after-epoch``: it writes ``held-<epoch>``
with the epochs this job trained, then waits for ``go``), the test kills the DC
while it holds, and each later step waits for an event (a new Ray job of the
run in another DC, the run's end), never a sleep. Kinds:

- ``a``: a worker DC's Ray node stopped with SIGTERM (what is left after a grace period is killed);
- ``b``: SIGKILL of every process of the node at once (a crash: nothing tells the GCS);
- ``c``: S3 down during the failover: S3 stops while the job holds, the node is killed, the step is
  placed again and its new job meets no S3. The product fails the step (it does not wait for S3),
  the failure's log tail naming the S3 endpoint; the checkpoints left are the complete ones up to
  the kill, nothing is half-written and no final model exists;
- ``d``: two DCs lost one after the other in one run: the job holds again in the DC it failed over
  to, that DC is killed too, the step ends on a third DC;
- ``e``: the head's DC killed (SIGKILL): in a single Ray cluster the head holds the GCS and the Jobs
  API, so the cluster is gone; the step fails within a bound naming the unreachable cluster and its
  URL, never hangs. This kind runs on its own one-node cluster (the head's DC, zhangjiakou), so
  bringing the cluster back costs one node, not the whole network;
- ``f``: a DC lost between placement and its job's start: the job, pinned there, would stay PENDING in
  Ray; the dispatcher stops it once Ray shows no live node of the DC, and reports the DC lost.

a, b, d: the step finishes on another accelerator DC, resumes from the last complete checkpoint,
trains no completed epoch twice (the ``trained-*`` files of every job) and ends with the same model,
bit for bit, as an uninterrupted run with the same seed.

Cost: one Dagster run per trial, 10 per kind. A test runs a batch of trials at once (``PAIR``: five,
four for d): runs of nightly_training's code sized to share one local DC, placed by the cheapest policy
(:mod:`tests.fixtures.training`), so they are placed in the same DC, hold there and lose it together;
they share the kill, Ray's verdict and the restart of the killed node, and their jobs start side by
side. Each run is checked on its own. d's batch is four: once zhongwei is lost all four go to helinger's
four NPUs and, after that, to guian; a batch split over two DCs would let a run that lost the first be
placed on the second just before it is killed too. One kill per test, of one DC (``_kill`` checks it).
The killed node is restarted after the runs end (a node starting beside a starting job can delete that
job's working dir).
No trial may fail or be excused: the defects the matrix found (a lost Pipes report, a failure blamed on
torch) are fixed, and their checks are plain assertions.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from jobs.train import HOLD_FLAG
from pipelines import metadata as md
from pipelines.assets import daily_features
from pipelines.resources import WestflowResource
from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import JOB_DC, Dispatcher
from ray_cluster.live import live_capacity
from ray_cluster.local import LocalNetwork, Ports, free_port, load_profile
from storage import CheckpointStore, S3Config, SeaweedServer
from tests.fixtures.training import BATCH, MATRIX_POLICY, nightly_training
from westflow.config import load_network
from westflow.errors import ClusterError, ObjectMissing
from westflow.inventory import Family
from westflow.placement import get_policy
from westflow.spec import parse_spec

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 4
TRAIN = {"epochs": EPOCHS, "batch_size": 128, "hidden": 16, "seed": 7}
ROWS = 20_000  # small on purpose: the checks are exact (bitwise), the time goes to Ray, not to training
# Trials (Dagster runs) per kind in `make test`: the full matrix, 10 of each (WESTFLOW_FAILOVER_TRIALS=N for fewer).
TRIALS = dict.fromkeys("abcde", 10)
TRIALS |= dict.fromkeys(TRIALS, int(os.environ["WESTFLOW_FAILOVER_TRIALS"])) if os.environ.get(
    "WESTFLOW_FAILOVER_TRIALS") else {}
# Runs per test, in one DC at once (tests.fixtures.training: BATCH fit one local DC). d: 4, the Ascend NPUs of
# helinger, where the cheapest policy places all of them once zhongwei is lost (the third DC is guian).
D_BATCH = 4
PAIR = {"a": BATCH, "b": BATCH, "c": BATCH, "d": D_BATCH, "e": BATCH}
BUCKETS = ("westflow-west", "westflow-east")
HEAD_LOST_AFTER_S = 3.0  # cluster_lost_after_s of kind e (the default, 20 s, in its first trial)
WAIT_S = 240.0


class _HoldingWestflow(WestflowResource):
    """Submits the step's jobs with jobs.train's test hook: ``hold`` is ``EPOCH[,EPOCH...]:DIR``."""

    hold: str

    def _entrypoint(self, module: str, args: Sequence[str], p: Any) -> str:
        return super()._entrypoint(module, [*args, HOLD_FLAG, self.hold], p)


@dataclasses.dataclass
class _Run:
    """One Dagster run of nightly_training in a thread; its job holds after each epoch of ``holds``."""

    model: str
    holds: tuple[int, ...]
    where: Path
    out: dict[str, dg.ExecuteInProcessResult] = dataclasses.field(default_factory=dict)
    thread: threading.Thread | None = None
    started: float = 0.0
    ended: float = 0.0

    def held(self, epoch: int) -> str | None:
        """What the job wrote when it held after ``epoch`` (the epochs it trained), None before."""
        try:
            return (self.where / f"held-{epoch}").read_text()
        except FileNotFoundError:
            return None

    @property
    def result(self) -> dg.ExecuteInProcessResult:
        assert self.thread is not None and not self.thread.is_alive(), f"run {self.model} has not ended"
        return self.out["r"]


def _resource(state_dir: Path, hold: str = "", **kw: Any) -> WestflowResource:
    kw = {"state_dir": str(state_dir), "poll_interval_s": 0.3, **kw}
    return _HoldingWestflow(hold=hold, **kw) if hold else WestflowResource(**kw)


def _materialize(westflow: WestflowResource, model: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([nightly_training], instance=dg.DagsterInstance.ephemeral(), resources={"westflow": westflow},
                          run_config={"ops": {"nightly_training": {"config": {"model": model, **TRAIN}}}},
                          raise_on_error=False)


def _start(kind: str, trials: Sequence[int], holds: Sequence[tuple[int, ...]], tmp_path: Path, state_dir: Path,
           **kw: Any) -> list[_Run]:
    """Start one Dagster run per trial, at once; trial ``trials[i]`` holds after the epochs ``holds[i]``."""
    if PAIR[kind] > 1:  # a batch goes to one DC (tests.fixtures.training)
        kw.setdefault("policy", MATRIX_POLICY)
    runs = []
    for t, h in zip(trials, holds, strict=True):
        where = tmp_path / f"run{t}"
        where.mkdir()
        run = _Run(f"failover-{kind}{t}", h, where)
        westflow = _resource(state_dir, f"{','.join(map(str, h))}:{where}", **kw)

        def go(run: _Run = run, westflow: WestflowResource = westflow) -> None:
            try:
                run.out["r"] = _materialize(westflow, run.model)
            finally:
                run.ended = time.monotonic()

        run.thread = threading.Thread(target=go, name=run.model)
        run.started = time.monotonic()
        run.thread.start()
        runs.append(run)
    return runs


def _release(runs: Sequence[_Run], timeout_s: float = 420) -> None:
    """Let any job still held go on (only a failed check leaves one), and wait for every run to end."""
    for run in runs:
        (run.where / "go").touch()
    for run in runs:
        assert run.thread is not None
        run.thread.join(timeout_s)
        assert not run.thread.is_alive(), f"run {run.model} did not end within {timeout_s:g} s"


def _until(what: str, done: Callable[[_Run], bool], runs: Sequence[_Run], timeout_s: float = WAIT_S) -> None:
    """Wait (polling) until ``done(run)`` for every run; fail at once, naming it, if a run ends before its event."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = []
        for run in runs:
            alive = run.thread is not None and run.thread.is_alive()
            if not done(run):
                assert alive, f"waiting for {what}: run {run.model} ended first"
                pending.append(run.model)
        if not pending:
            return
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:g} s for {pending}"
        time.sleep(0.1)


def _jobs(net: LocalNetwork | Any, run: _Run) -> list[Any]:
    """The Ray jobs of ``run`` (its model name is in the entrypoint), oldest first."""
    jobs = [j for j in net.job_client().list_jobs() if f" --model {run.model} " in f"{j.entrypoint} "]
    return sorted(jobs, key=lambda j: j.start_time or 0)


def _running_dc(net: LocalNetwork, run: _Run) -> tuple[str, str]:
    """``(dc, dagster run id)`` of the run's job that runs now (exactly one)."""
    running = [j for j in _jobs(net, run) if j.status == "RUNNING"]
    assert len(running) == 1, f"{run.model}: {len(running)} running jobs"
    return running[0].metadata[JOB_DC], running[0].metadata["westflow.dagster_run_id"]


def _latest_checkpoint(config: S3Config, run: _Run, run_id: str) -> int | None:
    return max((s for b in BUCKETS if (s := CheckpointStore(
        config, b, f"models/{run.model}/runs/{run_id}/checkpoints").latest()) is not None), default=None)


def _hold_then_find(net: LocalNetwork, config: S3Config, runs: Sequence[_Run], n: int) -> dict[str, str]:
    """Wait until every run holds at its ``n``-th hold; check its checkpoint; ``{model: dc}``."""
    _until(f"hold {n + 1} of every run", lambda r: r.held(r.holds[n]) is not None, runs)
    where = {}
    for run in runs:
        dc, run_id = _running_dc(net, run)
        seen = _latest_checkpoint(config, run, run_id)
        assert seen == run.holds[n], f"{run.model}: the held job's latest checkpoint is {seen}, not {run.holds[n]}"
        where[run.model] = dc
    return where


def _kill(net: LocalNetwork, dcs: set[str], sig: signal.Signals) -> None:
    """Stop the one DC where the runs hold (two, stopped one after the other, would let a run that lost the
    first be placed on the second just before it goes too: its job would wait for a node that is gone)."""
    head = net.profile.dc_ids[0]
    assert head not in dcs, f"the runs hold in the head's DC {head}: that is kind e, not this one"
    assert len(dcs) == 1, f"the runs hold in {sorted(dcs)}, not in one DC"
    net.stop_node(next(iter(dcs)), sig=sig)


def _replaced(net: LocalNetwork, lost: dict[str, str]) -> Callable[[_Run], bool]:
    """Whether a run's latest job was submitted outside the DC it just lost."""
    return lambda r: any(j.metadata[JOB_DC] != lost[r.model] for j in _jobs(net, r)[-1:])


def _meta(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    mat = result.get_asset_materialization_events()[-1].event_specific_data.materialization  # type: ignore[union-attr]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _failovers(result: dg.ExecuteInProcessResult) -> list[tuple[str, str]]:
    obs = [e.event_specific_data.asset_observation.metadata  # type: ignore[union-attr]
           for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    return [(str(o[md.FAILOVER_FROM].value), str(o[md.FAILOVER_TO].value)) for o in obs]


def _final(config: S3Config, model: str) -> dict[str, np.ndarray]:
    for bucket in BUCKETS:
        try:
            return CheckpointStore(config, bucket, f"models/{model}/final").load()[0]
        except ObjectMissing:
            continue
    raise AssertionError(f"no final model {model}")


def _epochs(first: int, last: int) -> str:
    return ",".join(str(e) for e in range(first, last + 1))


def _trained(run: _Run) -> list[list[int]]:
    """The epochs each job of the run trained (jobs.train's test hook), jobs in the order they trained."""
    jobs = [[int(e) for e in f.read_text().split(",")] for f in run.where.glob("trained-*")
            if not f.name.endswith(".tmp")]
    return sorted(jobs, key=lambda epochs: epochs[0])


def _check_metered(run: _Run, lost: Sequence[str], finished: str, state_dir: Path) -> None:
    """Metering (issue 15): one record per attempt, each in its DC, in order; the lost ones metered up to their
    end as Ray reports it, not as succeeded; the last one succeeded."""
    from admission.metering import Meter
    from admission.workqueue import AdmissionQueue

    recs = sorted((r for r in Meter(AdmissionQueue.local(state_dir)).records() if r.run_id == run.result.run_id),
                  key=lambda r: r.start)
    assert [r.data_center for r in recs] == [*lost, finished], f"{run.model}: metered {recs}"
    assert [r.status == "SUCCEEDED" for r in recs] == [False] * len(lost) + [True], [r.status for r in recs]
    assert all(r.end > r.start and r.accelerator_hours > 0 for r in recs)


def _check_finished(run: _Run, lost: Sequence[str], config: S3Config, reference: dict[str, np.ndarray],
                    state_dir: Path) -> None:
    """The run lost ``lost`` (in order) and finished on another accelerator DC as if nothing happened.
    """
    result = run.result
    assert result.success, f"{run.model} failed"
    meta = _meta(result)
    finished = meta[md.DATA_CENTER]
    assert finished not in lost and meta[md.RAN_IN] == finished
    assert load_network().dc(finished).families & {Family.CUDA, Family.CANN}  # still an accelerator site
    assert all(dc in meta[md.FAILOVERS] for dc in lost)
    moves = _failovers(result)
    assert [a for a, _ in moves] == list(lost) and moves[-1][1] == finished
    assert len({*lost, finished}) == len(lost) + 1  # a new DC each time
    _check_metered(run, lost, finished, state_dir)
    # one job per attempt; each resumed from the checkpoint where the one before was killed; no epoch twice
    jobs = _trained(run)
    assert len(jobs) == len(lost) + 1, f"{run.model}: jobs trained {jobs}"
    assert [e for epochs in jobs for e in epochs] == list(range(1, EPOCHS + 1)), f"{run.model}: jobs trained {jobs}"
    assert [epochs[-1] for epochs in jobs[:-1]] == list(run.holds)
    starts = (0, *run.holds)
    for n, hold in enumerate(run.holds):
        assert run.held(hold) == _epochs(starts[n] + 1, hold), f"{run.model}: attempt {n + 1} retrained an epoch"
    final = _final(config, run.model)
    assert final.keys() == reference.keys()
    for k in final:
        np.testing.assert_array_equal(final[k], reference[k], err_msg=f"{run.model}: {k}")
    assert meta.get("resumed_from_epoch") == run.holds[-1], f"{run.model}: the job's own report is missing: {meta}"
    assert meta["resumed_from_epoch"] + meta["epochs_this_run"] == EPOCHS


# -- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def restore_network(ray_network: LocalNetwork) -> Iterator[None]:
    """Later modules share the network: bring back whatever the last trial stopped."""
    yield
    ray_network.up()  # also starts S3 if it is down


@pytest.fixture(scope="module")
def reference(ray_network: LocalNetwork) -> dict[str, np.ndarray]:
    """The features, and the model of an uninterrupted run with the same seed."""
    ray_network.up()
    feats = dg.materialize([daily_features], instance=dg.DagsterInstance.ephemeral(),
                           resources={"westflow": _resource(ray_network.state_dir)},
                           run_config={"ops": {"daily_features": {"config": {"rows": ROWS, "seed": 3}}}})
    assert feats.success
    ref = _materialize(_resource(ray_network.state_dir), "failover-ref")
    assert ref.success and _meta(ref)["resumed_from_epoch"] == -1
    return _final(S3Config.load(ray_network.state_dir), "failover-ref")


def _holds(trials: Sequence[int], n: int = 1) -> list[tuple[int, ...]]:
    """Each run's kill points: one epoch (1, 2 or 3 in turn), or two increasing ones below EPOCHS."""
    return [(1 + t % (EPOCHS - 1),) if n == 1 else [(1, 2), (1, 3), (2, 3)][t % 3] for t in trials]


def _trials(kind: str, name: str) -> Any:
    """Parametrize a test by ``trials``: the kind's trials, ``PAIR[kind]`` at a time (ids ``a-sigterm-1-2``)."""
    n, k = TRIALS[kind], PAIR[kind]
    batches = [tuple(range(b, min(b + k, n))) for b in range(0, n, k)]
    return pytest.mark.parametrize("trials", batches, ids=[
        f"{kind}-{name}-" + "-".join(str(t + 1) for t in b) for b in batches])


def _restored(net: LocalNetwork) -> None:
    """Bring back what an earlier test left down (normally nothing: each test restores what it stops);
    a dashboard read when every node is alive, instead of ``up()``'s process scan."""
    try:
        alive = {n.dc for n in net.reader().nodes() if n.alive}
    except ClusterError:
        alive = set()
    if not set(net.profile.dc_ids) <= alive:
        net.up()


# -- a, b: a worker DC lost ---------------------------------------------------------------------------------


def _worker_lost(kind: str, sig: signal.Signals, trials: Sequence[int], ray_network: LocalNetwork,
                 reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    _restored(ray_network)
    config = S3Config.load(ray_network.state_dir)
    runs = _start(kind, trials, _holds(trials), tmp_path, ray_network.state_dir)
    try:
        where = _hold_then_find(ray_network, config, runs, 0)
        _kill(ray_network, set(where.values()), sig)
    finally:
        _release(runs)
        ray_network.up()  # after the run: a node starting beside a starting job can delete its working dir
    for run in runs:
        _check_finished(run, [where[run.model]], config, reference, ray_network.state_dir)


@_trials("a", "sigterm")
def test_worker_dc_lost_by_sigterm_resumes_elsewhere(trials: tuple[int, ...], ray_network: LocalNetwork,
                                                     reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    _worker_lost("a", signal.SIGTERM, trials, ray_network, reference, tmp_path)


@_trials("b", "sigkill")
def test_worker_dc_lost_by_sigkill_resumes_elsewhere(trials: tuple[int, ...], ray_network: LocalNetwork,
                                                     reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    _worker_lost("b", signal.SIGKILL, trials, ray_network, reference, tmp_path)


# -- d: two DCs lost one after the other ----------------------------------------------------------------------


@_trials("d", "two-dcs")
def test_two_dcs_lost_in_one_run_end_on_a_third(trials: tuple[int, ...], ray_network: LocalNetwork,
                                                reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    _restored(ray_network)
    config = S3Config.load(ray_network.state_dir)
    runs = _start("d", trials, _holds(trials, 2), tmp_path, ray_network.state_dir)
    try:
        first = _hold_then_find(ray_network, config, runs, 0)
        _kill(ray_network, set(first.values()), signal.SIGTERM)
        second = _hold_then_find(ray_network, config, runs, 1)  # the failed-over job holds again
        assert all(second[m] != first[m] for m in second)
        _kill(ray_network, set(second.values()), signal.SIGTERM)
    finally:
        _release(runs)
        ray_network.up()
    for run in runs:
        _check_finished(run, [first[run.model], second[run.model]], config, reference, ray_network.state_dir)


# -- c: S3 down during the failover --------------------------------------------------------------------------


@_trials("c", "s3-down")
def test_s3_down_during_failover_fails_naming_s3_and_keeps_complete_checkpoints(
        trials: tuple[int, ...], ray_network: LocalNetwork, reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    _restored(ray_network)
    config = S3Config.load(ray_network.state_dir)
    s3 = SeaweedServer(ray_network.state_dir)
    runs = _start("c", trials, _holds(trials), tmp_path, ray_network.state_dir)
    run_ids: dict[str, str] = {}
    try:
        where = _hold_then_find(ray_network, config, runs, 0)
        run_ids = {r.model: _running_dc(ray_network, r)[1] for r in runs}
        s3.stop()
        _kill(ray_network, set(where.values()), signal.SIGTERM)
        _until("every run placed again", _replaced(ray_network, where), runs)
        for run in runs:  # S3 stays down until the step has ended: what it does without S3 is what is checked
            assert run.thread is not None
            run.thread.join(WAIT_S)
    finally:
        _release(runs)
        s3.start()
        ray_network.up()
    headlines = []
    for run in runs:
        result = run.result
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        data = failure.step_failure_data.user_failure_data  # type: ignore[union-attr]
        text, tail = str(data.description), str(data.metadata[md.JOB_LOG_TAIL].value)  # type: ignore[union-attr]
        assert "EndpointUnreachable" in tail and config.endpoint_url in tail, tail  # the job's own error: S3
        headlines.append(text)
        assert where[run.model] in str(data.metadata[md.FAILOVERS].value)  # type: ignore[union-attr]
        assert not result.get_asset_materialization_events()
        # nothing of the failed attempt is visible: no final model, the checkpoints are the complete ones
        with pytest.raises(AssertionError, match="no final model"):
            _final(config, run.model)
        hold = run.holds[0]
        assert run.held(hold) == _epochs(1, hold)
        assert _trained(run) == [list(range(1, hold + 1))]  # the failed-over job trained nothing
        assert _latest_checkpoint(config, run, run_ids[run.model]) == hold
        for bucket in BUCKETS:
            store = CheckpointStore(config, bucket, f"models/{run.model}/runs/{run_ids[run.model]}/checkpoints")
            if store.latest() is not None:
                for step in range(1, hold + 1):
                    arrays, meta = store.load(step)
                    assert meta["epoch"] == step and arrays.keys() >= reference.keys()
            uploads = config.boto3_client().list_multipart_uploads(Bucket=bucket, Prefix=f"models/{run.model}/")
            assert not uploads.get("Uploads"), f"{run.model}: an upload was left in progress"
    for text in headlines:  # the step's one line names S3 (a backend's fallback warning about torch is not the cause)
        assert config.endpoint_url in text, f"the failure does not name the S3 endpoint: {text}"


# -- e: the head's DC lost ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_cluster(ray_network: LocalNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """A one-node Ray cluster of the head's DC (zhangjiakou), its own GCS and Jobs API, beside the network.

    Its steps use the network's state dir (its S3 and the datasets the reference wrote). Losing the head
    stops any single Ray cluster: a restart here is one node instead of the five of ``ray_network``.
    """
    profile = load_profile(load_network()).subset(("zhangjiakou",))
    profile = dataclasses.replace(profile, first_node_ip="127.0.0.20")  # beside the network's 127.0.0.2-6
    net = LocalNetwork(tmp_path_factory.mktemp("westflow-head"), profile, workdir=ROOT,
                       ports=Ports(gcs=free_port(), dashboard=free_port(), client_server=free_port()))
    try:
        net.up()
        yield net
    finally:
        net.down()
        net.remove_session_dir()


@_trials("e", "head")
def test_head_dc_lost_fails_fast_naming_the_cluster(trials: tuple[int, ...], ray_network: LocalNetwork,
                                                    head_cluster: LocalNetwork, reference: dict[str, np.ndarray],
                                                    tmp_path: Path) -> None:
    head_cluster.up()  # back from the test before
    lost_after = 20.0 if 0 in trials else HEAD_LOST_AFTER_S  # the default once, then a short window
    access = {"ray_address": head_cluster.dashboard_url, "ray_auth_token_path": str(head_cluster.token_path),
              "cluster_lost_after_s": lost_after}
    runs = _start("e", trials, _holds(trials), tmp_path, ray_network.state_dir, **access)
    killed_at = 0.0
    try:
        _until("every run holding", lambda r: r.held(r.holds[0]) is not None, runs)
        assert {_running_dc(head_cluster, r)[0] for r in runs} == {"zhangjiakou"}
        killed_at = time.monotonic()
        head_cluster.stop_node("zhangjiakou", sig=signal.SIGKILL)  # GCS, dashboard, Jobs API and both jobs
        for run in runs:
            assert run.thread is not None
            run.thread.join(lost_after + 60)
    finally:
        _release(runs)
    bound = lost_after + 30  # the silent window, the last backoff step, one capacity read per cluster, Dagster
    for run in runs:
        result = run.result
        assert not result.success
        took = run.ended - killed_at
        assert took < bound, f"{run.model}: the step took {took:.1f} s to fail after the head was lost"
        failure = next(e for e in result.all_events if e.is_step_failure)
        data = failure.step_failure_data.user_failure_data  # type: ignore[union-attr]
        table = str(data.metadata[md.REJECTED].value)  # type: ignore[union-attr]
        assert f"Ray dashboard {head_cluster.dashboard_url} did not answer" in table, table
        assert "cluster unreachable" in table
        assert not result.get_asset_materialization_events()


# -- f: a DC lost between placement and its job's start -----------------------------------------------------


def test_a_job_placed_on_a_dc_lost_before_it_starts_is_stopped_not_left_pending(ray_network: LocalNetwork) -> None:
    """Ray keeps a job pinned to a DC with no node PENDING (its supervisor cannot be scheduled) for up to
    15 min. Waiting for it, the dispatcher sees the DC has no live node, stops the job and reports it
    STOPPED, and the verdict finds the DC lost, so the step is placed again instead of hanging. When the
    DC comes back, the job stops as it starts: it never runs beside the step's new job."""
    _restored(ray_network)
    network = load_network()
    access = ClusterAccess.resolve(dashboard_url=ray_network.dashboard_url, token_path=ray_network.token_path)
    dispatcher = Dispatcher(access, poll_interval_s=0.3)
    spec = parse_spec({"name": "pending-probe", "tier": "batch", "accelerator": "cpu", "cpus": 0.25,
                       "memory_gb": 0.5, "duration_hours": 0.1}, network)
    p = get_policy("westflow").place(spec, network, live_capacity(network, dispatcher.reader()))
    dc = p.data_center
    assert dc != ray_network.profile.dc_ids[0], "placed in the head's DC"
    sid = f"pending-probe-{ray_network.profile.ports.dashboard}"
    jobs = ray_network.job_client()
    try:
        ray_network.stop_node(dc)  # the DC goes dark after the step was placed there
        assert dc not in {n.dc for n in dispatcher.reader().nodes() if n.alive}
        dispatcher.submit(p, "python -c 'import time; time.sleep(600)'", env={}, submission_id=sid)
        outcome = dispatcher.wait(sid, data_center=dc)
        assert outcome.status == "STOPPED" and f"pending for {dc}" in outcome.message, outcome
        assert jobs.get_job_status(sid) == "PENDING"  # Ray's own stop waits for the supervisor
        why = dispatcher.node_loss_verdict(sid, dc)
        assert why is not None and why.startswith(f"Ray node of {dc} lost"), why
    finally:
        ray_network.up()
    deadline = time.monotonic() + 120  # the DC is back: the job is scheduled, and its queued stop ends it
    while (status := str(jobs.get_job_status(sid))) not in ("STOPPED", "FAILED", "SUCCEEDED"):
        assert time.monotonic() < deadline, f"the job is {status} 120 s after its DC came back"
        time.sleep(0.5)
    assert status == "STOPPED", jobs.get_job_info(sid)
