"""Where the admission store lives: URLs, engines, transactions and migrations.

SQLite is the embedded default (``<state_dir>/admission.db``: WAL, a busy timeout, foreign keys);
PostgreSQL (psycopg 3) serves several hosts (a session idle in a transaction for 60 s is ended by the
server, so a vanished client cannot hold a lock for long). Every write runs in :func:`write_transaction`:
on SQLite ``BEGIN IMMEDIATE`` (one writer at a time, the others wait up to the busy timeout), on
PostgreSQL READ COMMITTED, retried on a deadlock. :func:`migrate` runs the Alembic migrations
shipped in ``admission/migrations`` to head, from code, serialised between processes.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import unquote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

from westflow.errors import WestflowError, field_message

__all__ = ["DatabaseError", "ALLOWED_URLS", "BUSY_TIMEOUT_S", "MIGRATIONS", "sqlite_url", "canonical_url",
           "masked", "open_engine", "is_sqlite", "insert_or_ignore", "write_transaction", "read_transaction",
           "run_write", "migrate", "head_revision", "current_revision"]

ALLOWED_URLS: Final = ("sqlite:///<absolute path to a file>",
                       "postgresql://<user>[:<password>]@[<host>][:<port>]/<database>[?host=<socket dir>]")
BUSY_TIMEOUT_S: Final = 30.0  # how long a SQLite writer waits for another before giving up
MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATE_LOCK: Final = 0x7765_7374_666C_6F77 & 0x7FFF_FFFF_FFFF_FFFF  # pg_advisory_xact_lock key ("westflow")
_RETRY_SQLSTATES: Final = ("40P01", "40001")  # deadlock detected, serialization failure
_PG_SCHEMES: Final = ("postgres", "postgresql", "postgresql+psycopg")
# A client that vanishes mid-transaction (host lost, not just the process) must not hold the lease row's
# lock until TCP gives up: the server ends a session idle in a transaction, and keepalives find a dead peer.
_PG_CONNECT: Final[dict[str, Any]] = {
    "connect_timeout": 10, "application_name": "westflow-admission",
    "options": "-c idle_in_transaction_session_timeout=60000",
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
T = TypeVar("T")


class DatabaseError(WestflowError):
    """The admission database URL is malformed, or the database is unreachable or failing.

    ``url`` is the URL with any password masked.
    """

    def __init__(self, url: str, problem: str, *, allowed: tuple[str, ...] | None = ALLOWED_URLS,
                 fix: str | None = None, malformed: bool = False) -> None:
        self.url = masked(url)
        self.problem = problem
        self.malformed = malformed  # the URL itself is bad input (the CLI exits 2), not a failing database
        super().__init__(field_message("admission database URL", self.url, allowed, where=None, fix=fix,
                                       message=f"{problem}: admission database URL {self.url!r}"))


def masked(url: str | URL) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    if isinstance(url, URL):
        return unquote(url.render_as_string(hide_password=True))
    try:
        return unquote(make_url(url).render_as_string(hide_password=True))
    except Exception:  # noqa: BLE001 - a URL too broken to parse is masked by pattern
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def sqlite_url(state_dir: Path | str) -> str:
    """The embedded store under ``state_dir``: ``sqlite:///<absolute state_dir>/admission.db``."""
    return f"sqlite:///{(Path(state_dir).expanduser().resolve() / 'admission.db').as_posix()}"


def canonical_url(url: str) -> URL:
    """``url`` parsed and checked; ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``."""
    if not isinstance(url, str) or not url.strip():
        raise DatabaseError(str(url), "Empty or non-text", malformed=True)
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise DatabaseError(url, "Unparseable", malformed=True) from None
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        db = parsed.database or ""
        if not db or db == ":memory:" or db.startswith("file:") or not Path(db).is_absolute():
            raise DatabaseError(url, "Not a file path (an in-memory or relative SQLite database is neither durable "
                                "nor shared)", fix="give an absolute path, as in 'sqlite:////srv/westflow/admission.db'.",
                                malformed=True)
        return parsed.set(drivername="sqlite")
    if parsed.drivername in _PG_SCHEMES:
        if not parsed.database:
            raise DatabaseError(url, "No database named in", malformed=True)
        return parsed.set(drivername="postgresql+psycopg")
    raise DatabaseError(url, f"Unsupported backend {parsed.drivername!r} in", malformed=True)


def open_engine(url: str) -> Engine:
    """An engine on ``url`` (see :data:`ALLOWED_URLS`); connects lazily (:func:`migrate` connects first)."""
    parsed = canonical_url(url)
    if parsed.drivername == "sqlite":
        Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # Up to 15 connections a process, as SQLAlchemy's default, but 10 kept open rather than 5: a process with
    # many waiting steps and heartbeats (threads) otherwise connects and disconnects for most transactions.
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=5, connect_args=_PG_CONNECT)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 must not BEGIN on its own (it would start DEFERRED, late): _sqlite_begin says how.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    conn.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")


