"""Fixtures of the core's tests: a migrated database per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from impasto.service.core.db import make_engine, migrate, session_factory
from support.db import postgres_schema

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path) -> str:
    """A migrated, empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'impasto.db'}"
        migrate(url)
        yield url
        return
    with postgres_schema(request.getfixturevalue("postgres_url")) as url:
        migrate(url)
        yield url


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine):
    return session_factory(engine)
