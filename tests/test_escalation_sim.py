"""200 days of daily scans over a small hand-made ledger, checked day by day.

A clock moves from 2026-06-01 to 2026-12-17. Every calendar day the scan is asked to run at
08:30 Shanghai time (it runs only on CN working days); a few things happen on chosen days —
a promise to pay, a dispute, an acknowledgement, payments, a credit-hold review — and every
outbox row of every day is compared with what a credit controller works out by hand:

* the working days of the range are written out below (weekends, the Dragon Boat and
  Mid-Autumn holidays, the National Day week 10-01..10-07, and the make-up working Sunday
  2026-09-20 and Saturday 2026-10-10);
* the tiers are written out below, and ``_expected_lines`` applies the rule the way the desk
  states it: an invoice has a cadence point on ``due + first day of its tier + k * every``;
  a scan tells people about it when a point of the tier it is in today falls after the
  previous scan and on or before today;
* the invoices' stories (which tier on which date, who hears of them) are also spelled out as
  literal dates for the ones that matter most.

The simulation runs once per database engine (module-scoped); each test checks one aspect.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from sqlmodel import SQLModel

from credit.calendar import BusinessCalendar
from credit.settings import Settings
from credit.store.actions import acknowledge, dispute, promise_to_pay
from credit.store.db import make_engine, read_session, write_session
from credit.store.escalation import review_credit_holds, run_scan
from credit.store.models import (
    AuditLog,
    Customer,
    Invoice,
    InvoiceAck,
    OutboxMessage,
    Person,
    PromiseToPay,
    Region,
)
from tests.conftest import _drop_schema, _pg_schema_engine, require_postgres

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = date(2026, 6, 1)  # a Monday
DAYS = 200
END = date(2026, 12, 17)  # START + 199 days
BEFORE_START = date(2026, 5, 29)  # the working day before START: the first scan looks back to it

# --- the CN calendar of the range, by hand -----------------------------------------------
HOLIDAYS = {
    date(2026, 6, 19),  # Dragon Boat Festival (Friday)
    date(2026, 9, 25),  # Mid-Autumn Festival (Friday)
    *(date(2026, 10, d) for d in range(1, 8)),  # National Day week, Thursday to Wednesday
}
MAKE_UP_WORKING_DAYS = {date(2026, 9, 20), date(2026, 10, 10)}  # a Sunday and a Saturday


def working(day: date) -> bool:
    if day in HOLIDAYS:
        return False
    return day.weekday() < 5 or day in MAKE_UP_WORKING_DAYS


# --- the default tiers, by hand: name, first day, last day, every N days, roles told -------
TIERS = (
    ("due_soon", -30, 0, 7, ("rep",)),
    ("overdue", 1, 29, 3, ("rep",)),
    ("overdue_1m", 30, 59, 3, ("rep", "regional_manager")),
    ("overdue_2_6m", 60, 180, 7, ("rep", "regional_manager", "credit_manager")),
    ("overdue_6m_plus", 181, 10_000, 14, ("credit_manager", "legal")),
)

# --- the ledger ------------------------------------------------------------------------------
PEOPLE = (  # code, name, role, region
    ("E-REP1", "王伟", "rep", "EAST"),
    ("E-REP2", "李娜", "rep", "EAST"),
    ("W-REP1", "张强", "rep", "WEST"),
    ("E-MGR", "陈静", "regional_manager", "EAST"),
    ("W-MGR", "刘洋", "regional_manager", "WEST"),
    ("CREDIT", "赵敏", "credit_manager", None),
    ("LEGAL", "孙磊", "legal", None),
    ("ADMIN", "周杰", "admin", None),
)
CUSTOMERS = (  # code, region, rep, credit hold source when already on hold
    ("C1", "EAST", "E-REP1", None),
    ("C2", "EAST", "E-REP2", None),
    ("C3", "WEST", "W-REP1", None),
    ("C4", "WEST", "W-REP1", None),
    ("C5", "EAST", "E-REP1", None),
    ("C6", "WEST", "W-REP1", None),
    ("C7", "WEST", "W-REP1", "manual"),  # put on hold by the credit desk
    ("C8", "EAST", "E-REP2", ""),  # on hold from before holds had a source (NULL)
)
REGION_OF = {c: r for c, r, _, _ in CUSTOMERS}
REP_OF = {c: rep for c, _, rep, _ in CUSTOMERS}
MANAGER_OF_REGION = {"EAST": "E-MGR", "WEST": "W-MGR"}
NAME_OF = {code: name for code, name, _, _ in PEOPLE}


@dataclass(frozen=True)
class Inv:
    number: str
    customer: str
    due: date
    amount: Decimal
    currency: str = "CNY"
    paid: bool = False  # open_amount 0 from the start
    last_open_scan: date | None = None  # paid after this day's scan (or before the next one)


INVOICES = (
    # A: walks through due_soon, overdue, overdue_1m and overdue_2_6m across the holidays
    Inv("INV-A", "C1", date(2026, 9, 1), Decimal("120000.00")),
    # P: paid in full: never mentioned
    Inv("INV-P", "C1", date(2026, 7, 1), Decimal("5000.00"), paid=True),
    # B: promise to pay on 06-15 (for 06-29), broken; acknowledged in overdue_1m; paid 08-20
    Inv("INV-B", "C2", date(2026, 6, 10), Decimal("80000.00"), last_open_scan=date(2026, 8, 20)),
    # U: overdue_1m from 09-17, nobody acknowledges: the West manager is told on 09-22
    Inv("INV-U", "C3", date(2026, 8, 18), Decimal("45000.50")),
    # F: enters due_soon on 12-01
    Inv("INV-F", "C4", date(2026, 12, 31), Decimal("9900.00")),
    # G: a USD invoice of the same customer; promise to pay on 11-24 (for 11-29), broken
    Inv("INV-G", "C4", date(2026, 11, 20), Decimal("3000.00"), currency="USD"),
    # D: disputed by its rep on 07-02: the credit desk hears of it instead of the rep
    Inv("INV-D", "C5", date(2026, 6, 24), Decimal("66000.00")),
    # H: overdue_2_6m on 07-20 (credit hold on), paid before the scan of 08-05 (hold off)
    Inv("INV-H", "C6", date(2026, 5, 21), Decimal("70000.00"), last_open_scan=date(2026, 8, 4)),
    # L: overdue_6m_plus from 06-06 (due 2026-06-06 - 181 days); paid before the 11-16 scan
    Inv("INV-L", "C7", date(2025, 12, 7), Decimal("250000.00"), last_open_scan=date(2026, 11, 13)),
    # N: due next year: in no tier during the whole range
    Inv("INV-N", "C8", date(2027, 3, 1), Decimal("1000.00")),
)
BY_NUMBER = {i.number: i for i in INVOICES}

# silenced from the scan after the promise until the promised date + 3 days of grace
PROMISE_SILENCE = {
    "INV-B": (date(2026, 6, 16), date(2026, 6, 29) + timedelta(days=3)),
    "INV-G": (date(2026, 11, 25), date(2026, 11, 29) + timedelta(days=3)),
}
DISPUTED_FROM = {"INV-D": date(2026, 7, 3)}  # disputed after the 07-02 scan


def _now(day: date, at: time = time(8, 30)) -> datetime:
    return datetime.combine(day, at, SHANGHAI).astimezone(UTC)


def _days(start: date, end: date) -> Iterator[date]:
    d = start
    while d <= end:
        yield d
        d += timedelta(days=1)


# --- the simulation --------------------------------------------------------------------------


@dataclass
class DayLog:
    scan: Any
    rows: list[OutboxMessage]


@dataclass
class Sim:
    kind: str
    engine: Engine
    days: dict[date, DayLog]
    person_ids: dict[str, int]
    code_of: dict[int, str]


def _build_ledger(engine: Engine) -> dict[str, int]:
    with write_session(engine) as s:
        regions = {code: Region(code=code, name=code.title()) for code in ("EAST", "WEST")}
        s.add_all(regions.values())
        s.flush()
        people = {}
        for code, name, role, region in PEOPLE:
            people[code] = Person(
                code=code,
                name=name,
                role=role,
                region_id=regions[region].id if region else None,
                time_zone="Asia/Shanghai",
            )
        s.add_all(people.values())
        s.flush()
        customers = {}
        for code, region, rep, hold_source in CUSTOMERS:
            customers[code] = Customer(
                code=code,
                name=f"{code} 有限公司",
                region_id=regions[region].id,
                rep_id=people[rep].id,
                credit_limit=Decimal("500000.00"),
                credit_hold=hold_source is not None,
                credit_hold_reason="credit desk decision" if hold_source is not None else None,
                credit_hold_source=hold_source or None,
            )
        s.add_all(customers.values())
        s.flush()
        for inv in INVOICES:
            s.add(
                Invoice(
                    number=inv.number,
                    customer_id=customers[inv.customer].id,
                    issue_date=inv.due - timedelta(days=30),
                    due_date=inv.due,
                    amount=inv.amount,
                    open_amount=Decimal("0.00") if inv.paid else inv.amount,
                    currency=inv.currency,
                )
            )
        s.flush()
        return {code: p.id for code, p in people.items()}


def _pay(engine: Engine, number: str) -> None:
    with write_session(engine) as s:
        inv = s.execute(select(Invoice).where(Invoice.number == number)).scalar_one()
        inv.open_amount = Decimal("0.00")
        s.add(inv)


def _run(engine: Engine, kind: str) -> Sim:
    settings = Settings()
    calendar = BusinessCalendar("CN")
    person_ids = _build_ledger(engine)
    tiers = settings.tier_table

    before_scan = {
        date(2026, 8, 5): lambda d: _pay(engine, "INV-H"),
        date(2026, 11, 16): lambda d: _pay(engine, "INV-L"),
    }

    def promise(number: str, person: str, promised: date) -> Any:
        def record(d: date) -> None:
            with write_session(engine) as s:
                promise_to_pay(
                    s,
                    number,
                    person,
                    promised_date=promised,
                    amount=None,
                    today=d,
                    now=_now(d, time(10)),
                )

        return record

    def disputed(d: date) -> None:
        with write_session(engine) as s:
            dispute(s, "INV-D", "E-REP1", reason="短少 3 箱货", now=_now(d, time(10)))

    def acked(d: date) -> None:
        with write_session(engine) as s:
            acknowledge(s, "INV-B", "E-REP2", tiers=tiers, as_of=d, now=_now(d, time(10)))

    def paid_and_reviewed(d: date) -> None:
        _pay(engine, "INV-B")
        lifted = review_credit_holds(engine, settings, calendar, d, _now(d, time(11)))
        assert lifted == ["C2"]

    after_scan = {
        date(2026, 6, 15): promise("INV-B", "E-REP2", date(2026, 6, 29)),
        date(2026, 11, 24): promise("INV-G", "W-REP1", date(2026, 11, 29)),
        date(2026, 7, 2): disputed,
        date(2026, 7, 13): acked,
        date(2026, 8, 20): paid_and_reviewed,
    }

    log: dict[date, DayLog] = {}
    for day in _days(START, END):
        if day in before_scan:
            before_scan[day](day)
        result = run_scan(engine, settings, calendar, day, _now(day))
        if day in after_scan:
            after_scan[day](day)
        with read_session(engine) as s:
            rows = list(
                s.execute(
                    select(OutboxMessage)
                    .where(OutboxMessage.business_date == day)
                    .order_by(OutboxMessage.id)
                ).scalars()
            )
            for r in rows:
                s.expunge(r)
        log[day] = DayLog(result, rows)
    return Sim(kind, engine, log, person_ids, {v: k for k, v in person_ids.items()})


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def sim(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('sim') / 'sim.db'}")
        SQLModel.metadata.create_all(engine)
        yield _run(engine, "sqlite")
        engine.dispose()
        return
    require_postgres()
    admin, engine, schema = _pg_schema_engine()
    try:
        SQLModel.metadata.create_all(engine)
        yield _run(engine, "postgres")
    finally:
        engine.dispose()
        _drop_schema(admin, schema)


# --- reading the messages --------------------------------------------------------------------


def _reminders(sim: Sim, day: date) -> dict[str, dict[str, Any]]:
    """recipient code -> reminder payload of that day."""
    out = {}
    for r in sim.days[day].rows:
        if r.kind == "reminder":
            code = sim.code_of[r.recipient_id]
            assert code not in out, f"two reminders for {code} on {day}"
            out[code] = r.payload
    return out


def _lines(sim: Sim, day: date) -> dict[tuple[str, str], tuple[str, bool]]:
    """(recipient, invoice) -> (tier, new) for every invoice line of the day's reminders."""
    out = {}
    for code, payload in _reminders(sim, day).items():
        for section in payload["sections"]:
            for line in section["lines"]:
                key = (code, line["number"])
                assert key not in out, f"{line['number']} twice for {code} on {day}"
                out[key] = (section["tier"], line["new"])
    return out


