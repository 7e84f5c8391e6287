"""The Slack app (slack-bolt, sync): the reminder buttons and the modals they open.

Buttons (``bot.slack_render`` gives each the ``Button.action_id`` plus ``:n``; the value is
``INVOICE|tier``): ``ack`` acknowledges, ``snooze`` pauses reminders for ``SNOOZE_DAYS``,
``promise`` and ``dispute`` open a modal whose submission records the promise / the dispute.

Every listener acknowledges Slack first (``ack()``; Bolt runs it after answering the HTTP
request, ``process_before_response=False``), then maps the clicking Slack user to a
``Person`` by ``slack_user_id``, calls ONE service function of ``credit.store.actions`` in a
``write_session`` and answers: on success the clicked message is updated in place
(``chat.update``: the button row becomes "✓ … by NAME"); an unknown Slack user or a refusal
(``NotAllowed``) gets an ephemeral message and an audit entry and changes nothing; an
``ActionError`` (a date in the past …) gets an ephemeral message. The rules live in the
service functions, not here.

Shipment approval cards (``bot.approval_cards``; the button value is ``<request id>|<level>``):
``approve`` decides at once, ``reject`` opens a modal asking the reason, whose submission
decides. Either calls ``credit.store.approval_notices.decide_from_card`` in one
``write_session`` (the interaction stored in the same transaction); exactly one decision
wins. The winner's press edits every copy of the card — on Slack and on Telegram, through
``card_transports`` — to "Approved by NAME" / "Rejected by NAME: reason"; anyone who lost
is told "Already decided by NAME" ephemerally (and their own card is refreshed if it still
shows buttons); a refusal (region, authority, own request …) is ephemeral and audited; an
expired request or a changed limit is said on every copy instead of deciding.

``/credit request CUSTOMER AMOUNT ORDER`` raises a shipment request (``raise_from_chat``,
shared with Telegram's ``/request`` and ``creditbot request``): the requester is the person
mapped from the Slack user, the currency the customer's, and in ONE transaction the request
is checked and stored and, when it waits for approval, the approvers' cards are queued. The
answer (ephemeral) says what came of it: approved at once, refused, or pending (who was
asked); an unknown person, customer or a bad amount is said and nothing is written.

Replays and double clicks: each interaction is stored once in ``chat_interaction``, in the
transaction that acts on it, keyed by Slack's ``action_ts`` + user + ``action_id`` for a
click and by the view id for a modal submission. A second delivery finds its key taken and
changes nothing (no second audit row, no second message update). An interaction that ended
in an ``ActionError`` is not stored: nothing was done, so trying again is allowed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot.approval_cards import card_transports, press_answer, update_card_copies
from bot.i18n import Translator
from bot.slack_home import (
    credit_file_message,
    home_view,
    not_linked_view,
    scope_text,
)
from bot.slack_render import escape_mrkdwn
from bot.transports.slack import make_web_client
from credit.money import MoneyError, parse_amount
from credit.settings import Settings
from credit.store.actions import (
    ActionError,
    ActionResult,
    NotAllowed,
    acknowledge,
    dispute,
    promise_to_pay,
    refusal_entry,
    snooze,
)
from credit.store.approval_notices import (
    CARD,
    CardDecision,
    decide_from_card,
    notify_approvers,
    parse_card_value,
)
from credit.store.approvals import (
    REASON_MAX,
    ApprovalError,
    DuplicateOrder,
    UnknownCustomer,
    UnknownRequest,
    get_request,
    raise_request,
)
from credit.store.db import read_session, write_session
from credit.store.models import (
    AuditLog,
    ChatInteraction,
    Customer,
    OutboxMessage,
    Person,
    Region,
    ShipmentRequest,
)
from credit.store.views import (
    PROMISE_HORIZON_DAYS,
    actor_of,
    credit_file,
    find_customers,
    may_view_customer,
    pending_approvals,
    person_by_slack_id,
    promises_due,
    receivables_by_tier,
)

log = logging.getLogger(__name__)

PLATFORM = "slack"
CHANNEL = "slack"  # the channel recorded in acknowledgements and audit entries
SNOOZE_DAYS = 3
PROMISE_VIEW = "creditbot_promise"
DISPUTE_VIEW = "creditbot_dispute"
ACTIONS = {
    name: re.compile(rf"^{name}(:\d+)?$") for name in ("ack", "snooze", "promise", "dispute")
}
# shipment approval cards (bot.approval_cards): the value is ``<request id>|<level>``
REJECT_VIEW = "creditbot_reject"
APPROVAL_BUTTONS = {name: re.compile(rf"^{name}(:\d+)?$") for name in ("approve", "reject")}
# opens the transports that edit every copy of a card (Slack, and Telegram when configured)
CardTransports = Callable[[], AbstractAsyncContextManager[Mapping[str, Any]]]


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class Click:
    """A button press on one of our messages (a ``block_actions`` payload)."""

    user: str
    action_id: str
    block_id: str
    invoice: str
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    trigger_id: str
    key: str

    @classmethod
    def parse(cls, body: dict[str, Any], action: dict[str, Any]) -> Click:
        user = str(body["user"]["id"])
        container = body.get("container") or {}
        message = body.get("message") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id") or ""
        ts = container.get("message_ts") or message.get("ts") or ""
        action_id = str(action.get("action_id", ""))
        invoice = str(action.get("value", "")).split("|", 1)[0]
        return cls(
            user=user,
            action_id=action_id,
            block_id=str(action.get("block_id", "")),
            invoice=invoice,
            channel=str(channel),
            ts=str(ts),
            text=str(message.get("text") or ""),
            blocks=list(message.get("blocks") or []),
            trigger_id=str(body.get("trigger_id", "")),
            key=f"{action.get('action_ts', '')}:{user}:{action_id}"[:255],
        )

    def message_ref(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "ts": self.ts,
            "text": self.text,
            "blocks": self.blocks,
            "block_id": self.block_id,
            "invoice": self.invoice,
        }


@dataclass(frozen=True)
class Outcome:
    """What came of an interaction: ``done``, ``refused``, ``unknown_user``, ``failed`` or
    ``duplicate``."""

    kind: str
    reason: str = ""
    result: ActionResult | None = None
    name: str = ""
    locale: str | None = None


class _UnknownUser(Exception):
    pass


def _claim(session: Session, key: str, now: datetime, detail: dict[str, Any] | None = None) -> bool:
    """Store the interaction; False when it was stored before (a replay or double click)."""
    try:
        with session.begin_nested():  # a savepoint: a taken key does not spoil the transaction
            session.add(
                ChatInteraction(
                    platform=PLATFORM, interaction_key=key, received_at=now, detail=detail
                )
            )
        return True
    except IntegrityError:
        return False


ServiceCall = Callable[[Session, str], ActionResult]


@dataclass(frozen=True)
class CardOutcome:
    """What came of a press on a shipment approval card: ``pressed`` (``decision`` says how
    it went: won, lost to someone, refused), ``unknown_user``, ``unknown_request``,
    ``failed`` (``reason``) or ``duplicate``."""

    kind: str
    locale: str | None = None
    decision: CardDecision | None = None
    reason: str = ""


class SlackInteractions:
    """The work behind the listeners: parse → one service call → answer on Slack."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        client: WebClient,
        clock: Clock,
        card_transports: CardTransports | None = None,
    ):
        self.engine, self.settings, self.client, self.clock = engine, settings, client, clock
        self.card_transports: CardTransports = card_transports or (
            lambda: _default_card_transports(settings, engine, clock, client)
        )

    # --- time -------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.clock.now()

    def _today(self, now: datetime) -> date:
        return now.astimezone(self.settings.zone).date()

    # --- the one transaction per interaction --------------------------------------------------

    def perform(
        self, key: str, slack_user: str, invoice: str, action: str, call: ServiceCall
    ) -> Outcome:
        now = self._now()
        try:
            with write_session(self.engine) as session:
                if not _claim(session, key, now):
                    return Outcome("duplicate")
                person = session.execute(
                    select(Person).where(Person.slack_user_id == slack_user)
                ).scalar_one_or_none()
                if person is None:
                    raise _UnknownUser
                result = call(session, person.code)
                return Outcome("done", result=result, name=person.name, locale=person.locale)
        except NotAllowed as exc:
            with write_session(self.engine) as session:
                if not _claim(session, key, now):
                    return Outcome("duplicate")
                session.add(refusal_entry(exc))
            locale = self._locale_of(slack_user)
            return Outcome("refused", reason=str(exc), locale=locale)
        except _UnknownUser:
            with write_session(self.engine) as session:
                if not _claim(session, key, now):
                    return Outcome("duplicate")
                session.add(
                    AuditLog(
                        actor=f"slack:{slack_user}"[:100],
                        action="slack.refused",
                        entity="invoice",
                        entity_id=invoice[:64] or None,
                        channel=CHANNEL,
                        at=now,
                        after={"reason": "unknown Slack user", "action": action},
                    )
                )
            return Outcome("unknown_user")
        except ActionError as exc:
            return Outcome("failed", reason=str(exc), locale=self._locale_of(slack_user))

    def _locale_of(self, slack_user: str) -> str | None:
        with read_session(self.engine) as session:
            person = session.execute(
                select(Person).where(Person.slack_user_id == slack_user)
            ).scalar_one_or_none()
            return person.locale if person else None

    # --- answering on Slack -------------------------------------------------------------------

    def answer(self, outcome: Outcome, user: str, ref: dict[str, Any], done_text: str) -> None:
        t = Translator(outcome.locale)
        if outcome.kind == "duplicate":
            log.info("slack: interaction already processed; ignored")
        elif outcome.kind == "done":
            self._update_message(ref, done_text)
        elif outcome.kind == "unknown_user":
            self._ephemeral(ref["channel"], user, t("slack_unknown_user"))
        elif outcome.kind == "refused":
            self._ephemeral(ref["channel"], user, t("slack_refused", reason=outcome.reason))
        else:
            self._ephemeral(ref["channel"], user, t("slack_failed", reason=outcome.reason))

    def _update_message(self, ref: dict[str, Any], text: str) -> None:
        line = {
            "type": "context",
            "block_id": ref["block_id"],
            "elements": [{"type": "mrkdwn", "text": escape_mrkdwn(text)}],
        }
        blocks = [line if b.get("block_id") == ref["block_id"] else b for b in ref["blocks"]]
        if line not in blocks:
            blocks.append({k: v for k, v in line.items() if k != "block_id"})
        try:
            self.client.chat_update(
                channel=ref["channel"], ts=ref["ts"], text=ref.get("text") or text, blocks=blocks
            )
        except SlackApiError as exc:
            log.warning("slack: chat.update failed: %s", exc.response.get("error"))

    def _ephemeral(self, channel: str, user: str, text: str) -> None:
        try:
            self.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackApiError as exc:
            log.warning("slack: chat.postEphemeral failed: %s", exc.response.get("error"))

    # --- buttons ------------------------------------------------------------------------------

    def on_ack(self, body: dict[str, Any], action: dict[str, Any]) -> Outcome:
        click = Click.parse(body, action)
        now = self._now()

        def call(session: Session, person_code: str) -> ActionResult:
            return acknowledge(
                session,
                click.invoice,
                person_code,
                tiers=self.settings.tier_table,
                as_of=self._today(now),
                now=now,
                channel=CHANNEL,
            )

        outcome = self.perform(click.key, click.user, click.invoice, "ack", call)
        t = Translator(outcome.locale)
        text = t("slack_done_ack", number=click.invoice, name=outcome.name)
        self.answer(outcome, click.user, click.message_ref(), text)
        return outcome

    def on_snooze(self, body: dict[str, Any], action: dict[str, Any]) -> Outcome:
        click = Click.parse(body, action)
        now = self._now()
        until = self._today(now) + timedelta(days=SNOOZE_DAYS)

        def call(session: Session, person_code: str) -> ActionResult:
            return snooze(
                session,
                click.invoice,
                person_code,
                until=until,
                today=self._today(now),
                now=now,
                channel=CHANNEL,
            )

        outcome = self.perform(click.key, click.user, click.invoice, "snooze", call)
        t = Translator(outcome.locale)
        text = t("slack_done_snooze", number=click.invoice, until=t.date(until), name=outcome.name)
        self.answer(outcome, click.user, click.message_ref(), text)
        return outcome

    def open_modal(self, body: dict[str, Any], action: dict[str, Any], kind: str) -> bool:
        """Open the promise / dispute modal (once per click; a double click opens one)."""
        click = Click.parse(body, action)
        with write_session(self.engine) as session:
            if not _claim(session, click.key, self._now(), detail=click.message_ref()):
                log.info("slack: click already processed; no second modal")
                return False
        locale = self._locale_of(click.user)
        meta = json.dumps({"invoice": click.invoice, "click": click.key})
        view = (promise_view if kind == "promise" else dispute_view)(
            Translator(locale), click.invoice, meta
        )
        try:
            self.client.views_open(trigger_id=click.trigger_id, view=view)
        except SlackApiError as exc:
            log.warning("slack: views.open failed: %s", exc.response.get("error"))
            return False
        return True

    # --- modal submissions --------------------------------------------------------------------

    def _submission(self, body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """The submitting user, the invoice and the clicked message the modal came from."""
        view = body["view"]
        meta = json.loads(view.get("private_metadata") or "{}")
        with read_session(self.engine) as session:
            row = session.execute(
                select(ChatInteraction).where(
                    ChatInteraction.platform == PLATFORM,
                    ChatInteraction.interaction_key == str(meta.get("click", "")),
                )
            ).scalar_one_or_none()
            ref = dict(row.detail or {}) if row is not None else {}
        return str(body["user"]["id"]), str(meta.get("invoice", "")), ref

    def on_promise_submitted(self, body: dict[str, Any], form: PromiseForm) -> Outcome:
        user, invoice, ref = self._submission(body)
        now = self._now()

        def call(session: Session, person_code: str) -> ActionResult:
            return promise_to_pay(
                session,
                invoice,
                person_code,
                promised_date=form.promised_date,
                amount=form.amount,
                today=self._today(now),
                now=now,
                note=form.note,
                channel=CHANNEL,
            )

        key = f"view:{body['view']['id']}"
        outcome = self.perform(key, user, invoice, "promise", call)
        detail = outcome.result.detail if outcome.result else ""
        t = Translator(outcome.locale)
        text = t("slack_done_promise", number=invoice, detail=detail, name=outcome.name)
        self._answer_submission(outcome, user, ref, text)
        return outcome

    def on_dispute_submitted(self, body: dict[str, Any], reason: str) -> Outcome:
        user, invoice, ref = self._submission(body)
        now = self._now()

        def call(session: Session, person_code: str) -> ActionResult:
            return dispute(session, invoice, person_code, reason=reason, now=now, channel=CHANNEL)

        key = f"view:{body['view']['id']}"
        outcome = self.perform(key, user, invoice, "dispute", call)
        t = Translator(outcome.locale)
        text = t("slack_done_dispute", number=invoice, name=outcome.name, reason=reason)
        self._answer_submission(outcome, user, ref, text)
        return outcome

    def _answer_submission(
        self, outcome: Outcome, user: str, ref: dict[str, Any], text: str
    ) -> None:
        if not ref.get("channel"):
            log.warning("slack: modal submitted without the message it came from")
            return
        self.answer(outcome, user, ref, text)

    # --- shipment approval cards ----------------------------------------------------------

    def decide_card(
        self, key: str, slack_user: str, value: str, decision: str, reason: str | None = None
    ) -> CardOutcome:
        """One press on a card (or one Reject modal submitted): ONE transaction — the
        interaction stored once, the Slack user mapped to a person, ``decide_from_card``."""
        now = self._now()
        try:
            request_id, level = parse_card_value(value)
        except ValueError:
            return CardOutcome("unknown_request", self._locale_of(slack_user))
        locale: str | None = None
        try:
            with write_session(self.engine) as session:
                if not _claim(session, key, now):
                    return CardOutcome("duplicate")
                person = person_by_slack_id(session, slack_user)
                if person is None:
                    session.add(
                        AuditLog(
                            actor=f"slack:{slack_user}"[:100],
                            action="slack.refused",
                            entity="shipment_request",
                            entity_id=str(request_id),
                            channel=CHANNEL,
                            at=now,
                            after={"reason": "unknown Slack user", "action": decision},
                        )
                    )
                    return CardOutcome("unknown_user")
                locale = person.locale
                assert person.id is not None
                result = decide_from_card(
                    session,
                    self.settings,
                    request_id=request_id,
                    card_level=level,
                    approver_person_id=person.id,
                    decision=decision,
                    reason=reason,
                    channel=CHANNEL,
                    now=now,
                )
        except UnknownRequest:
            return CardOutcome("unknown_request", locale or self._locale_of(slack_user))
        except ApprovalError as exc:
            return CardOutcome("failed", locale, reason=str(exc))
        return CardOutcome("pressed", locale, decision=result)

    def answer_card(self, outcome: CardOutcome, user: str, channel: str, ts: str = "") -> None:
        """Tell the presser what happened (ephemeral, unless their press decided it), then
        edit every copy of the card when its outcome changed."""
        t = Translator(outcome.locale)
        if outcome.kind == "duplicate":
            log.info("slack: approval press already processed; ignored")
            return
        text = {
            "unknown_user": t("slack_unknown_user"),
            "unknown_request": t("approval_unknown_request"),
            "failed": t("slack_failed", reason=outcome.reason),
        }.get(outcome.kind)
        decision = outcome.decision
        if decision is not None and not decision.result.won:
            text = press_answer(t, decision.result)
        if text and channel:
            self._ephemeral(channel, user, text)
        if decision is not None and (decision.outcome is not None or decision.expired):
            pressed = {"channel": channel, "ts": ts} if decision.pressed_only else None
            self.update_cards(decision, pressed)

    def update_cards(self, decision: CardDecision, pressed: dict[str, Any] | None = None) -> int:
        """Edit every copy of the decided card (and of requests expired on the way); after a
        press that lost, only the pressed message (``pressed``), if it still needs it."""
        if decision.pressed_only and pressed is None:
            return 0

        async def run() -> int:
            now = self._now()
            async with self.card_transports() as transports:
                n = 0
                request_id = decision.result.request_id
                if decision.outcome is not None:
                    n += await update_card_copies(
                        self.engine,
                        transports,
                        request_id,
                        decision.outcome,
                        level=decision.level,
                        only=pressed,
                        channel=CHANNEL,
                        now=now,
                    )
                for other, outcome in decision.expired.items():
                    if other != request_id or decision.outcome is None:
                        n += await update_card_copies(
                            self.engine, transports, other, outcome, channel=CHANNEL, now=now
                        )
                return n

        try:
            return asyncio.run(run())
        except Exception:  # the decision stands; a card left stale is logged, not raised
            log.exception("slack: updating approval cards failed")
            return 0

    def on_approve(self, body: dict[str, Any], action: dict[str, Any]) -> CardOutcome:
        click = Click.parse(body, action)
        outcome = self.decide_card(click.key, click.user, str(action.get("value", "")), "approve")
        self.answer_card(outcome, click.user, click.channel, click.ts)
        return outcome

    def open_reject_modal(self, body: dict[str, Any], action: dict[str, Any]) -> bool:
        """Reject asks for the reason in a modal (once per click). A card already decided
        says so instead."""
        click = Click.parse(body, action)
        value = str(action.get("value", ""))
        now = self._now()
        with write_session(self.engine) as session:
            if not _claim(session, click.key, now, detail={**click.message_ref(), "value": value}):
                log.info("slack: click already processed; no second modal")
                return False
        try:
            request_id, _level = parse_card_value(value)
        except ValueError:
            request_id = 0
        label = ""
        with read_session(self.engine) as session:
            person = person_by_slack_id(session, click.user)
            t = Translator(person.locale if person else None)
            request = session.get(ShipmentRequest, request_id) if request_id else None
            customer = session.get(Customer, request.customer_id) if request else None
            closed = None
            if request is None or customer is None:
                closed = t("approval_unknown_request")
            elif request.status != "pending":
                by = session.get(Person, request.decided_by_id) if request.decided_by_id else None
                if by is not None:
                    closed = t("approval_already_decided", name=by.name)
                elif request.status == "expired":
                    closed = t("approval_already_expired")
                else:
                    closed = t("approval_already_closed", status=request.status)
            else:
                label = t(
                    "approval_modal_reason",
                    order=request.order_ref,
                    customer=f"{customer.name} ({customer.code})",
                )
        if closed is not None:
            self._ephemeral(click.channel, click.user, closed)
            return False
        meta = json.dumps({"value": value, "click": click.key})
        try:
            self.client.views_open(trigger_id=click.trigger_id, view=reject_view(t, label, meta))
        except SlackApiError as exc:
            log.warning("slack: views.open failed: %s", exc.response.get("error"))
            return False
        return True

    def on_reject_submitted(self, body: dict[str, Any], reason: str) -> CardOutcome:
        view = body["view"]
        meta = json.loads(view.get("private_metadata") or "{}")
        user = str(body["user"]["id"])
        with read_session(self.engine) as session:
            row = session.execute(
                select(ChatInteraction).where(
                    ChatInteraction.platform == PLATFORM,
                    ChatInteraction.interaction_key == str(meta.get("click", "")),
                )
            ).scalar_one_or_none()
            detail = dict(row.detail or {}) if row is not None else {}
        key = f"view:{view['id']}"
        outcome = self.decide_card(key, user, str(meta.get("value", "")), "reject", reason)
        self.answer_card(
            outcome, user, str(detail.get("channel") or ""), str(detail.get("ts") or "")
        )
        return outcome

    # --- App Home and /credit (read-only) --------------------------------------------------

    def publish_home(self, slack_user: str) -> dict[str, Any]:
        """Build the user's App Home and publish it (``views.publish``); returns the view."""
        as_of = self._today(self._now())
        with read_session(self.engine) as session:
            person = person_by_slack_id(session, slack_user)
            if person is None:
                view = not_linked_view()
            else:
                actor = actor_of(person)
                region = session.get(Region, person.region_id) if person.region_id else None
                tiers = self.settings.tier_table
                view = home_view(
                    Translator(person.locale),
                    name=person.name,
                    scope=scope_text(person.role, region.code if region else None),
                    as_of=as_of,
                    tiers=tiers,
                    receivables=receivables_by_tier(session, actor, tiers, as_of),
                    promises=promises_due(session, actor, as_of),
                    approvals=pending_approvals(session, actor),
                    horizon_days=PROMISE_HORIZON_DAYS,
                )
        try:
            self.client.views_publish(user_id=slack_user, view=view)
        except SlackApiError as exc:
            log.warning("slack: views.publish failed: %s", exc.response.get("error"))
        return view

    def on_credit_command(self, command: dict[str, Any], respond: Callable[..., Any]) -> str:
        """``/credit CUSTOMER`` (code or exact name): the customer's credit file, ephemeral,
        to people who may see the customer; a refusal (audited) to anyone else. Returns what
        came of it: ``shown``, ``refused``, ``unknown_user``, ``unknown_customer``,
        ``ambiguous`` or ``usage``."""
        user = str(command.get("user_id") or "")
        query = str(command.get("text") or "").strip()
        words = query.split()
        if words and words[0].lower() == REQUEST_WORD:
            return self.on_request_command(command, respond, words[1:])
        now = self._now()
        as_of = self._today(now)
        blocks: list[dict[str, Any]] | None = None
        refused: tuple[str, str | None, str] | None = None  # actor, customer, reason
        locale = None
        with read_session(self.engine) as session:
            person = person_by_slack_id(session, user)
            if person is None:
                kind = "unknown_user"
                text = Translator(None)("slack_unknown_user")
                refused = (f"slack:{user}", None, "unknown Slack user")
            elif not query:
                kind, text = "usage", "Usage: /credit CUSTOMER (a customer code or exact name)"
                locale = person.locale
            else:
                locale = person.locale
                actor = actor_of(person)
                matches = find_customers(session, query)
                visible = [c for c in matches if may_view_customer(actor, c)]
                if not matches:
                    kind, text = "unknown_customer", f"No customer with code or name {query!r}."
                elif len(visible) == 1:
                    kind = "shown"
                    cf = credit_file(session, visible[0], as_of, self.settings.buckets)
                    blocks, text = credit_file_message(Translator(locale), cf, as_of)
                elif visible:
                    codes = ", ".join(c.code for c in visible)
                    kind = "ambiguous"
                    text = f"Several customers are named {query!r}: {codes}. Use the code."
                else:
                    kind = "refused"
                    code = matches[0].code if len(matches) == 1 else query
                    reason = f"{person.code} may not see customer {code}"
                    text = Translator(locale)("slack_refused", reason=reason)
                    refused = (person.code, code, reason)
        if refused is not None:
            actor_name, entity_id, reason = refused
            with write_session(self.engine) as session:
                session.add(
                    AuditLog(
                        actor=actor_name[:100],
                        action="slack.refused",
                        entity="customer",
                        entity_id=(entity_id or query)[:64] or None,
                        channel=CHANNEL,
                        at=now,
                        after={"reason": reason, "command": "/credit", "text": query[:200]},
                    )
                )
        try:
            if blocks is None:
                respond(text=escape_mrkdwn(text), response_type="ephemeral")
            else:
                respond(text=text, blocks=blocks, response_type="ephemeral")
        except Exception as exc:  # the response_url is Slack's; a failure there is logged
            log.warning("slack: /credit response failed: %s", type(exc).__name__)
        return kind

    def on_request_command(
        self, command: dict[str, Any], respond: Callable[..., Any], words: Sequence[str]
    ) -> str:
        """``/credit request CUSTOMER AMOUNT ORDER``: raise a shipment request as the person
        mapped from the Slack user, in the customer's currency (``raise_from_chat``); the
        answer is ephemeral. Returns ``RaiseOutcome.kind``."""
        user = str(command.get("user_id") or "")
        outcome = raise_from_chat(
            self.engine,
            self.settings,
            find_person=lambda session: person_by_slack_id(session, user),
            words=words,
            channel=CHANNEL,
            now=self._now(),
            refusal_action="slack.refused",
            unknown_actor=f"slack:{user}",
            command=f"/credit {REQUEST_WORD}",
        )
        t = Translator(outcome.locale)
        if outcome.kind == "unknown_person":
            text = t("slack_unknown_user")
        else:
            text = raise_text(t, outcome, f"/credit {REQUEST_WORD}")
        try:
            respond(text=escape_mrkdwn(text), response_type="ephemeral")
        except Exception as exc:  # the response_url is Slack's; a failure there is logged
            log.warning("slack: /credit request response failed: %s", type(exc).__name__)
        return outcome.kind


# --- modals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromiseForm:
    promised_date: date
    amount: Any  # Decimal | None
    note: str | None


def _input(block_id: str, label: str, element: dict[str, Any], optional: bool = False) -> dict:
    return {
        "type": "input",
        "block_id": block_id,
        "optional": optional,
        "label": {"type": "plain_text", "text": label[:2000]},
        "element": {**element, "action_id": block_id},
    }


def _modal(t: Translator, callback_id: str, title: str, meta: str, blocks: list) -> dict:
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": meta[:3000],
        "title": {"type": "plain_text", "text": title[:24]},
        "submit": {"type": "plain_text", "text": t("modal_submit")[:24]},
        "close": {"type": "plain_text", "text": t("modal_cancel")[:24]},
        "blocks": blocks,
    }


