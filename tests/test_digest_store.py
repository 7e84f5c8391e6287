"""The daily digest from the database (credit.store.digest), on SQLite and PostgreSQL.

A small ledger is built here by hand and every number of the payloads is worked out by hand
below it. As-of date Wednesday 2026-11-25 (previous business day Tuesday 2026-11-24), run at
09:00 in Shanghai (01:00 UTC).

Aging (days = 2026-11-25 − due date; buckets current ≤ 0, 1–30, 31–60, 61–90, 91–180, >180):

| inv | customer (region, rep)   | issued     | due        | days | bucket   | amount   | open     |
|-----|--------------------------|------------|------------|------|----------|----------|----------|
| I1  | C1 (EAST, E1)            | 2026-11-10 | 2026-12-10 | −15  | current  | 10000.00 | 10000.00 |
| I2  | C1                       | 2026-10-05 | 2026-11-04 | 21   | 1_30     | 5000.00  | 3000.00  |
| I3  | C1                       | 2026-08-01 | 2026-08-31 | 86   | 61_90    | 8000.00  | 8000.00  |
| I7  | C1                       | 2026-09-26 | 2026-10-26 | 30   | 1_30     | 2500.00  | 2500.00  |
| I4  | C2 (EAST, E2)            | 2026-09-01 | 2026-10-01 | 55   | 31_60    | 4000.00  | 4000.00  |
| I5  | C2                       | 2026-11-02 | 2026-12-02 | −7   | (paid)   | 6000.00  | 0        |
| I8  | C2                       | 2026-11-25 | 2026-12-25 | −30  | current  | 1000.00  | 1000.00  |
| I9  | C3 (EAST, E1, rating H)  | 2026-03-01 | 2026-03-31 | 239  | over_180 | 7000.00  | 7000.00  |
| I10 | C3                       | 2026-11-01 | 2026-12-01 | −6   | current  | 1000.00  | 1000.00  |
| I11 | C4 (WEST, W1, USD)       | 2026-06-01 | 2026-07-01 | 147  | 91_180   | 3000.00$ | 3000.00$ |
| I12 | C4                       | 2026-10-10 | 2026-11-09 | 16   | 1_30     | 1500.00$ | 1500.00$ |
| I13 | C5 (WEST, W1, blacklist) | 2025-12-01 | 2025-12-31 | 329  | over_180 | 2000.00  | 2000.00  |
| I14 | C6 (WEST, W2)            | 2026-11-20 | 2027-01-10 | −46  | current  | 900.00   | 900.00   |

Payments: P1 C1 2026-11-20 2000.00; P2 C2 2026-11-24 6000.00; P3 C1 2026-10-15 1000.00;
P4 C4 2026-09-30 500.00$ (last quarter); P5 C4 2026-11-05 700.00$.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from sqlmodel import select

from credit.calendar import BusinessCalendar
from credit.settings import ConfigError, Settings, load_settings
from credit.store.db import read_session, write_session
from credit.store.digest import (
    LIST_LIMIT,
    DigestPayload,
    build_digests,
    digest_key,
    plan_digests,
    run_digest,
    write_snapshot,
)
from credit.store.models import (
    AgingSnapshot,
    AuditLog,
    Customer,
    Invoice,
    OutboxMessage,
    Payment,
    Person,
    PromiseToPay,
    Region,
    ShipmentRequest,
)
from jobs import tasks
from jobs.clock import FakeClock
from jobs.runtime import Runtime, install
from jobs.scheduler import catch_up, digest_missed

AS_OF = date(2026, 11, 25)
YESTERDAY = date(2026, 11, 24)
NOW = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
CAL = BusinessCalendar("CN")
KEYS = ["current", "1_30", "31_60", "61_90", "91_180", "over_180"]


def _utc(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def build_ledger(engine) -> dict[str, int]:
    """The ledger of the module docstring; returns ids by code."""
    ids: dict[str, int] = {}
    with write_session(engine) as s:
        east = Region(code="EAST", name="华东")
        west = Region(code="WEST", name="West")
        s.add_all([east, west])
        s.flush()
        people = [
            Person(code="RM-E", name="王丽", role="regional_manager", region_id=east.id,
                   locale="zh_CN"),
            Person(code="RM-W", name="Walt West", role="regional_manager", region_id=west.id),
            Person(code="RM-X", name="Gone Manager", role="regional_manager",
                   region_id=west.id, active=False),
            Person(code="CM", name="陈静", role="credit_manager"),
            Person(code="FIN", name="Fiona Finance", role="finance", time_zone="Europe/Berlin"),
            Person(code="EXE", name="Eve Exec", role="executive"),
            Person(code="LEG", name="Leo Legal", role="legal"),
            Person(code="ADM", name="Ada Admin", role="admin"),
            Person(code="E1", name="王磊", role="rep", region_id=east.id),
            Person(code="E2", name="Erin East", role="rep", region_id=east.id),
            Person(code="W1", name="Will West", role="rep", region_id=west.id),
            Person(code="W2", name="Wendy Quiet", role="rep", region_id=west.id),
            Person(code="OLD", name="Old Rep", role="rep", region_id=west.id, active=False),
        ]  # fmt: skip
        s.add_all(people)
        s.flush()
        ids.update({p.code: p.id for p in people})
        customers = [
            Customer(code="C1", name="上海浦东新材料有限公司", region_id=east.id, rep_id=ids["E1"],
                     rating="B", credit_hold=True, credit_hold_source="scan",
                     credit_hold_reason="overdue_2_6m: invoices 60+ days overdue",
                     credit_hold_since=_utc(AS_OF, 0, 30)),
            Customer(code="C2", name="Acme Trading", region_id=east.id, rep_id=ids["E2"],
                     credit_hold=True, credit_hold_source="scan",
                     credit_hold_since=_utc(date(2026, 11, 23), 0, 30)),
            Customer(code="C3", name="Blacklist Ltd", region_id=east.id, rep_id=ids["E1"],
                     rating="H"),
            Customer(code="C4", name="West Widgets", region_id=west.id, rep_id=ids["W1"],
                     rating="A", currency="USD"),
            Customer(code="C5", name="West Bad Debts", region_id=west.id, rep_id=ids["W1"],
                     blacklisted=True, credit_hold=True, credit_hold_source="manual",
                     credit_hold_reason="legal review", credit_hold_since=_utc(YESTERDAY, 6)),
            Customer(code="C6", name="Quiet Co", region_id=west.id, rep_id=ids["W2"]),
        ]  # fmt: skip
        s.add_all(customers)
        s.flush()
        ids.update({c.code: c.id for c in customers})

        def inv(number, customer, issued, due, amount, open_=None, currency="CNY"):
            return Invoice(
                number=number,
                customer_id=ids[customer],
                issue_date=date.fromisoformat(issued),
                due_date=date.fromisoformat(due),
                amount=D(amount),
                open_amount=D(amount if open_ is None else open_),
                currency=currency,
            )

        invoices = [
            inv("I1", "C1", "2026-11-10", "2026-12-10", "10000.00"),
            inv("I2", "C1", "2026-10-05", "2026-11-04", "5000.00", "3000.00"),
            inv("I3", "C1", "2026-08-01", "2026-08-31", "8000.00"),
            inv("I7", "C1", "2026-09-26", "2026-10-26", "2500.00"),
            inv("I4", "C2", "2026-09-01", "2026-10-01", "4000.00"),
            inv("I5", "C2", "2026-11-02", "2026-12-02", "6000.00", "0.00"),
            inv("I8", "C2", "2026-11-25", "2026-12-25", "1000.00"),
            inv("I9", "C3", "2026-03-01", "2026-03-31", "7000.00"),
            inv("I10", "C3", "2026-11-01", "2026-12-01", "1000.00"),
            inv("I11", "C4", "2026-06-01", "2026-07-01", "3000.00", currency="USD"),
            inv("I12", "C4", "2026-10-10", "2026-11-09", "1500.00", currency="USD"),
            inv("I13", "C5", "2025-12-01", "2025-12-31", "2000.00"),
            inv("I14", "C6", "2026-11-20", "2027-01-10", "900.00"),
        ]
        s.add_all(invoices)
        s.flush()
        ids.update({i.number: i.id for i in invoices})
        s.add_all(
            [
                Payment(reference="P1", customer_id=ids["C1"], invoice_id=ids["I2"],
                        paid_on=date(2026, 11, 20), amount=D("2000.00"), currency="CNY"),
                Payment(reference="P2", customer_id=ids["C2"], invoice_id=ids["I5"],
                        paid_on=date(2026, 11, 24), amount=D("6000.00"), currency="CNY"),
                Payment(reference="P3", customer_id=ids["C1"], paid_on=date(2026, 10, 15),
                        amount=D("1000.00"), currency="CNY"),
                Payment(reference="P4", customer_id=ids["C4"], paid_on=date(2026, 9, 30),
                        amount=D("500.00"), currency="USD"),
                Payment(reference="P5", customer_id=ids["C4"], paid_on=date(2026, 11, 5),
                        amount=D("700.00"), currency="USD"),
            ]
        )  # fmt: skip
        s.add_all(
            [
                # due today
                PromiseToPay(invoice_id=ids["I4"], promised_date=AS_OF, amount=D("4000.00"),
                             currency="CNY"),
                # broken by this morning's scan
                PromiseToPay(invoice_id=ids["I3"], promised_date=date(2026, 11, 18),
                             amount=D("8000.00"), currency="CNY", status="broken",
                             broken_on=AS_OF),
                # broken yesterday: told yesterday
                PromiseToPay(invoice_id=ids["I12"], promised_date=date(2026, 11, 10),
                             amount=D("1500.00"), currency="USD", status="broken",
                             broken_on=YESTERDAY),
                # kept, and due today on a paid invoice: neither is "due today"
                PromiseToPay(invoice_id=ids["I2"], promised_date=AS_OF, amount=D("2000.00"),
                             currency="CNY", status="kept"),
                PromiseToPay(invoice_id=ids["I5"], promised_date=AS_OF, amount=D("6000.00"),
                             currency="CNY"),
            ]
        )  # fmt: skip
        s.add_all(
            [
                AuditLog(actor="scheduler", action="credit_hold.on", entity="customer",
                         entity_id="C1", channel="scheduler", at=_utc(AS_OF, 0, 30),
                         before={"credit_hold": False},
                         after={"credit_hold": True, "source": "scan",
                                "reason": "overdue_2_6m: invoices 60+ days overdue"}),
                AuditLog(actor="scheduler", action="credit_hold.off", entity="customer",
                         entity_id="C4", channel="scheduler", at=_utc(YESTERDAY, 3),
                         after={"credit_hold": False}),
                # before yesterday's digest (09:00 Shanghai = 01:00 UTC): told then
                AuditLog(actor="scheduler", action="credit_hold.on", entity="customer",
                         entity_id="C2", channel="scheduler", at=_utc(date(2026, 11, 23), 0, 30),
                         after={"credit_hold": True, "reason": "old"}),
            ]
        )  # fmt: skip
        s.add_all(
            [
                ShipmentRequest(customer_id=ids["C2"], order_ref="SO-1", amount=D("50000.00"),
                                currency="CNY", requested_by_id=ids["E2"],
                                created_at=_utc(YESTERDAY, 1)),
                # raised by E1 for W1's customer: both see it
                ShipmentRequest(customer_id=ids["C4"], order_ref="SO-2", amount=D("12000.00"),
                                currency="USD", requested_by_id=ids["E1"],
                                created_at=_utc(AS_OF, 0, 15)),
                ShipmentRequest(customer_id=ids["C1"], order_ref="SO-3", amount=D("1.00"),
                                currency="CNY", status="approved",
                                created_at=_utc(date(2026, 11, 1), 1)),
            ]
        )  # fmt: skip
        s.flush()
        requests = s.exec(select(ShipmentRequest).order_by(ShipmentRequest.id)).all()
        ids.update({r.order_ref: r.id for r in requests})
    return ids


def _plan(engine, settings: Settings | None = None, as_of: date = AS_OF, now: datetime = NOW):
    with read_session(engine) as s:
        return plan_digests(s, settings or Settings(), as_of, now, calendar=CAL)


def _by_code(digests: list[DigestPayload]) -> dict[str, dict[str, Any]]:
    return {d.code: d.payload for d in digests}


def _buckets(payload: dict[str, Any], field: str = "totals") -> dict[str, Any]:
    return {b["key"]: b[field] for b in payload["buckets"]}


# --- expected values, worked out by hand from the module docstring -----------------------------

COMPANY_BUCKETS = {
    # I1 10000 + I8 1000 + I10 1000 + I14 900
    "current": {"CNY": "12900.00", "USD": "0.00"},
    # I2 3000 + I7 2500; I12 1500$
    "1_30": {"CNY": "5500.00", "USD": "1500.00"},
    "31_60": {"CNY": "4000.00", "USD": "0.00"},  # I4
    "61_90": {"CNY": "8000.00", "USD": "0.00"},  # I3
    "91_180": {"CNY": "0.00", "USD": "3000.00"},  # I11
    "over_180": {"CNY": "9000.00", "USD": "0.00"},  # I9 7000 + I13 2000
}
EAST_BUCKETS = {
    "current": {"CNY": "12000.00"},  # I1 + I8 + I10
    "1_30": {"CNY": "5500.00"},
    "31_60": {"CNY": "4000.00"},
    "61_90": {"CNY": "8000.00"},
    "91_180": {"CNY": "0.00"},
    "over_180": {"CNY": "7000.00"},  # I9
}
WEST_BUCKETS = {
    "current": {"CNY": "900.00", "USD": "0.00"},
    "1_30": {"CNY": "0.00", "USD": "1500.00"},
    "31_60": {"CNY": "0.00", "USD": "0.00"},
    "61_90": {"CNY": "0.00", "USD": "0.00"},
    "91_180": {"CNY": "0.00", "USD": "3000.00"},
    "over_180": {"CNY": "2000.00", "USD": "0.00"},
}


def test_who_gets_a_digest(engine):
    ids = build_ledger(engine)
    plan = _plan(engine)
    scopes = {d.code: d.scope for d in plan.digests}
    # regional managers: their region; the credit desk, finance, executives: the company;
    # reps with something on their day. Not: legal, admin, the inactive, W2 (empty day).
    assert scopes == {
        "CM": "company",
        "E1": "rep",
        "E2": "rep",
        "EXE": "company",
        "FIN": "company",
        "RM-E": "region",
        "RM-W": "region",
        "W1": "rep",
    }
    assert plan.reps_with_empty_day == 1
    assert {d.person_id for d in plan.digests} == {ids[c] for c in scopes}
    payloads = _by_code(plan.digests)
    assert payloads["RM-E"]["recipient"] == {
        "code": "RM-E",
        "name": "王丽",
        "role": "regional_manager",
        "locale": "zh_CN",
        "time_zone": "Asia/Shanghai",
    }
    assert payloads["RM-E"]["scope_name"] == "华东"
    assert payloads["CM"]["scope_name"] == "Company"
    assert payloads["E1"]["scope_name"] == "王磊"
    # each person's own copy
    assert payloads["CM"] is not payloads["FIN"]
    assert payloads["CM"]["recipient"]["code"] == "CM"
    assert payloads["FIN"]["recipient"]["code"] == "FIN"


def test_company_digest_every_number(engine):
    build_ledger(engine)
    p = _by_code(_plan(engine).digests)["CM"]
    assert p["kind"] == "digest"
    assert p["business_date"] == "2026-11-25"
    assert p["scope"] == "company"
    assert p["reporting_currency"] == "CNY"
    assert [(b["key"], b["min_days"], b["max_days"]) for b in p["buckets"]] == [
        ("current", None, 0),
        ("1_30", 1, 30),
        ("31_60", 31, 60),
        ("61_90", 61, 90),
        ("91_180", 91, 180),
        ("over_180", 181, None),
    ]
    assert _buckets(p) == COMPANY_BUCKETS
    assert _buckets(p, "invoices") == {
        "current": 4, "1_30": 3, "31_60": 1, "61_90": 1, "91_180": 1, "over_180": 2,
    }  # fmt: skip
    # no snapshot before: no change, only today in the trend
    assert _buckets(p, "change") == dict.fromkeys(KEYS)
    assert p["change_since"] is None
    # 12900 + 5500 + 4000 + 8000 + 9000 = 39400; USD 1500 + 3000 = 4500
    assert p["total_open"] == {"CNY": "39400.00", "USD": "4500.00"}
    assert p["total_overdue"] == {"CNY": "26500.00", "USD": "4500.00"}
    assert p["trend"] == [{"date": "2026-11-25", "overdue": {"CNY": "26500.00", "USD": "4500.00"}}]
    # billed month-to-date (issued 11-01…11-25): I1 10000 + I5 6000 + I8 1000 + I10 1000
    # + I14 900 = 18900; quarter-to-date (10-01…): + I2 5000 = 23900 CNY, I12 1500$.
    # DSO month = 39400 / 18900 × 25 = 52.116 → 52.1; quarter = 39400 / 23900 × 56 = 92.318
    assert p["dso"] == {"month": "52.1", "quarter": "92.3"}
    # USD: nothing billed this month; quarter 4500 / 1500 × 56 = 168.0
    assert p["dso_by_currency"] == {
        "month": {"CNY": "52.1", "USD": None},
        "quarter": {"CNY": "92.3", "USD": "168.0"},
    }
    # collected month: P1 2000 + P2 6000 = 8000 → 8000 / 18900 = 0.423 → 0.42;
    # quarter: + P3 1000 = 9000 → 9000 / 23900 = 0.377 → 0.38; USD P5 700 / 1500 = 0.47
    assert p["collection_rate"] == {"month": "0.42", "quarter": "0.38"}
    assert p["collection_rate_by_currency"] == {
        "month": {"CNY": "0.42", "USD": None},
        "quarter": {"CNY": "0.38", "USD": "0.47"},
    }
    assert p["periods"] == {
        "month": {"start": "2026-11-01", "days": 25},
        "quarter": {"start": "2026-10-01", "days": 56},
    }
    # overdue per customer: C1 I2 3000 + I3 8000 + I7 2500 = 13500 (oldest I3, 86 days);
    # C3 7000 (239); C4 4500$ (I11, 147); C2 4000 (55); C5 2000 (329); C6 nothing overdue
    assert p["top_overdue"] == [
        {"customer": "C1", "customer_name": "上海浦东新材料有限公司", "region": "华东",
         "overdue": {"CNY": "13500.00"}, "max_days": 86},
        {"customer": "C3", "customer_name": "Blacklist Ltd", "region": "华东",
         "overdue": {"CNY": "7000.00"}, "max_days": 239},
        {"customer": "C4", "customer_name": "West Widgets", "region": "West",
         "overdue": {"USD": "4500.00"}, "max_days": 147},
        {"customer": "C2", "customer_name": "Acme Trading", "region": "华东",
         "overdue": {"CNY": "4000.00"}, "max_days": 55},
        {"customer": "C5", "customer_name": "West Bad Debts", "region": "West",
         "overdue": {"CNY": "2000.00"}, "max_days": 329},
    ]  # fmt: skip
    assert p["promises_due_today"] == [
        {"number": "I4", "customer": "C2", "customer_name": "Acme Trading", "amount": "4000.00",
         "currency": "CNY", "promised_date": "2026-11-25", "open_amount": "4000.00"},
    ]  # fmt: skip
    assert p["promises_broken"] == [
        {"number": "I3", "customer": "C1", "customer_name": "上海浦东新材料有限公司",
         "amount": "8000.00", "currency": "CNY", "promised_date": "2026-11-18",
         "open_amount": "8000.00", "broken_on": "2026-11-25"},
    ]  # fmt: skip
    # since yesterday 09:00 Shanghai: C1 by the scan (audit), C5 by hand (no audit entry);
    # C2's hold is older. C4's lifted yesterday at 11:00 Shanghai.
    assert p["holds_on"] == [
        {"customer": "C1", "customer_name": "上海浦东新材料有限公司",
         "at": "2026-11-25T00:30:00+00:00", "reason": "overdue_2_6m: invoices 60+ days overdue"},
        {"customer": "C5", "customer_name": "West Bad Debts",
         "at": "2026-11-24T06:00:00+00:00", "reason": "legal review"},
    ]  # fmt: skip
    assert p["holds_off"] == [
        {"customer": "C4", "customer_name": "West Widgets", "at": "2026-11-24T03:00:00+00:00"}
    ]
    approvals = [{k: a[k] for k in ("order_ref", "customer_name", "amount", "currency",
                                    "age_hours")} for a in p["pending_approvals"]]  # fmt: skip
    assert approvals == [  # oldest first; SO-3 is decided
        {"order_ref": "SO-1", "customer_name": "Acme Trading", "amount": "50000.00",
         "currency": "CNY", "age_hours": 24},
        {"order_ref": "SO-2", "customer_name": "West Widgets", "amount": "12000.00",
         "currency": "USD", "age_hours": 0},  # 45 minutes
    ]  # fmt: skip
    assert all(isinstance(a["request_id"], int) for a in p["pending_approvals"])
    # provision: C3 (rating H) and C5 (blacklisted) are provided for in full and left out of
    # the brackets. Bases: current 10000 + 1000 + 900 = 11900 (0 %); 1_30 5500 (2 % = 110.00),
    # 1500$ (30.00$); 31_60 4000 (5 % = 200.00); 61_90 8000 (10 % = 800.00);
    # 91_180 3000$ (30 % = 900.00$); over_180 nothing left.
    brackets = {
        b["key"]: (b["rate"], b["base"], b["provision"]) for b in p["provision"]["brackets"]
    }
    zero = {"CNY": "0.00", "USD": "0.00"}
    assert brackets == {
        "current": ("0.00", {"CNY": "11900.00", "USD": "0.00"}, zero),
        "1_30": ("0.02", {"CNY": "5500.00", "USD": "1500.00"},
                 {"CNY": "110.00", "USD": "30.00"}),
        "31_60": ("0.05", {"CNY": "4000.00", "USD": "0.00"}, {"CNY": "200.00", "USD": "0.00"}),
        "61_90": ("0.10", {"CNY": "8000.00", "USD": "0.00"}, {"CNY": "800.00", "USD": "0.00"}),
        "91_180": ("0.30", {"CNY": "0.00", "USD": "3000.00"}, {"CNY": "0.00", "USD": "900.00"}),
        "over_180": ("0.60", zero, zero),
    }  # fmt: skip
    # specific: C3 I9 7000 + I10 1000 = 8000; C5 2000
    assert p["provision"]["specific"] == [
        {"customer": "C3", "customer_name": "Blacklist Ltd", "base": {"CNY": "8000.00"},
         "provision": {"CNY": "8000.00"}},
        {"customer": "C5", "customer_name": "West Bad Debts", "base": {"CNY": "2000.00"},
         "provision": {"CNY": "2000.00"}},
    ]  # fmt: skip
    assert p["provision"]["specific_total"] == {"CNY": "10000.00"}
    assert p["provision"]["specific_count"] == 2
    # 110 + 200 + 800 + 10000 = 11110; USD 30 + 900 = 930
    assert p["provision"]["total"] == {"CNY": "11110.00", "USD": "930.00"}
    assert p["counts"] == {
        "promises_due_today": 1,
        "promises_broken": 1,
        "holds_on": 2,
        "holds_off": 1,
        "pending_approvals": 2,
        "specific_provision": 2,
    }
    assert p["your_day"] is None
    east, west = p["regions"]
    assert east == {
        "region": "华东",
        "code": "EAST",
        "buckets": EAST_BUCKETS,
        "total_open": {"CNY": "36500.00"},
        "total_overdue": {"CNY": "24500.00"},
        # billed month: I1 10000 + I5 6000 + I8 1000 + I10 1000 = 18000, quarter + I2 = 23000
        # DSO 36500 / 18000 × 25 = 50.69 → 50.7; 36500 / 23000 × 56 = 88.87 → 88.9
        "dso": {"month": "50.7", "quarter": "88.9"},
        # 8000 / 18000 = 0.444 → 0.44; 9000 / 23000 = 0.391 → 0.39
        "collection_rate": {"month": "0.44", "quarter": "0.39"},
    }
    assert west == {
        "region": "West",
        "code": "WEST",
        "buckets": WEST_BUCKETS,
        "total_open": {"CNY": "2900.00", "USD": "4500.00"},
        "total_overdue": {"CNY": "2000.00", "USD": "4500.00"},
        # CNY billed: I14 900 (month and quarter); 2900 / 900 × 25 = 80.56; × 56 = 180.44
        "dso": {"month": "80.6", "quarter": "180.4"},
        # nothing collected in CNY (P4, P5 are dollars)
        "collection_rate": {"month": "0.00", "quarter": "0.00"},
    }


def test_regional_manager_digest_is_their_region(engine):
    build_ledger(engine)
    payloads = _by_code(_plan(engine).digests)
    p = payloads["RM-E"]
    assert p["scope"] == "region"
    assert _buckets(p) == EAST_BUCKETS
    assert p["total_open"] == {"CNY": "36500.00"}
    assert p["total_overdue"] == {"CNY": "24500.00"}
    assert p["dso"] == {"month": "50.7", "quarter": "88.9"}
    assert p["collection_rate"] == {"month": "0.44", "quarter": "0.39"}
    assert [(t["customer"], t["overdue"]) for t in p["top_overdue"]] == [
        ("C1", {"CNY": "13500.00"}),
        ("C3", {"CNY": "7000.00"}),
        ("C2", {"CNY": "4000.00"}),
    ]
    assert [x["number"] for x in p["promises_due_today"]] == ["I4"]
    assert [x["number"] for x in p["promises_broken"]] == ["I3"]
    assert [x["customer"] for x in p["holds_on"]] == ["C1"]
    assert p["holds_off"] == []
    assert [x["order_ref"] for x in p["pending_approvals"]] == ["SO-1"]
    # bases: current I1 10000 + I8 1000 = 11000 (0 %); 1_30 5500 → 110; 31_60 4000 → 200;
    # 61_90 8000 → 800; specific C3 8000. Total 110 + 200 + 800 + 8000 = 9110
    assert p["provision"]["total"] == {"CNY": "9110.00"}
    assert [s["customer"] for s in p["provision"]["specific"]] == ["C3"]
    assert p["provision"]["specific_count"] == 1
    assert p["regions"] == []
    assert p["trend"] == [{"date": "2026-11-25", "overdue": {"CNY": "24500.00"}}]

    w = payloads["RM-W"]
    assert _buckets(w) == WEST_BUCKETS
    assert [x["customer"] for x in w["holds_on"]] == ["C5"]
    assert [x["customer"] for x in w["holds_off"]] == ["C4"]
    assert [x["order_ref"] for x in w["pending_approvals"]] == ["SO-2"]
    assert w["promises_due_today"] == w["promises_broken"] == []  # I12's broke yesterday
    # bases: current 900 (0 %), 1_30 1500$ → 30.00$, 91_180 3000$ → 900.00$; C5 2000 in full
    assert w["provision"]["total"] == {"CNY": "2000.00", "USD": "930.00"}
    assert [(t["customer"], t["max_days"]) for t in w["top_overdue"]] == [("C4", 147), ("C5", 329)]


def test_reps_get_their_day(engine):
    build_ledger(engine)
    payloads = _by_code(_plan(engine).digests)
    e1 = payloads["E1"]
    assert e1["scope"] == "rep"
    # I7 is 30 days past due today: it enters overdue_1m
    assert e1["your_day"]["entering_tier"] == [
        {"number": "I7", "customer": "C1", "customer_name": "上海浦东新材料有限公司",
         "tier": "overdue_1m", "amount": "2500.00", "currency": "CNY", "days": 30,
         "due_date": "2026-10-26", "disputed": False},
    ]  # fmt: skip
    assert e1["your_day"]["promises_due_today"] == []
    # SO-2 is for W1's customer, but E1 raised it
    assert [r["order_ref"] for r in e1["your_day"]["pending_requests"]] == ["SO-2"]
    assert e1["your_day"]["counts"] == {
        "promises_due_today": 0,
        "entering_tier": 1,
        "pending_requests": 1,
    }
    # E1's portfolio: C1 and C3
    assert _buckets(e1) == {
        "current": {"CNY": "11000.00"},  # I1 + I10
        "1_30": {"CNY": "5500.00"},
        "31_60": {"CNY": "0.00"},
        "61_90": {"CNY": "8000.00"},
        "91_180": {"CNY": "0.00"},
        "over_180": {"CNY": "7000.00"},
    }
    assert [t["customer"] for t in e1["top_overdue"]] == ["C1", "C3"]
    assert [x["customer"] for x in e1["holds_on"]] == ["C1"]
    # reps have no snapshots of their own
    assert _buckets(e1, "change") == dict.fromkeys(KEYS)
    assert e1["trend"] == []

    e2 = payloads["E2"]["your_day"]
    # I8 is due in 30 days today: it enters due_soon
    assert [(x["number"], x["tier"], x["days"]) for x in e2["entering_tier"]] == [
        ("I8", "due_soon", -30)
    ]
    assert [x["number"] for x in e2["promises_due_today"]] == ["I4"]
    assert [r["order_ref"] for r in e2["pending_requests"]] == ["SO-1"]  # once, not twice
    w1 = payloads["W1"]["your_day"]
    assert w1["entering_tier"] == w1["promises_due_today"] == []
    assert [r["order_ref"] for r in w1["pending_requests"]] == ["SO-2"]
    assert "W2" not in payloads  # nothing on the day: no message


def test_after_a_weekend_entering_a_tier_covers_the_days_since_the_last_business_day(engine):
    ids = build_ledger(engine)
    monday = date(2026, 11, 30)  # the previous business day is Friday 11-27
    with write_session(engine) as s:
        # 1 day overdue on Saturday 11-28, 3 days on Monday: entered "overdue" at the weekend
        s.add(Invoice(number="I20", customer_id=ids["C2"], issue_date=date(2026, 10, 28),
                      due_date=date(2026, 11, 27), amount=D("10.00"), open_amount=D("10.00"),
                      currency="CNY"))  # fmt: skip
        # 4 days overdue: entered on Friday, told then
        s.add(Invoice(number="I21", customer_id=ids["C2"], issue_date=date(2026, 10, 27),
                      due_date=date(2026, 11, 26), amount=D("10.00"), open_amount=D("10.00"),
                      currency="CNY"))  # fmt: skip
    payloads = _by_code(_plan(engine, as_of=monday, now=_utc(monday, 1)).digests)
    entering = payloads["E2"]["your_day"]["entering_tier"]
    # and I4 (due 10-01) is 60 days past due on Monday: it enters overdue_2_6m today
    assert [(x["number"], x["tier"], x["days"]) for x in entering] == [
        ("I4", "overdue_2_6m", 60),
        ("I20", "overdue", 3),
    ]


def test_run_writes_the_snapshot_and_queues_one_message_per_person(engine):
    ids = build_ledger(engine)
    result = run_digest(engine, Settings(), CAL, AS_OF, NOW)
    assert result.skipped is None
    assert (result.planned, result.queued) == (8, 8)
    assert result.by_scope == {"company": 3, "region": 2, "rep": 3}
    # company: 6 buckets × CNY, USD; EAST: 6 × CNY; WEST: 6 × CNY, USD
    assert result.snapshot_rows == 12 + 6 + 12
    with read_session(engine) as s:
        rows = s.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        snap = s.exec(select(AgingSnapshot)).all()
    assert len(rows) == 8
    by_person = {r.recipient_id: r for r in rows}
    for code in ("RM-E", "RM-W", "CM", "FIN", "EXE", "E1", "E2", "W1"):
        row = by_person[ids[code]]
        assert row.idempotency_key == f"digest:{ids[code]}:2026-11-25"
        assert row.idempotency_key == digest_key(ids[code], AS_OF)
        assert row.kind == "digest"
        assert row.business_date == AS_OF
        assert row.channel == "console"
        assert row.payload["recipient"]["code"] == code
    # the payload survives the JSON column, Chinese names included
    rm = by_person[ids["RM-E"]].payload
    assert rm["scope_name"] == "华东"
    assert rm["top_overdue"][0]["customer_name"] == "上海浦东新材料有限公司"
    assert _buckets(rm) == EAST_BUCKETS
    # 09:00 in Shanghai is inside the window; in Berlin it is 02:00: wait for 08:00 there
    assert by_person[ids["CM"]].next_attempt_at == NOW
    assert by_person[ids["FIN"]].next_attempt_at == datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    company = {(r.bucket, r.currency): (r.amount, r.invoices) for r in snap if r.region_id is None}
    assert company[("current", "CNY")] == (D("12900.00"), 4)
    assert company[("1_30", "USD")] == (D("1500.00"), 1)
    assert company[("91_180", "CNY")] == (D("0.00"), 0)
    assert company[("over_180", "CNY")] == (D("9000.00"), 2)
    with read_session(engine) as s:
        regions = {r.id: r.code for r in s.exec(select(Region)).all()}
    by_region = {
        (regions[r.region_id], r.bucket, r.currency): r.amount for r in snap if r.region_id
    }
    assert by_region[("EAST", "61_90", "CNY")] == D("8000.00")
    assert ("EAST", "61_90", "USD") not in by_region  # EAST has no dollars
    assert by_region[("WEST", "91_180", "USD")] == D("3000.00")
    assert by_region[("WEST", "61_90", "CNY")] == D("0.00")
    assert {r.taken_at for r in snap} == {NOW}


def test_running_again_the_same_day_queues_nothing_and_replaces_the_snapshot(engine):
    ids = build_ledger(engine)
    run_digest(engine, Settings(), CAL, AS_OF, NOW)
    with write_session(engine) as s:  # I3 paid in full after the first run
        s.get(Invoice, ids["I3"]).open_amount = D("0.00")
    later = NOW + timedelta(hours=2)
    again = run_digest(engine, Settings(), CAL, AS_OF, later)
    assert (again.planned, again.queued) == (8, 0)
    with read_session(engine) as s:
        assert len(s.exec(select(OutboxMessage)).all()) == 8
        snap = s.exec(
            select(AgingSnapshot).where(
                AgingSnapshot.region_id.is_(None), AgingSnapshot.bucket == "61_90"
            )
        ).all()
        assert len(s.exec(select(AgingSnapshot)).all()) == 30  # replaced, not added
    # the date's snapshot is the second run's
    assert [(r.currency, r.amount, r.taken_at) for r in sorted(snap, key=lambda r: r.currency)] == [
        ("CNY", D("0.00"), later),
        ("USD", D("0.00"), later),
    ]


def test_change_since_the_previous_business_day_and_the_trend_come_from_snapshots(engine):
    ids = build_ledger(engine)
    with write_session(engine) as s:  # open yesterday, paid before today's run
        s.add(Invoice(number="I15", customer_id=ids["C2"], issue_date=date(2026, 8, 20),
                      due_date=date(2026, 9, 30), amount=D("1200.00"),
                      open_amount=D("1200.00"), currency="CNY"))  # fmt: skip
    yesterday = run_digest(engine, Settings(), CAL, YESTERDAY, _utc(YESTERDAY, 1))
    assert yesterday.snapshot_rows == 30
    with write_session(engine) as s:
        invoice = s.exec(select(Invoice).where(Invoice.number == "I15")).one()
        invoice.open_amount = D("0.00")
    # restarted: a new run reads yesterday's totals back from the database
    run_digest(engine, Settings(), CAL, AS_OF, NOW)
    with read_session(engine) as s:
        rows = s.exec(select(OutboxMessage).where(OutboxMessage.business_date == AS_OF)).all()
        payloads = {r.payload["recipient"]["code"]: r.payload for r in rows}
    company = payloads["CM"]
    assert company["change_since"] == "2026-11-24"
    # I15 (55 days past due yesterday, 56 today: 31_60 both days) is gone; nothing else
    # changed buckets overnight
    zero = {"CNY": "0.00", "USD": "0.00"}
    assert _buckets(company, "change") == {
        "current": zero,
        "1_30": zero,
        "31_60": {"CNY": "-1200.00", "USD": "0.00"},
        "61_90": zero,
        "91_180": zero,
        "over_180": zero,
    }
    # overdue yesterday 26500 + 1200 = 27700
    assert company["trend"] == [
        {"date": "2026-11-24", "overdue": {"CNY": "27700.00", "USD": "4500.00"}},
        {"date": "2026-11-25", "overdue": {"CNY": "26500.00", "USD": "4500.00"}},
    ]
    east = payloads["RM-E"]
    assert _buckets(east, "change")["31_60"] == {"CNY": "-1200.00"}
    assert _buckets(east, "change")["current"] == {"CNY": "0.00"}
    assert east["trend"] == [
        {"date": "2026-11-24", "overdue": {"CNY": "25700.00"}},
        {"date": "2026-11-25", "overdue": {"CNY": "24500.00"}},
    ]
    west = payloads["RM-W"]
    assert _buckets(west, "change")["over_180"] == {"CNY": "0.00", "USD": "0.00"}
    assert [t["date"] for t in west["trend"]] == ["2026-11-24", "2026-11-25"]


def test_trend_window_and_an_older_previous_snapshot(engine):
    build_ledger(engine)
    with read_session(engine) as s:
        east = s.exec(select(Region).where(Region.code == "EAST")).one().id

    def totals(overdue: str) -> dict:
        return {
            None: {"current": {"CNY": (D("1.00"), 1)}, "over_180": {"CNY": (D(overdue), 1)}},
            east: {"1_30": {"CNY": (D(overdue), 1)}},
        }

    with write_session(engine) as s:
        write_snapshot(s, date(2026, 10, 26), totals("100.00"), NOW)  # 30 days back: out
        write_snapshot(s, date(2026, 10, 27), totals("200.00"), NOW)  # 29 days back: in
        write_snapshot(s, date(2026, 11, 20), totals("300.00"), NOW)  # last before today
    payloads = _by_code(_plan(engine).digests)
    company = payloads["CM"]
    assert company["change_since"] == "2026-11-20"  # the service was down since Friday
    # over_180 today 9000 vs 300; current 12900 vs 1.00; buckets missing then count as 0
    assert _buckets(company, "change")["over_180"] == {"CNY": "8700.00", "USD": "0.00"}
    assert _buckets(company, "change")["current"] == {"CNY": "12899.00", "USD": "0.00"}
    assert _buckets(company, "change")["61_90"] == {"CNY": "8000.00", "USD": "0.00"}
    # overdue = every bucket but current; USD absent then: 0.00
    assert company["trend"] == [
        {"date": "2026-10-27", "overdue": {"CNY": "200.00", "USD": "0.00"}},
        {"date": "2026-11-20", "overdue": {"CNY": "300.00", "USD": "0.00"}},
        {"date": "2026-11-25", "overdue": {"CNY": "26500.00", "USD": "4500.00"}},
    ]
    assert [t["overdue"] for t in payloads["RM-E"]["trend"]] == [
        {"CNY": "200.00"},
        {"CNY": "300.00"},
        {"CNY": "24500.00"},
    ]
    # WEST had no rows in those snapshots: zero then
    assert [t["overdue"] for t in payloads["RM-W"]["trend"]][:2] == [
        {"CNY": "0.00", "USD": "0.00"},
        {"CNY": "0.00", "USD": "0.00"},
    ]
    short = _by_code(_plan(engine, Settings(digest={"trend_days": 10})).digests)["CM"]
    assert [t["date"] for t in short["trend"]] == ["2026-11-20", "2026-11-25"]


def test_an_empty_ledger_still_records_the_days_snapshot(engine):
    result = run_digest(engine, Settings(), CAL, AS_OF, NOW)
    assert (result.planned, result.queued) == (0, 0)
    with read_session(engine) as s:
        rows = s.exec(select(AgingSnapshot)).all()
    # the company's buckets in the reporting currency, zeros: the date is on record
    assert sorted((r.bucket, r.currency, r.amount, r.region_id) for r in rows) == sorted(
        (k, "CNY", D("0.00"), None) for k in KEYS
    )


def test_days_off_are_skipped(engine):
    build_ledger(engine)
    saturday = date(2026, 11, 28)
    result = run_digest(engine, Settings(), CAL, saturday, _utc(saturday, 1))
    assert result.skipped and result.queued == 0
    national_day = date(2026, 10, 1)
    assert run_digest(engine, Settings(), CAL, national_day, _utc(national_day, 1)).skipped


def test_settings_change_who_gets_what_and_the_provision(engine):
    build_ledger(engine)
    settings = Settings(
        digest={
            "company_roles": ["credit_manager"],
            "send_to_reps": False,
            "top_customers": 1,
            "specific_provision_ratings": [],
        }
    )
    payloads = _by_code(_plan(engine, settings).digests)
    assert set(payloads) == {"CM", "RM-E", "RM-W"}
    cm = payloads["CM"]
    assert [t["customer"] for t in cm["top_overdue"]] == ["C1"]
    assert [t["customer"] for t in payloads["RM-W"]["top_overdue"]] == ["C4"]
    # only blacklisted C5 is specific now: C3's I9 7000 over 180 days at 60 % = 4200, its
    # I10 1000 current at 0 %. CNY 110 + 200 + 800 + 4200 + 2000 (C5) = 7310
    assert cm["provision"]["total"] == {"CNY": "7310.00", "USD": "930.00"}
    assert [s["customer"] for s in cm["provision"]["specific"]] == ["C5"]
    higher = Settings(digest={"provision_percent": [1, 2, 5, 10, 30, "62.5"]})
    cm = _by_code(_plan(engine, higher).digests)["CM"]
    brackets = {b["key"]: b for b in cm["provision"]["brackets"]}
    assert brackets["current"]["rate"] == "0.01"
    assert brackets["current"]["provision"] == {"CNY": "119.00", "USD": "0.00"}  # 11900 × 1 %
    assert brackets["over_180"]["rate"] == "0.625"
    # 119 + 110 + 200 + 800 + 10000 = 11229
    assert cm["provision"]["total"] == {"CNY": "11229.00", "USD": "930.00"}


def test_long_lists_are_capped_but_counted(engine):
    ids = build_ledger(engine)
    extra = LIST_LIMIT + 5
    with write_session(engine) as s:
        for n in range(extra):
            created = _utc(YESTERDAY, 2) + timedelta(minutes=n)
            s.add(ShipmentRequest(customer_id=ids["C6"], order_ref=f"X-{n:03d}",
                                  amount=D("1.00"), currency="CNY", requested_by_id=ids["W2"],
                                  created_at=created))  # fmt: skip
    payloads = _by_code(_plan(engine).digests)
    cm = payloads["CM"]
    assert len(cm["pending_approvals"]) == LIST_LIMIT
    assert cm["counts"]["pending_approvals"] == extra + 2
    w2 = payloads["W2"]["your_day"]  # now W2 has a day
    assert len(w2["pending_requests"]) == LIST_LIMIT
    assert w2["counts"]["pending_requests"] == extra


def test_build_digests_writes_nothing(engine):
    build_ledger(engine)
    with read_session(engine) as s:
        digests = build_digests(s, Settings(), AS_OF, NOW, calendar=CAL)
    assert len(digests) == 8
    with read_session(engine) as s:
        assert s.exec(select(AgingSnapshot)).all() == []
        assert s.exec(select(OutboxMessage)).all() == []


def test_the_digest_job_runs_on_working_days_and_is_caught_up_after_downtime(engine):
    ids = build_ledger(engine)
    # Wednesday 10:00 in Shanghai: past the 08:30 scan and the 09:00 digest, nothing ran
    rt = Runtime(engine, Settings(), FakeClock(datetime(2026, 11, 25, 2, 0, tzinfo=UTC)), {})
    install(rt)
    try:
        assert digest_missed(rt)
        assert asyncio.run(catch_up(rt)) is True  # the scan, then the digest
        assert digest_missed(rt) is False
        with read_session(engine) as s:
            keys = set(
                s.exec(
                    select(OutboxMessage.idempotency_key).where(OutboxMessage.kind == "digest")
                ).all()
            )
        assert keys == {
            f"digest:{ids[c]}:2026-11-25"
            for c in ("RM-E", "RM-W", "CM", "FIN", "EXE", "E1", "E2", "W1")
        }
        assert asyncio.run(tasks.digest_job()) == 0  # again: no hooks, nothing new queued
        with read_session(engine) as s:
            assert (
                len(s.exec(select(OutboxMessage).where(OutboxMessage.kind == "digest")).all()) == 8
            )
        rt.clock.set(datetime(2026, 11, 28, 2, 0, tzinfo=UTC))  # Saturday
        assert digest_missed(rt) is False
        assert asyncio.run(tasks.digest_job()) == 0
        with read_session(engine) as s:
            dates = {r.business_date for r in s.exec(select(AgingSnapshot)).all()}
        assert dates == {AS_OF}
    finally:
        install(None)


def test_no_digest_catch_up_before_its_time(engine):
    # 08:45 in Shanghai: the scan (08:30) is due, the digest (09:00) not yet
    rt = Runtime(engine, Settings(), FakeClock(datetime(2026, 11, 25, 0, 45, tzinfo=UTC)), {})
    assert digest_missed(rt) is False


# --- settings ------------------------------------------------------------------------------------


def test_digest_settings_defaults():
    cfg = Settings().digest
    assert cfg.provision_percent == [D(0), D(2), D(5), D(10), D(30), D(60)]
    assert cfg.specific_provision_ratings == ["H"]
    assert (cfg.top_customers, cfg.trend_days, cfg.send_to_reps) == (10, 30, True)
    assert cfg.company_roles == ["credit_manager", "finance", "executive"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[digest]\nprovision_percent = [0, 2, 5]\n",
         "digest.provision_percent: 6 rates needed, one per aging bucket (current, 1-30, "
         "31-60, 61-90, 91-180, >180), got 3"),
        ("[aging]\nbucket_edges = [0, 30]\n",
         "digest.provision_percent: 3 rates needed, one per aging bucket (current, 1-30, >30), "
         "got 6"),
        ("[digest]\nprovision_percent = [0, 2, 5, 10, 30, 160]\n",
         "digest.provision_percent: item 5: must be between 0 and 100 percent"),
        ("[digest]\nprovision_percent = [0, 2, 5, 10, -1, 60]\n",
         "digest.provision_percent: item 4: must be between 0 and 100 percent"),
        ('[digest]\nprovision_percent = [0, 2, 5, 10, "lots", 60]\n',
         "digest.provision_percent: item 4: not a number"),
        ("[digest]\nprovision_percent = [0, 2, 5, 10, true, 60]\n",
         "digest.provision_percent: item 4: must be a number of percent"),
        ('[digest]\nspecific_provision_ratings = ["Z"]\n',
         "digest.specific_provision_ratings: unknown rating(s) 'Z'"),
        ('[digest]\ncompany_roles = ["rep"]\n', "digest.company_roles: 'rep' cannot be a company"),
        ('[digest]\ncompany_roles = ["regional_manager"]\n',
         "digest.company_roles: 'regional_manager' cannot be a company role"),
        ('[digest]\ncompany_roles = ["boss"]\n', "digest.company_roles: unknown role 'boss'"),
        ("[digest]\ntop_customers = 0\n", "digest.top_customers"),
        ("[digest]\ntrend_days = 1\n", "digest.trend_days"),
        ("[digest]\nsend_to_rep = true\n", "digest.send_to_rep: unknown key"),
    ],
)  # fmt: skip
def test_bad_digest_settings_name_the_key(tmp_path, monkeypatch, toml, message):
    for key in [k for k in os.environ if k.startswith("CREDITBOT_")]:
        monkeypatch.delenv(key)
    path = tmp_path / "config.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert message in str(err.value)


def test_digest_settings_from_the_file_and_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text(
        '[digest]\nprovision_percent = [0, 1.5, "5", 10, 30, 60]\n'
        'specific_provision_ratings = ["h", "x"]\n',
        encoding="utf-8",
    )
    cfg = load_settings(path).digest
    assert cfg.provision_percent[1] == D("1.5")  # exactly, not a float
    assert cfg.specific_provision_ratings == ["H", "X"]
    monkeypatch.setenv("CREDITBOT_DIGEST__SEND_TO_REPS", "false")
    monkeypatch.setenv("CREDITBOT_DIGEST__TOP_CUSTOMERS", "5")
    cfg = load_settings(path).digest
    assert (cfg.send_to_reps, cfg.top_customers) == (False, 5)
