"""The westflow resource: place a step, run it as a Ray Job through Dagster Pipes.

For one step it reads live capacity from the Ray network, places the step's
WorkloadSpec, submits the step's entrypoint (a module of ``jobs/``) as a Ray
Job with the placement's Ray options, streams the job's logs and Pipes
messages into the Dagster event log, stops the Ray Job when the run is
cancelled, and records where it ran and why on the materialisation. When the
data center running the step is lost, the step is placed again (never out of
its tier or accelerator family) and resumes from its last checkpoint.

Steps run in separate processes and the dashboard's usage lags, so every
placement is reserved in the host's journal (``<state_dir>/reservations.json``,
:mod:`ray_cluster.reservations`) and decided against the capacity left after
the other steps' reservations; the reservation is released when the Ray job
ends or fails, and before a failover places the step again.
"""

from __future__ import annotations

import json
import secrets
import shlex
import sys
from collections.abc import Sequence, Set
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from pipelines.workload import declared_inputs, spec_of
from ray_cluster.live import DashboardReader, NodeView, live_capacity, snapshot
from ray_cluster.reservations import Reservations
from ray_cluster.retry import RetryPolicy, is_transient, retry_call
from westflow.capacity import Capacity, DCCapacity
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import ClusterError, InfeasibleError, StorageError, WestflowError
from westflow.inventory import Network
from westflow.placement import POLICY_NAMES, Placement, get_policy
from westflow.spec import DatasetRef, WorkloadSpec
from westflow.text import rejections_markdown, why

__all__ = ["WestflowResource", "placement_metadata", "ROOT"]

ROOT = Path(__file__).resolve().parent.parent


def placement_metadata(p: Placement, *, job_id: str, dashboard_url: str, ran_in: str) -> dict[str, Any]:
    """What every materialisation records about where and why it ran."""
    return {
        "westflow/data_center": p.data_center,
        "westflow/ran_in": ran_in,
        "westflow/region": p.region,
        "westflow/ray_cluster": p.ray_cluster,
        "westflow/tier": p.spec.tier,
        "westflow/origin": p.spec.origin or "",
        "westflow/rtt_ms": dg.MetadataValue.float(round(p.rtt_ms, 3)) if p.rtt_ms is not None else "n/a",
        "westflow/accelerator": f"{p.spec.accelerator.count} x {p.accelerator_model}" if p.accelerator_model
        else "cpu",
        "westflow/energy_kwh": dg.MetadataValue.float(round(p.energy_kwh, 6)),
        "westflow/cost_cny": dg.MetadataValue.float(round(p.cost_cny, 6)),
        "westflow/transfer_hours": dg.MetadataValue.float(round(p.transfer_hours, 6)),
        "westflow/policy": p.policy,
        "westflow/ray_job_id": job_id,
        "westflow/dashboard": dg.MetadataValue.url(f"{dashboard_url}/#/jobs/{job_id}"),
        "westflow/why": why(p),
        "westflow/rejected": dg.MetadataValue.md(rejections_markdown(p)),
    }


