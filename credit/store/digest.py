"""The daily digest: the ledger's numbers in SQL, one payload per person, one outbox row each.

Who gets what (``[digest]`` settings):

* each active regional manager: their region (``scope = "region"``);
* each active person of a ``company_roles`` role (credit desk, finance, executives): the whole
  company, with a per-region table (``scope = "company"``);
* each active rep (``send_to_reps``): a short "your day" — promises to pay due today,
  invoices of their customers entering a tier since the previous business day, their pending
  shipment requests (``scope = "rep"``) — when there is something on it; a rep with an empty
  day gets no message.

The numbers (formulas in ``credit.analytics``): open receivables per aging bucket and
currency with the change since the previous snapshot; DSO and collection rate month- and
quarter-to-date; the top overdue customers; promises due today and broken since the previous
business day; credit holds put on or lifted since the previous business day's digest time
(the audit log's ``credit_hold.on``/``off``, plus holds set by hand or by import, found by
``customer.credit_hold_since``); pending shipment requests with their age; the bad-debt
provision by aging bracket plus the specific (100 %) items.

How it stays cheap on a large ledger: the aggregates are computed once per run for everyone,
set-based — one ``GROUP BY`` of the open invoices per region × rep × specific × bucket ×
currency; one of this quarter's billing and one of this quarter's payments per region × rep ×
currency; one per-customer aggregate ranked in SQL, of which only the top customers of each
region and rep come back — then each scope (company, region, rep) is a sum over those few
thousand rows, and each person's payload is a copy of their scope's. The lists (promises,
holds, requests, invoices entering a tier) are small selections by index. Lists are capped
at ``LIST_LIMIT`` items; ``counts`` gives the full numbers. On 1,000,000 invoices, 100,000
customers, 1,000 reps and 100 managers a run takes about 13 s on SQLite and 10 s on
PostgreSQL, peak RSS about 135 MB (development machine).

The payload (``kind = "digest"``; amounts are decimal strings per currency, the reporting
currency — ``[policy] default_currency`` — always present, zeros included): ``business_date``,
``scope`` / ``scope_name``, ``recipient``, ``reporting_currency``, ``buckets`` (key, label,
min/max days, ``totals``, ``change`` or None, ``invoices``), ``change_since``,
``total_open``, ``total_overdue``, ``dso`` and ``collection_rate`` (``month``/``quarter``,
reporting currency; ``*_by_currency`` for all), ``periods``, ``top_overdue``,
``promises_due_today``, ``promises_broken``, ``holds_on``, ``holds_off``,
``pending_approvals``, ``provision`` (``brackets``, ``specific``, ``specific_total``,
``specific_count``, ``total``), ``regions`` (company scope), ``trend`` (region and company
scopes), ``your_day`` (rep scope), ``counts``.

History: ``aging_snapshot`` keeps, per business date, the bucket totals per region and for the
company. The change of a bucket is against the latest snapshot before the as-of date
(``change_since`` names its date; normally the previous business day); without one there is
no change (``None``), and nothing is recomputed from the ledger (payments are not dated back
reliably enough to age the ledger as it stood). The trend is the overdue total of each
snapshot in the last ``trend_days`` days, plus today's. ``run_digest`` writes today's
snapshot (replacing that date's rows) and queues the messages in one transaction, under the
idempotency key ``digest:<person id>:<date>``: a second run on the same day queues nothing.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlmodel import Session

from credit import analytics as an
from credit.calendar import BusinessCalendar
from credit.settings import Settings
from credit.store.models import (
    AgingSnapshot,
    AuditLog,
    Customer,
    Invoice,
    Payment,
    Person,
    PromiseToPay,
    Region,
    ShipmentRequest,
)
from credit.store.sqlfuncs import unindexed

KIND = "digest"
# items listed per section (promises, holds, requests, entering a tier); counts cover all
LIST_LIMIT = 50
DIGEST_LOCK_KEY = 0x4447_5354  # "DGST": serialises digest runs across PostgreSQL processes
# PostgreSQL memory for the per-customer ranking sort (per transaction, SET LOCAL)
DIGEST_WORK_MEM = "64MB"
COMPANY = None  # the company's snapshot rows have no region

# snapshot totals: region id (None: the company) → bucket key → currency → (amount, invoices)
SnapshotTotals = Mapping[int | None, Mapping[str, Mapping[str, tuple[Decimal, int]]]]


# --- results -----------------------------------------------------------------------------------


@dataclass(slots=True)
class DigestPayload:
    """One person's digest: the outbox payload (described in the module docstring)."""

    person_id: int
    code: str
    scope: str
    payload: dict[str, Any]


@dataclass(slots=True)
class DigestPlan:
    business_date: date
    digests: list[DigestPayload]
    # what write_snapshot stores for the date
    snapshot: dict[int | None, dict[str, dict[str, tuple[Decimal, int]]]]
    reps_with_empty_day: int = 0


@dataclass(slots=True)
class DigestResult:
    business_date: date
    skipped: str | None = None
    planned: int = 0
    queued: int = 0
    snapshot_rows: int = 0
    by_scope: dict[str, int] = field(default_factory=dict)


# --- the aggregates, once per run --------------------------------------------------------------


def _money(cents: Any) -> Decimal:
    return Decimal(int(cents or 0)).scaleb(-2)  # as MoneyAmount reads it: exact, two decimals


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


