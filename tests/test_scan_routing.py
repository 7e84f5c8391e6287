"""Who hears of an invoice when the usual person cannot."""

from __future__ import annotations

from datetime import date

from sqlmodel import select

from credit.settings import Settings
from credit.store.db import read_session, write_session
from credit.store.demo import build_demo_ledger
from credit.store.escalation import plan_scan
from credit.store.models import Customer, Person

AS_OF = date(2026, 11, 25)


def test_a_departed_reps_rep_only_reminders_go_to_the_regions_managers(engine):
    settings = Settings()
    with write_session(engine) as s:
        build_demo_ledger(s, as_of=AS_OF, seed=5, settings=settings)
    with read_session(engine) as s:
        before = plan_scan(s, settings, AS_OF, window_days=7)
    rep_only = {"due_soon", "overdue"}
    # a rep with due_soon/overdue lines this week
    busy = next(
        r
        for r in before.reminders
        if r.role == "rep" and any(x.tier in rep_only and x.count for x in r.sections)
    )
    with write_session(engine) as s:
        rep = s.exec(select(Person).where(Person.code == busy.code)).one()
        rep.active = False
        s.add(rep)
        region_id = rep.region_id
        their_customers = set(s.exec(select(Customer.code).where(Customer.rep_id == rep.id)))
        managers = set(
            s.exec(
                select(Person.code).where(
                    Person.role == "regional_manager", Person.region_id == region_id
                )
            )
        )
    with read_session(engine) as s:
        after = plan_scan(s, settings, AS_OF, window_days=7)

    assert busy.code not in {r.code for r in after.reminders}
    moved = {x.tier: x.count for x in busy.sections if x.tier in rep_only}
    for manager in managers:
        old = next((r for r in before.reminders if r.code == manager), None)
        new = next(r for r in after.reminders if r.code == manager)
        for tier, count in moved.items():
            old_count = sum(x.count for x in old.sections if x.tier == tier) if old else 0
            new_section = next(x for x in new.sections if x.tier == tier)
            assert new_section.count == old_count + count
            assert {ln["customer"] for ln in new_section.lines} & their_customers
