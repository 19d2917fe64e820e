"""The westflow resource: place a step, run it as a Ray Job through Dagster Pipes.

Thin: it composes the Ray side. The Ray clusters are a
:class:`~ray_cluster.federation.Federation` (:meth:`WestflowResource.federation`:
the resource's ``ray_address`` and token, else ``$WESTFLOW_RAY_ADDRESS``, else
the local clusters ``westflow up`` recorded, or with ``clusters="inventory"``
every cluster of configs/network.yaml); placement is ``westflow.placement`` on
the live capacity of all clusters, read concurrently, reserved in the host's
journal (:mod:`ray_cluster.reservations`: steps run in separate processes and
the dashboard's usage lags); submitting, waiting, stopping and the node-loss
verdict are the placed cluster's :class:`~ray_cluster.dispatch.Dispatcher`; failover is
:func:`~ray_cluster.failover.run_with_failover`. What is Dagster's stays here:
the Pipes session (context in, messages and logs back from the job's log), the
log lines, the metadata (:mod:`pipelines.metadata`), and stopping the Ray job
when the run is cancelled.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg
from pydantic import Field

from admission.controller import Controller
from admission.tickets import QueueTimeout, StepTicket
from admission.workqueue import AdmissionQueue
from pipelines import metadata as md
from pipelines.service_asset import deploy_service
from pipelines.workload import declared_inputs, declared_project, declared_spec
from ray_cluster.access import ADDRESS_ENV, RAY_ADDRESS_ENV, ClusterAccess
from ray_cluster.dispatch import LOST, ClusterLost, Dispatcher, JobOutcome, entrypoint, short_message
from ray_cluster.failover import Attempt, JobFailed, Lost, run_with_failover
from ray_cluster.federation import DEFAULT_TIMEOUT_S, Federation, admit_on_totals
from ray_cluster.live import NodeView
from ray_cluster.local import recorded_serve_url
from ray_cluster.metering_sync import job_metadata, meter_job
from ray_cluster.retry import RetryPolicy
from ray_cluster.serving import SERVE_URL_ENV, Services
from ray_cluster.shipping import DEFAULT_MAX_FILE_MB, CodeConfig, Shipment, check_module, ship
from westflow.capacity import DCCapacity
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import CodeError, ConfigError, InfeasibleError, StorageError, WestflowError
from westflow.inventory import Network
from westflow.placement import POLICY_NAMES, Placement, get_policy
from westflow.spec import DatasetRef, WorkloadSpec
from westflow.tenants import Tenants, load_tenants

__all__ = ["WestflowResource", "ROOT", "JOB_DAGSTER_RUN", "TENANT_TAG", "ADMISSION_URL_ENV"]

ROOT = Path(__file__).resolve().parent.parent
JOB_DAGSTER_RUN = "westflow.dagster_run_id"  # Ray job metadata: the Dagster run that submitted it
TENANT_TAG = "westflow/tenant"  # a run tag naming the tenant the run's steps are admitted as
ADMISSION_URL_ENV = "WESTFLOW_ADMISSION_URL"


class WestflowResource(dg.ConfigurableResource):  # type: ignore[misc]
    """Places a step on the national network and runs it there as a Ray Job."""

    ray_address: str | None = Field(default=None, description="Ray dashboard / Jobs API URL; unset: "
                                    "$WESTFLOW_RAY_ADDRESS, else $RAY_ADDRESS")
    ray_auth_token: str | None = Field(default=None, description="Ray auth token (use dg.EnvVar); unset: "
                                       "ray_auth_token_path, $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH")
    ray_auth_token_path: str | None = Field(default=None, description="file holding the Ray auth token")
    state_dir: str = Field(default=".westflow", description="this host's reservation journal, S3 config, reports")
    config_dir: str = Field(default=str(CONFIG_DIR), description="network.yaml, tiers.yaml, policy.yaml")
    policy: str = Field(default="westflow", description=f"one of {', '.join(POLICY_NAMES)}")
    python: str = Field(default="python", description="the cluster's interpreter for the job: `python` is the one "
                        "its Ray runs with, or the virtualenv Ray builds for the requirements")
    working_dir: str | None = Field(default=None, description="the project shipped with each step (Ray runtime env "
                                    "working_dir); unset: the asset's project root")
    excludes: list[str] = Field(default_factory=list, description="more gitignore-style patterns left out of it")
    max_file_mb: float = Field(default=DEFAULT_MAX_FILE_MB, gt=0, description="a larger file is data: left out")
    max_upload_mb: float | None = Field(default=None, gt=0, description="upload limit; unset: Ray's (512 MiB)")
    py_modules: list[str] = Field(default_factory=list, description="more packages or .whl files to ship")
    requirements: list[str] | None = Field(default=None, description="the job's pip requirements; unset: the "
                                           "project's requirements.txt or pyproject.toml; []: none")
    installer: str = Field(default="pip", description="pip or uv: Ray's plugin that installs the requirements")
    max_failovers: int = Field(default=2, ge=0, description="re-placements after a data center is lost")
    submit_attempts: int = Field(default=4, ge=1, description="tries of a refused Ray Job submission")
    poll_interval_s: float = Field(default=0.5, gt=0)
    clusters: str = Field(default="auto", description="auto: ray_address, else $WESTFLOW_RAY_ADDRESS, else the "
                          "local clusters `westflow up` recorded; inventory: every cluster of network.yaml")
    cluster_timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, description="bound on each cluster's "
                                     "live capacity read; a cluster slower than this is unreachable for placement")
    serve_timeout_s: float = Field(default=180.0, gt=0, description="how long a service deployment may take "
                                   "until every city's route serves (or is degraded)")
    cluster_lost_after_s: float = Field(default=20.0, gt=0, description="how long a cluster's Jobs API must stay "
                                        "unreachable while it runs a step before the step moves to another cluster")
    admission_url: str | None = Field(default=None, description="the admission queue's database; unset: "
                                      "$WESTFLOW_ADMISSION_URL, else SQLite in state_dir (admission.db); "
                                      "postgresql+psycopg://... where several hosts place steps")
    tenant: str | None = Field(default=None, description="the tenant this deployment's steps are admitted as; a run "
                               "tag westflow/tenant may name another configured tenant; unset: tenants.yaml's default")
    preemption_grace_s: float | None = Field(default=None, ge=0, description="how long a preempted step's job may "
                                             "run on to write its checkpoint; unset: tenants.yaml's")

    # -- the systems it composes ----------------------------------------------
    def access(self) -> ClusterAccess:
        """One cluster's access, from the resource's fields or the environment (the single-cluster case)."""
        return ClusterAccess.resolve(dashboard_url=self.ray_address, token=self.ray_auth_token,
                                     token_path=self.ray_auth_token_path)

    def federation(self, log_fn: Any = None) -> Federation:
        """The Ray clusters steps go to (see the module doc), with this resource's dispatcher settings."""
        import os

        def make(access: ClusterAccess) -> Dispatcher:
            return Dispatcher(access, retry=RetryPolicy(attempts=self.submit_attempts),
                              poll_interval_s=self.poll_interval_s, log_fn=log_fn,
                              lost_after_s=self.cluster_lost_after_s)

        kw: dict[str, Any] = {"timeout_s": self.cluster_timeout_s, "make_dispatcher": make}
        if self.clusters not in ("auto", "inventory"):
            raise WestflowError(f"Invalid WestflowResource.clusters {self.clusters!r}; must be auto or inventory.")
        if self.clusters == "inventory":
            return Federation.of_network(load_network(self.config_dir), **kw)
        explicit = self.ray_address or self.ray_auth_token or self.ray_auth_token_path
        if not explicit and not (os.environ.get(ADDRESS_ENV) or os.environ.get(RAY_ADDRESS_ENV)):
            local = Federation.local(self._state(), **kw)
            if local is not None:
                return local
        return Federation.single(self.access(), load_network(self.config_dir),
                                 serve_url=os.environ.get(SERVE_URL_ENV) or recorded_serve_url(self._state()), **kw)

    def network(self, federation: Federation | None = None) -> Network:
        """The inventory with each DC in the Ray cluster that runs it here."""
        return (federation or self.federation()).grouped(load_network(self.config_dir))

    def nodes(self) -> list[NodeView]:
        """Every reachable cluster's Ray nodes."""
        return [n for r in self.federation().read().values() for n in r.nodes]

    def capacity_and_totals(self, network: Network, federation: Federation | None = None,
                            ) -> tuple[dict[str, DCCapacity], dict[str, DCCapacity]]:
        """What is free per DC, and what each would have free if empty (one concurrent read of every cluster;
        a DC of an unreachable cluster is out, with its reason)."""
        return (federation or self.federation()).capacity_and_totals(network)

    def _state(self) -> Path:
        return Path(self.state_dir).resolve()

    # -- admission ------------------------------------------------------------
    def tenants(self, network: Network) -> Tenants:
        """tenants.yaml of ``config_dir``, its quotas checked against the network's accelerator models."""
        return load_tenants(self.config_dir, models={p.model for dc in network.data_centers for p in dc.pools})

    def queue(self) -> AdmissionQueue:
        """The admission queue: ``admission_url``, else $WESTFLOW_ADMISSION_URL, else SQLite in the state dir."""
        import os

        url = self.admission_url or os.environ.get(ADMISSION_URL_ENV)
        return AdmissionQueue(url) if url else AdmissionQueue.local(self._state())

    def controller(self, queue: AdmissionQueue, network: Network, federation: Federation,
                   tenants: Tenants) -> Controller:
        """The admission cycle this step runs itself when no ``westflow controller`` leads."""
        return Controller(queue, tenants=tenants, network=network, policy=get_policy(self.policy),
                          capacity=lambda: federation.capacity_and_totals(network), scope=federation.scope)

    def admitted_as(self, context: dg.AssetExecutionContext, spec: WorkloadSpec, tenants: Tenants) -> WorkloadSpec:
        """The spec with the tenant this run is admitted as: the run tag, else the resource's, else the default.

        The asset's author may name a tenant only to agree with it: the deployment decides who pays.
        """
        run = getattr(context, "run", None)
        tagged = run.tags.get(TENANT_TAG) if run is not None else None
        tenant = tagged or self.tenant or tenants.default_tenant
        where = (f"run tag {TENANT_TAG}" if tagged else
                 "WestflowResource.tenant" if self.tenant else "tenants.yaml default_tenant")
        try:
            tenants.tenant(tenant)
        except WestflowError as exc:
            raise dg.Failure(description=f"westflow will not run {spec.name!r} as tenant {tenant!r} ({where}): {exc}",
                             allow_retries=False) from exc
        if spec.tenant not in ("default", tenant):
            raise dg.Failure(description=f"westflow will not run {spec.name!r}: its spec names tenant "
                                         f"{spec.tenant!r} but this run is admitted as {tenant!r} ({where}).",
                             allow_retries=False)
        return spec if spec.tenant == tenant else spec.copy(tenant=tenant)

    def _admit(self, context: dg.AssetExecutionContext, ticket: StepTicket, spec: WorkloadSpec, network: Network,
               tenants: Tenants, federation: Federation, exclude: Set[str]) -> Placement:
        """Queue the step (or requeue it without ``exclude``), wait for admission, and return where it runs."""
        try:
            p = self._admit_if_it_fits(context, ticket, spec, network, tenants, federation, exclude)
        except QueueTimeout as exc:
            table = "\n".join(f"| {dc} | {r} |" for dc, r in sorted(exc.reasons.items()))
            raise dg.Failure(description=f"westflow could not place {spec.name!r}: {exc}",
                             metadata={md.REJECTED: dg.MetadataValue.md("| data center | last reason |\n|---|---|\n"
                                                                        + table),
                                       md.WAIT_S: round(exc.waited_s, 1)},
                             allow_retries=False) from exc
        except ConfigError as exc:
            raise dg.Failure(description=f"westflow will not queue {spec.name!r}: {exc}", allow_retries=False) from exc
        rtt = "" if p.rtt_ms is None else f", RTT {p.rtt_ms:.1f} ms to {spec.origin}"
        context.log.info(f"westflow: {spec.name} -> {p.data_center} ({p.region}{rtt}), "
                         f"{p.energy_kwh:.3f} kWh, {p.cost_cny:.2f} CNY, policy {p.policy}, tenant {spec.tenant}")
        return p

    def _admit_if_it_fits(self, context: dg.AssetExecutionContext, ticket: StepTicket, spec: WorkloadSpec,
                          network: Network, tenants: Tenants, federation: Federation, exclude: Set[str]) -> Placement:
        """``ticket.admit``, refused at once only when no DC could run the step even empty (a cluster whose
        read timed out is read again first: :func:`ray_cluster.federation.admit_on_totals`)."""
        def slow(names: Sequence[str]) -> None:
            context.log.warning(f"westflow: Ray cluster(s) {', '.join(names)} did not answer in time; "
                                "reading again before deciding")

        try:
            return admit_on_totals(federation, network, lambda totals: ticket.admit(
                spec, network=network, policy=get_policy(self.policy), totals=totals, tenants=tenants,
                owner=_owner(context, spec), exclude=exclude), on_slow=slow)
        except InfeasibleError as exc:  # could never fit, even on an empty network (nothing queued yet)
            _infeasible(context, spec, exc)

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

    # -- serving ------------------------------------------------------------
    def serve(self, context: dg.AssetExecutionContext, service: Mapping[str, Any]) -> dg.MaterializeResult:
        """Deploy or update a live service (a service YAML's mapping) serving the latest model; see
        :mod:`pipelines.service_asset`."""
        fed = self.federation(log_fn=context.log.warning)
        return deploy_service(context, self._state(), fed, self.network(fed), service,
                              timeout_s=self.serve_timeout_s)

    def reconcile_services(self) -> list[str]:
        """Move every live service's routes off lost DCs; one line per route that changed."""
        fed = self.federation()
        services = Services(self._state(), fed, load_network(self.config_dir))
        out = []
        for name, before in services.records().items():
            after = services.reconcile(name)
            for city, r in after.routes.items():
                old = before.routes.get(city)
                if old is not None and r != old:
                    to = r.data_center if r.state == "placed" else f"degraded ({r.reason.splitlines()[0]})"
                    out.append(f"service {name} for {city}: {old.data_center or 'degraded'} -> {to}")
        return out

    # -- running ------------------------------------------------------------
    def code(self, context: dg.AssetExecutionContext | None = None) -> Shipment:
        """What travels with the step: ``working_dir`` (default: the asset's project), checked before submission."""
        root = self.working_dir or (declared_project(context) if context is not None else None)
        return ship(CodeConfig(
            Path(root) if root else None, excludes=tuple(self.excludes), max_file_mb=self.max_file_mb,
            max_upload_mb=self.max_upload_mb, py_modules=tuple(Path(m) for m in self.py_modules),
            requirements=None if self.requirements is None else tuple(self.requirements),
            installer=self.installer, state_dir=self._state()))  # type: ignore[arg-type]  # ship() checks it

    def _entrypoint(self, module: str, args: Sequence[str], p: Placement) -> str:
        return entrypoint(self.python, module, args, p)

    def job_env(self, p: Placement) -> dict[str, str]:
        """What the step's job finds in its environment (besides the Pipes bootstrap)."""
        return {"WESTFLOW_REGION": p.region, "WESTFLOW_PLACED_DC": p.data_center,
                "WESTFLOW_STATE_DIR": str(self._state())}

    def launch(self, context: dg.AssetExecutionContext, dispatcher: Dispatcher, module: str, args: Sequence[str],
               p: Placement, attempt: int, code: Shipment | None = None,
               preempted: threading.Event | None = None, grace_s: float = 0.0) -> Attempt[dict[str, Any]]:
        """One run of the step at ``p`` inside a Pipes session; the job's own report comes back as ``result``.

        When ``preempted`` is set while the job runs, the job gets ``grace_s`` to end on its own (its
        checkpoint is written each epoch), then it is stopped; the caller requeues the step.
        """
        from dagster_ray import PipesRayJobMessageReader

        access = dispatcher.access
        sid = f"westflow-{p.spec.name}-{context.run_id[:8]}-{attempt}-{secrets.token_hex(3)}"
        reader = PipesRayJobMessageReader(job_submission_client_kwargs={"headers": access.headers()})
        with dg.open_pipes_session(context=context, message_reader=reader,
                                   context_injector=dg.PipesEnvContextInjector(),
                                   extras={"westflow_data_center": p.data_center}) as session:
            env = {**self.job_env(p), **session.get_bootstrap_env_vars()}
            step, submitted = context.get_step_execution_context().step.key, time.time()
            job_id = dispatcher.submit(p, self._entrypoint(module, args, p), env=env, submission_id=sid, code=code,
                                       metadata={JOB_DAGSTER_RUN: context.run_id,
                                                 **job_metadata(p, run_id=context.run_id, step=step)})
            context.log.info(f"westflow: Ray job {job_id} submitted to Ray cluster {p.ray_cluster} "
                             f"({access.dashboard_url})")
            session.report_launched({"extras": {"ray_job_id": job_id, "ray_address": access.dashboard_url}})
            done = threading.Event()
            if preempted is not None:
                threading.Thread(target=self._stop_when_preempted, daemon=True, name=f"westflow-preempt-{job_id}",
                                 args=(context, dispatcher, job_id, preempted, done, grace_s)).start()
            try:
                outcome = dispatcher.wait(job_id, data_center=p.data_center)
            except ClusterLost as exc:  # the whole cluster is gone: nothing there to stop; the caller fails over
                context.log.warning(f"westflow: {exc}")
                outcome = JobOutcome(job_id, LOST, str(exc))
            except BaseException as exc:  # interrupted, or the job could not be followed: none of ours runs on
                why = "run interrupted" if isinstance(exc, dg.DagsterExecutionInterruptedError) else (
                    f"lost track of the job ({type(exc).__name__}: {str(exc)[:200]})")
                context.log.warning(f"westflow: {why}: stopping Ray job {job_id}")
                self._stop(context, dispatcher, job_id)
                meter_job(self.queue, dispatcher, p, job_id, status="STOPPED", submitted_at=submitted,
                          run_id=context.run_id, step=step, log_fn=context.log.warning)  # metered to its stop
                raise
            finally:
                done.set()
        meter_job(self.queue, dispatcher, p, job_id, status=outcome.status, submitted_at=submitted,
                  run_id=context.run_id, step=step, preempted=preempted is not None and preempted.is_set(),
                  log_fn=context.log.warning)  # never raises: a record it could not write, the reconciler writes
        report: dict[str, Any] = {}
        if outcome.succeeded:
            report = dict(dg.PipesClientCompletedInvocation(session).get_materialize_result().metadata or {})
        elif outcome.status != LOST:
            outcome = dispatcher.explained(outcome, where=f"{p.data_center} ({access.dashboard_url})", code=code,
                                           python=self.python)
        return Attempt(p, outcome, report)

    def _stop_when_preempted(self, context: dg.AssetExecutionContext, dispatcher: Dispatcher, job_id: str,
                             preempted: threading.Event, done: threading.Event, grace_s: float) -> None:
        while not done.is_set():
            if preempted.wait(0.5):
                context.log.warning(f"westflow: preempted: Ray job {job_id} stops in {grace_s:g} s unless it ends "
                                    "first; the step then waits in the queue and resumes from its checkpoint")
                if not done.wait(grace_s):
                    self._stop(context, dispatcher, job_id)
                return

    @staticmethod
    def _stop(context: dg.AssetExecutionContext, dispatcher: Dispatcher, job_id: str) -> None:
        """Stop a job of a failing step; a failure to stop is logged, never raised over the step's own."""
        try:
            dispatcher.stop(job_id)
        except (WestflowError, RuntimeError, OSError) as exc:
            context.log.error(f"westflow: could not stop Ray job {job_id}: {exc}. To fix: `ray job stop {job_id}` "
                              f"against {dispatcher.access.dashboard_url}")

    def run(self, context: dg.AssetExecutionContext, *, module: str, args: Sequence[str] = ()) -> dg.MaterializeResult:
        """Place the executing asset's spec and run ``python -m module args`` there.

        If the data center running it is lost, the step is placed again without it (its tier and
        accelerator needs still hold) and the job resumes from its last checkpoint.
        """
        network = load_network(self.config_dir)  # the spec is checked before any cluster is contacted
        spec = self._with_inputs(declared_spec(context, network), declared_inputs(context))
        try:
            code = self.code(context)
            check_module(code, module)
        except CodeError as exc:
            raise dg.Failure(description=f"westflow cannot ship {spec.name!r}: {exc}",
                             metadata={md.FAILURE: str(exc)}, allow_retries=False) from exc
        context.log.info(f"westflow: shipping {code.describe()}")
        fed = self.federation(log_fn=context.log.warning)
        network = fed.grouped(network)
        tenants = self.tenants(network)
        spec = self.admitted_as(context, spec, tenants)
        queue = self.queue()
        grace = (self.preemption_grace_s if self.preemption_grace_s is not None
                 else tenants.admission.preemption_grace_s)
        step_key = context.get_step_execution_context().step.key
        ticket = StepTicket(queue, f"{context.run_id}:{step_key}",
                            controller=self.controller(queue, network, fed, tenants), heartbeat_s=2.0,
                            on_event=lambda kind, text: context.log.info(f"westflow: {spec.name} {text}"))

        def on_failover(lost: Lost, to: Placement) -> None:
            context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=md.failover_metadata(lost, to)))
            context.log.warning(f"westflow: failover of {spec.name}: {lost.data_center} -> {to.data_center} "
                                f"(Ray cluster {to.ray_cluster}): {lost.reason}")

        def verdict(a: Attempt[dict[str, Any]]) -> str | None:
            if a.outcome.status == LOST:
                return f"Ray cluster {a.placement.ray_cluster} lost during the step ({a.outcome.message[:240]})"
            return fed.dispatcher(a.placement.ray_cluster).node_loss_verdict(a.job_id, a.placement.data_center)

        def place(exclude: frozenset[str]) -> tuple[str, Placement]:
            return ticket.key, self._admit(context, ticket, spec, network, tenants, fed, exclude)

        def preempted(a: Attempt[dict[str, Any]]) -> str | None:
            return f"preempted by {ticket.preempted_by}" if ticket.preempted.is_set() else None

        def on_preempted(p: Placement, why: str) -> None:
            context.log_event(dg.AssetObservation(asset_key=context.asset_key,
                                                  metadata={md.PREEMPTED: f"{p.data_center}: {why}"}))

        state, detail = "failed", "the step raised"
        try:
            done = run_with_failover(
                place=place, release=lambda key: None,
                run=lambda p, n: self.launch(context, fed.dispatcher(p.ray_cluster), module, args, p, n, code,
                                             preempted=ticket.preempted, grace_s=grace),
                verdict=verdict, max_failovers=self.max_failovers, on_failover=on_failover,
                preempted=preempted, on_preempted=on_preempted)
            state, detail = "finished", f"Ray job {done.attempt.job_id} succeeded"
        except JobFailed as exc:
            detail = str(exc)[:500]
            dispatcher = fed.dispatcher(network.dc(exc.data_center).ray_cluster)
            lost_cluster = exc.outcome.status == LOST
            tail = [] if lost_cluster else dispatcher.logs(exc.outcome.job_id).splitlines()[-20:]
            meta: dict[str, Any] = {md.RAY_JOB_ID: exc.outcome.job_id,
                                    md.RAY_CLUSTER: network.dc(exc.data_center).ray_cluster,
                                    md.DASHBOARD: dg.MetadataValue.url(dispatcher.access.job_url(exc.outcome.job_id)),
                                    md.FAILURE: exc.outcome.cause or short_message(exc.outcome.message),
                                    md.JOB_LOG_TAIL: dg.MetadataValue.md("```\n" + "\n".join(tail) + "\n```")}
            if exc.lost:
                meta[md.FAILOVERS] = md.failovers_markdown(exc.lost)
            raise dg.Failure(description=str(exc), metadata=meta) from exc
        finally:
            try:  # the queue row frees what the step held, however it ended
                ticket.finish(state, detail)
            except (WestflowError, OSError) as exc:
                context.log.warning(f"westflow: could not close queue entry {ticket.key}: {exc}")
        a = done.attempt
        dispatcher = fed.dispatcher(a.placement.ray_cluster)
        try:  # bookkeeping after the job succeeded never fails the step
            ran_in = dispatcher.ran_in(a.job_id)
        except (WestflowError, RuntimeError, OSError) as exc:
            ran_in = "unknown"
            context.log.warning(f"westflow: could not read where Ray job {a.job_id} ran: {exc}")
        meta = {**a.result, **md.placement_metadata(a.placement, job_id=a.job_id,
                                                    job_url=dispatcher.access.job_url(a.job_id),
                                                    cluster_url=dispatcher.access.dashboard_url,
                                                    ran_in=ran_in),
                md.CODE: code.describe()}
        if done.lost:
            meta[md.FAILOVERS] = md.failovers_markdown(done.lost)
        meta.update({md.TENANT: spec.tenant, md.WAIT_S: round(ticket.waited_s, 1),
                     md.PREEMPTIONS: ticket.preemptions, md.QUEUE_KEY: ticket.key})
        return dg.MaterializeResult(metadata=meta)


def _infeasible(context: dg.AssetExecutionContext, spec: WorkloadSpec, exc: InfeasibleError) -> NoReturn:
    """Fail a step no data center could ever run, with every DC's reason."""
    table = "\n".join(f"| {r.data_center} | {r.reason.value} | {r.detail} |" for r in exc.rejected)
    context.log.error(f"westflow: no data center can run {spec.name!r}:\n"
                      + "\n".join(f"  {r.data_center}: {r.reason.value}: {r.detail}" for r in exc.rejected))
    raise dg.Failure(
        description=f"westflow could not place {spec.name!r}: no data center fits. "
                    "Every data center's reason is in the metadata.",
        metadata={md.REJECTED: dg.MetadataValue.md("| data center | reason | detail |\n|---|---|\n" + table)},
        allow_retries=False,
    ) from exc


def _owner(context: dg.AssetExecutionContext, spec: WorkloadSpec) -> str:
    """Who a queue entry is for: the Dagster run and step (shown by ``westflow queue``)."""
    return f"dagster run {context.run_id} step {context.get_step_execution_context().step.key} spec {spec.name}"
