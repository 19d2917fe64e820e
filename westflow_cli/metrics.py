"""The network's state as Prometheus metrics, read fresh at every scrape (``westflow exporter``).

Per DC (labels ``dc``, ``cluster``, ``region``): accelerators total and used per model, utilisation
and its target, whether Ray sees the DC; per tenant and priority class: work pending, deferred, admitted and
preempting; counters of the queue's decisions per tenant (admissions, resumptions, preemptions,
requeues after a failover or a preemption, expiries); per tenant, metered accelerator-hours and CNY
when the metering records exist. Sources: the same live read ``westflow status`` shows (each
cluster's dashboard, concurrently, bounded) and the admission database. Served on 127.0.0.1 only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from admission.workqueue import AdmissionQueue
from westflow.capacity import Capacity, Resources, utilisation
from westflow.inventory import Network

__all__ = ["NetworkCollector", "METRICS"]

# name -> help; every name the dashboard in deploy/grafana may query (a test checks both ways)
METRICS = {
    "westflow_dc_up": "1 when Ray reports the data center's node(s) alive and its cluster reachable",
    "westflow_dc_accelerators_capacity": "accelerators of the data center, per model, as Ray counts them",
    "westflow_dc_accelerators_used": "accelerators in use, per model (Ray's own accounting)",
    "westflow_dc_utilisation": "share of the data center's accelerators in use (CPUs where it has none)",
    "westflow_dc_utilisation_target": "the data center's utilisation target from network.yaml",
    "westflow_queue_workloads": "live workloads in the admission queue, per tenant, priority class and state",
    "westflow_queue_decisions": "decisions of the admission queue, per tenant and kind",
    "westflow_tenant_accelerator_hours": "metered accelerator-hours per tenant",
    "westflow_tenant_cny": "metered cost per tenant (CNY)",
}

CapacityRead = Callable[[], tuple[Capacity, Capacity]]
MeteredRead = Callable[[], dict[str, tuple[float, float]]]  # tenant -> (accelerator-hours, CNY)


class NetworkCollector(Collector):
    """A Prometheus collector over the live capacity read and the admission queue."""

    def __init__(self, network: Network, capacity: CapacityRead, queue: AdmissionQueue,
                 metered: MeteredRead | None = None) -> None:
        self.network = network
        self._capacity = capacity
        self.queue = queue
        self._metered = metered

    def collect(self) -> Iterator[Any]:
        yield from self._dcs()
        yield from self._queue()
        if self._metered is not None:
            yield from self._tenants()

    def _dcs(self) -> Iterator[Any]:
        live, totals = self._capacity()
        up = GaugeMetricFamily("westflow_dc_up", METRICS["westflow_dc_up"], labels=["dc", "cluster", "region"])
        total = GaugeMetricFamily("westflow_dc_accelerators_capacity", METRICS["westflow_dc_accelerators_capacity"],
                                  labels=["dc", "cluster", "region", "model"])
        used = GaugeMetricFamily("westflow_dc_accelerators_used", METRICS["westflow_dc_accelerators_used"],
                                 labels=["dc", "cluster", "region", "model"])
        util = GaugeMetricFamily("westflow_dc_utilisation", METRICS["westflow_dc_utilisation"],
                                 labels=["dc", "cluster", "region"])
        target = GaugeMetricFamily("westflow_dc_utilisation_target", METRICS["westflow_dc_utilisation_target"],
                                   labels=["dc", "cluster", "region"])
        for dc in self.network.data_centers:
            labels = [dc.id, dc.ray_cluster, dc.region.value]
            target.add_metric(labels, dc.utilisation_target)
            cap, whole = live.get(dc.id), totals.get(dc.id)
            up.add_metric(labels, 1.0 if cap is not None and cap.alive and whole is not None else 0.0)
            if cap is None or whole is None or not cap.alive:
                continue
            in_use = whole.resources().minus(cap.resources())
            for model, n in sorted(whole.free.items()):
                total.add_metric([*labels, model], float(n))
                used.add_metric([*labels, model], float(in_use.accelerators.get(model, 0)))
            util.add_metric(labels, utilisation(whole.resources(), _clamped(in_use)))
        yield from (up, total, used, util, target)

    def _queue(self) -> Iterator[Any]:
        work = GaugeMetricFamily("westflow_queue_workloads", METRICS["westflow_queue_workloads"],
                                 labels=["tenant", "priority_class", "state"])
        for (tenant, pclass, state), n in sorted(self.queue.tally().items()):
            work.add_metric([tenant, pclass, state], float(n))
        decided = CounterMetricFamily("westflow_queue_decisions", METRICS["westflow_queue_decisions"],
                                      labels=["tenant", "kind"])
        for (tenant, kind), n in sorted(self.queue.decision_tally().items()):
            decided.add_metric([tenant, kind], float(n))
        yield from (work, decided)

    def _tenants(self) -> Iterator[Any]:
        assert self._metered is not None
        hours = CounterMetricFamily("westflow_tenant_accelerator_hours", METRICS["westflow_tenant_accelerator_hours"],
                                    labels=["tenant"])
        cny = CounterMetricFamily("westflow_tenant_cny", METRICS["westflow_tenant_cny"], labels=["tenant"])
        for tenant, (h, c) in sorted(self._metered().items()):
            hours.add_metric([tenant], h)
            cny.add_metric([tenant], c)
        yield from (hours, cny)


def _clamped(r: Resources) -> Resources:
    """In-use amounts never below zero (a node's counts are floats summed over its resources)."""
    return Resources({m: max(0.0, n) for m, n in r.accelerators.items()}, max(0.0, r.cpus), max(0.0, r.memory_gb))
