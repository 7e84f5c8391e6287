"""The daily receivables scan: cadence, silencing, escalation and credit holds, in SQL.

``plan_scan`` works out, without writing anything, what every person is told on a business
date: per tier, the invoices whose cadence point falls since the previous scan (see
``credit.cadence``), with counts and totals over all of them and the most overdue lines
listed; broken promises; overdue invoices nobody acknowledged. ``run_scan`` then applies it:
promises marked broken or kept, credit holds put on, and one outbox row per person per day
(idempotency key ``reminder:<person>:<date>``), so running it twice — or in two processes at
once — sends nothing twice.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Date,
    Integer,
    String,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    type_coerce,
    union,
    union_all,
    update,
)
from sqlalchemy.orm import aliased
from sqlmodel import Session

from credit.aging import Tier, TierTable
from credit.cadence import reminder_due_dates
from credit.calendar import BusinessCalendar
from credit.settings import Settings
from credit.store.models import (
    AuditLog,
    Customer,
    HoldRecheck,
    Invoice,
    InvoiceAck,
    InvoiceSnooze,
    Person,
    PromiseToPay,
    ScanRun,
)
from credit.store.sqlfuncs import days_since, unindexed
from credit.store.types import utcnow

REGIONAL_ROLES = frozenset({"regional_manager"})
# credit-hold changes listed in one message (the first scan on a new ledger may change many)
HOLD_ITEMS_LISTED = 50
# PostgreSQL memory for the scan's sort (per transaction, SET LOCAL)
SCAN_WORK_MEM = "128MB"
# customers whose hold is re-examined per statement
RECHECK_BATCH = 5000
CREDIT_DESK_ROLE = "credit_manager"


# --- what a scan produces ------------------------------------------------------------------


@dataclass(slots=True)
class TierSection:
    tier: str
    action: str
    count: int = 0
    new_count: int = 0
    totals: dict[str, Decimal] = field(default_factory=dict)
    lines: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class PersonReminder:
    """Everything one person is told by the scan on one business date: one message."""

    person_id: int
    code: str
    name: str
    role: str
    locale: str
    time_zone: str
    sections: list[TierSection] = field(default_factory=list)
    broken_promises: list[dict[str, Any]] = field(default_factory=list)
    unacknowledged: list[dict[str, Any]] = field(default_factory=list)
    hold_changes: list[dict[str, Any]] = field(default_factory=list)
    hold_total: int = 0

    def fill_person(self, person: Person) -> None:
        self.code, self.name, self.role = person.code, person.name, person.role
        self.locale, self.time_zone = person.locale, person.time_zone

    @property
    def invoice_count(self) -> int:
        return sum(s.count for s in self.sections)

    def payload(self, business_date: date) -> dict[str, Any]:
        return {
            "kind": "reminder",
            "business_date": business_date.isoformat(),
            "recipient": {
                "code": self.code,
                "name": self.name,
                "role": self.role,
                "locale": self.locale,
            },
            "sections": [
                {
                    "tier": s.tier,
                    "action": s.action,
                    "count": s.count,
                    "new_count": s.new_count,
                    "totals": {cur: str(v) for cur, v in sorted(s.totals.items())},
                    "lines": s.lines,
                }
                for s in self.sections
            ],
            "broken_promises": self.broken_promises,
            "unacknowledged": self.unacknowledged,
            "credit_holds": self.hold_changes[:HOLD_ITEMS_LISTED],
            "credit_holds_total": max(self.hold_total, len(self.hold_changes)),
        }


@dataclass(slots=True)
class ScanPlan:
    business_date: date
    window_days: int
    reminders: list[PersonReminder]

    def reminder_for(self, person_id: int) -> PersonReminder:
        """This person's reminder, added (empty) when the plan had none for them."""
        index = {r.person_id: r for r in self.reminders}
        if person_id not in index:
            index[person_id] = PersonReminder(person_id, "", "", "", "en", "UTC")
            self.reminders.append(index[person_id])
        return index[person_id]

    def add_hold_changes(
        self, items: dict[int, list[dict[str, Any]]], totals: dict[int, int]
    ) -> None:
        """Fold credit-hold changes into each recipient's reminder (one message a day)."""
        index = {r.person_id: r for r in self.reminders}
        for person_id, changes in items.items():
            if person_id not in index:
                index[person_id] = PersonReminder(person_id, "", "", "", "en", "UTC")
                self.reminders.append(index[person_id])
            index[person_id].hold_changes.extend(changes)
            index[person_id].hold_total += totals.get(person_id, len(changes))

    def as_json(self) -> list[dict[str, Any]]:
        """The ``creditbot scan --dry-run --format json`` shape: one entry per person and tier."""
        out: list[dict[str, Any]] = []
        for r in self.reminders:
            for s in r.sections:
                out.append(
                    {
                        "recipient": r.code,
                        "recipient_name": r.name,
                        "role": r.role,
                        "tier": s.tier,
                        "count": s.count,
                        "totals": {cur: str(v) for cur, v in sorted(s.totals.items())},
                        "invoices": [
                            {
                                k: ln[k]
                                for k in (
                                    "number",
                                    "customer",
                                    "customer_name",
                                    "open_amount",
                                    "currency",
                                    "days",
                                    "due_date",
                                    "disputed",
                                    "new",
                                )
                            }
                            for ln in s.lines
                        ],
                    }
                )
        return out


