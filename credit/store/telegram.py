"""Telegram's state in the database: link codes, button tokens, pending questions, updates seen.

* Linking a chat to a person: an administrator makes a one-time code (``create_link_code``,
  ``creditbot people link``); the person sends ``/start CODE`` to the bot in a private chat
  and ``redeem_link_code`` makes that chat the person's ``telegram_chat_id`` (taking it from
  anyone who had it), clears ``unreachable_reason`` and audits the link. A code is 8
  characters from an alphabet without look-alikes (no 0/O, 1/I/L), made with ``secrets``.
* Buttons: ``callback_data`` can be forged by a client, so it is an opaque random token
  (``mint_token``, or ``DbTokenMinter`` for the outbox transport); the action, the value
  (``INVOICE|tier``) and the chat the message went to stay in ``telegram_callback_token``.
  ``resolve_token`` refuses unknown tokens, expired ones and tokens pressed in another chat
  (``TokenRefused``). ``use_token`` marks a token used with a conditional UPDATE (``… WHERE
  used_at IS NULL``) in the transaction that acts: of two presses, even at the same moment,
  one acts and the other finds it used (``token_user``: "already done by NAME").
* Questions: Promise to pay and Dispute ask for a date or a reason; the pending question is
  a row per chat (``start_conversation`` … ``end_conversation``), so any replica can take the
  answer and a restart loses nothing.
* Updates seen: ``claim_update`` stores ``update:{update_id}`` in ``chat_interaction``
  (platform ``telegram``) once; a repeated delivery finds it taken.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from credit.store.db import write_session
from credit.store.models import (
    AuditLog,
    CallbackToken,
    ChatInteraction,
    Person,
    TelegramConversation,
    TelegramLinkCode,
)

PLATFORM = "telegram"
CHANNEL = "telegram"  # the channel recorded in audit entries and acknowledgements
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
CODE_LENGTH = 8
TOKEN_BYTES = 16  # secrets.token_urlsafe(16): 22 characters
CONVERSATION_TTL = timedelta(hours=1)
CONVERSATION_KINDS = ("promise", "dispute")


class Clock(Protocol):
    def now(self) -> datetime: ...


# --- linking a chat to a person ----------------------------------------------------------------


class LinkError(ValueError):
    """A link code cannot be used; ``reason`` is ``unknown``, ``used``, ``expired`` or
    ``inactive`` (the message says it in English)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def normalise_code(code: str) -> str:
    """Codes are read case-insensitively, ignoring spaces and dashes people type."""
    return "".join(ch for ch in code.upper() if ch not in " -")


def create_link_code(
    session: Session, person: Person, now: datetime, ttl: timedelta, *, actor: str = "cli"
) -> str:
    """A new one-time code for ``person``, valid for ``ttl`` (audited; the code is not)."""
    if not person.active:
        raise LinkError("inactive", f"{person.code} is not active")
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if session.get(TelegramLinkCode, code) is None:  # 31**8 codes: a clash is rare
            break
    session.add(
        TelegramLinkCode(
            code=code, person_id=person.id, created_at=now, expires_at=now + ttl, used_at=None
        )
    )
    session.add(
        AuditLog(
            actor=actor[:100],
            action="telegram.link_code",
            entity="person",
            entity_id=person.code,
            channel="cli" if actor == "cli" else CHANNEL,
            at=now,
            after={"expires_at": (now + ttl).isoformat()},
        )
    )
    session.flush()
    return code


def redeem_link_code(session: Session, code: str, chat_id: int, now: datetime) -> Person:
    """Link ``chat_id`` to the code's person; the code is used up. ``LinkError`` otherwise."""
    row = session.get(TelegramLinkCode, normalise_code(code)[:16], with_for_update=True)
    if row is None:
        raise LinkError("unknown", "unknown link code")
    if row.used_at is not None:
        raise LinkError("used", "this link code was already used")
    if row.expires_at <= now:
        raise LinkError("expired", "this link code has expired")
    person = session.get(Person, row.person_id)
    assert person is not None  # foreign key
    if not person.active:
        raise LinkError("inactive", f"{person.code} is not active")
    # the chat belongs to one person: take it from whoever had it (clear first: it is unique)
    others = (
        session.execute(
            select(Person).where(Person.telegram_chat_id == chat_id, Person.id != person.id)
        )
        .scalars()
        .all()
    )
    for other in others:
        other.telegram_chat_id = None
        session.add(other)
    session.flush()
    before = {"telegram_chat_id": person.telegram_chat_id, "unreachable": person.unreachable_reason}
    person.telegram_chat_id, person.unreachable_reason = chat_id, None
    row.used_at, row.chat_id = now, chat_id
    session.add_all([person, row])
    session.add(
        AuditLog(
            actor=person.code,
            action="telegram.link",
            entity="person",
            entity_id=person.code,
            channel=CHANNEL,
            at=now,
            before=before,
            after={"telegram_chat_id": chat_id, "taken_from": [o.code for o in others]},
        )
    )
    session.flush()
    return person


