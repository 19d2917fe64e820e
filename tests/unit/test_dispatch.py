"""The Ray-side dispatch without Ray or Dagster: cluster access, the failover loop, submit/wait logic.

The Jobs API client is a fake passed through the Dispatcher's ``client`` seam; the real
client against the real local network is exercised in tests/integration/test_pipelines.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ray_cluster.access import ClusterAccess
from ray_cluster.dispatch import JOB_DC, Dispatcher, JobOutcome, entrypoint
from ray_cluster.failover import Attempt, JobFailed, Lost, run_with_failover
from ray_cluster.live import NodeView
from ray_cluster.retry import RetryPolicy
from tests.builders import make_spec, national
from westflow.capacity import DCCapacity
from westflow.errors import ClusterError, InfeasibleError
from westflow.placement import Placement, get_policy

URL = "http://127.0.0.1:8265"

# -- cluster access ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("explicit", "env", "want"),
    [({"dashboard_url": "http://a:1"}, {"WESTFLOW_RAY_ADDRESS": "http://b:2", "RAY_ADDRESS": "http://c:3"},
      "http://a:1"),
     ({}, {"WESTFLOW_RAY_ADDRESS": "http://b:2/", "RAY_ADDRESS": "http://c:3"}, "http://b:2"),
     ({}, {"RAY_ADDRESS": "https://c:3"}, "https://c:3")],
    ids=["explicit-wins", "westflow-env-over-ray-env", "ray-env"],
)
def test_address_precedence(explicit: dict[str, str], env: dict[str, str], want: str) -> None:
    access = ClusterAccess.resolve(token="t", env=env, **explicit)
    assert access.dashboard_url == want


def test_token_precedence_and_ray_default_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("from-path\n")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home")
    env = {"RAY_ADDRESS": URL, "HOME": str(tmp_path)}
    assert ClusterAccess.resolve(env=env).token == "from-home"
    assert ClusterAccess.resolve(env={**env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "f")}).token == "from-path"
    assert ClusterAccess.resolve(env={**env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "f"),
                                      "RAY_AUTH_TOKEN": "from-env"}).token == "from-env"
    assert ClusterAccess.resolve(token_path=tmp_path / "f", env={**env, "RAY_AUTH_TOKEN": "x"}).token == "from-path"
    assert ClusterAccess.resolve(token="given", env={**env, "RAY_AUTH_TOKEN": "x"}).token == "given"


@pytest.mark.parametrize(
    ("env", "needle"),
    [({}, "No Ray cluster address"), ({"RAY_ADDRESS": "127.0.0.1:6379"}, "Invalid RAY_ADDRESS '127.0.0.1:6379'"),
     ({"RAY_ADDRESS": URL}, "No Ray auth token"),
     ({"RAY_ADDRESS": URL, "RAY_AUTH_TOKEN_PATH": "/nonexistent/token"}, "Cannot read the Ray auth token file"),
     ({"RAY_ADDRESS": URL, "RAY_AUTH_TOKEN_PATH": "EMPTY"}, "is empty")],
    ids=["no-address", "gcs-address", "no-token", "unreadable-token-file", "empty-token-file"],
)
def test_missing_access_names_what_and_the_fix(env: dict[str, str], needle: str, tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("  \n")
    env = {k: (str(tmp_path / "empty") if v == "EMPTY" else v) for k, v in env.items()}
    with pytest.raises(ClusterError) as exc:
        ClusterAccess.resolve(env={**env, "HOME": str(tmp_path)})
    assert needle in str(exc.value) and "To fix" in str(exc.value)


def test_the_token_is_never_printed() -> None:
    access = ClusterAccess(URL, "s3cret")
    assert "s3cret" not in repr(access) and access.headers() == {"Authorization": "Bearer s3cret"}


# -- the failover loop ---------------------------------------------------------------------------


def _place(exclude: frozenset[str]) -> Placement:
    """The westflow placement of a 2-accelerator step on the national network less ``exclude``."""
    live = {d.id: DCCapacity(free={p.model: 8 for p in d.pools}, free_cpus=64, free_memory_gb=512, utilisation=0.0)
            for d in national().data_centers if d.id not in exclude}
    return get_policy("westflow").place(make_spec(name="train", accelerator="any:2"), national(), live)


@dataclass
class _Script:
    """A scripted step: each attempt's status; records placements, releases and what was held."""

    statuses: list[str]
    node_lost: bool = True

    def __post_init__(self) -> None:
        self.placed: list[str] = []
        self.held: set[str] = set()
        self.held_at_run: list[set[str]] = []
        self.failovers: list[tuple[str, str]] = []

    def place(self, exclude: frozenset[str]) -> tuple[str, Placement]:
        p = _place(exclude)
        ticket = f"t{len(self.placed)}"
        self.placed.append(p.data_center)
        self.held.add(ticket)
        return ticket, p

    def release(self, ticket: str) -> None:
        self.held.discard(ticket)

    def run(self, p: Placement, n: int) -> Attempt[str]:
        self.held_at_run.append(set(self.held))
        return Attempt(p, JobOutcome(f"job-{n}", self.statuses[n], "boom"), f"report-{n}")

    def verdict(self, a: Attempt[str]) -> str | None:
        return f"{a.placement.data_center} lost" if self.node_lost else None

    def go(self, max_failovers: int = 2) -> Any:
        return run_with_failover(place=self.place, release=self.release, run=self.run, verdict=self.verdict,
                                 max_failovers=max_failovers,
                                 on_failover=lambda lost, p: self.failovers.append((lost.data_center, p.data_center)))