def _seen(sim: Sim, number: str, person: str) -> dict[str, list[date]]:
    """tier -> the scan dates on which ``person`` was told about invoice ``number``."""
    out: dict[str, list[date]] = defaultdict(list)
    for day in sim.days:
        hit = _lines(sim, day).get((person, number))
        if hit:
            out[hit[0]].append(day)
    return dict(out)


# --- what the desk expects, by hand ----------------------------------------------------------


def _tier_of(days: int) -> tuple[str, int, int, int, tuple[str, ...]] | None:
    for tier in TIERS:
        if tier[1] <= days <= tier[2]:
            return tier
    return None


def _told(role: str, inv: Inv, day: date) -> str:
    if role == "rep":
        disputed_from = DISPUTED_FROM.get(inv.number)
        if disputed_from is not None and day >= disputed_from:
            return "CREDIT"  # a disputed invoice goes to the credit desk instead of the rep
        return REP_OF[inv.customer]
    if role == "regional_manager":
        return MANAGER_OF_REGION[REGION_OF[inv.customer]]
    return {"credit_manager": "CREDIT", "legal": "LEGAL"}[role]


def _expected_lines(day: date, previous_scan: date) -> dict[tuple[str, str], tuple[str, bool]]:
    out = {}
    for inv in INVOICES:
        if inv.paid or (inv.last_open_scan is not None and day > inv.last_open_scan):
            continue
        silence = PROMISE_SILENCE.get(inv.number)
        if silence and silence[0] <= day <= silence[1]:
            continue
        days = (day - inv.due).days
        tier = _tier_of(days)
        if tier is None:
            continue
        name, first, _last, every, roles = tier
        entry = inv.due + timedelta(days=first)
        points = []
        point = entry
        while point <= day:
            if point > previous_scan:
                points.append(point)
            point += timedelta(days=every)
        if not points:
            continue
        for role in roles:
            out[(_told(role, inv, day), inv.number)] = (name, previous_scan < entry)
    return out


