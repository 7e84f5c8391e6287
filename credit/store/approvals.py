"""Shipment approvals in the database: raise a request, decide it once, tell the ERP.

Session-taking service functions, used by the ERP API (``bot.api``) and, later, the chat
apps. The rules are ``credit.approval``'s; this module loads what they need, stores what
they decide and queues what must be told, in the caller's transaction:

* ``raise_request`` checks a shipment against the customer's ``credit_position``: within
  policy it is approved at once, a blacklisted customer's is refused outright, anything
  else waits ``pending`` with one ``Approval`` row per required authority level. The same
  customer + order reference + amount again returns the request already raised
  (idempotent); the same order with another amount is a ``DuplicateOrder``.
* ``decide`` records one person's approval or rejection. Who may decide is
  ``refusal_to_decide``'s answer, plus two of ours: ``"expired"`` (past ``expires_at``) and
  ``"limit_changed"`` (the customer's limit is not the one the request was checked against);
  in a chain nobody signs two levels (``"second_signature"``). A refusal changes nothing and
  is audited. Exactly one decision wins: the request is changed by a conditional UPDATE on
  its ``status`` and ``version``, and whoever's UPDATE finds the row changed is told who
  decided instead.
* A final decision (and an approval or refusal at once, and an expiry) queues the ERP
  callback in the outbox — channel ``erp``, kind ``erp_callback``, idempotency key
  ``erp_callback:<request id>:<status>`` — when the request has a callback URL, and a chat
  message of kind ``approval_decided`` to the person who raised it.
* ``upsert_invoices`` / ``record_payments`` push ledger changes with the CSV importer's rules
  (``credit.store.importing``): every row checked, all or nothing.

Approved but unshipped: an approved request counts against the customer's limit until an
invoice pushed with its ``order_ref`` marks it shipped (``shipped_at``), or at most
``APPROVED_RESERVES_DAYS`` days after its decision, whichever comes first.

Every step is audited (entity ``shipment_request``, the request id): raise, approve, reject,
refused and lost presses, expiry, shipment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlmodel import Session

from credit.approval import (
    Approver,
    CreditCheck,
    CreditPosition,
    IllegalTransition,
    RequestParty,
    Status,
    after_decision,
    check_request,
    initial_status,
    refusal_to_decide,
)
from credit.money import MoneyError, check_currency, parse_amount
from credit.ratings import Rating
from credit.settings import Settings
from credit.store.models import (
    Approval,
    AuditLog,
    Customer,
    Invoice,
    Person,
    ShipmentRequest,
)
from credit.store.outbox import NewMessage, enqueue, route

ENTITY = "shipment_request"
ERP_CHANNEL = "erp"
ERP_CALLBACK = "erp_callback"
APPROVAL_DECIDED = "approval_decided"
CALLBACK_EVENT = "shipment_request.decided"
# an approved request stops counting against the limit after this many days even uninvoiced
APPROVED_RESERVES_DAYS = 30
DECISIONS = ("approve", "reject")
# refusals of ours, besides credit.approval.REFUSAL_CODES
EXPIRED, LIMIT_CHANGED, SECOND_SIGNATURE = "expired", "limit_changed", "second_signature"
ORDER_REF_MAX = 100
URL_MAX = 2000
REASON_MAX = 1000


# --- errors and results ------------------------------------------------------------------------


class ApprovalError(ValueError):
    """The request cannot be handled as asked; ``field`` names the input at fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownCustomer(LookupError):
    pass


class UnknownRequest(LookupError):
    pass


class DuplicateOrder(Exception):
    """The customer's order was raised before with another amount or currency."""

    def __init__(self, message: str, existing_id: int) -> None:
        super().__init__(message)
        self.existing_id = existing_id


@dataclass(frozen=True)
class LedgerError:
    index: int  # the row's position in the pushed list (0-based)
    field: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.index}, {self.field}: {self.reason}" if self.field else self.reason