def promise_view(t: Translator, invoice: str, meta: str) -> dict[str, Any]:
    return _modal(
        t,
        PROMISE_VIEW,
        t("modal_promise_title"),
        meta,
        [
            {"type": "context", "elements": [{"type": "mrkdwn", "text": escape_mrkdwn(invoice)}]},
            _input("date", t("modal_date"), {"type": "datepicker"}),
            _input("amount", t("modal_amount"), {"type": "plain_text_input"}, optional=True),
            _input("note", t("modal_note"), {"type": "plain_text_input", "max_length": 1000}, True),
        ],
    )


def dispute_view(t: Translator, invoice: str, meta: str) -> dict[str, Any]:
    element = {"type": "plain_text_input", "multiline": True, "max_length": 1000}
    return _modal(
        t,
        DISPUTE_VIEW,
        t("modal_dispute_title"),
        meta,
        [_input("reason", t("modal_reason", number=invoice), element)],
    )


def reject_view(t: Translator, label: str, meta: str) -> dict[str, Any]:
    """The Reject modal: the reason (required, at most ``REASON_MAX`` characters)."""
    element = {"type": "plain_text_input", "multiline": True, "max_length": REASON_MAX}
    return _modal(
        t, REJECT_VIEW, t("approval_modal_title"), meta, [_input("reason", label, element)]
    )


