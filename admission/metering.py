"""Metering: one usage record per Ray job that ran, priced from the placement, in the admission database.

A record is written when a job ends, by the process that followed it (:func:`usage_record` then
:meth:`Meter.record`); a job whose writer died is metered later from Ray's job table by the
reconciler (``ray_cluster.metering_sync``) through :func:`usage_from_job`. Both price the same way:
the placement's own energy (``westflow.energy``, the one formula: accelerator and CPU power x PUE x
hours) per planned hour, times the hours Ray says the job ran, at the DC's flat price (the
placement's cost per hour) or, where the DC has a time-of-use tariff (``Placement.tariff``), at
the tariff's prices of the hours the job ran (:func:`westflow.energy.energy_cost_cny`).
So that the reconciler can price a job without its writer, the writer's rates travel with the job
as Ray job metadata (:func:`job_metadata`, key :data:`USAGE_KEY`).

The ``usage`` table is append-only and keyed by the Ray job id: a second write of a job (the
writer and a reconciler, or two reconcilers racing) inserts nothing (``ON CONFLICT DO NOTHING``).
Periods and days are read in Asia/Shanghai; a record counts in the period its job *ended* in.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, Select, cast, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from admission.database import insert_or_ignore, read_transaction, run_write
from admission.rows import USAGE_STATUSES, Base, QueueError
from admission.workqueue import AdmissionQueue
from westflow.energy import energy_cost_cny
from westflow.inventory import Network
from westflow.placement import Placement
from westflow.tariffs import Band, Period, Tariff

__all__ = ["UsageRecord", "Meter", "Totals", "usage_record", "usage_from_job", "job_metadata", "USAGE_KEY",
           "STATUSES", "GROUPS", "TZ", "day_of"]

USAGE_KEY: Final = "westflow.usage"  # Ray job metadata: what the reconciler needs to price the job (JSON)
STATUSES: Final = USAGE_STATUSES
GROUPS: Final = ("tenant", "dc", "cluster", "day", "model")
TZ: Final = ZoneInfo("Asia/Shanghai")
_TZ_OFFSET_S: Final = 8 * 3600  # Asia/Shanghai has had no daylight saving since 1991: a fixed UTC+8
_CHUNK: Final = 5_000
USAGE: Final = Base.metadata.tables["usage"]
U = USAGE.c


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one Ray job used: where, for whom, for how long (Ray's own start/end, epoch seconds), and its price."""

    ray_job_id: str
    cluster: str
    data_center: str
    region: str
    tenant: str
    run_id: str | None
    step: str | None
    accelerator_model: str | None
    accelerators: int
    cpus: float
    memory_gb: float
    start: float
    end: float
    status: str
    accelerator_hours: float
    cpu_hours: float
    kwh: float
    cny: float
    transfer_gb: float
    transfer_cny: float
    preemptions: int
    failovers: int

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise QueueError("status", self.status, STATUSES)
        for f in ("accelerators", "cpus", "memory_gb", "start", "end", "accelerator_hours", "cpu_hours", "kwh", "cny",
                  "transfer_gb", "transfer_cny", "preemptions", "failovers"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise QueueError(f, v, "a finite number >= 0")
        if self.end < self.start:
            raise QueueError("end", self.end, f">= start ({self.start})")
        if not self.ray_job_id:
            raise QueueError("ray_job_id", self.ray_job_id, "a non-empty Ray job id")

    @property
    def hours(self) -> float:
        return (self.end - self.start) / 3600.0


_NAMES: Final = tuple(f.name for f in fields(UsageRecord))


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over a group of records (``key``: the group's values, in the order asked)."""

    key: tuple[Any, ...]
    jobs: int
    accelerator_hours: float
    cpu_hours: float
    kwh: float
    cny: float
    transfer_gb: float
    transfer_cny: float

    @property
    def total_cny(self) -> float:
        return self.cny + self.transfer_cny


# -- pricing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """What prices a job, per hour it runs (the placement's figures over its planned hours)."""

    tenant: str
    data_center: str
    region: str
    cluster: str
    accelerator_model: str | None
    accelerators: int
    cpus: float
    memory_gb: float
    kwh_per_h: float
    cny_per_h: float
    transfer_gb: float
    transfer_cny: float
    run_id: str | None = None
    step: str | None = None
    failovers: int = 0
    tariff: list[list[float]] | None = None  # the DC's time-of-use periods [start_s, end_s, CNY/kWh], if any

    @classmethod
    def of(cls, p: Placement, network: Network | None = None, *, run_id: str | None = None, step: str | None = None,
           failovers: int = 0) -> _Plan:
        spec = p.spec
        region = str(p.region)
        got = p.tariff
        if network is not None:
            got = network.dc(p.data_center).tariff  # KeyError: a placement on a DC the inventory does not know
        tariff = None if got is None else [[q.start_s, q.end_s, q.price_cny_kwh] for q in got.periods]
        planned_h = spec.duration_hours  # > 0 by WorkloadSpec's validation
        moved = sum(ds.size_bytes for ds in spec.inputs if str(ds.region) != region) / 1e9
        return cls(spec.tenant, p.data_center, region, p.ray_cluster, p.accelerator_model, spec.accelerator.count,
                   float(spec.cpus), float(spec.memory_gb), p.energy_kwh / planned_h, p.energy_cost_cny / planned_h,
                   moved, p.transfer_cost_cny, run_id, step, failovers, tariff)

    def priced(self, job_id: str, start: float, end: float, status: str, *, preemptions: int = 0,
               failovers: int | None = None) -> UsageRecord:
        hours = max(0.0, end - start) / 3600.0
        kwh = self.kwh_per_h * hours
        cny = self.cny_per_h * hours
        if self.tariff:  # the hours it ran, at the prices of those hours
            periods = tuple(Period(a, b, Band.FLAT, price) for a, b, price in self.tariff)
            cny = energy_cost_cny(kwh, 0.0, Tariff(self.data_center, periods), start, hours)
        return UsageRecord(job_id, self.cluster, self.data_center, self.region, self.tenant, self.run_id, self.step,
                           self.accelerator_model, self.accelerators, self.cpus, self.memory_gb, start, max(start, end),
                           status, self.accelerators * hours, self.cpus * hours, kwh,
                           cny, self.transfer_gb, self.transfer_cny, preemptions,
                           self.failovers if failovers is None else failovers)


def usage_record(p: Placement, *, job_id: str, start: float, end: float, status: str, network: Network | None,
                 run_id: str | None = None, step: str | None = None, preemptions: int = 0,
                 failovers: int = 0) -> UsageRecord:
    """The record of a job placed by ``p`` that ran from ``start`` to ``end`` (Ray's times, epoch seconds).

    Energy and CNY are the placement's (its one formula) scaled from the spec's planned hours to the
    hours run; data moved is the spec's inputs outside the DC's region, at the placement's price.
    ``network``, when given, must know the placement's DC.
    """
    return _Plan.of(p, network, run_id=run_id, step=step).priced(job_id, start, end, status,
                                                                 preemptions=preemptions, failovers=failovers)


def job_metadata(p: Placement, *, run_id: str | None = None, step: str | None = None,
                 failovers: int = 0, network: Network | None = None) -> dict[str, str]:
    """Ray job metadata that lets the reconciler price the job if its writer dies (``{USAGE_KEY: json}``);
    the DC's time-of-use tariff travels with it (the network's, when given, else the placement's)."""
    plan = _Plan.of(p, network, run_id=run_id, step=step, failovers=failovers)
    return {USAGE_KEY: json.dumps({f.name: getattr(plan, f.name) for f in fields(_Plan)}, sort_keys=True,
                                  separators=(",", ":"))}


def usage_from_job(job_id: str, *, metadata: Mapping[str, str] | None, status: str, start_ms: int | float | None,
                   end_ms: int | float | None) -> UsageRecord | None:
    """The record of a Ray job read from Ray's job table (times in ms, as Ray reports them).

    None when the job is not one westflow metered (no :data:`USAGE_KEY`), has not ended, or its
    metadata is unreadable. Ray's own statuses only: a stop westflow made for a preemption reads ``STOPPED``.
    """
    raw = (metadata or {}).get(USAGE_KEY)
    if raw is None or status not in STATUSES or end_ms is None or not end_ms:
        return None
    try:
        plan = _Plan(**json.loads(raw))
    except (TypeError, ValueError):
        return None
    end = float(end_ms) / 1000.0
    start = float(start_ms) / 1000.0 if start_ms else end
    try:
        return plan.priced(job_id, start, end, status)
    except (TypeError, ValueError):  # a tariff in the metadata that is not one
        return None


# -- the store -------------------------------------------------------------------------------------


def day_of(epoch_s: float) -> str:
    """The Asia/Shanghai date of an instant (``YYYY-MM-DD``)."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_s + _TZ_OFFSET_S))


def _row(rec: UsageRecord, now: float, by: str) -> dict[str, Any]:
    values = dict(zip(_NAMES, astuple(rec), strict=True))
    values["start_at"], values["end_at"] = values.pop("start"), values.pop("end")
    values["recorded_at"], values["recorded_by"] = now, by
    return values


def _record_of(r: Any) -> UsageRecord:
    return UsageRecord(r.ray_job_id, r.cluster, r.data_center, r.region, r.tenant, r.run_id, r.step,
                       r.accelerator_model, r.accelerators, r.cpus, r.memory_gb, r.start_at, r.end_at, r.status,
                       r.accelerator_hours, r.cpu_hours, r.kwh, r.cny, r.transfer_gb, r.transfer_cny, r.preemptions,
                       r.failovers)


def _group_column(name: str, dialect: str) -> Any:
    if name == "day":  # whole days since the epoch in UTC+8, as text after the query (day_of)
        days = (U.end_at + _TZ_OFFSET_S) / 86400
        # SQLite's CAST truncates (the epoch is positive); PostgreSQL's rounds, so floor first there
        return cast(days if dialect == "sqlite" else func.floor(days), Integer).label("day")
    return {"tenant": U.tenant, "dc": U.data_center, "cluster": U.cluster, "model": U.accelerator_model,
            "region": U.region}[name].label(name)


class Meter:
    """The usage records in the admission queue's database (migrated with it)."""

    def __init__(self, queue: AdmissionQueue) -> None:
        self.queue = queue
        self.engine = queue.engine

    def record(self, rec: UsageRecord, *, by: str = "writer") -> bool:
        """Append ``rec``; False (nothing written) if its Ray job is recorded already."""
        return run_write(self.engine, lambda conn: insert_or_ignore(conn, USAGE, _row(rec, time.time(), by)))

    def record_many(self, recs: Sequence[UsageRecord], *, by: str = "reconciler") -> int:
        """Append every record whose Ray job is not recorded yet, in one transaction per chunk; how many were new."""
        written = 0
        for i in range(0, len(recs), _CHUNK):
            now = time.time()
            rows = [_row(r, now, by) for r in recs[i:i + _CHUNK]]

            def write(conn: Any, rows: list[dict[str, Any]] = rows) -> int:
                ins = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
                stmt = ins(USAGE).on_conflict_do_nothing().returning(U.ray_job_id)
                return len(conn.execute(stmt, rows).all())

            written += run_write(self.engine, write)
        return written

    def known(self, job_ids: Iterable[str]) -> set[str]:
        """Which of ``job_ids`` have a record."""
        ids = list(dict.fromkeys(job_ids))
        out: set[str] = set()
        with read_transaction(self.engine) as conn:
            for i in range(0, len(ids), _CHUNK):
                out.update(conn.execute(select(U.ray_job_id).where(U.ray_job_id.in_(ids[i:i + _CHUNK]))).scalars())
        return out

    def _where(self, q: Select[Any], tenant: str | None, start: float | None, end: float | None) -> Select[Any]:
        if tenant is not None:
            q = q.where(U.tenant == tenant)
        if start is not None:
            q = q.where(U.end_at >= start)
        if end is not None:
            q = q.where(U.end_at < end)
        return q

    def records(self, *, tenant: str | None = None, start: float | None = None,
                end: float | None = None) -> list[UsageRecord]:
        """Records of jobs that ended in ``[start, end)`` (either open), of ``tenant`` if given; by end, then id."""
        q = self._where(select(USAGE), tenant, start, end).order_by(U.end_at, U.ray_job_id)
        with read_transaction(self.engine) as conn:
            return [_record_of(r) for r in conn.execute(q)]

    def totals(self, by: Sequence[str], *, tenant: str | None = None, start: float | None = None,
               end: float | None = None) -> list[Totals]:
        """Sums grouped by ``by`` (names from :data:`GROUPS`, plus ``region``), sorted by the group's key.

        Computed in the database (one ``GROUP BY``): a month of 100,000 records is one query.
        """
        cols = [_group_column(b, self.engine.dialect.name) for b in by]
        sums = [func.sum(c) for c in (U.accelerator_hours, U.cpu_hours, U.kwh, U.cny, U.transfer_gb, U.transfer_cny)]
        q: Select[Any] = select(*cols, func.count(), *sums)
        q = self._where(q, tenant, start, end)
        if cols:
            q = q.group_by(*cols)
        with read_transaction(self.engine) as conn:
            rows = conn.execute(q).all()
        out: list[Totals] = []
        for r in rows:
            key = tuple(day_of(int(v) * 86400 - _TZ_OFFSET_S + 1) if b == "day" else v
                        for b, v in zip(by, tuple(r)[:len(by)], strict=True))
            n = len(by)
            if not r[n]:
                continue  # the one empty row an ungrouped SUM gives over no records
            out.append(Totals(key, int(r[n]), *(float(x or 0.0) for x in r[n + 1:])))
        return sorted(out, key=lambda t: tuple("" if k is None else str(k) for k in t.key))

    def count(self) -> int:
        """How many records there are."""
        with read_transaction(self.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(USAGE)).scalar_one())