# --- the SQL ---------------------------------------------------------------------------------


def _tier_cases(tiers: TierTable, as_of: date) -> tuple[list[ColumnElement[bool]], ...]:
    conds = []
    for tier in tiers.tiers:
        earliest, latest = tier.due_date_range(as_of)
        cond = Invoice.due_date <= latest
        if earliest is not None:
            cond = and_(cond, Invoice.due_date >= earliest)
        conds.append(cond)
    return (conds,)


def _by_tier(tiers: TierTable, conds: list[ColumnElement[bool]], attr: str) -> Any:
    return case(*[(c, literal(getattr(t, attr))) for c, t in zip(conds, tiers.tiers, strict=True)])


def _window(tiers: TierTable, as_of: date) -> ColumnElement[bool]:
    """Due dates some tier covers: nearly every open invoice, so scan, not index."""
    _, latest = tiers.tiers[0].due_date_range(as_of)
    earliest, _ = tiers.tiers[-1].due_date_range(as_of)
    due = unindexed(Invoice.due_date)
    cond = due <= latest
    return cond if earliest is None else and_(cond, due >= earliest)


def _not_silenced(
    as_of: date, grace_days: int, invoice_id: Any = Invoice.id
) -> ColumnElement[bool]:
    """No open promise whose date (plus grace) is not past, and no snooze still running.

    ``NOT IN`` small uncorrelated sets: both engines hash them once, whatever they think of
    the tables' sizes (a correlated NOT EXISTS may become a nested loop per invoice)."""
    keep_until = as_of - timedelta(days=grace_days)
    promised = select(PromiseToPay.invoice_id).where(
        PromiseToPay.status == "open", PromiseToPay.promised_date >= keep_until
    )
    snoozed = select(InvoiceSnooze.invoice_id).where(InvoiceSnooze.until >= as_of)
    return and_(invoice_id.not_in(promised), invoice_id.not_in(snoozed))


def _at_cadence_point(
    tiers: TierTable, as_of: date, window_days: int, due_dates: list[date] | None
) -> Any:
    """Open invoices with a cadence point in the window, with tier, day count and whether
    they are new in the tier. With ``due_dates`` (see ``reminder_due_dates``) only invoices
    due on those dates are read, through the due-date index; without, one pass over the
    invoice table evaluates the cadence for each."""
    (conds,) = _tier_cases(tiers, as_of)
    days = days_since(Invoice.due_date, as_of)
    in_tier = days - _by_tier(tiers, conds, "min_days")
    stmt = select(
        Invoice.id.label("invoice_id"),
        Invoice.customer_id,
        Invoice.number,
        Invoice.open_amount,
        Invoice.currency,
        Invoice.due_date,
        Invoice.disputed,
        days.label("days"),
        case(*[(c, literal(i)) for i, c in enumerate(conds)]).label("tier_no"),
        (in_tier < window_days).label("new"),
    )
    if due_dates is not None:
        return stmt.where(Invoice.open_amount > 0, Invoice.due_date.in_(due_dates))
    return stmt.where(
        Invoice.open_amount > 0,
        _window(tiers, as_of),
        (in_tier % _by_tier(tiers, conds, "repeat_every_days")) < window_days,
    )


def _company_roles(tiers: TierTable) -> list[str]:
    roles = {role for t in tiers.tiers for role in t.notify} | {CREDIT_DESK_ROLE}
    return sorted(roles - {"rep"} - REGIONAL_ROLES)