WORKING_DAYS = [d for d in _days(START, END) if working(d)]


def _previous_scan(day: date) -> date:
    i = WORKING_DAYS.index(day)
    return WORKING_DAYS[i - 1] if i else BEFORE_START


def _d(month: int, *days: int) -> list[date]:
    return [date(2026, month, d) for d in days]


# --- the tests -------------------------------------------------------------------------------


def test_the_hand_written_calendar_is_the_business_calendar():
    calendar = BusinessCalendar("CN")
    wrong = [d for d in _days(START, END) if calendar.is_business_day(d) != working(d)]
    assert wrong == []
    assert calendar.previous_business_day(START) == BEFORE_START
    # 28 weeks and Monday..Thursday: 144 weekdays, 7 of them holidays, 2 make-up days
    assert len(WORKING_DAYS) == 144 - 7 + 2


def test_nothing_is_sent_on_non_working_days(sim: Sim):
    for day, log in sim.days.items():
        if working(day):
            assert log.scan.skipped is None, day
            continue
        assert log.scan.skipped, day
        assert log.scan.queued == 0
        assert log.rows == [], day
    with read_session(sim.engine) as s:
        dates = set(s.execute(select(OutboxMessage.business_date)).scalars())
    assert dates and all(working(d) for d in dates)


def test_at_most_one_reminder_per_person_per_day(sim: Sim):
    total = 0
    for day, log in sim.days.items():
        reminders = [r for r in log.rows if r.kind == "reminder"]
        people = Counter(r.recipient_id for r in reminders)
        assert all(n == 1 for n in people.values()), (day, people)
        for r in reminders:
            assert r.idempotency_key == f"reminder:{r.recipient_id}:{day.isoformat()}"
            assert r.payload["business_date"] == day.isoformat()
            assert r.payload["recipient"]["code"] == sim.code_of[r.recipient_id]
            assert r.next_attempt_at >= _now(day)  # held for the send window (08:30 is in it)
        assert log.scan.queued == len(reminders), day
        total += len(reminders)
    with read_session(sim.engine) as s:
        keys = list(s.execute(select(OutboxMessage.idempotency_key)).scalars())
    assert len(keys) == len(set(keys))
    assert sum(k.startswith("reminder:") for k in keys) == total
    assert total > 100


