"""Shipment approval cards in chat: the messages, and updating every copy once decided.

* Composers (registered in ``bot.compose``) for the outbox kinds ``approval_card`` (the card
  an approver gets: customer, rating, limit, exposure, excess, overdue, aging by bucket, the
  customer's recent decisions, and *Approve* / *Reject*), ``approval_reminder`` (the same
  card, titled as a reminder) and ``approval_decided`` (the requester is told the decision).
  A card payload with an ``outcome`` (``credit.store.approval_notices``) shows the outcome
  in place of the buttons: "Approved by NAME", "Rejected by NAME: reason", expired, the
  limit changed, or a chain level signed.
* ``update_card_copies`` edits every sent copy of a request's card — on whatever channel it
  went out — through that channel's transport (``update(ref, message)``), each copy in its
  recipient's language, and audits how many were updated.
* ``card_transports`` opens the transports a chat app needs for that: Slack with the app's
  client, Telegram with the application's bot or a short-lived one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from babel.dates import format_date, format_time
from sqlalchemy import Engine

from bot import metrics
from bot.i18n import Translator
from bot.messages import Button, Fact, Message, Section
from credit.store.db import read_session, write_session

log = logging.getLogger(__name__)

APPROVAL_CARD = "approval_card"
APPROVAL_REMINDER = "approval_reminder"
APPROVAL_DECIDED = "approval_decided"
APPROVE, REJECT = "approve", "reject"
APPROVAL_ACTIONS = (APPROVE, REJECT)
RECENT_SHOWN = 5


class CardUpdater(Protocol):
    async def update(self, ref: dict[str, Any], message: Message) -> dict[str, Any]: ...


# --- formatting helpers --------------------------------------------------------------------------


def _customer(p: dict[str, Any]) -> str:
    c = p.get("customer") or {}
    return f"{c.get('name', '')} ({c.get('code', '')})"


def _local_time(t: Translator, local: str | None, zone: str | None) -> str:
    """``YYYY-MM-DDTHH:MM`` (the company's wall-clock time) as the recipient reads it."""
    if not local:
        return "—"
    moment = datetime.fromisoformat(local)
    day = format_date(moment.date(), format="medium", locale=t.locale)
    text = f"{day} {format_time(moment.time(), format='short', locale=t.locale)}"
    return f"{text} ({zone})" if zone else text


def _role(t: Translator, role: str | None) -> str:
    if not role:
        return "—"
    key = f"approval_role_{role}"
    return t(key) if key in t.strings else role


def _reasons(t: Translator, codes: list[str]) -> str:
    labels = []
    for code in codes:
        key = f"approval_reason_{code}"
        labels.append(t(key) if key in t.strings else code)
    return t("approval_list_separator").join(labels) or "—"


def _status_text(t: Translator, r: dict[str, Any]) -> str:
    status, by, reason = r.get("status"), r.get("by"), r.get("reason")
    if status == "approved":
        return t("approval_status_approved", name=by) if by else t("approval_status_policy")
    if status == "rejected":
        if by and reason:
            return t("approval_status_rejected_reason", name=by, reason=reason)
        return t("approval_status_rejected", name=by or "—")
    key = f"approval_status_{status}"
    return t(key) if key in t.strings else str(status)


def outcome_text(t: Translator, p: dict[str, Any], outcome: dict[str, Any]) -> str:
    """What a decided card says instead of its buttons."""
    status = outcome.get("status")
    by = outcome.get("by") or "—"
    if status == "approved":
        return t("approval_outcome_approved", name=by)
    if status == "rejected":
        return t("approval_outcome_rejected", name=by, reason=outcome.get("reason") or "—")
    if status == "level_approved":
        return t(
            "approval_outcome_level",
            name=by,
            role=_role(t, outcome.get("role")),
            next_role=_role(t, outcome.get("next_role")),
        )
    if status == "expired":
        when = _local_time(t, outcome.get("at_local"), p.get("time_zone"))
        return t("approval_outcome_expired", when=when)
    if status == "limit_changed":
        currency = outcome.get("currency") or p.get("currency") or "CNY"
        return t(
            "approval_outcome_limit_changed",
            customer=_customer(p),
            was=t.money(outcome.get("was") or "0", currency),
            now=t.money(outcome.get("now") or "0", currency),
        )
    return t("approval_outcome_closed", status=str(status))


# --- the card ------------------------------------------------------------------------------------


def card_message(p: dict[str, Any], t: Translator) -> Message:
    """An approval card (or reminder) from its outbox payload, in ``t``'s language."""
    customer = _customer(p)
    currency = p["currency"]
    outcome = p.get("outcome")
    if outcome:
        title = t("approval_card_title_decided", customer=customer)
    elif p.get("kind") == APPROVAL_REMINDER:
        title = t("approval_reminder_title", customer=customer)
    elif p.get("escalated"):
        title = t("approval_card_title_escalated", customer=customer)
    else:
        title = t("approval_card_title", customer=customer)
    amount = t.money(p["amount"], currency)
    summary = t("approval_card_summary", order=p["order_ref"], amount=amount, customer=customer)
    requester = p.get("requested_by")
    sections: list[Section] = []
    if outcome:
        sections.append(Section(heading=outcome_text(t, p, outcome)))
    sections.append(
        Section(
            heading=t("approval_request_heading"),
            facts=[
                Fact(t("approval_order"), p["order_ref"]),
                Fact(t("approval_amount"), amount),
                Fact(
                    t("approval_requested_by"),
                    requester["name"] if requester else t("approval_requested_by_erp"),
                ),
                Fact(t("approval_why"), _reasons(t, list(p.get("reasons") or []))),
                Fact(t("approval_level"), _role(t, p.get("role"))),
                Fact(
                    t("approval_decide_by"),
                    _local_time(t, p.get("expires_local"), p.get("time_zone")),
                ),
            ],
        )
    )
    limit_currency = (p.get("customer") or {}).get("currency") or currency
    sections.append(
        Section(
            heading=t("approval_position_heading"),
            facts=[
                Fact(t("approval_rating"), str((p.get("customer") or {}).get("rating", "—"))),
                Fact(t("approval_limit"), t.money(p["credit_limit"], limit_currency)),
                Fact(t("approval_exposure"), t.money(p["exposure"], limit_currency)),
                Fact(t("approval_excess"), t.money(p["excess"], limit_currency)),
                Fact(t("approval_overdue"), t.money(p["overdue"], limit_currency)),
            ],
        )
    )
    aging = p.get("aging") or []
    if aging:
        lines = []
        for bucket in aging:
            if not bucket.get("totals"):
                continue  # an empty bucket says nothing
            label = bucket["bucket"]
            shown = t("approval_aging_current") if label == "current" else label
            lines.append(t("approval_aging_line", bucket=shown, totals=t.totals(bucket["totals"])))
        sections.append(
            Section(
                heading=t("approval_aging_heading"),
                text="" if lines else t("approval_aging_none"),
                lines=lines,
            )
        )
    recent = list(p.get("recent") or [])[:RECENT_SHOWN]
    sections.append(
        Section(
            heading=t("approval_recent_heading", customer=customer),
            text="" if recent else t("approval_recent_none"),
            lines=[
                t(
                    "approval_recent_line",
                    date=t.date(r["date"]),
                    order=r["order_ref"],
                    amount=t.money(r["amount"], r["currency"]),
                    status=_status_text(t, r),
                )
                for r in recent
            ],
        )
    )
    buttons: list[Button] = []
    if not outcome:
        value = f"{p['request_id']}|{p['level']}"
        buttons = [
            Button(t("button_approve"), APPROVE, value, "primary"),
            Button(t("button_reject"), REJECT, value, "danger"),
        ]
    return Message(
        title=title,
        summary=summary,
        sections=sections,
        buttons=buttons,
        footer="" if outcome else t("approval_footer"),
        locale=t.locale,
    )


def decided_message(p: dict[str, Any], t: Translator) -> Message:
    """The requester is told: approved, rejected (with the reason) or expired."""
    status = str(p.get("decision"))
    by = (p.get("by") or {}).get("name")
    customer = _customer(p)
    amount = t.money(p["amount"], p["currency"])
    known = status in ("approved", "rejected", "expired")
    title = t(f"approval_decided_title_{status if known else 'other'}", order=p["order_ref"])
    if status == "approved":
        summary = t("approval_decided_approved", customer=customer, amount=amount, name=by or "—")
    elif status == "rejected":
        summary = t(
            "approval_decided_rejected",
            customer=customer,
            amount=amount,
            name=by or "—",
            reason=p.get("reason") or "—",
        )
    elif status == "expired":
        summary = t("approval_decided_expired", customer=customer, amount=amount)
    else:
        summary = t("approval_outcome_closed", status=status)
    return Message(
        title=title,
        summary=summary,
        sections=[Section(heading="", text=summary)],
        locale=t.locale,
    )


BUILDERS = {
    APPROVAL_CARD: card_message,
    APPROVAL_REMINDER: card_message,
    APPROVAL_DECIDED: decided_message,
}


def compose_card(payload: dict[str, Any], outcome: dict[str, Any] | None = None) -> Message:
    """The card of an outbox payload in its recipient's language (with ``outcome``, decided)."""
    if outcome is not None:
        payload = {**payload, "outcome": outcome}
    locale = (payload.get("recipient") or {}).get("locale")
    return card_message(payload, Translator(locale))


def press_answer(t: Translator, result: Any) -> str:
    """What the presser of a card is told (``result``: ``credit.store.approvals.DecisionResult``):
    done, "already decided by NAME" (or expired / closed), or why they may not decide it."""
    if result.won:
        if not result.final:
            return t("approval_answer_level")
        return t(f"approval_answer_{result.status}")
    if result.refusal:
        key = f"approval_refusal_{result.refusal}"
        return t("approval_refused", reason=t(key) if key in t.strings else result.refusal)
    if result.decided_by_name:
        return t("approval_already_decided", name=result.decided_by_name)
    if result.status == "expired":
        return t("approval_already_expired")
    return t("approval_already_closed", status=result.status)


# --- updating every copy -------------------------------------------------------------------------


async def update_card_copies(
    engine: Engine,
    transports: Mapping[str, Any],
    request_id: int,
    outcome: dict[str, Any],
    *,
    level: int | None = None,
    only: dict[str, Any] | None = None,
    channel: str = "scheduler",
    now: datetime | None = None,
) -> int:
    """Edit every sent copy of the request's card (of one ``level`` when given) to show
    ``outcome``, each through its channel's transport, in its recipient's language.

    With ``only`` (items of a platform reference, e.g. the pressed message's), just that
    copy, and only when it is not known to show ``outcome`` already: a press that lost
    repairs its own card (sent while the decision was made, or its edit failed) without
    editing it again after every press. A copy whose channel has no transport here, or
    whose edit fails, is logged and left; the rest go on. Each copy edited remembers what it
    shows; audited (``shipment.cards_updated``, ``channel``: who caused it). Returns how many
    copies were updated.

    Every channel's decision (and every lapse) comes through here once with all its copies
    (``only`` None): that is where the decision latency is measured
    (``creditbot_approval_decision_seconds``)."""
    from credit.store.approval_notices import audit_cards_updated, card_copies, mark_shown
    from credit.store.models import ShipmentRequest

    def read() -> tuple[list[Any], tuple[str, Any, Any] | None]:
        with read_session(engine) as session:
            timing = None
            if only is None and outcome.get("status") in metrics.DECISION_STATUSES:
                request = session.get(ShipmentRequest, request_id)
                if request is not None and request.status == outcome.get("status"):
                    expired = request.status == "expired"
                    ended = request.expires_at if expired else request.decided_at
                    timing = (request.status, request.created_at, ended)
            return card_copies(session, request_id, level=level), timing

    copies, timing = await asyncio.to_thread(read)
    if timing is not None:
        metrics.observe_approval_decision(*timing)
    if only is not None:
        copies = [
            c
            for c in copies
            if all(str(c.platform_ref.get(k)) == str(v) for k, v in only.items())
            and not same_outcome(c.payload.get("shown"), outcome)
        ]
    updated: list[int] = []
    failed = 0
    for copy in copies:
        transport = transports.get(copy.channel)
        update = getattr(transport, "update", None)
        if update is None:
            continue
        try:
            await update(copy.platform_ref, compose_card(copy.payload, outcome))
            updated.append(copy.outbox_id)
        except Exception as exc:  # one copy failing must not keep the others stale
            failed += 1
            log.warning(
                "approval card %s (outbox %s, %s) not updated: %s",
                request_id,
                copy.outbox_id,
                copy.channel,
                exc,
            )

    def record() -> None:
        with write_session(engine) as session:
            mark_shown(session, updated, outcome)
            audit_cards_updated(
                session,
                request_id,
                updated=len(updated),
                failed=failed,
                status=str(outcome.get("status")),
                pressed_only=only is not None,
                channel=channel,
                now=now or datetime.now(UTC),
            )

    if copies:
        await asyncio.to_thread(record)
    return len(updated)


OUTCOME_KEYS = ("status", "by", "reason", "next_role", "at_local", "now")


def same_outcome(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two outcomes read the same on a card (when and how they were recorded aside)."""
    if not a or not b:
        return False
    return all(a.get(k) == b.get(k) for k in OUTCOME_KEYS)


@asynccontextmanager
async def card_transports(
    settings: Any,
    engine: Engine,
    clock: Any,
    *,
    slack_client: Any = None,
    telegram_bot: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """The transports that can edit cards on the configured chat platforms: Slack (with
    ``slack_client``, else a client from ``[slack]``) and Telegram (with ``telegram_bot``,
    e.g. the running application's, else a bot from ``[telegram]`` opened for the block)."""
    from bot.transports.slack import SlackTransport, make_web_client
    from bot.transports.telegram import TelegramTransport, make_bot
    from credit.store.telegram import DbTokenMinter

    transports: dict[str, Any] = {}
    if slack_client is None and settings.slack.bot_token.get_secret_value():
        slack_client = make_web_client(
            settings.slack.bot_token.get_secret_value(), settings.slack.api_base_url
        )
    if slack_client is not None:
        transports["slack"] = SlackTransport(slack_client)
    own_bot = None
    if telegram_bot is None and settings.telegram.bot_token.get_secret_value():
        own_bot = telegram_bot = make_bot(settings.telegram)
    if telegram_bot is not None:
        minter = DbTokenMinter(engine, clock, settings.telegram.callback_ttl_days)
        transports["telegram"] = TelegramTransport(telegram_bot, minter=minter, clock=clock)
    if own_bot is not None:
        try:
            await own_bot.initialize()
        except Exception as exc:  # Telegram unreachable: the Slack copies are still updated
            log.warning("telegram: cannot open a bot to update approval cards: %s", exc)
            transports.pop("telegram", None)
            own_bot = None
    try:
        yield transports
    finally:
        if own_bot is not None:
            await own_bot.shutdown()


__all__ = [
    "APPROVAL_ACTIONS",
    "APPROVAL_CARD",
    "APPROVAL_DECIDED",
    "APPROVAL_REMINDER",
    "BUILDERS",
    "card_message",
    "card_transports",
    "compose_card",
    "decided_message",
    "outcome_text",
    "press_answer",
    "same_outcome",
    "update_card_copies",
]
