"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``$CREDITBOT_TEST_PG_URL`` (default: the server these machines run on
127.0.0.1:5432, database ``test``). Each test gets a schema of its own, dropped afterwards.
Where no server answers, the PostgreSQL variants are skipped — except under CI (``CI`` set)
or with ``CREDITBOT_REQUIRE_POSTGRES=1``, where that is a failure: CI must never skip them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlmodel import SQLModel

import credit.store.models  # noqa: F401  (registers tables)
from credit.store.db import make_engine

PG_URL = os.environ.get(
    "CREDITBOT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_pg_state: dict[str, object] = {}


def _postgres_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    if "reason" not in _pg_state:
        try:
            probe = make_engine(PG_URL, connect_args={"connect_timeout": 3})
            with probe.connect() as conn:
                conn.execute(text("SELECT 1"))
            probe.dispose()
            _pg_state["reason"] = None
        except Exception as exc:  # pragma: no cover - depends on the machine
            _pg_state["reason"] = f"PostgreSQL at {PG_URL} did not answer: {exc}"
    return _pg_state["reason"]  # type: ignore[return-value]


def require_postgres() -> None:
    reason = _postgres_available()
    if reason is None:
        return
    if os.environ.get("CI") or os.environ.get("CREDITBOT_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason + " (PostgreSQL is required under CI)")
    pytest.skip(reason)


def _pg_schema_engine(**kw: object) -> tuple[Engine, Engine, str]:
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"}, **kw)
    return admin, engine, schema


def _drop_schema(admin: Engine, schema: str) -> None:
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def bare_engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    """An empty database (no tables) of the kind named by the test's ``db`` param."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
        yield engine
        engine.dispose()
        return
    require_postgres()
    admin, engine, schema = _pg_schema_engine()
    try:
        yield engine
    finally:
        engine.dispose()
        _drop_schema(admin, schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def engine(db_kind: str, tmp_path) -> Iterator[Engine]:
    """A database with the whole schema, on SQLite and (second run) on PostgreSQL."""
    if db_kind == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
        SQLModel.metadata.create_all(eng)
        yield eng
        eng.dispose()
        return
    require_postgres()
    admin, eng, schema = _pg_schema_engine()
    try:
        SQLModel.metadata.create_all(eng)
        yield eng
    finally:
        eng.dispose()
        _drop_schema(admin, schema)


@pytest.fixture
def db_url(db_kind: str, tmp_path) -> Iterator[str]:
    """A URL to an empty database (for CLI tests that run migrations themselves).

    PostgreSQL: a fresh database of its own, since a URL cannot carry a search_path
    that every tool honours.
    """
    if db_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'cli.db'}"
        return
    require_postgres()
    name = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