class _Recipients:
    """Who hears of a due invoice, from its tier, its customer's rep and region and whether
    it is disputed: the rep (if active and the tier tells reps; a disputed invoice goes to the
    credit desk instead), the region's managers and everyone with a company-wide role the
    tier names. A rep who has left is replaced by the region's managers. Computed once per
    distinct (tier, rep, region, disputed), not per invoice."""

    def __init__(self, session: Session, tiers: TierTable) -> None:
        self.tiers = tiers
        # whoever a customer names as its rep, whatever their role
        self.rep_active: dict[int, bool] = dict(
            session.execute(select(Person.id, Person.active)).all()
        )
        self.regional: dict[int, list[int]] = defaultdict(list)
        self.company: dict[str, list[int]] = defaultdict(list)
        company = _company_roles(tiers)
        rows = session.execute(
            select(Person.id, Person.role, Person.region_id)
            .where(Person.active, Person.role.in_([*REGIONAL_ROLES, *company]))
            .order_by(Person.id)
        )
        for pid, role, region_id in rows:
            if role in REGIONAL_ROLES:
                if region_id is not None:
                    self.regional[region_id].append(pid)
            else:
                self.company[role].append(pid)
        self._memo: dict[tuple[int, int | None, int | None, bool], tuple[int, ...]] = {}

    def of(
        self, tier_no: int, rep_id: int | None, region_id: int | None, disputed: bool
    ) -> tuple[int, ...]:
        key = (tier_no, rep_id, region_id, bool(disputed))
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._work_out(*key)
        return found

    def _work_out(
        self, tier_no: int, rep_id: int | None, region_id: int | None, disputed: bool
    ) -> tuple[int, ...]:
        notify = set(self.tiers.tiers[tier_no].notify)
        people: list[int] = []
        roles = notify - {"rep"}
        if "rep" in notify:
            if disputed:
                roles.add(CREDIT_DESK_ROLE)
            elif self.rep_active.get(rep_id) is True:
                people.append(rep_id)  # type: ignore[arg-type]
            elif self.rep_active.get(rep_id) is False:
                roles |= REGIONAL_ROLES
        for role in sorted(roles):
            if role in REGIONAL_ROLES:
                people.extend(self.regional.get(region_id, ()) if region_id is not None else ())
            else:
                people.extend(self.company.get(role, ()))
        return tuple(dict.fromkeys(people))  # once each, in a stable order


