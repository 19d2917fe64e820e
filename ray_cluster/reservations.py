"""Reservations shared by the processes of one host: a file-backed journal.

Why: Dagster runs steps in separate processes (the multiprocess executor, and
concurrent runs), and the dashboard's usage lags by about 5 s. Two steps racing
for the last free accelerators of a DC would both see them free and both be
placed there. This journal serialises the decisions of every thread and process
of one host: it is the one reservation mechanism.

How: one JSON file (``<state_dir>/reservations.json``) guarded by
``fcntl.flock`` on a sibling lock file (``reservations.json.lock``).
:meth:`Reservations.reserve` is one read-modify-write under the exclusive lock:
read the journal, drop stale entries, compute the capacity left, call the
caller's ``decide(capacity)`` (the placement), record what the placement holds
under a new ticket, and write the journal atomically (a temporary file in the
same directory, fsync, ``os.replace``), so no reader ever sees half a journal.
If ``decide`` raises (``InfeasibleError``: nothing fits), nothing is written.
Exclusion survives the state dir being removed under a holder: the lock is
taken again until the file locked is the one on disk, and a writer checks so
right before it writes; if the lock file was replaced while it decided (another
process made the dir again and booked there), it reads and decides again.
:meth:`Reservations.release` (idempotent) drops a ticket when its work ends or
fails.

Live usage vs reservations. The live capacity (Ray's dashboard) already counts
jobs that have started, and a reservation is held from the decision until its
Ray job ends, so a running job is in both. Subtracting both would count it
twice. Instead, per DC and per resource (each accelerator model, CPUs, memory),
through the capacity model (:mod:`westflow.capacity`: ``Resources``,
``capacity_of``)::

    effective_used = max(live_used, reserved)
    free           = total - max(live_used, reserved) = min(live_free, total - reserved)

This is exact when a DC is used only through westflow (whatever Ray sees used
is reserved too; what is reserved but not yet visible is still counted), and
two racing reservations can never both take the last accelerators: the second
sees ``total - reserved`` whatever the lagging dashboard says. Work started
outside westflow is counted only through ``max``, so a DC shared with it can be
over-committed by at most ``min(other work, reservations not yet visible)``;
double counting every running job would cost far more. ``totals`` is each DC's
capacity when empty, in the same :class:`DCCapacity` form as the live snapshot
(the live nodes with everything available, see
``WestflowResource.capacity_and_totals`` in :mod:`pipelines.resources`); a DC missing from ``totals`` (or no
``totals`` at all) falls back to ``live_free - reserved``, which is right for a
snapshot taken before any reserved work started. Utilisation is the larger of
the live one and :func:`~westflow.capacity.utilisation` of ``max(live_used, reserved)``.

Stale entries. An entry is dropped when its owner process is gone (its pid on
this host, checked with the process's start time so a recycled pid does not keep
it; a zombie counts as gone) or when it is older than ``ttl_s`` (default 24 h, a
backstop for a process that hangs; once its job runs, live usage counts it
anyway). A crashed step therefore never holds capacity for long.

The file is validated by pydantic models (:class:`Journal`, :class:`Reservation`:
strict types, no unknown keys). A corrupt journal raises :class:`JournalError`
(a ``ConfigError``) naming the file, the field and what is wrong. It is not read as empty: that would silently
drop every reservation and re-open exactly the race this module closes. The
fix is in the message: remove the file when no westflow step is being placed
(reservations of running jobs are lost, but their use is still read live).

Scope: processes of one host (pids and ``flock`` are per host; ``flock`` over
NFS is not reliable). Two models of one family on one Ray node share Ray's GPU
count (see :func:`ray_cluster.live.snapshot`); a reservation counts only
against the model it placed on.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import hostprocs as procs
from westflow.capacity import Capacity, DCCapacity, Resources, after_holds
from westflow.config import pydantic_to_fields
from westflow.errors import ConfigError
from westflow.placement import Placement

__all__ = ["Reservation", "Journal", "Reservations", "JournalError", "available", "pid_alive", "JOURNAL_VERSION",
           "DEFAULT_TTL_S"]

JOURNAL_VERSION: Final = 1
DEFAULT_TTL_S = 24 * 3600.0


class JournalError(ConfigError):
    """The reservation journal is unreadable or malformed (names the file, the field, what is wrong)."""

    def __init__(self, path: Path | str, field: str, value: Any, allowed: str | Sequence[str] | None = None, *,
                 problem: str = "Invalid") -> None:
        fix = (f"remove {str(path)!r} when no westflow step is being placed (reservations of running "
               "jobs are dropped; their use is still read live from Ray).")
        super().__init__(str(path), field, value, allowed, problem=problem, fix=fix)


_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class Reservation(BaseModel):
    """What one placement holds, as recorded in the journal (one JSON object per entry)."""

    model_config = _STRICT

    ticket: str = Field(min_length=1)
    owner: str
    pid: int = Field(gt=0)
    pid_start: int | None  # the process's start time (/proc), so a recycled pid is not mistaken for it
    created: float  # seconds since the epoch
    spec: str
    data_center: str = Field(min_length=1)
    accelerator_model: str | None = Field(min_length=1)
    accelerators: int = Field(ge=0)
    cpus: float = Field(ge=0)
    memory_gb: float = Field(ge=0)

    @classmethod
    def of(cls, ticket: str, owner: str, p: Placement, *, pid: int, pid_start: int | None,
           created: float) -> Reservation:
        """The resources ``p`` holds: its DC, accelerator model and count, CPUs and memory."""
        return cls(ticket=ticket, owner=owner, pid=pid, pid_start=pid_start, created=float(created),
                   spec=p.spec.name, data_center=p.data_center, accelerator_model=p.accelerator_model,
                   accelerators=p.spec.accelerator.count if p.accelerator_model else 0,
                   cpus=float(p.spec.cpus), memory_gb=float(p.spec.memory_gb))

    @property
    def resources(self) -> Resources:
        """What this reservation holds, in the capacity model's terms."""
        return Resources.of(self.accelerator_model, self.accelerators, self.cpus, self.memory_gb)


