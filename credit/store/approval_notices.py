"""Approval cards in the outbox: who is asked to decide a pending shipment request, when they
are reminded, to whom it escalates, and which chat messages show the card.

Session-taking service functions beside ``credit.store.approvals`` (which raises and decides
requests); no chat code here. The card itself is composed by ``bot.approval_cards``.

* ``notify_approvers`` queues one ``approval_card`` per eligible approver of the request's
  current pending level: active people with that level's role whom ``refusal_to_decide``
  lets decide (never the requester or the customer's rep; regional roles only for their own
  region; in a chain, nobody who signed an earlier level). A level with nobody eligible
  passes the card up to the next level that has someone. Idempotency key
  ``approval_card:<request>:<level>:<person>``, so calling it again queues nothing twice.
* ``remind_or_escalate`` (the scheduler's ``approval_followup`` job): for every pending,
  unexpired request it makes sure the current level's cards are queued, reminds each
  approver whose card was sent ``remind_after_hours`` ago (an ``approval_reminder``, the card
  again with its buttons, at most one per request, level, person and local day), and every
  ``escalate_after_hours`` without a decision hands it one authority level further up
  (cards to that level's people, who may decide: ``decide`` lets a higher level decide a
  lower level's request). Escalations and reminders are audited.
* ``card_copies``: every sent card and reminder of a request (the outbox rows, with the
  platform reference the dispatcher recorded) — the messages to update once it is decided.
* ``decide_from_card``: a press on a card's Approve / Reject — ``decide`` plus what a card
  needs around it: the request row locked first (PostgreSQL; SQLite write transactions are
  serialised), a stale card of an already-signed chain level answered "already decided",
  the next chain level's cards queued, an expired request expired on the spot, and the
  ``outcome`` every copy is to show (also written into copies not yet sent).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlmodel import Session

from credit.approval import (
    Approver,
    AuthorityMatrix,
    RequestParty,
    Status,
    refusal_to_decide,
)
from credit.settings import Settings
from credit.store.approvals import (
    ENTITY,
    EXPIRED,
    LIMIT_CHANGED,
    DecisionResult,
    UnknownRequest,
    approval_rows,
    decide,
    expire_requests,
)
from credit.store.models import Approval, AuditLog, Customer, OutboxMessage, Person, ShipmentRequest
from credit.store.outbox import NewMessage, enqueue, route
from credit.store.views import credit_file

CARD = "approval_card"
REMINDER = "approval_reminder"
CARD_KINDS = (CARD, REMINDER)
RECENT_DECISIONS = 5
ACTOR = "creditbot"


def card_key(request_id: int, level: int, person_id: int) -> str:
    return f"{CARD}:{request_id}:{level}:{person_id}"


def reminder_key(request_id: int, level: int, person_id: int, day: date) -> str:
    return f"{REMINDER}:{request_id}:{level}:{person_id}:{day.isoformat()}"


def card_value(request_id: int, level: int) -> str:
    """What a card's buttons carry: ``<request id>|<level>``."""
    return f"{request_id}|{level}"


def parse_card_value(value: str) -> tuple[int, int]:
    """``(request id, level)`` of a button value; ValueError when it is not one."""
    request, _, level = str(value).partition("|")
    return int(request), int(level)


# --- reading a pending request -------------------------------------------------------------------


@dataclass
class _Pending:
    request: ShipmentRequest
    customer: Customer
    rows: list[Approval]
    current: Approval  # the first level nobody has signed
    index: int  # the current level's position in the matrix (by its role)

    @property
    def party(self) -> RequestParty:
        return RequestParty(
            self.request.requested_by_id, self.customer.region_id, self.customer.rep_id
        )

    @property
    def signers(self) -> set[int]:
        return {r.approver_id for r in self.rows if r.decision is not None and r.approver_id}