@dataclass(slots=True)
class _Figures:
    """Sums for one scope (or one region × rep cell), per bucket key and currency."""

    buckets: dict[str, an.Amounts] = field(default_factory=lambda: defaultdict(dict))
    invoices: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    # open amounts of customers not provided for specifically (the provision brackets' base)
    bases: dict[str, an.Amounts] = field(default_factory=lambda: defaultdict(dict))
    specific: an.Amounts = field(default_factory=dict)
    billed: dict[str, an.Amounts] = field(default_factory=lambda: defaultdict(dict))
    collected: dict[str, an.Amounts] = field(default_factory=lambda: defaultdict(dict))

    def absorb(self, other: _Figures) -> None:
        for mine, theirs in (
            (self.buckets, other.buckets),
            (self.invoices, other.invoices),
            (self.bases, other.bases),
            (self.billed, other.billed),
            (self.collected, other.collected),
        ):
            for key, amounts in theirs.items():
                _add_into(mine[key], amounts)
        _add_into(self.specific, other.specific)


def _add_into(target: dict[str, Any], amounts: Mapping[str, Any]) -> None:
    for cur, value in amounts.items():
        target[cur] = target.get(cur, 0) + value


def _is_specific(settings: Settings) -> Any:
    ratings = settings.digest.specific_provision_ratings
    """1 for a customer provided for in full (a rating of ``specific_provision_ratings``, or
    blacklisted), else 0."""
    blacklisted = Customer.blacklisted.is_(True)
    flag = or_(Customer.rating.in_(ratings), blacklisted) if ratings else blacklisted
    return case((flag, 1), else_=0)


@dataclass(frozen=True, slots=True)
class _CustomerAmount:
    """A customer's overdue (or, for the specific provision, open) amount in one currency."""

    customer_id: int
    code: str
    name: str
    region_id: int
    rep_id: int
    currency: str
    amount: Decimal
    max_days: int


@dataclass(slots=True)
class _Ledger:
    """What the ledger statements give: sums per (region, rep), the top overdue and the
    largest specific-provision customers of every region and rep (the company's top ones are
    among its regions'), and how many specific-provision customers each region and rep has."""

    cells: dict[tuple[int, int], _Figures] = field(default_factory=lambda: defaultdict(_Figures))
    overdue: list[_CustomerAmount] = field(default_factory=list)
    specific: list[_CustomerAmount] = field(default_factory=list)
    specific_by_region: dict[int, int] = field(default_factory=dict)
    specific_by_rep: dict[int, int] = field(default_factory=dict)


def _aging_statement(settings: Settings, as_of: date, dialect: str) -> Any:
    """Open invoices per region × rep × specific × aging bucket × currency: count and sum.

    PostgreSQL joins each invoice to its customer and hash-aggregates. SQLite, which sorts to
    group, first groups the invoice table alone per customer × bucket × currency (narrow
    rows, read in table order) and joins the customers to those groups. Either way the
    per-row CASEs sit in a subquery grouped outside: they carry bound dates, which
    PostgreSQL would not recognise as the same expression in a GROUP BY."""
    buckets = settings.buckets
    due = Invoice.due_date
    bucket = case(
        *[
            (due >= as_of - timedelta(days=b.max_days), literal(i))
            for i, b in enumerate(buckets[:-1])
            if b.max_days is not None
        ],
        else_=literal(len(buckets) - 1),
    )
    cents = type_coerce(Invoice.open_amount, BigInteger)
    if dialect == "sqlite":
        inv = (
            select(
                unindexed(Invoice.customer_id).label("customer_id"),
                bucket.label("bucket"),
                Invoice.currency,
                cents.label("cents"),
            )
            .where(Invoice.open_amount > 0)
            .subquery("inv")
        )
        source = (
            select(
                inv.c.customer_id,
                inv.c.bucket,
                inv.c.currency,
                func.count().label("n"),
                func.sum(inv.c.cents).label("cents"),
            )
            .group_by(inv.c.customer_id, inv.c.bucket, inv.c.currency)
            .cte("per_customer")
            .prefix_with("MATERIALIZED")
        )
        src = source.c
        rows = (
            select(
                Customer.region_id,
                Customer.rep_id,
                _is_specific(settings).label("specific"),
                src.bucket,
                src.currency,
                src.n,
                src.cents,
            )
            .join(Customer, Customer.id == src.customer_id)
            .subquery("rows")
        )
    else:
        rows = (
            select(
                Customer.region_id,
                Customer.rep_id,
                _is_specific(settings).label("specific"),
                bucket.label("bucket"),
                Invoice.currency,
                literal(1, Integer).label("n"),
                cents.label("cents"),
            )
            .select_from(Invoice)
            .join(Customer, Customer.id == Invoice.customer_id)
            .where(Invoice.open_amount > 0)
            .subquery("rows")
        )
    group = (rows.c.region_id, rows.c.rep_id, rows.c.specific, rows.c.bucket, rows.c.currency)
    return select(*group, func.sum(rows.c.n), func.sum(rows.c.cents)).group_by(*group)


def _billing_statement(model: Any, day: Any, as_of: date) -> Any:
    """Amounts billed (``Invoice``, by issue date) or collected (``Payment``, by payment
    date) quarter-to-date per region × rep × currency, with the month-to-date part. Reads
    the table once; aggregates only the quarter's rows."""
    m_start = an.period_start(as_of, "month")
    q_start = an.period_start(as_of, "quarter")
    cents = type_coerce(model.amount, BigInteger)
    return (
        select(
            Customer.region_id,
            Customer.rep_id,
            model.currency,
            func.sum(case((day >= m_start, cents), else_=0)),
            func.sum(cents),
        )
        .select_from(model)
        .join(Customer, Customer.id == model.customer_id)
        .where(day >= q_start, day <= as_of)
        .group_by(Customer.region_id, Customer.rep_id, model.currency)
    )


