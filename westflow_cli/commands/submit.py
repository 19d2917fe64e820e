"""``westflow submit SPEC.yaml [--working-dir DIR] -- COMMAND...``: place a spec, run any command there.

The Ray Jobs user's path, without Dagster: the spec waits in the admission queue
until it is admitted on live capacity (and holds it there while it runs), the working dir and the
requirements travel through Ray's runtime env (:mod:`ray_cluster.shipping`),
the command runs as a Ray Job pinned to the chosen data center, its log streams
here, and the end says where and how it ran. Exit codes: 0 the job succeeded,
1 the job failed (its last lines are printed), 2 bad input (spec, command,
code, tenant), 3 no data center fits or none admitted it within ``max_wait``
(nothing is submitted), 4 the cluster failed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import NoReturn

from admission.controller import Controller
from admission.tickets import QueueTimeout, StepTicket
from ray_cluster.dispatch import short_message
from ray_cluster.metering_sync import job_metadata, meter_job
from ray_cluster.shipping import (
    DEFAULT_MAX_FILE_MB,
    INSTALLERS,
    CodeConfig,
    check_module,
    entry_module,
    requirements_file,
    ship,
)
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import SpecError, WestflowError
from westflow.placement import POLICY_NAMES, get_policy
from westflow.spec import load_spec
from westflow.text import placement_text
from westflow_cli.admitting import queue_of, tenants_of
from westflow_cli.localnet import default_state_dir, federation_of

EXIT_JOB_FAILED = 1
EXIT_NOT_ADMITTED = 3  # as infeasible: nothing ran
TASK_RESOURCES_ENV = "WESTFLOW_TASK_RESOURCES"  # the placement's pins, for a command that starts Ray tasks


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("submit", help="place a spec and run a command there as a Ray Job, with your code",
                       usage="westflow submit SPEC.yaml [options] -- COMMAND [ARGS...]")
    p.add_argument("spec", help="the WorkloadSpec YAML of the work")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="[options] -- COMMAND",
                   help="options, then after --: the command, e.g. python -m myjob --epochs 3")
    _add_options(p)
    p.set_defaults(func=run)


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--working-dir", default=".", help="the project shipped with the job (default: .)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="a gitignore-style pattern left out of the working dir (repeatable)")
    p.add_argument("--requirements", default=None, metavar="FILE",
                   help="pip requirements file (default: the working dir's requirements.txt or pyproject.toml)")
    p.add_argument("--pip", action="append", default=None, metavar="REQ", help="a requirement (repeatable)")
    p.add_argument("--no-requirements", action="store_true", help="install nothing: the cluster's Python has it")
    p.add_argument("--installer", default="pip", choices=INSTALLERS)
    p.add_argument("--max-file-mb", type=float, default=DEFAULT_MAX_FILE_MB, help="a larger file is data: left out")
    p.add_argument("--max-upload-mb", type=float, default=None, help="upload limit (default: Ray's)")
    p.add_argument("--python", default=None, help="the cluster's interpreter for a leading `python` "
                   "(default: the one its Ray runs with)")
    p.add_argument("--policy", default="westflow", choices=POLICY_NAMES)
    p.add_argument("--state-dir", default=default_state_dir(),
                   help="the local network's state dir and its admission queue (default: "
                   "$WESTFLOW_STATE_DIR, else the checkout's .westflow; $WESTFLOW_RAY_ADDRESS wins)")
    p.add_argument("--db", default=None, help="the admission queue's database URL (default: "
                   "$WESTFLOW_ADMISSION_URL, else SQLite in the state dir)")


class _OptionParser(argparse.ArgumentParser):
    """The options given after SPEC.yaml (argparse hands them over unparsed, with the command)."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse hook
        raise SpecError("options", message, "the options of `westflow submit --help`", problem="Invalid",
                        source="westflow submit")


def _command(args: argparse.Namespace) -> list[str]:
    """Parse the options after SPEC.yaml into ``args``; return the command after ``--``."""
    rest = list(args.rest)
    cut = rest.index("--") if "--" in rest else -1  # -1: argparse already took the "--" (options came first)
    options, job = rest[:max(cut, 0)], rest[cut + 1:]
    if options:
        parser = _OptionParser(prog="westflow submit", add_help=False)
        _add_options(parser)
        parser.parse_args(options, namespace=args)
    if not job or job[0].startswith("-"):
        raise SpecError("command", " ".join(job), "a command after --, e.g. `-- python -m myjob`",
                        problem="Missing" if not job else "Invalid", source="westflow submit")
    if args.python and job[0] in ("python", "python3"):
        job[0] = args.python
    return job


