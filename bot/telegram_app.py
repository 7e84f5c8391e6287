"""The Telegram app (python-telegram-bot 22): linking chats, reminder buttons, questions, commands.

``build_telegram_application`` returns a PTB ``Application``. The same handlers serve the
webhook (``bot.http``: ``POST /telegram/webhook`` → ``application.process_update``) and
polling (``creditbot run --telegram-polling``: ``start_polling``). Every update goes through:

1. group -2, ``drop_repeated``: the update is stored once in ``chat_interaction`` (platform
   ``telegram``, key ``update:{update_id}``); a repeated delivery stops here.
2. group -1, ``gate``: a message from a chat that is not linked — neither the chat nor the
   sender is a person's ``telegram_chat_id`` — gets ONE polite refusal and nothing else.
   ``/start`` and button presses pass (they check for themselves); other update kinds
   (edits, membership changes …) and a group's messages without text are dropped without
   an answer.
3. group 0, one of:
   * ``/start CODE`` (private chats only): ``redeem_link_code`` links the chat to the code's
     person, who is welcomed by name in their language. No code, an unknown, used or
     expired one: a polite refusal.
   * A button press: the callback data is an opaque token (``credit.store.telegram``).
     The press is resolved and acted on in ONE database transaction — the token must exist,
     belong to this chat and not have expired; the presser is the person whose
     ``telegram_chat_id`` is the pressing user's id — and the query is answered right after
     it (always, also when something failed), so the answer can say what happened. ``ack``
     and ``snooze`` mark the token used (a conditional UPDATE: of a double press, or two at
     once, one acts and the other is told "already done by NAME"), call ``acknowledge`` /
     ``snooze`` and edit the reminder: its text stays, a line "✓ … by NAME" is added and the
     invoice's buttons go (the other invoices' buttons stay). ``promise`` and ``dispute``
     ask for the date / the reason; the question waits in ``telegram_conversation``.
   * A press on a shipment approval card (``approve`` / ``reject``; the token's value is
     ``<request id>|<level>``): Approve calls ``decide_from_card`` in the press's transaction
     and answers "Approved" — or, in an alert, "Already decided by NAME" or why the presser
     may not decide it (audited); Reject asks for the reason in the chat (the question waits
     in ``telegram_conversation``, kind ``dispute``: the table's check constraint knows only
     promise and dispute) and the answer decides. A decision edits every copy of the card,
     on Telegram and on Slack (``bot.approval_cards.update_card_copies``).
   * A plain text message answers the chat's waiting question: a date that cannot be read,
     is in the past or too far ahead is asked for again; a good answer marks the token used,
     calls ``promise_to_pay`` / ``dispute``, edits the original reminder and confirms.
     ``/cancel`` drops the question.
   * ``/ar`` (my open receivables by tier), ``/customer CODE`` (a credit file, to people who
     may see the customer — as Slack's ``/credit``; a refusal, audited, to anyone else),
     ``/approvals`` (my pending shipment requests), ``/help``: Telegram HTML, escaped.
   * ``/request CUSTOMER AMOUNT ORDER`` raises a shipment request as the linked sender, in the
     customer's currency — as Slack's ``/credit request`` (``bot.slack_app.raise_from_chat``:
     one transaction; a request that waits for approval has its approvers' cards queued in
     it) — and answers what came of it: approved at once, refused, or waiting for whom.

The rules live in ``credit.store.actions`` (the service functions, called with channel
``telegram``): a ``NotAllowed`` there is answered politely and audited (``refusal_entry``) and
leaves the token unused, as does an ``ActionError``. Unknown, expired or foreign buttons and
unknown pressers are refused with an alert and audited as ``telegram.refused``. Database work
runs in worker threads (``asyncio.to_thread``) so the event loop keeps serving. A failing
handler is logged; the user gets a short apology, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlmodel import Session
from telegram import (
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    Update,
    User,
)
from telegram.constants import ChatType, ParseMode
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.approval_cards import (
    APPROVAL_ACTIONS,
    REJECT,
    card_transports,
    press_answer,
    update_card_copies,
)
from bot.i18n import Translator
from bot.slack_app import REQUEST_WORD, raise_from_chat, raise_text
from bot.slack_home import money_text, scope_text
from credit.aging import TierTable
from credit.settings import Settings
from credit.store.actions import (
    PROMISE_MAX_DAYS,
    ActionError,
    NotAllowed,
    acknowledge,
    dispute,
    promise_to_pay,
    refusal_entry,
    snooze,
)
from credit.store.approval_notices import CardDecision, decide_from_card, parse_card_value
from credit.store.approvals import REASON_MAX, ApprovalError, UnknownRequest
from credit.store.db import read_session, write_session
from credit.store.models import (
    AuditLog,
    CallbackToken,
    Customer,
    Person,
    Region,
    ShipmentRequest,
)
from credit.store.telegram import (
    CHANNEL,
    Clock,
    LinkError,
    TokenRefused,
    claim_update,
    end_conversation,
    pending_conversation,
    person_by_telegram_id,
    redeem_link_code,
    resolve_token,
    start_conversation,
    token_user,
    token_values,
    update_conversation_message,
    use_token,
)
from credit.store.views import (
    CreditFile,
    PendingApprovals,
    Receivables,
    actor_of,
    credit_file,
    find_customers,
    may_view_customer,
    pending_approvals,
    receivables_by_tier,
)

log = logging.getLogger(__name__)

SNOOZE_DAYS = 3  # as on Slack (bot.slack_app.SNOOZE_DAYS)
MAX_REASON = 1000  # characters of a dispute reason (the invoice column's size)
MAX_ANSWER = 200  # characters of a callback query answer (Telegram's limit)
BUTTON_ACTIONS = ("ack", "snooze", "promise", "dispute")
ALLOWED_UPDATES = ["message", "callback_query"]

T = TypeVar("T")


def _h(text: object) -> str:
    """Escape text for Telegram HTML (``&``, ``<``, ``>``)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _guess_locale(user: User | None) -> str | None:
    """Before a chat is linked there is no person: Telegram's language for the user, roughly."""
    code = (user.language_code or "") if user is not None else ""
    return "zh_CN" if code.lower().startswith("zh") else None