class LedgerRejected(ValueError):
    """Pushed ledger rows with errors; nothing was written (the caller rolls back)."""

    def __init__(self, kind: str, errors: Sequence[LedgerError]) -> None:
        self.kind = kind
        self.errors = sorted(errors, key=lambda e: e.index)
        super().__init__(f"{kind}: {len(self.errors)} error(s): " + "; ".join(map(str, errors)))


@dataclass(frozen=True)
class RequestResult:
    request_id: int
    status: str
    created: bool  # False: the same order was raised before (idempotent repeat)
    reasons: tuple[str, ...]
    levels: tuple[int, ...] = ()  # the authority levels that must approve (pending)


@dataclass(frozen=True)
class DecisionResult:
    request_id: int
    won: bool  # this decision changed the request
    status: str  # the request's status after the call
    decided_by_name: str | None = None  # lost: who decided first (None: expired / at once)
    refusal: str | None = None  # refused: why (nothing changed)
    level: int | None = None  # the authority level decided (or attempted)
    final: bool = False  # the request is decided (approved / rejected) by this call


@dataclass(frozen=True)
class LedgerResult:
    kind: str
    rows: int
    created: int
    updated: int
    unchanged: int
    shipped: tuple[int, ...] = field(default=())  # requests marked shipped (invoices)


# --- the customer's credit position ------------------------------------------------------------


def _money(value: Any) -> Decimal:
    return Decimal("0.00") if value is None else Decimal(value)


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(0), UTC)


def credit_position(session: Session, customer: Customer, as_of: date) -> CreditPosition:
    """The customer's standing on ``as_of``, in its currency.

    Open receivables: the open amount of its invoices (disputed ones too: they are still
    owed). Overdue: the part of it due before ``as_of``. Approved but unshipped: approved
    requests without ``shipped_at`` decided within ``APPROVED_RESERVES_DAYS`` days.
    Probation: ``probation_until`` on or after ``as_of``.
    """
    zero = Decimal("0.00")
    open_, overdue = session.execute(
        select(
            func.coalesce(func.sum(Invoice.open_amount), zero),
            func.coalesce(
                func.sum(case((Invoice.due_date < as_of, Invoice.open_amount), else_=zero)),
                zero,
            ),
        ).where(
            Invoice.customer_id == customer.id,
            Invoice.open_amount > 0,
            Invoice.currency == customer.currency,
        )
    ).one()
    since = _start_of(as_of - timedelta(days=APPROVED_RESERVES_DAYS))
    unshipped = session.execute(
        select(func.coalesce(func.sum(ShipmentRequest.amount), zero)).where(
            ShipmentRequest.customer_id == customer.id,
            ShipmentRequest.status == Status.APPROVED.value,
            ShipmentRequest.shipped_at.is_(None),
            ShipmentRequest.currency == customer.currency,
            func.coalesce(ShipmentRequest.decided_at, ShipmentRequest.created_at) >= since,
        )
    ).scalar_one()
    return CreditPosition(
        rating=Rating(customer.rating),
        credit_limit=customer.credit_limit,
        open_receivables=_money(open_),
        approved_unshipped=_money(unshipped),
        overdue_beyond_terms=_money(overdue),
        credit_hold=customer.credit_hold,
        blacklisted=customer.blacklisted,
        on_probation=customer.probation_until is not None and customer.probation_until >= as_of,
    )


# --- raising a request -------------------------------------------------------------------------


def _amount(amount: Decimal | str | int) -> Decimal:
    if isinstance(amount, float):
        raise ApprovalError(
            "the amount must be exact (a decimal string), not a float", field="amount"
        )
    try:
        value = parse_amount(amount)
    except MoneyError as exc:
        raise ApprovalError(str(exc), field="amount") from None
    if value <= 0:
        raise ApprovalError(f"must be more than 0, got {value}", field="amount")
    return value


def _person_by_code(session: Session, code: str) -> Person | None:
    return session.execute(select(Person).where(Person.code == code)).scalar_one_or_none()