def _ranking_statement(settings: Settings, as_of: date, by_rep: bool) -> Any:
    """The top overdue customers and the largest specific-provision customers of every
    region (and rep), ranked in SQL on narrow rows (ids and amounts, an integer tiebreak);
    code and name are joined to the few that come back. Specific rows also carry how many
    specific customers their region and rep have (window counts)."""
    n = settings.digest.top_customers
    open_cents = type_coerce(Invoice.open_amount, BigInteger)
    per_customer = (
        select(
            # SQLite: read the table in order, not through the customer index (a random
            # row look-up per invoice)
            unindexed(Invoice.customer_id).label("customer_id"),
            Invoice.currency,
            func.sum(case((Invoice.due_date < as_of, open_cents), else_=0)).label("overdue"),
            func.sum(open_cents).label("open"),
            func.min(Invoice.due_date).label("oldest"),
        )
        .where(Invoice.open_amount > 0)
        .group_by(unindexed(Invoice.customer_id), Invoice.currency)
        .subquery("per_customer")
    )
    pc = per_customer.c
    placed = (
        select(
            pc.customer_id,
            pc.currency,
            pc.overdue,
            pc.open,
            pc.oldest,
            Customer.region_id,
            Customer.rep_id,
            _is_specific(settings).label("specific"),
        )
        .join(Customer, Customer.id == pc.customer_id)
        .cte("placed")
        .prefix_with("MATERIALIZED")
    )
    c = placed.c
    none = literal(None, Integer)

    def ranked(kind: str, amount: Any, where: Any, counted: bool) -> Any:
        order = (amount.desc(), c.customer_id, c.currency)
        rn_rep = func.row_number().over(partition_by=c.rep_id, order_by=order)
        inner = (
            select(
                literal(kind, String).label("kind"),
                c.customer_id,
                c.currency,
                amount.label("cents"),
                c.oldest,
                c.region_id,
                c.rep_id,
                func.row_number().over(partition_by=c.region_id, order_by=order).label("rn_a"),
                (rn_rep if by_rep else literal(n + 1)).label("rn_b"),
                (func.count().over(partition_by=c.region_id) if counted else none).label(
                    "n_region"
                ),
                (func.count().over(partition_by=c.rep_id) if counted and by_rep else none).label(
                    "n_rep"
                ),
            )
            .where(where)
            .subquery(kind)
        )
        return select(inner).where(or_(inner.c.rn_a <= n, inner.c.rn_b <= n))

    both = union_all(
        ranked("overdue", c.overdue, c.overdue > 0, counted=False),
        ranked("specific", c.open, c.specific == 1, counted=True),
    ).subquery("ranked")
    return select(both, Customer.code.label("code"), Customer.name.label("name")).join(
        Customer, Customer.id == both.c.customer_id
    )


def _read_ledger(session: Session, settings: Settings, as_of: date, by_rep: bool) -> _Ledger:
    """The ledger's aggregates for ``as_of``, computed once for everyone: aging per region ×
    rep (× specific × bucket × currency), billing and collections per region × rep, and the
    ranked customers."""
    keys = an.bucket_keys(settings.buckets)
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        # the per-customer aggregate and its rankings: keep them in memory
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{DIGEST_WORK_MEM}'")
    out = _Ledger()
    for region_id, rep_id, specific, bucket, cur, n, cents in conn.execute(
        _aging_statement(settings, as_of, conn.dialect.name)
    ):
        fig = out.cells[(region_id, rep_id)]
        key = keys[int(bucket)]
        amount = _money(cents)
        _add_into(fig.buckets[key], {cur: amount})
        _add_into(fig.invoices[key], {cur: int(n)})
        _add_into((fig.specific if specific else fig.bases[key]), {cur: amount})
    for model, day, target in (
        (Invoice, Invoice.issue_date, "billed"),
        (Payment, Payment.paid_on, "collected"),
    ):
        for region_id, rep_id, cur, month_c, quarter_c in conn.execute(
            _billing_statement(model, day, as_of)
        ):
            sums = getattr(out.cells[(region_id, rep_id)], target)
            _add_into(sums["quarter"], {cur: _money(quarter_c)})
            if month_c:
                _add_into(sums["month"], {cur: _money(month_c)})
    for row in conn.execute(_ranking_statement(settings, as_of, by_rep)).mappings():
        item = _CustomerAmount(
            row["customer_id"],
            row["code"],
            row["name"],
            row["region_id"],
            row["rep_id"],
            row["currency"],
            _money(row["cents"]),
            (as_of - _as_date(row["oldest"])).days,
        )
        if row["kind"] == "overdue":
            out.overdue.append(item)
        else:
            out.specific.append(item)
            out.specific_by_region[item.region_id] = int(row["n_region"])
            if by_rep:
                out.specific_by_rep[item.rep_id] = int(row["n_rep"])
    return out


# --- the lists: promises, holds, requests, invoices entering a tier ----------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    """A listed thing with where it belongs: a region, a rep (and who raised a request)."""

    region_id: int
    rep_id: int
    sort: tuple[Any, ...]
    data: dict[str, Any]
    requested_by: int | None = None


