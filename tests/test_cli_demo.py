"""`creditbot demo` then `creditbot scan --dry-run --format json` on the same config file."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from bot.cli import app
from credit.settings import Settings
from credit.store.db import make_engine, read_session
from credit.store.models import Customer, Invoice, Person, Region

AS_OF = "2026-03-16"


@pytest.fixture
def config(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    for var in ("CREDITBOT_CONFIG", "CREDITBOT_DATABASE__URL"):
        monkeypatch.delenv(var, raising=False)
    db = tmp_path / "data" / "demo.db"
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{db.as_posix()}"\n', encoding="utf-8")
    return path, f"sqlite:///{db.as_posix()}"


def test_demo_then_scan_json(config):
    path, url = config
    runner = CliRunner()

    demo = runner.invoke(app, ["--config", str(path), "demo", "--as-of", AS_OF])
    assert demo.exit_code == 0, demo.output
    assert "300 customers" in demo.output and "5000 invoices" in demo.output

    scan = runner.invoke(
        app, ["--config", str(path), "scan", "--as-of", AS_OF, "--dry-run", "--format", "json"]
    )
    assert scan.exit_code == 0, scan.output
    reminders = json.loads(scan.stdout)

    tiers = Settings().tier_table
    assert isinstance(reminders, list) and reminders
    assert {r["tier"] for r in reminders} == set(tiers.names)
    for r in reminders:
        assert {"recipient", "role", "tier", "invoices"} <= r.keys()
        assert r["invoices"], r["recipient"]
        for line in r["invoices"]:
            assert {"number", "customer", "open_amount", "currency", "days"} <= line.keys()
            assert Decimal(line["open_amount"]) > 0
            assert tiers.by_name(r["tier"]).contains(line["days"])
            if r["tier"] == "due_soon":
                assert line["days"] <= 0
            if r["tier"] == "overdue_6m_plus":
                assert line["days"] > 180
    due_soon_days = [
        ln["days"] for r in reminders if r["tier"] == "due_soon" for ln in r["invoices"]
    ]
    assert any(d < 0 for d in due_soon_days)

    engine = make_engine(url)
    try:
        with read_session(engine) as s:
            rep_of = dict(
                s.exec(
                    select(Customer.code, Person.code).join(Person, Person.id == Customer.rep_id)
                ).all()
            )
            region_of = dict(
                s.exec(
                    select(Customer.code, Region.code).join(Region, Region.id == Customer.region_id)
                ).all()
            )
            manager_region = dict(
                s.exec(
                    select(Person.code, Region.code)
                    .join(Region, Region.id == Person.region_id)
                    .where(Person.role == "regional_manager")
                ).all()
            )
            invoices = {
                number: (customer, open_amount, currency)
                for number, customer, open_amount, currency in s.exec(
                    select(Invoice.number, Customer.code, Invoice.open_amount, Invoice.currency)
                    .join(Customer, Customer.id == Invoice.customer_id)
                    .where(Invoice.open_amount > 0)
                ).all()
            }
    finally:
        engine.dispose()

    reps_told = set()
    for r in reminders:
        for line in r["invoices"]:
            customer, open_amount, currency = invoices[line["number"]]
            assert line["customer"] == customer
            assert Decimal(line["open_amount"]) == open_amount
            assert line["currency"] == currency
            if r["role"] == "rep":  # a rep hears only about their own customers
                assert rep_of[customer] == r["recipient"], (r["recipient"], line)
            if r["role"] == "regional_manager":  # a manager only about their region's
                assert region_of[customer] == manager_region[r["recipient"]]
        if r["role"] == "rep":
            reps_told.add(r["recipient"])
    assert len(reps_told) >= 12
