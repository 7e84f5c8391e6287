"""The escalation commands end to end through the CLI, on a demo ledger in a SQLite file.

``demo`` → ``scan`` (twice: the second queues nothing) → ``outbox`` → ``dispatch --once``
(console transport) → ``outbox --status sent``, then what people do about a reminder:
``ack`` (the customer's rep may; a rep of another region is refused, exit code 3, audited),
``promise`` and ``dispute``.

The commands read the real clock (``bot.cli._now`` and the dispatcher's ``SystemClock``).
Rows are held until the recipient's send window on a CN working day, so on a real weekend
or holiday nothing would be due; the test therefore fixes the clock at Wednesday 2026-11-25
10:00 Shanghai time — the demo's business date — and the dispatcher's sleeps move that
fixed clock instead of waiting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

import jobs.clock
from bot import cli
from bot.cli import app
from credit.store.db import make_engine, read_session
from credit.store.models import (
    AuditLog,
    Customer,
    Invoice,
    InvoiceAck,
    Person,
    PromiseToPay,
    Region,
)

AS_OF = date(2026, 11, 25)
NOW = datetime.combine(AS_OF, time(10, 0), ZoneInfo("Asia/Shanghai")).astimezone(UTC)


@pytest.fixture
def cli_env(tmp_path, monkeypatch) -> Iterator[tuple[Any, Engine]]:  # type: ignore[no-untyped-def]
    for var in ("CREDITBOT_CONFIG", "CREDITBOT_DATABASE__URL"):
        monkeypatch.delenv(var, raising=False)
    db = tmp_path / "escalation.db"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{db.as_posix()}"\n\n'
        '[calendar]\nholiday_country = "CN"\n'
        'send_window_start = "00:00"\nsend_window_end = "23:59"\n\n'
        '[outbox]\nchannels = ["console"]\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(cli, "_now", lambda: NOW)
    monkeypatch.setattr(jobs.clock, "SystemClock", lambda: jobs.clock.FakeClock(NOW))
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, ["--config", str(config), *args])

    engine = make_engine(f"sqlite:///{db.as_posix()}")
    yield run, engine
    engine.dispose()


def _pick(engine: Engine) -> dict[str, str]:
    """From the demo book: three open, undisputed invoices of customers of one rep — one in
    overdue_1m (to acknowledge), two overdue (to promise and to dispute) — and a rep of
    another region."""
    with read_session(engine) as s:
        rows = s.execute(
            select(Invoice.number, Invoice.due_date, Person.code, Customer.region_id)
            .join(Customer, Customer.id == Invoice.customer_id)
            .join(Person, Person.id == Customer.rep_id)
            .where(Invoice.open_amount > 0, Invoice.disputed.is_(False))
            .order_by(Invoice.number)
        ).all()
        in_1m = [r for r in rows if 30 <= (AS_OF - r.due_date).days <= 59]
        number, _, rep, region = in_1m[0]
        overdue = [
            r.number
            for r in rows
            if r.code == rep and r.number != number and 1 <= (AS_OF - r.due_date).days <= 180
        ]
        promised = s.execute(
            select(PromiseToPay.invoice_id).where(PromiseToPay.status == "open")
        ).scalars()
        with_promise = set(
            s.execute(select(Invoice.number).where(Invoice.id.in_(list(promised)))).scalars()
        )
        overdue = [n for n in overdue if n not in with_promise]
        other = (
            s.execute(
                select(Person.code)
                .where(Person.role == "rep", Person.region_id != region)
                .order_by(Person.code)
            )
            .scalars()
            .first()
        )
    assert len(overdue) >= 2 and other is not None
    return {
        "ack": number,
        "promise": overdue[0],
        "dispute": overdue[1],
        "rep": rep,
        "other_rep": other,
    }


def test_demo_scan_outbox_dispatch(cli_env):
    run, engine = cli_env
    demo = run("demo", "--as-of", AS_OF.isoformat())
    assert demo.exit_code == 0, demo.output

    first = run("scan", "--as-of", AS_OF.isoformat(), "--format", "json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["date"] == AS_OF.isoformat() and summary["skipped"] is None
    queued = summary["queued"]
    assert queued > 0 and queued == summary["people"]
    assert summary["credit_holds_on"]  # the demo book has customers 60+ days overdue

    again = run("scan", "--as-of", AS_OF.isoformat(), "--format", "json")
    assert again.exit_code == 0, again.output
    repeat = json.loads(again.stdout)
    assert (repeat["queued"], repeat["credit_holds_on"], repeat["promises_broken"]) == (0, [], 0)

    listed = run("outbox", "--format", "json", "--limit", "1000")
    assert listed.exit_code == 0, listed.output
    pending = json.loads(listed.stdout)
    assert len(pending) == queued
    assert {r["status"] for r in pending} == {"pending"}
    assert {r["kind"] for r in pending} == {"reminder"}
    assert {r["channel"] for r in pending} == {"console"}
    assert {r["business_date"] for r in pending} == {AS_OF.isoformat()}
    assert len({r["key"] for r in pending}) == queued
    assert all(r["key"] == f"reminder:{r['recipient_id']}:{AS_OF}" for r in pending)
    # held for the send window that is open at the (fixed) scan time: due at once
    assert all(datetime.fromisoformat(r["next_attempt_at"]) == NOW for r in pending)

    sent_now = run("dispatch", "--once")
    assert sent_now.exit_code == 0, sent_now.output
    assert sent_now.stdout.count(">>> to ") == queued
    report = " ".join(sent_now.stderr.split())  # Rich wraps long lines
    assert f"'claimed': {queued}, 'sent': {queued}," in report
    assert "'failed': 0, 'dead': 0" in report

    sent = json.loads(
        run("outbox", "--status", "sent", "--format", "json", "--limit", "1000").stdout
    )
    assert sorted(r["id"] for r in sent) == sorted(r["id"] for r in pending)
    assert all(r["platform_ref"]["channel"] == "console" for r in sent)
    assert all(r["attempts"] == 1 and r["sent_at"] for r in sent)
    assert sorted(r["platform_ref"]["seq"] for r in sent) == list(range(1, queued + 1))
    still = json.loads(run("outbox", "--status", "pending", "--format", "json").stdout)
    assert still == []

    # nothing left to send: a second dispatch sends nothing
    idle = run("dispatch", "--once")
    assert idle.exit_code == 0 and ">>> to " not in idle.stdout
    assert "'claimed': 0, 'sent': 0," in " ".join(idle.stderr.split())

    with read_session(engine) as s:
        names = {
            p.id: p.name
            for p in s.execute(
                select(Person).where(Person.id.in_([r["recipient_id"] for r in sent]))
            ).scalars()
        }
    for name in names.values():
        assert f">>> to {name} " in sent_now.stdout


def test_outbox_refuses_an_unknown_status(cli_env):
    run, _ = cli_env
    assert run("demo", "--as-of", AS_OF.isoformat()).exit_code == 0
    bad = run("outbox", "--status", "lost", "--format", "json")
    assert bad.exit_code == 2
    assert "unknown status" in bad.stderr


def test_ack_promise_dispute_by_the_rep_and_a_refusal(cli_env):
    run, engine = cli_env
    assert run("demo", "--as-of", AS_OF.isoformat()).exit_code == 0
    pick = _pick(engine)

    ok = run("ack", pick["ack"], "--as", pick["rep"])
    assert ok.exit_code == 0, ok.output
    assert "acknowledged (overdue_1m)" in ok.stdout
    again = run("ack", pick["ack"], "--as", pick["rep"])
    assert again.exit_code == 0 and "already acknowledged in overdue_1m" in again.stdout

    refused = run("ack", pick["promise"], "--as", pick["other_rep"])
    assert refused.exit_code == 3, refused.output
    assert "not allowed" in refused.stderr

    future = (AS_OF + timedelta(days=10)).isoformat()
    promised = run("promise", pick["promise"], "--as", pick["rep"], "--date", future)
    assert promised.exit_code == 0, promised.output
    assert f"by {future}" in promised.stdout
    past = run("promise", pick["promise"], "--as", pick["rep"], "--date", "2026-11-01")
    assert past.exit_code == 2 and "in the past" in past.stderr

    disputed = run("dispute", pick["dispute"], "--as", pick["rep"], "--reason", "货物破损 5 件")
    assert disputed.exit_code == 0, disputed.output
    assert "disputed: 货物破损 5 件" in disputed.stdout
    no_reason = run("dispute", pick["dispute"], "--as", pick["rep"], "--reason", "  ")
    assert no_reason.exit_code == 2

    with read_session(engine) as s:
        acks = s.execute(
            select(Invoice.number, InvoiceAck.tier, Person.code, InvoiceAck.acknowledged_at)
            .join(Invoice, Invoice.id == InvoiceAck.invoice_id)
            .join(Person, Person.id == InvoiceAck.person_id)
        ).all()
        promise = s.execute(
            select(PromiseToPay)
            .join(Invoice, Invoice.id == PromiseToPay.invoice_id)
            .where(Invoice.number == pick["promise"], PromiseToPay.status == "open")
        ).scalar_one()
        invoice = s.execute(select(Invoice).where(Invoice.number == pick["dispute"])).scalar_one()
        audits = s.execute(
            select(AuditLog.actor, AuditLog.action, AuditLog.entity_id, AuditLog.at)
            .where(AuditLog.entity == "invoice")
            .order_by(AuditLog.id)
        ).all()
        regions = dict(
            s.execute(
                select(Person.code, Region.code).join(Region, Region.id == Person.region_id)
            ).all()
        )
    assert regions[pick["rep"]] != regions[pick["other_rep"]]
    assert [tuple(a[:3]) for a in acks] == [(pick["ack"], "overdue_1m", pick["rep"])]
    assert acks[0].acknowledged_at == NOW
    assert (promise.promised_date.isoformat(), promise.amount > 0) == (future, True)
    assert (invoice.disputed, invoice.dispute_reason) == (True, "货物破损 5 件")

    by_action = [(a.actor, a.action, a.entity_id) for a in audits]
    assert (pick["rep"], "ack", pick["ack"]) in by_action
    assert (pick["rep"], "promise", pick["promise"]) in by_action
    assert (pick["rep"], "dispute", pick["dispute"]) in by_action
    refusals = [a for a in by_action if a[1].endswith("refused")]
    assert refusals == [(pick["other_rep"], "ack.refused", pick["promise"])]
    # only one ack was written (the repeat changed nothing), and nothing by the other rep
    assert sum(a[1] == "ack" for a in by_action) == 1
    assert not [a for a in by_action if a[0] == pick["other_rep"] and a[1] == "ack"]