def _decimal_str(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def plan_scan(session: Session, settings: Settings, as_of: date, window_days: int) -> ScanPlan:
    """What the scan sends on ``as_of``, covering cadence points of the last ``window_days``."""
    tiers = settings.tier_table
    grace = settings.reminders.promise_grace_days
    k = settings.reminders.lines_per_tier
    # Each step is computed once; the customer join and the promise and snooze checks run
    # only for invoices at a cadence point.
    oldest = session.execute(
        select(func.min(Invoice.due_date)).where(Invoice.open_amount > 0)
    ).scalar()
    if isinstance(oldest, str):
        oldest = date.fromisoformat(oldest)
    due_dates = reminder_due_dates(tiers, as_of, window_days, oldest or as_of)
    # SQLite: MATERIALIZED makes it read the invoice table first; PostgreSQL inlines this
    # step into the next and runs it on parallel workers.
    base = (
        _at_cadence_point(tiers, as_of, window_days, due_dates)
        .cte("tiered")
        .prefix_with("MATERIALIZED", dialect="sqlite")
    )
    due = (
        select(base, Customer.rep_id, Customer.region_id)
        .join(Customer, Customer.id == base.c.customer_id)
        .where(_not_silenced(as_of, grace, base.c.invoice_id))
        .cte("due")
        .prefix_with("MATERIALIZED")
    )
    # Everyone told of an invoice is told because of its (tier, rep, region, disputed): group
    # by those, and fan the groups out to people in Python. One statement, two kinds of row:
    # per group and currency the count and totals of every due invoice; and per group the
    # lines_per_tier most overdue invoices — a person's most overdue lines are among the
    # candidates of the groups they hear of.
    group = (due.c.rep_id, due.c.region_id, due.c.disputed, due.c.tier_no)
    totals = select(
        *group,
        due.c.currency,
        literal(None, Integer).label("invoice_id"),
        func.count().label("n"),
        func.sum(case((due.c.new, 1), else_=0)).label("n_new"),
        func.sum(type_coerce(due.c.open_amount, BigInteger)).label("cents"),
        literal(None, Integer).label("customer_id"),
        literal(None, String).label("number"),
        literal(None, Date).label("due_date"),
        literal(None, Integer).label("days"),
        literal(None, Boolean).label("new"),
    ).group_by(*group, due.c.currency)
    rank = func.row_number().over(
        partition_by=group, order_by=(due.c.days.desc(), due.c.invoice_id)
    )
    ranked = select(due, rank.label("rn")).subquery("ranked")
    r = ranked.c
    top = select(
        r.rep_id,
        r.region_id,
        r.disputed,
        r.tier_no,
        r.currency,
        r.invoice_id,
        literal(None, Integer),
        literal(None, Integer),
        type_coerce(r.open_amount, BigInteger),
        r.customer_id,
        r.number,
        r.due_date,
        r.days,
        r.new,
    ).where(r.rn <= k)
    both = union_all(totals, top).subquery("both")
    stmt = select(
        both, Customer.code.label("customer"), Customer.name.label("customer_name")
    ).outerjoin(Customer, Customer.id == both.c.customer_id)

    conn = session.connection()
    if conn.dialect.name == "postgresql":
        # the ranking sorts every due invoice: keep that sort in memory
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{SCAN_WORK_MEM}'")
    recipients = _Recipients(session, tiers)
    sections: dict[tuple[int, int], TierSection] = {}
    cents: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    candidates: dict[tuple[int, int], list[tuple]] = defaultdict(list)
    # Core rows as plain tuples (no ORM layer, no per-row Decimal): a few per group
    for row in conn.execute(stmt).all():
        rep_id, region_id, disputed, tier_no, currency, invoice_id, n, n_new, amount = row[:9]
        people = recipients.of(tier_no, rep_id, region_id, disputed)
        if invoice_id is not None:
            days = row[12]
            for person_id in people:  # compared by (days desc, invoice id) only
                candidates[(person_id, tier_no)].append((-days, invoice_id, row))
            continue
        for person_id in people:
            key = (person_id, tier_no)
            sec = sections.get(key)
            if sec is None:
                tier = tiers.tiers[tier_no]
                sec = sections[key] = TierSection(tier.name, tier.action)
            sec.count += n
            sec.new_count += int(n_new or 0)
            cents[key][currency] += amount
    for key, by_currency in cents.items():
        sections[key].totals = {cur: _money(c) for cur, c in by_currency.items()}
    lines: dict[int, dict[str, Any]] = {}  # one dict per invoice, shared by its readers
    for key, found in candidates.items():
        listed = []
        for _, invoice_id, row in heapq.nsmallest(k, found):
            if invoice_id not in lines:
                lines[invoice_id] = _line(row)
            listed.append(lines[invoice_id])
        listed.sort(key=lambda ln: (-ln["days"], ln["number"]))
        sections[key].lines = listed

    broken = _broken_promises(session, as_of, grace)
    unacked = _unacknowledged(session, tiers, as_of, window_days, grace)
    needed = {pid for pid, _ in sections} | set(broken) | set(unacked)
    people_by_id: dict[int, PersonReminder] = {}
    for p in (
        session.execute(
            select(
                Person.id, Person.code, Person.name, Person.role, Person.locale, Person.time_zone
            ).where(Person.id.in_(needed))
        )
        if needed
        else []
    ):
        people_by_id[p.id] = PersonReminder(p.id, p.code, p.name, p.role, p.locale, p.time_zone)
    for (person_id, _), s in sorted(sections.items(), key=lambda kv: kv[0][1]):
        people_by_id[person_id].sections.append(s)
    for person_id, items in broken.items():
        people_by_id[person_id].broken_promises = items
    for person_id, items in unacked.items():
        people_by_id[person_id].unacknowledged = items
    reminders = sorted(people_by_id.values(), key=lambda r: r.code)
    return ScanPlan(as_of, window_days, reminders)


def _money(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)  # as MoneyAmount reads it: exact, two decimals


def _line(row: tuple) -> dict[str, Any]:
    """A listed invoice, from a planning row (see ``plan_scan``)."""
    invoice_id, amount, _, number, due, days, new, customer, customer_name = row[5], *row[8:]
    return {
        "invoice_id": invoice_id,
        "number": number,
        "customer": customer,
        "customer_name": customer_name,
        "open_amount": str(_money(amount)),
        "currency": row[4],
        "days": int(days),
        "due_date": due.isoformat() if isinstance(due, date) else str(due),
        "disputed": bool(row[2]),
        "new": bool(new),
    }


def _regional_and_rep(inv_query: Any) -> Any:
    """(row…, person_id) for the (active) rep and the regional managers of each row's
    customer."""
    q = inv_query.subquery("q")
    active_rep = aliased(Person)
    rep = select(q, q.c.rep_id.label("person_id")).join(
        active_rep, and_(active_rep.id == q.c.rep_id, active_rep.active)
    )
    mgr = aliased(Person)
    managers = select(q, mgr.id.label("person_id")).join(
        mgr, and_(mgr.role == "regional_manager", mgr.active, mgr.region_id == q.c.region_id)
    )
    return union(rep, managers)


def broken_promise_query(as_of: date, grace_days: int) -> Any:
    """Promises that break on ``as_of``: still open (or marked broken today), promised date
    plus grace past, invoice still open."""
    cutoff = as_of - timedelta(days=grace_days)
    return (
        select(
            PromiseToPay.id.label("promise_id"),
            PromiseToPay.promised_date,
            PromiseToPay.amount.label("promised_amount"),
            Invoice.number,
            Invoice.open_amount,
            Invoice.currency,
            Customer.code.label("customer"),
            Customer.name.label("customer_name"),
            Customer.rep_id,
            Customer.region_id,
        )
        .join(Invoice, Invoice.id == PromiseToPay.invoice_id)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(
            Invoice.open_amount > 0,
            PromiseToPay.promised_date < cutoff,
            or_(
                PromiseToPay.status == "open",
                and_(PromiseToPay.status == "broken", PromiseToPay.broken_on == as_of),
            ),
        )
    )


def _broken_promises(session: Session, as_of: date, grace: int) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for row in session.execute(_regional_and_rep(broken_promise_query(as_of, grace))).mappings():
        out[row["person_id"]].append(
            {
                "number": row["number"],
                "customer": row["customer"],
                "customer_name": row["customer_name"],
                "promised_date": row["promised_date"].isoformat()
                if isinstance(row["promised_date"], date)
                else str(row["promised_date"]),
                "promised_amount": _decimal_str(row["promised_amount"]),
                "open_amount": _decimal_str(row["open_amount"]),
                "currency": row["currency"],
            }
        )
    return dict(out)


def _unacknowledged(
    session: Session, tiers: TierTable, as_of: date, window_days: int, grace: int
) -> dict[int, list[dict]]:
    """Invoices whose rep has not acknowledged a tier within its escalation delay: the
    regional managers are told, naming the rep, on the first scan past the delay."""
    out: dict[int, list[dict]] = defaultdict(list)
    rep = aliased(Person)
    mgr = aliased(Person)
    days = days_since(Invoice.due_date, as_of)
    for tier in tiers.tiers:
        after = tier.escalate_unacknowledged_after_days
        if after is None:
            continue
        earliest, latest = tier.due_date_range(as_of)
        first_due = as_of - timedelta(days=tier.min_days + after)  # escalation point today
        last_due = first_due - timedelta(days=window_days - 1)
        stmt = (
            select(
                mgr.id.label("person_id"),
                Invoice.number,
                Invoice.open_amount,
                Invoice.currency,
                days.label("days"),
                Customer.code,
                Customer.name,
                rep.name.label("rep_name"),
                rep.code.label("rep_code"),
            )
            .join(Customer, Customer.id == Invoice.customer_id)
            .join(rep, rep.id == Customer.rep_id)
            .join(
                mgr,
                and_(
                    mgr.role == "regional_manager", mgr.active, mgr.region_id == Customer.region_id
                ),
            )
            .where(
                Invoice.open_amount > 0,
                not_(Invoice.disputed),
                Invoice.due_date <= first_due,
                Invoice.due_date >= last_due,
                Invoice.due_date <= latest,
                *([Invoice.due_date >= earliest] if earliest is not None else []),
                _not_silenced(as_of, grace),
                not_(
                    exists().where(
                        InvoiceAck.invoice_id == Invoice.id, InvoiceAck.tier == tier.name
                    )
                ),
            )
            .order_by(Invoice.due_date, Invoice.number)
        )
        for row in session.execute(stmt):
            out[row.person_id].append(
                {
                    "tier": tier.name,
                    "number": row.number,
                    "customer": row.code,
                    "customer_name": row.name,
                    "open_amount": _decimal_str(row.open_amount),
                    "currency": row.currency,
                    "days": int(row.days),
                    "rep": row.rep_name,
                    "rep_code": row.rep_code,
                    "after_days": after,
                }
            )
    return dict(out)


# --- window ----------------------------------------------------------------------------------


def scan_window_days(session: Session, as_of: date, calendar: BusinessCalendar) -> int:
    """Days since the previous scan (or the previous working day when there was none)."""
    last = session.execute(
        select(func.max(ScanRun.business_date)).where(ScanRun.business_date < as_of)
    ).scalar()
    if isinstance(last, str):  # SQLite returns MAX() of a DATE as text
        last = date.fromisoformat(last)
    previous = last or calendar.previous_business_day(as_of)
    return max(1, (as_of - previous).days)


# --- promises and credit holds (writes) ---------------------------------------------------


def settle_promises(
    session: Session, as_of: date, grace_days: int, actor: str, now: datetime | None = None
) -> list[int]:
    """Mark promises kept (invoice paid) or broken (date plus grace past, still open).

    Returns the ids of the promises broken now; both changes are audited (at ``now``).
    """
    at = now or utcnow()
    paid = select(Invoice.id).where(Invoice.open_amount == 0)
    kept = (
        session.execute(
            update(PromiseToPay)
            .where(PromiseToPay.status == "open", PromiseToPay.invoice_id.in_(paid))
            .values(status="kept")
            .returning(PromiseToPay.id)
        )
        .scalars()
        .all()
    )
    cutoff = as_of - timedelta(days=grace_days)
    broken = (
        session.execute(
            update(PromiseToPay)
            .where(
                PromiseToPay.status == "open",
                PromiseToPay.promised_date < cutoff,
                PromiseToPay.invoice_id.in_(select(Invoice.id).where(Invoice.open_amount > 0)),
            )
            .values(status="broken", broken_on=as_of)
            .returning(PromiseToPay.id)
        )
        .scalars()
        .all()
    )
    _audit_many(
        session,
        actor,
        at,
        "promise.kept",
        "promise_to_pay",
        [(str(pid), {"status": "open"}, {"status": "kept"}) for pid in kept],
    )
    after = {"status": "broken", "broken_on": as_of.isoformat()}
    _audit_many(
        session,
        actor,
        at,
        "promise.broken",
        "promise_to_pay",
        [(str(pid), {"status": "open"}, after) for pid in broken],
    )
    return list(broken)


def _audit_many(
    session: Session,
    actor: str,
    at: datetime,
    action: str,
    entity: str,
    items: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]],
) -> None:
    """Append audit rows with multi-row INSERTs, a chunk at a time (a first scan on a new
    ledger may put tens of thousands of customers on hold)."""
    for start in range(0, len(items), AUDIT_CHUNK):
        session.execute(
            insert(AuditLog),
            [
                {
                    "actor": actor,
                    "at": at,
                    "action": action,
                    "entity": entity,
                    "entity_id": eid,
                    "channel": "scheduler",
                    "before": before,
                    "after": after,
                }
                for eid, before, after in items[start : start + AUDIT_CHUNK]
            ],
        )