def _command_of(message: Message) -> str | None:
    """``start`` for "/start CODE" (or "/start@bot CODE"), else None."""
    entities = message.entities or ()
    if not message.text or not entities:
        return None
    first = entities[0]
    if first.type != MessageEntity.BOT_COMMAND or first.offset != 0:
        return None
    return message.text[1 : first.length].split("@", 1)[0].lower()


@dataclass(frozen=True)
class Who:
    """The person behind a chat or a press, read in a session and kept after it closes."""

    id: int
    code: str
    name: str
    locale: str

    @classmethod
    def of(cls, person: Person) -> Who:
        assert person.id is not None
        return cls(person.id, person.code, person.name, person.locale)


@dataclass(frozen=True)
class Outcome:
    """What came of a press or an answer.

    ``kind``: ``done`` (edit the reminder: ``html``/``keyboard``; ``line`` says what was done),
    ``asked`` (a question waits: ``prompt``), ``already`` (``name`` did it before),
    ``refused`` / ``failed`` (``reason``), ``bad_token`` (``reason``: unknown, expired,
    other_chat, unsupported), ``unknown_presser``, ``reprompt`` (``prompt``), ``expired``
    (the question), ``none`` (no question waits), ``not_linked`` (an unknown sender)."""

    kind: str
    locale: str | None = None
    reason: str = ""
    name: str = ""
    line: str = ""
    prompt: str = ""
    message_id: int | None = None
    html: str | None = None
    keyboard: list[Any] | None = None
    # a shipment approval card pressed (kind ``card``): what came of it
    card: CardDecision | None = None


class _UnknownPresser(Exception):
    def __init__(self, token: CallbackToken) -> None:
        super().__init__("unknown Telegram user")
        self.action, self.value = token.action, token.value  # outlive the session


def _invoice_of(value: str) -> str:
    """The invoice number of a button's value ``INVOICE|tier``."""
    return value.split("|", 1)[0]


def _remaining_keyboard(
    session: Session, keyboard: list[Any] | None, value: str
) -> list[Any] | None:
    """The keyboard without the buttons that act on ``value`` (the invoice just dealt with);
    None when nothing is left."""
    if not keyboard:
        return None
    datas = [str(b.get("callback_data") or "") for row in keyboard for b in row]
    values = token_values(session, [d for d in datas if d])
    rows = []
    for row in keyboard:
        kept = [b for b in row if values.get(str(b.get("callback_data") or "")) != value]
        if kept:
            rows.append(kept)
    return rows or None


def _with_line(html: str | None, line: str) -> str | None:
    return None if html is None else f"{html}\n\n{_h(line)}"


# --- rendering (pure: data in, Telegram HTML out) ----------------------------------------------


def _plural(t: Translator, key: str, count: int, **values: Any) -> str:
    return t(f"{key}_one" if count == 1 else f"{key}_other", count=count, **values)


def receivables_html(
    t: Translator, *, name: str, scope: str, as_of: date, tiers: TierTable, data: Receivables
) -> str:
    """``/ar``: open receivables by tier and the most overdue invoices."""
    lines = [
        f"<b>{_h(t('home_title', name=name))}</b>",
        _h(t("home_scope", scope=scope, date=t.date(as_of))),
        "",
        f"<b>{_h(t('home_receivables'))}</b>",
    ]
    for total in data.tiers:
        label = t.tier(total.tier, tiers.by_name(total.tier).action)
        totals = money_text(t, total.totals)
        lines.append(f"<b>{_h(label)}</b>")
        lines.append(_h(_plural(t, "home_tier_line", total.count, totals=totals)))
    lines += ["", f"<b>{_h(t('home_most_overdue'))}</b>"]
    for i in data.most_overdue:
        text = (
            f"• {i.number} · {i.customer_name} ({i.customer_code}) · "
            f"{t.money(i.open_amount, i.currency)} · {t.days_text(i.days)}"
        )
        lines.append(_h(text + (t("home_disputed") if i.disputed else "")))
    if not data.most_overdue:
        lines.append(_h(t("home_nothing_overdue")))
    return "\n".join(lines)


