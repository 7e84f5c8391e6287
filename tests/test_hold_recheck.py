"""Credit holds are re-examined only for customers whose invoices changed (``hold_recheck``).

Triggers on ``invoice`` note the customer of an invoice whose open amount, dispute flag, due
date or customer changes, or that is deleted — however the change is made (our importer,
a service function, or plain SQL from an ERP sync). The scan and the review look only at
those customers, so a day's work does not grow with the number of customers on hold.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text
from sqlmodel import select

from credit.calendar import BusinessCalendar
from credit.settings import Settings
from credit.store.db import read_session, write_session
from credit.store.demo import build_demo_ledger
from credit.store.escalation import lift_credit_holds, run_scan
from credit.store.migrate import downgrade, upgrade
from credit.store.models import Customer, HoldRecheck, Invoice

AS_OF = date(2026, 11, 25)
NEXT = date(2026, 11, 26)


def _now(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, 0, 30, tzinfo=UTC)


def _recheck(engine) -> set[int]:
    with read_session(engine) as s:
        return set(s.exec(select(HoldRecheck.customer_id)))


def _held_with_overdue(engine, as_of: date) -> list[tuple[int, str, list[int]]]:
    """(customer id, code, ids of its undisputed overdue open invoices) for scan holds."""
    out = []
    with read_session(engine) as s:
        held = s.exec(
            select(Customer).where(Customer.credit_hold, Customer.credit_hold_source == "scan")
        ).all()
        for c in held:
            ids = s.exec(
                select(Invoice.id).where(
                    Invoice.customer_id == c.id,
                    Invoice.open_amount > 0,
                    Invoice.disputed == False,  # noqa: E712
                    Invoice.due_date < as_of,
                )
            ).all()
            out.append((c.id, c.code, sorted(ids)))
    return out


def _ids(ids: list[int]) -> str:
    return ",".join(str(int(i)) for i in ids)


def test_paying_every_overdue_item_lifts_the_hold_and_a_part_payment_does_not(engine):
    settings = Settings()
    calendar = BusinessCalendar("CN")
    with write_session(engine) as s:
        build_demo_ledger(s, as_of=AS_OF, seed=3, settings=settings)
    first = run_scan(engine, settings, calendar, AS_OF, _now(AS_OF))
    assert first.holds_on, "the demo ledger has long-overdue customers"
    assert _recheck(engine) == set()  # putting holds on changes no invoice

    held = [h for h in _held_with_overdue(engine, NEXT) if len(h[2]) >= 2]
    (paid_id, paid_code, paid_items), (part_id, part_code, part_items) = held[0], held[1]
    with engine.begin() as conn:  # as an ERP sync would: plain SQL, not our importer
        conn.execute(text(f"UPDATE invoice SET open_amount = 0 WHERE id IN ({_ids(paid_items)})"))
        conn.execute(text(f"UPDATE invoice SET open_amount = 0 WHERE id = {part_items[0]}"))
        # a change of another column (the number) is no reason to look again
        conn.execute(text(f"UPDATE invoice SET number = number || '-x' WHERE id = {held[2][2][0]}"))
    assert _recheck(engine) == {paid_id, part_id}

    second = run_scan(engine, settings, calendar, NEXT, _now(NEXT))
    assert second.holds_off == [paid_code]
    assert _recheck(engine) == set()
    with read_session(engine) as s:
        assert s.get(Customer, part_id).credit_hold
        assert not s.get(Customer, paid_id).credit_hold
    assert part_code not in second.holds_off


def test_a_dispute_or_a_deleted_invoice_also_counts_as_a_change(engine):
    settings = Settings()
    calendar = BusinessCalendar("CN")
    with write_session(engine) as s:
        build_demo_ledger(s, as_of=AS_OF, seed=4, settings=settings)
    run_scan(engine, settings, calendar, AS_OF, _now(AS_OF))
    (a_id, a_code, a_items), (b_id, b_code, b_items) = _held_with_overdue(engine, NEXT)[:2]
    with write_session(engine) as s:
        for inv in s.exec(select(Invoice).where(Invoice.id.in_(a_items))):
            inv.disputed = True
            s.add(inv)
    with engine.begin() as conn:
        for table in ("payment", "promise_to_pay", "invoice_ack", "invoice_snooze"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text(f"DELETE FROM invoice WHERE id IN ({_ids(b_items)})"))
    assert _recheck(engine) == {a_id, b_id}
    with write_session(engine) as s:
        lifted = lift_credit_holds(s, NEXT, "test", _now(NEXT))
    assert sorted(c.code for c in lifted) == sorted([a_code, b_code])


@pytest.mark.parametrize(
    "bare_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_upgrading_to_0005_queues_the_existing_scan_holds_for_one_look(bare_engine):
    settings = Settings()
    upgrade(bare_engine, "0004")
    with write_session(bare_engine) as s:
        build_demo_ledger(s, as_of=AS_OF, seed=3, settings=settings)
    with bare_engine.begin() as conn:  # holds a scan put on before the upgrade
        conn.execute(
            text(
                "UPDATE customer SET credit_hold = :t, credit_hold_source = 'scan' "
                "WHERE id IN (SELECT id FROM customer ORDER BY id LIMIT 3)"
            ),
            {"t": True},
        )
    upgrade(bare_engine)
    queued = _recheck(bare_engine)
    with read_session(bare_engine) as s:
        scan_held = set(
            s.exec(select(Customer.id).where(Customer.credit_hold_source == "scan")).all()
        )
    assert queued == scan_held and len(queued) >= 3
    # and the triggers came with the migration
    with write_session(bare_engine) as s:
        s.exec(text("DELETE FROM hold_recheck"))
        inv = s.exec(select(Invoice).where(Invoice.open_amount > 0).limit(1)).one()
        inv.open_amount = inv.open_amount - 1
        customer_id = inv.customer_id
        s.add(inv)
    assert _recheck(bare_engine) == {customer_id}
    downgrade(bare_engine, "0004")
    with write_session(bare_engine) as s:  # no trigger left behind to write to a lost table
        inv = s.exec(select(Invoice).where(Invoice.open_amount > 0).limit(1)).one()
        inv.open_amount = inv.open_amount - 1
        s.add(inv)