def test_every_line_on_every_day_is_what_the_desk_expects(sim: Sim):
    """The whole book, every working day: who hears of which invoice, in which tier, and
    whether it is new in that tier — against the rule applied by hand."""
    mismatches = []
    for day in WORKING_DAYS:
        expected = _expected_lines(day, _previous_scan(day))
        got = _lines(sim, day)
        if got != expected:
            missing = {k: v for k, v in expected.items() if got.get(k) != v}
            extra = {k: v for k, v in got.items() if expected.get(k) != v}
            mismatches.append((day, "missing", missing, "unexpected", extra))
    assert mismatches == []
    # nobody outside the tiers' roles ever gets a reminder line, the paid invoice never appears
    everyone = {code for day in WORKING_DAYS for code, _ in _lines(sim, day)}
    assert everyone == {"E-REP1", "E-REP2", "W-REP1", "E-MGR", "W-MGR", "CREDIT", "LEGAL"}
    numbers = {n for day in WORKING_DAYS for _, n in _lines(sim, day)}
    assert numbers == set(BY_NUMBER) - {"INV-P", "INV-N"}


def test_sections_count_and_total_their_lines(sim: Sim):
    for day in WORKING_DAYS:
        for code, payload in _reminders(sim, day).items():
            tiers = [s["tier"] for s in payload["sections"]]
            assert tiers == sorted(tiers, key=[t[0] for t in TIERS].index)  # tier order
            for section in payload["sections"]:
                lines = section["lines"]
                assert section["count"] == len(lines) > 0, (day, code)
                assert section["new_count"] == sum(ln["new"] for ln in lines)
                totals: dict[str, Decimal] = defaultdict(Decimal)
                for ln in lines:
                    inv = BY_NUMBER[ln["number"]]
                    assert ln["customer"] == inv.customer
                    assert ln["due_date"] == inv.due.isoformat()
                    assert ln["days"] == (day - inv.due).days
                    assert Decimal(ln["open_amount"]) == inv.amount
                    assert ln["currency"] == inv.currency
                    totals[inv.currency] += inv.amount
                assert {k: Decimal(v) for k, v in section["totals"].items()} == totals
                assert [ln["days"] for ln in lines] == sorted(
                    (ln["days"] for ln in lines), reverse=True
                )