def _load(session: Session, request: ShipmentRequest, matrix: AuthorityMatrix) -> _Pending | None:
    if request.status != Status.PENDING.value:
        return None
    rows = approval_rows(session, request.id)  # type: ignore[arg-type]
    current = next((r for r in rows if r.decision is None), None)
    if current is None:
        return None
    customer = session.get(Customer, request.customer_id)
    assert customer is not None  # foreign key
    index = matrix.level_of(current.role)
    if index is None:  # the matrix changed since the request was raised: the top decides
        index = len(matrix.levels) - 1
    return _Pending(request, customer, rows, current, index)


def _fresh(session: Session, request_id: int) -> ShipmentRequest | None:
    return session.execute(
        select(ShipmentRequest)
        .where(ShipmentRequest.id == request_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def eligible_approvers(
    session: Session, settings: Settings, pending: _Pending, role_index: int
) -> list[Person]:
    """Active people with the role of matrix level ``role_index`` who may decide the request
    at its current level (``refusal_to_decide``), minus anyone who signed an earlier level."""
    matrix = settings.approvals.matrix
    role = matrix.levels[role_index].role
    people = session.execute(
        select(Person).where(Person.role == role, Person.active).order_by(Person.code)
    ).scalars()
    signers = pending.signers
    return [
        p
        for p in people
        if p.id not in signers
        and refusal_to_decide(
            Approver(p.id, p.role, p.region_id, p.active),  # type: ignore[arg-type]
            pending.party,
            matrix,
            pending.index,
        )
        is None
    ]


# --- the card's content --------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _local(moment: datetime | None, settings: Settings) -> str | None:
    """A moment as the company's local wall-clock time, ``YYYY-MM-DDTHH:MM``."""
    if moment is None:
        return None
    return moment.astimezone(settings.zone).strftime("%Y-%m-%dT%H:%M")


def _recent_decisions(
    session: Session, settings: Settings, customer_id: int, request_id: int
) -> list[dict[str, Any]]:
    """The customer's last decided shipment requests, newest first."""
    rows = session.execute(
        select(ShipmentRequest, Person.name)
        .join(Person, Person.id == ShipmentRequest.decided_by_id, isouter=True)
        .where(
            ShipmentRequest.customer_id == customer_id,
            ShipmentRequest.id != request_id,
            ShipmentRequest.status != Status.PENDING.value,
        )
        .order_by(
            func.coalesce(ShipmentRequest.decided_at, ShipmentRequest.created_at).desc(),
            ShipmentRequest.id.desc(),
        )
        .limit(RECENT_DECISIONS)
    ).all()
    reasons: dict[int, str] = {}
    ids = [r.id for r, _ in rows if r.status == Status.REJECTED.value]
    if ids:
        reasons = {
            rid: reason
            for rid, reason in session.execute(
                select(Approval.request_id, Approval.reason).where(
                    Approval.request_id.in_(ids), Approval.decision == "reject"
                )
            ).all()
            if reason
        }
    out = []
    for request, name in rows:
        when = request.decided_at or request.created_at
        out.append(
            {
                "order_ref": request.order_ref,
                "amount": str(request.amount),
                "currency": request.currency,
                "status": request.status,
                "by": name,
                "reason": reasons.get(request.id),  # type: ignore[arg-type]
                "date": when.astimezone(settings.zone).date().isoformat(),
            }
        )
    return out


def card_payload(
    session: Session, settings: Settings, request_id: int, now: datetime
) -> dict[str, Any]:
    """What a card shows about a request, without the recipient: the customer and its credit
    position (as checked when raised), aging by bucket today, the customer's last decisions,
    the authority level asked and when the request expires."""
    request = _fresh(session, request_id)
    if request is None:
        raise UnknownRequest(f"no shipment request {request_id}")
    customer = session.get(Customer, request.customer_id)
    assert customer is not None
    rows = approval_rows(session, request_id)
    current = next((r for r in rows if r.decision is None), rows[-1] if rows else None)
    requester = session.get(Person, request.requested_by_id) if request.requested_by_id else None
    as_of = now.astimezone(settings.zone).date()
    cf = credit_file(session, customer, as_of, settings.buckets)
    return {
        "request_id": request.id,
        "level": current.level if current else None,
        "role": current.role if current else None,
        "levels": [r.role for r in rows],
        "customer": {
            "code": customer.code,
            "name": customer.name,
            "rating": customer.rating,
            "currency": customer.currency,
        },
        "order_ref": request.order_ref,
        "amount": str(request.amount),
        "currency": request.currency,
        "reasons": list(request.reasons),
        "credit_limit": str(request.limit_at_raise if request.limit_at_raise is not None else 0),
        "exposure": str(request.exposure or 0),
        "excess": str(request.excess or 0),
        "overdue": str(request.overdue or 0),
        "open_invoices": cf.open_invoices,
        "aging": [
            {"bucket": label, "totals": {cur: str(v) for cur, v in totals.items() if v}}
            for label, totals in cf.aging
        ],
        "recent": _recent_decisions(session, settings, customer.id, request.id),  # type: ignore[arg-type]
        "requested_by": None
        if requester is None
        else {"code": requester.code, "name": requester.name},
        "created_at": _iso(request.created_at),
        "expires_at": _iso(request.expires_at),
        "expires_local": _local(request.expires_at, settings),
        "time_zone": settings.calendar.timezone,
        "as_of": as_of.isoformat(),
    }


def _recipient(person: Person) -> dict[str, Any]:
    return {"code": person.code, "name": person.name, "role": person.role, "locale": person.locale}


def _card_message(
    settings: Settings,
    base: dict[str, Any],
    person: Person,
    *,
    kind: str,
    key: str,
    level: int,
    escalated: bool,
    now: datetime,
) -> NewMessage:
    payload = {
        **base,
        "kind": kind,
        "level": level,
        "escalated": escalated,
        "recipient": _recipient(person),
    }
    return NewMessage(
        key,
        person.id,
        route(person, settings.outbox.channels),
        kind,
        now.astimezone(settings.zone).date(),
        payload,
        now,
    )


def _audit(
    session: Session,
    action: str,
    request_id: int,
    channel: str,
    now: datetime,
    after: dict[str, Any],
    actor: str = ACTOR,
) -> None:
    session.add(
        AuditLog(
            actor=actor[:100],
            action=action,
            entity=ENTITY,
            entity_id=str(request_id),
            channel=channel[:16],
            at=now,
            after=after,
        )
    )


# --- asking the approvers ------------------------------------------------------------------------


def _cards_to(
    session: Session,
    settings: Settings,
    pending: _Pending,
    people: Sequence[Person],
    now: datetime,
    *,
    escalated: bool,
    base: dict[str, Any] | None = None,
) -> tuple[int, list[str]]:
    """Queue the cards for ``people``; (how many were new, their codes)."""
    if not people:
        return 0, []
    request_id = pending.request.id
    assert request_id is not None
    level = pending.current.level
    keys = {p.id: card_key(request_id, level, p.id) for p in people}  # type: ignore[arg-type]
    present = set(
        session.execute(
            select(OutboxMessage.idempotency_key).where(
                OutboxMessage.idempotency_key.in_(list(keys.values()))
            )
        ).scalars()
    )
    new = [p for p in people if keys[p.id] not in present]  # type: ignore[index]
    if not new:
        return 0, []
    base = base if base is not None else card_payload(session, settings, request_id, now)
    messages = [
        _card_message(
            settings,
            base,
            p,
            kind=CARD,
            key=keys[p.id],  # type: ignore[index]
            level=level,
            escalated=escalated,
            now=now,
        )
        for p in new
    ]
    return enqueue(session, messages, now), [p.code for p in new]


def notify_approvers(
    session: Session,
    settings: Settings,
    request_id: int,
    now: datetime,
    *,
    channel: str = "scheduler",
) -> int:
    """Queue an approval card for each eligible approver of the request's current pending
    level (a level with nobody eligible: the next one up that has someone). Returns how many
    cards were new; a request that is not pending gets none. Audited when cards are queued."""
    matrix = settings.approvals.matrix
    request = _fresh(session, request_id)
    if request is None:
        raise UnknownRequest(f"no shipment request {request_id}")
    pending = _load(session, request, matrix)
    if pending is None:
        return 0
    people: list[Person] = []
    role_index = pending.index
    for role_index in range(pending.index, len(matrix.levels)):
        people = eligible_approvers(session, settings, pending, role_index)
        if people:
            break
    if not people:
        _audit_nobody(session, pending, channel, now)
        return 0
    escalated = role_index > pending.index
    count, codes = _cards_to(session, settings, pending, people, now, escalated=escalated)
    if count:
        _audit(
            session,
            "shipment.notify",
            request_id,
            channel,
            now,
            {
                "level": pending.current.level,
                "role": pending.current.role,
                "asked_role": matrix.levels[role_index].role,
                "recipients": codes,
            },
        )
    return count


def _audit_nobody(session: Session, pending: _Pending, channel: str, now: datetime) -> None:
    """Nobody at all may decide: said once (the audit log is the admins' place to look)."""
    request_id = pending.request.id
    assert request_id is not None
    said = session.execute(
        select(AuditLog.id).where(
            AuditLog.entity == ENTITY,
            AuditLog.entity_id == str(request_id),
            AuditLog.action == "shipment.no_approver",
        )
    ).first()
    if said is None:
        _audit(
            session,
            "shipment.no_approver",
            request_id,
            channel,
            now,
            {"level": pending.current.level, "role": pending.current.role},
        )


# --- reminders and escalation --------------------------------------------------------------------


@dataclass
class FollowUp:
    """What one ``remind_or_escalate`` run queued."""

    cards: int = 0  # first cards (requests nobody had been asked about yet)
    reminders: int = 0
    escalated: dict[int, list[str]] = field(default_factory=dict)  # request → roles asked


def _pending_since(pending: _Pending) -> datetime:
    """When the current level started waiting: the request's creation, or the last signature."""
    signed = [r.decided_at for r in pending.rows if r.decided_at is not None]
    return max([pending.request.created_at, *signed])


def remind_or_escalate(session: Session, settings: Settings, now: datetime) -> FollowUp:
    """Remind and escalate what waits for a decision (see the module's doc). Idempotent: run
    it as often as you like; each card, reminder and escalation is queued once."""
    cfg = settings.approvals
    matrix = cfg.matrix
    report = FollowUp()
    day = now.astimezone(settings.zone).date()
    requests = (
        session.execute(
            select(ShipmentRequest)
            .where(
                ShipmentRequest.status == Status.PENDING.value,
                or_(ShipmentRequest.expires_at.is_(None), ShipmentRequest.expires_at > now),
            )
            .order_by(ShipmentRequest.created_at, ShipmentRequest.id)
        )
        .scalars()
        .all()
    )
    for request in requests:
        pending = _load(session, request, matrix)
        if pending is None:
            continue
        request_id = request.id
        assert request_id is not None
        report.cards += notify_approvers(session, settings, request_id, now)
        base: dict[str, Any] | None = None

        # escalation: one level further up per escalate_after_hours without a decision
        waited = (now - _pending_since(pending)).total_seconds() / 3600
        steps = math.floor(waited / cfg.escalate_after_hours) if waited > 0 else 0
        if steps > 0:
            asked: list[str] = []
            recipients: list[str] = []
            for role_index in range(pending.index + 1, len(matrix.levels)):
                if len(asked) >= steps:
                    break
                people = eligible_approvers(session, settings, pending, role_index)
                if not people:
                    continue
                asked.append(matrix.levels[role_index].role)
                if base is None:
                    base = card_payload(session, settings, request_id, now)
                _, codes = _cards_to(
                    session, settings, pending, people, now, escalated=True, base=base
                )
                recipients += codes
            if recipients:
                report.escalated[request_id] = asked
                _audit(
                    session,
                    "shipment.escalate",
                    request_id,
                    "scheduler",
                    now,
                    {
                        "level": pending.current.level,
                        "role": pending.current.role,
                        "to_roles": asked,
                        "recipients": recipients,
                        "waited_hours": round(waited, 2),
                    },
                )

        # reminders: a card sent remind_after_hours ago and still undecided
        due_before = now - timedelta(hours=cfg.remind_after_hours)
        sent = session.execute(
            select(OutboxMessage)
            .where(
                OutboxMessage.kind == CARD,
                OutboxMessage.idempotency_key.like(
                    f"{CARD}:{request_id}:{pending.current.level}:%"
                ),
                OutboxMessage.status == "sent",
                OutboxMessage.sent_at <= due_before,
            )
            .order_by(OutboxMessage.id)
        ).scalars()
        to_remind: list[tuple[OutboxMessage, Person]] = []
        for row in sent:
            person = session.get(Person, row.recipient_id) if row.recipient_id else None
            if person is None or not person.active or person.id in pending.signers:
                continue
            to_remind.append((row, person))
        if to_remind:
            if base is None:
                base = card_payload(session, settings, request_id, now)
            messages = [
                _card_message(
                    settings,
                    base,
                    person,
                    kind=REMINDER,
                    key=reminder_key(request_id, pending.current.level, person.id, day),  # type: ignore[arg-type]
                    level=pending.current.level,
                    escalated=bool(row.payload.get("escalated")),
                    now=now,
                )
                for row, person in to_remind
            ]
            new_keys = {m.idempotency_key for m in messages}
            present = set(
                session.execute(
                    select(OutboxMessage.idempotency_key).where(
                        OutboxMessage.idempotency_key.in_(list(new_keys))
                    )
                ).scalars()
            )
            fresh = [m for m in messages if m.idempotency_key not in present]
            count = enqueue(session, fresh, now)
            if count:
                report.reminders += count
                by_id = {p.id: p.code for _, p in to_remind}
                _audit(
                    session,
                    "shipment.remind",
                    request_id,
                    "scheduler",
                    now,
                    {
                        "level": pending.current.level,
                        "recipients": [by_id[m.recipient_id] for m in fresh],
                    },
                )
    return report


# --- the chat messages that show a card ---------------------------------------------------------


@dataclass(frozen=True)
class CardCopy:
    outbox_id: int
    kind: str
    channel: str
    recipient_id: int | None
    platform_ref: dict[str, Any]
    payload: dict[str, Any]


def _copy_filter(request_id: int, level: int | None) -> Any:
    tail = f"{request_id}:" if level is None else f"{request_id}:{level}:"
    return or_(
        (OutboxMessage.kind == CARD) & OutboxMessage.idempotency_key.like(f"{CARD}:{tail}%"),
        (OutboxMessage.kind == REMINDER)
        & OutboxMessage.idempotency_key.like(f"{REMINDER}:{tail}%"),
    )


def card_copies(session: Session, request_id: int, *, level: int | None = None) -> list[CardCopy]:
    """Every sent card and reminder of the request (of one ``level`` when given), with the
    platform reference of the chat message that shows it, oldest first."""
    rows = session.execute(
        select(OutboxMessage)
        .where(
            _copy_filter(request_id, level),
            OutboxMessage.status == "sent",
            OutboxMessage.platform_ref.is_not(None),
        )
        .order_by(OutboxMessage.id)
    ).scalars()
    return [
        CardCopy(r.id, r.kind, r.channel, r.recipient_id, dict(r.platform_ref), dict(r.payload))  # type: ignore[arg-type]
        for r in rows
        if r.platform_ref
    ]


def record_outcome(
    session: Session,
    request_id: int,
    outcome: dict[str, Any],
    *,
    level: int | None = None,
    statuses: Sequence[str] = ("pending", "sending", "sent", "failed", "dead"),
) -> int:
    """Write ``outcome`` into the request's card rows (of one ``level`` when given): a card not
    yet sent then goes out showing it, without buttons, and a sent one says what it shows."""
    rows = session.execute(
        select(OutboxMessage).where(
            _copy_filter(request_id, level), OutboxMessage.status.in_(list(statuses))
        )
    ).scalars()
    n = 0
    for row in rows:
        if (row.payload or {}).get("outcome") == outcome:
            continue
        row.payload = {**(row.payload or {}), "outcome": outcome}
        session.add(row)
        n += 1
    session.flush()
    return n


def mark_shown(session: Session, outbox_ids: Sequence[int], outcome: dict[str, Any]) -> None:
    """The chat messages of these card rows were edited to show ``outcome``."""
    if not outbox_ids:
        return
    rows = session.execute(
        select(OutboxMessage).where(OutboxMessage.id.in_(list(outbox_ids)))
    ).scalars()
    for row in rows:
        row.payload = {**(row.payload or {}), "outcome": outcome, "shown": outcome}
        session.add(row)


def audit_cards_updated(
    session: Session,
    request_id: int,
    *,
    updated: int,
    failed: int,
    status: str,
    channel: str,
    now: datetime,
    pressed_only: bool = False,
) -> None:
    after: dict[str, Any] = {"updated": updated, "failed": failed, "status": status}
    if pressed_only:  # a stale copy refreshed after a press that lost
        after["pressed_only"] = True
    _audit(session, "shipment.cards_updated", request_id, channel, now, after)


# --- a press on a card ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CardDecision:
    """What came of a press on a card: ``decide``'s result, and what every copy of the card
    should show now (``outcome``; None: leave the cards as they are) — of one ``level`` when a
    chain level was signed and the request waits for the next, else of every level.
    ``expired``: requests expired on the way (this one too, when it had lapsed), each with
    the outcome its cards should show."""

    result: DecisionResult
    outcome: dict[str, Any] | None = None
    level: int | None = None
    expired: dict[int, dict[str, Any]] = field(default_factory=dict)
    approver_name: str | None = None
    # a press that lost: ``outcome`` is what was decided before, for the pressed copy only
    # (it may still show buttons: sent while the decision was made, or its edit failed)
    pressed_only: bool = False


def decided_outcome(
    session: Session, request: ShipmentRequest, settings: Settings
) -> dict[str, Any] | None:
    """What the cards of a request decided earlier show (None while it is pending)."""
    if request.status == Status.EXPIRED.value:
        return expired_outcome(request, settings)
    if request.status not in (Status.APPROVED.value, Status.REJECTED.value):
        return None if request.status == Status.PENDING.value else {"status": request.status}
    by = session.get(Person, request.decided_by_id) if request.decided_by_id else None
    reason = None
    if request.status == Status.REJECTED.value:
        reason = session.execute(
            select(Approval.reason).where(
                Approval.request_id == request.id, Approval.decision == "reject"
            )
        ).scalar()
    return {
        "status": request.status,
        "by": by.name if by else None,
        "reason": reason,
        "at": _iso(request.decided_at),
    }


def _level_outcome(session: Session, request_id: int, level: int) -> dict[str, Any] | None:
    rows = approval_rows(session, request_id)
    signed = next((r for r in rows if r.level == level and r.decision is not None), None)
    if signed is None:
        return None
    by = session.get(Person, signed.approver_id) if signed.approver_id else None
    waiting = next((r for r in rows if r.decision is None), None)
    return {
        "status": "level_approved",
        "by": by.name if by else None,
        "role": signed.role,
        "next_role": waiting.role if waiting else None,
        "at": _iso(signed.decided_at),
        "channel": signed.channel,
    }


def expired_outcome(request: ShipmentRequest, settings: Settings) -> dict[str, Any]:
    return {
        "status": Status.EXPIRED.value,
        "at": _iso(request.expires_at),
        "at_local": _local(request.expires_at, settings),
    }


def decide_from_card(
    session: Session,
    settings: Settings,
    *,
    request_id: int,
    card_level: int | None,
    approver_person_id: int,
    decision: str,
    reason: str | None = None,
    channel: str,
    now: datetime,
) -> CardDecision:
    """``approver_person_id`` pressed Approve or Reject on the card of ``request_id`` for
    authority level ``card_level``. Raises as ``decide`` does (``UnknownRequest``,
    ``ApprovalError``)."""
    locked = session.execute(
        select(ShipmentRequest.id).where(ShipmentRequest.id == request_id).with_for_update()
    ).first()
    if locked is None:
        raise UnknownRequest(f"no shipment request {request_id}")
    request = _fresh(session, request_id)
    assert request is not None
    person = session.get(Person, approver_person_id)
    name = person.name if person else None
    rows = approval_rows(session, request_id)
    signed = next(
        (r for r in rows if r.level == card_level and r.decision is not None and r.approver_id),
        None,
    )
    if request.status == Status.PENDING.value and signed is not None:
        # a chain level already signed; the request waits for a higher one: this card is stale
        by = session.get(Person, signed.approver_id)
        _audit(
            session,
            "shipment.decide.lost",
            request_id,
            channel,
            now,
            {
                "decision": decision,
                "status": request.status,
                "decided_by": by.name if by else None,
                "level": card_level,
            },
            actor=person.code if person else f"person:{approver_person_id}",
        )
        lost = DecisionResult(
            request_id,
            False,
            request.status,
            decided_by_name=by.name if by else None,
            level=card_level,
        )
        outcome = _level_outcome(session, request_id, card_level)  # type: ignore[arg-type]
        return CardDecision(lost, outcome, card_level, approver_name=name, pressed_only=True)

    result = decide(
        session,
        settings,
        request_id=request_id,
        approver_person_id=approver_person_id,
        decision=decision,
        reason=reason,
        channel=channel,
        now=now,
    )
    request = _fresh(session, request_id)
    assert request is not None
    customer = session.get(Customer, request.customer_id)
    assert customer is not None
    if result.won and result.final:
        rejected = result.status == Status.REJECTED.value
        outcome = {
            "status": result.status,
            "by": name,
            "reason": ((reason or "").strip() or None) if rejected else None,
            "at": _iso(now),
            "channel": channel,
        }
        record_outcome(session, request_id, outcome)
        return CardDecision(result, outcome, None, approver_name=name)
    if result.won:  # a chain level signed: its cards say so, the next level is asked
        rows = approval_rows(session, request_id)
        signed_row = next(r for r in rows if r.level == result.level)
        waiting = next((r for r in rows if r.decision is None), None)
        outcome = {
            "status": "level_approved",
            "by": name,
            "role": signed_row.role,
            "next_role": waiting.role if waiting else None,
            "at": _iso(now),
            "channel": channel,
        }
        record_outcome(session, request_id, outcome, level=result.level)
        notify_approvers(session, settings, request_id, now, channel=channel)
        return CardDecision(result, outcome, result.level, approver_name=name)
    if result.refusal == EXPIRED:
        expired_ids = expire_requests(session, now, settings)
        expired: dict[int, dict[str, Any]] = {}
        for rid in expired_ids:
            lapsed = _fresh(session, rid)
            assert lapsed is not None
            expired[rid] = expired_outcome(lapsed, settings)
            record_outcome(session, rid, expired[rid])
        outcome = expired.get(request_id) or expired_outcome(request, settings)
        return CardDecision(result, outcome, None, expired, approver_name=name)
    if result.refusal == LIMIT_CHANGED:
        outcome = {
            "status": LIMIT_CHANGED,
            "was": str(request.limit_at_raise),
            "now": str(customer.credit_limit),
            "currency": customer.currency,
        }
        record_outcome(session, request_id, outcome)
        return CardDecision(result, outcome, None, approver_name=name)
    if result.refusal is None:  # someone (or the clock) decided first
        outcome = decided_outcome(session, request, settings)
        if outcome is not None:
            return CardDecision(result, outcome, None, approver_name=name, pressed_only=True)
    return CardDecision(result, approver_name=name)


__all__ = [
    "CARD",
    "CARD_KINDS",
    "REMINDER",
    "CardCopy",
    "CardDecision",
    "FollowUp",
    "audit_cards_updated",
    "card_copies",
    "card_key",
    "card_payload",
    "card_value",
    "decide_from_card",
    "decided_outcome",
    "eligible_approvers",
    "expired_outcome",
    "mark_shown",
    "notify_approvers",
    "parse_card_value",
    "record_outcome",
    "remind_or_escalate",
    "reminder_key",
]