def credit_file_html(t: Translator, f: CreditFile, as_of: date) -> str:
    """``/customer``: a customer's credit file."""
    yes, no = t("credit_yes"), t("credit_no")
    hold = no
    if f.credit_hold:
        hold = t("credit_hold_reason", reason=f.credit_hold_reason) if f.credit_hold_reason else yes
    probation = no
    if f.on_probation and f.probation_until is not None:
        probation = t("credit_probation_until", date=t.date(f.probation_until))
    lines = [
        f"<b>{_h(t('credit_file_title', title=f'{f.name} ({f.code})'))}</b>",
        _h(t("telegram_credit_rating", rating=f.rating)),
        _h(t("telegram_credit_limit", limit=t.money(f.credit_limit, f.currency))),
        _h(t("telegram_credit_exposure", exposure=money_text(t, f.exposure))),
        _h(t("telegram_credit_open_invoices", count=f.open_invoices)),
        "",
        f"<b>{_h(t('telegram_credit_aging'))}</b>",
    ]
    for label, totals in f.aging:
        shown = t("credit_aging_current") if label == "current" else label
        lines.append(_h(f"• {shown}: {money_text(t, totals)}"))
    lines += [
        "",
        _h(t("telegram_credit_hold", value=hold)),
        _h(t("telegram_credit_blacklisted", value=yes if f.blacklisted else no)),
        _h(t("telegram_credit_probation", value=probation)),
        f"<i>{_h(t('credit_as_of', date=t.date(as_of)))}</i>",
    ]
    return "\n".join(lines)


def approvals_html(t: Translator, data: PendingApprovals) -> str:
    """``/approvals``: shipment requests still pending for the person's customers."""
    lines = [f"<b>{_h(t('home_approvals'))}</b>"]
    if not data.count:
        lines.append(_h(t("home_no_approvals")))
        return "\n".join(lines)
    lines.append(_h(_plural(t, "home_approvals_pending", data.count)))
    for r in data.listed:
        text = f"• {r.order_ref} · {r.customer_name} ({r.customer_code}) · "
        lines.append(_h(text + t.money(r.amount, r.currency)))
    if data.count > len(data.listed):
        lines.append(_h(t("home_more", count=data.count - len(data.listed))))
    return "\n".join(lines)


# --- the handlers --------------------------------------------------------------------------------