def test_a_lost_dc_is_released_excluded_and_the_step_placed_again() -> None:
    s = _Script(["FAILED", "SUCCEEDED"])
    done = s.go()
    assert done.attempt.result == "report-1" and done.attempt.job_id == "job-1"
    first, second = s.placed
    assert first != second
    assert s.held_at_run == [{"t0"}, {"t1"}]  # the first reservation was released before re-placing
    assert s.held == set()  # and the last one when the job ended
    assert done.lost == (Lost(first, f"{first} lost"),) and s.failovers == [(first, second)]


def test_a_plain_failure_does_not_fail_over() -> None:
    s = _Script(["FAILED", "SUCCEEDED"], node_lost=False)
    with pytest.raises(JobFailed) as exc:
        s.go()
    assert len(s.placed) == 1 and s.held == set()
    assert exc.value.lost == () and exc.value.node_lost is None and "ended FAILED" in str(exc.value)
    assert "boom" in str(exc.value)


def test_failovers_are_bounded() -> None:
    s = _Script(["FAILED", "FAILED", "FAILED"])
    with pytest.raises(JobFailed) as exc:
        s.go(max_failovers=1)
    assert len(s.placed) == 2 and len(exc.value.lost) == 1 and exc.value.node_lost is not None
    assert s.held == set()


def test_nothing_left_to_place_raises_the_placement_error_and_holds_nothing() -> None:
    s = _Script(["FAILED"] * 20)
    with pytest.raises(InfeasibleError):
        s.go(max_failovers=20)  # every accelerator DC lost in turn: the last place() finds none
    assert s.held == set()


def test_release_even_when_the_run_raises() -> None:
    s = _Script(["SUCCEEDED"])

    def boom(p: Placement, n: int) -> Attempt[str]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_with_failover(place=s.place, release=s.release, run=boom, verdict=s.verdict, max_failovers=1)
    assert s.held == set()



def test_a_preempted_attempt_is_placed_again_without_excluding_or_counting_a_failover() -> None:
    s = _Script(["STOPPED", "STOPPED", "FAILED", "SUCCEEDED"])
    preemptions: list[tuple[str, str]] = []

    def preempted(a: Attempt[str]) -> str | None:
        return "preempted by rt-1" if a.job_id in ("job-0", "job-1") else None

    done = run_with_failover(place=s.place, release=s.release, run=s.run, verdict=s.verdict, max_failovers=1,
                             on_failover=lambda lost, p: s.failovers.append((lost.data_center, p.data_center)),
                             preempted=preempted, on_preempted=lambda p, why: preemptions.append((p.data_center, why)))
    first, again, lost, last = s.placed
    assert first == again == lost  # a preemption excludes nothing: the same DC is the best again
    assert last != lost and done.lost == (Lost(lost, f"{lost} lost"),) and s.failovers == [(lost, last)]
    assert preemptions == [(first, "preempted by rt-1")] * 2  # and they did not use up max_failovers=1
    assert done.attempt.job_id == "job-3" and s.held == set()


# -- submit and wait (a fake Jobs API client through the seam) -----------------------------------


@dataclass
class _Info:
    status: str
    entrypoint: str = ""
    message: str = ""
    error_type: str | None = None
    driver_node_id: str | None = "node-1"


