"""Alembic environment for impasto: run from ``impasto.service.core.db.migrate`` (no ini file).

``migrate`` hands over an open connection in ``config.attributes["connection"]``; a bare
``alembic`` command line may instead set ``sqlalchemy.url``. SQLite gets batch mode, so
later migrations can alter columns (SQLite rebuilds the table for that).
"""

from __future__ import annotations

from alembic import context

from impasto.service.core.models import Base

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from impasto.service.core.db import make_engine

    engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