def _audit(
    session: Session,
    actor: str,
    action: str,
    request_id: int | None,
    channel: str,
    now: datetime,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditLog(
            actor=actor[:100],
            action=action,
            entity=ENTITY,
            entity_id=None if request_id is None else str(request_id),
            channel=channel[:16],
            at=now,
            before=before,
            after=after,
        )
    )


def raise_request(
    session: Session,
    settings: Settings,
    *,
    customer_code: str,
    order_ref: str,
    amount: Decimal | str | int,
    currency: str,
    requested_by_code: str | None = None,
    callback_url: str | None = None,
    channel: str = "api",
    now: datetime,
) -> RequestResult:
    """Check a shipment and record it: approved at once, refused, or pending approval.

    Raises ``ApprovalError`` (bad input; ``field`` says which), ``UnknownCustomer``, or
    ``DuplicateOrder`` (the order was raised before with another amount or currency). The
    same order with the same amount and currency returns the existing request
    (``created=False``) and changes nothing."""
    order_ref = (order_ref or "").strip()
    if not order_ref or len(order_ref) > ORDER_REF_MAX:
        raise ApprovalError(f"1 to {ORDER_REF_MAX} characters", field="order_ref")
    value = _amount(amount)
    try:
        currency = check_currency(currency)
    except MoneyError as exc:
        raise ApprovalError(str(exc), field="currency") from None
    if callback_url is not None:
        callback_url = callback_url.strip() or None
    if callback_url is not None and (
        len(callback_url) > URL_MAX or not callback_url.startswith(("https://", "http://"))
    ):
        raise ApprovalError(f"an http(s) URL of at most {URL_MAX} characters", field="callback_url")
    customer = session.execute(
        select(Customer).where(Customer.code == customer_code)
    ).scalar_one_or_none()
    if customer is None:
        raise UnknownCustomer(f"no customer {customer_code!r}")
    existing = session.execute(
        select(ShipmentRequest).where(
            ShipmentRequest.customer_id == customer.id, ShipmentRequest.order_ref == order_ref
        )
    ).scalar_one_or_none()
    if existing is not None:
        assert existing.id is not None
        if existing.amount == value and existing.currency == currency:
            return RequestResult(
                existing.id,
                existing.status,
                False,
                tuple(existing.reasons),
                _levels(session, existing.id),
            )
        raise DuplicateOrder(
            f"order {order_ref} of customer {customer.code} was raised as request {existing.id} "
            f"for {existing.amount} {existing.currency}, not {value} {currency}",
            existing.id,
        )
    if currency != customer.currency:
        raise ApprovalError(
            f"{currency} is not the currency of customer {customer.code} ({customer.currency})",
            field="currency",
        )
    requester = None
    if requested_by_code:
        requester = _person_by_code(session, requested_by_code)
        if requester is None:
            raise ApprovalError(f"no person {requested_by_code!r}", field="requested_by")

    as_of = now.astimezone(settings.zone).date()
    position = credit_position(session, customer, as_of)
    check = check_request(position, value)
    status = initial_status(check)
    pending = status is Status.PENDING
    matrix = settings.approvals.matrix
    levels = matrix.required_levels(check) if pending else ()
    ttl = timedelta(hours=settings.approvals.expire_after_hours)
    request = ShipmentRequest(
        customer_id=customer.id,
        order_ref=order_ref,
        amount=value,
        currency=currency,
        requested_by_id=requester.id if requester else None,
        status=status.value,
        reasons=list(check.reasons),
        callback_url=callback_url,
        created_at=now,
        decided_at=None if pending else now,
        expires_at=now + ttl if pending else None,
        limit_at_raise=customer.credit_limit,
        exposure=check.exposure,
        excess=check.excess,
        overdue=check.overdue,
    )
    session.add(request)
    session.flush()
    assert request.id is not None
    for level in levels:
        session.add(Approval(request_id=request.id, level=level, role=matrix.levels[level].role))
    _audit(
        session,
        requester.code if requester else "erp",
        "shipment.raise",
        request.id,
        channel,
        now,
        after={
            "customer": customer.code,
            "order_ref": order_ref,
            "amount": str(value),
            "currency": currency,
            "status": status.value,
            "reasons": list(check.reasons),
            **_check_facts(check, customer.credit_limit),
            "levels": [matrix.levels[lv].role for lv in levels],
            "callback_url": callback_url,
        },
    )
    if not pending:
        _queue_decision(session, settings, request, customer, None, None, now, notify=False)
    return RequestResult(request.id, status.value, True, tuple(check.reasons), tuple(levels))


