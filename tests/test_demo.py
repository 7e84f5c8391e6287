"""The demo ledger: its size, its spread over ratings and tiers, its money, its determinism.

Every test runs on SQLite and on PostgreSQL (the ``engine`` fixture).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import func
from sqlmodel import Session, select

from credit.settings import Settings
from credit.store.db import read_session, write_session
from credit.store.demo import DemoSummary, build_demo_ledger
from credit.store.models import RATINGS, Customer, Invoice, Payment, Person, PromiseToPay, Region

AS_OF = date(2026, 3, 16)
SETTINGS = Settings()


def _build(engine, **kw) -> DemoSummary:  # type: ignore[no-untyped-def]
    kw.setdefault("settings", SETTINGS)
    with write_session(engine) as session:
        return build_demo_ledger(session, as_of=AS_OF, **kw)


def test_people_regions_and_customers(engine):
    summary = _build(engine)
    with read_session(engine) as s:
        regions = s.exec(select(Region)).all()
        people = s.exec(select(Person)).all()
        customers = s.exec(select(Customer)).all()

    assert len(regions) >= 3
    assert all(r.name for r in regions)
    by_role = defaultdict(list)
    for p in people:
        by_role[p.role].append(p)
    for role in ("credit_manager", "finance", "legal", "executive", "admin"):
        assert by_role[role], f"no {role}"
    reps, managers = by_role["rep"], by_role["regional_manager"]
    assert len(reps) >= 12
    manager_of_region = {m.region_id: m.id for m in managers}
    assert set(manager_of_region) == {r.id for r in regions}
    reps_per_region = Counter(r.region_id for r in reps)
    assert all(reps_per_region[r.id] >= 3 for r in regions)
    assert all(r.manager_id == manager_of_region[r.region_id] for r in reps)
    assert {p.locale for p in people} == {"en", "zh_CN"}
    assert {p.time_zone for p in people} == {"Asia/Shanghai"}
    assert all(re.fullmatch(r"[a-z]+\.[a-z]+@[a-z.-]+", p.email or "") for p in people)
    assert all(p.slack_user_id or p.telegram_chat_id for p in people)
    assert all(re.fullmatch(r"U0[A-Z0-9]{8}", p.slack_user_id) for p in people if p.slack_user_id)
    assert any(p.telegram_chat_id for p in people)
    assert all(re.search(r"[\u4e00-\u9fff]", p.name) for p in people)

    assert len(customers) == 300
    assert len({c.name for c in customers}) == 300
    assert all(c.name.endswith("有限公司") for c in customers)
    assert all(re.fullmatch(r"C\d{4}", c.code) for c in customers)
    ratings = Counter(c.rating for c in customers)
    assert set(ratings) == set(RATINGS)
    assert ratings["B"] + ratings["C"] > len(customers) // 2
    assert all(c.blacklisted == (c.rating == "H") for c in customers)
    assert all(c.credit_hold for c in customers if c.rating == "H")
    held = [c for c in customers if c.credit_hold]
    assert all(c.credit_hold_reason and c.credit_hold_since for c in held)
    assert any(c.rating != "H" for c in held)
    assert {c.payment_terms_days for c in customers} == {30, 45, 60, 90}
    on_probation = [c for c in customers if c.probation_until is not None]
    assert on_probation and all(c.probation_until > AS_OF for c in on_probation)
    assert all(isinstance(c.credit_limit, Decimal) for c in customers)
    assert all(c.credit_limit == 0 for c in on_probation)  # cash before delivery
    assert all(c.credit_limit > 0 for c in customers if c.rating in "AB" and not c.probation_until)
    assert all(c.credit_limit == 0 for c in customers if c.rating in "XH")
    rep_region = {p.id: p.region_id for p in reps}
    assert all(rep_region[c.rep_id] == c.region_id for c in customers)

    assert (summary.regions, summary.people, summary.reps, summary.customers) == (
        len(regions),
        len(people),
        len(reps),
        len(customers),
    )
    assert "300 customers" in str(summary) and "5000 invoices" in str(summary)


def test_every_tier_has_plenty_of_open_invoices(engine):
    _build(engine)
    tiers = SETTINGS.tier_table
    with read_session(engine) as s:
        rows = s.exec(
            select(Invoice.due_date, Customer.rating, Invoice.number)
            .join(Customer, Customer.id == Invoice.customer_id)
            .where(Invoice.open_amount > 0)
        ).all()

    invoices_per_tier: dict[str, set[str]] = defaultdict(set)
    for due, _, number in rows:
        tier = tiers.tier_of(due, AS_OF)
        if tier is not None:
            invoices_per_tier[tier.name].add(number)
    assert set(invoices_per_tier) == set(tiers.names)
    assert all(len(numbers) >= 100 for numbers in invoices_per_tier.values()), {
        k: len(v) for k, v in invoices_per_tier.items()
    }

    # Open invoices not yet in any tier (due more than 30 days ahead).
    not_yet = [due for due, _, _ in rows if tiers.tier_of(due, AS_OF) is None]
    assert len(not_yet) >= 100 and all(due > AS_OF + timedelta(days=30) for due in not_yet)

    # Worse ratings carry the old debt.
    def share_over_180(grades: str) -> float:
        mine = [due for due, rating, _ in rows if rating in grades]
        return sum((AS_OF - due).days > 180 for due in mine) / len(mine)

    assert share_over_180("XH") > 2 * share_over_180("D") > 2 * share_over_180("AB")


def test_money_adds_up_with_payments_disputes_and_promises(engine):
    summary = _build(engine)
    with read_session(engine) as s:
        invoices = s.exec(select(Invoice)).all()
        paid_per_invoice = dict(
            s.exec(
                select(Payment.invoice_id, func.sum(Payment.amount)).group_by(Payment.invoice_id)
            ).all()
        )
        payments = s.exec(select(Payment)).all()
        promises = s.exec(select(PromiseToPay)).all()
        terms = dict(s.exec(select(Customer.id, Customer.payment_terms_days)).all())

    assert len(invoices) == 5000
    assert all(re.fullmatch(r"INV-20\d\d-\d{6}", inv.number) for inv in invoices)
    assert all(inv.number[4:8] == str(inv.issue_date.year) for inv in invoices)
    cent = Decimal("0.01")
    for inv in invoices:
        assert isinstance(inv.amount, Decimal) and inv.amount == inv.amount.quantize(cent)
        assert Decimal("0") <= inv.open_amount <= inv.amount
        assert inv.amount - inv.open_amount == paid_per_invoice.get(inv.id, Decimal("0.00"))
        assert inv.issue_date == inv.due_date - timedelta(days=terms[inv.customer_id])
        assert inv.issue_date <= AS_OF
    cny = [inv.amount for inv in invoices if inv.currency == "CNY"]
    assert min(cny) >= Decimal("5000.00") and max(cny) <= Decimal("800000.00")

    by_id = {inv.id: inv for inv in invoices}
    fully_paid = [inv for inv in invoices if inv.open_amount == 0]
    partly_paid = [inv for inv in invoices if 0 < inv.open_amount < inv.amount]
    disputed = [inv for inv in invoices if inv.disputed]
    assert len(fully_paid) >= 500 and len(partly_paid) >= 100
    assert len(disputed) >= 50 and all(inv.dispute_reason for inv in disputed)
    assert all(inv.open_amount > 0 for inv in disputed)
    assert all(p.invoice_id is not None and p.amount > 0 for p in payments)
    assert all(p.currency == by_id[p.invoice_id].currency for p in payments)
    assert all(p.paid_on <= AS_OF for p in payments)
    assert len({p.reference for p in payments}) == len(payments)

    open_promises = [p for p in promises if p.status == "open"]
    assert len(open_promises) >= 50
    assert any(p.promised_date < AS_OF for p in open_promises)  # broken-looking
    assert any(p.promised_date >= AS_OF for p in open_promises)
    for p in open_promises:
        inv = by_id[p.invoice_id]
        assert inv.open_amount > 0 and 0 < p.amount <= inv.open_amount
        assert p.currency == inv.currency and p.recorded_by_id is not None
        assert abs((p.promised_date - AS_OF).days) <= 30
        assert p.created_at.date() <= AS_OF

    assert summary.invoices == len(invoices)
    assert summary.paid_invoices == len(fully_paid)
    assert summary.open_invoices == len(invoices) - len(fully_paid)
    assert summary.disputed == len(disputed)
    assert summary.payments == len(payments)
    assert summary.promises == len(promises)


def _snapshot(engine, seed: int) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    """Build the ledger in a transaction, read it back, roll it back."""
    with Session(engine) as s:
        build_demo_ledger(s, as_of=AS_OF, seed=seed, settings=SETTINGS)
        rows = s.exec(
            select(
                Invoice.number,
                Invoice.amount,
                Invoice.open_amount,
                Invoice.due_date,
                Invoice.disputed,
                Customer.code,
                Customer.name,
                Customer.rating,
            )
            .join(Customer, Customer.id == Invoice.customer_id)
            .order_by(Invoice.number)
        ).all()
        people = s.exec(select(Person.code, Person.name, Person.slack_user_id)).all()
        s.rollback()
    return [tuple(r) for r in rows] + sorted(tuple(p) for p in people)


def test_same_seed_same_ledger_other_seed_other_ledger(engine):
    first = _snapshot(engine, 7)
    assert _snapshot(engine, 7) == first
    other = _snapshot(engine, 8)
    assert other != first
    amounts = {row[0]: row[1] for row in first if str(row[0]).startswith("INV-")}
    other_amounts = {row[0]: row[1] for row in other if str(row[0]).startswith("INV-")}
    shared = amounts.keys() & other_amounts.keys()
    assert sum(amounts[n] != other_amounts[n] for n in shared) > len(shared) // 2


def test_follows_a_configured_tier_table_and_smaller_sizes(engine):
    def tier(name: str, lo: int, hi: int | None, *notify: str) -> dict[str, object]:
        return {"name": name, "min_days": lo, "max_days": hi, "notify": list(notify),
                "repeat_every_days": 7}  # fmt: skip

    settings = Settings(
        tiers=[
            tier("heads_up", -7, 0, "rep"),
            tier("late", 1, 14, "rep"),
            tier("chase", 15, 44, "rep"),
            tier("escalate", 45, 89, "rep", "regional_manager"),
            tier("stop", 90, 364, "regional_manager", "credit_manager"),
            tier("write_off", 365, None, "legal"),
        ],
        policy={"probation_months": 0},
    )
    summary = _build(engine, settings=settings, customers=40, invoices=600)
    assert (summary.customers, summary.invoices) == (40, 600)
    with read_session(engine) as s:
        ratings = set(s.exec(select(Customer.rating)).all())
        probation = s.exec(select(Customer).where(Customer.probation_until.is_not(None))).all()
        open_rows = s.exec(
            select(Invoice.due_date, Invoice.number).where(Invoice.open_amount > 0)
        ).all()
    open_dues = [due for due, _ in open_rows]
    per_tier: dict[str, set[str]] = defaultdict(set)
    for due, number in open_rows:
        tier = settings.tier_table.tier_of(due, AS_OF)
        if tier is not None:
            per_tier[tier.name].add(number)
    assert set(per_tier) == set(settings.tier_table.names)
    assert all(len(numbers) >= 10 for numbers in per_tier.values())
    assert any(settings.tier_table.tier_of(due, AS_OF) is None for due in open_dues)
    assert ratings == set(RATINGS)
    assert probation == []


_DIGEST = """
import hashlib
from datetime import date
from sqlmodel import SQLModel, select
import credit.store.models as m
from credit.settings import Settings
from credit.store.db import make_engine, read_session, write_session
from credit.store.demo import build_demo_ledger
engine = make_engine("sqlite://")
SQLModel.metadata.create_all(engine)
with write_session(engine) as s:
    build_demo_ledger(s, as_of=date(2026, 3, 16), settings=Settings(), customers=60, invoices=800)
digest = hashlib.sha256()
with read_session(engine) as s:
    for model in (m.Region, m.Person, m.Customer, m.Invoice, m.Payment, m.PromiseToPay):
        for row in s.exec(select(model).order_by(model.id)).all():
            digest.update(repr(sorted(row.model_dump().items())).encode())
print(digest.hexdigest())
"""


def test_same_ledger_ids_included_in_another_process():
    """No set or dict iteration order (hash seed) leaks into the ledger, not even into ids."""
    import os
    import subprocess
    import sys

    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", _DIGEST], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1