def _requirements(args: argparse.Namespace) -> tuple[str, ...] | None:
    if args.no_requirements:
        return ()
    reqs: list[str] = []
    if args.requirements:
        req = Path(args.requirements)
        if not req.is_file():
            raise SpecError("--requirements", args.requirements, "an existing requirements file",
                            source="westflow submit")
        reqs += requirements_file(req.resolve())
    reqs += args.pip or []
    return tuple(reqs) if (args.requirements or args.pip) else None


def run(args: argparse.Namespace) -> int:
    network = load_network(args.config_dir or CONFIG_DIR)
    spec = load_spec(args.spec, network)
    command = _command(args)
    code = ship(CodeConfig(Path(args.working_dir), excludes=tuple(args.exclude), max_file_mb=args.max_file_mb,
                           max_upload_mb=args.max_upload_mb, requirements=_requirements(args),
                           installer=args.installer, state_dir=Path(args.state_dir)))
    module = entry_module(command)
    if module:
        check_module(code, module)
    fed = federation_of(args.state_dir, network)
    network = fed.grouped(network)
    _, totals = fed.capacity_and_totals(network)
    policy = get_policy(args.policy)
    tenants = tenants_of(args.config_dir, network)
    queue = queue_of(args.state_dir, args.db)
    controller = Controller(queue, tenants=tenants, network=network, policy=policy,
                            capacity=lambda: fed.capacity_and_totals(network), scope=fed.scope)
    ticket = StepTicket(queue, f"submit-{spec.name}-{secrets.token_hex(4)}", controller=controller,
                        on_event=lambda kind, text: print(f"westflow: {text}", file=sys.stderr, flush=True))
    owner = f"westflow submit (pid {os.getpid()}) spec {spec.name}"
    try:  # InfeasibleError (exit 3) when no DC could ever take it; nothing is submitted
        p = ticket.admit(spec, network=network, policy=policy, totals=totals, tenants=tenants, owner=owner)
    except QueueTimeout as exc:
        ticket.finish("cancelled", str(exc))  # a no-op: the row already expired
        print(f"westflow: not admitted: {exc}", file=sys.stderr)
        return EXIT_NOT_ADMITTED
    except BaseException:
        ticket.finish("cancelled", "westflow submit stopped before admission")
        raise
    dispatcher = fed.dispatcher(p.ray_cluster)
    access = dispatcher.access
    job_id, state = "", "failed"
    try:
        print(placement_text(p), flush=True)
        print(f"\nshipping: {code.describe()}", flush=True)
        env = {"WESTFLOW_REGION": p.region, "WESTFLOW_PLACED_DC": p.data_center,
               TASK_RESOURCES_ENV: json.dumps(p.ray.task_options(), sort_keys=True)}
        sid = f"westflow-submit-{spec.name}-{secrets.token_hex(4)}"
        submitted = time.time()
        job_id = dispatcher.submit(p, shlex.join(command), env=env, submission_id=sid, code=code,
                                   metadata={"westflow.submitted_by": "westflow submit", **job_metadata(p)})
        print(f"Ray job {job_id} at {p.data_center} (Ray cluster {p.ray_cluster}): {access.job_url(job_id)}\n",
              flush=True)
        outcome = dispatcher.wait(job_id, on_log=lambda line: print(line, flush=True))
        meter_job(lambda: queue_of(args.state_dir, args.db), dispatcher, p, job_id, status=outcome.status,
                  submitted_at=submitted, log_fn=lambda line: print(line, file=sys.stderr))  # never raises
        job_id, state = "", "finished" if outcome.succeeded else "failed"
    except BaseException as exc:  # interrupted, or the job could not be followed: it does not run on
        if job_id:
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"lost track of the job ({exc})"
            print(f"\nwestflow: {why}: stopping Ray job {job_id}", file=sys.stderr)
            try:
                dispatcher.stop(job_id)
            except (WestflowError, RuntimeError, OSError) as stop_exc:
                print(f"westflow: could not stop Ray job {job_id}: {stop_exc}", file=sys.stderr)
        raise
    finally:
        ticket.finish(state)
    ran_in = dispatcher.ran_in(outcome.job_id)
    if outcome.succeeded:
        print(f"\nwestflow: {spec.name} ran at {ran_in} (placed at {p.data_center}): Ray job {outcome.job_id} "
              "SUCCEEDED")
        return 0
    outcome = dispatcher.explained(outcome, where=f"{p.data_center} ({access.dashboard_url})", code=code,
                                   python=args.python or "python")
    tail = dispatcher.logs(outcome.job_id).splitlines()[-15:]
    print(f"\nwestflow: Ray job {outcome.job_id} of {spec.name!r} at {p.data_center} ended {outcome.status}: "
          f"{outcome.cause or short_message(outcome.message)}", file=sys.stderr)
    if tail:
        print("its last lines:\n" + "\n".join(f"  {ln}" for ln in tail), file=sys.stderr)
    return EXIT_JOB_FAILED
