"""The notification outbox: every outgoing message is a row before it is sent.

Rows are written in the same transaction as the business change that causes them, under a
unique idempotency key, so nothing is queued twice. Dispatchers *claim* due rows with a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), send, then record
the platform's reference. A dispatcher that dies between claim and record leaves the row
``sending`` with a lease that runs out, and another claim picks it up: at least once, with
at most the one in-flight message repeated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlmodel import Session

from credit.store.db import write_session
from credit.store.models import AuditLog, OutboxMessage, Person
from credit.store.sqlfuncs import insert_ignoring_duplicates

STATUSES = ("pending", "sending", "sent", "failed", "dead")


@dataclass(frozen=True, slots=True)
class NewMessage:
    idempotency_key: str
    recipient_id: int | None
    channel: str
    kind: str
    business_date: date | None
    payload: dict[str, Any]
    not_before: datetime


def enqueue(session: Session, messages: Iterable[NewMessage], now: datetime) -> int:
    """Insert messages, skipping keys already queued. Returns how many were new.

    Keys already present are filtered out first (one indexed look-up per 500); the insert
    still says ``ON CONFLICT DO NOTHING``, so a concurrent writer of the same key can never
    make a duplicate — in that race the count may include a row the other writer won."""
    wanted = {m.idempotency_key: m for m in messages}
    if not wanted:
        return 0
    present = existing_keys(session, list(wanted))
    rows = [
        {
            "idempotency_key": m.idempotency_key,
            "recipient_id": m.recipient_id,
            "channel": m.channel,
            "kind": m.kind,
            "business_date": m.business_date,
            "payload": m.payload,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": m.not_before,
            "created_at": now,
        }
        for key, m in wanted.items()
        if key not in present
    ]
    stmt = insert_ignoring_duplicates(session.get_bind().dialect.name, OutboxMessage.__table__)
    for start in range(0, len(rows), 500):
        session.execute(stmt, rows[start : start + 500])
    return len(rows)


def existing_keys(session: Session, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        found.update(
            session.execute(
                select(OutboxMessage.idempotency_key).where(
                    OutboxMessage.idempotency_key.in_(chunk)
                )
            ).scalars()
        )
    return found


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    channel: str
    kind: str
    recipient_id: int | None
    address: dict[str, Any]  # slack_user_id / telegram_chat_id / code of the recipient
    payload: dict[str, Any]
    attempts: int
    platform_ref: dict[str, Any] | None


def claim(
    engine: Engine,
    now: datetime,
    *,
    limit: int,
    lease_seconds: int,
    channels: Sequence[str] | None = None,
) -> list[Claimed]:
    """Take up to ``limit`` due rows (pending, or sending with a lapsed lease) for sending."""
    due = or_(
        and_(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now),
        and_(OutboxMessage.status == "sending", OutboxMessage.lease_until < now),
    )
    stmt = select(OutboxMessage).where(due)
    if channels is not None:
        stmt = stmt.where(OutboxMessage.channel.in_(list(channels)))
    stmt = stmt.order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit)
    with write_session(engine) as s:
        if engine.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = s.execute(stmt).scalars().all()
        if not rows:
            return []
        lease = now + timedelta(seconds=lease_seconds)
        ids = [r.id for r in rows]
        # synchronize_session=False: the rows loaded above keep the attempts they had, so
        # ``r.attempts + 1`` below is this attempt (the default would already add one to them)
        s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(status="sending", lease_until=lease, attempts=OutboxMessage.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        people = {
            p.id: p
            for p in s.execute(
                select(Person).where(
                    Person.id.in_({r.recipient_id for r in rows if r.recipient_id})
                )
            ).scalars()
        }
        claimed = []
        for r in rows:
            person = people.get(r.recipient_id) if r.recipient_id else None
            address: dict[str, Any] = {}
            if person is not None:
                address = {
                    "person_id": person.id,
                    "code": person.code,
                    "name": person.name,
                    "slack_user_id": person.slack_user_id,
                    "telegram_chat_id": person.telegram_chat_id,
                    "time_zone": person.time_zone,
                    "locale": person.locale,
                }
            claimed.append(
                Claimed(
                    r.id,
                    r.channel,
                    r.kind,
                    r.recipient_id,
                    address,
                    dict(r.payload),
                    r.attempts + 1,
                    r.platform_ref,
                )
            )
        return claimed


def mark_sent(engine: Engine, message_id: int, platform_ref: dict[str, Any], now: datetime) -> None:
    with write_session(engine) as s:
        s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id)
            .values(
                status="sent",
                sent_at=now,
                platform_ref=platform_ref,
                lease_until=None,
                last_error=None,
            )
        )


def reschedule(
    engine: Engine, message_id: int, at: datetime, error: str | None, *, count_attempt: bool = True
) -> None:
    """Back to pending, to be tried at ``at`` (after a transient error, a 429, a closed window).

    ``count_attempt=False`` gives back the attempt the claim counted (rate limits and send
    windows are not failures)."""
    values: dict[str, Any] = {"status": "pending", "next_attempt_at": at, "lease_until": None}
    if error is not None:
        values["last_error"] = error[:2000]
    if not count_attempt:
        values["attempts"] = OutboxMessage.attempts - 1
    with write_session(engine) as s:
        s.execute(update(OutboxMessage).where(OutboxMessage.id == message_id).values(**values))


def _give_up(s: Session, message_id: int, status: str, reason: str, now: datetime) -> None:
    if status not in ("failed", "dead"):
        raise ValueError(status)
    s.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(status=status, last_error=reason[:2000], lease_until=None)
    )
    s.add(
        AuditLog(
            actor="dispatcher",
            action=f"outbox.{status}",
            entity="outbox",
            entity_id=str(message_id),
            channel="scheduler",
            after={"reason": reason},
            at=now,
        )
    )


def give_up_and_alert(
    engine: Engine,
    message_id: int,
    status: str,
    reason: str,
    now: datetime,
    *,
    channels: Sequence[str],
    unreachable_person_id: int | None = None,
) -> int:
    """Mark the row failed or dead and queue the admins' alerts in one transaction, so a
    crash cannot leave a dead message nobody was told about."""
    with write_session(engine) as s:
        _give_up(s, message_id, status, reason, now)
        return _alert_admins(
            s,
            failed_id=message_id,
            status=status,
            reason=reason,
            channels=channels,
            now=now,
            unreachable_person_id=unreachable_person_id,
        )


def retry(session: Session, message_id: int, now: datetime, actor: str) -> OutboxMessage:
    """An operator sends a failed or dead message again (``creditbot outbox retry ID``)."""
    row = session.get(OutboxMessage, message_id)
    if row is None:
        raise LookupError(f"no outbox message {message_id}")
    if row.status not in ("failed", "dead"):
        raise ValueError(f"message {message_id} is {row.status}; only failed or dead ones retry")
    before = {"status": row.status, "attempts": row.attempts, "last_error": row.last_error}
    row.status, row.attempts, row.next_attempt_at, row.lease_until = "pending", 0, now, None
    session.add(row)
    session.add(
        AuditLog(
            actor=actor,
            action="outbox.retry",
            entity="outbox",
            entity_id=str(message_id),
            before=before,
            after={"status": "pending"},
            at=now,
        )
    )
    return row


def release_pending(session: Session, now: datetime, actor: str) -> int:
    """Make every pending message due now (an operator's "send it now", e.g. for the demo
    outside working hours). Audited, even when nothing was waiting."""
    ids = list(
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at > now)
            .values(next_attempt_at=now)
            .returning(OutboxMessage.id)
        ).scalars()
    )
    session.add(
        AuditLog(
            actor=actor,
            action="outbox.release",
            entity="outbox",
            after={"messages": len(ids)},
            at=now,
        )
    )
    return len(ids)


def list_messages(
    session: Session, status: str | None = None, limit: int = 200
) -> list[OutboxMessage]:
    stmt = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(OutboxMessage.status == status)
    return list(session.execute(stmt).scalars())


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
    ).all()
    return {status: n for status, n in rows}


UNROUTABLE = "unroutable"


def route(person: Person, channels: Sequence[str]) -> str:
    """The first configured channel the person can be reached on."""
    for channel in channels:
        if channel == "console":
            return channel
        if channel == "slack" and person.slack_user_id:
            return channel
        if channel == "telegram" and person.telegram_chat_id is not None:
            return channel
    return UNROUTABLE


def alert_admins(
    engine: Engine,
    *,
    failed_id: int,
    status: str,
    reason: str,
    channels: Sequence[str],
    now: datetime,
    unreachable_person_id: int | None = None,
) -> int:
    """Queue an ``admin_alert`` to every active admin about a failed or dead message.

    Alerts about alerts are not sent (no loops). When the platform said the person cannot be
    reached (e.g. they blocked the bot), the person is marked unreachable with the reason.
    """
    with write_session(engine) as s:
        return _alert_admins(
            s,
            failed_id=failed_id,
            status=status,
            reason=reason,
            channels=channels,
            now=now,
            unreachable_person_id=unreachable_person_id,
        )


def _alert_admins(
    s: Session,
    *,
    failed_id: int,
    status: str,
    reason: str,
    channels: Sequence[str],
    now: datetime,
    unreachable_person_id: int | None,
) -> int:
    failed = s.get(OutboxMessage, failed_id)
    if failed is None or failed.kind == "admin_alert":
        return 0
    recipient = s.get(Person, failed.recipient_id) if failed.recipient_id else None
    if unreachable_person_id is not None and recipient is not None:
        recipient.unreachable_reason = reason[:500]
        s.add(recipient)
        s.add(
            AuditLog(
                actor="dispatcher",
                action="person.unreachable",
                entity="person",
                entity_id=recipient.code,
                channel=failed.channel,
                after={"reason": reason},
                at=now,
            )
        )
    admins = s.execute(select(Person).where(Person.role == "admin", Person.active)).scalars()
    messages = [
        NewMessage(
            f"alert:{failed_id}:{status}:{admin.id}",
            admin.id,
            route(admin, channels),
            "admin_alert",
            None,
            {
                "kind": "admin_alert",
                "message_id": failed_id,
                "message_kind": failed.kind,
                "recipient_code": recipient.code if recipient else "?",
                "channel": failed.channel,
                "status": status,
                "reason": reason,
                "attempts": failed.attempts,
                "recipient": {
                    "code": admin.code,
                    "name": admin.name,
                    "locale": admin.locale,
                    "time_zone": admin.time_zone,
                },
            },
            now,
        )
        for admin in admins
    ]
    return enqueue(s, messages, now)
