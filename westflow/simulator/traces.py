"""Workload traces, read in place: ITP training jobs, Azure LLM requests, a generic CSV.

- ``itp``: Microsoft ITP clusters (ElasticFlow raw traces, MIT), ``itp/cluster01..10.csv``,
  69,351 GPU training jobs over 60 days -> batch jobs, accelerator family ``any``,
  origin city by :data:`ITP_ORIGINS`.
- ``azure-conv`` / ``azure-code``: Azure LLM inference trace 2023 (CC-BY-4.0), one hour of
  requests -> real-time requests. Results computed from it cite Patel et al., "Splitwise:
  Efficient generative LLM inference using phase splitting", ISCA 2024.
- any other value of ``--trace`` is a path to a CSV in the generic format::

      submit_s,duration_s,accelerators,tier[,origin][,family][,tenant]

  ``tier`` is ``batch`` or ``realtime``; ``origin`` a city id (empty: drawn from the
  origin distribution); ``family`` ``any`` (default), ``cuda`` or ``cann``; ``tenant`` a
  tenant of tenants.yaml (empty: assigned, see :mod:`westflow.simulator.tenancy`).

  A file is read whole, strictly as UTF-8 (a byte-order mark before the header is
  accepted); every problem is exit 2 naming the file and the row. Its times need not
  start at 0: :func:`load_traces` shifts every row of a file, batch and real-time alike,
  by the file's earliest ``submit_s`` (its *origin*, reported).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from westflow.errors import SpecError

__all__ = [
    "DEFAULT_TRACES_DIR", "ITP_ORIGINS", "SPLITWISE_CITATION", "BatchJob", "Request", "TraceSet",
    "load_itp", "load_azure", "load_generic", "load_traces", "TRACE_NAMES", "MAX_TRACE_S", "MAX_ACCELERATORS",
    "MAX_SUBMIT_S", "TraceLimits",
]

DEFAULT_TRACES_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"
SPLITWISE_CITATION = ('Patel et al., "Splitwise: Efficient generative LLM inference using phase '
                      'splitting", ISCA 2024')
TRACE_NAMES = ("itp", "azure-conv", "azure-code")
MAX_TRACE_S = 366 * 86400.0  # a generic trace's span (from its origin) and durations: at most a (leap) year
MAX_SUBMIT_S = 1e10          # a raw submit_s: Unix seconds up to the year 2286 (shifted to the origin on load)
MAX_ACCELERATORS = 4096      # a generic trace row's accelerators: what a spec may ask for

# ITP cluster -> eastern origin city (an assumption: the trace has no location). The two
# busiest clusters (04, 07) go to the two biggest demand centres.
ITP_ORIGINS = {
    "cluster01": "hangzhou", "cluster02": "guangzhou", "cluster03": "shenzhen",
    "cluster04": "beijing", "cluster05": "nanjing", "cluster06": "wuhan",
    "cluster07": "shanghai", "cluster08": "chengdu", "cluster09": "chongqing",
    "cluster10": "beijing",
}


@dataclass(frozen=True, slots=True)
class BatchJob:
    """One latency-tolerant job: submit time and duration in seconds."""

    submit_s: float
    duration_s: float
    accelerators: int
    origin: str | None
    family: str = "any"
    source: str = ""
    job_id: str = ""  # the trace's own id, where it has one (ITP)
    tenant: str | None = None  # the trace's tenant column, where it has one
    row: int = 0  # the generic file's data row (1 = the line after the header); 0 for ITP


@dataclass(frozen=True, slots=True)
class Request:
    """One real-time request: arrival (s from the trace start), tokens or accelerator-seconds.

    A generic row also keeps its accelerators, duration and family: a row longer than the
    simulator's step is a long-lived service holding its accelerators for its duration.
    """

    t_s: float
    context_tokens: int = 0
    generated_tokens: int = 0
    origin: str | None = None
    accel_seconds: float | None = None  # generic traces give the work directly
    accelerators: int = 0
    duration_s: float = 0.0
    family: str = "any"
    row: int = 0


@dataclass(frozen=True, slots=True)
class TraceLimits:
    """What a trace row must respect on the network it replays on: its cities, and per accelerator
    family the most accelerators one batch job can get in one DC (one pool, with its CPUs and memory)."""

    cities: frozenset[str]
    largest_batch: dict[str, int]


@dataclass(frozen=True)
class TraceSet:
    batch: tuple[BatchJob, ...]
    requests: tuple[Request, ...]
    request_period_s: float  # the realtime stream repeats with this period (an hour for Azure)
    names: tuple[str, ...]
    origins_s: tuple[tuple[str, float], ...] = ()  # (generic file, the submit_s its rows were shifted by)


def _need(path: Path) -> Path:
    if not path.exists():
        raise SpecError("trace", str(path), "an existing file (traces are read in place from "
                        "../shared/traces)", problem="Missing",
                        fix="pass --traces-dir or a path to a CSV in the generic format.")
    if not path.is_file():  # a directory, /dev/zero, a FIFO: nothing a CSV reader should block or loop on
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise SpecError("trace", str(path), f"a regular CSV file ({str(path)!r} is {kind})",
                        fix="pass a path to a CSV in the generic format.")
    return path


@contextlib.contextmanager
def _reading(path: Path, columns: str) -> Iterator[None]:
    """Turn what a hostile or broken trace file raises while read into a SpecError naming the file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise SpecError("trace", str(path), f"UTF-8 CSV text (byte {exc.start} is not)",
                        problem="Cannot read") from None
    except OSError as exc:
        raise SpecError("trace", str(path), f"a readable file ({exc.strerror or exc})", problem="Cannot read") from None
    except csv.Error as exc:
        raise SpecError("trace", str(path), f"a well-formed CSV file ({exc})", problem="Cannot read") from None
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise SpecError("trace", str(path), f"rows with {columns} ({type(exc).__name__}: {exc})") from None


