"""Engines and sessions for SQLite (embedded default) and PostgreSQL (production).

SQLite connections get WAL, a busy timeout and foreign keys. Our write transactions start
with ``BEGIN IMMEDIATE`` so a read-then-write never fails with "database is locked" half way:
open them with ``write_session(engine)``. Read-only work uses ``read_session(engine)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel

from credit.store.models import AuditLog

IMMEDIATE = "creditbot_immediate"


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the only PostgreSQL driver we install)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def make_engine(url: str, *, busy_timeout_ms: int = 5000, echo: bool = False, **kw: Any) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=echo, connect_args={"timeout": busy_timeout_ms / 1000}, **kw
        )
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    kw.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql":
        # fail fast when the server is away, and notice a dead peer on an idle connection
        # (the leader's lock connection, ``jobs.leader``) within about half a minute
        connect_args = {
            "connect_timeout": 5,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        connect_args.update(kw.pop("connect_args", {}))
        kw["connect_args"] = connect_args
    return create_engine(url, echo=echo, **kw)


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A transaction that will write: committed on success, rolled back on error.

    On SQLite it takes the write lock up front (BEGIN IMMEDIATE), waiting up to the busy
    timeout for another writer, instead of failing later on lock upgrade.
    """
    with engine.connect() as conn:
        conn = conn.execution_options(**{IMMEDIATE: True})
        with Session(bind=conn) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session


# --- the append-only audit log --------------------------------------------------------------

_SQLITE_GUARD = [
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
]
_PG_GUARD = [
    """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql""",
    """DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log""",
    """CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
]


def audit_guard_statements(dialect: str) -> list[str]:
    return {"sqlite": _SQLITE_GUARD, "postgresql": _PG_GUARD}.get(dialect, [])


def install_audit_guard(connection: Any) -> None:
    for stmt in audit_guard_statements(connection.dialect.name):
        connection.exec_driver_sql(stmt)


@event.listens_for(AuditLog.__table__, "after_create")
def _guard_after_create(_table: Any, connection: Any, **_kw: Any) -> None:
    install_audit_guard(connection)


# --- customers to re-examine for lifting a credit hold ---------------------------------------

# An overdue item is cleared only by a change to one of these columns (or a deletion); a new
# invoice or the passing of time can only add overdue items.
_RECHECK_COLUMNS = ("open_amount", "disputed", "due_date", "customer_id")
_SQLITE_RECHECK = [
    f"""CREATE TRIGGER IF NOT EXISTS invoice_hold_recheck_update
       AFTER UPDATE OF {", ".join(_RECHECK_COLUMNS)} ON invoice
       WHEN {" OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _RECHECK_COLUMNS)}
       BEGIN INSERT OR IGNORE INTO hold_recheck (customer_id) VALUES (OLD.customer_id); END""",
    """CREATE TRIGGER IF NOT EXISTS invoice_hold_recheck_delete AFTER DELETE ON invoice
       BEGIN INSERT OR IGNORE INTO hold_recheck (customer_id) VALUES (OLD.customer_id); END""",
]
_PG_RECHECK = [
    """CREATE OR REPLACE FUNCTION invoice_hold_recheck() RETURNS trigger AS $$
       BEGIN
         INSERT INTO hold_recheck (customer_id) VALUES (OLD.customer_id) ON CONFLICT DO NOTHING;
         RETURN NULL;
       END; $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS invoice_hold_recheck_update ON invoice",
    f"""CREATE TRIGGER invoice_hold_recheck_update
       AFTER UPDATE OF {", ".join(_RECHECK_COLUMNS)} ON invoice FOR EACH ROW
       WHEN ({" OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in _RECHECK_COLUMNS)})
       EXECUTE FUNCTION invoice_hold_recheck()""",
    "DROP TRIGGER IF EXISTS invoice_hold_recheck_delete ON invoice",
    """CREATE TRIGGER invoice_hold_recheck_delete AFTER DELETE ON invoice
       FOR EACH ROW EXECUTE FUNCTION invoice_hold_recheck()""",
]


def install_hold_recheck(connection: Any) -> None:
    stmts = {"sqlite": _SQLITE_RECHECK, "postgresql": _PG_RECHECK}.get(connection.dialect.name)
    for stmt in stmts or []:
        connection.exec_driver_sql(stmt)


@event.listens_for(SQLModel.metadata, "after_create")
def _recheck_after_create(_metadata: Any, connection: Any, **_kw: Any) -> None:
    install_hold_recheck(connection)  # both tables exist once the whole schema is created


__all__ = ["make_engine", "read_session", "write_session"]
