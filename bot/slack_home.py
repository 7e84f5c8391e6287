"""Block Kit for the App Home tab and the ``/credit`` answer, from ``credit.store.views`` data.

Pure functions: data in, Slack JSON out. Sections carry stable ``block_id``s (``tier:NAME``,
``most_overdue``, ``promises``, ``approvals``, ``not_linked``; ``rating``, ``exposure``,
``aging``, ``status`` in a credit file) so they can be found again. Amounts and dates are
formatted for the person's locale; the labels themselves are English for now.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from bot.i18n import Translator
from bot.slack_render import MAX_HEADER_TEXT, MAX_SECTION_TEXT, escape_mrkdwn
from credit.aging import TierTable
from credit.store.views import CreditFile, PendingApprovals, PromiseDue, Receivables

Block = dict[str, Any]
PROMISES_LISTED = 10


def _header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:MAX_HEADER_TEXT]}}


def _section(block_id: str, text: str) -> Block:
    if len(text) > MAX_SECTION_TEXT:
        text = text[: MAX_SECTION_TEXT - 1] + "…"
    return {"type": "section", "block_id": block_id, "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def money_text(t: Translator, totals: dict[str, Decimal]) -> str:
    """Totals per currency, e.g. ``CN¥12,500.00 + US$300.00``; ``—`` when empty."""
    return t.totals({cur: str(amount) for cur, amount in totals.items() if amount})


def scope_text(role: str, region: str | None) -> str:
    if role == "rep":
        return "your customers"
    if role == "regional_manager":
        return f"region {region}" if region else "no region"
    return "company-wide"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def home_view(
    t: Translator,
    *,
    name: str,
    scope: str,
    as_of: date,
    tiers: TierTable,
    receivables: Receivables,
    promises: Sequence[PromiseDue],
    approvals: PendingApprovals,
    horizon_days: int,
) -> dict[str, Any]:
    blocks: list[Block] = [
        _header(f"CreditBot — {name}"),
        _context(f"Scope: {escape_mrkdwn(scope)} · as of {t.date(as_of)}"),
        _header("My open receivables by tier"),
    ]
    for total in receivables.tiers:
        label = t.tier(total.tier, tiers.by_name(total.tier).action)
        blocks.append(
            _section(
                f"tier:{total.tier}",
                f"*{escape_mrkdwn(label)}*\n"
                f"{_plural(total.count, 'invoice')} · {money_text(t, total.totals)}",
            )
        )
    if receivables.most_overdue:
        lines = [
            f"• {escape_mrkdwn(i.number)} · {escape_mrkdwn(i.customer_name)} "
            f"({escape_mrkdwn(i.customer_code)}) · {t.money(i.open_amount, i.currency)} · "
            f"{t.days_text(i.days)}" + (" · disputed" if i.disputed else "")
            for i in receivables.most_overdue
        ]
        text = "*Most overdue*\n" + "\n".join(lines)
    else:
        text = "*Most overdue*\nNothing overdue."
    blocks.append(_section("most_overdue", text))

    blocks += [{"type": "divider"}, _header("My promises due")]
    if promises:
        lines = [
            f"• {t.date(p.promised_date)} · {escape_mrkdwn(p.invoice)} · "
            f"{escape_mrkdwn(p.customer_name)} · {t.money(p.amount, p.currency)}"
            for p in promises[:PROMISES_LISTED]
        ]
        if len(promises) > PROMISES_LISTED:
            lines.append(f"… and {len(promises) - PROMISES_LISTED} more")
        text = f"{_plural(len(promises), 'promise')} due within {horizon_days} days\n"
        text += "\n".join(lines)
    else:
        text = f"No promises due within {horizon_days} days."
    blocks.append(_section("promises", text))

    blocks += [{"type": "divider"}, _header("My pending approvals")]
    if approvals.count:
        lines = [
            f"• {escape_mrkdwn(r.order_ref)} · {escape_mrkdwn(r.customer_name)} "
            f"({escape_mrkdwn(r.customer_code)}) · {t.money(r.amount, r.currency)}"
            for r in approvals.listed
        ]
        if approvals.count > len(approvals.listed):
            lines.append(f"… and {approvals.count - len(approvals.listed)} more")
        text = f"{_plural(approvals.count, 'shipment request')} pending\n" + "\n".join(lines)
    else:
        text = "No shipment requests pending."
    blocks.append(_section("approvals", text))
    return {"type": "home", "blocks": blocks}


def not_linked_view() -> dict[str, Any]:
    return {
        "type": "home",
        "blocks": [
            _header("CreditBot"),
            _section(
                "not_linked",
                "Your Slack account is not linked to a CreditBot person, so there is nothing "
                "to show. Ask the credit desk to add your Slack user id.",
            ),
        ],
    }


def credit_file_message(t: Translator, f: CreditFile, as_of: date) -> tuple[list[Block], str]:
    """The ``/credit`` answer: blocks and the fallback text."""
    title = f"{f.name} ({f.code})"
    hold = "No"
    if f.credit_hold:
        hold = "Yes" + (f" — {escape_mrkdwn(f.credit_hold_reason)}" if f.credit_hold_reason else "")
    probation = "No"
    if f.on_probation and f.probation_until is not None:
        probation = f"Yes, until {t.date(f.probation_until)}"
    status = [
        f"*Credit hold:* {hold}",
        f"*Blacklisted:* {'Yes' if f.blacklisted else 'No'}",
        f"*Probation:* {probation}",
    ]
    aging = [f"• {escape_mrkdwn(label)}: {money_text(t, totals)}" for label, totals in f.aging]
    blocks = [
        _header(f"Credit file: {title}"),
        _section(
            "rating",
            f"*Rating:* {f.rating}\n*Credit limit:* {t.money(f.credit_limit, f.currency)}",
        ),
        _section(
            "exposure",
            f"*Exposure (open receivables):* {money_text(t, f.exposure)}\n"
            f"*Open invoices:* {f.open_invoices}",
        ),
        _section("aging", "*Aging by bucket (days past due)*\n" + "\n".join(aging)),
        _section("status", "\n".join(status)),
        _context(f"As of {t.date(as_of)}"),
    ]
    text = (
        f"{title}: rating {f.rating}, limit {t.money(f.credit_limit, f.currency)}, "
        f"exposure {money_text(t, f.exposure)}"
    )
    return blocks, text


__all__ = ["credit_file_message", "home_view", "money_text", "not_linked_view", "scope_text"]