def _default_card_transports(
    settings: Settings, engine: Engine, clock: Clock, client: WebClient
) -> AbstractAsyncContextManager[Mapping[str, Any]]:
    return card_transports(settings, engine, clock, slack_client=client)


def _value(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    return (view.get("state", {}).get("values", {}).get(block_id) or {}).get(block_id) or {}


def parse_promise_form(view: dict[str, Any], t: Translator) -> PromiseForm | dict[str, str]:
    """The form's values, or Slack's ``errors`` (block id → message) for what cannot be read."""
    errors: dict[str, str] = {}
    raw_date = _value(view, "date").get("selected_date")
    try:
        promised = date.fromisoformat(str(raw_date))
    except ValueError:
        errors["date"] = t("modal_bad_date")
    raw_amount = (_value(view, "amount").get("value") or "").strip()
    amount = None
    if raw_amount:
        try:
            amount = parse_amount(raw_amount)
        except MoneyError:
            errors["amount"] = t("modal_bad_amount")
    if errors:
        return errors
    note = (_value(view, "note").get("value") or "").strip() or None
    return PromiseForm(promised, amount, note)


# --- raising a shipment request from chat (also bot.telegram_app and ``creditbot request``) ---

REQUEST_WORD = "request"  # /credit request CUSTOMER AMOUNT ORDER


@dataclass(frozen=True)
class RaiseOutcome:
    """What came of raising a shipment request from chat or the CLI.

    ``kind``: ``raised`` (a new request: ``request`` is ``get_request``'s dict, ``asked`` the
    people whose approval cards are queued, ``cards`` how many were queued now), ``repeated``
    (this order was raised before with this amount: that request, nothing new), ``usage``,
    ``unknown_person``, ``bad_amount`` (``detail``: what was typed), ``unknown_customer`` /
    ``ambiguous`` (``detail``: the query; ``codes``), ``not_allowed`` (the person may not see
    the customer; ``detail`` says so, audited), ``invalid`` (``detail``: the field at fault and
    why) or ``duplicate_order`` (the order was raised before with another amount: ``detail``,
    and that request in ``request``). Only ``raised`` wrote a request."""

    kind: str
    detail: str = ""
    request: dict[str, Any] | None = None
    asked: tuple[tuple[str, str], ...] = ()  # (name, role), by name
    cards: int = 0
    codes: str = ""
    locale: str | None = None


def _asked(session: Session, request_id: int) -> tuple[tuple[str, str], ...]:
    """Who has an approval card of the request queued or sent: (name, role), by name."""
    rows = session.execute(
        select(Person.name, Person.role)
        .join(OutboxMessage, OutboxMessage.recipient_id == Person.id)
        .where(
            OutboxMessage.kind == CARD,
            OutboxMessage.idempotency_key.startswith(f"{CARD}:{request_id}:", autoescape=True),
        )
        .distinct()
        .order_by(Person.name)
    ).all()
    return tuple((str(name), str(role)) for name, role in rows)


def raise_from_chat(
    engine: Engine,
    settings: Settings,
    *,
    find_person: Callable[[Session], Person | None],
    words: Sequence[str],
    channel: str,
    now: datetime,
    refusal_action: str,
    unknown_actor: str | None = None,
    command: str = "",
    callback_url: str | None = None,
) -> RaiseOutcome:
    """``CUSTOMER AMOUNT ORDER`` (``words``; the customer a code or an exact name, which may
    have spaces: AMOUNT and ORDER are the last two words) raised by the person
    ``find_person`` finds, in the customer's currency, in ONE transaction: the person, the
    customer (whom they must be allowed to see, as with ``/credit``), ``raise_request`` and —
    for a new request waiting for approval — ``notify_approvers``, whose cards the dispatcher
    sends. Nothing is written when the input is wrong; a refusal is audited
    (``refusal_action``, entity ``customer``); an unknown person too when ``unknown_actor``
    names them."""
    text = " ".join(words)[:200]
    for attempt in range(2):
        try:
            with write_session(engine) as session:
                return _raise_in(
                    session,
                    settings,
                    find_person(session),
                    words,
                    channel=channel,
                    now=now,
                    refusal_action=refusal_action,
                    unknown_actor=unknown_actor,
                    command=command,
                    text=text,
                    callback_url=callback_url,
                )
        except IntegrityError:  # the same order raised at the same moment: read it back
            if attempt:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _raise_in(
    session: Session,
    settings: Settings,
    person: Person | None,
    words: Sequence[str],
    *,
    channel: str,
    now: datetime,
    refusal_action: str,
    unknown_actor: str | None,
    command: str,
    text: str,
    callback_url: str | None,
) -> RaiseOutcome:
    def refuse(actor: str, customer: str | None, reason: str) -> None:
        session.add(
            AuditLog(
                actor=actor[:100],
                action=refusal_action,
                entity="customer",
                entity_id=(customer or "")[:64] or None,
                channel=channel[:16],
                at=now,
                after={"reason": reason, "command": command, "text": text},
            )
        )

    if person is None or not person.active:
        if unknown_actor is not None:
            query = " ".join(words[:-2]) if len(words) >= 3 else None
            refuse(unknown_actor, query, "unknown person")
        return RaiseOutcome("unknown_person")
    locale = person.locale
    if len(words) < 3:
        return RaiseOutcome("usage", locale=locale)
    query, amount_text, order_ref = " ".join(words[:-2]), words[-2], words[-1]
    try:
        amount = parse_amount(amount_text)
    except MoneyError:
        return RaiseOutcome("bad_amount", amount_text, locale=locale)
    if amount <= 0:
        return RaiseOutcome("bad_amount", amount_text, locale=locale)
    matches = find_customers(session, query)
    visible = [c for c in matches if may_view_customer(actor_of(person), c)]
    if not matches:
        return RaiseOutcome("unknown_customer", query, locale=locale)
    if len(visible) > 1:
        codes = ", ".join(c.code for c in visible)
        return RaiseOutcome("ambiguous", query, codes=codes, locale=locale)
    if not visible:
        code = matches[0].code if len(matches) == 1 else query
        reason = f"{person.code} may not see customer {code}"
        refuse(person.code, code, reason)
        return RaiseOutcome("not_allowed", reason, locale=locale)
    customer = visible[0]
    try:
        with session.begin_nested():  # an error below leaves nothing behind
            result = raise_request(
                session,
                settings,
                customer_code=customer.code,
                order_ref=order_ref,
                amount=amount,
                currency=customer.currency,
                requested_by_code=person.code,
                callback_url=callback_url,
                channel=channel,
                now=now,
            )
    except ApprovalError as exc:
        detail = f"{exc.field}: {exc}" if exc.field else str(exc)
        return RaiseOutcome("invalid", detail, locale=locale)
    except UnknownCustomer as exc:  # pragma: no cover - found above, in this transaction
        return RaiseOutcome("unknown_customer", str(exc), locale=locale)
    except DuplicateOrder as exc:
        existing = get_request(session, exc.existing_id)
        return RaiseOutcome("duplicate_order", str(exc), request=existing, locale=locale)
    cards = 0
    if result.created and result.status == "pending":
        # the approvers' cards, in the same transaction as the request
        cards = notify_approvers(session, settings, result.request_id, now, channel=channel)
    return RaiseOutcome(
        "raised" if result.created else "repeated",
        request=get_request(session, result.request_id),
        asked=_asked(session, result.request_id),
        cards=cards,
        locale=locale,
    )


def _role_label(t: Translator, role: str) -> str:
    key = f"approval_role_{role}"
    return t(key) if key in t.strings else role


def _reason_labels(t: Translator, codes: Sequence[str]) -> str:
    labels = []
    for code in codes:
        key = f"approval_reason_{code}"
        labels.append(t(key) if key in t.strings else code)
    return t("approval_list_separator").join(labels) or "—"


def _request_status(t: Translator, r: dict[str, Any], asked: Sequence[tuple[str, str]]) -> str:
    """The request's state in a sentence, from ``get_request``'s dict."""
    summary = t(
        "request_summary",
        id=r["id"],
        order=r["order_ref"],
        customer=f"{r['customer_name']} ({r['customer_code']})",
        amount=t.money(r["amount"], r["currency"]),
    )
    reasons = _reason_labels(t, r.get("reasons") or [])
    status, by = r["status"], (r.get("decided_by") or {}).get("name")
    if status == "pending":
        if not asked:
            return t("request_pending_nobody", summary=summary, reasons=reasons)
        roles = []
        for _name, role in asked:
            if _role_label(t, role) not in roles:
                roles.append(_role_label(t, role))
        return t(
            "request_pending",
            summary=summary,
            reasons=reasons,
            role=t("request_or").join(roles),
            names=t("request_name_separator").join(name for name, _role in asked),
        )
    if status == "approved" and by is None:
        return t("request_approved", summary=summary, reasons=reasons)
    if status == "refused":
        return t("request_refused", summary=summary, reasons=reasons)
    if status == "approved":
        state = t("approval_status_approved", name=by)
    elif status == "rejected":
        why = next((a.get("reason") for a in r.get("approvals") or [] if a.get("reason")), None)
        state = (
            t("approval_status_rejected_reason", name=by or "—", reason=why)
            if why
            else t("approval_status_rejected", name=by or "—")
        )
    else:
        key = f"approval_status_{status}"
        state = t(key) if key in t.strings else str(status)
    return t("request_state", summary=summary, state=state)


def raise_text(t: Translator, outcome: RaiseOutcome, command: str) -> str:
    """The answer to a request raised from chat, in ``t``'s language (plain text; the caller
    escapes it for its platform). ``unknown_person`` is each platform's own answer."""
    kind = outcome.kind
    if kind in ("raised", "repeated") and outcome.request is not None:
        text = _request_status(t, outcome.request, outcome.asked)
        return text if kind == "raised" else t("request_again", text=text)
    if kind == "usage":
        return t("request_usage", command=command)
    if kind == "bad_amount":
        return t("request_bad_amount", amount=outcome.detail)
    if kind == "unknown_customer":
        return t("request_unknown_customer", query=outcome.detail)
    if kind == "ambiguous":
        return t("request_ambiguous", query=outcome.detail, codes=outcome.codes)
    if kind == "duplicate_order" and outcome.request is not None:
        r = outcome.request
        return t(
            "request_duplicate_order",
            order=r["order_ref"],
            id=r["id"],
            amount=t.money(r["amount"], r["currency"]),
        )
    return t("request_not_done", reason=outcome.detail)  # not_allowed, invalid


# --- the Bolt app -----------------------------------------------------------------------------


def _after_ack(
    what: str, work: Callable[..., Any], *args: Any, respond: Callable[..., Any] | None = None
) -> None:
    """A listener's work once Slack has its ack. An error is logged, not raised: Bolt would
    otherwise throw away the ack it already has and answer Slack 404. A button's presser is
    told, privately through the press's ``response_url`` (no database needed), that nothing
    was done and to press again."""
    try:
        work(*args)
    except Exception:
        log.exception("slack: %s failed after the ack", what)
        if respond is not None:
            try:
                respond(
                    text=Translator(None)("action_failed"),
                    response_type="ephemeral",
                    replace_original=False,
                )
            except Exception as exc:  # Slack away too: the log has it
                log.warning("slack: could not tell the presser (%s)", type(exc).__name__)


def build_slack_app(
    engine: Engine,
    settings: Settings,
    *,
    client: WebClient | None = None,
    clock: Clock | None = None,
    listener_executor: Executor | None = None,
    card_transports: CardTransports | None = None,
) -> App:
    """The Bolt app for Slack's interactivity requests (serve it with ``bot.http``).

    ``client`` defaults to a non-retrying WebClient from ``[slack]`` (bot_token,
    api_base_url); the app checks the token with ``auth.test`` when it is built. ``clock``
    defaults to the system clock; ``listener_executor`` runs the listeners after Bolt has
    answered Slack (default: Bolt's thread pool); ``card_transports`` opens the transports that
    edit every copy of a decided approval card (default: Slack through ``client``, Telegram
    from ``[telegram]`` when configured)."""
    if clock is None:
        from jobs.clock import SystemClock

        clock = SystemClock()
    if client is None:
        client = make_web_client(
            settings.slack.bot_token.get_secret_value(), settings.slack.api_base_url
        )
    app = App(
        # Bolt names a logger after the app and sets its level to the root's at each request:
        # "creditbot" itself would pin every creditbot.* logger to that level
        name="creditbot.slack",
        client=client,
        signing_secret=settings.slack.signing_secret.get_secret_value(),
        process_before_response=False,
        listener_executor=listener_executor,
    )
    work = SlackInteractions(engine, settings, client, clock, card_transports)

    @app.action(ACTIONS["ack"])
    def ack_pressed(ack: Callable, body: dict, action: dict, respond: Callable) -> None:
        ack()
        _after_ack("ack", work.on_ack, body, action, respond=respond)

    @app.action(ACTIONS["snooze"])
    def snooze_pressed(ack: Callable, body: dict, action: dict, respond: Callable) -> None:
        ack()
        _after_ack("snooze", work.on_snooze, body, action, respond=respond)

    @app.action(ACTIONS["promise"])
    def promise_pressed(ack: Callable, body: dict, action: dict, respond: Callable) -> None:
        ack()
        _after_ack("promise", work.open_modal, body, action, "promise", respond=respond)

    @app.action(ACTIONS["dispute"])
    def dispute_pressed(ack: Callable, body: dict, action: dict, respond: Callable) -> None:
        ack()
        _after_ack("dispute", work.open_modal, body, action, "dispute", respond=respond)

    @app.view(PROMISE_VIEW)
    def promise_submitted(ack: Callable, body: dict, view: dict) -> None:
        # Only what cannot be read goes back into the modal; everything else is answered
        # after the ack (the modal closes), by a message update or an ephemeral message.
        form = parse_promise_form(view, Translator(work._locale_of(body["user"]["id"])))
        if isinstance(form, dict):
            ack(response_action="errors", errors=form)
            return
        ack()
        _after_ack("promise form", work.on_promise_submitted, body, form)

    @app.view(DISPUTE_VIEW)
    def dispute_submitted(ack: Callable, body: dict, view: dict) -> None:
        reason = (_value(view, "reason").get("value") or "").strip()
        ack()
        _after_ack("dispute form", work.on_dispute_submitted, body, reason)

    @app.action(APPROVAL_BUTTONS["approve"])
    def approve_pressed(ack: Callable, body: dict, action: dict, respond: Callable) -> None:
        ack()
        _after_ack("approve", work.on_approve, body, action, respond=respond)

    @app.action(APPROVAL_BUTTONS["reject"])
    def reject_pressed(ack: Callable, body: dict, action: dict, respond: Callable) -> None:
        ack()
        _after_ack("reject", work.open_reject_modal, body, action, respond=respond)

    @app.view(REJECT_VIEW)
    def reject_submitted(ack: Callable, body: dict, view: dict) -> None:
        reason = (_value(view, "reason").get("value") or "").strip()
        if not reason or len(reason) > REASON_MAX:
            t = Translator(work._locale_of(body["user"]["id"]))
            ack(response_action="errors", errors={"reason": t("approval_reason_missing")})
            return
        ack()
        _after_ack("reject form", work.on_reject_submitted, body, reason)

    @app.event("app_home_opened")
    def home_opened(event: dict) -> None:
        if event.get("tab", "home") == "home":  # the Messages tab opens it too
            work.publish_home(str(event["user"]))

    @app.command("/credit")
    def credit_command(ack: Callable, command: dict, respond: Callable) -> None:
        ack()
        _after_ack("/credit", work.on_credit_command, command, respond)

    return app


__all__ = [
    "ACTIONS",
    "APPROVAL_BUTTONS",
    "REJECT_VIEW",
    "REQUEST_WORD",
    "SNOOZE_DAYS",
    "CardOutcome",
    "Click",
    "RaiseOutcome",
    "SlackInteractions",
    "build_slack_app",
    "raise_from_chat",
    "raise_text",
    "reject_view",
]