AUDIT_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class HoldChange:
    customer_id: int
    code: str
    name: str
    region_id: int
    rep_id: int
    on: bool
    reason: str | None


# Undisputed open invoices, spelt as the partial index ix_invoice_customer_overdue is (a
# literal 0, not a bound parameter, so both planners see that the index applies).
_UNDISPUTED_OPEN = (Invoice.open_amount > literal_column("0"), not_(Invoice.disputed))


def _hold_threshold(tiers: TierTable) -> Tier | None:
    holding = [t for t in tiers.tiers if t.credit_hold]
    return min(holding, key=lambda t: t.min_days) if holding else None


def apply_credit_holds(
    session: Session, tiers: TierTable, as_of: date, now: datetime, actor: str
) -> list[HoldChange]:
    """Put customers with an undisputed open invoice in a credit-hold tier on hold."""
    tier = _hold_threshold(tiers)
    if tier is None:
        return []
    _, latest = tier.due_date_range(as_of)
    reason = f"{tier.name}: invoices {tier.min_days}+ days overdue (aging scan of {as_of})"
    trigger = exists().where(
        Invoice.customer_id == Customer.id, *_UNDISPUTED_OPEN, Invoice.due_date <= latest
    )
    rows = session.execute(
        update(Customer)
        .where(Customer.credit_hold.is_(False), trigger)
        .values(
            credit_hold=True,
            credit_hold_reason=reason,
            credit_hold_source="scan",
            credit_hold_since=now,
        )
        .returning(Customer.id, Customer.code, Customer.name, Customer.region_id, Customer.rep_id)
    ).all()
    changes = [HoldChange(r.id, r.code, r.name, r.region_id, r.rep_id, True, reason) for r in rows]
    after = {"credit_hold": True, "reason": reason, "source": "scan"}
    _audit_many(
        session,
        actor,
        now,
        "credit_hold.on",
        "customer",
        [(c.code, {"credit_hold": False}, after) for c in changes],
    )
    return changes