def insert_or_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert ``values`` into ``table`` unless its primary key is taken; whether it inserted.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction, then skips.
    """
    return conn.execute(_insert_ignoring(conn.dialect.name, table), values).first() is not None


@lru_cache(maxsize=16)
def _insert_ignoring(dialect: str, table: Table) -> Any:
    # RETURNING, as an INSERT's rowcount is not reliable (psycopg reports -1)
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    return insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)


def is_sqlite(engine: Engine) -> bool:
    """Whether ``engine`` is the embedded SQLite store."""
    return engine.dialect.name == "sqlite"


def _failed(engine: Engine, exc: Exception) -> DatabaseError:
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return DatabaseError(engine.url.render_as_string(hide_password=False),
                         f"Database unreachable or failing ({first})", allowed=None,
                         fix="check that the database runs and the URL is right.")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction (SQLite: ``BEGIN IMMEDIATE``); commits on success, rolls back on error."""
    try:
        with engine.begin() as conn:
            yield conn
    except (OperationalError, InterfaceError) as exc:
        raise _failed(engine, exc) from exc


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """One read-only snapshot (SQLite: ``BEGIN DEFERRED``, so readers never wait for a writer in WAL)."""
    try:
        with engine.connect() as conn:
            conn.execution_options(sqlite_begin="DEFERRED")
            with conn.begin():
                yield conn
    except (OperationalError, InterfaceError) as exc:
        raise _failed(engine, exc) from exc


def run_write(engine: Engine, fn: Callable[[Connection], T], *, attempts: int = 5) -> T:
    """``fn(conn)`` in a :func:`write_transaction`, run again (up to ``attempts``) after a PostgreSQL deadlock."""
    for attempt in range(attempts):
        try:
            with write_transaction(engine) as conn:
                return fn(conn)
        except DatabaseError as exc:
            state = getattr(getattr(exc.__cause__, "orig", None), "sqlstate", None)
            if state not in _RETRY_SQLSTATES or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest migration shipped with this code (read once per process: loading the migration scripts
    compiles them, and CPython 3.11's AST state is not thread-safe: compiling in a step's thread beside
    another thread's compile corrupted it, and pytest's own summary later failed with 'AST constructor
    recursion depth mismatch')."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise DatabaseError("", f"No Alembic migrations found in {MIGRATIONS}", allowed=None)
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration ``engine``'s database is at (None before the first)."""
    with read_transaction(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()


_MIGRATING = threading.Lock()  # one Alembic environment at a time in this process


def migrate(engine: Engine) -> None:
    """Bring the schema to head (Alembic, from code); a no-op when it is there.

    Safe when several processes call it at once: the upgrade runs in one transaction that holds
    SQLite's write lock (``BEGIN IMMEDIATE``, inside a file lock on ``<db>.lock``) or a PostgreSQL
    transaction-level advisory lock, and both backends run DDL transactionally, so a second caller
    finds the schema at head.
    """
    # At head (every open but the first): no Alembic environment at all. Alembic's command API installs
    # module-global proxies (alembic.context), which are not thread-safe: a step opening the queue while
    # another thread's Dagster instance stamps its own Alembic revision failed with KeyError: 'script'.
    if current_revision(engine) == head_revision():
        return
    with _MIGRATING, _sqlite_file_lock(engine):
        if is_sqlite(engine):
            _migrate_sqlite(engine)
            return
        with write_transaction(engine) as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATE_LOCK})
            command.upgrade(_config(conn), "head")


def _migrate_sqlite(engine: Engine) -> None:
    """The upgrade in one ``BEGIN IMMEDIATE`` with foreign keys off, checked before the commit.

    A migration that changes a CHECK constraint rebuilds the table (Alembic's batch mode: copy, drop,
    rename), and with foreign keys on, dropping ``workloads`` fails while ``decisions`` refers to it.
    ``PRAGMA foreign_keys`` is a no-op inside a transaction, so it is set on the bare connection first
    and set back after; ``PRAGMA foreign_key_check`` must find nothing before the upgrade commits.
    """
    try:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            _pragma(raw, "PRAGMA foreign_keys = OFF")
            try:
                with conn.begin():
                    command.upgrade(_config(conn), "head")
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise DatabaseError(engine.url.render_as_string(hide_password=False),
                                            f"Migration left {len(broken)} rows with a dangling foreign key "
                                            f"(first: {tuple(broken[0])}) in", allowed=None,
                                            fix="nothing was changed; report this with the database file.")
            finally:
                _pragma(raw, "PRAGMA foreign_keys = ON")
    except (OperationalError, InterfaceError) as exc:
        raise _failed(engine, exc) from exc


def _pragma(raw: Any, sql: str) -> None:
    cur = raw.cursor()
    try:
        cur.execute(sql)
    finally:
        cur.close()


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """SQLite: hold ``<db>.lock`` (flock) too, so the first connection's switch to WAL never races another's."""
    if not is_sqlite(engine):
        yield
        return
    fd = os.open(f"{engine.url.database}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


head_revision()  # at import, in the importing (main) thread, before any step thread opens a queue