def load_itp(traces_dir: Path | str = DEFAULT_TRACES_DIR) -> list[BatchJob]:
    """All 10 ITP clusters, sorted by submit time."""
    d = Path(traces_dir) / "itp"
    jobs: list[BatchJob] = []
    for name, city in ITP_ORIGINS.items():
        path = _need(d / f"{name}.csv")
        with _reading(path, "submission_time, duration, num_gpu"), path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                jobs.append(BatchJob(float(row["submission_time"]), max(1.0, float(row["duration"])),
                                     int(row["num_gpu"]), city, "any", name, row.get("job_id") or ""))
    jobs.sort(key=lambda j: j.submit_s)
    return jobs


def load_azure(kind: str, traces_dir: Path | str = DEFAULT_TRACES_DIR) -> list[Request]:
    """``conv`` or ``code`` requests, times in seconds from the trace's first request."""
    path = _need(Path(traces_dir) / "azure" / f"{kind}.csv")
    out: list[Request] = []
    t0: datetime | None = None
    with _reading(path, "TIMESTAMP, ContextTokens, GeneratedTokens"), path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ts = datetime.strptime(row["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f")
            t0 = t0 or ts
            out.append(Request((ts - t0).total_seconds(), int(row["ContextTokens"]),
                               int(row["GeneratedTokens"])))
    return out


def _number(p: Path, i: int, row: dict[str, str], col: str, kind: type[float] | type[int], high: float,
            low: float = 0) -> float:
    raw = row[col]
    try:
        if not raw.isascii():  # float() reads '٣' as 3.0
            raise ValueError(raw)
        value = kind(raw.strip())
    except (ValueError, AttributeError):
        raise SpecError(f"{p}: row {i} {col}", raw, "an integer" if kind is int else "a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise SpecError(f"{p}: row {i} {col}", raw, f"a finite number >= {low:g} and <= {high:g}",
                        problem="Out of range")
    return value


def _text(p: Path) -> str:
    """The whole file as text: strict UTF-8, a leading BOM dropped; a NUL byte or bad UTF-8 names its row."""
    with _reading(p, "text"):
        data = p.read_bytes()
    bad = data.find(b"\0")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = exc.start if bad < 0 else min(bad, exc.start)
        text = ""
    if bad >= 0:
        line = data.count(b"\n", 0, bad) + 1
        raise SpecError("trace", str(p), f"UTF-8 CSV text (line {line}, row {line - 1}: byte {bad} is "
                        f"{data[bad:bad + 1]!r}, binary or not UTF-8)", problem="Cannot read",
                        fix="save the CSV as UTF-8 text.")
    return text


def _check(p: Path, i: int, job: BatchJob | None, origin: str | None, limits: TraceLimits | None) -> None:
    """Row ``i`` against the network: a known city, a batch job one DC can hold."""
    if limits is None:
        return
    if origin is not None and origin not in limits.cities:
        raise SpecError(f"{p}: row {i} origin", origin, sorted(limits.cities), problem="Unknown",
                        fix="name a city of the inventory (configs/network.yaml), or leave it empty.")
    if job is not None and job.accelerators > limits.largest_batch.get(job.family, 0):
        most = limits.largest_batch.get(job.family, 0)
        raise SpecError(f"{p}: row {i} accelerators (batch job of row {i})", job.accelerators,
                        f"at most {most} ({job.family}: the most one data center can give one job, with "
                        "its CPUs and memory)", problem="Too large",
                        fix="split the job, or replay it on a network with a larger pool.")


def load_generic(path: Path | str, limits: TraceLimits | None = None) -> tuple[list[BatchJob], list[Request]]:
    """A CSV ``submit_s,duration_s,accelerators,tier[,origin][,family][,tenant]`` (header required, at least
    one row), times as written (:func:`load_traces` shifts them); rows checked against ``limits``."""
    p = _need(Path(path))
    jobs: list[BatchJob] = []
    reqs: list[Request] = []
    text = _text(p)
    with _reading(p, "numbers in submit_s, duration_s, accelerators"):
        reader = csv.DictReader(io.StringIO(text, newline=""))
        need = {"submit_s", "duration_s", "accelerators", "tier"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise SpecError(f"trace header of {p}", reader.fieldnames, sorted(need) + ["origin", "family", "tenant"],
                            fix="start the file with 'submit_s,duration_s,accelerators,tier,origin,family'.")
        for i, row in enumerate(reader, start=1):
            missing = [k for k in sorted(need) if row.get(k) is None]
            if missing:
                raise SpecError(f"{p}: row {i} {missing[0]}", None, "a value in every header column",
                                problem="Missing")
            tier = row["tier"].strip().lower()
            origin = (row.get("origin") or "").strip().lower() or None
            fam = (row.get("family") or "any").strip().lower() or "any"
            if fam not in ("any", "cuda", "cann"):
                raise SpecError(f"{p}: row {i} family", fam, ["any", "cuda", "cann"])
            submit = _number(p, i, row, "submit_s", float, MAX_SUBMIT_S)
            dur = _number(p, i, row, "duration_s", float, MAX_TRACE_S)
            n = int(_number(p, i, row, "accelerators", int, MAX_ACCELERATORS, low=1))
            tenant = (row.get("tenant") or "").strip() or None
            if tier == "batch":
                job = BatchJob(submit, max(1.0, dur), n, origin, fam, p.name, "", tenant, i)
                _check(p, i, job, origin, limits)
                jobs.append(job)
            elif tier == "realtime":
                _check(p, i, None, origin, limits)
                reqs.append(Request(submit, origin=origin, accel_seconds=n * dur, accelerators=n, duration_s=dur,
                                    family=fam, row=i))
            else:
                raise SpecError(f"{p}: row {i} tier", tier, ["batch", "realtime"])
    if not jobs and not reqs:
        raise SpecError("trace", str(p), "at least one row after the header", problem="Empty",
                        fix="add rows 'submit_s,duration_s,accelerators,tier,...', or drop the file.")
    jobs.sort(key=lambda j: j.submit_s)
    return jobs, reqs


def _shifted(p: str, jobs: list[BatchJob], reqs: list[Request]) -> tuple[list[BatchJob], list[Request], float]:
    """Every row of one file shifted by its earliest submit time (batch and real-time alike)."""
    t0 = min([j.submit_s for j in jobs] + [r.t_s for r in reqs])
    jobs = [replace(j, submit_s=j.submit_s - t0) for j in jobs]
    reqs = [replace(r, t_s=r.t_s - t0) for r in reqs]
    last = max([(j.submit_s, j.row) for j in jobs] + [(r.t_s, r.row) for r in reqs])
    if last[0] > MAX_TRACE_S:
        raise SpecError(f"{p}: row {last[1]} submit_s", last[0] + t0,
                        f"within {MAX_TRACE_S:g} s of the file's first row (submit_s {t0:g})", problem="Out of range",
                        fix="replay at most a year of the trace.")
    return jobs, reqs, t0


def load_traces(names: list[str], traces_dir: Path | str = DEFAULT_TRACES_DIR,
                limits: TraceLimits | None = None) -> TraceSet:
    """Load and merge ``names`` (``itp``, ``azure-conv``, ``azure-code`` or CSV paths); each generic file
    shifted to its own origin, its rows checked against ``limits`` (the network's cities and pools)."""
    batch: list[BatchJob] = []
    reqs: list[Request] = []
    origins: list[tuple[str, float]] = []
    period = 3600.0
    for name in names:
        if name == "itp":
            jobs = load_itp(traces_dir)
            if limits is not None:
                for city in sorted({j.origin for j in jobs if j.origin and j.origin not in limits.cities}):
                    raise SpecError("ITP origin city", city, sorted(limits.cities), problem="Unknown",
                                    fix="replay the ITP trace on a network with the cities of ITP_ORIGINS.")
            batch += jobs
        elif name in ("azure-conv", "azure-code"):
            reqs += load_azure(name.split("-")[1], traces_dir)
        else:
            b, r, t0 = _shifted(name, *load_generic(name, limits))
            origins.append((name, t0))
            batch += b
            reqs += r
            if r:
                period = max(period, max(x.t_s for x in r) + 60.0)
    batch.sort(key=lambda j: j.submit_s)
    reqs.sort(key=lambda r: r.t_s)
    return TraceSet(tuple(batch), tuple(reqs), period, tuple(names), tuple(origins))