class _FakeJobs:
    """A Jobs API that loses the answer to the first submission and drops the line once while waiting."""

    def __init__(self, *, lose_answer: bool = False, flaky_status: int = 0,
                 statuses: tuple[str, ...] = ("RUNNING", "SUCCEEDED")) -> None:
        self.jobs: dict[str, _Info] = {}
        self.submits: list[dict[str, Any]] = []
        self.stops: list[str] = []
        self.lose_answer, self.flaky_status, self.statuses = lose_answer, flaky_status, list(statuses)

    def submit_job(self, **params: Any) -> str:
        self.submits.append(params)
        sid = params["submission_id"]
        if sid in self.jobs:
            raise RuntimeError(f"Request failed with status code 400: Job with submission_id {sid} already exists.")
        self.jobs[sid] = _Info("PENDING", params["entrypoint"])
        if self.lose_answer:
            self.lose_answer = False
            raise ConnectionError("read timed out")
        return str(sid)

    def get_job_status(self, job_id: str) -> str:
        if self.flaky_status:
            self.flaky_status -= 1
            raise ConnectionError("dashboard restarting")
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        self.jobs[job_id].status = status
        return status

    def get_job_info(self, job_id: str) -> _Info:
        return self.jobs[job_id]

    def stop_job(self, job_id: str) -> bool:
        self.stops.append(job_id)  # as Ray: a job whose supervisor is not scheduled stays PENDING
        return True

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        yield "hello\nworld\n"


def _dispatcher(fake: _FakeJobs) -> Dispatcher:
    return Dispatcher(ClusterAccess(URL, "t"), client=fake, retry=RetryPolicy(attempts=3, jitter=0),
                      reattach=RetryPolicy(attempts=3, jitter=0), log_fn=lambda m: None, sleep=lambda s: None)


def test_a_retried_submission_attaches_to_the_job_the_lost_answer_created() -> None:
    fake = _FakeJobs(lose_answer=True)
    p = _place(frozenset())
    cmd = entrypoint("python", "jobs.etl", ["--rows", "10"], p)
    job_id = _dispatcher(fake).submit(p, cmd, env={"A": "1"}, submission_id="s-1")
    assert job_id == "s-1" and list(fake.jobs) == ["s-1"] and len(fake.submits) == 2
    sent = fake.submits[0]
    assert sent["metadata"][JOB_DC] == p.data_center and sent["runtime_env"] == {"env_vars": {"A": "1"}}
    assert sent["entrypoint_resources"] == p.ray.job_options()["entrypoint_resources"]
    assert "--task-resources" in cmd and cmd.startswith("python -m jobs.etl --rows 10")


def test_a_submission_id_taken_by_another_command_is_an_error() -> None:
    fake = _FakeJobs()
    p = _place(frozenset())
    d = _dispatcher(fake)
    d.submit(p, "python -m jobs.etl", env={}, submission_id="s-1")
    with pytest.raises(ClusterError, match="already exists with another entrypoint"):
        d.submit(p, "python -m jobs.train", env={}, submission_id="s-1")


def test_wait_reattaches_to_the_same_job_and_streams_its_log() -> None:
    fake = _FakeJobs(flaky_status=2)
    p = _place(frozenset())
    d = _dispatcher(fake)
    job_id = d.submit(p, "python -m jobs.etl", env={}, submission_id="s-1")
    lines: list[str] = []
    out = d.wait(job_id, on_log=lines.append)
    assert out.succeeded and out.job_id == "s-1" and out.driver_node_id == "node-1"
    assert len(fake.submits) == 1  # waiting never submits again
    assert lines == ["hello", "world"]


def test_ray_says_the_node_died() -> None:
    fake = _FakeJobs(statuses=("FAILED",))
    p = _place(frozenset())
    d = _dispatcher(fake)
    job_id = d.submit(p, "python -m jobs.etl", env={}, submission_id="s-1")
    fake.jobs[job_id].error_type, fake.jobs[job_id].message = "JOB_SUPERVISOR_ACTOR_DIED", "The actor died"
    assert d.wait(job_id).status == "FAILED"
    assert d.node_loss_verdict(job_id, p.data_center) == \
        f"Ray node of {p.data_center} lost during the step (The actor died)"