def test_invoice_a_through_the_tiers_and_the_holidays(sim: Sim):
    """Due 2026-09-01. due_soon points fall on Sundays (sent Mondays); overdue points on
    Saturdays are caught up on Monday, the one on the make-up Sunday 09-20 goes out that
    Sunday; the overdue_1m points 10-01, 10-04 and 10-07 (National Day) go out once, on
    10-08, and 10-10 (make-up Saturday) on the day; overdue_2_6m points all fall on
    Saturdays (from 10-31) and go out on Mondays."""
    assert _seen(sim, "INV-A", "E-REP1") == {
        "due_soon": _d(8, 3, 10, 17, 24, 31),
        "overdue": _d(9, 2, 7, 8, 11, 14, 17, 20, 23, 28, 29),
        "overdue_1m": _d(10, 8, 10, 13, 16, 19, 22, 26, 28),
        "overdue_2_6m": _d(11, 2, 9, 16, 23, 30) + _d(12, 7, 14),
    }
    assert _seen(sim, "INV-A", "E-MGR") == {
        "overdue_1m": _d(10, 8, 10, 13, 16, 19, 22, 26, 28),
        "overdue_2_6m": _d(11, 2, 9, 16, 23, 30) + _d(12, 7, 14),
    }
    assert _seen(sim, "INV-A", "CREDIT") == {
        "overdue_2_6m": _d(11, 2, 9, 16, 23, 30) + _d(12, 7, 14)
    }
    for other in ("E-REP2", "W-REP1", "W-MGR", "LEGAL", "ADMIN"):
        assert _seen(sim, "INV-A", other) == {}
    # first announcements in each tier are flagged new, repeats are not
    news = [d for d in WORKING_DAYS if _lines(sim, d).get(("E-REP1", "INV-A"), ("", False))[1]]
    assert news == [date(2026, 8, 3), date(2026, 9, 2), date(2026, 10, 8), date(2026, 11, 2)]
    assert sim.days[date(2026, 10, 8)].scan.window_days == 8  # 09-30 .. 10-08
    assert sim.days[date(2026, 9, 20)].scan.window_days == 2  # Friday 09-18 .. Sunday 09-20
    assert sim.days[date(2026, 9, 21)].scan.window_days == 1


