"""What every entrypoint shares: a typed-error argparse, region resolution, and running.

An entrypoint is ``main(argv, *, stores=None, probe=None) -> int``: it parses
flags (bad ones raise :class:`JobArgumentError`, printed with exit code 2), opens
a :class:`Reporter`, chooses the array backend and calls the job's body. With
``--task-resources`` (the JSON of ``RayRequest.task_options()``) the body runs in
one Ray task holding those accelerators and pins, as westflow's submitter
expects: the entrypoint itself holds no accelerators.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from jobs.backend import BACKENDS, Backend, DeviceProbe, select_backend
from jobs.job_errors import JobArgumentError
from jobs.progress import Reporter
from jobs.stores import Stores, s3_stores
from ray_cluster.live import init_here
from westflow.errors import WestflowError

__all__ = ["JobArgumentParser", "JobContext", "Body", "positive_int", "positive_float",
           "dataset_name", "add_common", "resolve_region", "run_job", "REGIONS"]

REGIONS = ("east", "west")
REGION_ENV = "WESTFLOW_REGION"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class JobArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`JobArgumentError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise JobArgumentError("command line", None, message=message[:1].upper() + message[1:],
                               fix=f"see `{self.prog} --help`.")


def positive_int(flag: str, *, minimum: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise JobArgumentError(flag, text, f"an integer >= {minimum}") from None
        if v < minimum:
            raise JobArgumentError(flag, v, f"an integer >= {minimum}", problem="Out of range")
        return v
    return parse


def positive_float(flag: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise JobArgumentError(flag, text, "a number > 0") from None
        if not v > 0 or v == float("inf"):
            raise JobArgumentError(flag, v, "a finite number > 0", problem="Out of range")
        return v
    return parse


def dataset_name(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not _NAME.match(text):
            raise JobArgumentError(flag, text, "1-128 letters, digits, '_', '-', '.'")
        return text
    return parse


def _task_resources(text: str) -> dict[str, Any]:
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        v = None
    if not isinstance(v, dict):
        raise JobArgumentError("--task-resources", text, "a JSON object of Ray task options",
                               fix="pass RayRequest.task_options() as JSON.")
    return v


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", choices=None, default=None,
                   help=f"east|west; default ${REGION_ENV}, else the Ray node's label")
    p.add_argument("--backend", default="auto", help="auto (default), numpy, cupy or torch_npu")
    p.add_argument("--task-resources", type=_task_resources, default=None,
                   help="JSON Ray task options; run the body in one Ray task holding them")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])


def _node_region() -> str | None:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    from westflow.tags import LABEL_REGION

    labels = ray.get_runtime_context().get_node_labels()
    value = labels.get(LABEL_REGION)
    return value if isinstance(value, str) else None


def resolve_region(value: str | None) -> str:
    """The region outputs land in: the flag, else $WESTFLOW_REGION, else the node's label."""
    source = "--region"
    if value is None:
        value, source = os.environ.get(REGION_ENV) or None, REGION_ENV
    if value is None:
        value, source = _node_region(), "node label"
    if value is None:
        raise JobArgumentError("--region", None, REGIONS, problem="Missing",
                               fix=f"pass --region or set {REGION_ENV}.")
    if value not in REGIONS:
        raise JobArgumentError(source, value, REGIONS)
    return value


@dataclass(frozen=True, slots=True)
class JobContext:
    stores: Stores
    backend: Backend
    reporter: Reporter
    region: str


Body = Callable[[argparse.Namespace, JobContext], dict[str, Any]]


def _remote_body(job: str, body: Body, args: argparse.Namespace) -> dict[str, Any]:
    """Runs inside the Ray task: real stores, real probe, logs to the Ray job log."""
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    reporter = Reporter(job)
    backend = select_backend(force=args.backend, logger=reporter.logger)
    return body(args, JobContext(s3_stores(), backend, reporter, resolve_region(args.region)))


def _run_in_task(job: str, body: Body, args: argparse.Namespace) -> dict[str, Any]:
    import ray

    if not ray.is_initialized():
        init_here()
    task = ray.remote(_remote_body).options(**args.task_resources)
    result: dict[str, Any] = ray.get(task.remote(job, body, args))
    return result


def run_job(job: str, parser: argparse.ArgumentParser, body: Body,
            argv: Sequence[str] | None = None, *, stores: Stores | None = None,
            probe: DeviceProbe | None = None) -> int:
    """Parse, run and report one job; returns the process exit code."""
    try:
        args = parser.parse_args(argv)
        if args.backend not in BACKENDS:
            raise JobArgumentError("--backend", args.backend, BACKENDS)
        args.region = resolve_region(args.region)
    except JobArgumentError as e:
        print(f"{job}: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        with Reporter(job) as reporter:
            if args.task_resources is not None:
                reporter.info(f"running {job} in a Ray task with {args.task_resources}")
                metadata = _run_in_task(job, body, args)
            else:
                backend = select_backend(probe, force=args.backend, logger=reporter.logger)
                reporter.forward(logging.WARNING if backend.fallback else logging.INFO,
                                 backend.describe())
                ctx = JobContext(stores or s3_stores(), backend, reporter, args.region)
                metadata = body(args, ctx)
            reporter.materialize(metadata)
    except JobArgumentError as e:
        print(f"{job}: {e}", file=sys.stderr)
        return 2
    except WestflowError as e:
        print(f"{job}: {e}", file=sys.stderr)
        return 1
    return 0