def _promises(session: Session, as_of: date, since_day: date) -> tuple[list[_Item], list[_Item]]:
    """Open promises due on ``as_of`` (invoice still open), and promises marked broken after
    ``since_day`` (the previous business day) up to ``as_of``."""
    stmt = (
        select(
            PromiseToPay.id,
            PromiseToPay.promised_date,
            PromiseToPay.amount,
            PromiseToPay.currency,
            PromiseToPay.status,
            PromiseToPay.broken_on,
            Invoice.number,
            Invoice.open_amount,
            Customer.code,
            Customer.name,
            Customer.region_id,
            Customer.rep_id,
        )
        .join(Invoice, Invoice.id == PromiseToPay.invoice_id)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(
            or_(
                and_(
                    PromiseToPay.status == "open",
                    PromiseToPay.promised_date == as_of,
                    Invoice.open_amount > 0,
                ),
                and_(
                    PromiseToPay.status == "broken",
                    PromiseToPay.broken_on > since_day,
                    PromiseToPay.broken_on <= as_of,
                ),
            )
        )
    )
    due: list[_Item] = []
    broken: list[_Item] = []
    for r in session.execute(stmt):
        data = {
            "number": r.number,
            "customer": r.code,
            "customer_name": r.name,
            "amount": str(r.amount),
            "currency": r.currency,
            "promised_date": _as_date(r.promised_date).isoformat(),
            "open_amount": str(r.open_amount),
        }
        if r.status == "broken":
            data["broken_on"] = _as_date(r.broken_on).isoformat()
            broken.append(_Item(r.region_id, r.rep_id, (data["promised_date"], r.number), data))
        else:
            due.append(_Item(r.region_id, r.rep_id, (r.number,), data))
    return due, broken


HOLD_ON, HOLD_OFF = "credit_hold.on", "credit_hold.off"


def _holds(session: Session, since: datetime, now: datetime) -> tuple[list[_Item], list[_Item]]:
    """Credit holds put on and lifted in ``(since, now]``: the audit log's ``credit_hold.on``
    and ``credit_hold.off`` entries, plus customers on hold since then without one (a hold set
    by hand or by an import). A customer is listed once per list (its latest entry)."""
    stmt = (
        select(
            AuditLog.id,
            AuditLog.action,
            AuditLog.at,
            AuditLog.after,
            Customer.id.label("customer_id"),
            Customer.code,
            Customer.name,
            Customer.region_id,
            Customer.rep_id,
        )
        .join(Customer, Customer.code == AuditLog.entity_id)
        .where(
            AuditLog.action.in_([HOLD_ON, HOLD_OFF]),
            AuditLog.entity == "customer",
            AuditLog.at > since,
            AuditLog.at <= now,
        )
        .order_by(AuditLog.at, AuditLog.id)
    )
    on: dict[int, _Item] = {}
    off: dict[int, _Item] = {}
    for r in session.execute(stmt):
        data = {"customer": r.code, "customer_name": r.name, "at": r.at.isoformat()}
        if r.action == HOLD_ON:
            data["reason"] = (r.after or {}).get("reason")
            on[r.customer_id] = _Item(r.region_id, r.rep_id, (r.code,), data)
        else:
            off[r.customer_id] = _Item(r.region_id, r.rep_id, (r.code,), data)
    by_hand = select(
        Customer.id,
        Customer.code,
        Customer.name,
        Customer.region_id,
        Customer.rep_id,
        Customer.credit_hold_reason,
        Customer.credit_hold_since,
    ).where(
        Customer.credit_hold.is_(True),
        Customer.credit_hold_since > since,
        Customer.credit_hold_since <= now,
    )
    for r in session.execute(by_hand):
        if r.id not in on:
            data = {
                "customer": r.code,
                "customer_name": r.name,
                "at": r.credit_hold_since.isoformat(),
                "reason": r.credit_hold_reason,
            }
            on[r.id] = _Item(r.region_id, r.rep_id, (r.code,), data)
    return list(on.values()), list(off.values())