class TelegramInteractions:
    """The work behind the handlers: look up, call ONE service function, answer on Telegram."""

    def __init__(self, settings: Settings, engine: Engine, clock: Clock) -> None:
        self.settings, self.engine, self.clock = settings, engine, clock

    # --- time and the database ------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.clock.now()

    def _today(self, now: datetime) -> date:
        return now.astimezone(self.settings.zone).date()

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking database work in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _audit_refusal(
        self,
        actor: str,
        *,
        entity: str,
        entity_id: str | None,
        reason: str,
        now: datetime,
        **detail: Any,
    ) -> None:
        with write_session(self.engine) as session:
            session.add(
                AuditLog(
                    actor=actor[:100],
                    action="telegram.refused",
                    entity=entity,
                    entity_id=(entity_id or "")[:64] or None,
                    channel=CHANNEL,
                    at=now,
                    after={"reason": reason, **detail},
                )
            )

    # --- group -2: each update once --------------------------------------------------------------

    async def drop_repeated(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not isinstance(update, Update):
            return
        if not await self._db(self._claim, update.update_id):
            log.info("telegram: update %s already processed; ignored", update.update_id)
            raise ApplicationHandlerStop

    def _claim(self, update_id: int) -> bool:
        with write_session(self.engine) as session:
            return claim_update(session, update_id, self._now())

    # --- group -1: unlinked chats get one refusal ------------------------------------------------

    async def gate(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not isinstance(update, Update) or update.callback_query is not None:
            return  # presses check the token and the presser themselves
        message = update.message
        if message is None:
            raise ApplicationHandlerStop  # edits, channel posts, membership changes …
        if message.chat.type != ChatType.PRIVATE and not message.text:
            raise ApplicationHandlerStop  # a group's service messages, photos …: not for us
        if _command_of(message) == "start":
            return
        user = message.from_user
        if not await self._db(self._linked, message.chat.id, user.id if user else None):
            await self._reply(message, Translator(_guess_locale(user))("telegram_not_linked"))
            raise ApplicationHandlerStop

    def _linked(self, chat_id: int, user_id: int | None) -> bool:
        ids = [chat_id] if user_id is None else [chat_id, user_id]
        with read_session(self.engine) as session:
            found = session.execute(
                select(Person.id).where(Person.telegram_chat_id.in_(ids), Person.active)
            ).first()
            return found is not None

    def _who(self, user_id: int | None) -> Who | None:
        if user_id is None:
            return None
        with read_session(self.engine) as session:
            person = person_by_telegram_id(session, user_id)
            return Who.of(person) if person is not None and person.active else None

    async def _reply(self, message: Message, text: str, *, html: bool = False) -> None:
        await message.reply_text(text, parse_mode=ParseMode.HTML if html else None, do_quote=False)

    # --- /start CODE -----------------------------------------------------------------------------

    async def on_start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None:
            return
        guess = Translator(_guess_locale(user))
        if message.chat.type != ChatType.PRIVATE:
            await self._reply(message, guess("telegram_link_private_only"))
            return
        if not context.args:
            who = await self._db(self._who, user.id if user else None)
            if who is None:
                await self._reply(message, guess("telegram_link_missing"))
            else:
                t = Translator(who.locale)
                text = t("telegram_welcome_back", name=who.name) + "\n\n" + t("telegram_help")
                await self._reply(message, text)
            return
        try:
            who = await self._db(self._redeem, context.args[0], message.chat.id)
        except LinkError as exc:
            log.info("telegram: link code refused (%s)", exc.reason)
            await self._reply(message, guess(f"telegram_link_{exc.reason}"))
            return
        t = Translator(who.locale)
        await self._reply(
            message, t("telegram_welcome", name=who.name) + "\n\n" + t("telegram_help")
        )

    def _redeem(self, code: str, chat_id: int) -> Who:
        with write_session(self.engine) as session:
            return Who.of(redeem_link_code(session, code, chat_id, self._now()))

    # --- button presses --------------------------------------------------------------------------

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        answered = False

        async def answer(text: str | None = None, alert: bool = False) -> None:
            nonlocal answered
            if not answered:
                answered = True
                await query.answer(text[:MAX_ANSWER] if text else None, show_alert=alert)

        try:
            message = query.message
            if message is None or not query.data:
                await answer(Translator(_guess_locale(query.from_user))("telegram_button_unknown"))
                return
            html = message.text_html if isinstance(message, Message) and message.text else None
            markup = message.reply_markup if isinstance(message, Message) else None
            keyboard = markup.to_dict()["inline_keyboard"] if markup else None
            outcome = await self._db(
                self._press,
                query.data,
                message.chat.id,
                query.from_user.id,
                message.message_id,
                html,
                keyboard,
            )
            t = Translator(outcome.locale or _guess_locale(query.from_user))
            if outcome.kind == "done":
                await answer(t("telegram_answer_done"))
                await self._show_done(context, message.chat.id, outcome)
            elif outcome.kind == "asked":
                await answer()
                await context.bot.send_message(message.chat.id, outcome.prompt)
            elif outcome.kind == "already":
                await answer(t("telegram_already_done", name=outcome.name), alert=True)
            elif outcome.kind == "bad_token":
                await answer(t(f"telegram_button_{outcome.reason}"), alert=True)
            elif outcome.kind == "unknown_presser":
                await answer(t("telegram_unknown_presser"), alert=True)
            elif outcome.kind == "card" and outcome.card is not None:
                result = outcome.card.result
                await answer(press_answer(t, result), alert=not result.won)
                pressed = {"chat_id": message.chat.id, "message_id": message.message_id}
                await self._update_cards(context, outcome.card, pressed)
            elif outcome.kind == "card_closed":
                await answer(outcome.reason, alert=True)
            else:  # refused, failed
                await answer(t(f"telegram_{outcome.kind}", reason=outcome.reason), alert=True)
        finally:
            if not answered:  # an error on the way: the spinner must stop all the same
                try:
                    await answer(Translator(_guess_locale(query.from_user))("telegram_error"))
                except TelegramError as exc:
                    log.warning("telegram: answerCallbackQuery failed: %s", exc)

    def _press(
        self,
        data: str,
        chat_id: int,
        user_id: int,
        message_id: int,
        html: str | None,
        keyboard: list[Any] | None,
    ) -> Outcome:
        """One press, one transaction: resolve, check, use the token and act — or refuse."""
        now = self._now()
        today = self._today(now)
        locale: str | None = None
        try:
            with write_session(self.engine) as session:
                token = resolve_token(session, data, chat_id, now)
                person = person_by_telegram_id(session, user_id)
                if person is None:
                    raise _UnknownPresser(token)
                who = Who.of(person)
                locale, t = who.locale, Translator(who.locale)
                if token.action in APPROVAL_ACTIONS:
                    return self._card_press(session, token, who, chat_id, message_id, now)
                if token.action not in BUTTON_ACTIONS:
                    raise TokenRefused("unsupported", token)
                used = token_user(session, token.token)
                if used is not None:
                    return Outcome("already", locale, name=used.by)
                invoice = _invoice_of(token.value)
                if token.action in ("promise", "dispute"):
                    start_conversation(
                        session,
                        chat_id=chat_id,
                        token=token.token,
                        kind=token.action,
                        person_id=who.id,
                        message_id=message_id,
                        message_html=html,
                        keyboard=keyboard,
                        now=now,
                    )
                    prompt = t(f"telegram_ask_{token.action}", number=invoice)
                    return Outcome("asked", locale, prompt=prompt)
                if token.action == "ack":
                    via = "ack"
                    line = t("telegram_done_ack", number=invoice, name=who.name)
                else:
                    until = today + timedelta(days=SNOOZE_DAYS)
                    via = f"snooze:{until.isoformat()}"
                    line = t(
                        "telegram_done_snooze", number=invoice, until=t.date(until), name=who.name
                    )
                if not use_token(session, token.token, who.id, via, now):
                    used = token_user(session, token.token)  # a press a moment earlier won
                    return Outcome("already", locale, name=used.by if used else "?")
                if token.action == "ack":
                    acknowledge(
                        session,
                        invoice,
                        who.code,
                        tiers=self.settings.tier_table,
                        as_of=today,
                        now=now,
                        channel=CHANNEL,
                    )
                else:
                    snooze(
                        session,
                        invoice,
                        who.code,
                        until=until,
                        today=today,
                        now=now,
                        channel=CHANNEL,
                    )
                return self._done(session, token, chat_id, message_id, html, keyboard, line, locale)
        except NotAllowed as exc:
            with write_session(self.engine) as session:
                session.add(refusal_entry(exc))
            return Outcome("refused", locale, reason=str(exc))
        except ActionError as exc:
            return Outcome("failed", locale, reason=str(exc))
        except TokenRefused as exc:
            self._refuse_token(exc, user_id, now)
            return Outcome("bad_token", locale, reason=exc.reason)
        except _UnknownPresser as exc:
            self._audit_refusal(
                f"telegram:{user_id}",
                entity="invoice",
                entity_id=_invoice_of(exc.value),
                reason="unknown Telegram user",
                now=now,
                action=exc.action,
            )
            return Outcome("unknown_presser")

    def _done(
        self,
        session: Session,
        token: CallbackToken,
        chat_id: int,
        message_id: int,
        html: str | None,
        keyboard: list[Any] | None,
        line: str,
        locale: str | None,
    ) -> Outcome:
        """The reminder as it is to look now; a question waiting about it is told too."""
        new_html = _with_line(html, line)
        remaining = _remaining_keyboard(session, keyboard, token.value)
        if new_html is not None:
            update_conversation_message(session, chat_id, message_id, new_html, remaining)
        return Outcome(
            "done", locale, line=line, message_id=message_id, html=new_html, keyboard=remaining
        )

    def _refuse_token(self, exc: TokenRefused, user_id: int, now: datetime) -> None:
        with read_session(self.engine) as session:
            person = person_by_telegram_id(session, user_id)
            actor = person.code if person is not None else f"telegram:{user_id}"
        self._audit_refusal(
            actor,
            entity="invoice" if exc.value is not None else "callback",
            entity_id=_invoice_of(exc.value) if exc.value is not None else None,
            reason=f"button {exc.reason}",
            now=now,
            action=exc.action,
        )

    async def _show_done(
        self, context: ContextTypes.DEFAULT_TYPE, chat_id: int, outcome: Outcome
    ) -> None:
        """Edit the reminder (its text plus the "✓ …" line; the acted-on buttons gone), or —
        when it cannot be edited — say the line in a message of its own."""
        markup = (
            InlineKeyboardMarkup.de_json({"inline_keyboard": outcome.keyboard}, context.bot)
            if outcome.keyboard
            else None
        )
        if outcome.message_id is None:
            return
        if outcome.html is not None:
            try:
                await context.bot.edit_message_text(
                    outcome.html,
                    chat_id=chat_id,
                    message_id=outcome.message_id,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                )
                return
            except TelegramError as exc:  # e.g. the text would be too long now
                log.warning("telegram: editing the reminder failed: %s", exc)
        try:  # at least the buttons acted on must go
            await context.bot.edit_message_reply_markup(
                chat_id=chat_id, message_id=outcome.message_id, reply_markup=markup
            )
        except TelegramError as exc:
            log.warning("telegram: editing the reminder's buttons failed: %s", exc)
        await context.bot.send_message(chat_id, outcome.line)

    # --- shipment approval cards -----------------------------------------------------------------

    def _card_subject(
        self, session: Session, request_id: int
    ) -> tuple[ShipmentRequest, str] | None:
        request = session.get(ShipmentRequest, request_id)
        customer = session.get(Customer, request.customer_id) if request is not None else None
        if request is None or customer is None:
            return None
        return request, f"{customer.name} ({customer.code})"

    def _card_press(
        self,
        session: Session,
        token: CallbackToken,
        who: Who,
        chat_id: int,
        message_id: int,
        now: datetime,
    ) -> Outcome:
        """Approve decides at once; Reject asks for the reason first (the question waits in
        ``telegram_conversation``, as a dispute's reason does)."""
        t = Translator(who.locale)
        try:
            request_id, level = parse_card_value(token.value)
        except ValueError:
            raise TokenRefused("unsupported", token) from None
        subject = self._card_subject(session, request_id)
        if subject is None:
            return Outcome("card_closed", who.locale, reason=t("approval_unknown_request"))
        request, customer = subject
        if token.action == REJECT:
            if request.status != "pending":
                return Outcome("card_closed", who.locale, reason=self._closed(session, t, request))
            start_conversation(
                session,
                chat_id=chat_id,
                token=token.token,
                kind="dispute",  # the kind of question that waits for a reason in words
                person_id=who.id,
                message_id=message_id,
                message_html=None,
                keyboard=None,
                now=now,
            )
            prompt = t("approval_ask_reason", order=request.order_ref, customer=customer)
            return Outcome("asked", who.locale, prompt=prompt)
        decision = decide_from_card(
            session,
            self.settings,
            request_id=request_id,
            card_level=level,
            approver_person_id=who.id,
            decision="approve",
            channel=CHANNEL,
            now=now,
        )
        return Outcome("card", who.locale, card=decision)

    def _card_reason(
        self,
        session: Session,
        token: CallbackToken,
        who: Who,
        chat_id: int,
        text: str,
        now: datetime,
    ) -> Outcome:
        """The answer to "why reject?": the rejection, decided like a press."""
        t = Translator(who.locale)
        try:
            request_id, level = parse_card_value(token.value)
        except ValueError:
            end_conversation(session, chat_id)
            raise TokenRefused("unsupported", token) from None
        subject = self._card_subject(session, request_id)
        if subject is None:
            end_conversation(session, chat_id)
            return Outcome("card_closed", who.locale, reason=t("approval_unknown_request"))
        request, customer = subject
        reason = text.strip()
        if not reason or len(reason) > REASON_MAX:
            prompt = t("approval_reason_missing") + "\n"
            prompt += t("approval_ask_reason", order=request.order_ref, customer=customer)
            return Outcome("reprompt", who.locale, prompt=prompt)
        end_conversation(session, chat_id)
        try:
            decision = decide_from_card(
                session,
                self.settings,
                request_id=request_id,
                card_level=level,
                approver_person_id=who.id,
                decision="reject",
                reason=reason,
                channel=CHANNEL,
                now=now,
            )
        except (UnknownRequest, ApprovalError) as exc:
            return Outcome("card_closed", who.locale, reason=t("approval_refused", reason=exc))
        return Outcome("card", who.locale, card=decision)

    @staticmethod
    def _closed(session: Session, t: Translator, request: ShipmentRequest) -> str:
        by = session.get(Person, request.decided_by_id) if request.decided_by_id else None
        if by is not None:
            return t("approval_already_decided", name=by.name)
        if request.status == "expired":
            return t("approval_already_expired")
        return t("approval_already_closed", status=request.status)

    async def _update_cards(
        self,
        context: ContextTypes.DEFAULT_TYPE,
        decision: CardDecision,
        pressed: dict[str, Any] | None = None,
    ) -> int:
        """Edit every copy of the card (on Telegram with this bot, on Slack when configured)
        to show what was decided; requests expired on the way too. After a press that lost,
        only the pressed message (``pressed``), if it still needs it."""
        if decision.outcome is None and not decision.expired:
            return 0
        if decision.pressed_only and pressed is None:
            return 0
        now = self._now()
        request_id = decision.result.request_id
        n = 0
        try:
            async with card_transports(
                self.settings, self.engine, self.clock, telegram_bot=context.bot
            ) as transports:
                if decision.outcome is not None:
                    n += await update_card_copies(
                        self.engine,
                        transports,
                        request_id,
                        decision.outcome,
                        level=decision.level,
                        only=pressed if decision.pressed_only else None,
                        channel=CHANNEL,
                        now=now,
                    )
                for other, outcome in decision.expired.items():
                    if other != request_id or decision.outcome is None:
                        n += await update_card_copies(
                            self.engine, transports, other, outcome, channel=CHANNEL, now=now
                        )
        except Exception:  # the decision stands; a card left stale is logged
            log.exception("telegram: updating approval cards failed")
        return n

    # --- answers to a waiting question -----------------------------------------------------------

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or message.text is None:
            return
        outcome = await self._db(self._answer, message.chat.id, user.id, message.text)
        t = Translator(outcome.locale or _guess_locale(user))
        if outcome.kind == "not_linked":
            await self._reply(message, t("telegram_not_linked"))
        elif outcome.kind == "none":
            if message.chat.type == ChatType.PRIVATE:  # in a group, talk is not for us
                await self._reply(message, t("telegram_help"))
        elif outcome.kind == "expired":
            await self._reply(message, t("telegram_question_expired"))
        elif outcome.kind == "reprompt":
            await self._reply(message, outcome.prompt)
        elif outcome.kind == "done":
            await self._show_done(context, message.chat.id, outcome)
            await self._reply(message, outcome.line)
        elif outcome.kind == "already":
            await self._reply(message, t("telegram_already_done", name=outcome.name))
        elif outcome.kind == "card" and outcome.card is not None:
            await self._reply(message, press_answer(t, outcome.card.result))
            await self._update_cards(context, outcome.card)
        elif outcome.kind == "card_closed":
            await self._reply(message, outcome.reason)
        elif outcome.kind == "bad_token":
            await self._reply(message, t(f"telegram_button_{outcome.reason}"))
        else:  # refused, failed
            await self._reply(message, t(f"telegram_{outcome.kind}", reason=outcome.reason))

    def _answer(self, chat_id: int, user_id: int, text: str) -> Outcome:
        now = self._now()
        today = self._today(now)
        locale: str | None = None
        token_str: str | None = None
        try:
            with write_session(self.engine) as session:
                person = person_by_telegram_id(session, user_id)
                if person is None:
                    return Outcome("not_linked")
                who = Who.of(person)
                locale, t = who.locale, Translator(who.locale)
                question = pending_conversation(session, chat_id)
                if question is None or question.person_id != who.id:
                    return Outcome("none", locale)
                token_str = question.token
                if question.expires_at <= now:
                    end_conversation(session, chat_id)
                    return Outcome("expired", locale)
                token = resolve_token(session, question.token, chat_id, now)
                if token.action == REJECT:
                    return self._card_reason(session, token, who, chat_id, text, now)
                invoice = _invoice_of(token.value)
                if question.kind == "promise":
                    promised, problem = _read_promise_date(t, text, today)
                    if promised is None:
                        prompt = problem + "\n" + t("telegram_ask_promise", number=invoice)
                        return Outcome("reprompt", locale, prompt=prompt)
                    via = f"promise:{promised.isoformat()}"
                    line = t(
                        "telegram_done_promise",
                        number=invoice,
                        date=t.date(promised),
                        name=who.name,
                    )
                else:
                    reason = text.strip()
                    if not reason or len(reason) > MAX_REASON:
                        prompt = t("telegram_reason_missing") + "\n"
                        prompt += t("telegram_ask_dispute", number=invoice)
                        return Outcome("reprompt", locale, prompt=prompt)
                    via = "dispute"
                    line = t("telegram_done_dispute", number=invoice, name=who.name, reason=reason)
                end_conversation(session, chat_id)
                if not use_token(session, token.token, who.id, via, now):
                    used = token_user(session, token.token)
                    return Outcome("already", locale, name=used.by if used else "?")
                if question.kind == "promise":
                    promise_to_pay(
                        session,
                        invoice,
                        who.code,
                        promised_date=promised,
                        amount=None,
                        today=today,
                        now=now,
                        channel=CHANNEL,
                    )
                else:
                    dispute(session, invoice, who.code, reason=reason, now=now, channel=CHANNEL)
                return self._done(
                    session,
                    token,
                    chat_id,
                    question.message_id,
                    question.message_html,
                    question.keyboard,
                    line,
                    locale,
                )
        except NotAllowed as exc:
            with write_session(self.engine) as session:
                session.add(refusal_entry(exc))
                end_conversation(session, chat_id, token_str)
            return Outcome("refused", locale, reason=str(exc))
        except ActionError as exc:
            with write_session(self.engine) as session:
                end_conversation(session, chat_id, token_str)
            return Outcome("failed", locale, reason=str(exc))
        except TokenRefused as exc:
            with write_session(self.engine) as session:
                end_conversation(session, chat_id, token_str)
            self._refuse_token(exc, user_id, now)
            return Outcome("bad_token", locale, reason=exc.reason)

    async def on_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        who, ended = await self._db(self._cancel, message.chat.id, user.id)
        t = Translator(who.locale if who else None)
        await self._reply(
            message, t("telegram_cancelled" if ended else "telegram_nothing_to_cancel")
        )

    def _cancel(self, chat_id: int, user_id: int) -> tuple[Who | None, bool]:
        with write_session(self.engine) as session:
            person = person_by_telegram_id(session, user_id)
            if person is None:
                return None, False
            question = pending_conversation(session, chat_id)
            if question is None or question.person_id != person.id:
                return Who.of(person), False
            return Who.of(person), end_conversation(session, chat_id)

    # --- commands --------------------------------------------------------------------------------

    async def _command(
        self, update: Update, work: Callable[[Session, Person, Translator], str | None]
    ) -> None:
        """Run a read-only command for the linked sender; its HTML is the answer."""
        message, user = update.effective_message, update.effective_user
        if message is None:
            return

        def run() -> tuple[str | None, bool]:
            with read_session(self.engine) as session:
                person = person_by_telegram_id(session, user.id) if user else None
                if person is None or not person.active:
                    return None, False
                return work(session, person, Translator(person.locale)), True

        html, linked = await self._db(run)
        if not linked:
            await self._reply(message, Translator(_guess_locale(user))("telegram_not_linked"))
        elif html:
            await self._reply(message, html, html=True)

    async def on_ar(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        as_of = self._today(self._now())
        tiers = self.settings.tier_table

        def work(session: Session, person: Person, t: Translator) -> str:
            region = session.get(Region, person.region_id) if person.region_id else None
            return receivables_html(
                t,
                name=person.name,
                scope=scope_text(person.role, region.code if region else None, t),
                as_of=as_of,
                tiers=tiers,
                data=receivables_by_tier(session, actor_of(person), tiers, as_of),
            )

        await self._command(update, work)

    async def on_approvals(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        def work(session: Session, person: Person, t: Translator) -> str:
            return approvals_html(t, pending_approvals(session, actor_of(person)))

        await self._command(update, work)

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._command(update, lambda _s, _p, t: _h(t("telegram_help")))

    async def on_customer(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/customer CODE`` (or an exact name): as Slack's ``/credit``."""
        query = " ".join(context.args or []).strip()
        now = self._now()
        as_of = self._today(now)
        refused: list[tuple[str, str, str]] = []  # actor, customer, reason

        def work(session: Session, person: Person, t: Translator) -> str:
            if not query:
                return _h(t("telegram_customer_usage"))
            actor = actor_of(person)
            matches = find_customers(session, query)
            visible = [c for c in matches if may_view_customer(actor, c)]
            if not matches:
                return _h(t("telegram_customer_unknown", query=query))
            if len(visible) == 1:
                cf = credit_file(session, visible[0], as_of, self.settings.buckets)
                return credit_file_html(t, cf, as_of)
            if visible:
                codes = ", ".join(c.code for c in visible)
                return _h(t("telegram_customer_ambiguous", query=query, codes=codes))
            code = matches[0].code if len(matches) == 1 else query
            reason = f"{person.code} may not see customer {code}"
            refused.append((person.code, code, reason))
            return _h(t("telegram_refused", reason=reason))

        await self._command(update, work)
        for actor, code, reason in refused:
            await self._db(
                self._audit_refusal,
                actor,
                entity="customer",
                entity_id=code,
                reason=reason,
                now=now,
                command="/customer",
                text=query[:200],
            )

    async def on_request(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/request CUSTOMER AMOUNT ORDER``: raise a shipment request as the linked sender
        (``raise_from_chat``, channel ``telegram``) and say what came of it."""
        message, user = update.effective_message, update.effective_user
        if message is None:
            return
        command = f"/{REQUEST_WORD}"

        def find(session: Session) -> Person | None:
            return person_by_telegram_id(session, user.id) if user else None

        outcome = await self._db(
            raise_from_chat,
            self.engine,
            self.settings,
            find_person=find,
            words=list(context.args or []),
            channel=CHANNEL,
            now=self._now(),
            refusal_action="telegram.refused",
            command=command,
        )
        if outcome.kind == "unknown_person":
            await self._reply(message, Translator(_guess_locale(user))("telegram_not_linked"))
            return
        await self._reply(message, raise_text(Translator(outcome.locale), outcome, command))

    # --- errors ----------------------------------------------------------------------------------

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log the failure; tell the user briefly (a button press was answered already)."""
        error = context.error
        log.error(
            "telegram: handling update failed: %s",
            type(error).__name__,
            exc_info=(type(error), error, error.__traceback__) if error else None,
        )
        if isinstance(update, Update) and update.message is not None:
            locale = _guess_locale(update.message.from_user)
            try:
                await self._reply(update.message, Translator(locale)("telegram_error"))
            except TelegramError as exc:
                log.warning("telegram: could not apologise: %s", exc)


def _read_promise_date(t: Translator, text: str, today: date) -> tuple[date | None, str]:
    """The promised date written as YYYY-MM-DD (or with / or .), or None and what is wrong."""
    raw = text.strip().replace("/", "-").replace(".", "-")
    try:
        promised = date.fromisoformat(raw)
    except ValueError:
        return None, t("telegram_date_unreadable")
    if promised < today:
        return None, t("telegram_date_past", date=t.date(promised))
    if promised > today + timedelta(days=PROMISE_MAX_DAYS):
        return None, t("telegram_date_too_far", date=t.date(promised), days=PROMISE_MAX_DAYS)
    return promised, ""


# --- the Application -----------------------------------------------------------------------------


def _file_url(base_url: str) -> str:
    """``…/bot`` → ``…/file/bot`` (where the Bot API serves files)."""
    root = base_url.rstrip("/").removesuffix("/bot")
    return f"{root}/file/bot"


def build_telegram_application(
    settings: Settings, engine: Engine, clock: Clock, *, polling: bool = False
) -> Application:
    """The PTB Application for CreditBot's Telegram bot (``[telegram]`` bot_token and
    api_base_url). Without ``polling`` it has no Updater: updates come from the webhook
    (``bot.http``), which initializes the application at start-up. With ``polling``, start it
    with ``start_polling`` (``creditbot run --telegram-polling``)."""
    token = settings.telegram.bot_token.get_secret_value()
    if not token:
        raise ValueError("telegram.bot_token is not set (CREDITBOT_TELEGRAM__BOT_TOKEN)")
    base_url = settings.telegram.api_base_url
    builder = (
        Application.builder().token(token).base_url(base_url).base_file_url(_file_url(base_url))
    )
    if not polling:
        builder = builder.updater(None)
    application = builder.build()
    work = TelegramInteractions(settings, engine, clock)
    application.add_handler(TypeHandler(Update, work.drop_repeated), group=-2)
    application.add_handler(TypeHandler(Update, work.gate), group=-1)
    application.add_handlers(
        [
            CommandHandler("start", work.on_start),
            CallbackQueryHandler(work.on_button),
            CommandHandler("cancel", work.on_cancel),
            CommandHandler("ar", work.on_ar),
            CommandHandler("customer", work.on_customer),
            CommandHandler("approvals", work.on_approvals),
            CommandHandler(REQUEST_WORD, work.on_request),
            CommandHandler("help", work.on_help),
            MessageHandler(filters.TEXT & ~filters.COMMAND, work.on_text),
            # anything else in a private chat: what the bot can do
            MessageHandler(filters.ChatType.PRIVATE, work.on_help),
        ],
        group=0,
    )
    application.add_error_handler(work.on_error)
    return application


async def start_polling(application: Application) -> None:
    """Initialize and start the application and its Updater's long polling (which deletes
    any webhook first: one bot token is either polled or called back, not both)."""
    if application.updater is None:
        raise ValueError("build the application with polling=True")
    await application.initialize()
    await application.start()
    await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)


async def stop_polling(application: Application) -> None:
    """Stop what ``start_polling`` started (safe to call after a partial start)."""
    if application.updater is not None and application.updater.running:
        await application.updater.stop()
    if application.running:
        await application.stop()
    await application.shutdown()


__all__ = [
    "ALLOWED_UPDATES",
    "PROMISE_MAX_DAYS",
    "SNOOZE_DAYS",
    "TelegramInteractions",
    "approvals_html",
    "build_telegram_application",
    "credit_file_html",
    "receivables_html",
    "start_polling",
    "stop_polling",
]