def _check_facts(check: CreditCheck, limit: Decimal) -> dict[str, str]:
    return {
        "credit_limit": str(limit),
        "exposure": str(check.exposure),
        "excess": str(check.excess),
        "overdue": str(check.overdue),
    }


def _levels(session: Session, request_id: int) -> tuple[int, ...]:
    return tuple(
        session.execute(
            select(Approval.level).where(Approval.request_id == request_id).order_by(Approval.level)
        ).scalars()
    )


# --- telling the ERP and the requester ---------------------------------------------------------


def callback_key(request_id: int, status: str) -> str:
    return f"{ERP_CALLBACK}:{request_id}:{status}"


def callback_body(
    request: ShipmentRequest,
    customer: Customer,
    decided_by: Person | None,
    reason: str | None,
) -> dict[str, Any]:
    """What the ERP is told about a decided request (JSON; amounts as decimal strings)."""
    assert request.id is not None
    return {
        "event": CALLBACK_EVENT,
        "idempotency_key": callback_key(request.id, request.status),
        "request_id": request.id,
        "customer_code": customer.code,
        "order_ref": request.order_ref,
        "amount": str(request.amount),
        "currency": request.currency,
        "status": request.status,
        "reasons": list(request.reasons),
        "decided_at": _iso(request.decided_at),
        "decided_by": None if decided_by is None else decided_by.code,
        "decided_by_name": None if decided_by is None else decided_by.name,
        "reason": reason,
    }


def _queue_decision(
    session: Session,
    settings: Settings | None,
    request: ShipmentRequest,
    customer: Customer,
    decided_by: Person | None,
    reason: str | None,
    now: datetime,
    *,
    notify: bool = True,
) -> None:
    """The ERP callback (when the request has a URL) and the requester's chat message."""
    assert request.id is not None
    messages = []
    if request.callback_url:
        messages.append(
            NewMessage(
                callback_key(request.id, request.status),
                None,
                ERP_CHANNEL,
                ERP_CALLBACK,
                None,
                {
                    "kind": ERP_CALLBACK,
                    "callback_url": request.callback_url,
                    "body": callback_body(request, customer, decided_by, reason),
                },
                now,
            )
        )
    requester = (
        session.get(Person, request.requested_by_id)
        if notify and settings is not None and request.requested_by_id
        else None
    )
    if requester is not None and requester.active:
        assert settings is not None
        messages.append(
            NewMessage(
                f"{APPROVAL_DECIDED}:{request.id}:{request.status}",
                requester.id,
                route(requester, settings.outbox.channels),
                APPROVAL_DECIDED,
                None,
                {
                    "kind": APPROVAL_DECIDED,
                    "request_id": request.id,
                    "customer": {"code": customer.code, "name": customer.name},
                    "order_ref": request.order_ref,
                    "amount": str(request.amount),
                    "currency": request.currency,
                    "decision": request.status,
                    "by": None
                    if decided_by is None
                    else {"code": decided_by.code, "name": decided_by.name},
                    "reason": reason,
                    "recipient": {
                        "code": requester.code,
                        "name": requester.name,
                        "role": requester.role,
                        "locale": requester.locale,
                    },
                },
                now,
            )
        )
    enqueue(session, messages, now)


# --- deciding ------------------------------------------------------------------------------------