def test_legal_track_every_fourteen_days(sim: Sim):
    """L is 181 days overdue on Saturday 06-06; its points are Saturdays 14 days apart."""
    legal_track = _d(6, 8, 22) + _d(7, 6, 20) + _d(8, 3, 17, 31) + _d(9, 14, 28)
    legal_track += _d(10, 10, 26) + _d(11, 9)  # 10-10 is a make-up Saturday; paid before 11-16
    assert _seen(sim, "INV-L", "LEGAL") == {"overdue_6m_plus": legal_track}
    assert _seen(sim, "INV-L", "CREDIT") == {
        "overdue_2_6m": [date(2026, 6, 4)],  # day 179, its last point in that tier
        "overdue_6m_plus": legal_track,
    }
    assert _seen(sim, "INV-L", "W-REP1") == {"overdue_2_6m": [date(2026, 6, 4)]}
    assert _seen(sim, "INV-L", "W-MGR") == {"overdue_2_6m": [date(2026, 6, 4)]}


def test_promise_silences_then_breaks_and_is_escalated_once(sim: Sim):
    """B (due 06-10) is promised on 06-15 for 06-29: silent from 06-16 up to 07-02 (grace 3
    days) — its 07-02 point is not sent; on 07-03 the promise is broken and the rep and the
    East manager are told, once; the reminders resume with the Sunday 07-05 point on 07-06.
    G (due 11-20) is promised on 11-24 for Sunday 11-29: silent up to 12-02, and on 12-03
    (promised + 4) both its broken promise and its 12-03 point go out."""
    assert _seen(sim, "INV-B", "E-REP2") == {
        "due_soon": _d(6, 1, 8),
        "overdue": _d(6, 11, 15) + _d(7, 6, 8),
        "overdue_1m": _d(7, 10, 13, 16, 20, 22, 27, 28, 31) + _d(8, 3, 6),
        "overdue_2_6m": _d(8, 10, 17),
    }
    assert _seen(sim, "INV-G", "W-REP1") == {
        "due_soon": _d(10, 21, 28) + _d(11, 4, 11, 18),
        "overdue": _d(11, 23, 24) + _d(12, 3, 7, 9, 14, 15),
    }
    broken = {
        (day, code): [b["number"] for b in payload["broken_promises"]]
        for day in WORKING_DAYS
        for code, payload in _reminders(sim, day).items()
        if payload["broken_promises"]
    }
    assert broken == {
        (date(2026, 7, 3), "E-REP2"): ["INV-B"],
        (date(2026, 7, 3), "E-MGR"): ["INV-B"],
        (date(2026, 12, 3), "W-REP1"): ["INV-G"],
        (date(2026, 12, 3), "W-MGR"): ["INV-G"],
    }
    item = _reminders(sim, date(2026, 7, 3))["E-MGR"]["broken_promises"][0]
    assert (item["promised_date"], item["customer"]) == ("2026-06-29", "C2")
    assert Decimal(item["promised_amount"]) == Decimal("80000.00")
    # on 07-03 B has no cadence point: the rep's message is only the broken promise
    assert _reminders(sim, date(2026, 7, 3))["E-REP2"]["sections"] == []
    promises_broken = {d: log.scan.promises_broken for d, log in sim.days.items()}
    assert {d: n for d, n in promises_broken.items() if n} == {
        date(2026, 7, 3): 1,
        date(2026, 12, 3): 1,
    }
    with read_session(sim.engine) as s:
        promises = s.execute(
            select(Invoice.number, PromiseToPay.id, PromiseToPay.status, PromiseToPay.broken_on)
            .join(Invoice, Invoice.id == PromiseToPay.invoice_id)
            .order_by(PromiseToPay.id)
        ).all()
        audits = s.execute(
            select(AuditLog.entity_id, AuditLog.action, AuditLog.at)
            .where(AuditLog.action.like("promise%"))
            .order_by(AuditLog.id)
        ).all()
    assert [(n, st, b) for n, _, st, b in promises] == [
        ("INV-B", "broken", date(2026, 7, 3)),
        ("INV-G", "broken", date(2026, 12, 3)),
    ]
    b_id, g_id = (str(p[1]) for p in promises)
    assert [tuple(a) for a in audits] == [
        ("INV-B", "promise", _now(date(2026, 6, 15), time(10))),
        (b_id, "promise.broken", _now(date(2026, 7, 3))),
        ("INV-G", "promise", _now(date(2026, 11, 24), time(10))),
        (g_id, "promise.broken", _now(date(2026, 12, 3))),
    ]