class _Nodes:
    """Ray's node state as a sequence of answers: True (the DC has a live node), False (none), or an error."""

    def __init__(self, dc: str, answers: list[bool | None]) -> None:
        self.dc, self.answers, self.reads = dc, list(answers), 0

    def nodes(self) -> list[NodeView]:
        self.reads += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer is None:
            raise ClusterError("dashboard: 503 Service Unavailable")
        return [NodeView("n-1", answer, {"CPU": 1.0}, {"CPU": 1.0}, {"westflow.io/dc": self.dc})]


def _failed_job(answers: list[bool | None]) -> tuple[Dispatcher, _Nodes, str, str]:
    fake = _FakeJobs(statuses=("FAILED",))
    p = _place(frozenset())
    nodes = _Nodes(p.data_center, answers)
    d = Dispatcher(ClusterAccess(URL, "t"), client=fake, reader=nodes, retry=RetryPolicy(attempts=2, jitter=0),
                   reattach=RetryPolicy(attempts=2, jitter=0), log_fn=lambda m: None, sleep=lambda s: None)
    job_id = d.submit(p, "python -m jobs.etl", env={}, submission_id="s-1")
    fake.jobs[job_id].message = "Job entrypoint command failed with exit code 1"
    return d, nodes, job_id, p.data_center


def test_a_momentary_dashboard_error_is_not_a_lost_dc() -> None:
    d, nodes, job_id, dc = _failed_job([None, True])  # one 503, then the DC's node is alive
    assert d.node_loss_verdict(job_id, dc) is None and nodes.reads == 2


def test_a_dashboard_that_never_answers_does_not_confirm_a_loss() -> None:
    d, nodes, job_id, dc = _failed_job([None])
    assert d.node_loss_verdict(job_id, dc) is None and nodes.reads == d.confirm.attempts


def test_a_single_dead_read_between_errors_is_not_confirmation() -> None:
    d, nodes, job_id, dc = _failed_job([False, None, False, None, False, None])
    assert d.node_loss_verdict(job_id, dc) is None


def test_a_loss_is_confirmed_by_consecutive_dead_reads() -> None:
    d, nodes, job_id, dc = _failed_job([None, False, False])
    assert d.node_loss_verdict(job_id, dc) == (
        f"Ray node of {dc} lost during the step (no live node of {dc} in 2 reads of Ray's node state; "
        "Job entrypoint command failed with exit code 1)")
    assert nodes.reads == 3


def _pending_job(answers: list[bool | None], statuses: tuple[str, ...]) -> tuple[Dispatcher, _FakeJobs, _Nodes, str,
                                                                                  str]:
    fake = _FakeJobs(statuses=statuses)
    p = _place(frozenset())
    nodes = _Nodes(p.data_center, answers)
    d = Dispatcher(ClusterAccess(URL, "t"), client=fake, reader=nodes, retry=RetryPolicy(attempts=2, jitter=0),
                   reattach=RetryPolicy(attempts=2, jitter=0), log_fn=lambda m: None, sleep=lambda s: None,
                   poll_interval_s=1.0)
    return d, fake, nodes, d.submit(p, "python -m jobs.etl", env={}, submission_id="s-1"), p.data_center


def test_a_job_pending_for_a_dc_with_no_live_node_is_stopped_and_its_dc_found_lost() -> None:
    d, fake, nodes, job_id, dc = _pending_job([None, False, True, False, False], ("PENDING",) * 50 + ("FAILED",))
    out = d.wait(job_id, data_center=dc)
    assert out.status == "STOPPED" and fake.stops == [job_id]  # stopped once, after two dead reads in a row
    assert out.message.startswith(f"pending for {dc}, which has no live Ray node")
    assert nodes.reads == 5  # an error and a live read in between reset the count
    assert d.node_loss_verdict(job_id, dc) is not None  # the DC is still dead: the caller fails over


def test_a_job_pending_for_a_live_dc_waits_on() -> None:
    d, fake, nodes, job_id, dc = _pending_job([True], ("PENDING",) * 20 + ("RUNNING", "SUCCEEDED"))
    assert d.wait(job_id, data_center=dc).succeeded and fake.stops == []
    assert nodes.reads == 10  # one read every PENDING_CHECK_S (2 polls of 1 s) while it pends, none after


def test_a_running_job_is_not_checked_for_its_dc() -> None:
    d, fake, nodes, job_id, dc = _pending_job([False], ("RUNNING",) * 10 + ("SUCCEEDED",))
    assert d.wait(job_id, data_center=dc).succeeded and fake.stops == [] and nodes.reads == 0
