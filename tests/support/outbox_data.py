"""Seed data for outbox and dispatcher tests: people, settings and composable messages."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from credit.settings import OutboxSettings, Settings, SlackSettings
from credit.store.db import read_session, write_session
from credit.store.escalation import PersonReminder, TierSection
from credit.store.models import AuditLog, OutboxMessage, Person
from credit.store.outbox import NewMessage, enqueue

# Wednesday 2026-11-25, 10:00 in Asia/Shanghai: a working day, inside the send window.
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
BUSINESS_DATE = date(2026, 11, 25)
ZONE = "Asia/Shanghai"

ADMINS = ("adm01", "adm02")
TEST_SLACK_TOKEN = "xoxb-fake-0000-token"
INACTIVE_ADMIN = "adm99"


def settings(**outbox: Any) -> Settings:
    """Default settings with the outbox going to a chat channel ("slack") instead of console.

    Slack needs its secrets once it is a channel; these match tests/fakes/slack_api.py.
    """
    outbox.setdefault("channels", ["slack"])
    slack = SlackSettings(bot_token=TEST_SLACK_TOKEN, signing_secret="test-signing-secret")
    return Settings(outbox=OutboxSettings(**outbox), slack=slack)


def seed_people(engine: Engine, reps: int = 3, **extra: dict[str, Any]) -> dict[str, int]:
    """Reps rep01…, two active admins and an inactive one, all reachable on Slack.

    ``extra`` adds people by code (keyword values are Person fields). Returns code -> id.
    """
    people = [
        Person(
            code=f"rep{i:02d}",
            name=f"Rep {i}",
            role="rep",
            slack_user_id=f"UREP{i:04d}",
            time_zone=ZONE,
        )
        for i in range(1, reps + 1)
    ]
    people += [
        Person(code=code, name=f"Admin {code}", role="admin", slack_user_id=f"U{code.upper()}")
        for code in ADMINS
    ]
    people.append(
        Person(code=INACTIVE_ADMIN, name="Former admin", role="admin", active=False,
               slack_user_id="UADM99")
    )  # fmt: skip
    for code, fields in extra.items():
        people.append(Person(code=code, **{"name": code, "time_zone": ZONE, **fields}))
    with write_session(engine) as s:
        s.add_all(people)
        s.flush()
        return {p.code: p.id for p in people}  # type: ignore[misc]


def reminder_payload(person: Person, business_date: date = BUSINESS_DATE) -> dict[str, Any]:
    """A reminder payload exactly as the scan builds it (``PersonReminder.payload``)."""
    r = PersonReminder(person.id, person.code, person.name, person.role, person.locale, ZONE)  # type: ignore[arg-type]
    r.sections = [
        TierSection(
            "overdue",
            "Chase the customer and find out why.",
            count=1,
            new_count=1,
            totals={"CNY": Decimal("12800.00")},
            lines=[
                {
                    "invoice_id": 1,
                    "number": "INV-2026-0001",
                    "customer": "C0001",
                    "customer_name": "宏达机械有限公司",
                    "open_amount": "12800.00",
                    "currency": "CNY",
                    "days": 12,
                    "due_date": (business_date - timedelta(days=12)).isoformat(),
                    "disputed": False,
                    "new": True,
                }
            ],
        )
    ]
    return r.payload(business_date)


def reminders(
    engine: Engine,
    codes: list[str],
    *,
    not_before: datetime = NOW,
    channel: str = "slack",
    tag: str = "",
) -> list[NewMessage]:
    """One reminder per code (repeat a code for several to one person)."""
    with read_session(engine) as s:
        people = {p.code: p for p in s.execute(select(Person)).scalars()}
        out = []
        for n, code in enumerate(codes):
            person = people[code]
            out.append(
                NewMessage(
                    f"reminder:{person.id}:{BUSINESS_DATE.isoformat()}:{tag}{n}",
                    person.id,
                    channel,
                    "reminder",
                    BUSINESS_DATE,
                    reminder_payload(person),
                    not_before,
                )
            )
        return out


def admin_alert_message(
    engine: Engine, admin_code: str, key: str, not_before: datetime
) -> NewMessage:
    """An ``admin_alert`` row shaped as ``outbox.alert_admins`` writes it."""
    with read_session(engine) as s:
        admin = s.execute(select(Person).where(Person.code == admin_code)).scalar_one()
        return NewMessage(
            key,
            admin.id,
            "slack",
            "admin_alert",
            None,
            {
                "kind": "admin_alert",
                "message_id": 0,
                "message_kind": "reminder",
                "recipient_code": "rep01",
                "channel": "slack",
                "status": "failed",
                "reason": "channel_not_found",
                "attempts": 1,
                "recipient": {"code": admin.code, "name": admin.name, "locale": admin.locale,
                              "time_zone": admin.time_zone},
            },
            not_before,
        )  # fmt: skip


def put(engine: Engine, messages: list[NewMessage], now: datetime = NOW) -> list[int]:
    """Enqueue ``messages``; returns the ids of the rows, in the order given."""
    with write_session(engine) as s:
        enqueue(s, messages, now)
    keys = [m.idempotency_key for m in messages]
    with read_session(engine) as s:
        by_key = dict(
            s.execute(
                select(OutboxMessage.idempotency_key, OutboxMessage.id).where(
                    OutboxMessage.idempotency_key.in_(keys)
                )
            ).all()
        )
    return [by_key[k] for k in keys]


def rows(engine: Engine, **where: Any) -> list[OutboxMessage]:
    with read_session(engine) as s:
        stmt = select(OutboxMessage).order_by(OutboxMessage.id)
        for column, value in where.items():
            stmt = stmt.where(getattr(OutboxMessage, column) == value)
        return list(s.execute(stmt).scalars())


def row(engine: Engine, message_id: int) -> OutboxMessage:
    with read_session(engine) as s:
        found = s.get(OutboxMessage, message_id)
        assert found is not None, message_id
        return found


def audits(engine: Engine, action: str) -> list[AuditLog]:
    with read_session(engine) as s:
        return list(
            s.execute(
                select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)
            ).scalars()
        )


def person(engine: Engine, code: str) -> Person:
    with read_session(engine) as s:
        return s.execute(select(Person).where(Person.code == code)).scalar_one()


class FixedRandom(random.Random):
    """``random()`` always returns ``value`` (0.5 makes the backoff jitter factor exactly 1)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value