def test_unacknowledged_invoices_go_to_the_regional_manager_naming_the_rep(sim: Sim):
    """H (overdue_1m from Saturday 06-20), U (from 09-17) and A (from the holiday 10-01) are
    not acknowledged: five days later (A: the first working day after 10-06) the region's
    manager is told, naming the rep — once. B was acknowledged on 07-13, three days into
    overdue_1m, so its 07-15 escalation does not happen; D is disputed, so neither."""
    got = {
        (day, code): [
            (u["number"], u["rep_code"], u["rep"], u["tier"]) for u in p["unacknowledged"]
        ]
        for day in WORKING_DAYS
        for code, p in _reminders(sim, day).items()
        if p["unacknowledged"]
    }
    assert got == {
        (date(2026, 6, 25), "W-MGR"): [("INV-H", "W-REP1", "张强", "overdue_1m")],
        (date(2026, 9, 22), "W-MGR"): [("INV-U", "W-REP1", "张强", "overdue_1m")],
        (date(2026, 10, 8), "E-MGR"): [("INV-A", "E-REP1", "王伟", "overdue_1m")],
    }
    with read_session(sim.engine) as s:
        acks = s.execute(
            select(Invoice.number, InvoiceAck.tier, Person.code)
            .join(Invoice, Invoice.id == InvoiceAck.invoice_id)
            .join(Person, Person.id == InvoiceAck.person_id)
        ).all()
    assert [tuple(a) for a in acks] == [("INV-B", "overdue_1m", "E-REP2")]
    # B was in the East manager's overdue_1m lines all along; the acknowledgement only
    # stopped the escalation
    assert date(2026, 7, 16) in _seen(sim, "INV-B", "E-MGR")["overdue_1m"]


def test_disputed_invoice_goes_to_the_credit_desk_not_the_rep(sim: Sim):
    """D (due 06-24) is disputed by its rep after the 07-02 scan."""
    rep = _seen(sim, "INV-D", "E-REP1")
    assert rep == {"due_soon": _d(6, 1, 8, 15, 22), "overdue": _d(6, 25, 29) + _d(7, 1)}
    desk = _seen(sim, "INV-D", "CREDIT")
    assert desk["overdue"] == _d(7, 6, 7, 10, 13, 16, 20, 22)  # 07-04 (Sat) caught up on 07-06
    assert desk["overdue_1m"][0] == date(2026, 7, 24)
    assert desk["overdue_2_6m"][0] == date(2026, 8, 24)  # day 60 is Sunday 08-23
    assert set(desk) == {"overdue", "overdue_1m", "overdue_2_6m"}
    # the regional manager still hears of it from overdue_1m on
    assert _seen(sim, "INV-D", "E-MGR")["overdue_1m"] == desk["overdue_1m"]
    flags = {
        (day, ln["disputed"])
        for day in WORKING_DAYS
        for payload in _reminders(sim, day).values()
        for section in payload["sections"]
        for ln in section["lines"]
        if ln["number"] == "INV-D"
    }
    assert {f for d, f in flags if d <= date(2026, 7, 2)} == {False}
    assert {f for d, f in flags if d > date(2026, 7, 2)} == {True}
    with read_session(sim.engine) as s:
        c5 = s.execute(select(Customer).where(Customer.code == "C5")).scalar_one()
        d = s.execute(select(Invoice).where(Invoice.number == "INV-D")).scalar_one()
    assert (d.disputed, d.dispute_reason) == (True, "短少 3 箱货")
    assert c5.credit_hold is False  # a disputed invoice puts nobody on hold


def _hold_messages(sim: Sim) -> dict[tuple[date, str, str], list[tuple[str, bool]]]:
    out = {}
    for day in WORKING_DAYS:
        for r in sim.days[day].rows:
            items = r.payload.get("credit_holds") or []
            if items:
                key = (day, r.kind, sim.code_of[r.recipient_id])
                out[key] = [(i["customer"], i["on"]) for i in items]
    return out