def lift_credit_holds(
    session: Session, as_of: date, actor: str, now: datetime | None = None
) -> list[HoldChange]:
    """Lift holds the scan put on once no overdue item of the customer is open.

    Only customers in ``hold_recheck`` are looked at (their invoices changed since the last
    look; see ``HoldRecheck``). They are taken off that list first: a change committed by
    someone else after that adds the customer again for next time."""
    at = now or utcnow()
    claimed = session.execute(delete(HoldRecheck).returning(HoldRecheck.customer_id)).all()
    overdue = exists().where(
        Invoice.customer_id == Customer.id,
        *_UNDISPUTED_OPEN,
        Invoice.due_date < literal(as_of, Date),
    )
    rows = []
    ids = sorted(c for (c,) in claimed)
    for start in range(0, len(ids), RECHECK_BATCH):
        rows += session.execute(
            update(Customer)
            .where(
                Customer.id.in_(ids[start : start + RECHECK_BATCH]),
                Customer.credit_hold.is_(True),
                Customer.credit_hold_source == "scan",
                not_(overdue),
            )
            .values(
                credit_hold=False,
                credit_hold_reason=None,
                credit_hold_source=None,
                credit_hold_since=None,
            )
            .returning(
                Customer.id, Customer.code, Customer.name, Customer.region_id, Customer.rep_id
            )
        ).all()
    changes = [HoldChange(r.id, r.code, r.name, r.region_id, r.rep_id, False, None) for r in rows]
    before = {"credit_hold": True, "source": "scan"}
    after = {"credit_hold": False, "reason": "overdue items paid in full"}
    _audit_many(
        session,
        actor,
        at,
        "credit_hold.off",
        "customer",
        [(c.code, before, after) for c in changes],
    )
    return changes