def _fresh_request(session: Session, request_id: int) -> ShipmentRequest | None:
    return session.execute(
        select(ShipmentRequest)
        .where(ShipmentRequest.id == request_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def approval_rows(session: Session, request_id: int) -> list[Approval]:
    """The request's approval rows, lowest level first, freshly read."""
    return list(
        session.execute(
            select(Approval)
            .where(Approval.request_id == request_id)
            .order_by(Approval.level)
            .execution_options(populate_existing=True)
        ).scalars()
    )


def _name(session: Session, person_id: int | None) -> str | None:
    person = session.get(Person, person_id) if person_id else None
    return person.name if person else None


def _who_decided(session: Session, request: ShipmentRequest, level: int | None) -> str | None:
    """Who made the decision that got there first: the final decider, else (the request
    still pending in a chain) whoever signed ``level``."""
    if request.decided_by_id:
        return _name(session, request.decided_by_id)
    for row in approval_rows(session, request.id):  # type: ignore[arg-type]
        if row.level == level and row.approver_id:
            return _name(session, row.approver_id)
    return None


def decide(
    session: Session,
    settings: Settings,
    *,
    request_id: int,
    approver_person_id: int,
    decision: str,
    reason: str | None = None,
    channel: str,
    now: datetime,
) -> DecisionResult:
    """``approver_person_id`` approves or rejects the request at its current level.

    Returns who won: ``won=True`` when this call changed the request; ``won=False`` with
    ``refusal`` when the person may not decide it (audited, nothing changed) or with
    ``decided_by_name`` when someone else decided first. Raises ``UnknownRequest``, or
    ``ApprovalError`` for an unknown decision or a rejection without a reason."""
    if decision not in DECISIONS:
        raise ApprovalError(f"one of {', '.join(DECISIONS)}, got {decision!r}", field="decision")
    reason = (reason or "").strip()[:REASON_MAX] or None
    if decision == "reject" and not reason:
        raise ApprovalError("a rejection needs a reason", field="reason")
    request = _fresh_request(session, request_id)
    if request is None:
        raise UnknownRequest(f"no shipment request {request_id}")
    customer = session.get(Customer, request.customer_id)
    assert customer is not None  # foreign key
    person = session.get(Person, approver_person_id)
    actor = person.code if person else f"person:{approver_person_id}"
    rows = approval_rows(session, request_id)
    current = next((r for r in rows if r.decision is None), None)
    level = current.level if current else None

    def refused(code: str) -> DecisionResult:
        _audit(
            session,
            actor,
            "shipment.decide.refused",
            request_id,
            channel,
            now,
            after={"decision": decision, "refusal": code, "level": level, "status": request.status},
        )
        return DecisionResult(request_id, False, request.status, refusal=code, level=level)

    if request.status != Status.PENDING.value or current is None:
        return _lost(session, request, actor, decision, level, channel, now)
    if person is None:
        return refused("not_an_approver")
    matrix = settings.approvals.matrix
    level_index = matrix.level_of(current.role)
    if level_index is None:  # the matrix changed since the request was raised
        level_index = len(matrix.levels) - 1
    refusal = refusal_to_decide(
        Approver(person.id, person.role, person.region_id, person.active),  # type: ignore[arg-type]
        RequestParty(request.requested_by_id, customer.region_id, customer.rep_id),
        matrix,
        level_index,
    )
    if refusal is not None:
        return refused(refusal)
    if any(r.approver_id == person.id for r in rows if r.decision is not None):
        return refused(SECOND_SIGNATURE)
    if request.expires_at is not None and now > request.expires_at:
        return refused(EXPIRED)
    if customer.credit_limit != request.limit_at_raise:
        return refused(LIMIT_CHANGED)

    final = decision == "reject" or current is rows[-1]
    try:
        new_status = after_decision(Status(request.status), decision, final_level=final)
    except IllegalTransition:  # pragma: no cover - checked above
        return _lost(session, request, actor, decision, level, channel, now)
    decided = new_status is not Status.PENDING
    version = request.version
    won = session.execute(
        update(ShipmentRequest)
        .where(
            ShipmentRequest.id == request_id,
            ShipmentRequest.status == Status.PENDING.value,
            ShipmentRequest.version == version,
        )
        .values(
            status=new_status.value,
            version=version + 1,
            decided_at=now if decided else None,
            decided_by_id=person.id if decided else None,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:
        return _lost(session, request, actor, decision, level, channel, now)
    session.execute(
        update(Approval)
        .where(Approval.id == current.id, Approval.decision.is_(None))
        .values(
            approver_id=person.id,
            decision=decision,
            reason=reason,
            channel=channel[:16],
            decided_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    request = _fresh_request(session, request_id) or request
    _audit(
        session,
        person.code,
        f"shipment.{decision}",
        request_id,
        channel,
        now,
        before={"status": Status.PENDING.value, "version": version},
        after={
            "status": new_status.value,
            "version": version + 1,
            "level": level,
            "role": current.role,
            "reason": reason,
        },
    )
    if decided:
        _queue_decision(session, settings, request, customer, person, reason, now)
    return DecisionResult(request_id, True, new_status.value, level=level, final=decided)


def _lost(
    session: Session,
    request: ShipmentRequest,
    actor: str,
    decision: str,
    level: int | None,
    channel: str,
    now: datetime,
) -> DecisionResult:
    """Someone (or the clock) decided first: audited, and the caller is told who.

    The request is read again: on PostgreSQL (read committed) each statement sees what was
    committed before it, so an earlier read may predate the decision that won."""
    request = _fresh_request(session, request.id) or request  # type: ignore[arg-type]
    by = _who_decided(session, request, level)
    _audit(
        session,
        actor,
        "shipment.decide.lost",
        request.id,
        channel,
        now,
        after={"decision": decision, "status": request.status, "decided_by": by, "level": level},
    )
    return DecisionResult(
        request.id,  # type: ignore[arg-type]
        False,
        request.status,
        decided_by_name=by,
        level=level,
    )


# --- expiry --------------------------------------------------------------------------------------


def expire_requests(session: Session, now: datetime, settings: Settings | None = None) -> list[int]:
    """Pending requests past ``expires_at`` become ``expired`` (audited, ERP callback queued).

    A request decided meanwhile is left alone (the same conditional UPDATE as ``decide``).
    With ``settings``, the requester is told in chat as well."""
    due = session.execute(
        select(ShipmentRequest.id, ShipmentRequest.version)
        .where(
            ShipmentRequest.status == Status.PENDING.value,
            ShipmentRequest.expires_at.is_not(None),
            ShipmentRequest.expires_at < now,
        )
        .order_by(ShipmentRequest.expires_at, ShipmentRequest.id)
    ).all()
    expired: list[int] = []
    for request_id, version in due:
        changed = session.execute(
            update(ShipmentRequest)
            .where(
                ShipmentRequest.id == request_id,
                ShipmentRequest.status == Status.PENDING.value,
                ShipmentRequest.version == version,
            )
            .values(status=Status.EXPIRED.value, version=version + 1, decided_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            continue
        request = _fresh_request(session, request_id)
        assert request is not None
        customer = session.get(Customer, request.customer_id)
        assert customer is not None
        _audit(
            session,
            "scheduler",
            "shipment.expire",
            request_id,
            "scheduler",
            now,
            before={"status": Status.PENDING.value, "version": version},
            after={"status": Status.EXPIRED.value, "expires_at": _iso(request.expires_at)},
        )
        _queue_decision(session, settings, request, customer, None, None, now)
        expired.append(request_id)
    return expired


# --- reading a request ---------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _str(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def get_request(session: Session, request_id: int) -> dict[str, Any]:
    """A request as the API shows it: status, reasons, the check's amounts, the approvals."""
    request = _fresh_request(session, request_id)
    if request is None:
        raise UnknownRequest(f"no shipment request {request_id}")
    customer = session.get(Customer, request.customer_id)
    assert customer is not None
    rows = approval_rows(session, request_id)
    people_ids = {r.approver_id for r in rows} | {request.requested_by_id, request.decided_by_id}
    people = {
        p.id: p
        for p in session.execute(
            select(Person).where(Person.id.in_({i for i in people_ids if i}))
        ).scalars()
    }

    def who(person_id: int | None) -> dict[str, str] | None:
        p = people.get(person_id) if person_id else None
        return None if p is None else {"code": p.code, "name": p.name}

    return {
        "id": request.id,
        "customer_code": customer.code,
        "customer_name": customer.name,
        "order_ref": request.order_ref,
        "amount": str(request.amount),
        "currency": request.currency,
        "status": request.status,
        "reasons": list(request.reasons),
        "credit_limit": _str(request.limit_at_raise),
        "exposure": _str(request.exposure),
        "excess": _str(request.excess),
        "overdue": _str(request.overdue),
        "requested_by": who(request.requested_by_id),
        "callback_url": request.callback_url,
        "created_at": _iso(request.created_at),
        "expires_at": _iso(request.expires_at),
        "decided_at": _iso(request.decided_at),
        "decided_by": who(request.decided_by_id),
        "shipped_at": _iso(request.shipped_at),
        "version": request.version,
        "approvals": [
            {
                "level": r.level,
                "role": r.role,
                "decision": r.decision,
                "approver": who(r.approver_id),
                "reason": r.reason,
                "channel": r.channel,
                "decided_at": _iso(r.decided_at),
            }
            for r in rows
        ],
    }


# --- ledger pushes (the CSV importer's rules) ----------------------------------------------------


def _cell(value: Any) -> str:
    """A pushed value as the importer reads a cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        raise TypeError("amounts must be exact (decimal strings), not floats")
    return str(value).strip()


def _push(
    session: Session,
    kind: str,
    rows: Sequence[Mapping[str, Any]],
    settings: Settings | None,
) -> tuple[int, int, int]:
    """Check and write ``rows`` of ``kind`` with the importer; LedgerRejected on any error.

    A field left out of a row leaves an existing record's value alone (as a column left
    out of a file does): rows are written in groups with the same fields."""
    from credit.store import importing as imp

    spec = imp.columns(kind)
    errors: list[imp.RowError] = []
    parsed: list[imp._Row] = []
    fields: list[frozenset[str]] = []
    for index, raw in enumerate(rows):
        cells: dict[str, str] = {}
        for name, value in raw.items():
            if name not in spec:
                errors.append(imp.RowError(index, name, "unknown field"))
                continue
            try:
                cells[name] = _cell(value)
            except TypeError as exc:
                errors.append(imp.RowError(index, name, str(exc)))
        row = imp._parse_row(kind, index, cells, errors)
        for name, required in spec.items():
            if required and name not in cells and name not in raw:
                errors.append(imp.RowError(index, name, "required"))
                row.bad.add(name)
        parsed.append(row)
        fields.append(frozenset(cells))
    imp._flag_duplicates(parsed, imp._KEY[kind], errors)
    # the importer checks references even when rows had errors (every error is reported at
    # once) and writes nothing once there is one
    groups: dict[frozenset[str], list[Any]] = {}
    for row, names in zip(parsed, fields, strict=True):
        groups.setdefault(names, []).append(row)
    totals = [0, 0, 0]
    for names, group in groups.items():
        ctx = imp._Context(
            session.connection(),
            settings or Settings(),
            set(names),
            errors,
            imp._Progress(None, 2 * len(group)),
        )
        imp._IMPORTERS[kind](ctx, group)
        totals[0] += ctx.created
        totals[1] += ctx.updated
        totals[2] += ctx.unchanged
    if errors:
        order = {name: i for i, name in enumerate(spec)}
        errors.sort(key=lambda e: (e.line, order.get(e.column, len(order))))
        raise _rejected(kind, errors)
    return totals[0], totals[1], totals[2]


def _rejected(kind: str, errors: Iterable[Any]) -> LedgerRejected:
    return LedgerRejected(
        kind,
        [
            LedgerError(e.line, e.column, e.reason.replace("(also on line ", "(also in row "))
            for e in errors
        ],
    )


def upsert_invoices(
    session: Session,
    rows: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    settings: Settings | None = None,
    actor: str = "erp",
    channel: str = "api",
) -> LedgerResult:
    """Create or update invoices by number (fields as in an invoices file: ``number``,
    ``customer``, ``issue_date``, ``due_date``, ``amount``, ``open_amount``, ``currency``,
    ``disputed``, ``dispute_reason``), all or nothing (``LedgerRejected``).

    A row may name the ``order_ref`` the invoice bills: the customer's approved request for
    that order is then marked shipped (it stops counting as approved but unshipped)."""
    orders = [(row.get("customer"), row.get("order_ref")) for row in rows]
    plain = [{k: v for k, v in row.items() if k != "order_ref"} for row in rows]
    created, updated, unchanged = _push(session, "invoices", plain, settings)
    shipped = _mark_shipped(session, orders, actor, channel, now)
    _audit_push(session, "invoices", len(rows), created, updated, unchanged, actor, channel, now)
    return LedgerResult("invoices", len(rows), created, updated, unchanged, tuple(shipped))


def record_payments(
    session: Session,
    rows: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    settings: Settings | None = None,
    actor: str = "erp",
    channel: str = "api",
) -> LedgerResult:
    """Record payments by reference (``reference``, ``customer``, ``invoice``, ``paid_on``,
    ``amount``, ``currency``), all or nothing; a payment of an invoice lowers its open
    amount (and so queues the customer for the credit-hold re-check)."""
    created, updated, unchanged = _push(session, "payments", rows, settings)
    _audit_push(session, "payments", len(rows), created, updated, unchanged, actor, channel, now)
    return LedgerResult("payments", len(rows), created, updated, unchanged)


def _audit_push(
    session: Session,
    kind: str,
    rows: int,
    created: int,
    updated: int,
    unchanged: int,
    actor: str,
    channel: str,
    now: datetime,
) -> None:
    session.add(
        AuditLog(
            actor=actor,
            action=f"ledger.{kind}",
            entity=kind,
            channel=channel,
            at=now,
            after={"rows": rows, "created": created, "updated": updated, "unchanged": unchanged},
        )
    )


def _mark_shipped(
    session: Session,
    orders: Sequence[tuple[Any, Any]],
    actor: str,
    channel: str,
    now: datetime,
) -> list[int]:
    wanted = {(str(c), str(o).strip()) for c, o in orders if c and o and str(o).strip()}
    if not wanted:
        return []
    hits = session.execute(
        select(ShipmentRequest.id, Customer.code, ShipmentRequest.order_ref)
        .join(Customer, Customer.id == ShipmentRequest.customer_id)
        .where(
            ShipmentRequest.status == Status.APPROVED.value,
            ShipmentRequest.shipped_at.is_(None),
            or_(*(and_(Customer.code == c, ShipmentRequest.order_ref == o) for c, o in wanted)),
        )
    ).all()
    shipped = []
    for request_id, code, order_ref in hits:
        session.execute(
            update(ShipmentRequest)
            .where(ShipmentRequest.id == request_id, ShipmentRequest.shipped_at.is_(None))
            .values(shipped_at=now)
            .execution_options(synchronize_session=False)
        )
        _audit(
            session,
            actor,
            "shipment.shipped",
            request_id,
            channel,
            now,
            after={"customer": code, "order_ref": order_ref},
        )
        shipped.append(request_id)
    return shipped


__all__ = [
    "APPROVAL_DECIDED",
    "ERP_CALLBACK",
    "ERP_CHANNEL",
    "ApprovalError",
    "DecisionResult",
    "DuplicateOrder",
    "LedgerError",
    "LedgerRejected",
    "LedgerResult",
    "RequestResult",
    "UnknownCustomer",
    "UnknownRequest",
    "callback_body",
    "callback_key",
    "credit_position",
    "decide",
    "expire_requests",
    "get_request",
    "raise_request",
    "record_payments",
    "upsert_invoices",
]