def test_credit_holds_go_on_at_sixty_days_and_off_when_paid(sim: Sim):
    """H reaches 60 days on Monday 07-20 (C6 on hold); B on Sunday 08-09 (C2 on hold on
    08-10); U on Saturday 10-17 (C3, 10-19); A on Saturday 10-31 (C1, 11-02). H is paid
    before the 08-05 scan, which lifts C6; B is paid on 08-20 and the credit-hold review
    lifts C2 at once. Each change is audited once and told to the rep, the region's manager
    and the credit desk."""
    on = {d: log.scan.holds_on for d, log in sim.days.items() if log.scan.holds_on}
    off = {d: log.scan.holds_off for d, log in sim.days.items() if log.scan.holds_off}
    assert on == {
        date(2026, 7, 20): ["C6"],
        date(2026, 8, 10): ["C2"],
        date(2026, 10, 19): ["C3"],
        date(2026, 11, 2): ["C1"],
    }
    assert off == {date(2026, 8, 5): ["C6"]}  # C2 was lifted by the review, not a scan

    west = ["W-MGR", "W-REP1"]
    east2 = ["E-MGR", "E-REP2"]
    expected = {}
    for day, customer, kind, people, state in (
        (date(2026, 7, 20), "C6", "reminder", west, True),
        (date(2026, 8, 5), "C6", "reminder", west, False),
        (date(2026, 8, 10), "C2", "reminder", east2, True),
        (date(2026, 8, 20), "C2", "credit_hold", east2, False),
        (date(2026, 10, 19), "C3", "reminder", west, True),
        (date(2026, 11, 2), "C1", "reminder", ["E-MGR", "E-REP1"], True),
    ):
        for person in [*people, "CREDIT"]:
            expected[(day, kind, person)] = [(customer, state)]
    assert _hold_messages(sim) == expected
    review_rows = [r for log in sim.days.values() for r in log.rows if r.kind == "credit_hold"]
    assert len(review_rows) == 3
    assert {r.idempotency_key.rsplit(":", 1)[0] for r in review_rows} == {
        f"credit_hold:{sim.person_ids[p]}:2026-08-20" for p in ("E-MGR", "E-REP2", "CREDIT")
    }

    with read_session(sim.engine) as s:
        audits = s.execute(
            select(AuditLog.action, AuditLog.entity_id, AuditLog.actor, AuditLog.after, AuditLog.at)
            .where(AuditLog.action.like("credit_hold.%"))
            .order_by(AuditLog.id)
        ).all()
        customers = {
            c.code: c for c in s.execute(select(Customer).order_by(Customer.code)).scalars()
        }
    assert [(a.action, a.entity_id, a.at) for a in audits] == [  # at: the scan's clock
        ("credit_hold.on", "C6", _now(date(2026, 7, 20))),
        ("credit_hold.off", "C6", _now(date(2026, 8, 5))),
        ("credit_hold.on", "C2", _now(date(2026, 8, 10))),
        ("credit_hold.off", "C2", _now(date(2026, 8, 20), time(11))),  # the review
        ("credit_hold.on", "C3", _now(date(2026, 10, 19))),
        ("credit_hold.on", "C1", _now(date(2026, 11, 2))),
    ]
    assert all(a.actor == "scheduler" for a in audits)
    assert all(a.after["source"] == "scan" for a in audits if a.action == "credit_hold.on")
    for code in ("C1", "C3"):
        c = customers[code]
        assert (c.credit_hold, c.credit_hold_source) == (True, "scan")
        assert c.credit_hold_reason and "overdue_2_6m" in c.credit_hold_reason
    assert customers["C1"].credit_hold_since == _now(date(2026, 11, 2))
    assert customers["C3"].credit_hold_since == _now(date(2026, 10, 19))
    for code in ("C2", "C4", "C5", "C6"):
        c = customers[code]
        assert (c.credit_hold, c.credit_hold_source, c.credit_hold_since) == (False, None, None)


def test_manual_holds_are_never_lifted_automatically(sim: Sim):
    """C7 (source "manual") has nothing open after 11-16; C8 (source NULL) never had
    anything overdue. Both stay on hold through every scan and the review."""
    with read_session(sim.engine) as s:
        customers = {
            c.code: c
            for c in s.execute(select(Customer).where(Customer.code.in_(["C7", "C8"]))).scalars()
        }
        open_c7 = s.execute(
            select(Invoice.open_amount)
            .join(Customer, Customer.id == Invoice.customer_id)
            .where(Customer.code == "C7")
        ).scalars()
        touched = s.execute(
            select(AuditLog.entity_id).where(
                AuditLog.action.like("credit_hold.%"), AuditLog.entity_id.in_(["C7", "C8"])
            )
        ).all()
        assert list(open_c7) == [Decimal("0.00")]
    assert customers["C7"].credit_hold and customers["C7"].credit_hold_source == "manual"
    assert customers["C8"].credit_hold and customers["C8"].credit_hold_source is None
    assert touched == []
    assert all(c not in ("C7", "C8") for log in sim.days.values() for c in log.scan.holds_off)