def person_by_telegram_id(session: Session, telegram_id: int) -> Person | None:
    """The person linked to this Telegram chat — or user: a private chat's id is the user's."""
    return session.execute(
        select(Person).where(Person.telegram_chat_id == telegram_id)
    ).scalar_one_or_none()


# --- button tokens -----------------------------------------------------------------------------


class TokenRefused(Exception):
    """A pressed button's token cannot be used: ``reason`` is ``unknown``, ``expired`` or
    ``other_chat`` (or the caller's own, e.g. ``unsupported``). ``action`` and ``value`` are
    the token's, when it exists (plain strings: they outlive the rolled-back session)."""

    def __init__(self, reason: str, token: CallbackToken | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.action = token.action if token is not None else None
        self.value = token.value if token is not None else None


def mint_token(
    session: Session,
    *,
    action: str,
    value: str,
    chat_id: int,
    person_id: int | None,
    now: datetime,
    ttl: timedelta,
) -> str:
    """Store what a button does and return its opaque token (≤ 32 characters)."""
    if not action or len(action) > 32:
        raise ValueError(f"bad button action {action!r}")
    if len(value) > 255:
        raise ValueError("a button value is at most 255 characters")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session.add(
        CallbackToken(
            token=token,
            action=action,
            value=value,
            chat_id=chat_id,
            person_id=person_id,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    session.flush()
    return token


class DbTokenMinter:
    """The ``TokenMinter`` of the Telegram transport: each ``mint`` stores one token in a write
    transaction of its own and returns it for the button's ``callback_data``."""

    def __init__(self, engine: Engine, clock: Clock, ttl_days: int) -> None:
        self.engine, self.clock = engine, clock
        self.ttl = timedelta(days=ttl_days)

    def mint(self, *, action: str, value: str, chat_id: int, person_id: int | None) -> str:
        with write_session(self.engine) as session:
            return mint_token(
                session,
                action=action,
                value=value,
                chat_id=chat_id,
                person_id=person_id,
                now=self.clock.now(),
                ttl=self.ttl,
            )


def resolve_token(session: Session, token: str, chat_id: int, now: datetime) -> CallbackToken:
    """The token's row, if it may be pressed now in ``chat_id`` (used or not: see
    ``used_at``); ``TokenRefused`` for an unknown or expired token or another chat's."""
    row = session.get(CallbackToken, token) if token and len(token) <= 32 else None
    if row is None:
        raise TokenRefused("unknown")
    if row.chat_id != chat_id:
        raise TokenRefused("other_chat", row)
    if row.expires_at <= now:
        raise TokenRefused("expired", row)
    return row


def use_token(session: Session, token: str, person_id: int, via: str, now: datetime) -> bool:
    """Mark the token used by ``person_id`` (``via``: what was done); False when it already
    was — by another press, perhaps one committed a moment ago. Atomic: a conditional
    UPDATE, so of two concurrent presses exactly one gets True."""
    result = session.execute(
        update(CallbackToken)
        .where(CallbackToken.token == token, CallbackToken.used_at.is_(None))
        .values(used_at=now, used_by=person_id, used_via=via[:64])
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TokenUse:
    used_at: datetime
    by: str  # the person's name
    via: str | None


def token_user(session: Session, token: str) -> TokenUse | None:
    """Who used the token, read afresh (not from the session's identity map)."""
    row = session.execute(
        select(CallbackToken.used_at, Person.name, CallbackToken.used_via)
        .join(Person, Person.id == CallbackToken.used_by, isouter=True)
        .where(CallbackToken.token == token)
    ).first()
    if row is None or row[0] is None:
        return None
    return TokenUse(row[0], row[1] or "?", row[2])


def token_values(session: Session, tokens: list[str]) -> dict[str, str]:
    """``token → value`` for those of ``tokens`` that exist (to find a message's buttons for
    the same invoice)."""
    wanted = [t for t in tokens if t and len(t) <= 32]
    if not wanted:
        return {}
    rows = session.execute(
        select(CallbackToken.token, CallbackToken.value).where(CallbackToken.token.in_(wanted))
    ).all()
    return {token: value for token, value in rows}


def delete_expired_tokens(session: Session, now: datetime, *, keep: timedelta) -> int:
    """Remove tokens that expired more than ``keep`` ago (until then a press is told the
    button expired rather than that it is unknown); returns how many."""
    result = session.execute(
        delete(CallbackToken)
        .where(CallbackToken.expires_at < now - keep)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- questions waiting for an answer ------------------------------------------------------------


def start_conversation(
    session: Session,
    *,
    chat_id: int,
    token: str,
    kind: str,
    person_id: int,
    message_id: int,
    message_html: str | None,
    keyboard: list[Any] | None,
    now: datetime,
    ttl: timedelta = CONVERSATION_TTL,
) -> None:
    """Wait for the answer to ``kind`` in ``chat_id`` (replacing any question waiting there).

    An upsert (INSERT … ON CONFLICT DO UPDATE), so two presses at once cannot collide."""
    if kind not in CONVERSATION_KINDS:
        raise ValueError(f"unknown conversation kind {kind!r}")
    values = {
        "chat_id": chat_id,
        "token": token,
        "kind": kind,
        "person_id": person_id,
        "message_id": message_id,
        "message_html": message_html,
        "keyboard": keyboard,
        "created_at": now,
        "expires_at": now + ttl,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(TelegramConversation).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["chat_id"], set_={k: v for k, v in values.items() if k != "chat_id"}
    )
    session.execute(stmt)


def pending_conversation(session: Session, chat_id: int) -> TelegramConversation | None:
    """The question waiting in the chat, expired or not (the caller checks ``expires_at``)."""
    return session.execute(
        select(TelegramConversation)
        .where(TelegramConversation.chat_id == chat_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def end_conversation(session: Session, chat_id: int, token: str | None = None) -> bool:
    """Forget the question waiting in the chat (only the one for ``token``, when given)."""
    stmt = delete(TelegramConversation).where(TelegramConversation.chat_id == chat_id)
    if token is not None:
        stmt = stmt.where(TelegramConversation.token == token)
    result = session.execute(stmt.execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def update_conversation_message(
    session: Session, chat_id: int, message_id: int, html: str, keyboard: list[Any] | None
) -> None:
    """The reminder a question is about was edited meanwhile: remember it as it is now."""
    session.execute(
        update(TelegramConversation)
        .where(
            TelegramConversation.chat_id == chat_id,
            TelegramConversation.message_id == message_id,
        )
        .values(message_html=html, keyboard=keyboard)
        .execution_options(synchronize_session=False)
    )


# --- updates seen --------------------------------------------------------------------------------


def claim_update(session: Session, update_id: int, now: datetime) -> bool:
    """Store the update as seen; False when it was before (Telegram delivered it again)."""
    try:
        with session.begin_nested():  # a savepoint: a taken key does not spoil the transaction
            session.add(
                ChatInteraction(
                    platform=PLATFORM, interaction_key=f"update:{update_id}", received_at=now
                )
            )
        return True
    except IntegrityError:
        return False


__all__ = [
    "CHANNEL",
    "CODE_ALPHABET",
    "CONVERSATION_TTL",
    "PLATFORM",
    "DbTokenMinter",
    "LinkError",
    "TokenRefused",
    "TokenUse",
    "claim_update",
    "create_link_code",
    "delete_expired_tokens",
    "end_conversation",
    "mint_token",
    "normalise_code",
    "pending_conversation",
    "person_by_telegram_id",
    "redeem_link_code",
    "resolve_token",
    "start_conversation",
    "token_user",
    "token_values",
    "update_conversation_message",
    "use_token",
]