# --- the scan as one transaction -------------------------------------------------------------


@dataclass(slots=True)
class ScanResult:
    business_date: date
    skipped: str | None = None
    window_days: int = 0
    planned: int = 0
    queued: int = 0
    holds_on: list[str] = field(default_factory=list)
    holds_off: list[str] = field(default_factory=list)
    promises_broken: int = 0


SCAN_LOCK_KEY = 0x4352_4544  # "CRED": serialises scans across PostgreSQL processes


def _lock_scan(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(SCAN_LOCK_KEY)))
    # SQLite: write_session's BEGIN IMMEDIATE already serialises writers


def run_scan(
    engine: Any,
    settings: Settings,
    calendar: BusinessCalendar,
    as_of: date,
    now: datetime,
    *,
    actor: str = "scheduler",
    force: bool = False,
) -> ScanResult:
    """Scan the ledger for ``as_of`` and queue what it says: one message per person and day,
    holding the reminders, broken promises, unacknowledged escalations and credit-hold
    changes. Running it again for the same day queues nothing new."""
    from credit.store.db import write_session
    from credit.store.outbox import enqueue

    if not force and not calendar.is_business_day(as_of):
        return ScanResult(as_of, skipped=f"{as_of} is not a working day")
    with write_session(engine) as s:
        _lock_scan(s)
        window_days = scan_window_days(s, as_of, calendar)
        plan = plan_scan(s, settings, as_of, window_days)
        broken = settle_promises(s, as_of, settings.reminders.promise_grace_days, actor, now)
        holds_on = apply_credit_holds(s, settings.tier_table, as_of, now, actor)
        holds_off = lift_credit_holds(s, as_of, actor, now)
        plan.add_hold_changes(*_holds_by_person(s, holds_on + holds_off))
        people = _people(s, {r.person_id for r in plan.reminders})
        messages = []
        for r in plan.reminders:
            person = people[r.person_id]
            r.fill_person(person)
            key = f"reminder:{r.person_id}:{as_of.isoformat()}"
            messages.append(
                _message(settings, calendar, now, person, key, "reminder", as_of, r.payload(as_of))
            )
        queued = enqueue(s, messages, now)
        _record_run(s, as_of, now, queued, sum(r.invoice_count for r in plan.reminders))
        return ScanResult(
            as_of,
            None,
            window_days,
            len(plan.reminders),
            queued,
            [c.code for c in holds_on],
            [c.code for c in holds_off],
            len(broken),
        )