class Journal(BaseModel):
    """The journal file: a version and the reservations, oldest first."""

    model_config = _STRICT

    version: Literal[1]
    reservations: list[Reservation]


# -- capacity left after reservations ------------------------------------------


def available(capacity: Capacity, held: Iterable[Reservation],
              totals: Capacity | None = None) -> dict[str, DCCapacity]:
    """The capacity left for a new placement: per resource ``total - max(live_used, reserved)``.

    ``capacity`` is the live snapshot (free per DC), ``totals`` each DC's capacity when empty.
    Without a DC's total, its reservations are subtracted from ``capacity`` (see the module doc).
    DCs absent from ``capacity`` stay absent (unavailable).
    """
    reserved: dict[str, Resources] = {}
    for r in held:
        reserved[r.data_center] = reserved.get(r.data_center, Resources()).plus(r.resources)
    return after_holds(capacity, reserved, totals)


# -- the journal file ------------------------------------------------------------


def _pid_start(pid: int) -> int | None:
    st = procs.stat(pid)
    return None if st is None else st.start


def pid_alive(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` (started at ``start``, when known) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    st = procs.stat(pid)
    if st is None:
        return True
    return st.state not in ("Z", "X") and (start is None or st.start == start)


def _invalid(path: Path, exc: ValidationError) -> JournalError:
    first = exc.errors()[0]
    if first["type"] == "extra_forbidden":
        where = ".".join(str(p) for p in first["loc"][:-1]) or "<root>"
        known = Reservation.model_fields if len(first["loc"]) > 1 else Journal.model_fields
        return JournalError(path, where, str(first["loc"][-1]), list(known), problem="Unknown field in")
    field, value, allowed = pydantic_to_fields(exc)
    return JournalError(path, field, value, allowed, problem="Missing" if first["type"] == "missing" else "Invalid")


def _parse(path: Path, raw: bytes) -> list[Reservation]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise JournalError(path, "<file>", f"byte {exc.start}: {exc.reason}", "UTF-8 JSON",
                           problem="Unreadable") from None
    except json.JSONDecodeError as exc:
        raise JournalError(path, f"JSON at line {exc.lineno} column {exc.colno}", exc.msg,
                           problem="Unreadable") from None
    if not isinstance(data, dict):
        raise JournalError(path, "<root>", type(data).__name__, "an object with 'version' and 'reservations'")
    try:
        journal = Journal.model_validate(data)
    except ValidationError as exc:
        raise _invalid(path, exc) from None
    seen: set[str] = set()
    for i, r in enumerate(journal.reservations):
        if r.ticket in seen:
            raise JournalError(path, f"reservations.{i}.ticket", r.ticket, "unique", problem="Duplicate")
        seen.add(r.ticket)
    return list(journal.reservations)


class Reservations:
    """The reservation journal at ``path``, shared by every process of this host that opens it.

    ``ttl_s``: entries older than this are stale. ``clock`` (seconds since the epoch) and
    ``alive`` (``(pid, start) -> bool``) are for tests.
    """

    def __init__(self, path: Path | str, *, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.time,
                 alive: Callable[[int, int | None], bool] = pid_alive) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.ttl_s = ttl_s
        self._clock = clock
        self._alive = alive

    def __repr__(self) -> str:
        return f"Reservations({str(self.path)!r})"

    # -- the API ------------------------------------------------------------------
    def reserve(self, capacity: Capacity, decide: Callable[[Capacity], Placement], *, owner: str,
                totals: Capacity | None = None) -> tuple[str, Placement]:
        """Decide against the capacity left after every live reservation, and record the result.

        ``decide`` (the placement) runs under the lock; if it raises (InfeasibleError) the
        journal is left as it was. Returns ``(ticket, placement)``; release the ticket when
        the work ends or fails.
        """
        while True:
            with self._locked(exclusive=True) as still_held:
                entries = self._read()
                fresh = self._fresh(entries)
                placement = decide(available(capacity, fresh, totals))
                taken = {r.ticket for r in entries}
                ticket = _new_ticket(taken)
                pid = os.getpid()
                entry = Reservation.of(ticket, owner, placement, pid=pid, pid_start=_pid_start(pid),
                                       created=self._clock())
                if not still_held():
                    continue  # the lock file was replaced while deciding (state dir removed): decide again
                self._write([*fresh, entry])
            return ticket, placement

    def release(self, ticket: str) -> bool:
        """Drop ``ticket`` (and any stale entry); False if it was not held (released already, or stale)."""
        while True:
            with self._locked(exclusive=True) as still_held:
                entries = self._read()
                fresh = self._fresh(entries)
                keep = [r for r in fresh if r.ticket != ticket]
                if len(keep) != len(entries):
                    if not still_held():
                        continue
                    self._write(keep)
            return len(keep) != len(fresh)

    def held(self) -> tuple[Reservation, ...]:
        """The live reservations (stale ones are left out, not removed), oldest first."""
        with self._locked(exclusive=False):
            return tuple(self._fresh(self._read()))

    @contextmanager
    def hold(self, capacity: Capacity, decide: Callable[[Capacity], Placement], *, owner: str,
             totals: Capacity | None = None) -> Iterator[tuple[str, Placement]]:
        """:meth:`reserve` for the body of a ``with`` block, released however it ends."""
        ticket, p = self.reserve(capacity, decide, owner=owner, totals=totals)
        try:
            yield ticket, p
        finally:
            self.release(ticket)

    # -- under the lock -----------------------------------------------------------
    @contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[Callable[[], bool]]:
        """Hold the lock file; yields ``still_held()``: whether the file locked is still the one at the path.

        A lock file can be replaced under a holder (its state dir removed and made again by another
        process, which then locks a new file): the lock is taken again until the file locked is the one
        on disk, and a writer checks ``still_held()`` right before it writes, deciding again if not.
        """
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                still_held = partial(_same_file, self.lock_path, os.fstat(fd))
                if still_held():
                    yield still_held
                    return
            finally:
                os.close(fd)  # closing the descriptor releases the lock

    def _read(self) -> list[Reservation]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return _parse(self.path, raw)

    def _fresh(self, entries: Iterable[Reservation]) -> list[Reservation]:
        now = self._clock()
        alive: dict[tuple[int, int | None], bool] = {}
        out = []
        for r in entries:
            if now - r.created > self.ttl_s:
                continue
            key = (r.pid, r.pid_start)
            if key not in alive:
                alive[key] = self._alive(r.pid, r.pid_start)
            if alive[key]:
                out.append(r)
        return out

    def _write(self, entries: Iterable[Reservation]) -> None:
        data = Journal(version=JOURNAL_VERSION, reservations=list(entries)).model_dump(mode="json")
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, allow_nan=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _same_file(path: Path, locked: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (locked.st_dev, locked.st_ino)


def _new_ticket(taken: Set[str]) -> str:
    while True:
        ticket = f"r-{secrets.token_hex(6)}"
        if ticket not in taken:
            return ticket
