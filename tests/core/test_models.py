"""Models, engines and migrations, on SQLite and on PostgreSQL.

The database fixtures (``database_url``, ``engine``, ``sessions``) live in
``tests/core/conftest.py``, the row helpers in ``support/db.py``. Each PostgreSQL test gets
its own schema (dropped afterwards), so reruns start clean and tests never see each other's rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from impasto.service.core.db import make_engine, migrate, normalize_url
from impasto.service.core.models import (
    Base,
    Email,
    Job,
    JobKind,
    JobStatus,
    OrderStatus,
    new_order_number,
)
from support.db import add_order, add_portrait

# --- migrations --------------------------------------------------------------------------

def test_migrations_match_the_models(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"


def test_migrate_is_idempotent_and_creates_every_table(database_url, engine):
    migrate(database_url)
    tables = set(inspect(engine).get_table_names())
    assert {"portraits", "jobs", "orders", "emails", "workers", "alembic_version"} <= tables


def test_migrations_downgrade_to_nothing_and_back(database_url, engine):
    from alembic import command

    from impasto.service.core.db import alembic_config

    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert "jobs" not in inspect(engine).get_table_names()
    migrate(database_url)
    assert "jobs" in inspect(engine).get_table_names()


def test_migrations_are_packaged_beside_the_code():
    from impasto.service.core.db import MIGRATIONS_DIR

    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()


# --- engines -----------------------------------------------------------------------------

def test_sqlite_engine_uses_wal_foreign_keys_and_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'deep' / 'folder' / 'x.db'}")   # folders made
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db"])
def test_plain_postgres_urls_use_psycopg3(url):
    assert normalize_url(url).drivername == "postgresql+psycopg"


# --- models ------------------------------------------------------------------------------

def test_defaults_round_trip_with_aware_utc_times(sessions):
    with sessions() as session:
        portrait = add_portrait(session)
        job = Job(portrait_id=portrait.id, kind=JobKind.PREVIEW, style="starry", params={"seed": 3})
        session.add(job)
        session.commit()
        job_id, public_id = job.id, portrait.public_id
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.status is JobStatus.QUEUED and job.kind is JobKind.PREVIEW
        assert job.params == {"seed": 3} and job.attempts == 0 and job.cancel_requested is False
        assert job.created_at.tzinfo is not None
        assert abs(job.created_at - datetime.now(UTC)) < timedelta(minutes=1)
        assert job.portrait.public_id == public_id
    assert len(public_id) >= 32   # 24 random bytes, URL-safe


def test_naive_datetimes_are_refused(sessions):
    with sessions() as session:
        portrait = add_portrait(session)
        portrait.created_at = datetime(2024, 1, 1)
        with pytest.raises(Exception, match="naive datetime"):
            session.flush()


def test_status_values_are_checked_by_the_database(engine, sessions):
    with sessions() as session:
        add_portrait(session)
        session.commit()
    with engine.connect() as connection, pytest.raises(IntegrityError):
        connection.execute(text("INSERT INTO jobs (portrait_id, kind, style, params, priority, status, "
                                "attempts, max_attempts, progress, iteration, total, cancel_requested, "
                                "created_at) VALUES (1, 'preview', 's', '{}', 0, 'exploded', 0, 3, 0, 0, 0, "
                                "false, '2024-01-01')"))


def test_jobs_need_an_existing_portrait(sessions):
    with sessions() as session, pytest.raises(IntegrityError):
        session.add(Job(portrait_id=12345, kind=JobKind.PREVIEW, style="s"))
        session.flush()


def test_orders_get_readable_unique_numbers(sessions):
    with sessions() as session:
        portrait = add_portrait(session)
        first, second = add_order(session, portrait), add_order(session, portrait)
        session.commit()
        assert first.number != second.number
        assert first.status is OrderStatus.ORDERED and first.payment_method == "invoice"
    number = new_order_number()
    assert len(number) == 13 and number.startswith("IMP-") and not set(number[4:]) & set("01IO")


def test_email_dedupe_keys_are_unique(sessions):
    with sessions() as session:
        for _ in range(2):
            session.add(Email(dedupe_key="previews_ready:1", to="a@example.com", template="previews_ready"))
        with pytest.raises(IntegrityError):
            session.flush()


def test_deleting_a_portrait_deletes_its_jobs(sessions):
    with sessions() as session:
        portrait = add_portrait(session)
        session.add(Job(portrait_id=portrait.id, kind=JobKind.PREVIEW, style="s"))
        session.commit()
        session.delete(portrait)
        session.commit()
        assert session.scalars(select(Job)).all() == []