class WestflowResource(dg.ConfigurableResource):  # type: ignore[misc]
    """Places a step on the national network and runs it there as a Ray Job."""

    state_dir: str = Field(default=".westflow", description="where `westflow up` keeps the token and S3 state")
    dashboard_url: str | None = Field(default=None, description="Ray dashboard / Jobs API; default from state_dir")
    config_dir: str = Field(default=str(CONFIG_DIR), description="network.yaml, tiers.yaml, policy.yaml")
    policy: str = Field(default="westflow", description=f"one of {', '.join(POLICY_NAMES)}")
    python: str = Field(default=sys.executable, description="interpreter of job entrypoints on the Ray nodes")
    max_failovers: int = Field(default=2, ge=0, description="re-placements after a data center is lost")
    submit_attempts: int = Field(default=4, ge=1, description="tries of a refused Ray Job submission")
    poll_interval_s: float = Field(default=0.5, gt=0)

    # -- where things are ---------------------------------------------------
    def _state(self) -> Path:
        return Path(self.state_dir).resolve()

    def url(self) -> str:
        if self.dashboard_url:
            return self.dashboard_url.rstrip("/")
        try:
            return str(json.loads((self._state() / "ray.json").read_text())["dashboard_url"])
        except (OSError, ValueError, KeyError):
            raise ClusterError(f"No local network recorded in {str(self._state())!r}. "
                               "To fix: run `westflow up`, or set dashboard_url.") from None

    def _token(self) -> str:
        from ray_cluster.local import auth

        try:
            return auth.read_token(self._state())
        except OSError:
            raise ClusterError(f"No Ray auth token in {str(self._state())!r}. To fix: run `westflow up`.") from None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token()}"}

    def network(self) -> Network:
        return load_network(self.config_dir)

    def reader(self) -> DashboardReader:
        return DashboardReader(self.url(), self._token())

    def nodes(self) -> list[NodeView]:
        return self.reader().nodes()

    def capacity(self, network: Network) -> dict[str, DCCapacity]:
        return live_capacity(network, self.reader())

    def capacity_and_totals(self, network: Network) -> tuple[dict[str, DCCapacity], dict[str, DCCapacity]]:
        """What is free per live DC, and what each would have free if empty (one read of the nodes)."""
        nodes = self.nodes()
        return snapshot(network, nodes), snapshot(network, [replace(n, available=dict(n.total)) for n in nodes])

    def reservations(self) -> Reservations:
        """This host's reservation journal (shared by every step process placing through this state dir)."""
        return Reservations(self._state() / "reservations.json")

    # -- placing ------------------------------------------------------------
    def _with_inputs(self, spec: WorkloadSpec, names: Sequence[str]) -> WorkloadSpec:
        """Fill the spec's inputs from the dataset catalogue (region and size), so transfer is priced."""
        if not names:
            return spec
        from storage import DatasetStore, S3Config

        store = DatasetStore(S3Config.load(self._state()))
        refs: list[DatasetRef] = list(spec.inputs)
        for name in names:
            try:
                refs.append(store.info(name).as_ref())
            except StorageError:
                continue  # not produced yet: placement cannot price it, the job will say it is missing
        return spec.copy(inputs=tuple(refs))

    def place(self, context: dg.AssetExecutionContext, spec: WorkloadSpec, network: Network,
              *, exclude: Set[str] = frozenset()) -> tuple[str, Placement]:
        """Place on live capacity (less the DCs in ``exclude``) and reserve it: ``(ticket, placement)``.

        The decision sees the capacity left after every other step's reservation on this host
        (see :mod:`ray_cluster.reservations`); release the ticket when the work ends or fails.
        An impossible spec fails with every DC's reason and reserves nothing.
        """
        live, totals = self.capacity_and_totals(network)
        caps = {dc: c for dc, c in live.items() if dc not in exclude}
        policy = get_policy(self.policy)
        journal = self.reservations()

        def decide(free: Capacity) -> Placement:
            return policy.place(spec, network, free)

        try:
            ticket, p = journal.reserve(caps, decide, owner=_owner(context, spec), totals=totals)
        except InfeasibleError as exc:
            table = "\n".join(f"| {r.data_center} | {r.reason.value} | {r.detail} |" for r in exc.rejected)
            context.log.error(f"westflow: no data center can run {spec.name!r}:\n"
                              + "\n".join(f"  {r.data_center}: {r.reason.value}: {r.detail}" for r in exc.rejected))
            raise dg.Failure(
                description=f"westflow could not place {spec.name!r}: no data center fits. "
                            "Every data center's reason is in the metadata.",
                metadata={"westflow/rejected": dg.MetadataValue.md(
                    "| data center | reason | detail |\n|---|---|---|\n" + table)},
                allow_retries=False,
            ) from exc
        rtt = "" if p.rtt_ms is None else f", RTT {p.rtt_ms:.1f} ms to {spec.origin}"
        context.log.info(f"westflow: {spec.name} -> {p.data_center} ({p.region}{rtt}), "
                         f"{p.energy_kwh:.3f} kWh, {p.cost_cny:.2f} CNY, policy {p.policy}")
        held = f"{p.spec.accelerator.count} x {p.accelerator_model}" if p.accelerator_model else "no accelerators"
        context.log.debug(f"westflow: reservation {ticket} holds {held}, {p.spec.cpus:g} CPUs, "
                          f"{p.spec.memory_gb:g} GB at {p.data_center} in {journal.path}")
        return ticket, p

    def release(self, context: dg.AssetExecutionContext, ticket: str) -> None:
        """Release a reservation of :meth:`place`; a journal error is logged, never raised over the step's own."""
        try:
            released = self.reservations().release(ticket)
        except (WestflowError, OSError) as exc:
            context.log.warning(f"westflow: could not release reservation {ticket}: {exc}")
            return
        context.log.debug(f"westflow: reservation {ticket} released"
                          + ("" if released else " (it was no longer held)"))

    # -- running ------------------------------------------------------------
    def ran_in(self, job_id: str) -> str:
        """The DC of the node Ray says ran the job's driver (Ray's job and node info)."""
        from ray.job_submission import JobSubmissionClient

        info = JobSubmissionClient(self.url(), headers=self.headers()).get_job_info(job_id)
        node_id = info.driver_node_id
        for n in self.nodes():
            if n.node_id == node_id and n.dc:
                return n.dc
        return "unknown"

    def _entrypoint(self, module: str, args: Sequence[str], p: Placement) -> str:
        task = json.dumps(p.ray.task_options(), sort_keys=True)
        return shlex.join([self.python, "-m", module, *args, "--task-resources", task])

    def _submit(self, context: dg.AssetExecutionContext, module: str, args: Sequence[str],
                p: Placement, submission_id: str) -> tuple[str, dict[str, Any]]:
        from dagster_ray import PipesRayJobClient

        env = {"WESTFLOW_REGION": p.region, "WESTFLOW_PLACED_DC": p.data_center,
               "WESTFLOW_STATE_DIR": str(self._state()), "PYTHONPATH": str(ROOT)}
        params: dict[str, Any] = {
            "entrypoint": self._entrypoint(module, args, p),
            "runtime_env": {"env_vars": env},
            "submission_id": submission_id,
            "metadata": {"westflow.dc": p.data_center, "westflow.spec": p.spec.name,
                         "westflow.dagster_run_id": context.run_id},
            **p.ray.job_options(),
        }
        client = PipesRayJobClient(address=self.url(), headers=self.headers(),
                                   poll_interval=self.poll_interval_s, timeout=600)
        inv = retry_call(
            lambda: client.run(context=context, submit_job_params=params,  # type: ignore[arg-type]
                               extras={"westflow_data_center": p.data_center}),
            RetryPolicy(attempts=self.submit_attempts),
            what=f"Ray Job submission of {p.spec.name}",
            log_fn=context.log.warning,
            transient=lambda e: is_transient(e) and not isinstance(e, RuntimeError),
        )
        job_id = str(inv.metadata.get("Ray Job ID").value)  # type: ignore[union-attr]
        result = inv.get_materialize_result()
        return job_id, dict(result.metadata or {})

    def _dc_alive(self, dc: str) -> bool:
        try:
            return any(n.dc == dc and n.alive for n in self.nodes())
        except ClusterError:
            return False

    def _node_loss(self, submission_id: str, dc: str) -> str | None:
        """Why the job failed if its data center was lost (Ray's own verdict), else None."""
        from ray.job_submission import JobSubmissionClient

        try:
            info = JobSubmissionClient(self.url(), headers=self.headers()).get_job_info(submission_id)
            message, kind = info.message or "", str(info.error_type or "")
        except Exception:  # noqa: BLE001 - the job server itself may be what was lost
            message, kind = "", ""
        died = kind == "JOB_SUPERVISOR_ACTOR_DIED" or "node has died" in message
        if not died and self._dc_alive(dc):
            return None
        detail = " ".join(message.split())[:160] or "the node stopped answering"
        return f"Ray node of {dc} lost during the step ({detail})"

    def run(self, context: dg.AssetExecutionContext, *, module: str, args: Sequence[str] = ()) -> dg.MaterializeResult:
        """Place the executing asset's spec and run ``python -m module args`` there.

        If the data center running it is lost, the step is placed again without it (its tier and
        accelerator needs still hold) and the job resumes from its last checkpoint.
        """
        network = self.network()
        spec = self._with_inputs(spec_of(context), declared_inputs(context))
        lost: list[tuple[str, str]] = []
        for attempt in range(self.max_failovers + 1):
            ticket, p = self.place(context, spec, network, exclude={dc for dc, _ in lost})
            if lost:
                context.log_event(dg.AssetObservation(
                    asset_key=context.asset_key,
                    metadata={"westflow/failover_from": lost[-1][0], "westflow/failover_to": p.data_center,
                              "westflow/failover_reason": lost[-1][1]}))
                context.log.warning(f"westflow: failover of {spec.name}: {lost[-1][0]} -> {p.data_center}: "
                                    f"{lost[-1][1]}")
            sid = f"westflow-{spec.name}-{context.run_id[:8]}-{attempt}-{secrets.token_hex(3)}"
            try:
                job_id, job_meta = self._submit(context, module, args, p, sid)
            except RuntimeError:  # the Ray Job ended FAILED or STOPPED
                why = self._node_loss(sid, p.data_center)
                if why is None or attempt == self.max_failovers:
                    raise
                lost.append((p.data_center, why))
                continue  # the reservation is released (finally) before the step is placed again
            finally:  # the Ray Job ended, failed or was never submitted
                self.release(context, ticket)
            meta = {**job_meta, **placement_metadata(p, job_id=job_id, dashboard_url=self.url(),
                                                     ran_in=self.ran_in(job_id))}
            if lost:
                meta["westflow/failovers"] = dg.MetadataValue.md(
                    "\n".join(f"- lost {dc}: {why}" for dc, why in lost))
            return dg.MaterializeResult(metadata=meta)
        raise AssertionError("unreachable")  # pragma: no cover


def _owner(context: dg.AssetExecutionContext, spec: WorkloadSpec) -> str:
    """Who holds a reservation: the Dagster run and step (shown by ``Reservations.held``)."""
    return f"dagster run {context.run_id} step {context.get_step_execution_context().step.key} spec {spec.name}"
