"""A large generated ledger, written by the database itself (INSERT … SELECT), for benchmarks.

Default size: 1,000,000 open invoices, 100,000 customers, 1,000 reps in 10 regions, plus a
regional manager per region (``managers_per_region``), two credit managers and a legal
officer. Due dates spread from 400 days overdue to 60 days ahead of the as-of date, so every
tier is well filled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Engine, text
from sqlmodel import SQLModel

import credit.store.models  # noqa: F401  (registers the tables)
from credit.store.db import write_session


@dataclass(frozen=True)
class LedgerSize:
    invoices: int = 1_000_000
    customers: int = 100_000
    reps: int = 1_000
    regions: int = 10
    # regional managers per region (the digest benchmark has 10: 100 managers); in each region
    # the extra ones alternate Simplified Chinese and English
    managers_per_region: int = 1


def _series(dialect: str, n: int) -> str:
    """A row source ``s(i)`` for i in 1..n."""
    if dialect == "postgresql":
        return f"generate_series(CAST(1 AS BIGINT), {n}) AS s(i)"
    return (
        f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
        f"SELECT i FROM s) AS s"
    )


def build(engine: Engine, as_of: date, size: LedgerSize = LedgerSize()) -> None:
    """Drop and create the schema, then fill it."""
    SQLModel.metadata.drop_all(engine)
    SQLModel.metadata.create_all(engine)
    d = engine.dialect.name
    # due date = as_of + (60 - (i * 7919) % 461) days: from 400 days overdue to 60 ahead
    if d == "postgresql":
        due = f"(DATE '{as_of.isoformat()}' + CAST(60 - (s.i * 7919) % 461 AS INTEGER))"
        issue = f"(DATE '{as_of.isoformat()}' + CAST(30 - (s.i * 7919) % 461 AS INTEGER))"
        true_ = "TRUE"
        false_ = "FALSE"
    else:
        due = f"date('{as_of.isoformat()}', (60 - (s.i * 7919) % 461) || ' days')"
        issue = f"date('{as_of.isoformat()}', (30 - (s.i * 7919) % 461) || ' days')"
        true_, false_ = "1", "0"
    statements = [
        f"INSERT INTO region (id, code, name) SELECT s.i, 'R' || s.i, 'Region ' || s.i "
        f"FROM {_series(d, size.regions)}",
        # regional managers: ids 1..regions
        f"INSERT INTO person (id, code, name, role, region_id, locale, time_zone, active) "
        f"SELECT s.i, 'RM' || s.i, 'Manager ' || s.i, 'regional_manager', s.i, 'en', "
        f"'Asia/Shanghai', {true_} FROM {_series(d, size.regions)}",
        # more regional managers: ids after the reps, codes RM<region>-<n>
        *(
            [
                f"INSERT INTO person (id, code, name, role, region_id, locale, time_zone, active) "
                f"SELECT {100 + size.reps} + s.i, 'RM' || (1 + s.i % {size.regions}) || '-' || "
                f"(1 + (s.i - 1) / {size.regions} + 1), 'Manager ' || s.i, 'regional_manager', "
                f"1 + s.i % {size.regions}, "
                f"CASE WHEN ((s.i - 1) / {size.regions}) % 2 = 0 THEN 'zh_CN' ELSE 'en' END, "
                f"'Asia/Shanghai', {true_} "
                f"FROM {_series(d, size.regions * (size.managers_per_region - 1))}"
            ]
            if size.managers_per_region > 1
            else []
        ),
        # desk people
        f"INSERT INTO person (id, code, name, role, region_id, locale, time_zone, active) "
        f"VALUES ({size.regions + 1}, 'CM1', 'Credit 1', 'credit_manager', NULL, 'en', "
        f"'Asia/Shanghai', {true_}), ({size.regions + 2}, 'CM2', 'Credit 2', 'credit_manager', "
        f"NULL, 'en', 'Asia/Shanghai', {true_}), ({size.regions + 3}, 'LG1', 'Legal 1', "
        f"'legal', NULL, 'en', 'Asia/Shanghai', {true_})",
        # reps: ids from 101
        f"INSERT INTO person (id, code, name, role, region_id, locale, time_zone, active) "
        f"SELECT 100 + s.i, 'REP' || s.i, 'Rep ' || s.i, 'rep', 1 + s.i % {size.regions}, "
        f"'en', 'Asia/Shanghai', {true_} FROM {_series(d, size.reps)}",
        # customers: rep 101 + i % reps, region of that rep
        f"INSERT INTO customer (id, code, name, region_id, rep_id, rating, credit_limit, "
        f"currency, payment_terms_days, credit_hold, blacklisted) "
        f"SELECT s.i, 'C' || s.i, 'Customer ' || s.i, 1 + (1 + s.i % {size.reps}) "
        f"% {size.regions}, 101 + s.i % {size.reps}, 'C', 50000000, 'CNY', 30, {false_}, "
        f"{false_} FROM {_series(d, size.customers)}",
        f"INSERT INTO invoice (id, number, customer_id, issue_date, due_date, amount, "
        f"open_amount, currency, disputed) "
        f"SELECT s.i, 'INV' || s.i, 1 + (s.i * 31) % {size.customers}, {issue}, {due}, "
        f"100000 + (s.i * 37) % 900000, 100000 + (s.i * 37) % 900000, 'CNY', "
        f"CASE WHEN s.i % 97 = 0 THEN {true_} ELSE {false_} END "
        f"FROM {_series(d, size.invoices)}",
    ]
    with write_session(engine) as s:
        for stmt in statements:
            s.execute(text(stmt))
    # what autovacuum would have done on a live database: statistics and visibility map
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if d == "postgresql" else "ANALYZE")


def baseline_sql(as_of: date) -> str:
    """The hand-written reference: one GROUP BY of open invoices per rep and tier."""
    a = as_of.isoformat()
    cases = (
        f"CASE WHEN i.due_date > '{a}' THEN 'due_soon_or_later' "
        f"WHEN i.due_date >= DATE '{a}' - 29 THEN 'overdue' "
        f"WHEN i.due_date >= DATE '{a}' - 59 THEN 'overdue_1m' "
        f"WHEN i.due_date >= DATE '{a}' - 180 THEN 'overdue_2_6m' ELSE 'overdue_6m_plus' END"
    )
    return (
        f"SELECT c.rep_id, {cases} AS tier, count(*), sum(i.open_amount) "
        f"FROM invoice i JOIN customer c ON c.id = i.customer_id "
        f"WHERE i.open_amount > 0 GROUP BY c.rep_id, tier"
    )


def baseline_sql_for(dialect: str, as_of: date) -> str:
    sql = baseline_sql(as_of)
    if dialect == "sqlite":
        a = as_of.isoformat()
        for n in (29, 59, 180):
            sql = sql.replace(f"DATE '{a}' - {n}", f"date('{a}', '-{n} days')")
    return sql