def review_credit_holds(
    engine: Any,
    settings: Settings,
    calendar: BusinessCalendar,
    as_of: date,
    now: datetime,
    *,
    actor: str = "scheduler",
) -> list[str]:
    """The credit-hold review job: lift the scan's holds where the overdue items are paid
    and tell the rep, the region's managers and the credit desk (the scan puts holds on)."""
    from credit.store.db import write_session
    from credit.store.outbox import enqueue

    with write_session(engine) as s:
        lifted = lift_credit_holds(s, as_of, actor, now)
        per_person, totals = _holds_by_person(s, lifted)
        people = _people(s, set(per_person))
        messages = []
        for pid, items in per_person.items():
            batch = ",".join(sorted(i["customer"] for i in items))
            digest = hashlib.sha1(f"{batch}|{totals[pid]}".encode()).hexdigest()[:12]
            key = f"credit_hold:{pid}:{as_of.isoformat()}:{digest}"
            payload = {
                "kind": "credit_hold",
                "business_date": as_of.isoformat(),
                "credit_holds": items[:HOLD_ITEMS_LISTED],
                "credit_holds_total": totals[pid],
            }
            messages.append(
                _message(settings, calendar, now, people[pid], key, "credit_hold", as_of, payload)
            )
        enqueue(s, messages, now)
        return [c.code for c in lifted]


def _message(
    settings: Settings,
    calendar: BusinessCalendar,
    now: datetime,
    person: Person,
    key: str,
    kind: str,
    as_of: date,
    payload: dict[str, Any],
) -> Any:
    """An outbox row for ``person``: routed to their channel, held for their send window."""
    from credit.calendar import SendWindow
    from credit.store.outbox import NewMessage, route

    window = SendWindow(settings.calendar.send_window_start, settings.calendar.send_window_end)
    return NewMessage(
        key,
        person.id,
        route(person, settings.outbox.channels),
        kind,
        as_of,
        {**payload, "recipient": _recipient(person)},
        _window_opens(window, now, person.time_zone, calendar),
    )


@lru_cache(maxsize=256)
def _window_opens(window: Any, now: datetime, zone: str, calendar: BusinessCalendar) -> datetime:
    """When the send window opens for a time zone (the same for everyone in it)."""
    return window.next_open(now, zone, calendar)


def _hold_item(change: HoldChange) -> dict[str, Any]:
    return {
        "customer": change.code,
        "customer_name": change.name,
        "on": change.on,
        "reason": change.reason,
    }


def _recipient(person: Person) -> dict[str, Any]:
    return {
        "code": person.code,
        "name": person.name,
        "role": person.role,
        "locale": person.locale,
        "time_zone": person.time_zone,
    }


def _people(session: Session, ids: set[int]) -> dict[int, Person]:
    if not ids:
        return {}
    return {p.id: p for p in session.execute(select(Person).where(Person.id.in_(ids))).scalars()}


def _holds_by_person(
    session: Session, changes: list[HoldChange]
) -> tuple[dict[int, list[dict[str, Any]]], dict[int, int]]:
    """Who hears of which hold changes: the rep, the region's managers and the credit desk.

    Returns the first ``HOLD_ITEMS_LISTED`` changes per person and each person's total (the
    first scan on a new ledger may put tens of thousands of customers on hold)."""
    listed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    totals: dict[int, int] = defaultdict(int)
    if not changes:
        return listed, totals
    staff = session.execute(
        select(Person.id, Person.role, Person.region_id).where(
            Person.active, Person.role.in_(["regional_manager", CREDIT_DESK_ROLE])
        )
    ).all()
    desk = [p.id for p in staff if p.role == CREDIT_DESK_ROLE]
    active_reps = set(
        session.execute(
            select(Person.id).where(Person.active, Person.id.in_({c.rep_id for c in changes}))
        ).scalars()
    )
    managers: dict[int, list[int]] = defaultdict(list)
    for p in staff:
        if p.role == "regional_manager" and p.region_id is not None:
            managers[p.region_id].append(p.id)
    for c in changes:
        item = _hold_item(c)
        rep = [c.rep_id] if c.rep_id in active_reps else []
        for pid in {*rep, *desk, *managers.get(c.region_id, ())}:
            totals[pid] += 1
            if len(listed[pid]) < HOLD_ITEMS_LISTED:
                listed[pid].append(item)
    return listed, totals


def _record_run(session: Session, as_of: date, now: datetime, queued: int, invoices: int) -> None:
    from credit.store.sqlfuncs import insert_ignoring_duplicates

    stmt = insert_ignoring_duplicates(session.get_bind().dialect.name, ScanRun.__table__)
    session.execute(stmt.values(business_date=as_of, started_at=now, messages=0, invoices=0))
    session.execute(
        update(ScanRun)
        .where(ScanRun.business_date == as_of)
        .values(finished_at=now, messages=ScanRun.messages + queued, invoices=invoices)
    )