def _pending_requests(session: Session, now: datetime) -> list[_Item]:
    """Shipment requests waiting for a decision, with their age in whole hours."""
    stmt = (
        select(
            ShipmentRequest.id,
            ShipmentRequest.order_ref,
            ShipmentRequest.amount,
            ShipmentRequest.currency,
            ShipmentRequest.created_at,
            ShipmentRequest.requested_by_id,
            Customer.code,
            Customer.name,
            Customer.region_id,
            Customer.rep_id,
        )
        .join(Customer, Customer.id == ShipmentRequest.customer_id)
        .where(ShipmentRequest.status == "pending")
    )
    items = []
    for r in session.execute(stmt):
        age = max(0, int((now - r.created_at).total_seconds() // 3600))
        data = {
            "request_id": r.id,
            "order_ref": r.order_ref,
            "customer": r.code,
            "customer_name": r.name,
            "amount": str(r.amount),
            "currency": r.currency,
            "age_hours": age,
            "created_at": r.created_at.isoformat(),
        }
        items.append(_Item(r.region_id, r.rep_id, (r.created_at, r.id), data, r.requested_by_id))
    return items


def _entering_tier(
    session: Session, settings: Settings, as_of: date, window_days: int, reps: set[int]
) -> list[_Item]:
    """Open invoices of these reps' customers that entered a tier in the last
    ``window_days`` days (since the previous business day): read through the due-date index,
    only the due dates that can be."""
    tiers = settings.tier_table
    dates = {
        as_of - timedelta(days=t.min_days + k) for t in tiers.tiers for k in range(window_days)
    }
    if not reps or not dates:
        return []
    stmt = (
        select(
            Invoice.number,
            Invoice.due_date,
            Invoice.open_amount,
            Invoice.currency,
            Invoice.disputed,
            Customer.code,
            Customer.name,
            Customer.region_id,
            Customer.rep_id,
        )
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(
            Invoice.due_date.in_(sorted(dates)),
            Invoice.open_amount > 0,
            Customer.rep_id.in_(sorted(reps)),
        )
    )
    items = []
    for r in session.execute(stmt):
        days = (as_of - _as_date(r.due_date)).days
        tier = tiers.tier_for(days)
        if tier is None or days - tier.min_days >= window_days:
            continue
        data = {
            "number": r.number,
            "customer": r.code,
            "customer_name": r.name,
            "tier": tier.name,
            "amount": str(r.open_amount),
            "currency": r.currency,
            "days": days,
            "due_date": _as_date(r.due_date).isoformat(),
            "disputed": bool(r.disputed),
        }
        items.append(_Item(r.region_id, r.rep_id, (-days, r.number), data))
    return items


# --- snapshots ---------------------------------------------------------------------------------


def write_snapshot(
    session: Session, as_of: date, totals: SnapshotTotals, now: datetime | None = None
) -> int:
    """Store the aging totals of ``as_of`` (region id, or None for the company → bucket key
    → currency → (amount, invoices)), replacing whatever that date had. Returns the rows."""
    from credit.store.types import utcnow

    at = now or utcnow()
    session.execute(delete(AgingSnapshot).where(AgingSnapshot.business_date == as_of))
    rows = [
        {
            "business_date": as_of,
            "region_id": region_id,
            "bucket": key,
            "currency": cur,
            "amount": amount,
            "invoices": count,
            "taken_at": at,
        }
        for region_id, by_bucket in totals.items()
        for key, by_currency in by_bucket.items()
        for cur, (amount, count) in by_currency.items()
    ]
    for start in range(0, len(rows), 1000):
        session.execute(insert(AgingSnapshot), rows[start : start + 1000])
    return len(rows)


@dataclass(slots=True)
class _History:
    """Snapshots before the as-of date: the previous one (for changes) and the trend's."""

    previous_date: date | None = None
    # region id (None: company) → bucket key → currency → amount, of the previous snapshot
    previous: dict[int | None, dict[str, an.Amounts]] = field(default_factory=dict)
    # dates of the trend window, and region id → date → overdue per currency
    dates: list[date] = field(default_factory=list)
    overdue: dict[int | None, dict[date, an.Amounts]] = field(default_factory=dict)


def _history(session: Session, as_of: date, trend_days: int) -> _History:
    h = _History()
    last = session.execute(
        select(func.max(AgingSnapshot.business_date)).where(
            AgingSnapshot.business_date < as_of, AgingSnapshot.region_id.is_(None)
        )
    ).scalar()
    if last is None:
        return h
    h.previous_date = _as_date(last)
    first = min(as_of - timedelta(days=trend_days - 1), h.previous_date)
    stmt = select(
        AgingSnapshot.business_date,
        AgingSnapshot.region_id,
        AgingSnapshot.bucket,
        AgingSnapshot.currency,
        AgingSnapshot.amount,
    ).where(AgingSnapshot.business_date >= first, AgingSnapshot.business_date < as_of)
    window_start = as_of - timedelta(days=trend_days - 1)
    dates: set[date] = set()
    for day, region_id, key, cur, amount in session.execute(stmt):
        day = _as_date(day)
        if day == h.previous_date:
            _add_into(h.previous.setdefault(region_id, {}).setdefault(key, {}), {cur: amount})
        if day >= window_start:
            dates.add(day)
            point = h.overdue.setdefault(region_id, {}).setdefault(day, {})
            if key != "current":
                _add_into(point, {cur: amount})
    h.dates = sorted(dates)
    return h


# --- payloads ----------------------------------------------------------------------------------


def _region_of(item: _Item | _CustomerAmount) -> int:
    return item.region_id


def _grouped(items: Iterable[Any], key: Any) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = defaultdict(list)
    for item in items:
        out[key(item)].append(item)
    return out


@dataclass(slots=True)
class _Lists:
    """The listed sections, all of them or one region's or one rep's."""

    promises_due: list[_Item] = field(default_factory=list)
    promises_broken: list[_Item] = field(default_factory=list)
    holds_on: list[_Item] = field(default_factory=list)
    holds_off: list[_Item] = field(default_factory=list)
    pending: list[_Item] = field(default_factory=list)
    overdue: list[_CustomerAmount] = field(default_factory=list)
    specific: list[_CustomerAmount] = field(default_factory=list)
    specific_count: int = 0
    entering: list[_Item] = field(default_factory=list)


def _listed(items: list[_Item], limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
    return [i.data for i in sorted(items, key=lambda i: i.sort)[:limit]]


def _by_customer(
    items: Iterable[_CustomerAmount],
) -> dict[int, tuple[_CustomerAmount, an.Amounts, int]]:
    """Candidates merged per customer (a customer owing in two currencies has two rows)."""
    out: dict[int, tuple[_CustomerAmount, an.Amounts, int]] = {}
    for c in items:
        first, amounts, days = out.get(c.customer_id, (c, {}, c.max_days))
        out[c.customer_id] = (first, an.add(amounts, {c.currency: c.amount}), max(days, c.max_days))
    return out


class _Builder:
    """Builds each scope's payload from the run's aggregates."""

    def __init__(
        self,
        settings: Settings,
        as_of: date,
        cells: dict[tuple[int, int], _Figures],
        history: _History,
        regions: dict[int, tuple[str, str]],
    ) -> None:
        self.settings = settings
        self.as_of = as_of
        self.cells = cells
        self.history = history
        self.regions = regions
        self.buckets = settings.buckets
        self.keys = an.bucket_keys(self.buckets)
        self.reporting = settings.policy.default_currency
        self.rates = an.provision_rates(settings.digest.provision_percent, self.buckets)
        self.n = settings.digest.top_customers
        self.by_region: dict[int, list[_Figures]] = defaultdict(list)
        self.by_rep: dict[int, list[_Figures]] = defaultdict(list)
        for (region_id, rep_id), fig in cells.items():
            self.by_region[region_id].append(fig)
            self.by_rep[rep_id].append(fig)

    def figures(self, *, region_id: int | None = None, rep_id: int | None = None) -> _Figures:
        """The sums of the company, of a region or of a rep's customers."""
        if region_id is not None:
            parts = self.by_region.get(region_id, [])
        elif rep_id is not None:
            parts = self.by_rep.get(rep_id, [])
        else:
            parts = list(self.cells.values())
        total = _Figures()
        for fig in parts:
            total.absorb(fig)
        return total

    def aging(self, fig: _Figures) -> dict[str, an.Amounts]:
        return {k: dict(fig.buckets.get(k, {})) for k in self.keys}

    def snapshot_of(self, fig: _Figures, always: bool) -> dict[str, dict[str, tuple]]:
        """A scope's snapshot rows: every bucket in every currency it has (zeros included);
        ``always``: at least the reporting currency, so the date's snapshot exists."""
        aging = self.aging(fig)
        currencies = an.currencies_of(*aging.values(), first=self.reporting if always else None)
        return {
            k: {
                cur: (aging[k].get(cur, an.ZERO), fig.invoices.get(k, {}).get(cur, 0))
                for cur in currencies
            }
            for k in self.keys
        }

    def ratios(self, fig: _Figures, open_: an.Amounts) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dso": {},
            "collection_rate": {},
            "dso_by_currency": {},
            "collection_rate_by_currency": {},
        }
        for period in an.PERIODS:
            days = an.period_days(self.as_of, period)
            billed = fig.billed.get(period, {})
            collected = fig.collected.get(period, {})
            dso = an.dso_by_currency(open_, billed, days)
            rate = an.collection_rate_by_currency(collected, billed)
            out["dso"][period] = an.number_text(dso.get(self.reporting))
            out["collection_rate"][period] = an.number_text(rate.get(self.reporting))
            out["dso_by_currency"][period] = {c: an.number_text(v) for c, v in dso.items()}
            out["collection_rate_by_currency"][period] = {
                c: an.number_text(v) for c, v in rate.items()
            }
        return out

    def trend(self, region_id: int | None, today_overdue: an.Amounts) -> list[dict[str, Any]]:
        points = self.history.overdue.get(region_id, {})
        series = [(d, points.get(d, {})) for d in self.history.dates] + [
            (self.as_of, today_overdue)
        ]
        currencies = an.currencies_of(*(a for _, a in series), first=self.reporting)
        return [
            {"date": d.isoformat(), "overdue": an.money_text(an.with_currencies(a, currencies))}
            for d, a in series
        ]

    def payload(
        self,
        scope: str,
        scope_name: str,
        fig: _Figures,
        lists: _Lists,
        *,
        snapshots: bool = True,
        region_id: int | None = None,
    ) -> dict[str, Any]:
        """``snapshots``: the change and the trend come from the snapshots of ``region_id``
        (None: the company's); a rep's portfolio has none."""
        aging = self.aging(fig)
        open_ = an.total_open(aging)
        overdue = an.total_overdue(aging)
        currencies = an.currencies_of(*aging.values(), first=self.reporting)
        since = self.history.previous_date if snapshots else None
        previous = self.history.previous.get(region_id, {}) if since is not None else None
        changes = an.bucket_changes(aging, previous)
        buckets = []
        for b, k in zip(self.buckets, self.keys, strict=True):
            change = None
            if changes is not None:
                shown = an.currencies_of(changes[k], *aging.values(), first=self.reporting)
                change = an.money_text(an.with_currencies(changes[k], shown))
            buckets.append(
                {
                    "key": k,
                    "label": b.label,
                    "min_days": b.min_days,
                    "max_days": b.max_days,
                    "totals": an.money_text(an.with_currencies(aging[k], currencies)),
                    "change": change,
                    "invoices": sum(fig.invoices.get(k, {}).values()),
                }
            )
        top = sorted(
            _by_customer(lists.overdue).values(),
            key=lambda t: (-an.face_value(t[1]), t[0].code),
        )[: self.n]
        specific = sorted(
            _by_customer(lists.specific).values(),
            key=lambda t: (-an.face_value(t[1]), t[0].code),
        )[: self.n]
        provision = an.bad_debt_provision(
            {k: fig.bases.get(k, {}) for k in self.keys},
            self.rates,
            {c.code: amounts for c, amounts, _ in specific},
            fig.specific,
        )
        return {
            "kind": KIND,
            "business_date": self.as_of.isoformat(),
            "scope": scope,
            "scope_name": scope_name,
            "reporting_currency": self.reporting,
            "buckets": buckets,
            "change_since": since.isoformat() if since is not None else None,
            "total_open": an.money_text(an.with_currencies(open_, currencies)),
            "total_overdue": an.money_text(an.with_currencies(overdue, currencies)),
            **self.ratios(fig, open_),
            "periods": {
                p: {
                    "start": an.period_start(self.as_of, p).isoformat(),
                    "days": an.period_days(self.as_of, p),
                }
                for p in an.PERIODS
            },
            "top_overdue": [
                {
                    "customer": c.code,
                    "customer_name": c.name,
                    "region": self.regions.get(c.region_id, ("", ""))[1],
                    "overdue": an.money_text(amounts),
                    "max_days": days,
                }
                for c, amounts, days in top
            ],
            "promises_due_today": _listed(lists.promises_due),
            "promises_broken": _listed(lists.promises_broken),
            "holds_on": _listed(lists.holds_on),
            "holds_off": _listed(lists.holds_off),
            "pending_approvals": _listed(lists.pending),
            "provision": {
                "brackets": [
                    {
                        "key": br.key,
                        "rate": an.rate_text(br.rate),
                        "base": an.money_text(an.with_currencies(br.base, currencies)),
                        "provision": an.money_text(an.with_currencies(br.provision, currencies)),
                    }
                    for br in provision.brackets
                ],
                "specific": [
                    {
                        "customer": c.code,
                        "customer_name": c.name,
                        "base": an.money_text(amounts),
                        "provision": an.money_text(amounts),
                    }
                    for c, amounts, _ in specific
                ],
                "specific_total": an.money_text(provision.specific_total),
                "specific_count": lists.specific_count,
                "total": an.money_text(
                    an.with_currencies(
                        provision.total, an.currencies_of(provision.total, first=self.reporting)
                    )
                ),
            },
            "regions": [],
            "trend": self.trend(region_id, overdue) if snapshots else [],
            "your_day": None,
            "counts": {
                "promises_due_today": len(lists.promises_due),
                "promises_broken": len(lists.promises_broken),
                "holds_on": len(lists.holds_on),
                "holds_off": len(lists.holds_off),
                "pending_approvals": len(lists.pending),
                "specific_provision": lists.specific_count,
            },
        }

    def region_row(self, region_id: int, fig: _Figures) -> dict[str, Any]:
        aging = self.aging(fig)
        open_ = an.total_open(aging)
        currencies = an.currencies_of(*aging.values(), first=self.reporting)
        ratios = self.ratios(fig, open_)
        code, name = self.regions[region_id]
        return {
            "region": name,
            "code": code,
            "buckets": {
                k: an.money_text(an.with_currencies(aging[k], currencies)) for k in self.keys
            },
            "total_open": an.money_text(an.with_currencies(open_, currencies)),
            "total_overdue": an.money_text(an.with_currencies(an.total_overdue(aging), currencies)),
            "dso": ratios["dso"],
            "collection_rate": ratios["collection_rate"],
        }


def _recipient(person: Person) -> dict[str, Any]:
    return {
        "code": person.code,
        "name": person.name,
        "role": person.role,
        "locale": person.locale,
        "time_zone": person.time_zone,
    }


def plan_digests(
    session: Session,
    settings: Settings,
    as_of: date,
    now: datetime,
    *,
    calendar: BusinessCalendar | None = None,
) -> DigestPlan:
    """Every digest of ``as_of`` and the snapshot to store, without writing anything."""
    calendar = calendar or BusinessCalendar(settings.calendar.holiday_country)
    cfg = settings.digest
    previous_day = calendar.previous_business_day(as_of)
    since = datetime.combine(previous_day, settings.schedule.digest_at, settings.zone)
    keys = an.bucket_keys(settings.buckets)

    roles = {"regional_manager", *cfg.company_roles} | ({"rep"} if cfg.send_to_reps else set())
    people = list(
        session.execute(
            select(Person)
            .where(Person.active, Person.role.in_(sorted(roles)))
            .order_by(Person.code)
        ).scalars()
    )
    reps = {p.id for p in people if p.role == "rep"}
    regions = {
        r.id: (r.code, r.name)
        for r in session.execute(select(Region).order_by(Region.code)).scalars()
    }

    ledger = _read_ledger(session, settings, as_of, by_rep=bool(reps))
    cells = ledger.cells
    overdue, specific = ledger.overdue, ledger.specific
    specific_by_region, specific_by_rep = ledger.specific_by_region, ledger.specific_by_rep
    due, broken = _promises(session, as_of, previous_day)
    holds_on, holds_off = _holds(session, since, now)
    pending = _pending_requests(session, now)
    entering = _entering_tier(session, settings, as_of, (as_of - previous_day).days, reps)
    history = _history(session, as_of, cfg.trend_days)
    builder = _Builder(settings, as_of, cells, history, regions)

    company_lists = _Lists(
        promises_due=due,
        promises_broken=broken,
        holds_on=holds_on,
        holds_off=holds_off,
        pending=pending,
        overdue=overdue,
        specific=specific,
        specific_count=sum(specific_by_region.values()),
    )
    lists_by_region: dict[int, _Lists] = defaultdict(_Lists)
    for name in (
        "promises_due",
        "promises_broken",
        "holds_on",
        "holds_off",
        "pending",
        "overdue",
        "specific",
    ):
        for region_id, items in _grouped(getattr(company_lists, name), _region_of).items():
            setattr(lists_by_region[region_id], name, items)
    for region_id, count in specific_by_region.items():
        lists_by_region[region_id].specific_count = count

    snapshot: dict[int | None, dict[str, dict[str, tuple[Decimal, int]]]] = {}
    company_fig = builder.figures()
    snapshot[COMPANY] = builder.snapshot_of(company_fig, always=True)
    region_figs: dict[int, _Figures] = {}
    for region_id in regions:
        region_figs[region_id] = builder.figures(region_id=region_id)
        rows = builder.snapshot_of(region_figs[region_id], always=False)
        if any(rows[k] for k in keys):
            snapshot[region_id] = rows

    scope_payloads: dict[Any, dict[str, Any]] = {}

    def company_payload() -> dict[str, Any]:
        if "company" not in scope_payloads:
            body = builder.payload("company", "Company", company_fig, company_lists)
            body["regions"] = [builder.region_row(r, region_figs[r]) for r in regions]
            scope_payloads["company"] = body
        return scope_payloads["company"]

    def region_payload(region_id: int) -> dict[str, Any]:
        if region_id not in scope_payloads:
            scope_payloads[region_id] = builder.payload(
                "region",
                regions[region_id][1],
                region_figs[region_id],
                lists_by_region[region_id],
                region_id=region_id,
            )
        return scope_payloads[region_id]

    digests: list[DigestPayload] = []
    empty_days = 0
    rep_lists = _rep_lists(company_lists, entering, specific_by_rep) if reps else {}
    for person in people:
        if person.role == "regional_manager":
            if person.region_id is None or person.region_id not in regions:
                continue
            body = copy.deepcopy(region_payload(person.region_id))
        elif person.role == "rep":
            lists = rep_lists.get(person.id, _Lists())
            if not (lists.promises_due or lists.entering or lists.pending):
                empty_days += 1
                continue
            body = builder.payload(
                "rep", person.name, builder.figures(rep_id=person.id), lists, snapshots=False
            )
            body["your_day"] = {
                "promises_due_today": _listed(lists.promises_due),
                "entering_tier": _listed(lists.entering),
                "pending_requests": _listed(lists.pending),
                "counts": {
                    "promises_due_today": len(lists.promises_due),
                    "entering_tier": len(lists.entering),
                    "pending_requests": len(lists.pending),
                },
            }
        else:
            body = copy.deepcopy(company_payload())
        body["recipient"] = _recipient(person)
        digests.append(DigestPayload(person.id, person.code, body["scope"], body))
    return DigestPlan(as_of, digests, snapshot, empty_days)


def _rep_lists(
    company: _Lists, entering: list[_Item], specific_by_rep: dict[int, int]
) -> dict[int, _Lists]:
    """Each rep's share: their customers' items; a request also goes to whoever raised it."""
    out: dict[int, _Lists] = defaultdict(_Lists)
    for name in ("promises_due", "promises_broken", "holds_on", "holds_off"):
        for rep_id, items in _grouped(getattr(company, name), lambda i: i.rep_id).items():
            setattr(out[rep_id], name, items)
    for item in company.pending:
        out[item.rep_id].pending.append(item)
        if item.requested_by is not None and item.requested_by != item.rep_id:
            out[item.requested_by].pending.append(item)
    for c in company.overdue:
        out[c.rep_id].overdue.append(c)
    for c in company.specific:
        out[c.rep_id].specific.append(c)
    for rep_id, count in specific_by_rep.items():
        out[rep_id].specific_count = count
    for item in entering:
        out[item.rep_id].entering.append(item)
    return out


def build_digests(
    session: Session,
    settings: Settings,
    as_of: date,
    now: datetime,
    *,
    calendar: BusinessCalendar | None = None,
) -> list[DigestPayload]:
    """Every person's digest for ``as_of`` (nothing written): see ``plan_digests``."""
    return plan_digests(session, settings, as_of, now, calendar=calendar).digests


# --- the run -----------------------------------------------------------------------------------


def _lock_digest(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(DIGEST_LOCK_KEY)))
    # SQLite: write_session's BEGIN IMMEDIATE already serialises writers


def digest_key(person_id: int, as_of: date) -> str:
    return f"digest:{person_id}:{as_of.isoformat()}"


def run_digest(
    engine: Any,
    settings: Settings,
    calendar: BusinessCalendar,
    as_of: date,
    now: datetime,
    *,
    force: bool = False,
) -> DigestResult:
    """The daily digest of ``as_of``: write the day's aging snapshot (replacing that date's)
    and queue one message per person, in one transaction. Running it again the same day
    queues nothing new; on a day off it does nothing (unless ``force``)."""
    from credit.store.db import write_session
    from credit.store.escalation import _message
    from credit.store.outbox import enqueue

    if not force and not calendar.is_business_day(as_of):
        return DigestResult(as_of, skipped=f"{as_of} is not a working day")
    with write_session(engine) as s:
        _lock_digest(s)
        plan = plan_digests(s, settings, as_of, now, calendar=calendar)
        rows = write_snapshot(s, as_of, plan.snapshot, now)
        people = {
            p.id: p
            for p in s.execute(
                select(Person).where(Person.id.in_([d.person_id for d in plan.digests]))
            ).scalars()
        }
        messages = [
            _message(
                settings,
                calendar,
                now,
                people[d.person_id],
                digest_key(d.person_id, as_of),
                KIND,
                as_of,
                d.payload,
            )
            for d in plan.digests
        ]
        queued = enqueue(s, messages, now)
        by_scope: dict[str, int] = defaultdict(int)
        for d in plan.digests:
            by_scope[d.scope] += 1
        return DigestResult(as_of, None, len(plan.digests), queued, rows, dict(by_scope))


def digest_done(session: Session, as_of: date) -> bool:
    """Has the digest of ``as_of`` run (its company snapshot is there)?"""
    return (
        session.execute(
            select(AgingSnapshot.id)
            .where(AgingSnapshot.business_date == as_of, AgingSnapshot.region_id.is_(None))
            .limit(1)
        ).first()
        is not None
    )
