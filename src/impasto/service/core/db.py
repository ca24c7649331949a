"""Database engines, sessions and migrations: SQLite on one machine, PostgreSQL for a farm.

SQLite is tuned for a web process and render threads sharing one file: WAL (readers never
wait for the writer), foreign keys on (SQLite's default is off), and a busy timeout so a
writer waits for another instead of failing at once. pysqlite's own transaction handling
is kept on purpose: it begins a transaction at the first INSERT/UPDATE/DELETE, so every
write transaction in ``jobs`` starts with a write and takes the lock up front; a
transaction that read first and then wrote could fail on a busy database in WAL mode
(SQLITE_BUSY_SNAPSHOT), which the busy timeout does not retry.

Nothing here runs at import: the engine is made by whoever starts the app or a worker.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 30.0
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_ID = 0x696D7061   # "impa": PostgreSQL advisory lock held while migrating


def normalize_url(url: str | URL) -> URL:
    """``postgres://`` and bare ``postgresql://`` use psycopg 3 (psycopg2 is not installed)."""
    parsed = make_url(str(url)) if not isinstance(url, URL) else url
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for ``url``: SQLite (WAL, foreign keys, busy timeout) or PostgreSQL (psycopg)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    return create_engine(parsed, echo=echo, pool_pre_ping=True)


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory and not database.startswith("file:"):     # a file: URI is the caller's to manage
        _private_file(Path(database).expanduser())
    engine = create_engine(url, echo=echo,
                           connect_args={"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _tune(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")   # safe with WAL; a crash loses no commit
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.close()

    return engine


def _private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it would use 0644 under the usual
    umask: customers' emails and addresses for every local user to read), and tighten an
    existing one. SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    except OSError as exc:         # a read-only folder: let SQLite say what it thinks of it
        log.debug("cannot create %s first: %s", path, exc)
        return
    if path.is_file() and path.stat().st_mode & 0o077:
        try:
            os.chmod(path, 0o600)
            log.info("database %s was readable by others: now 0600", path)
        except OSError as exc:     # not ours: leave it to its owner
            log.warning("database %s is readable by others and cannot be changed: %s", path, exc)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (workers hand rows between steps)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection=None):
    """An Alembic config for the packaged migrations, with no ini file needed."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        # Passed as an object, not as sqlalchemy.url: a password holding '%' would break
        # the ini-style interpolation of Alembic's config.
        config.attributes["connection"] = connection
    return config


def migrate(url: str | URL | Engine, *, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (Alembic upgrade), safe to call at every start.

    On PostgreSQL an advisory lock serialises processes that start together (an app and
    its workers), so two never race to create the same table.
    """
    from alembic import command

    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            command.upgrade(alembic_config(connection), revision)
    finally:
        if not isinstance(url, Engine):
            engine.dispose()
    log.info("database at %s migrated to %s", engine.url.render_as_string(hide_password=True), revision)
