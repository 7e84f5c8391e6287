"""The schema on both engines: money, UTC times, the append-only audit log, migrations."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import SQLModel, select

from credit.store.db import read_session, write_session
from credit.store.migrate import current_revision, downgrade, upgrade
from credit.store.models import AuditLog, Customer, Invoice, Person, Region


def _ledger(session) -> Customer:
    region = Region(code="EAST", name="华东")
    session.add(region)
    session.flush()
    rep = Person(code="R1", name="张伟", role="rep", region_id=region.id)
    session.add(rep)
    session.flush()
    customer = Customer(
        code="C1",
        name="上海宏达机械有限公司",
        region_id=region.id,
        rep_id=rep.id,
        credit_limit=Decimal("1234567.89"),
        currency="CNY",
    )
    session.add(customer)
    session.flush()
    return customer


def test_money_round_trips_exactly_and_sums_exactly(engine):
    with write_session(engine) as s:
        c = _ledger(s)
        for i in range(10):
            s.add(
                Invoice(
                    number=f"INV-{i}",
                    customer_id=c.id,
                    issue_date=date(2026, 1, 1),
                    due_date=date(2026, 2, 1),
                    amount=Decimal("0.10"),
                    open_amount=Decimal("0.10"),
                    currency="CNY",
                )
            )
    with read_session(engine) as s:
        from sqlalchemy import func

        total = s.exec(select(func.sum(Invoice.open_amount))).one()
        limit = s.exec(select(Customer.credit_limit)).one()
    assert total == Decimal("1.00")  # ten 0.10s; a float column would give 0.9999999999999999
    assert limit == Decimal("1234567.89")
    assert isinstance(total, Decimal)


def test_money_with_fractions_of_a_cent_is_refused(engine):
    with pytest.raises(Exception, match="more than two decimals"), write_session(engine) as s:
        c = _ledger(s)
        s.add(
            Invoice(
                number="X",
                customer_id=c.id,
                issue_date=date(2026, 1, 1),
                due_date=date(2026, 1, 2),
                amount=Decimal("1.005"),
                open_amount=Decimal("1.005"),
                currency="CNY",
            )
        )
        s.flush()


def test_times_are_stored_in_utc_and_naive_times_refused(engine):
    shanghai = timezone(timedelta(hours=8))
    with write_session(engine) as s:
        s.add(
            AuditLog(
                actor="t", action="a", entity="e", at=datetime(2026, 3, 5, 9, 0, tzinfo=shanghai)
            )
        )
    with read_session(engine) as s:
        at = s.exec(select(AuditLog.at)).one()
    assert at == datetime(2026, 3, 5, 1, 0, tzinfo=UTC)
    assert at.utcoffset() == timedelta(0)
    with pytest.raises(Exception, match="naive datetime"), write_session(engine) as s:
        s.add(AuditLog(actor="t", action="a", entity="e", at=datetime(2026, 3, 5, 9, 0)))
        s.flush()


def test_audit_log_is_append_only(engine):
    with write_session(engine) as s:
        s.add(AuditLog(actor="alice", action="credit_hold.on", entity="customer", entity_id="C1"))
    for stmt in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), write_session(engine) as s:
            s.exec(text(stmt))
    with read_session(engine) as s:
        assert [a.actor for a in s.exec(select(AuditLog))] == ["alice"]


def test_natural_keys_are_unique(engine):
    with write_session(engine) as s:
        _ledger(s)
    with pytest.raises(IntegrityError), write_session(engine) as s:
        s.add(Region(code="EAST", name="again"))
        s.flush()


def test_foreign_keys_are_enforced(engine):
    with pytest.raises(IntegrityError), write_session(engine) as s:
        s.add(
            Invoice(
                number="ORPHAN",
                customer_id=999,
                issue_date=date(2026, 1, 1),
                due_date=date(2026, 1, 2),
                amount=Decimal(1),
                open_amount=Decimal(1),
                currency="CNY",
            )
        )
        s.flush()


def test_sqlite_runs_in_wal_mode(tmp_path):
    from credit.store.db import make_engine

    eng = make_engine(f"sqlite:///{tmp_path / 'wal.db'}", busy_timeout_ms=1234)
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@pytest.mark.parametrize(
    "bare_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_migrations_build_exactly_the_models_schema_and_go_back_down(bare_engine):
    upgrade(bare_engine)
    assert current_revision(bare_engine) is not None
    with bare_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    # the append-only guard comes with the migration too
    with write_session(bare_engine) as s:
        s.add(AuditLog(actor="a", action="b", entity="c"))
    with pytest.raises(DBAPIError, match="append-only"), write_session(bare_engine) as s:
        s.exec(text("DELETE FROM audit_log"))
    downgrade(bare_engine, "base")
    assert "invoice" not in inspect(bare_engine).get_table_names()
